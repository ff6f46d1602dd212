"""
The admin login bootstrap (``everyskill.admin.login``): a login from the
environment, or a generated password kept private and reused, never a fixed
default.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from piccolo.apps.user.tables import BaseUser

from everyskill.admin import ensure_admin_user


async def test_a_generated_admin_password_is_kept_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "state" / "admin-credentials.json"
    monkeypatch.setenv("EVERYSKILL_ADMIN_CREDENTIALS", str(credentials))
    monkeypatch.delenv("EVERYSKILL_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("EVERYSKILL_ADMIN_PASSWORD", raising=False)
    await BaseUser.delete().where(BaseUser.username == "admin")

    first = await ensure_admin_user()
    assert first.username == "admin" and first.password and len(first.password) >= 20
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert await BaseUser.login("admin", first.password) is not None

    second = await ensure_admin_user()
    assert second.password == first.password

    # A stored password that no longer works is replaced, not trusted.
    await BaseUser.update_password("admin", "changed elsewhere")
    third = await ensure_admin_user()
    assert third.password not in (None, first.password)
    assert third.password is not None
    assert await BaseUser.login("admin", third.password) is not None

    # So is one whose user was deactivated or is no longer an admin: the
    # admin would refuse it.
    for flag in (BaseUser.active, BaseUser.admin):
        await BaseUser.update({flag: False}).where(BaseUser.username == "admin")
        renewed = await ensure_admin_user()
        assert renewed.password not in (None, third.password)
        user = await BaseUser.objects().get(BaseUser.username == "admin")
        assert user is not None and user.active and user.admin


async def test_admin_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVERYSKILL_ADMIN_USERNAME", "ops")
    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "first password")
    login = await ensure_admin_user()
    assert (login.username, login.password) == ("ops", None)
    assert await BaseUser.login("ops", "first password") is not None
    monkeypatch.setenv("EVERYSKILL_ADMIN_PASSWORD", "second password")
    await ensure_admin_user()
    assert await BaseUser.login("ops", "first password") is None
    assert await BaseUser.login("ops", "second password") is not None
    monkeypatch.delenv("EVERYSKILL_ADMIN_PASSWORD")
    with pytest.raises(ValueError, match="both"):
        await ensure_admin_user()
