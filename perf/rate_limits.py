"""Counting requests against the rate limits, against not counting them.

Every request of the HTTP API resolves its key with
:func:`everyskill.api_keys.resolve`, which counts the request against the
key's and the tenant's limits in the same statement (``api_key_resolve``:
two counter rows locked and updated, in unlogged tables). The baseline is
the same resolution without counting: the key lookup as it was before rate
limits (``api_key_lookup``, made in the benchmark database from the
migration that first defined it, EXECUTE for ``everyskill_api`` as the
other), called with the same Python around it (the checksum, the hash, the
pool, one statement). Both as the application's login, on its pool.

Two figures, each counting against not counting, in the same rounds:

- ``rate_limit_single``: one client, one request at a time;
- ``rate_limit_concurrent``: 16 clients at once on one hot key (so on one
  tenant as well): every counted request takes its turn on the same two
  counter rows, the worst case for contention.

The key's and the tenant's limits are set as high as they go, so that no
request is refused and every one does the whole work of counting. A round
makes ``rate_limit_calls`` requests each way, the ways in turn, forwards in
one round and backwards in the next; the first round is a warm-up. Kept:
the median throughput of each way, and p50 and p99 of the requests'
latencies over the kept rounds. Checks: no request was refused; and, with a
limit of 100 a minute, 16 clients making 20 requests each at once get
exactly 100 allowed.

``python -m perf.rate_limits [--scale full|quick]`` runs this benchmark
alone, on a scratch database of its own (as ``python -m perf`` does), and
prints its figures.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from everyskill.api_keys import display_prefix, generate_key, is_well_formed, key_hash, resolve
from everyskill.database import app_engine
from everyskill.errors import AuthenticationError, RateLimitedError
from everyskill.migration_sql import earlier_migration
from perf.context import Context
from perf.alone import run_alone
from perf.harness import Figure, p50

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The migration that made the key lookup without counting.
LOOKUP_MIGRATION = PROJECT_ROOT / "piccolo_migrations" / "everyskill_2026_12_07t02_10_00_000000.py"
CLIENTS = 16
HIGHEST = 2**31 - 1
_LOOKUP = "SELECT key_id, tenant_id, scopes, rate_limit_per_minute FROM api_key_lookup($1::bytea)"

Call = Callable[[str], Awaitable[object]]


def _lookup_sql() -> str:
    sql = earlier_migration(str(LOOKUP_MIGRATION), LOOKUP_MIGRATION.name).LOOKUP
    assert isinstance(sql, str)
    return sql


async def uncounted(key: str) -> object:
    """``resolve(key)`` as it was before rate limits: the same steps, the
    lookup without counting."""
    if not is_well_formed(key):
        raise AuthenticationError("malformed")
    digest = key_hash(key)
    pool = app_engine().pool
    assert pool is not None
    async with pool.acquire() as connection:
        row = await connection.fetchrow(_LOOKUP, digest)
    if row is None:
        raise AuthenticationError("invalid")
    return row


async def _new_key(owner: asyncpg.Connection, tenant_id: str, limit: int) -> str:
    key = generate_key()
    await owner.execute(
        "INSERT INTO api_keys (tenant_id, name, key_prefix, key_hash, scopes, rate_limit_per_minute)"
        " VALUES ($1, 'benchmark', $2, $3, ARRAY['read'], $4)",
        tenant_id,
        display_prefix(key),
        key_hash(key),
        limit,
    )
    return key


async def _round(call: Call, key: str, clients: int, calls: int) -> tuple[float, list[float]]:
    """``calls`` requests by ``clients`` clients at once: (requests/s, each
    request's seconds)."""
    durations: list[float] = []

    async def client(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await call(key)
            durations.append(time.perf_counter() - started)

    each = calls // clients
    started = time.perf_counter()
    await asyncio.gather(*(client(each) for _ in range(clients)))
    return each * clients / (time.perf_counter() - started), durations


def _p99(durations: list[float]) -> float:
    return statistics.quantiles(durations, n=100)[98]


async def _compare(
    ways: dict[str, Call], key: str, clients: int, calls: int, rounds: int
) -> dict[str, tuple[float, list[float]]]:
    throughputs: dict[str, list[float]] = {way: [] for way in ways}
    durations: dict[str, list[float]] = {way: [] for way in ways}
    for number in range(rounds + 1):
        order = list(ways) if number % 2 == 0 else list(reversed(ways))
        for way in order:
            per_second, each = await _round(ways[way], key, clients, calls)
            if number:  # the first round warms up
                throughputs[way].append(per_second)
                durations[way] += each
    return {way: (p50(throughputs[way]), durations[way]) for way in ways}


async def _exact(owner: asyncpg.Connection, tenant_id: str) -> bool:
    """16 clients, 20 requests each at once, on a key limited to 100 a
    minute: exactly 100 allowed."""
    key = await _new_key(owner, tenant_id, 100)

    async def attempt() -> bool:
        try:
            await resolve(key)
        except RateLimitedError:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(CLIENTS * 20)))
    return sum(results) == 100


