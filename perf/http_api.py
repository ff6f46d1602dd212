"""The HTTP API served by ``main.py``: one feedback, a batch, 16 clients at once.

The API is ``main.py``'s served app (uvicorn, one worker, the admin beside
it, as ``python main.py`` serves it), called with a real key of a tenant
(scopes ``feedback:write`` and ``measurements:write``) whose key and
tenant limits are set as high as they go, so that every request is
counted and none is refused. The client is httpx (async, keep-alive) in the
benchmark process. Both servers run uvicorn's defaults: with neither
uvloop nor httptools installed (the project pins neither), asyncio's event
loop and h11's pure-Python HTTP parser. Client, server and PostgreSQL
share this machine's cores (two, where the figures in
``docs/performance.md`` were measured): what the client spends is taken
from the server, for the API and its baselines alike.

Figures:

- ``http_feedback``: ``POST /v1/feedback`` of one thumbs-up with a comment,
  one client, one request at a time. Baseline: a minimal FastAPI app doing
  the raw INSERT (:mod:`perf.raw_http`: parse the JSON, one asyncpg INSERT
  as the owner, answer JSON), served by uvicorn with the same settings.
  Target: at least 0.6x its throughput. Two more ways in the same rounds,
  in the benchmark process without HTTP, say where the time goes: ``work``,
  what the API's handler does with the database (``resolve(key)``, which
  counts the request against the rate limits, then ``record_feedback`` in
  an autocommit tenant scope), and ``raw_insert``, the baseline app's INSERT
  (the owner's connection, one round trip). HTTP's share of each side is
  its HTTP way less its in-process way.
- ``http_measurement_batch``: a batch of 1,000 measurements,
  ``POST /v1/token-measurements`` with ``{"items": [...]}``. Baseline: the
  same batch through the Python API in process
  (``usage.record_measurements`` in an autocommit tenant scope, as the
  handler calls it). Target: at least 0.7x.
- ``http_concurrent``: 16 clients at once (16 keep-alive connections) on
  ``POST /v1/feedback``, each one request at a time, on one skill of one
  tenant (so on one key, one tenant's counters and one skill's aggregate
  row: the worst case for contention). Reported: p50 and p99 latency and
  the throughput; no baseline, no target. The baseline app under the same
  load is in ``details``, for scale.

A round makes ``http_requests`` requests (or ``http_batch_rounds`` batches)
each way, the ways in turn, forwards in one round and backwards in the
next; the first round is a warm-up. Kept: the median throughput of each
way, and the p50 of the requests' latencies. Checks: every request was
answered 201; every row was written; the aggregates of each skill written
equal a recount.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from everyskill import feedback, usage
from everyskill.api_keys import RATE_LIMIT_MAX, create_api_key, resolve
from everyskill.tenancy import tenant_scope
from perf.concurrent_writers import RECOUNT
from perf.context import Context
from perf.harness import Figure, Target, p50
from perf.measurement_batch import batch
from perf.raw_http import INSERT
from perf.served import served_baseline

COMMENT = "Worked well on the quarterly report; the summary matched the source."
BATCH = 1_000
MEASUREMENTS = "SELECT count(*) FROM token_measurements WHERE skill_id = ANY($1::text[])"
CLIENTS = 16
# The ways of one feedback, in the order of the rounds that run forwards.
WAYS = ("raw_http", "api_http", "work", "raw_insert")

Way = Callable[[], Awaitable[int]]


def _p99(durations: list[float]) -> float:
    return statistics.quantiles(durations, n=100)[98]


async def _timed(way: Way, count: int, clients: int = 1) -> tuple[float, list[float], list[int]]:
    """``count`` calls by ``clients`` clients at once, each one call at a
    time: (calls per second, each call's seconds, each call's status)."""
    durations: list[float] = []
    statuses: list[int] = []

    async def client(calls: int) -> None:
        for _ in range(calls):
            started = time.perf_counter()
            statuses.append(await way())
            durations.append(time.perf_counter() - started)

    each = count // clients
    started = time.perf_counter()
    await asyncio.gather(*(client(each) for _ in range(clients)))
    return each * clients / (time.perf_counter() - started), durations, statuses


async def _alternate(
    ways: dict[str, Way], count: int, rounds: int, clients: int = 1
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list[float]], list[int]]:
    """Rounds of every way in turn (forwards, then backwards), the first a
    warm-up: each way's median throughput, its throughputs and latencies of
    the kept rounds, and every status."""
    rates: dict[str, list[float]] = {way: [] for way in ways}
    latencies: dict[str, list[float]] = {way: [] for way in ways}
    statuses: list[int] = []
    for number in range(rounds + 1):
        for way in list(ways) if number % 2 == 0 else list(reversed(ways)):
            rate, durations, answered = await _timed(ways[way], count, clients)
            statuses += answered
            if number:
                rates[way].append(rate)
                latencies[way] += durations
    return {way: p50(values) for way, values in rates.items()}, rates, latencies, statuses


async def measure(context: Context, api_base: str) -> list[Figure]:
    owner = context.owner
    tenant = context.catalogue.tenants[3]
    tenant_id, user = tenant.tenant_id, tenant.user_ids[1]
    skills = dict(zip((*WAYS, "concurrent_api", "concurrent_raw"), tenant.skill_ids[15:21], strict=True))
    measured_skills = tenant.skill_ids[21:25]
    scale = context.scale
    # A real key; the key's and the tenant's limits as high as they go.
    await owner.execute(
        "UPDATE tenants SET rate_limit_per_minute = $2 WHERE id = $1", tenant_id, RATE_LIMIT_MAX
    )
    created = await create_api_key(
        tenant_id,
        "benchmarks",
        "feedback:write,measurements:write",
        rate_limit_per_minute=RATE_LIMIT_MAX,
    )
    key = created.key
    measurements_before = await owner.fetchval(MEASUREMENTS, measured_skills)

    def body(skill: str) -> dict[str, Any]:
        return {"skill_id": skill, "feedback_type": "thumbs_up", "user_id": user, "comment": COMMENT}

    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    many = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {key}"}
    with served_baseline(context.url, tenant_id) as raw_server:
        async with (
            httpx.AsyncClient(base_url=api_base, headers=headers, limits=one, timeout=60) as api,
            httpx.AsyncClient(base_url=raw_server.base_url, limits=one, timeout=60) as raw,
        ):

            async def raw_http() -> int:
                return (await raw.post("/feedback", json=body(skills["raw_http"]))).status_code

            async def api_http() -> int:
                return (await api.post("/v1/feedback", json=body(skills["api_http"]))).status_code

            async def work() -> int:
                resolved = await resolve(key)
                async with tenant_scope(resolved.tenant_id, autocommit=True):
                    await feedback.record_feedback(**body(skills["work"]))
                return 201

            async def raw_insert() -> int:
                await owner.fetchval(INSERT, tenant_id, skills["raw_insert"], user, "thumbs_up", COMMENT)
                return 201

            single, single_rates, single_latencies, single_statuses = await _alternate(
                {"raw_http": raw_http, "api_http": api_http, "work": work, "raw_insert": raw_insert},
                scale.http_requests,
                scale.http_rounds,
            )

            # Each batch its own values (built outside neither timing: both
            # ways build theirs the same way).
            seeds = itertools.count(1)

            async def batch_http() -> int:
                items = batch(measured_skills, BATCH, next(seeds))
                response = await api.post("/v1/token-measurements", json={"items": items})
                return response.status_code

            async def batch_python() -> int:
                items = batch(measured_skills, BATCH, next(seeds))
                async with tenant_scope(tenant_id, autocommit=True):
                    saved = await usage.record_measurements(items)
                return 201 if saved.count == BATCH else 500

            batches, batch_rates, batch_latencies, batch_statuses = await _alternate(
                {"python": batch_python, "http": batch_http}, 1, scale.http_batch_rounds
            )

        async with (
            httpx.AsyncClient(base_url=api_base, headers=headers, limits=many, timeout=60) as api,
            httpx.AsyncClient(base_url=raw_server.base_url, limits=many, timeout=60) as raw,
        ):

            async def concurrent_api() -> int:
                return (await api.post("/v1/feedback", json=body(skills["concurrent_api"]))).status_code

            async def concurrent_raw() -> int:
                return (await raw.post("/feedback", json=body(skills["concurrent_raw"]))).status_code

            concurrent, _, concurrent_latencies, concurrent_statuses = await _alternate(
                {"raw": concurrent_raw, "api": concurrent_api},
                scale.http_concurrent_requests,
                scale.http_concurrent_rounds,
                CLIENTS,
            )

    exact = {
        way: bool(await owner.fetchval(RECOUNT, skills[way]))
        for way in skills
    }
    feedback_rows = {
        way: await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE skill_id = $1", skill)
        for way, skill in skills.items()
    }
    measurement_rows = await owner.fetchval(MEASUREMENTS, measured_skills) - measurements_before
    single_each = (scale.http_rounds + 1) * scale.http_requests
    concurrent_each = (
        (scale.http_concurrent_rounds + 1) * (scale.http_concurrent_requests // CLIENTS) * CLIENTS
    )
    ms = {way: 1000 / rate for way, rate in single.items()}
    latency_ms = {way: 1000 * p50(values) for way, values in single_latencies.items()}
    added = {
        "HTTP of the API: uvicorn, FastAPI, the body, the answer (api_http - work)": (
            1000 * (ms["api_http"] - ms["work"])
        ),
        "the handler's work: key resolved and counted, the feedback recorded (work - raw_insert)": (
            1000 * (ms["work"] - ms["raw_insert"])
        ),
        "HTTP of the baseline app (raw_http - raw_insert)": 1000 * (ms["raw_http"] - ms["raw_insert"]),
    }
    concurrent_ms = {
        way: {
            "p50_ms": 1000 * p50(values),
            "p99_ms": 1000 * _p99(values),
            "requests_per_s": concurrent[way],
        }
        for way, values in concurrent_latencies.items()
    }
    api_c, raw_c = concurrent_ms["api"], concurrent_ms["raw"]
    batch_ms = {way: 1000 / rate for way, rate in batches.items()}
    return [
        Figure(
            key="http_feedback",
            what="POST /v1/feedback, one client, one request at a time",
            measured=single["api_http"],
            unit="requests/s",
            baseline_what=(
                "a minimal FastAPI app doing the raw INSERT (parse JSON, one asyncpg INSERT as the"
                " owner, answer JSON), served by uvicorn with the same settings"
            ),
            baseline=single["raw_http"],
            ratio=single["api_http"] / single["raw_http"],
            ratio_meaning="API throughput / baseline app throughput",
            target=Target("at_least", 0.6),
            details={
                "requests_per_round": scale.http_requests,
                "rounds": scale.http_rounds,
                "requests_per_s": single_rates,
                "ms_per_request": ms,
                "p50_latency_ms": latency_ms,
                "us_per_request_added": added,
            },
            checks={
                "every request answered 201": set(single_statuses) == {201},
                "every row written": all(
                    feedback_rows[way] == single_each for way in WAYS
                ),
                "aggregates equal a recount": all(exact[way] for way in WAYS),
            },
            notes=[
                "Time per request: "
                + "; ".join(f"{way} {ms[way]:.3f} ms" for way in WAYS)
                + ". Ways: api_http, POST /v1/feedback; raw_http, the baseline app; work, what"
                " the API's handler does with the database, in process without HTTP (the key"
                " resolved and counted, record_feedback in an autocommit scope); raw_insert, the"
                " baseline app's INSERT in process. Added per request: "
                + "; ".join(f"{what} {us:.0f} µs" for what, us in added.items())
                + "."
            ],
        ),
        Figure(
            key="http_measurement_batch",
            what=f"a batch of {BATCH:,} token measurements, POST /v1/token-measurements",
            measured=BATCH * batches["http"],
            unit="rows/s",
            baseline_what=(
                "the same batch through the Python API in process (usage.record_measurements in"
                " an autocommit tenant scope, as the handler calls it)"
            ),
            baseline=BATCH * batches["python"],
            ratio=batches["http"] / batches["python"],
            ratio_meaning="throughput over HTTP / in process",
            target=Target("at_least", 0.7),
            details={
                "rows_per_batch": BATCH,
                "rounds": scale.http_batch_rounds,
                "ms_per_batch": batch_ms,
                "batches_per_s": batch_rates,
            },
            checks={
                "every request answered 201": set(batch_statuses) == {201},
                "every row written": measurement_rows
                == 2 * (scale.http_batch_rounds + 1) * BATCH,
            },
            notes=[
                f"Per batch: over HTTP {batch_ms['http']:.1f} ms, in process"
                f" {batch_ms['python']:.1f} ms."
            ],
        ),
        Figure(
            key="http_concurrent",
            what=f"POST /v1/feedback, {CLIENTS} clients at once on one key and skill",
            measured=api_c["p50_ms"],
            unit="ms (p50)",
            details={
                "clients": CLIENTS,
                "requests_per_round": scale.http_concurrent_requests,
                "rounds": scale.http_concurrent_rounds,
                "latency": concurrent_ms,
            },
            checks={
                "every request answered 201": set(concurrent_statuses) == {201},
                "every row written": feedback_rows["concurrent_api"] == concurrent_each
                and feedback_rows["concurrent_raw"] == concurrent_each,
                "aggregates equal a recount": exact["concurrent_api"] and exact["concurrent_raw"],
            },
            notes=[
                f"API: p50 {api_c['p50_ms']:.2f} ms, p99 {api_c['p99_ms']:.2f} ms,"
                f" {api_c['requests_per_s']:,.0f} requests/s. The baseline app under the same"
                f" load, for scale: p50 {raw_c['p50_ms']:.2f} ms, p99 {raw_c['p99_ms']:.2f} ms,"
                f" {raw_c['requests_per_s']:,.0f} requests/s."
            ],
        ),
    ]
