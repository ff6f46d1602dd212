"""Where the database is: ``DATABASE_URL``, or else the embedded server.

Contract
--------
- :func:`database_url` returns ``DATABASE_URL`` when it is set (any
  ``postgresql://`` URL that asyncpg accepts). Otherwise it starts (or joins)
  the project's embedded PostgreSQL (:mod:`everyskill.embedded_db`) and returns
  its URL.
- The role in that URL owns the schema: it runs the migrations, serves the
  admin, loads the sample data, and sees every tenant. Nothing on a tenant's
  request path connects as it.
- :func:`app_database_url` is the application's login, ``everyskill_api``
  (:data:`APP_LOGIN`): ``EVERYSKILL_APP_DATABASE_URL`` when it is set; else,
  on the embedded server, the login the embedded server keeps a password for
  (:func:`everyskill.embedded_db.app_url`). With ``DATABASE_URL`` set and
  ``EVERYSKILL_APP_DATABASE_URL`` not, it raises
  :class:`DatabaseConfigurationError` saying what to set: it never falls back
  to the owner.
- :func:`app_engine` is the engine of the query API (tenant scopes), on that
  URL: one per process, made on first use. Its first connection checks that
  it is logged in as ``everyskill_api`` with none of the owner's powers
  (:class:`DatabaseConfigurationError` otherwise, naming what is wrong).
  Start its pool once: ``await app_engine().start_connection_pool()``.
  :func:`prepare_app_login` (after the migrations) makes the embedded
  server's login usable and checks the login, so that a bad setting stops
  the main job at start-up.
- :func:`bind_tables` binds the tables to an engine: a process that serves
  tenants only binds them to :func:`app_engine`, so that even a Piccolo query
  outside a scope runs as ``everyskill_api`` (and is refused).
- ``EVERYSKILL_BEHIND_POOLER=1`` is the one setting for a transaction-mode
  pooler such as PgBouncer between the application and PostgreSQL: the
  engines turn asyncpg's statement cache off and send no start-up settings
  (set :data:`SERVER_SETTINGS` on the database instead:
  ``ALTER DATABASE ... SET random_page_cost = 1.1``).
- :data:`SERVER_SETTINGS` are the settings of every connection the engines
  make (:func:`engine_config`): the application's, the admin's, the
  migrations'.
- :func:`environment_for` is both settings for another database of the
  same server, for child processes.
- :func:`with_database`, :func:`create_database` and :func:`drop_database`
  manage scratch databases on the same server (the test suite's and the
  performance benchmarks'). The role in the URL needs CREATEDB.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from piccolo.engine.postgres import PostgresEngine

from everyskill import embedded_db
from everyskill.errors import DatabaseUnavailableError

#: The login role of the application (created by the migrations).
APP_LOGIN = "everyskill_api"
#: Where the application's login is configured when DATABASE_URL is set.
APP_URL_VARIABLE = "EVERYSKILL_APP_DATABASE_URL"
#: Set to 1 when a transaction-mode pooler (PgBouncer) is in front of the server.
POOLER_VARIABLE = "EVERYSKILL_BEHIND_POOLER"
#: The application pool's connections per process.
POOL_SIZE_VARIABLE = "EVERYSKILL_POOL_SIZE"
#: Seconds a request waits for a connection of the application pool at most.
POOL_TIMEOUT_VARIABLE = "EVERYSKILL_POOL_TIMEOUT"
#: The application pool's size when POOL_SIZE_VARIABLE is not set (asyncpg's default).
DEFAULT_POOL_SIZE = 10
#: The wait for a pooled connection when POOL_TIMEOUT_VARIABLE is not set.
DEFAULT_POOL_TIMEOUT = 10.0


class DatabaseConfigurationError(RuntimeError):
    """The database settings cannot work: the message says what to set."""


#: Sent when a connection starts (asyncpg's ``server_settings``).
#:
#: ``random_page_cost`` 1.1 instead of PostgreSQL's default 4, as usually
#: advised for SSDs and for data that fits in memory. With 4, the planner
#: prices reading a tenant's rows newest first through the ``(tenant_id,
#: created_at DESC, id DESC)`` index (rows spread over the table) so high
#: that it scans every tenant's newest rows through ``created_at`` instead,
#: hoping to meet the tenant's soon: when another tenant wrote the newest
#: hundred thousand rows, the admin's first page of one tenant's token
#: measurements took 80 ms instead of 0.6 ms.
SERVER_SETTINGS = {"random_page_cost": "1.1"}


def behind_pooler() -> bool:
    """Whether ``EVERYSKILL_BEHIND_POOLER`` says a transaction-mode pooler is in front."""
    value = os.environ.get(POOLER_VARIABLE, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise DatabaseConfigurationError(f"{POOLER_VARIABLE} must be 1 or 0, not {value!r}")


def pool_size() -> int:
    """The application pool's size: ``EVERYSKILL_POOL_SIZE``, or the default."""
    value = os.environ.get(POOL_SIZE_VARIABLE, "").strip()
    if not value:
        return DEFAULT_POOL_SIZE
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise DatabaseConfigurationError(
            f"{POOL_SIZE_VARIABLE} must be a whole number of connections, at least 1, not {value!r}"
        )
    return size


