"""
Rate limits (``everyskill.rate_limits``, counted by ``api_keys.resolve``):
exact counts across concurrent connections and across OS processes, the
key's and the tenant's limits and how one refusal spares the other's quota,
refill in real time, the defaults, the headers, what a crash and a restart
do to the counters, and that the application's login cannot touch them.

Limits are small, so that a whole burst runs well within one request's cost
(a limit of 20 a minute refills one request every 3 seconds): the counts
are then exact, not approximately right.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from everyskill.api_keys import ResolvedKey, create_api_key, key_hash, resolve, revoke_api_key
from everyskill.errors import (
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    EverySkillError,
    RateLimitedError,
)
from everyskill.rate_limits import (
    DEFAULT_KEY_LIMIT_PER_MINUTE,
    DEFAULT_TENANT_LIMIT_PER_MINUTE,
    QUOTA_EXCEEDED_TYPE,
    PolicyStatus,
    RateLimitStatus,
    headers,
    outcome,
    violated_policies,
)
from everyskill.tenancy import tenant_transaction
from tests.cluster import private_cluster
from tests.support import PROJECT_ROOT, TenantRows, connected, make_tenant, run_piccolo

APP_LOGIN = "everyskill_api"
COUNTERS = ("rate_limit_keys", "rate_limit_tenants")


async def attempt(key: str) -> RateLimitStatus | RateLimitedError:
    """What one request with ``key`` gets."""
    try:
        return (await resolve(key)).rate_limit
    except RateLimitedError as refused:
        return refused


def allowed(results: list[RateLimitStatus | RateLimitedError]) -> list[RateLimitStatus]:
    return [result for result in results if isinstance(result, RateLimitStatus)]


def refused(results: list[RateLimitStatus | RateLimitedError]) -> list[RateLimitedError]:
    return [result for result in results if isinstance(result, RateLimitedError)]


async def waiting_for_a_lock(owner: asyncpg.Connection, pid: int | None = None) -> int:
    """Wait until a backend of the application's login (or the one with
    ``pid``) waits for a lock; its pid."""
    for _ in range(600):
        found = await owner.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND (pid = $1 OR ($1 IS NULL AND usename = $2))",
            pid, APP_LOGIN,
        )
        if found is not None:
            return int(found)
        await asyncio.sleep(0.05)
    raise AssertionError("nothing waited for a lock within 30 s")


async def set_tenant_limit(owner: asyncpg.Connection, tenant_id: str, limit: int | None) -> None:
    await owner.execute(
        "UPDATE tenants SET rate_limit_per_minute = $2 WHERE id = $1", tenant_id, limit
    )


# -- one key ------------------------------------------------------------------------


async def test_a_burst_gets_exactly_the_limit_then_an_exact_retry_after(
    engine: PostgresEngine, tenant: TenantRows
) -> None:
    created = await create_api_key(tenant.tenant_id, "hook", ["read"], rate_limit_per_minute=6)
    results = [await attempt(created.key) for _ in range(9)]
    statuses = allowed(results)
    # Six requests, each reporting the key (the tighter policy) and what is left.
    assert [(s.policy, s.limit, s.remaining) for s in statuses] == [
        ("key", 6, remaining) for remaining in (5, 4, 3, 2, 1, 0)
    ]
    # A request costs 10 seconds of a 60-second quota: the whole quota is
    # back 10 seconds per request used.
    assert [s.reset_seconds for s in statuses] == [10, 20, 30, 40, 50, 60]
    assert results[:6] == statuses
    for error in refused(results):
        assert (error.policy, error.limit, error.remaining) == ("key", 6, 0)
        # The next request is allowed once one request's cost has passed: 10 s
        # after the first, less the time the burst took (well under a second).
        assert error.retry_after_seconds == 10
        assert error.reset_seconds == error.retry_after_seconds
        assert isinstance(error, EverySkillError)
        assert "6 requests per minute" in str(error) and "retry after 10 s" in str(error)
    assert len(refused(results)) == 3


@pytest.mark.parametrize("limit", [7, 9, 13])
async def test_a_limit_that_does_not_divide_the_minute_is_exact(
    engine: PostgresEngine, tenant: TenantRows, limit: int
) -> None:
    """60/limit is not a finite decimal: the cost is truncated, never
    rounded up, so a burst from rest gets exactly ``limit`` requests and
    each reports exactly what is left."""
    created = await create_api_key(
        tenant.tenant_id, "odd", ["read"], rate_limit_per_minute=limit
    )
    results = [await attempt(created.key) for _ in range(limit + 1)]
    assert [s.remaining for s in allowed(results)] == list(range(limit - 1, -1, -1))
    assert [(e.policy, e.limit) for e in refused(results)] == [("key", limit)]


async def test_a_large_odd_limit_reports_every_request_left(
    engine: PostgresEngine, tenant: TenantRows
) -> None:
    """A first request comes from rest: at 997 a minute it leaves exactly
    996, however long it took."""
    created = await create_api_key(tenant.tenant_id, "odd", ["read"], rate_limit_per_minute=997)
    status = await attempt(created.key)
    assert isinstance(status, RateLimitStatus)
    assert (status.policy, status.limit, status.remaining) == ("key", 997, 996)


async def test_the_quota_refills_in_real_time(engine: PostgresEngine, tenant: TenantRows) -> None:
    """At 60 a minute, one request comes back every second: after waiting
    Retry-After, exactly one more request is allowed."""
    created = await create_api_key(tenant.tenant_id, "ci", ["read"], rate_limit_per_minute=60)
    burst = [await attempt(created.key) for _ in range(61)]
    assert len(allowed(burst)) == 60 and isinstance(burst[-1], RateLimitedError)
    wait = burst[-1].retry_after_seconds
    assert wait == 1
    await asyncio.sleep(wait)
    after = [await attempt(created.key) for _ in range(3)]
    assert isinstance(after[0], RateLimitStatus) and after[0].remaining == 0
    assert [type(result) for result in after[1:]] == [RateLimitedError, RateLimitedError]
    # After a whole minute's worth of waiting the quota would be whole again:
    # the reset an allowed request reports says when.
    assert 58 <= after[0].reset_seconds <= 60


async def test_a_changed_limit_applies_from_the_next_request(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    created = await create_api_key(tenant.tenant_id, "ci", ["read"], rate_limit_per_minute=2)
    results = [await attempt(created.key) for _ in range(3)]
    assert [type(result) for result in results] == [RateLimitStatus, RateLimitStatus, RateLimitedError]
    await owner.execute(
        "UPDATE api_keys SET rate_limit_per_minute = 10 WHERE id = $1", created.info.id
    )
    # The share of the minute already used is kept: two requests of 30 s
    # each used the whole minute, so the key waits for 6 s (one request at
    # the new limit), not 30.
    error = await attempt(created.key)
    assert isinstance(error, RateLimitedError) and (error.limit, error.retry_after_seconds) == (10, 6)


# -- concurrency: exact counts ----------------------------------------------------------


async def test_concurrent_connections_get_exactly_the_limit(
    engine: PostgresEngine, tenant: TenantRows
) -> None:
    """160 requests at once on the pool's 20 connections: exactly 20 are
    allowed, and each saw a different number of remaining requests (no
    request was counted twice or lost)."""
    created = await create_api_key(tenant.tenant_id, "hot", ["read"], rate_limit_per_minute=20)
    results = await asyncio.gather(*(attempt(created.key) for _ in range(160)))
    statuses = allowed(results)
    assert len(statuses) == 20
    assert sorted(s.remaining for s in statuses) == list(range(20))
    assert {(e.policy, e.limit) for e in refused(results)} == {("key", 20)}


async def test_concurrent_keys_of_one_tenant_share_its_limit_exactly(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    """Four keys of one tenant, 160 requests at once: the tenant's limit (30)
    holds exactly across the keys, and no request deadlocks (each locks its
    key's counter, then its tenant's)."""
    await set_tenant_limit(owner, tenant.tenant_id, 30)
    keys = [
        await create_api_key(tenant.tenant_id, f"k{index}", ["read"], rate_limit_per_minute=1000)
        for index in range(4)
    ]
    results = await asyncio.gather(*(attempt(keys[i % 4].key) for i in range(160)))
    statuses = allowed(results)
    assert len(statuses) == 30
    assert {s.policy for s in statuses} == {"tenant"}
    assert sorted(s.remaining for s in statuses) == list(range(30))
    assert {(e.policy, e.limit) for e in refused(results)} == {("tenant", 30)}


def _worker(key: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.rate_limit_worker", key, str(count)],
        cwd=PROJECT_ROOT, env=dict(os.environ), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


async def test_two_processes_get_exactly_the_limit_between_them(
    engine: PostgresEngine, tenant: TenantRows
) -> None:
    """Two OS processes, each with its own pool, resolve one key 30 times
    each, started together: 20 requests are allowed between them, no more
    than the quota regained while they ran, and (when they took less than
    one request's cost) the counts they saw interleave without a repeat."""
    created = await create_api_key(tenant.tenant_id, "hot", ["read"], rate_limit_per_minute=20)
    workers = [_worker(created.key, 30) for _ in range(2)]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = await asyncio.to_thread(worker.stdout.readline)
            assert line.strip() == "ready", line + (worker.stderr.read() if worker.stderr else "")
        started = time.monotonic()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [await asyncio.to_thread(worker.communicate, timeout=60) for worker in workers]
        took = time.monotonic() - started
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    seen = [json.loads(stdout) for stdout, _ in outputs]
    assert all(len(outcomes) == 30 for outcomes in seen), outputs
    every = [outcome for outcomes in seen for outcome in outcomes]
    allowed_remaining = sorted(remaining for kind, _, remaining in every if kind == "allowed")
    # A request's cost is 3 s: the quota regains one request per 3 s the
    # workers took, however slow the machine.
    refilled = int(took // 3)
    assert 20 <= len(allowed_remaining) <= 20 + refilled, (took, allowed_remaining)
    if refilled == 0:
        assert allowed_remaining == list(range(20))
    assert {(kind, policy) for kind, policy, _ in every if kind == "refused"} == {("refused", "key")}
    # Both processes were served: the count is shared, not per process.
    assert all(any(kind == "allowed" for kind, _, _ in outcomes) for outcomes in seen)


# -- the key's limit and the tenant's ------------------------------------------------------


async def test_a_refusal_by_one_limit_uses_none_of_the_other(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    """Tenant limit 8; key A 5 a minute, key B 20. A's requests over its own
    limit leave the tenant's quota to B; B's requests the tenant refuses
    leave B's own quota whole."""
    await set_tenant_limit(owner, tenant.tenant_id, 8)
    a = await create_api_key(tenant.tenant_id, "a", ["read"], rate_limit_per_minute=5)
    b = await create_api_key(tenant.tenant_id, "b", ["read"], rate_limit_per_minute=20)

    from_a = [await attempt(a.key) for _ in range(7)]
    assert [(s.policy, s.remaining) for s in allowed(from_a)] == [
        ("key", remaining) for remaining in (4, 3, 2, 1, 0)
    ]
    assert [(e.policy, e.limit) for e in refused(from_a)] == [("key", 5)] * 2

    # The tenant used 5 of 8: B gets exactly 3, reported against the tenant.
    from_b = [await attempt(b.key) for _ in range(10)]
    assert [(s.policy, s.limit, s.remaining) for s in allowed(from_b)] == [
        ("tenant", 8, 2), ("tenant", 8, 1), ("tenant", 8, 0)
    ]
    assert [(e.policy, e.limit) for e in refused(from_b)] == [("tenant", 8)] * 7

    # Staff lift the tenant's limit and clear its counter: B's seven refused
    # requests cost B nothing, so it has 17 left of its 20.
    await set_tenant_limit(owner, tenant.tenant_id, 1000)
    await owner.execute("DELETE FROM rate_limit_tenants WHERE tenant_id = $1", tenant.tenant_id)
    more = [await attempt(b.key) for _ in range(18)]
    assert [s.remaining for s in allowed(more)] == list(range(16, -1, -1))
    assert [(e.policy, e.limit) for e in refused(more)] == [("key", 20)]


async def test_tenants_are_counted_apart(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows,
    other_tenant: TenantRows,
) -> None:
    await set_tenant_limit(owner, tenant.tenant_id, 3)
    mine = await create_api_key(tenant.tenant_id, "mine", ["read"])
    theirs = await create_api_key(other_tenant.tenant_id, "theirs", ["read"])
    assert len(allowed([await attempt(mine.key) for _ in range(5)])) == 3
    status = await attempt(theirs.key)
    assert isinstance(status, RateLimitStatus)
    assert (status.policy, status.limit, status.remaining) == (
        "key", DEFAULT_KEY_LIMIT_PER_MINUTE, DEFAULT_KEY_LIMIT_PER_MINUTE - 1
    )


async def test_the_defaults_apply_when_no_limit_is_set(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection, engine: PostgresEngine,
    tenant: TenantRows,
) -> None:
    """The defaults the module documents are the function's. The first
    request of a key and of a tenant comes from rest: what it leaves does
    not depend on how fast it runs."""
    created = await create_api_key(tenant.tenant_id, "ci", ["read"])
    assert await owner.fetchval(
        "SELECT rate_limit_per_minute FROM tenants WHERE id = $1", tenant.tenant_id
    ) is None
    resolved = await resolve(created.key)
    assert resolved.rate_limit_per_minute == DEFAULT_KEY_LIMIT_PER_MINUTE
    assert resolved.rate_limit.policies == (
        PolicyStatus(DEFAULT_KEY_LIMIT_PER_MINUTE, DEFAULT_KEY_LIMIT_PER_MINUTE - 1, 1, "key"),
        PolicyStatus(
            DEFAULT_TENANT_LIMIT_PER_MINUTE, DEFAULT_TENANT_LIMIT_PER_MINUTE - 1, 1, "tenant"
        ),
    )
    row = await app_connection.fetchrow(
        "SELECT * FROM api_key_resolve($1)", key_hash(created.key)
    )
    assert row is not None
    assert (row["key_limit"], row["tenant_limit"]) == (
        DEFAULT_KEY_LIMIT_PER_MINUTE, DEFAULT_TENANT_LIMIT_PER_MINUTE
    )


async def test_the_database_refuses_a_limit_that_is_not_positive(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    for limit in (0, -5):
        with pytest.raises(asyncpg.CheckViolationError):
            await set_tenant_limit(owner, tenant.tenant_id, limit)


async def test_keys_that_do_not_work_count_nothing(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    created = await create_api_key(tenant.tenant_id, "old", ["read"], rate_limit_per_minute=3)
    await revoke_api_key(created.info.key_prefix)
    for _ in range(5):
        with pytest.raises(EverySkillError):
            await resolve(created.key)
    assert await owner.fetchval(
        "SELECT count(*) FROM rate_limit_keys WHERE key_id = $1", created.info.id
    ) == 0
    assert await owner.fetchval(
        "SELECT count(*) FROM rate_limit_tenants WHERE tenant_id = $1", tenant.tenant_id
    ) == 0


async def test_a_counter_goes_with_its_key(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    created = await create_api_key(tenant.tenant_id, "ci", ["read"])
    await resolve(created.key)
    assert await owner.fetchval(
        "SELECT count(*) FROM rate_limit_keys WHERE key_id = $1", created.info.id
    ) == 1
    await owner.execute("DELETE FROM api_keys WHERE id = $1", created.info.id)
    assert await owner.fetchval(
        "SELECT count(*) FROM rate_limit_keys WHERE key_id = $1", created.info.id
    ) == 0


# -- headers ------------------------------------------------------------------------------


def test_the_headers_of_an_allowed_request() -> None:
    """draft-ietf-httpapi-ratelimit-headers-11: a Structured Field list item
    per policy, the key's then the tenant's, the policy's name a String, q
    and w on the policy, r and t on the current limit."""
    key = PolicyStatus(600, 599, 1, "key")
    tenant = PolicyStatus(6000, 5990, 2, "tenant")
    assert headers(RateLimitStatus(600, 599, 1, "key", (key, tenant))) == {
        "RateLimit-Policy": '"key";q=600;w=60, "tenant";q=6000;w=60',
        "RateLimit": '"key";r=599;t=1, "tenant";r=5990;t=2',
    }
    # A status made by hand, without its policies: the one it names.
    assert headers(RateLimitStatus(6000, 0, 60, "tenant")) == {
        "RateLimit-Policy": '"tenant";q=6000;w=60',
        "RateLimit": '"tenant";r=0;t=60',
    }


def test_the_headers_of_a_refusal() -> None:
    policies = (PolicyStatus(20, 3, 45, "key"), PolicyStatus(8, 0, 60, "tenant", 7))
    error = RateLimitedError("tenant", 8, 7, policies)
    assert headers(error) == {
        "RateLimit-Policy": '"key";q=20;w=60, "tenant";q=8;w=60',
        # The effective window of the refusing policy ends when Retry-After
        # does, not later; the key's is as it was (the request was not counted).
        "RateLimit": '"key";r=3;t=45, "tenant";r=0;t=7',
        "Retry-After": "7",
    }
    assert violated_policies(error) == ["tenant"]
    both = RateLimitedError(
        "tenant", 8, 7, (PolicyStatus(20, 0, 60, "key", 2), PolicyStatus(8, 0, 60, "tenant", 7))
    )
    assert headers(both)["RateLimit"] == '"key";r=0;t=2, "tenant";r=0;t=7'
    assert violated_policies(both) == ["key", "tenant"]
    alone = RateLimitedError("tenant", 8, 7)
    assert headers(alone) == {
        "RateLimit-Policy": '"tenant";q=8;w=60',
        "RateLimit": '"tenant";r=0;t=7',
        "Retry-After": "7",
    }
    assert violated_policies(alone) == ["tenant"]
    assert QUOTA_EXCEEDED_TYPE.endswith("#quota-exceeded")
    with pytest.raises(ValueError):
        RateLimitedError("key", 5, 0)


async def test_every_response_names_both_policies(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    """The same RateLimit-Policy on every response of a key, allowed or
    refused, whichever policy binds (draft-11 section 3)."""
    await set_tenant_limit(owner, tenant.tenant_id, 4)
    created = await create_api_key(tenant.tenant_id, "ci", ["read"], rate_limit_per_minute=3)
    other = await create_api_key(tenant.tenant_id, "other", ["read"], rate_limit_per_minute=3)
    results = [await attempt(created.key) for _ in range(4)]
    results.append(await attempt(other.key))  # the tenant's last request
    results.append(await attempt(other.key))  # refused by the tenant
    fields = [headers(result) for result in results]
    assert {f["RateLimit-Policy"] for f in fields} == {'"key";q=3;w=60, "tenant";q=4;w=60'}
    assert [f["RateLimit"].split(", ")[0].split(";")[1] for f in fields] == [
        "r=2", "r=1", "r=0", "r=0", "r=2", "r=2"
    ]
    assert [f["RateLimit"].split(", ")[1].split(";")[1] for f in fields] == [
        "r=3", "r=2", "r=1", "r=1", "r=0", "r=0"
    ]
    assert [type(result) for result in results] == [RateLimitStatus] * 3 + [
        RateLimitedError, RateLimitStatus, RateLimitedError
    ]
    assert [violated_policies(e) for e in refused(results)] == [["key"], ["tenant"]]


def test_the_outcome_reports_the_policy_that_binds() -> None:
    row = {
        "allowed": True, "key_limit": 10, "key_remaining": 4, "key_reset": 36, "key_wait": 0,
        "tenant_limit": 100, "tenant_remaining": 4, "tenant_reset": 58, "tenant_wait": 0,
    }
    policies = (PolicyStatus(10, 4, 36, "key"), PolicyStatus(100, 4, 58, "tenant"))
    # A tie goes to the key.
    assert outcome(row) == RateLimitStatus(10, 4, 36, "key", policies)
    tighter = outcome({**row, "tenant_remaining": 3})
    assert (tighter.limit, tighter.remaining, tighter.reset_seconds, tighter.policy) == (
        100, 3, 58, "tenant"
    )
    assert [p.remaining for p in tighter.policies] == [4, 3]
    # Refused by both: the longer wait is the one to report.
    refused_row = {**row, "allowed": False, "key_wait": 2, "tenant_wait": 5, "key_remaining": 0,
                   "tenant_remaining": 0}
    with pytest.raises(RateLimitedError) as error:
        outcome(refused_row)
    assert (error.value.policy, error.value.limit, error.value.retry_after_seconds) == (
        "tenant", 100, 5
    )
    assert [(p.policy, p.wait_seconds) for p in error.value.policies] == [("key", 2), ("tenant", 5)]


# -- the application's login ----------------------------------------------------------------


async def test_the_application_cannot_touch_the_counters_or_the_limits(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection, engine: PostgresEngine,
    tenant: TenantRows,
) -> None:
    created = await create_api_key(tenant.tenant_id, "ci", ["read"], rate_limit_per_minute=2)
    await resolve(created.key)
    statements = [
        *(f"SELECT * FROM {table}" for table in COUNTERS),
        *(f"UPDATE {table} SET tat = 0" for table in COUNTERS),
        *(f"DELETE FROM {table}" for table in COUNTERS),
        *(f"TRUNCATE {table}" for table in COUNTERS),
        "INSERT INTO rate_limit_keys (key_id, tat) VALUES ('x', 0)",
        "INSERT INTO rate_limit_tenants (tenant_id, tat) VALUES ('x', 0)",
        "UPDATE tenants SET rate_limit_per_minute = 1000000",
        "UPDATE api_keys SET rate_limit_per_minute = 1000000",
    ]
    for statement in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_connection.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, tenant.tenant_id) as db:
                await db.execute(statement)
    # The tenant may read its own limit (as every column of its tenant row).
    async with tenant_transaction(app_connection, tenant.tenant_id) as db:
        assert await db.fetchval("SELECT count(rate_limit_per_minute) FROM tenants") == 0
    # The count went on: one request left of two, then none.
    assert (await resolve(created.key)).rate_limit.remaining == 0
    with pytest.raises(RateLimitedError):
        await resolve(created.key)
    privileges = await owner.fetch(
        "SELECT t, r, has_table_privilege(r, t, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE,"
        " REFERENCES, TRIGGER') AS granted"
        "  FROM unnest($1::text[]) AS t, unnest(ARRAY[$2, 'everyskill_app', 'public']) AS r",
        list(COUNTERS),
        APP_LOGIN,
    )
    assert [row["granted"] for row in privileges] == [False] * 6
    assert await owner.fetchval(
        "SELECT array_agg(relpersistence::text ORDER BY relname) FROM pg_class"
        " WHERE relname = ANY($1::text[]) AND relkind = 'r'",
        list(COUNTERS),
    ) == ["u", "u"]


# -- a crash, a restart ------------------------------------------------------------------------


async def test_a_crash_empties_the_counters_and_a_restart_keeps_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """On a cluster of its own: the counters survive a clean restart; a
    crash (an immediate stop, then recovery) empties them, and the key and
    its limit, which are logged, remain."""
    with private_cluster(tmp_path_factory.mktemp("rate")) as cluster:
        run_piccolo(cluster.url, "migrations", "forwards", "all")
        login = cluster.url.replace("everyskill@", f"{APP_LOGIN}@", 1)
        digest = key_hash("esk_" + "a" * 38)
        async with connected(cluster.url) as owner:
            rows = await make_tenant(owner, "crash")
            await owner.execute(
                "INSERT INTO api_keys (tenant_id, name, key_prefix, key_hash, scopes,"
                " rate_limit_per_minute) VALUES ($1, 'ci', 'aaaaaaaa', $2, ARRAY['read'], 3)",
                rows.tenant_id, digest,
            )

        async def remaining() -> list[int]:
            """What one request leaves of the key's quota, as the login sees it."""
            async with connected(login) as app:
                row = await app.fetchrow("SELECT * FROM api_key_resolve($1)", digest)
            return [] if row is None else [row["key_remaining"]]

        assert await remaining() == [2]
        assert await remaining() == [1]
        await cluster.restart()
        assert await remaining() == [0]
        await cluster.run_async(cluster.pg_ctl("-m", "immediate", "stop"))
        await cluster.start()
        async with connected(cluster.url) as owner:
            assert await owner.fetchval("SELECT count(*) FROM rate_limit_keys") == 0
            assert await owner.fetchval(
                "SELECT rate_limit_per_minute FROM api_keys WHERE key_hash = $1", digest
            ) == 3
        # The whole quota again.
        assert await remaining() == [2]


# -- locks: no deadlock, no waiting on a tenant for a refused key ----------------------------


async def test_deleting_a_key_while_its_request_holds_the_counter_does_not_deadlock(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows,
    database_url_for_tests: str,
) -> None:
    """A request holds its key's counter and has last_used_at to stamp; a
    deletion of the key holds the key's row and waits for the counter (its
    ON DELETE CASCADE). The request must not wait for the key's row: both
    finish, neither is chosen as a deadlock's victim."""
    created = await create_api_key(tenant.tenant_id, "ci", ["read"], rate_limit_per_minute=10)
    await resolve(created.key)
    await owner.execute("UPDATE api_keys SET last_used_at = NULL WHERE id = $1", created.info.id)
    async with connected(database_url_for_tests) as holder, connected(
        database_url_for_tests
    ) as deleter:
        # The counter is held, so that the request, then the deletion,
        # queue for it in that order.
        holding = holder.transaction()
        await holding.start()
        await holder.execute(
            "SELECT 1 FROM rate_limit_keys WHERE key_id = $1 FOR UPDATE", created.info.id
        )
        request = asyncio.create_task(attempt(created.key))
        await waiting_for_a_lock(owner)
        deleting = deleter.transaction()
        await deleting.start()
        deletion = asyncio.create_task(
            deleter.execute("DELETE FROM api_keys WHERE id = $1", created.info.id)
        )
        await waiting_for_a_lock(owner, deleter.get_server_pid())
        await holding.commit()
        result = await asyncio.wait_for(request, 30)
        assert await asyncio.wait_for(deletion, 30) == "DELETE 1"
        await deleting.commit()
    assert isinstance(result, RateLimitStatus) and result.remaining == 8
    assert await owner.fetchval(
        "SELECT count(*) FROM rate_limit_keys WHERE key_id = $1", created.info.id
    ) == 0
    with pytest.raises(AuthenticationError):
        await resolve(created.key)


async def test_a_key_over_its_limit_does_not_wait_for_its_tenants_counter(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows,
    database_url_for_tests: str,
) -> None:
    """While the tenant's counter is held (another key's request), a key
    over its own limit is refused at once; a key within its limit takes its
    turn on the tenant's counter."""
    await set_tenant_limit(owner, tenant.tenant_id, 20)
    hot = await create_api_key(tenant.tenant_id, "hot", ["read"], rate_limit_per_minute=1)
    calm = await create_api_key(tenant.tenant_id, "calm", ["read"], rate_limit_per_minute=100)
    assert isinstance(await attempt(hot.key), RateLimitStatus)
    assert isinstance(await attempt(calm.key), RateLimitStatus)
    async with connected(database_url_for_tests) as holder:
        holding = holder.transaction()
        await holding.start()
        await holder.execute(
            "SELECT 1 FROM rate_limit_tenants WHERE tenant_id = $1 FOR UPDATE", tenant.tenant_id
        )
        request = asyncio.create_task(attempt(hot.key))
        # The refusal comes without any wait for a lock.
        while not request.done():
            assert await owner.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND usename = $1",
                APP_LOGIN,
            ) == 0, "the refused key waited for its tenant's counter"
            await asyncio.sleep(0.01)
        error = request.result()
        assert isinstance(error, RateLimitedError) and error.policy == "key"
        # The tenant's status, read without waiting: two of 20 used (one
        # back every 3 s since).
        key_status, tenant_status = error.policies
        assert (key_status.policy, key_status.remaining, key_status.refused) == ("key", 0, True)
        assert (tenant_status.policy, tenant_status.refused) == ("tenant", False)
        assert 18 <= tenant_status.remaining <= 20
        turn = asyncio.create_task(attempt(calm.key))
        await waiting_for_a_lock(owner)
        assert not turn.done()
        await holding.commit()
        status = await asyncio.wait_for(turn, 30)
    assert isinstance(status, RateLimitStatus) and status.policy == "tenant"


async def test_a_deadlock_in_the_resolution_is_a_conflict(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows,
    database_url_for_tests: str,
) -> None:
    """Someone holding the tenant's counter who then asks for the key's
    (the reverse of every request's order) deadlocks with a request: the
    request that PostgreSQL aborts raises ConflictError, never asyncpg's
    error; nothing was counted.

    PostgreSQL aborts the backend whose deadlock check (``deadlock_timeout``
    after it began to wait) first sees the cycle: the request, which waits
    first, unless the machine stalls so long that its check ran before the
    other side waited. Then the other side is aborted and the request goes
    through; the scene is played again, with a new key."""
    for _attempt in range(5):
        created = await create_api_key(tenant.tenant_id, "ci", ["read"], rate_limit_per_minute=10)
        await resolve(created.key)
        async with connected(database_url_for_tests) as other:
            holding = other.transaction()
            await holding.start()
            await other.execute(
                "SELECT 1 FROM rate_limit_tenants WHERE tenant_id = $1 FOR UPDATE",
                tenant.tenant_id,
            )
            request = asyncio.create_task(resolve(created.key))
            await waiting_for_a_lock(owner)
            reverse = asyncio.create_task(
                other.execute(
                    "SELECT 1 FROM rate_limit_keys WHERE key_id = $1 FOR UPDATE", created.info.id
                )
            )
            results = await asyncio.wait_for(
                asyncio.gather(request, reverse, return_exceptions=True), 30
            )
            await holding.rollback()
        resolved, other_result = results
        if not isinstance(resolved, ResolvedKey):
            break
        assert isinstance(other_result, asyncpg.DeadlockDetectedError), other_result
    # The request was aborted: ConflictError, and the other side went on.
    assert isinstance(resolved, ConflictError), resolved
    assert "retry" in str(resolved)
    assert other_result == "SELECT 1"
    # Nothing was counted: the next request leaves 8 of 10.
    assert (await resolve(created.key)).rate_limit.remaining == 8


@pytest.mark.parametrize("how", ["terminate", "cancel"])
async def test_a_restart_or_a_cancelled_statement_is_unavailable(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows,
    database_url_for_tests: str, how: str,
) -> None:
    """The resolution's backend ended by the server (as a restart ends it:
    AdminShutdownError) or its statement cancelled (QueryCanceledError):
    DatabaseUnavailableError (a 503 with Retry-After), not a raw error."""
    created = await create_api_key(tenant.tenant_id, "ci", ["read"])
    await resolve(created.key)
    async with connected(database_url_for_tests) as holder:
        holding = holder.transaction()
        await holding.start()
        await holder.execute(
            "SELECT 1 FROM rate_limit_keys WHERE key_id = $1 FOR UPDATE", created.info.id
        )
        request = asyncio.create_task(resolve(created.key))
        pid = await waiting_for_a_lock(owner)
        assert await owner.fetchval(f"SELECT pg_{how}_backend($1)", pid) is True
        result = (await asyncio.gather(request, return_exceptions=True))[0]
        await holding.rollback()
    assert isinstance(result, DatabaseUnavailableError), repr(result)
    assert isinstance(result.__cause__, asyncpg.PostgresError)
    # The pool recovers: the next request works.
    assert isinstance(await resolve(created.key), ResolvedKey)
