"""Talking to the admin in process (httpx over ASGI), as a member of staff.

The admin app runs on the session's Piccolo engine (the ``engine`` fixture
starts its pool), against the scratch database, as ``main.py`` serves it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from piccolo.apps.user.tables import BaseUser
from starlette.types import ASGIApp

from everyskill.admin import create_app

PASSWORD = "a long staff password"


@dataclass
class Staff:
    """A logged-in client of the admin and its username."""

    client: httpx.AsyncClient
    username: str


async def make_staff(*, active: bool = True, admin: bool = True) -> str:
    """A new ``piccolo_user`` with :data:`PASSWORD`; returns its username."""
    username = f"staff-{uuid.uuid4().hex[:8]}"
    await BaseUser.create_user(
        username=username,
        password=PASSWORD,
        email=f"{username}@staff.invalid",
        active=active,
        admin=admin,
    )
    return username


@asynccontextmanager
async def admin_client(
    app: ASGIApp | None = None,
    *,
    username: str | None = None,
    base_url: str = "http://testserver",
    client_address: str = "127.0.0.1",
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the admin holding its CSRF token, logged in as ``username``
    when one is given (the login must succeed)."""
    transport = httpx.ASGITransport(app=app or create_app(), client=(client_address, 50000))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        await client.get("/")
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        if username is not None:
            response = await log_in(client, username)
            assert response.status_code == 200, response.text
        yield client


async def log_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/public/login/", json={"username": username, "password": password})


async def row(client: httpx.AsyncClient, table: str, row_id: str) -> dict[str, Any]:
    """A row as the admin's edit form loads it."""
    response = await client.get(f"/api/tables/{table}/{row_id}/")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def save(
    client: httpx.AsyncClient, table: str, row_id: str, **changes: Any
) -> httpx.Response:
    """Save the edit form of a row: every field sent back, ``changes`` applied,
    as the admin's front end does."""
    fields = await row(client, table, row_id)
    fields.pop("id", None)
    return await client.patch(f"/api/tables/{table}/{row_id}/", json={**fields, **changes})


async def add(client: httpx.AsyncClient, table: str, **fields: Any) -> httpx.Response:
    """Save the add form of a table: its defaults (from ``new/``) with
    ``fields`` filled in, as the admin's front end does."""
    defaults = await client.get(f"/api/tables/{table}/new/")
    assert defaults.status_code == 200, defaults.text
    values = {**defaults.json(), **fields}
    values.pop("id", None)
    return await client.post(f"/api/tables/{table}/", json=values)
