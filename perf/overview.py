"""The staff overview's data at ten million measurements, and what its rollup costs a write.

The overview (:func:`everyskill.overview.overview`) reads the hourly
rollups (``usage_hourly``, ``feedback_hourly``), which the triggers of the
migration ``2026-12-07T04:10`` keep exact, never the raw measurements. Two
figures:

- ``overview_read``: the overview's figures for the default period (the
  last 30 days), all tenants, UTC days (``overview_query()`` with no
  arguments, then ``overview(query)``), read as the admin reads them (the
  owner's engine, its pool started) with ``overview_measurements_big``
  token measurements (ten million at full scale) against the same with
  ``overview_measurements_small`` (a thousand). Both datasets come from the
  same generator (:func:`perf.data.add_measurements`, one second apart
  going back from now, every skill and model, 90 days at full scale),
  written with ``INSERT ... SELECT`` in chunks of a million rows with every
  trigger on, so that the rollups are built by the triggers exactly as in
  production. Ratio: p50 at the big size / p50 at the small one. Target:
  at most 1.5x. ``details`` hold what each read had to read: the rollup rows
  of the period and the measurements they stand for, and how long the big
  dataset took to write. Reported with it, not judged: one read of the
  period's cost per day and model computed from the raw measurements at
  the big size, which is what the page would cost without the rollup.
- ``overview_write``: one measurement written through the Python API
  (``tenant_scope`` and ``usage.record_measurement``: validation, pricing,
  the INSERT under row-level security with its triggers) with the rollup
  maintained, against the same write with the rollup's insert trigger
  (``token_measurements_rollup_insert``) disabled by ``ALTER TABLE ...
  DISABLE TRIGGER`` around the baseline rounds only (outside the timing).
  Each way writes to a skill of its own. Throughput; rounds alternate,
  forwards then backwards, the first a warm-up; kept: the median of each
  way. Ratio: with the rollup / without. Target: at least 0.8x. Checks: the
  rollup rows of the maintained skill equal a recount; the baseline's rows
  were not counted (the trigger was really off). The baseline's rows are
  then deleted with the rollup's delete trigger off too, so that the rollup
  equals a recount again for whatever runs next (also checked).

``python -m perf.overview [--scale full|quick]`` runs this benchmark alone,
on a scratch database of its own (as ``python -m perf`` does), and prints
its figures.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from piccolo.engine import engine_finder
from piccolo.engine.postgres import PostgresEngine

from everyskill import usage
from everyskill.overview import overview, overview_query
from everyskill.tenancy import tenant_scope
from perf.context import Context
from perf.data import MODELS, PROVIDERS, add_measurements
from perf.alone import run_alone
from perf.harness import Figure, Target, p50

#: Rows of one INSERT ... SELECT while the big dataset is built.
CHUNK = 1_000_000
INSERT_TRIGGER = "token_measurements_rollup_insert"
DELETE_TRIGGER = "token_measurements_rollup_delete"

# What the overview reads of the rollups for the period (all tenants).
ROLLUP_ROWS = """
SELECT count(*) AS rows, coalesce(sum(calls), 0)::bigint AS calls
  FROM usage_hourly WHERE hour_start >= $1 AND hour_start < $2
"""
# The overview's cost per day and model, from the raw measurements: what the
# page would read without the rollup (reported, not judged).
RAW_COST_BY_DAY = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model_name, count(*) AS calls,
       sum(estimated_cost_microcents) AS cost_microcents, sum(total_tokens) AS tokens
  FROM token_measurements WHERE created_at >= $1 AND created_at < $2
 GROUP BY 1, 2
"""
# The usage rollup recounted from the measurements, compared with what it holds.
ROLLUP_DIFFERENCE = """
WITH recount AS (
    SELECT date_trunc('hour', created_at, 'UTC') AS hour_start,
           tenant_id, skill_id, model_name, count(*)::bigint AS calls,
           count(estimated_cost_microcents)::bigint AS costed_calls,
           coalesce(sum(estimated_cost_microcents), 0)::bigint AS cost_microcents,
           coalesce(sum(total_tokens), 0)::bigint AS total_tokens
      FROM token_measurements WHERE $1::text IS NULL OR skill_id = $1
     GROUP BY 1, 2, 3, 4),
stored AS (
    SELECT hour_start, tenant_id, skill_id, model_name, calls, costed_calls,
           cost_microcents, total_tokens
      FROM usage_hourly WHERE $1::text IS NULL OR skill_id = $1)
SELECT count(*) FROM ((TABLE recount EXCEPT ALL TABLE stored)
                      UNION ALL (TABLE stored EXCEPT ALL TABLE recount)) AS differences
"""


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Reads:
    """The overview read at one size."""

    measurements: int
    durations: list[float]
    rollup_rows: int
    period_calls: int
    details: dict[str, Any] = field(default_factory=dict)


