"""
Test fixtures: a real PostgreSQL, never a mock.

At start-up the suite takes the server from ``DATABASE_URL`` or, without it,
the embedded PostgreSQL, creates a scratch database ``everyskill_test_<pid>``
on it, migrates it with the ``piccolo`` command line, and points
``DATABASE_URL`` (the owner) and ``EVERYSKILL_APP_DATABASE_URL`` (the
application's login, ``everyskill_api``) at it, so that everything the tests
run (Piccolo, the query API, the admin, child processes) uses the scratch
database. It is dropped at the end. The owner needs CREATEDB (the embedded
owner has it). With ``DATABASE_URL`` set, ``EVERYSKILL_APP_DATABASE_URL``
must name the application's login on the same server (any database: the
scratch one replaces it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import asyncpg
import psutil
import pytest
from piccolo.engine.postgres import PostgresEngine

from everyskill import embedded_db
from everyskill.database import APP_URL_VARIABLE, app_database_url, database_url, prepare_app_login
from tests.support import (
    TEST_DATABASE_PREFIX,
    TenantRows,
    connected,
    create_database,
    drop_database,
    make_tenant,
    run_piccolo,
    with_database,
)

if TYPE_CHECKING:
    from tests.admin_client import Staff
    from tests.http_support import Served, Tenant

_server_url: str | None = None
_test_database: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _server_url, _test_database
    embedded = not os.environ.get("DATABASE_URL", "").strip()
    _server_url = database_url()
    # Read before DATABASE_URL points at the scratch database: on the
    # embedded server, the login it keeps a password for; else the setting
    # (a clear error when it is missing).
    server_app_url = app_database_url()
    asyncio.run(_drop_abandoned_test_databases(_server_url))
    _test_database = f"{TEST_DATABASE_PREFIX}{os.getpid()}"
    asyncio.run(create_database(_server_url, _test_database))
    test_url = with_database(_server_url, _test_database)
    os.environ["DATABASE_URL"] = test_url
    os.environ[APP_URL_VARIABLE] = with_database(server_app_url, _test_database)
    run_piccolo(test_url, "migrations", "forwards", "all")
    if embedded:
        embedded_db.set_app_password()
    asyncio.run(prepare_app_login())


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server_url and _test_database:
        asyncio.run(drop_database(_server_url, _test_database))


async def _drop_abandoned_test_databases(server_url: str) -> None:
    """Drop scratch databases of test runs whose process no longer exists."""
    async with connected(server_url) as connection:
        names = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1",
            TEST_DATABASE_PREFIX.replace("_", r"\_") + "%",
        )
    for (name,) in names:
        suffix = name[len(TEST_DATABASE_PREFIX) :].split("_")[0]
        if suffix.isdigit() and not psutil.pid_exists(int(suffix)):
            await drop_database(server_url, name)


@pytest.fixture(scope="session")
def server_url() -> str:
    """The owner's URL of the server the tests run on (not a scratch database)."""
    assert _server_url is not None
    return _server_url


@pytest.fixture(scope="session")
def database_url_for_tests() -> str:
    """The owner's URL of the migrated scratch database."""
    return os.environ["DATABASE_URL"]


@pytest.fixture
async def owner(database_url_for_tests: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the owner: the admin's view, every tenant."""
    async with connected(database_url_for_tests) as connection:
        yield connection


@pytest.fixture(scope="session")
def app_url_for_tests() -> str:
    """The application's login (``everyskill_api``) on the scratch database."""
    return os.environ[APP_URL_VARIABLE]


@pytest.fixture
async def app_connection(app_url_for_tests: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection made the way the application makes it: logged in as
    ``everyskill_api``; each tenant operation then switches to the
    application role."""
    async with connected(app_url_for_tests) as connection:
        yield connection


@pytest.fixture
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """An empty scratch database, dropped afterwards; yields its owner URL."""
    name = f"{TEST_DATABASE_PREFIX}{os.getpid()}_{os.urandom(4).hex()}"
    await create_database(server_url, name)
    try:
        yield with_database(server_url, name)
    finally:
        await drop_database(server_url, name)


@pytest.fixture(scope="session")
async def engine() -> AsyncIterator[PostgresEngine]:
    """The query API's engine (``everyskill.database.app_engine``, logged in
    as ``everyskill_api`` on the scratch database) with its pool started, as
    an application starts it: what the tenant scopes run on. Piccolo's own
    engine (piccolo_conf.DB, the owner, what the tables are bound to) gets a
    pool too, as the main job starts it for the admin."""
    from everyskill.database import app_engine
    from tables import Tenant

    db = Tenant._meta.db
    assert isinstance(db, PostgresEngine)
    app = app_engine()
    await db.start_connection_pool(min_size=1, max_size=10)
    await app.start_connection_pool(min_size=1, max_size=20)
    yield app
    await app.close_connection_pool()
    await db.close_connection_pool()


@pytest.fixture
async def tenant(owner: asyncpg.Connection, engine: PostgresEngine) -> TenantRows:
    """A tenant with one row in every table, and the API's engine ready."""
    return await make_tenant(owner, "api")


@pytest.fixture
async def other_tenant(owner: asyncpg.Connection, engine: PostgresEngine) -> TenantRows:
    """A second tenant, for isolation checks."""
    return await make_tenant(owner, "other")


@pytest.fixture
async def staff(engine: PostgresEngine) -> AsyncIterator[Staff]:
    """A client of the admin, logged in as a new active admin user."""
    # Imported here: the admin's tables find their engine when imported.
    from tests.admin_client import Staff, admin_client, make_staff

    username = await make_staff()
    async with admin_client(username=username) as client:
        yield Staff(client, username)


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The server app (HTTP API at /v1, admin at /) served by uvicorn in a
    process of its own, on the scratch database."""
    from tests.http_support import served

    with served(tmp_path_factory.mktemp("api") / "server.log") as server:
        yield server


@pytest.fixture
async def api_a(owner: asyncpg.Connection, engine: PostgresEngine) -> Tenant:
    """A tenant with a row in every table and an API key with every scope."""
    from tests.http_support import tenant_with_key

    return await tenant_with_key(owner, "api-a")


@pytest.fixture
async def api_b(owner: asyncpg.Connection, engine: PostgresEngine) -> Tenant:
    """A second such tenant: its ids are what tenant A must not find."""
    from tests.http_support import tenant_with_key

    return await tenant_with_key(owner, "api-b")
