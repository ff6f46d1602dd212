"""The admin's login: making sure platform staff can log in.

Contract
--------
- :func:`ensure_admin_user` makes sure an active admin login exists: with
  ``EVERYSKILL_ADMIN_USERNAME`` and ``EVERYSKILL_ADMIN_PASSWORD`` set, that user
  (created, or its password reset and made active and admin again); otherwise
  a user ``admin`` whose random password is generated once and kept in
  ``.everyskill/admin-credentials.json`` (outside git, mode 0600;
  ``EVERYSKILL_ADMIN_CREDENTIALS`` names another file). A stored login that
  no longer gets in (a changed password, a user deactivated or no longer an
  admin) is reset: active, admin, a new password. There is never a fixed default password.
- Setting only one of the two variables is a :class:`ValueError`.
- :class:`StaffUser` is ``piccolo_user`` as the admin's login endpoint sees
  it: only a user that is active and admin logs in (gets a session). Piccolo's
  own ``BaseUser.login`` checks the password only, so a session made for an
  inactive user would start working the moment the user was activated.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from piccolo.apps.user.tables import BaseUser

__all__ = ["AdminLogin", "StaffUser", "credentials_file", "ensure_admin_user"]

DEFAULT_CREDENTIALS_FILE = (
    Path(__file__).resolve().parents[2] / ".everyskill" / "admin-credentials.json"
)


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
    """How to log in to the admin; ``password`` is None when it was not made here."""

    username: str
    password: str | None
    source: str


async def ensure_admin_user() -> AdminLogin:
    """Make sure an active admin user exists, and say how to log in."""
    username = os.environ.get("EVERYSKILL_ADMIN_USERNAME", "").strip()
    password = os.environ.get("EVERYSKILL_ADMIN_PASSWORD", "")
    if username and password:
        await _create_or_reset(username, password)
        return AdminLogin(username, None, "EVERYSKILL_ADMIN_PASSWORD")
    if username or password:
        raise ValueError(
            "Set both EVERYSKILL_ADMIN_USERNAME and EVERYSKILL_ADMIN_PASSWORD, or neither."
        )

    path = credentials_file()
    stored = _read_stored_credentials(path)
    if stored and await StaffUser.login(stored["username"], stored["password"]):
        return AdminLogin(stored["username"], stored["password"], str(path))

    username, password = "admin", secrets.token_urlsafe(18)
    await _create_or_reset(username, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"username": username, "password": password}, handle)
    return AdminLogin(username, password, str(path))


def _read_stored_credentials(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and {"username", "password"} <= data.keys():
        return {"username": str(data["username"]), "password": str(data["password"])}
    return None


async def _create_or_reset(username: str, password: str) -> None:
    existing = await BaseUser.objects().get(BaseUser.username == username)
    if existing is None:
        await BaseUser.create_user(
            username=username,
            password=password,
            email=f"{username}@admin.invalid",
            active=True,
            admin=True,
            superuser=True,
        )
        return
    await BaseUser.update_password(username, password)
    await BaseUser.update(
        {BaseUser.active: True, BaseUser.admin: True}
    ).where(BaseUser.id == existing.id)