async def grow_to(context: Context, measurements: int) -> float:
    """Add measurements (chunks of :data:`CHUNK`, triggers on) until the
    table holds ``measurements``; the seconds it took."""
    owner = context.owner
    present: int = await owner.fetchval("SELECT count(*) FROM token_measurements")
    started = time.perf_counter()
    while present < measurements:
        count = min(CHUNK, measurements - present)
        # The generator's numbers go on from the rows present, so that the
        # chunks together are what one statement of all the rows would be.
        await add_measurements(owner, context.catalogue, count, offset=present)
        present += count
        if measurements > CHUNK:
            _say(f"{present:,} measurements ({time.perf_counter() - started:.0f} s)")
    seconds = time.perf_counter() - started
    await owner.execute("VACUUM ANALYZE token_measurements")
    await owner.execute("VACUUM ANALYZE usage_hourly")
    return seconds


async def reads(context: Context, rounds: int, *, raw_rounds: int = 0) -> Reads:
    """The overview's data, read ``rounds`` times after a warm-up read."""
    owner = context.owner
    measurements: int = await owner.fetchval("SELECT count(*) FROM token_measurements")
    durations: list[float] = []
    for number in range(rounds + 1):
        started = time.perf_counter()
        data = await overview(overview_query())
        if number:
            durations.append(time.perf_counter() - started)
    start, end = data.query.day_bounds()
    period = await owner.fetchrow(ROLLUP_ROWS, start, end)
    assert period is not None
    result = Reads(measurements, durations, period["rows"], period["calls"])
    result.details = {
        "usage_rows_returned": len(data.usage),
        "recent_runs": len(data.recent_runs),
    }
    if raw_rounds:
        raw: list[float] = []
        for _ in range(raw_rounds):
            started = time.perf_counter()
            await owner.fetch(RAW_COST_BY_DAY, start, end)
            raw.append(time.perf_counter() - started)
        result.details["raw_cost_by_day_ms"] = round(p50(raw) * 1000, 1)
    return result


def read_figure(small: Reads, big: Reads, build_seconds: float | None) -> Figure:
    small_ms, big_ms = p50(small.durations) * 1000, p50(big.durations) * 1000
    details: dict[str, Any] = {
        "measurements": {"small": small.measurements, "big": big.measurements},
        "rollup_rows_in_period": {"small": small.rollup_rows, "big": big.rollup_rows},
        "measurements_in_period": {"small": small.period_calls, "big": big.period_calls},
        "ms_per_read": {"small": round(small_ms, 2), "big": round(big_ms, 2)},
        "reads": len(big.durations),
        **{f"big_{key}": value for key, value in big.details.items()},
    }
    notes = [
        f"The period's rollup rows read: {small.rollup_rows:,} at {small.measurements:,}"
        f" measurements, {big.rollup_rows:,} at {big.measurements:,}"
        f" ({big.period_calls:,} measurements in the period).",
    ]
    if big.rollup_rows:
        notes.append(
            f"Per rollup row: {small_ms * 1000 / max(small.rollup_rows, 1):.1f} µs small,"
            f" {big_ms * 1000 / big.rollup_rows:.1f} µs big."
        )
    if "raw_cost_by_day_ms" in big.details:
        notes.append(
            f"Cost per day and model from the raw measurements at the big size:"
            f" {big.details['raw_cost_by_day_ms']:,} ms (one of the overview's queries, read from the rollup in the figure above)."
        )
    if build_seconds is not None:
        details["big_build_seconds"] = round(build_seconds, 1)
        notes.append(
            f"Writing the big dataset (INSERT ... SELECT, chunks of {CHUNK:,}, every"
            f" trigger on) took {build_seconds:,.0f} s."
        )
    return Figure(
        key="overview_read",
        what=f"the overview's data (30 days, all tenants) at {big.measurements:,} measurements",
        measured=big_ms,
        unit="ms",
        baseline_what=f"the same at {small.measurements:,} measurements",
        baseline=small_ms,
        ratio=big_ms / small_ms,
        ratio_meaning="p50 at the big size / p50 at the small size",
        target=Target("at_most", 1.5),
        details=details,
        notes=notes,
    )


