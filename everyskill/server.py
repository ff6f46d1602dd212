"""The server app: the HTTP API at ``/v1`` and the admin at ``/``, one port.

Contract
--------
- :func:`create_server_app` returns one Starlette app that mounts the API
  (:func:`everyskill.http_api.create_api_app`) at ``/v1`` and the admin
  (:func:`everyskill.admin.create_app`) at ``/``. Its lifespan starts both
  pools and closes them at shutdown: the owner's engine
  (``piccolo_conf.DB``, which the tables are bound to: the admin) and the
  application's engine (:func:`everyskill.database.app_engine`, logged in as
  ``everyskill_api``: the API). Starlette runs no lifespan of a mounted app,
  so this one starts what the admin's own lifespan would.
- ``/v1`` itself, and a path under ``/v1`` that no mount takes (Starlette's mount patterns do
  not match a path holding a newline) is answered with the API's
  ``unknown-route`` problem, never the admin's plain-text 404.
- :func:`app_from_environment` is the factory uvicorn imports in each worker
  process (``uvicorn everyskill.server:app_from_environment --factory``):
  the options come from the environment, as ``main.py`` sets them:
  ``EVERYSKILL_PRODUCTION=1`` and ``EVERYSKILL_ALLOWED_HOSTS`` (comma-separated).
- :data:`IMPORT_STRING` names that factory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from everyskill.admin import create_app as create_admin_app
from everyskill.database import app_engine
from everyskill.http_api import create_api_app
from everyskill.http_api.problems import problem_response

__all__ = ["API_PREFIX", "IMPORT_STRING", "app_from_environment", "create_server_app"]

#: Where the API is mounted.
API_PREFIX = "/v1"
#: The factory of the server app, for uvicorn (``factory=True``).
IMPORT_STRING = "everyskill.server:app_from_environment"


def create_server_app(*, production: bool = False, allowed_hosts: Sequence[str] = ()) -> Starlette:
    """The API and the admin on one app (see the module's contract). Raises
    :class:`ValueError` for production without allowed hosts, as the admin does."""
    admin = create_admin_app(production=production, allowed_hosts=allowed_hosts)
    api = create_api_app()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from piccolo_conf import DB

        await DB.start_connection_pool()
        try:
            await app_engine().start_connection_pool()
            try:
                yield
            finally:
                await app_engine().close_connection_pool()
        finally:
            await DB.close_connection_pool()

    return Starlette(
        routes=[
            # "/v1" itself is no path of the mount: without this route the
            # admin's mount at "/" would answer it.
            Route(API_PREFIX, _api_root, methods=list(_METHODS)),
            Mount(API_PREFIX, app=api),
            Mount("/", app=admin),
        ],
        lifespan=lifespan,
        exception_handlers={404: _not_found},
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def _api_root(request: Request) -> Response:
    return problem_response(
        "unknown-route",
        f"no route {API_PREFIX!r}: the routes are listed at {API_PREFIX}/docs",
    )


async def _not_found(request: Request, error: Exception) -> Response:
    path = request.url.path
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return problem_response(
            "unknown-route", f"no route {path!r}: the routes are listed at {API_PREFIX}/docs"
        )
    detail = error.detail if isinstance(error, HTTPException) else "Not Found"
    return PlainTextResponse(str(detail), status_code=404)


def app_from_environment() -> Starlette:
    """The server app with the options the environment gives (see the contract)."""
    return create_server_app(
        production=os.environ.get("EVERYSKILL_PRODUCTION", "") == "1",
        allowed_hosts=[
            host.strip()
            for host in os.environ.get("EVERYSKILL_ALLOWED_HOSTS", "").split(",")
            if host.strip()
        ],
    )
