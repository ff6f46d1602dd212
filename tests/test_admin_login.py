"""
The admin login bootstrap (``everyskill.admin.login``): the user is created
when it is missing and never changed when it exists; a generated password goes
to a 0600 file only, never into what is printed; when a login does not get in,
what is printed says why and which ``piccolo user`` command fixes it, and that
command does.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from piccolo.apps.user.tables import BaseUser

from everyskill.admin import AdminLogin, ensure_admin_user
from everyskill.admin.login import StaffUser
from everyskill.errors import ValidationError
from tests.support import PROJECT_ROOT, run_piccolo

COMMAND = re.compile(r"`\.venv/bin/piccolo (user [^`]*)`")


@pytest.fixture
async def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """No login in the environment, the credentials file in a new directory,
    and no user ``admin`` yet."""
    path = tmp_path / "state" / "admin-credentials.json"
    monkeypatch.setenv("EVERYSKILL_ADMIN_CREDENTIALS", str(path))
    monkeypatch.delenv("EVERYSKILL_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("EVERYSKILL_ADMIN_PASSWORD", raising=False)
    await BaseUser.delete().where(BaseUser.username == "admin")
    yield path
    await BaseUser.delete().where(BaseUser.username == "admin")


async def user_row(username: str) -> dict[str, Any]:
    """Every column of the user: what "left unchanged" is checked against."""
    row: dict[str, Any] | None = (
        await BaseUser.select().where(BaseUser.username == username).first()
    )
    assert row is not None, f"no user {username!r}"
    return row


def printed(login: AdminLogin) -> str:
    return "\n".join(login.instructions())


def commands(login: AdminLogin) -> list[list[str]]:
    """The ``piccolo`` commands the instructions give, as argument lists."""
    return [shlex.split(found) for found in COMMAND.findall(printed(login))]


def stored_password(path: Path) -> str:
    password: str = json.loads(path.read_text())["password"]
    return password


async def test_a_generated_password_goes_to_a_private_file_only_and_is_reused(
    credentials: Path,
) -> None:
    first = await ensure_admin_user()
    password = stored_password(credentials)
    assert len(password) >= 20
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert (first.username, first.password_in, first.created, first.problems) == (
        "admin", str(credentials), True, ()
    )
    assert not hasattr(first, "password")
    assert password not in printed(first) and str(credentials) in printed(first)
    assert await StaffUser.login("admin", password) is not None
    user = await user_row("admin")
    assert user["active"] and user["admin"] and user["superuser"]

    before, written = await user_row("admin"), credentials.read_bytes()
    second = await ensure_admin_user()
    assert (second.created, second.problems, second.password_in) == (False, (), str(credentials))
    assert credentials.read_bytes() == written
    assert await user_row("admin") == before  # not even last_login
    assert printed(second) == f"log in as 'admin' with the password in {credentials}"


async def test_a_changed_password_is_reported_not_reset(credentials: Path) -> None:
    await ensure_admin_user()
    generated = stored_password(credentials)
    await BaseUser.update_password("admin", "changed by staff")
    before, written = await user_row("admin"), credentials.read_bytes()

    login = await ensure_admin_user()
    assert await user_row("admin") == before
    assert credentials.read_bytes() == written
    assert await StaffUser.login("admin", "changed by staff") is not None
    assert await StaffUser.login("admin", generated) is None
    assert len(login.problems) == 1
    problem = login.problems[0]
    assert "is not its password" in problem and str(credentials) in problem
    assert commands(login) == [["user", "change_password"]]
    text = printed(login)
    assert generated not in text and "changed by staff" not in text
    assert text.startswith("'admin' cannot log in to the admin; the user was left unchanged:")


@pytest.mark.parametrize(
    ("flags", "option_names"),
    [
        ({"active": False}, ["--active=True"]),
        ({"admin": False}, ["--admin=True"]),
        ({"active": False, "admin": False}, ["--active=True", "--admin=True"]),
    ],
)
async def test_a_deactivated_or_demoted_admin_stays_so_and_the_printed_command_fixes_it(
    credentials: Path,
    database_url_for_tests: str,
    flags: dict[str, bool],
    option_names: list[str],
) -> None:
    await ensure_admin_user()
    password = stored_password(credentials)
    await BaseUser.update({getattr(BaseUser, k): v for k, v in flags.items()}).where(
        BaseUser.username == "admin"
    )
    before = await user_row("admin")

    login = await ensure_admin_user()
    assert await user_row("admin") == before
    assert await StaffUser.login("admin", password) is None
    assert len(login.problems) == 1
    for flag in flags:
        assert f"not {'an admin' if flag == 'admin' else 'active'}" in login.problems[0]
    assert commands(login) == [["user", "change_permissions", "admin", *option_names]]

    # Staff run the command given: the login gets in, and nothing is reported.
    run_piccolo(database_url_for_tests, *commands(login)[0])
    assert await StaffUser.login("admin", password) is not None
    fixed = await ensure_admin_user()
    assert fixed.problems == ()


async def test_an_existing_user_without_the_file_is_left_alone_and_told_how_to_reset(
    credentials: Path, database_url_for_tests: str
) -> None:
    await BaseUser.create_user(
        username="admin", password="set by staff", email="admin@example.org",
        active=True, admin=True,
    )
    before = await user_row("admin")

    login = await ensure_admin_user()
    assert await user_row("admin") == before
    assert not credentials.exists()  # no password generated for a user that has one
    assert (login.password_in, login.created, login.problems) == (None, False, ())
    assert "already existed" in printed(login) and str(credentials) in printed(login)
    assert commands(login) == [["user", "change_password"]]

    # The command given, as staff would run it (it prompts; no terminal here,
    # so getpass reads standard input).
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "piccolo"), *commands(login)[0]],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": database_url_for_tests, "PYTHONWARNINGS": "ignore"},
        input="admin\nreset by staff\nreset by staff\n",
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert await StaffUser.login("admin", "reset by staff") is not None

    # Still inactive staff are told both things.
    await BaseUser.update({BaseUser.active: False}).where(BaseUser.username == "admin")
    inactive = await ensure_admin_user()
    assert [command[1] for command in commands(inactive)] == [
        "change_permissions", "change_password"
    ]
    assert not credentials.exists()


async def test_a_new_database_gets_the_user_of_the_kept_file(credentials: Path) -> None:
    await ensure_admin_user()
    password, written = stored_password(credentials), credentials.read_bytes()
    await BaseUser.delete().where(BaseUser.username == "admin")

    login = await ensure_admin_user()
    assert (login.created, login.problems) == (True, ())
    assert credentials.read_bytes() == written
    assert await StaffUser.login("admin", password) is not None


async def test_a_login_from_the_environment_is_created_once_and_never_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVERYSKILL_ADMIN_USERNAME", "ops")
    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "first password")
    await BaseUser.delete().where(BaseUser.username == "ops")
    login = await ensure_admin_user()
    assert (login.username, login.password_in, login.created, login.problems) == (
        "ops", "EVERYSKILL_ADMIN_PASSWORD", True, ()
    )
    assert "first password" not in printed(login)
    assert await StaffUser.login("ops", "first password") is not None

    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "second password")
    before = await user_row("ops")
    changed = await ensure_admin_user()
    assert await user_row("ops") == before
    assert await StaffUser.login("ops", "second password") is None
    assert changed.created is False
    assert len(changed.problems) == 1 and "was not applied" in changed.problems[0]
    assert commands(changed) == [["user", "change_password"]]
    assert "second password" not in printed(changed)

    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "first password")
    await BaseUser.update({BaseUser.admin: False}).where(BaseUser.username == "ops")
    demoted = await ensure_admin_user()
    assert (await user_row("ops"))["admin"] is False
    assert commands(demoted) == [["user", "change_permissions", "ops", "--admin=True"]]


async def test_bad_settings_are_refused_naming_what_to_fix(
    credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVERYSKILL_ADMIN_USERNAME", "ops")
    with pytest.raises(ValidationError, match="both") as only_one:
        await ensure_admin_user()
    assert only_one.value.field == "EVERYSKILL_ADMIN_PASSWORD"

    monkeypatch.setenv("EVERYSKILL_ADMIN_USERNAME", "short-password")
    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "12345")
    with pytest.raises(ValidationError, match="too short") as short:
        await ensure_admin_user()
    assert short.value.field == "EVERYSKILL_ADMIN_PASSWORD"
    assert not await BaseUser.exists().where(BaseUser.username == "short-password")

    monkeypatch.setenv("EVERYSKILL_ADMIN_USERNAME", "x" * 101)
    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "long enough")
    with pytest.raises(ValidationError, match="longer than 100") as long_name:
        await ensure_admin_user()
    assert long_name.value.field == "EVERYSKILL_ADMIN_USERNAME"

    monkeypatch.delenv("EVERYSKILL_ADMIN_USERNAME")
    monkeypatch.delenv("EVERYSKILL_ADMIN_PASSWORD")
    credentials.parent.mkdir(parents=True)
    for content in ("not json", '{"username": "admin"}', '["admin", "password"]'):
        credentials.write_text(content)
        with pytest.raises(ValidationError, match="fix it, or delete it") as bad_file:
            await ensure_admin_user()
        assert bad_file.value.field == str(credentials)
        assert credentials.read_text() == content
    assert not await BaseUser.exists().where(BaseUser.username == "admin")