async def writes(context: Context) -> Figure:
    """One measurement through the API, with and without the rollup trigger."""
    scale = context.scale
    owner = context.owner
    tenant = context.catalogue.tenants[3]
    skills = {"maintained": tenant.skill_ids[20], "without": tenant.skill_ids[21]}
    rows, rounds = scale.rollup_write_rows, scale.rollup_write_rounds
    before = {
        way: await owner.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM usage_hourly WHERE skill_id = $1", skill
        )
        for way, skill in skills.items()
    }
    written: dict[str, list[str]] = {way: [] for way in skills}

    async def write(way: str, number: int) -> None:
        model = MODELS[number % len(MODELS)]
        async with tenant_scope(tenant.tenant_id):
            saved = await usage.record_measurement(
                skill_id=skills[way],
                model_name=model,
                model_provider=PROVIDERS[model],
                input_tokens=1000 + number % 3000,
                output_tokens=200 + number % 700,
                latency_ms=400 + number % 2000,
            )
        written[way].append(saved.row.id)

    async def round_of(way: str) -> float:
        if way == "without":
            await owner.execute(f"ALTER TABLE token_measurements DISABLE TRIGGER {INSERT_TRIGGER}")
        try:
            started = time.perf_counter()
            for number in range(rows):
                await write(way, number)
            return rows / (time.perf_counter() - started)
        finally:
            if way == "without":
                await owner.execute(
                    f"ALTER TABLE token_measurements ENABLE TRIGGER {INSERT_TRIGGER}"
                )

    throughput: dict[str, list[float]] = {way: [] for way in skills}
    for number in range(rounds + 1):
        order = ("without", "maintained") if number % 2 == 0 else ("maintained", "without")
        for way in order:
            value = await round_of(way)
            if number:
                throughput[way].append(value)

    after = {
        way: await owner.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM usage_hourly WHERE skill_id = $1", skill
        )
        for way, skill in skills.items()
    }
    maintained_exact = await owner.fetchval(ROLLUP_DIFFERENCE, skills["maintained"]) == 0
    trigger_was_off = after["without"] == before["without"] and len(written["without"]) == rows * (
        rounds + 1
    )
    # The baseline's rows go, uncounted as they came, so that the rollup is
    # exact for what runs next.
    async with owner.transaction():
        await owner.execute(f"ALTER TABLE token_measurements DISABLE TRIGGER {DELETE_TRIGGER}")
        await owner.execute(
            "DELETE FROM token_measurements WHERE id = ANY($1::text[])", written["without"]
        )
        await owner.execute(f"ALTER TABLE token_measurements ENABLE TRIGGER {DELETE_TRIGGER}")
    all_exact = await owner.fetchval(ROLLUP_DIFFERENCE, None) == 0

    maintained, without = p50(throughput["maintained"]), p50(throughput["without"])
    return Figure(
        key="overview_write",
        what="one measurement through the API, the usage rollup maintained",
        measured=maintained,
        unit="rows/s",
        baseline_what=f"the same write with the rollup's trigger ({INSERT_TRIGGER}) disabled",
        baseline=without,
        ratio=maintained / without,
        ratio_meaning="throughput with the rollup / throughput without",
        target=Target("at_least", 0.8),
        checks={
            "the maintained skill's rollup equals a recount": maintained_exact,
            "the baseline's writes were not counted (trigger off)": trigger_was_off,
            "the whole rollup equals a recount afterwards": all_exact,
        },
        details={
            "rows_per_round": rows,
            "rounds": rounds,
            "ms_per_row": {
                "maintained": round(1000 / maintained, 3),
                "without": round(1000 / without, 3),
            },
        },
        notes=[
            f"{1000 / maintained:.2f} ms a measurement with the rollup,"
            f" {1000 / without:.2f} ms without."
        ],
    )


async def start_owner_pool() -> PostgresEngine:
    """The owner's engine (the admin's, which the overview reads through),
    with its pool started as the admin app starts it."""
    engine = engine_finder()
    assert isinstance(engine, PostgresEngine), "piccolo_conf.py defines no PostgreSQL engine"
    await engine.start_connection_pool(min_size=1, max_size=4)
    return engine


async def _alone(url: str, scale_name: str) -> list[Figure]:
    import asyncpg

    from everyskill.database import SERVER_SETTINGS, app_engine, prepare_app_login
    from perf.context import SCALES
    from perf.data import make_catalogue

    scale = SCALES[scale_name]
    await prepare_app_login()
    engine = app_engine()
    await engine.start_connection_pool(min_size=1, max_size=4)
    owner_engine = await start_owner_pool()
    owner = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    try:
        context = Context(url, owner, await make_catalogue(owner), scale)
        await grow_to(context, scale.overview_small)
        _say(f"the overview at {scale.overview_small:,} measurements")
        small = await reads(context, scale.overview_reads)
        _say("one measurement with and without the rollup")
        write = await writes(context)
        _say(f"adding measurements up to {scale.overview_big:,}")
        seconds = await grow_to(context, scale.overview_big)
        _say(f"the overview at {scale.overview_big:,} measurements")
        big = await reads(context, scale.overview_reads, raw_rounds=3)
        return [read_figure(small, big, seconds), write]
    finally:
        await owner.close()
        await owner_engine.close_connection_pool()
        await engine.close_connection_pool()


def main(argv: list[str] | None = None) -> int:
    return run_alone("python -m perf.overview", _alone, argv)


if __name__ == "__main__":
    sys.exit(main())
