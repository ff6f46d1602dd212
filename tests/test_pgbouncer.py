"""
Tenant isolation through PgBouncer in transaction mode.

Debian's PgBouncer (1.18, started by :mod:`tests.pgbouncer` in front of the
test server, a fresh one for each test) pools the ``everyskill_api`` login's
connections in transaction mode: a server connection serves one client's
transaction, then any other client's. The application reaches it with the
one setting ``EVERYSKILL_BEHIND_POOLER=1``. What is shown here:

- Without the setting, PgBouncer refuses the engines' connections (their
  start-up setting); with it, the statement cache is off and they work. With
  the cache on, a statement prepared on one server connection is missing on
  the next: the cache must be off.
- Many concurrent scopes of different tenants, through many client
  connections, run on the few server connections of PgBouncer's pool, one
  tenant after another on each. Every scope runs as the application role,
  for its own tenant, and reads only its tenant's rows; between them, a
  statement outside a scope runs as the login with no tenant and reads
  nothing.
- The attack tests of the login pass through PgBouncer: outside a scope
  every table is refused; in a scope, dropping the role leaves nothing and
  becoming the owner is refused.
- What one client leaves in its session (a ``SET`` outside a transaction,
  which the query API never sends) stays on the server connection and
  reaches the next client's statements outside a transaction, but never a
  scope, which sets its own role and tenant. With PgBouncer's
  ``server_reset_query_always = 1`` nothing reaches the next client. A SET
  without LOCAL inside a scope outlives its COMMIT, but the pool's session
  reset, sent with the COMMIT, empties the tenant on that server connection
  before PgBouncer hands it on: the next client reads nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import asyncpg
import pytest

from everyskill import feedback, usage
from everyskill.database import (
    POOLER_VARIABLE,
    AppEngine,
    DatabaseConfigurationError,
    engine_config,
)
from everyskill.errors import NotPermittedError, TenantScopeError
from everyskill.tenancy import APP_ROLE, TENANT_SETTING, tenant_scope
from tests.pgbouncer import PgBouncer, running_pgbouncer
from tests.support import TenantRows, make_tenant

APP_LOGIN = "everyskill_api"
#: PgBouncer's server connections for the scratch database.
SERVER_CONNECTIONS = 3
#: The application's client connections to PgBouncer (its pool's size).
CLIENT_CONNECTIONS = 20
#: Scopes started at once, in each round.
CONCURRENT_SCOPES = 40
ROUNDS = 3
TENANTS = 4

# Who a statement runs as, for which tenant, on which server connection.
WHO = (
    "SELECT current_user AS role, session_user AS login,"
    f" current_setting('{TENANT_SETTING}', true) AS tenant, pg_backend_pid() AS pid"
)


@pytest.fixture
def bouncer(app_url_for_tests: str) -> Iterator[PgBouncer]:
    with running_pgbouncer(app_url_for_tests, pool_size=SERVER_CONNECTIONS) as running:
        yield running


@pytest.fixture
def behind_pooler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(POOLER_VARIABLE, "1")


async def _engine(url: str, clients: int | None = None) -> AppEngine:
    """The application's engine on ``url``, as configured behind a pooler,
    with a pool of ``clients`` connections (none when None)."""
    engine = AppEngine(config=engine_config(url))
    if clients is None:
        await engine.check()
    else:
        await engine.start_connection_pool(min_size=clients, max_size=clients)
    return engine


@pytest.fixture
async def pooled_engine(bouncer: PgBouncer, behind_pooler: None) -> AsyncIterator[AppEngine]:
    """The query API's engine through PgBouncer, with more client
    connections than PgBouncer has server connections."""
    engine = await _engine(bouncer.url(), CLIENT_CONNECTIONS)
    yield engine
    await engine.close_connection_pool()


@pytest.fixture
async def bare(bouncer: PgBouncer, behind_pooler: None) -> AsyncIterator[asyncpg.Connection]:
    """A connection through PgBouncer as the login, outside any scope."""
    connection = await asyncpg.connect(**engine_config(bouncer.url()))
    yield connection
    await connection.close()


@pytest.fixture
async def two_tenants(owner: asyncpg.Connection) -> tuple[TenantRows, TenantRows]:
    return await make_tenant(owner, "pgbouncer a"), await make_tenant(owner, "pgbouncer b")


async def _owner_role(owner: asyncpg.Connection) -> str:
    role: str = await owner.fetchval("SELECT current_user")
    return role


def _is_no_tenant(value: str | None) -> bool:
    # NULL on a server connection that never had the setting; '' once a
    # transaction that set it locally has ended.
    return value in (None, "")


# -- the setting ------------------------------------------------------------------


async def test_pgbouncer_refuses_the_engines_start_up_setting_unless_behind_pooler_is_set(
    bouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(POOLER_VARIABLE, raising=False)
    config = engine_config(bouncer.url())
    assert "random_page_cost" in config["server_settings"]
    refused = "unsupported startup parameter: random_page_cost"
    # Piccolo asks the server's version at once, through the engine's check.
    with pytest.warns(Warning, match=f"Unable to fetch server version: .*{refused}"):
        engine = AppEngine(config=config)
    with pytest.raises(DatabaseConfigurationError, match=f"{refused}.*Set {POOLER_VARIABLE}=1"):
        await engine.check()

    monkeypatch.setenv(POOLER_VARIABLE, "1")
    config = engine_config(bouncer.url())
    assert config["statement_cache_size"] == 0 and "server_settings" not in config
    await AppEngine(config=config).check()  # logged in as everyskill_api, nothing more


async def test_the_statement_cache_must_be_off_behind_pgbouncer(
    bouncer: PgBouncer, behind_pooler: None
) -> None:
    """A statement the cache prepared on one server connection does not
    exist on the next one PgBouncer hands out. Made certain here: the first
    server connection is held by another client's transaction, so PgBouncer
    opens a second one for the repeated statement."""
    query = "SELECT $1::int + 1"

    async def repeat(client: asyncpg.Connection) -> int:
        assert await client.fetchval(query, 1) == 2  # the only server connection so far
        holder = await asyncpg.connect(**engine_config(bouncer.url()))
        try:
            async with holder.transaction():
                await holder.execute("SELECT 1")  # the first server connection, held
                value: int = await client.fetchval(query, 2)
                return value
        finally:
            await holder.close()

    cached = await asyncpg.connect(bouncer.url())  # asyncpg's default: the cache on
    try:
        with pytest.raises(asyncpg.InvalidSQLStatementNameError, match="does not exist"):
            await repeat(cached)
    finally:
        await cached.close()

    # The same with the engines' configuration behind a pooler (on a server
    # pool that now has two connections: the second statement runs on the
    # one the holder does not hold, whichever that is).
    uncached = await asyncpg.connect(**engine_config(bouncer.url()))
    try:
        assert await repeat(uncached) == 3
    finally:
        await uncached.close()


# -- many tenants, few server connections -----------------------------------------


@dataclass
class Observed:
    """What the concurrent scopes saw."""

    #: (server pid, tenant) of each scope, in the order they ran.
    scopes: list[tuple[int, str]] = field(default_factory=list)
    #: Server pids of statements outside a scope.
    bare_pids: set[int] = field(default_factory=set)
    in_flight: int = 0
    most_in_flight: int = 0


async def _scope_work(engine: AppEngine, tenant: TenantRows, label: str, seen: Observed) -> None:
    """One tenant's scope through the query API, checking who it runs as
    and that it reads only its own tenant's rows."""
    seen.in_flight += 1
    seen.most_in_flight = max(seen.most_in_flight, seen.in_flight)
    try:
        async with tenant_scope(tenant.tenant_id, engine=engine) as scope:
            who = await scope.connection.fetchrow(WHO)
            assert who is not None
            assert (who["role"], who["login"], who["tenant"]) == (APP_ROLE, APP_LOGIN, tenant.tenant_id)
            seen.scopes.append((who["pid"], tenant.tenant_id))
            saved = await feedback.record_feedback(
                skill_id=tenant.skill_id,
                user_id=tenant.user_id,
                feedback_type="bug_report",
                comment=label,
            )
            measured = await usage.record_measurement(
                skill_id=tenant.skill_id,
                user_id=tenant.user_id,
                model_name="claude-sonnet-4-5",
                input_tokens=1000,
                output_tokens=100,
            )
            feedback_rows = (await feedback.list_feedback(limit=500)).items
            measurements = (await usage.list_measurements(limit=500)).items
            assert {row.tenant_id for row in feedback_rows} == {tenant.tenant_id}
            assert {row.tenant_id for row in measurements} == {tenant.tenant_id}
            assert saved.row.id in {row.id for row in feedback_rows}
            assert measured.row.id in {row.id for row in measurements}
            # One transaction, one server connection, from BEGIN to COMMIT.
            assert await scope.connection.fetchval("SELECT pg_backend_pid()") == who["pid"]
    finally:
        seen.in_flight -= 1


