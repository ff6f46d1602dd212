"""The admin app and its security settings.

Contract
--------
- :func:`create_app` returns the ASGI app: Piccolo Admin with
  :data:`everyskill.admin.table_configs.TABLE_CONFIGS`, its connection pool
  opened and closed with the app's lifespan. It connects as the owner, so
  it sees every tenant.
- Login is required for all but the public part (the single-page app's
  shell and assets, the login and logout endpoints, the site name and
  translations): Piccolo's session auth against the ``piccolo_user`` table
  lets in only users that are both **active** and **admin**, at login
  (:class:`~everyskill.admin.login.StaffUser`) and again on every request
  (deactivating a user ends their sessions' access at once).
- Every request that writes (POST, PUT, PATCH, DELETE) needs the CSRF token
  of the double-submit cookie ``csrftoken`` in the ``X-CSRFToken`` header;
  without it the answer is 403. Over HTTPS the Referer or Origin must also
  be one of ``allowed_hosts``.
- Login requests are limited per client address: more than
  :data:`LOGIN_ATTEMPTS` in a window of :data:`LOGIN_WINDOW` seconds answer
  429, and the address stays blocked for :data:`LOGIN_BLOCK` seconds. The
  windows are fixed, one after the other (Piccolo API's in-memory limiter),
  so across the end of one up to twice the limit can arrive; a block must
  last at least a window.
- With ``production`` on, the session cookie is ``Secure`` (sent over HTTPS
  only) and error pages show no details. Production needs
  ``allowed_hosts`` (the names the admin is served under), otherwise
  :func:`create_app` raises :class:`ValueError`: the CSRF check would refuse
  every write over HTTPS.
- The lists of the tables that grow with use show an exact count up to
  10,000 rows and PostgreSQL's estimate above (:mod:`everyskill.admin.counts`).
- Sessions last :data:`SESSION_EXPIRY`, extended while used, at most
  :data:`MAX_SESSION_EXPIRY`.
- Staff land on the overview (:mod:`everyskill.admin.overview_pages`):
  ``/overview/`` and a benchmark run's comparison ``/runs/<id>/``, behind
  the same login; the sidebar links to it under Links, and each benchmark
  run's page in the admin links to its comparison.
- The custom forms of :mod:`everyskill.admin.api_key_forms` create and
  revoke the HTTP API's keys. Every answer of a form (``/api/forms/...``)
  carries ``Cache-Control: no-store``: a new key is in one, and no browser or
  proxy may keep it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from piccolo.engine import engine_finder
from piccolo_admin.endpoints import create_admin
from piccolo_api.rate_limiting.middleware import InMemoryLimitProvider, RateLimitProvider
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from everyskill.admin import counts
from everyskill.admin.api_key_forms import API_KEY_FORMS
from everyskill.admin.login import StaffUser
from everyskill.admin.overview_pages import OVERVIEW_PATH, extend_shell, overview_routes
from everyskill.admin.table_configs import TABLE_CONFIGS

__all__ = [
    "FORMS_PATH",
    "LOGIN_ATTEMPTS",
    "LOGIN_BLOCK",
    "LOGIN_WINDOW",
    "MAX_SESSION_EXPIRY",
    "NoStoreForms",
    "SESSION_EXPIRY",
    "SITE_NAME",
    "create_app",
    "login_limit",
]

SITE_NAME = "EverySkill admin"
#: Login requests allowed per client address in :data:`LOGIN_WINDOW` seconds.
LOGIN_ATTEMPTS = 10
LOGIN_WINDOW = 300
#: Seconds an address that went over the limit stays blocked.
LOGIN_BLOCK = 900
SESSION_EXPIRY = timedelta(hours=1)
MAX_SESSION_EXPIRY = timedelta(hours=12)
#: Where the admin serves its custom forms: their answers are never cached.
FORMS_PATH = "/api/forms/"


class NoStoreForms:
    """ASGI middleware: ``Cache-Control: no-store`` on every answer under
    :data:`FORMS_PATH` (a created API key is shown in one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(FORMS_PATH):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_no_store)


def login_limit(
    attempts: int = LOGIN_ATTEMPTS, window: int = LOGIN_WINDOW, block: int = LOGIN_BLOCK
) -> RateLimitProvider:
    """The rate limit of the login endpoint (in memory: one process).

    A block shorter than the window would not end on time: the limiter keeps
    an address's count until its window ends, so the next request after the
    block would block it again. That is refused with :class:`ValueError`.
    """
    if block < window:
        raise ValueError(
            f"a login block ({block} s) must last at least the window ({window} s)"
        )
    return InMemoryLimitProvider(limit=attempts, timespan=window, block_duration=block)


def create_app(
    *,
    production: bool = False,
    allowed_hosts: Sequence[str] = (),
    login_rate_limit: RateLimitProvider | None = None,
) -> ASGIApp:
    """The admin as an ASGI app, with the database pool tied to its lifespan."""
    if production and not allowed_hosts:
        raise ValueError(
            "In production the admin needs the host names it is served under"
            " (--allowed-host or EVERYSKILL_ALLOWED_HOSTS): over HTTPS its CSRF"
            " check accepts writes only from those hosts."
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = engine_finder()
        assert engine is not None, "piccolo_conf.py defines no engine"
        await engine.start_connection_pool()  # type: ignore[no-untyped-call]
        try:
            yield
        finally:
            await engine.close_connection_pool()  # type: ignore[no-untyped-call]

    admin = create_admin(
        tables=TABLE_CONFIGS,
        forms=API_KEY_FORMS,
        site_name=SITE_NAME,
        production=production,
        auth_table=StaffUser,
        allowed_hosts=list(allowed_hosts),
        rate_limit_provider=login_rate_limit or login_limit(),
        session_expiry=SESSION_EXPIRY,
        max_session_expiry=MAX_SESSION_EXPIRY,
        auto_include_related=False,
        sidebar_links={"Overview": OVERVIEW_PATH},
    )
    counts.install(admin, TABLE_CONFIGS)
    extend_shell(admin)
    return Starlette(
        routes=[*overview_routes(), Mount("/", NoStoreForms(admin))], lifespan=lifespan
    )