def pool_timeout() -> float:
    """Seconds to wait for a pooled connection: ``EVERYSKILL_POOL_TIMEOUT``, or the default."""
    value = os.environ.get(POOL_TIMEOUT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_POOL_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise DatabaseConfigurationError(
            f"{POOL_TIMEOUT_VARIABLE} must be a number of seconds above 0, not {value!r}"
        )
    return seconds


def engine_config(dsn: str) -> dict[str, Any]:
    """The asyncpg settings of every engine of the project, for ``dsn``.

    Connections are :class:`everyskill.tenancy.ScopeConnection` (a tenant
    scope's COMMIT carries the pool's session reset) and start with
    :data:`SERVER_SETTINGS`. Behind a pooler (:func:`behind_pooler`) the
    statement cache is off (a pooler in transaction mode hands each
    transaction any server connection, where a statement prepared on another
    does not exist) and no start-up setting is sent (PgBouncer refuses them).
    """
    from everyskill.tenancy import ScopeConnection

    config: dict[str, Any] = {"dsn": dsn, "connection_class": ScopeConnection}
    if behind_pooler():
        config["statement_cache_size"] = 0
    else:
        config["server_settings"] = SERVER_SETTINGS
    return config


def database_url() -> str:
    """The owner's connection URL: ``DATABASE_URL``, or the embedded server's."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        return configured
    return embedded_db.start()


def app_database_url() -> str:
    """The application's login URL (``everyskill_api``); see the module doc."""
    configured = os.environ.get(APP_URL_VARIABLE, "").strip()
    if configured:
        return configured
    if os.environ.get("DATABASE_URL", "").strip():
        raise DatabaseConfigurationError(
            f"DATABASE_URL is set (the owner's login, for migrations and the admin), but"
            f" {APP_URL_VARIABLE} is not. Set {APP_URL_VARIABLE} to the application's login,"
            f" postgresql://{APP_LOGIN}:PASSWORD@HOST:PORT/DATABASE; the migrations create the"
            f" role {APP_LOGIN} (a DBA sets its password: ALTER ROLE {APP_LOGIN} PASSWORD"
            " '...'). See docs/operations.md."
        )
    return embedded_db.app_url()


# What the application's login may be: itself, logging in, with no power
# that would let it past row-level security, and no member of the role that
# owns the tables (which would let it SET ROLE to the owner).
# session_user: the login itself, whatever role a pooled server connection
# was left in by an earlier client (a session-level SET ROLE survives RESET ALL).
_LOGIN_CHECK = """
SELECT session_user AS login,
       r.rolsuper OR r.rolbypassrls OR r.rolreplication OR r.rolcreaterole
           OR r.rolcreatedb AS powers,
       r.rolinherit AS inherits,
       (SELECT bool_or(pg_has_role(session_user, c.relowner, 'MEMBER'))
          FROM pg_class c WHERE c.oid = to_regclass('skills')) AS owns_tables,
       ARRAY(SELECT m.rolname FROM pg_roles m
              WHERE m.rolname NOT IN (session_user, 'everyskill_app')
                AND pg_has_role(session_user, m.oid, 'MEMBER')
              ORDER BY 1) AS other_roles,
       EXISTS (SELECT FROM pg_db_role_setting s WHERE s.setrole = r.oid) AS settings
  FROM pg_roles r WHERE r.rolname = session_user
"""


async def check_app_login(connection: asyncpg.Connection) -> None:
    """Raise :class:`DatabaseConfigurationError` unless ``connection`` is
    logged in as :data:`APP_LOGIN` with none of the owner's powers: no
    superuser, BYPASSRLS, REPLICATION, CREATEROLE or CREATEDB, NOINHERIT, a
    member (directly or not) of ``everyskill_app`` only, and no settings of
    its own (``ALTER ROLE ... SET``, which the login may do to itself, could
    start its sessions in another role)."""
    row = await connection.fetchrow(_LOGIN_CHECK)
    assert row is not None
    problems = []
    if row["login"] != APP_LOGIN:
        problems.append(f"it is logged in as {row['login']!r}, not {APP_LOGIN!r}")
    if row["powers"]:
        problems.append(
            "the role has a power it must not have (SUPERUSER, BYPASSRLS, REPLICATION,"
            " CREATEROLE or CREATEDB)"
        )
    if row["inherits"]:
        problems.append("the role is INHERIT (it must be NOINHERIT)")
    if row["owns_tables"]:
        problems.append("the role owns the tables or is a member of their owner")
    if row["other_roles"]:
        problems.append(f"the role is a member of {', '.join(row['other_roles'])}")
    if row["settings"]:
        problems.append(
            f"the role has settings of its own (ALTER ROLE {APP_LOGIN} RESET ALL, and"
            f" ALTER ROLE {APP_LOGIN} IN DATABASE ... RESET ALL)"
        )
    if problems:
        where = APP_URL_VARIABLE if os.environ.get(APP_URL_VARIABLE) else "the application's URL"
        raise DatabaseConfigurationError(
            f"{where} cannot be used for tenant work: {'; '.join(problems)}. It must name"
            f" the {APP_LOGIN} login the migrations create (see docs/operations.md)."
        )


class AppEngine(PostgresEngine):
    """Piccolo's PostgreSQL engine, for the application's login: the first
    connection it makes is checked with :func:`check_app_login`, and a
    failure to connect at all says which setting names the login."""

    _checked = False

    async def check(self) -> None:
        """Connect once and check the login (:func:`check_app_login`); done
        once per engine, before its first connection is used."""
        if self._checked:
            return
        try:
            connection = await asyncpg.connect(**self.config)
        except asyncpg.ProtocolViolationError as error:
            if "startup parameter" in str(error) and not behind_pooler():
                raise DatabaseConfigurationError(
                    f"the server refused a start-up setting ({error}): a pooler such as"
                    f" PgBouncer is in front of it. Set {POOLER_VARIABLE}=1."
                ) from error
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            if isinstance(error, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
                raise DatabaseConfigurationError(
                    f"the application's login ({APP_URL_VARIABLE}, or the embedded server's"
                    f" {APP_LOGIN}) was refused: {error}. Check its user name and password;"
                    " the role is created by the migrations (run them first)."
                ) from error
            raise DatabaseConfigurationError(
                f"the application's database ({APP_URL_VARIABLE}, or the embedded server's)"
                f" cannot be reached: {type(error).__name__}: {error}. Check its host, port"
                " and database name."
            ) from error
        try:
            await check_app_login(connection)
        finally:
            await connection.close()
        self._checked = True

    #: Seconds :meth:`acquire` waits for a pooled connection.
    acquire_timeout: float = DEFAULT_POOL_TIMEOUT

    async def start_connection_pool(self, **kwargs: Any) -> None:
        """Start the pool, sized by ``EVERYSKILL_POOL_SIZE`` unless ``max_size``
        is given (see the module's contract)."""
        await self.check()
        self.acquire_timeout = pool_timeout()
        kwargs.setdefault("max_size", pool_size())
        kwargs.setdefault("min_size", kwargs["max_size"])
        await super().start_connection_pool(**kwargs)

    async def acquire(self) -> Any:
        """A connection: from the pool, waiting at most :attr:`acquire_timeout`
        seconds (DatabaseUnavailableError after that), or a new one when no
        pool was started. Give a pooled one back with ``pool.release``."""
        if self.pool is None:
            return await self.get_new_connection()
        try:
            return await self.pool.acquire(timeout=self.acquire_timeout)
        except asyncio.TimeoutError as error:
            raise DatabaseUnavailableError(
                "connect",
                f"none of the {self.pool.get_max_size()} connections of the pool came free"
                f" within {self.acquire_timeout:g} s ({POOL_TIMEOUT_VARIABLE}): the server"
                " is busy",
            ) from error

    async def get_new_connection(self) -> Any:
        await self.check()
        return await super().get_new_connection()


_app_engine: AppEngine | None = None


def app_engine() -> AppEngine:
    """The query API's engine, logged in as :data:`APP_LOGIN`; made on first
    use from :func:`app_database_url`."""
    global _app_engine
    if _app_engine is None:
        _app_engine = AppEngine(config=engine_config(app_database_url()))
    return _app_engine


async def prepare_app_login() -> None:
    """Run after the migrations, by the main job and the test suite: on the
    embedded server, give the application's login its password; then check
    that the application's login works (:class:`DatabaseConfigurationError`
    saying what to set, otherwise)."""
    configured = any(os.environ.get(name, "").strip() for name in ("DATABASE_URL", APP_URL_VARIABLE))
    if not configured:
        await asyncio.to_thread(embedded_db.set_app_password)
    await app_engine().check()


def bind_tables(engine: PostgresEngine) -> None:
    """Bind every table of ``tables.py`` to ``engine`` (Piccolo's public
    ``_meta.db``). ``piccolo_conf`` binds them to the owner's engine, which
    the admin and the migrations need; a process that serves tenants only
    binds them to :func:`app_engine`, so that a Piccolo query run outside a
    tenant scope is refused by PostgreSQL instead of seeing every tenant."""
    from tables import TABLES

    for table in TABLES:
        table._meta.db = engine


def environment_for(owner_url: str) -> dict[str, str]:
    """The settings that point both logins at ``owner_url``'s database: for
    a child process (the main job, the ``piccolo`` command) run on another
    database than this process's."""
    database = urlsplit(owner_url).path.lstrip("/")
    return {"DATABASE_URL": owner_url, APP_URL_VARIABLE: with_database(app_database_url(), database)}


def with_database(url: str, database: str) -> str:
    """``url`` with its database replaced by ``database``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(server_url: str, name: str) -> None:
    """Create the empty database ``name`` on the server of ``server_url``."""
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def drop_database(server_url: str, name: str) -> None:
    """Drop the database ``name``, whoever is still connected to it.

    FORCE cannot end a background worker of the server (autovacuum, after a
    large write) for a role that is not a superuser: that worker ends on its
    own within seconds, so the drop is tried again meanwhile.
    """
    connection = await asyncpg.connect(server_url)
    try:
        for _attempt in range(60):
            try:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                await asyncio.sleep(0.5)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