async def _bare_check(engine: AppEngine, seen: Observed) -> None:
    """A client connection of the pool, outside any scope: the login, no
    tenant, nothing readable, whichever server connection it lands on."""
    assert engine.pool is not None
    async with engine.pool.acquire() as connection:
        who = await connection.fetchrow(WHO)
        assert who is not None
        assert (who["role"], who["login"]) == (APP_LOGIN, APP_LOGIN)
        assert _is_no_tenant(who["tenant"])
        seen.bare_pids.add(who["pid"])
        for table in ("skill_feedback", "token_measurements", "tenants"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.fetchval(f"SELECT count(*) FROM {table}")


async def test_concurrent_scopes_of_many_tenants_share_few_server_connections_and_nothing_leaks(
    owner: asyncpg.Connection, bouncer: PgBouncer, pooled_engine: AppEngine
) -> None:
    tenants = [await make_tenant(owner, f"pgbouncer {number}") for number in range(TENANTS)]
    labels: dict[str, str] = {}  # feedback comment -> its tenant
    seen = Observed()
    for round_number in range(ROUNDS):
        work = []
        for number in range(CONCURRENT_SCOPES):
            tenant = tenants[number % TENANTS]
            label = f"pgbouncer round {round_number} scope {number}"
            labels[label] = tenant.tenant_id
            work.append(_scope_work(pooled_engine, tenant, label, seen))
            if number % 4 == 3:
                work.append(_bare_check(pooled_engine, seen))
        await asyncio.gather(*work)
        await asyncio.gather(*(_bare_check(pooled_engine, seen) for _ in range(CLIENT_CONNECTIONS)))

    scopes = ROUNDS * CONCURRENT_SCOPES
    assert len(seen.scopes) == scopes
    # The scopes were concurrent: far more were open (or waiting for a
    # server connection) at once than PgBouncer has server connections.
    assert seen.most_in_flight == CONCURRENT_SCOPES
    assert pooled_engine.pool is not None and pooled_engine.pool.get_size() == CLIENT_CONNECTIONS

    # They all ran on PgBouncer's few server connections...
    server_pids = {pid for pid, _ in seen.scopes} | seen.bare_pids
    assert 1 <= len(server_pids) <= SERVER_CONNECTIONS
    backends = await owner.fetch(
        "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = current_database()"
        " AND backend_start >= to_timestamp($2)",
        APP_LOGIN,
        bouncer.started_at,
    )
    assert server_pids <= {row["pid"] for row in backends}
    assert len(backends) <= SERVER_CONNECTIONS
    # ...each serving one tenant after another.
    served: dict[int, list[str]] = {}
    for pid, tenant_id in seen.scopes:
        served.setdefault(pid, []).append(tenant_id)
    switches = sum(
        previous != current for order in served.values() for previous, current in zip(order, order[1:])
    )
    assert switches >= SERVER_CONNECTIONS

    # Every write landed in its own tenant.
    tenant_ids = [tenant.tenant_id for tenant in tenants]
    written = await owner.fetch(
        "SELECT comment, tenant_id FROM skill_feedback"
        " WHERE tenant_id = ANY($1::text[]) AND comment LIKE 'pgbouncer round %'",
        tenant_ids,
    )
    assert len(written) == scopes
    assert {row["comment"]: row["tenant_id"] for row in written} == labels
    measured = await owner.fetch(
        "SELECT tenant_id, count(*) FROM token_measurements WHERE tenant_id = ANY($1::text[])"
        " GROUP BY tenant_id",
        tenant_ids,
    )
    # One measurement each from make_tenant, plus one per scope.
    assert {row["tenant_id"]: row["count"] for row in measured} == {
        tenant.tenant_id: 1 + scopes // TENANTS for tenant in tenants
    }


# -- the attack tests, through PgBouncer --------------------------------------------


async def test_every_table_is_refused_outside_a_scope(
    owner: asyncpg.Connection, bare: asyncpg.Connection, two_tenants: object
) -> None:
    tables = [
        name
        for (name,) in await owner.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        )
    ]
    assert {"skill_feedback", "tenants", "token_measurements", "piccolo_user", "sessions"} <= set(tables)
    for table in tables:
        # Its first column (not every table has an id: the rate limit counters).
        column = await owner.fetchval(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum = 1", table
        )
        for statement in (
            f'SELECT * FROM "{table}" LIMIT 1',
            f'SELECT count(*) FROM "{table}"',
            f'DELETE FROM "{table}"',
            f'UPDATE "{table}" SET "{column}" = "{column}"',
            f'INSERT INTO "{table}" DEFAULT VALUES',
            f'TRUNCATE "{table}"',
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await bare.execute(statement)
    who = await bare.fetchrow(WHO)
    assert who is not None and (who["role"], who["login"]) == (APP_LOGIN, APP_LOGIN)


@pytest.mark.parametrize(
    "statement",
    ["RESET ROLE", "SET ROLE NONE", f"SELECT set_config('role', '{APP_LOGIN}', true)"],
)
async def test_dropping_the_application_role_in_a_scope_leaves_nothing(
    bouncer: PgBouncer,
    behind_pooler: None,
    two_tenants: tuple[TenantRows, TenantRows],
    statement: str,
) -> None:
    a, _ = two_tenants
    engine = await _engine(bouncer.url(), 2)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_scope(a.tenant_id, engine=engine) as scope:
                await scope.connection.execute(statement)
                assert await scope.connection.fetchval("SELECT current_user") == APP_LOGIN
                await scope.connection.fetch("SELECT * FROM skill_feedback")
        with pytest.raises(NotPermittedError, match="skill_feedback"):
            async with tenant_scope(a.tenant_id, engine=engine) as scope:
                await scope.connection.execute(statement)
                await feedback.record_feedback(skill_id=a.skill_id, feedback_type="thumbs_up", sentiment=1)
    finally:
        await engine.close_connection_pool()


async def test_reset_all_in_a_scope_drops_the_tenant_and_sees_nothing(
    bouncer: PgBouncer, behind_pooler: None, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """RESET ALL leaves the role (PostgreSQL's RESET ALL never resets it) but
    empties the tenant: row-level security then shows and accepts no row."""
    a, _ = two_tenants
    engine = await _engine(bouncer.url(), 2)
    try:
        with pytest.raises(TenantScopeError, match="row-level security"):
            async with tenant_scope(a.tenant_id, engine=engine) as scope:
                await scope.connection.execute("RESET ALL")
                who = await scope.connection.fetchrow(WHO)
                assert who is not None
                assert who["role"] == APP_ROLE and _is_no_tenant(who["tenant"])
                assert (await feedback.list_feedback(limit=500)).items == []
                assert await scope.connection.fetchval("SELECT count(*) FROM skills") == 0
                await feedback.record_feedback(skill_id=a.skill_id, feedback_type="thumbs_up", sentiment=1)
    finally:
        await engine.close_connection_pool()


@pytest.mark.parametrize(
    "how",
    [
        'SET ROLE "{}"',
        "SELECT set_config('role', '{}', false)",
        "SELECT set_config('role', '{}', true)",
        'SET SESSION AUTHORIZATION "{}"',
        'SET LOCAL ROLE "{}"',
    ],
)
async def test_the_login_cannot_become_the_owner_in_a_scope_or_outside(
    owner: asyncpg.Connection,
    bouncer: PgBouncer,
    bare: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    how: str,
) -> None:
    a, _ = two_tenants
    statement = how.format(await _owner_role(owner))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await bare.execute(statement)
    engine = await _engine(bouncer.url(), 2)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_scope(a.tenant_id, engine=engine) as scope:
                await scope.connection.execute(statement)
    finally:
        await engine.close_connection_pool()


# -- what one client leaves behind ---------------------------------------------------


async def _leave_session_state(bouncer: PgBouncer, tenant_id: str) -> None:
    """What a careless (or hostile) client of the login can do: session-level
    SETs, outside a transaction, on the single server connection."""
    attacker = await asyncpg.connect(**engine_config(bouncer.url(bouncer.single)))
    try:
        await attacker.execute(f"SET {TENANT_SETTING} = '{tenant_id}'")
        await attacker.execute(f"SET ROLE {APP_ROLE}")
    finally:
        await attacker.close()


async def test_session_state_left_by_one_client_reaches_the_next_outside_a_scope_never_in_one(
    bouncer: PgBouncer, behind_pooler: None, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """PgBouncer in transaction mode does not reset a server connection
    between clients: what a client SETs outside a transaction stays. The
    query API never does that; if something did, a statement of another
    client outside a scope would run as the application role for that
    tenant. A scope on that server connection still runs for its own
    tenant (it sets both, locally), and RESET ROLE in it leaves nothing."""
    a, b = two_tenants
    engine = await _engine(bouncer.url(bouncer.single))  # checked before the attack
    victim = await asyncpg.connect(**engine_config(bouncer.url(bouncer.single)))
    try:
        before = await victim.fetchrow(WHO)
        await _leave_session_state(bouncer, b.tenant_id)
        after = await victim.fetchrow(WHO)
        assert before is not None and after is not None
        assert after["pid"] == before["pid"]  # the one server connection
        assert (after["role"], after["login"], after["tenant"]) == (APP_ROLE, APP_LOGIN, b.tenant_id)
        leaked = await victim.fetch("SELECT DISTINCT tenant_id FROM skill_feedback")
        assert [row["tenant_id"] for row in leaked] == [b.tenant_id]

        async with tenant_scope(a.tenant_id, engine=engine) as scope:
            who = await scope.connection.fetchrow(WHO)
            assert who is not None and who["pid"] == before["pid"]
            assert (who["role"], who["tenant"]) == (APP_ROLE, a.tenant_id)
            rows = (await feedback.list_feedback(limit=500)).items
            assert {row.tenant_id for row in rows} == {a.tenant_id}
            assert a.feedback_id in {row.id for row in rows}
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_scope(a.tenant_id, engine=engine) as scope:
                # RESET goes back to the login, not to a session's SET ROLE.
                await scope.connection.execute("RESET ROLE")
                assert await scope.connection.fetchval("SELECT current_user") == APP_LOGIN
                await scope.connection.fetch("SELECT * FROM skill_feedback")
    finally:
        await victim.close()


async def test_a_session_set_inside_a_scope_leaves_no_tenant_for_the_next_client(
    bouncer: PgBouncer, behind_pooler: None, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """Code in a scope that forgets LOCAL: its SETs outlive the COMMIT on
    that server connection, but the pool's session reset (RESET ALL) goes
    with the COMMIT, in the same message, so it runs on the same server
    connection before PgBouncer hands it to anyone else. RESET ALL never
    resets the role: the next client, outside a scope, is the application
    role, but with no tenant it reads and writes nothing."""
    a, b = two_tenants
    engine = await _engine(bouncer.url(bouncer.single), 1)
    victim = await asyncpg.connect(**engine_config(bouncer.url(bouncer.single)))
    try:
        async with tenant_scope(a.tenant_id, engine=engine) as scope:
            await scope.connection.execute(f"SET {TENANT_SETTING} = '{b.tenant_id}'")
            await scope.connection.execute(f"SET ROLE {APP_ROLE}")
            pid = await scope.connection.fetchval("SELECT pg_backend_pid()")
        who = await victim.fetchrow(WHO)
        assert who is not None and who["pid"] == pid
        assert who["role"] == APP_ROLE and _is_no_tenant(who["tenant"])
        assert await victim.fetchval("SELECT count(*) FROM skill_feedback") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await victim.execute(
                "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
                " VALUES ($1, $2, 'thumbs_up', 1)",
                b.tenant_id,
                b.skill_id,
            )
    finally:
        await victim.close()
        await engine.close_connection_pool()


async def test_with_server_reset_query_always_nothing_reaches_the_next_client(
    app_url_for_tests: str, behind_pooler: None, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """PgBouncer's DISCARD ALL after every transaction: the session-level SETs
    of the test above reach no one, and scopes work as before."""
    a, b = two_tenants
    with running_pgbouncer(app_url_for_tests, pool_size=SERVER_CONNECTIONS, reset_always=True) as bouncer:
        engine = await _engine(bouncer.url(bouncer.single))
        victim = await asyncpg.connect(**engine_config(bouncer.url(bouncer.single)))
        try:
            before = await victim.fetchrow(WHO)
            await _leave_session_state(bouncer, b.tenant_id)
            after = await victim.fetchrow(WHO)
            assert before is not None and after is not None
            assert after["pid"] == before["pid"]
            assert (after["role"], after["login"]) == (APP_LOGIN, APP_LOGIN)
            assert _is_no_tenant(after["tenant"])
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await victim.fetch("SELECT DISTINCT tenant_id FROM skill_feedback")
            # Scopes work as before.
            async with tenant_scope(a.tenant_id, engine=engine):
                rows = (await feedback.list_feedback(limit=500)).items
            assert {row.tenant_id for row in rows} == {a.tenant_id}
        finally:
            await victim.close()
