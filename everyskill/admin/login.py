"""The admin's login: making sure platform staff can log in.

Contract
--------
- :func:`ensure_admin_user` creates the bootstrap admin login when its user
  does not exist, and never changes a user that does: it does not re-activate,
  re-promote or reset the password of an existing user, whom staff may have
  deactivated, demoted or given a new password on purpose.
- The login is ``EVERYSKILL_ADMIN_USERNAME`` with ``EVERYSKILL_ADMIN_PASSWORD``
  when both are set; otherwise ``admin`` (or the user named in the credentials
  file) with a random password generated once and written only to
  ``.everyskill/admin-credentials.json`` (outside git, mode 0600;
  ``EVERYSKILL_ADMIN_CREDENTIALS`` names another file). The file is written
  before the user is created, and never overwritten. When the file exists and
  its user does not (a new database), the user is created with the password
  in the file. There is never a fixed default password.
- The returned :class:`AdminLogin` never holds a password. Its
  :meth:`AdminLogin.instructions` say how to log in: where the password is,
  or, when the login does not get in (the user is inactive, not an admin, or
  the password given is not its password), what is wrong and the ``piccolo
  user`` command that fixes it. When the user exists and the credentials file
  does not, they say how to set a password (``piccolo user change_password``).
- Bad settings are a :class:`~everyskill.errors.ValidationError` naming the
  setting: only one of the two variables set, a username or password Piccolo
  would refuse for a new user, a credentials file that is not a JSON object
  with ``username`` and ``password``.
- :class:`StaffUser` is ``piccolo_user`` as the admin's login endpoint sees
  it: only a user that is active and admin logs in (gets a session). Piccolo's
  own ``BaseUser.login`` checks the password only, so a session made for an
  inactive user would start working the moment the user was activated.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from piccolo.apps.user.tables import BaseUser

from everyskill.errors import ValidationError

__all__ = ["AdminLogin", "StaffUser", "credentials_file", "ensure_admin_user"]

DEFAULT_CREDENTIALS_FILE = (
    Path(__file__).resolve().parents[2] / ".everyskill" / "admin-credentials.json"
)
DEFAULT_USERNAME = "admin"
PASSWORD_VARIABLE = "EVERYSKILL_ADMIN_PASSWORD"
USERNAME_VARIABLE = "EVERYSKILL_ADMIN_USERNAME"
PICCOLO = ".venv/bin/piccolo"


def credentials_file() -> Path:
    """Where a generated admin password is kept (``EVERYSKILL_ADMIN_CREDENTIALS``)."""
    configured = os.environ.get("EVERYSKILL_ADMIN_CREDENTIALS")
    return Path(configured) if configured else DEFAULT_CREDENTIALS_FILE


class StaffUser(BaseUser, tablename="piccolo_user"):
    """``piccolo_user``, whose :meth:`login` lets in active admins only."""

    @classmethod
    async def login(cls, username: str, password: str) -> int | None:
        if len(password) > cls._max_password_length:
            return None  # as BaseUser.login does, before hashing it
        allowed = await cls.exists().where(
            (cls.username == username) & (cls.active.eq(True)) & (cls.admin.eq(True))
        )
        if not allowed:
            cls.hash_password(password)  # as long as a wrong password takes
            return None
        user_id: int | None = await super().login(username, password)
        return user_id


@dataclass(frozen=True)
class AdminLogin:
    """How to log in to the admin. It never holds the password.

    ``password_in`` is where the password is (the credentials file's path or
    ``EVERYSKILL_ADMIN_PASSWORD``), or None when nothing here knows it: the
    user already existed, and there is no credentials file. ``created`` is
    true when this call created the user. ``problems`` say why the login does
    not get in and what fixes it; the user was left as it was.
    """

    username: str
    password_in: str | None
    created: bool = False
    problems: tuple[str, ...] = ()

    def instructions(self) -> list[str]:
        """What to tell whoever starts the service, one line each."""
        name = repr(self.username)
        unknown = (
            []
            if self.password_in is not None
            else [
                f"its password is not kept by EverySkill (there is no"
                f" {credentials_file()}); if you do not know it, set one with"
                f" `{PICCOLO} user change_password`"
            ]
        )
        if self.problems:
            return [
                f"{name} cannot log in to the admin; the user was left unchanged:",
                *(f"- {problem}" for problem in (*self.problems, *unknown)),
            ]
        if unknown:
            return [f"log in as {name}, a user that already existed: {unknown[0]}"]
        created = " (user created)" if self.created else ""
        return [f"log in as {name} with the password in {self.password_in}{created}"]


async def ensure_admin_user() -> AdminLogin:
    """Create the bootstrap admin user if it is missing, and say how to log in."""
    username = os.environ.get(USERNAME_VARIABLE, "").strip()
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if username and password:
        return await _ensure(username, password, PASSWORD_VARIABLE)
    if username or password:
        missing = PASSWORD_VARIABLE if username else USERNAME_VARIABLE
        raise ValidationError.of(
            missing, f"set both {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}, or neither"
        )

    path = credentials_file()
    while True:
        stored = _read_stored_credentials(path)
        if stored is not None:
            username, password = stored
            return await _ensure(username, password, str(path))
        user = await _find_user(DEFAULT_USERNAME)
        if user is not None:
            problems = _flag_problems(DEFAULT_USERNAME, user)
            return AdminLogin(DEFAULT_USERNAME, None, problems=problems)
        try:
            _write_new_credentials(path, DEFAULT_USERNAME, secrets.token_urlsafe(18))
        except FileExistsError:
            continue  # another start wrote it first: use that one
        # Next round reads it and creates the user. The file comes first, so
        # that a user is never made with a password nobody has.


async def _find_user(username: str) -> dict[str, Any] | None:
    user: dict[str, Any] | None = (
        await BaseUser.select(BaseUser.password, BaseUser.active, BaseUser.admin)
        .where(BaseUser.username == username)
        .first()
    )
    return user


async def _ensure(username: str, password: str, password_in: str) -> AdminLogin:
    """The login ``username`` with ``password``, which is kept in
    ``password_in``: the user created if missing, otherwise checked only."""
    limit = BaseUser.username.length
    if limit is not None and len(username) > limit:
        raise ValidationError.of(
            password_in if password_in != PASSWORD_VARIABLE else USERNAME_VARIABLE,
            f"the username is longer than {limit} characters",
        )
    user = await _find_user(username)
    if user is None:
        try:
            await BaseUser.create_user(
                username=username,
                password=password,
                email=f"{username}@admin.invalid",
                active=True,
                admin=True,
                superuser=True,
            )
        except ValueError as refused:  # Piccolo's password rules
            raise ValidationError.of(password_in, str(refused)) from None
        return AdminLogin(username, password_in, created=True)

    problems = list(_flag_problems(username, user))
    if not _is_password_of(user["password"], password):
        change_password = f"`{PICCOLO} user change_password`"
        if password_in == PASSWORD_VARIABLE:
            problems.append(
                f"{PASSWORD_VARIABLE} is not its password, and was not applied to"
                f" the existing user: set {PASSWORD_VARIABLE} to its password, or"
                f" set its password with {change_password}"
            )
        else:
            problems.append(
                f"the password in {password_in} is not its password (it was"
                f" changed, or the user was made elsewhere), and was not applied:"
                f" log in with its current password, or set one with"
                f" {change_password}; then delete {password_in}, which no longer applies"
            )
    return AdminLogin(username, password_in, problems=tuple(problems))


def _flag_problems(username: str, user: dict[str, Any]) -> tuple[str, ...]:
    """Why the admin would refuse ``user`` whatever its password, and the fix."""
    missing = [
        (what, flag)
        for what, flag in (("not active", "active"), ("not an admin", "admin"))
        if not user[flag]
    ]
    if not missing:
        return ()
    state = " and ".join(what for what, _flag in missing)
    options = " ".join(f"--{flag}=True" for _what, flag in missing)
    return (
        f"the user is {state}; if it should log in, run"
        f" `{PICCOLO} user change_permissions {shlex.quote(username)} {options}`",
    )


def _is_password_of(stored_hash: str, password: str) -> bool:
    """Whether ``password`` is the one ``stored_hash`` was made from. Unlike
    ``BaseUser.login``, this changes nothing (no ``last_login``, no rehash)."""
    try:
        _algorithm, iterations, salt, _digest = BaseUser.split_stored_password(stored_hash)
        candidate = BaseUser.hash_password(password, salt, int(iterations))
    except ValueError:  # not a hash Piccolo made, or a password it refuses
        return False
    return hmac.compare_digest(candidate, stored_hash)


def _read_stored_credentials(path: Path) -> tuple[str, str] | None:
    """The username and password in ``path``; None when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as unreadable:
        raise ValidationError.of(
            str(path), f"the admin credentials file cannot be read ({unreadable.strerror})"
        ) from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if (
        isinstance(data, dict)
        and isinstance(data.get("username"), str)
        and isinstance(data.get("password"), str)
        and data["username"].strip()
    ):
        return data["username"].strip(), data["password"]
    raise ValidationError.of(
        str(path),
        'the admin credentials file is not {"username": ..., "password": ...};'
        " fix it, or delete it",
    )


def _write_new_credentials(path: Path, username: str, password: str) -> None:
    """Write a new credentials file, readable by its owner only; never overwrite one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"username": username, "password": password}, handle)