def _figure(
    key: str, what: str, base_what: str, measured: dict[str, tuple[float, list[float]]],
    checks: dict[str, bool], details: dict[str, object],
) -> Figure:
    counted_rate, counted_times = measured["counted"]
    base_rate, base_times = measured["uncounted"]
    latencies = {
        way: {"p50_ms": p50(times) * 1000, "p99_ms": _p99(times) * 1000}
        for way, (_, times) in measured.items()
    }
    return Figure(
        key=key,
        what=what,
        measured=counted_rate,
        unit="requests/s",
        baseline_what=base_what,
        baseline=base_rate,
        ratio=counted_rate / base_rate,
        ratio_meaning="throughput counting / not counting",
        checks=checks,
        details={**details, "latency": latencies},
        notes=[
            f"counting: p50 {latencies['counted']['p50_ms']:.3f} ms,"
            f" p99 {latencies['counted']['p99_ms']:.3f} ms; not counting: p50"
            f" {latencies['uncounted']['p50_ms']:.3f} ms,"
            f" p99 {latencies['uncounted']['p99_ms']:.3f} ms"
        ],
    )


async def measure(context: Context) -> list[Figure]:
    owner = context.owner
    tenant_id = context.catalogue.tenants[2].tenant_id
    await owner.execute(_lookup_sql())
    await owner.execute(
        "UPDATE tenants SET rate_limit_per_minute = $2 WHERE id = $1", tenant_id, HIGHEST
    )
    key = await _new_key(owner, tenant_id, HIGHEST)
    calls, rounds = context.scale.rate_limit_calls, context.scale.rate_limit_rounds
    refusals = 0

    async def counted(key: str) -> object:
        """``resolve(key)``: the lookup and the count in one statement."""
        nonlocal refusals
        try:
            return await resolve(key)
        except RateLimitedError:
            refusals += 1
            return None

    ways: dict[str, Call] = {"uncounted": uncounted, "counted": counted}
    single = await _compare(ways, key, 1, calls, rounds)
    single_refusals = refusals
    many = await _compare(ways, key, CLIENTS, calls, rounds)
    exact = await _exact(owner, tenant_id)
    common = {"requests_per_round": calls, "rounds": rounds}
    return [
        _figure(
            "rate_limit_single",
            "resolving a key and counting the request, one client",
            "the same resolution without counting, one client",
            single, {"no request refused": single_refusals == 0}, {**common, "clients": 1},
        ),
        _figure(
            "rate_limit_concurrent",
            f"resolving and counting, {CLIENTS} clients on one key and tenant",
            f"the same resolution without counting, {CLIENTS} clients",
            many,
            {
                "no request refused": refusals == 0,
                f"exactly 100 of {CLIENTS * 20} requests at once allowed at 100 a minute": exact,
            },
            {**common, "clients": CLIENTS},
        ),
    ]


async def _alone(url: str, scale_name: str) -> list[Figure]:
    from everyskill.database import SERVER_SETTINGS, prepare_app_login
    from perf.context import SCALES
    from perf.data import make_catalogue

    await prepare_app_login()
    engine = app_engine()
    await engine.start_connection_pool(min_size=1, max_size=CLIENTS + 4)
    owner = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    try:
        context = Context(url, owner, await make_catalogue(owner), SCALES[scale_name])
        return await measure(context)
    finally:
        await owner.close()
        await engine.close_connection_pool()


def main(argv: list[str] | None = None) -> int:
    return run_alone("python -m perf.rate_limits", _alone, argv)


if __name__ == "__main__":
    sys.exit(main())
