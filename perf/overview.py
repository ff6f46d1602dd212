"""The staff overview's data at ten million measurements, and what its rollups cost a write.

The overview (:func:`everyskill.overview.overview`) reads rollups that
PostgreSQL keeps exact, never the raw measurements: for UTC days (the
default) the daily ones of the migration ``2026-12-07T04:40``
(``usage_daily_models``, ``usage_daily_skills``, ``feedback_daily``) and,
for the top skills' whole weeks, the weekly one of the migration
``2026-12-07T15:00`` (``usage_weekly_skills``); for another zone the
hourly ones of the migration ``2026-12-07T04:10``. Two figures:

- ``overview_read``: the overview's figures for the default period (the
  last 30 days), all tenants, UTC days (``overview_query(now=...)``, then
  ``overview(query)``), for the 30 days that read the most rows: those
  ending on the latest day, today or up to six days before, whose period
  has 3 whole weeks and 9 days around them (:func:`busiest_now`: the top
  skills read a row per week and per day outside whole weeks), read as
  the admin reads them (the owner's engine, its pool started) with
  ``overview_measurements_big`` token measurements (ten million at full
  scale) against the same with ``overview_measurements_small`` (a
  thousand). Like is compared with like:
  the same catalogue (4 tenants, 100 skills, 6 models) and the same 90 days
  at both sizes; only the number of measurements differs. Both datasets
  come from one generator (:func:`perf.data.add_measurements`) with its
  rows spread evenly over the 90 days (row ``g`` is ``g * 90 days /
  size`` old), every skill and model: with one row a second, as the
  generator writes by default, the thousand would sit in the last 17
  minutes and fill a handful of the period's rollup rows, which would make
  the small read the cost of an almost empty period rather than of a
  smaller one. The rows are written with ``INSERT ... SELECT`` in chunks
  of a million rows with every trigger on, so that the rollups are built
  by the triggers exactly as in production. Ratio: p50 at the big size /
  p50 at the small one. Target: at most 1.5x. ``details`` hold what each
  read had to read (the rollup rows of the period, per rollup, and the
  measurements they stand for) and how long the big dataset took to
  write. Reported with it, not judged: the same for the 30 days ending
  today (as the page opens; 6 to 12 rows per skill, by weekday), the same
  overview for another zone (America/New_York, read from the hourly
  rollups) at both sizes, and one
  read of the period's cost per day and model computed from the raw
  measurements at the big size, which is what the page would cost without
  the rollups.
- ``overview_write``: one measurement written through the Python API
  (``tenant_scope`` and ``usage.record_measurement``: validation, pricing,
  the INSERT under row-level security with its triggers) with every rollup
  maintained (hourly, daily and weekly: one trigger function, five upserts),
  against the same write with all of ``token_measurements``' rollup
  triggers (``token_measurements_rollup_*``) disabled by ``ALTER TABLE ...
  DISABLE TRIGGER`` around the baseline rounds only (outside the timing).
  Each way writes to a skill of its own. Throughput; rounds alternate,
  forwards then backwards, the first a warm-up; kept: the median of each
  way. Ratio: with the rollups / without. Target: at least 0.8x. Checks:
  the rollup rows of the maintained skill equal a recount; the baseline's
  rows were not counted (the triggers were really off). The baseline's
  rows are then deleted with the triggers still off, so that every rollup
  equals a recount again for whatever runs next (also checked).

``python -m perf.overview [--scale full|quick]`` runs this benchmark alone,
on a scratch database of its own (as ``python -m perf`` does), and prints
its figures.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, time as clock, timedelta, timezone
from typing import Any

from piccolo.engine import engine_finder
from piccolo.engine.postgres import PostgresEngine

from everyskill import usage
from everyskill.overview import DEFAULT_DAYS, overview, overview_query, whole_weeks
from everyskill.tenancy import tenant_scope
from perf.context import Context
from perf.data import MODELS, PROVIDERS, SPAN_SECONDS, add_measurements
from perf.alone import run_alone
from perf.harness import Figure, Target, p50

#: Rows of one INSERT ... SELECT while the big dataset is built.
CHUNK = 1_000_000
#: Every rollup trigger of token_measurements (one function maintains them all).
TRIGGERS = [f"token_measurements_rollup_{event}" for event in ("insert", "update", "delete", "truncate")]
#: The zone of the other-zone read (hourly rollups).
OTHER_ZONE = "America/New_York"

# What the overview reads of the rollups for the period (all tenants): the
# daily ones for UTC ($1, $2: dates; the top skills: the whole weeks [$5,
# $6) from the weekly rollup, the other days from the daily one), the
# hourly ones for the other zone ($3, $4: instants).
ROLLUP_ROWS = """
SELECT (SELECT count(*) FROM usage_daily_models WHERE day >= $1 AND day < $2) AS daily_models,
       (SELECT count(*) FROM usage_daily_skills
         WHERE day >= $1 AND day < $2 AND NOT (day >= $5 AND day < $6)) AS daily_skills,
       (SELECT count(*) FROM usage_weekly_skills WHERE week >= $5 AND week < $6) AS weekly_skills,
       (SELECT coalesce(sum(calls), 0) FROM usage_daily_models
         WHERE day >= $1 AND day < $2)::bigint AS calls,
       (SELECT count(*) FROM usage_hourly WHERE hour_start >= $3 AND hour_start < $4) AS hourly
"""
# The overview's cost per day and model, from the raw measurements: what the
# page would read without the rollup (reported, not judged).
RAW_COST_BY_DAY = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model_name, count(*) AS calls,
       sum(estimated_cost_microcents) AS cost_microcents, sum(total_tokens) AS tokens
  FROM token_measurements WHERE created_at >= $1 AND created_at < $2
 GROUP BY 1, 2
"""
HOUR = "date_trunc('hour', created_at, 'UTC')"
DAY = "(created_at AT TIME ZONE 'UTC')::date"
WEEK = "date_trunc('week', created_at AT TIME ZONE 'UTC')::date"
#: Each usage rollup: its bucket (SQL over a measurement, and its column) and other keys.
USAGE_ROLLUPS = {
    "usage_hourly": (HOUR, "hour_start", "tenant_id, skill_id, model_name"),
    "usage_daily": (DAY, "day", "tenant_id, skill_id, model_name"),
    "usage_daily_models": (DAY, "day", "tenant_id, model_name"),
    "usage_daily_skills": (DAY, "day", "tenant_id, skill_id"),
    "usage_weekly_skills": (WEEK, "week", "tenant_id, skill_id"),
}
# A usage rollup recounted from the measurements ($1: one tenant, or all),
# compared with what it holds: the rows that differ.
ROLLUP_DIFFERENCE = """
WITH recount AS (
    SELECT {bucket} AS {column}, {keys}, count(*)::bigint AS calls,
           count(estimated_cost_microcents)::bigint AS costed_calls,
           coalesce(sum(estimated_cost_microcents), 0)::bigint AS cost_microcents
      FROM token_measurements WHERE $1::text IS NULL OR {skill_is}
     GROUP BY {keys}, 1),
stored AS (
    SELECT {column}, {keys}, calls, costed_calls, cost_microcents
      FROM {table} WHERE $1::text IS NULL OR {skill_is})
SELECT count(*) FROM ((TABLE recount EXCEPT ALL TABLE stored)
                      UNION ALL (TABLE stored EXCEPT ALL TABLE recount)) AS differences
"""


async def differences(owner: Any, *, skill: str | None = None) -> dict[str, int]:
    """Rows of each usage rollup that differ from a recount: of every row, or
    of one skill's rows in the rollups that have a skill."""
    found = {}
    for table, (bucket, column, keys) in USAGE_ROLLUPS.items():
        if skill is not None and "skill_id" not in keys:
            continue
        sql = ROLLUP_DIFFERENCE.format(
            bucket=bucket, column=column, keys=keys, table=table,
            # A rollup without a skill is compared whole ($1 is NULL then).
            skill_is="skill_id = $1" if "skill_id" in keys else "false",
        )
        found[table] = await owner.fetchval(sql, skill)
    return found


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def busiest_now() -> datetime:
    """Noon (UTC) of the latest day, today or one of the six before, whose
    default period (the last 30 days) has the most days outside its whole
    weeks: 3 weeks and 9 days, which the top skills read as 12 rows per
    skill (4 weeks and 2 days: 6 rows)."""
    today = datetime.now(timezone.utc).date()

    def days_outside(day: date) -> int:
        start, stop = whole_weeks(day - timedelta(days=DEFAULT_DAYS - 1), day + timedelta(days=1))
        return DEFAULT_DAYS - (stop - start).days

    day = max((today - timedelta(days=back) for back in range(7)), key=lambda d: (days_outside(d), d))
    return datetime.combine(day, clock(12), timezone.utc)


@dataclass
class Reads:
    """The overview read at one size: UTC (daily rollups) and another zone (hourly)."""

    measurements: int
    #: The default period ending on the day of busiest_now().
    durations: list[float]
    #: The default period ending today (reported).
    today: list[float]
    other_zone: list[float]
    #: The period's rows of each rollup the overview reads.
    rollup_rows: dict[str, int]
    period_calls: int
    details: dict[str, Any] = field(default_factory=dict)


async def grow_to(context: Context, measurements: int) -> float:
    """Add measurements (chunks of :data:`CHUNK`, triggers on) until the
    table holds ``measurements``, spread over the 90 days (see the module's
    docstring); the seconds it took."""
    owner = context.owner
    present: int = await owner.fetchval("SELECT count(*) FROM token_measurements")
    step = SPAN_SECONDS / measurements
    started = time.perf_counter()
    while present < measurements:
        count = min(CHUNK, measurements - present)
        # The generator's numbers go on from the rows present, so that the
        # chunks together are what one statement of all the rows would be.
        await add_measurements(owner, context.catalogue, count, offset=present, step=step)
        present += count
        if measurements > CHUNK:
            _say(f"{present:,} measurements ({time.perf_counter() - started:.0f} s)")
    seconds = time.perf_counter() - started
    await owner.execute("VACUUM ANALYZE token_measurements")
    for table in USAGE_ROLLUPS:
        await owner.execute(f"VACUUM ANALYZE {table}")
    return seconds


async def reads(context: Context, rounds: int, now: datetime, *, raw_rounds: int = 0) -> Reads:
    """The overview's data (UTC) for the period ending on ``now``'s day,
    read ``rounds`` times after a warm-up read; then as many times for the
    period ending today, and a third as many for the other zone."""
    owner = context.owner
    measurements: int = await owner.fetchval("SELECT count(*) FROM token_measurements")

    async def timed(query: Any, times: int) -> tuple[list[float], Any]:
        durations: list[float] = []
        for number in range(times + 1):
            started = time.perf_counter()
            data = await overview(query)
            if number:
                durations.append(time.perf_counter() - started)
        return durations, data

    durations, data = await timed(overview_query(now=now), rounds)
    today, _ = await timed(overview_query(), rounds)
    other, other_data = await timed(overview_query(zone=OTHER_ZONE), max(3, rounds // 3))
    query = data.query
    other_start, other_end = other_data.query.day_bounds()
    after = query.today + timedelta(days=1)
    period = await owner.fetchrow(
        ROLLUP_ROWS, query.first_day, after, other_start, other_end,
        *whole_weeks(query.first_day, after),
    )
    assert period is not None
    result = Reads(
        measurements,
        durations,
        today,
        other,
        {
            "usage_daily_models": period["daily_models"],
            "usage_daily_skills": period["daily_skills"],
            "usage_weekly_skills": period["weekly_skills"],
            f"usage_hourly ({OTHER_ZONE})": period["hourly"],
        },
        period["calls"],
    )
    result.details = {
        "usage_rows_returned": len(data.usage),
        "recent_runs": len(data.recent_runs),
    }
    if raw_rounds:
        start, end = query.day_bounds()
        raw: list[float] = []
        for _ in range(raw_rounds):
            started = time.perf_counter()
            await owner.fetch(RAW_COST_BY_DAY, start, end)
            raw.append(time.perf_counter() - started)
        result.details["raw_cost_by_day_ms"] = round(p50(raw) * 1000, 1)
    return result


def read_figure(small: Reads, big: Reads, build_seconds: float | None) -> Figure:
    small_ms, big_ms = p50(small.durations) * 1000, p50(big.durations) * 1000
    today_small_ms, today_big_ms = p50(small.today) * 1000, p50(big.today) * 1000
    other_small_ms, other_big_ms = p50(small.other_zone) * 1000, p50(big.other_zone) * 1000
    details: dict[str, Any] = {
        "measurements": {"small": small.measurements, "big": big.measurements},
        "rollup_rows_in_period": {
            table: {"small": small.rollup_rows[table], "big": big.rollup_rows[table]}
            for table in small.rollup_rows
        },
        "measurements_in_period": {"small": small.period_calls, "big": big.period_calls},
        "ms_per_read": {"small": round(small_ms, 2), "big": round(big_ms, 2)},
        "reads": len(big.durations),
        "period_ending_today_ms_per_read": {
            "small": round(today_small_ms, 2), "big": round(today_big_ms, 2)
        },
        "other_zone": {
            "zone": OTHER_ZONE,
            "ms_per_read": {"small": round(other_small_ms, 2), "big": round(other_big_ms, 2)},
            "reads": len(big.other_zone),
        },
        **{f"big_{key}": value for key, value in big.details.items()},
    }
    rows = ", ".join(
        f"{table} {small.rollup_rows[table]:,} / {big.rollup_rows[table]:,}"
        for table in small.rollup_rows
    )
    notes = [
        f"The period's rollup rows at {small.measurements:,} / {big.measurements:,}"
        f" measurements ({small.period_calls:,} / {big.period_calls:,} in the period): {rows}.",
        f"The 30 days ending today, reported: {today_small_ms:,.2f} ms at"
        f" {small.measurements:,}, {today_big_ms:,.2f} ms at {big.measurements:,}"
        f" ({today_big_ms / today_small_ms:.2f}x).",
        f"The same overview for {OTHER_ZONE} (hourly rollups), reported, not judged:"
        f" {other_small_ms:,.2f} ms at {small.measurements:,}, {other_big_ms:,.1f} ms at"
        f" {big.measurements:,} ({other_big_ms / other_small_ms:.1f}x).",
    ]
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
        what=(
            f"the overview's data (30 days with the most rows to read, all tenants, UTC)"
            f" at {big.measurements:,} measurements"
        ),
        measured=big_ms,
        unit="ms",
        baseline_what=f"the same at {small.measurements:,} measurements (same catalogue, same 90 days)",
        baseline=small_ms,
        ratio=big_ms / small_ms,
        ratio_meaning="p50 at the big size / p50 at the small size",
        target=Target("at_most", 1.5),
        details=details,
        notes=notes,
    )


# Calls counted for one skill, per rollup with a skill; for one tenant in the
# rollup without one.
COUNTED = """
SELECT (SELECT coalesce(sum(calls), 0) FROM usage_hourly WHERE skill_id = $1)::bigint AS hourly,
       (SELECT coalesce(sum(calls), 0) FROM usage_daily WHERE skill_id = $1)::bigint AS daily,
       (SELECT coalesce(sum(calls), 0) FROM usage_daily_skills WHERE skill_id = $1)::bigint
           AS daily_skills,
       (SELECT coalesce(sum(calls), 0) FROM usage_weekly_skills WHERE skill_id = $1)::bigint
           AS weekly_skills,
       (SELECT coalesce(sum(calls), 0) FROM usage_daily_models WHERE tenant_id = $2)::bigint
           AS tenant_daily_models
"""


async def _counted(owner: Any, skill: str, tenant_id: str) -> dict[str, int]:
    row = await owner.fetchrow(COUNTED, skill, tenant_id)
    assert row is not None
    return dict(row)


async def _set_triggers(owner: Any, enabled: bool) -> None:
    action = "ENABLE" if enabled else "DISABLE"
    for trigger in TRIGGERS:
        await owner.execute(f"ALTER TABLE token_measurements {action} TRIGGER {trigger}")


async def writes(context: Context) -> Figure:
    """One measurement through the API, with and without the rollup triggers."""
    scale = context.scale
    owner = context.owner
    tenant = context.catalogue.tenants[3]
    skills = {"maintained": tenant.skill_ids[20], "without": tenant.skill_ids[21]}
    rows, rounds = scale.rollup_write_rows, scale.rollup_write_rounds
    before = {way: await _counted(owner, skill, tenant.tenant_id) for way, skill in skills.items()}
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
            await _set_triggers(owner, False)
        try:
            started = time.perf_counter()
            for number in range(rows):
                await write(way, number)
            return rows / (time.perf_counter() - started)
        finally:
            if way == "without":
                await _set_triggers(owner, True)

    throughput: dict[str, list[float]] = {way: [] for way in skills}
    for number in range(rounds + 1):
        order = ("without", "maintained") if number % 2 == 0 else ("maintained", "without")
        for way in order:
            value = await round_of(way)
            if number:
                throughput[way].append(value)

    after = {way: await _counted(owner, skill, tenant.tenant_id) for way, skill in skills.items()}
    maintained_exact = not any((await differences(owner, skill=skills["maintained"])).values())
    everything = rows * (rounds + 1)
    counted = ("hourly", "daily", "daily_skills", "weekly_skills")
    trigger_was_off = (
        len(written["without"]) == everything
        and all(after["without"][key] == before["without"][key] for key in counted)
        and all(
            after["maintained"][key] - before["maintained"][key] == everything for key in counted
        )
        # The tenant's calls per day and model grew by the maintained rows only.
        and after["maintained"]["tenant_daily_models"]
        - before["maintained"]["tenant_daily_models"] == everything
    )
    # The baseline's rows go, uncounted as they came, so that the rollups are
    # exact for what runs next.
    async with owner.transaction():
        await _set_triggers(owner, False)
        await owner.execute(
            "DELETE FROM token_measurements WHERE id = ANY($1::text[])", written["without"]
        )
        await _set_triggers(owner, True)
    all_exact = not any((await differences(owner)).values())

    maintained, without = p50(throughput["maintained"]), p50(throughput["without"])
    return Figure(
        key="overview_write",
        what="one measurement through the API, every rollup maintained (hourly, daily, weekly)",
        measured=maintained,
        unit="rows/s",
        baseline_what="the same write with the rollup triggers (token_measurements_rollup_*) disabled",
        baseline=without,
        ratio=maintained / without,
        ratio_meaning="throughput with the rollups / throughput without",
        target=Target("at_least", 0.8),
        checks={
            "the maintained skill's rollups equal a recount": maintained_exact,
            "the baseline's writes were not counted (triggers off)": trigger_was_off,
            "every usage rollup equals a recount afterwards": all_exact,
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
            f"{1000 / maintained:.2f} ms a measurement with the rollups,"
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
        now = busiest_now()
        _say(f"the overview at {scale.overview_small:,} measurements")
        small = await reads(context, scale.overview_reads, now)
        _say("one measurement with and without the rollups")
        write = await writes(context)
        _say(f"adding measurements up to {scale.overview_big:,}")
        seconds = await grow_to(context, scale.overview_big)
        _say(f"the overview at {scale.overview_big:,} measurements")
        big = await reads(context, scale.overview_reads, now, raw_rounds=3)
        return [read_figure(small, big, seconds), write]
    finally:
        await owner.close()
        await owner_engine.close_connection_pool()
        await engine.close_connection_pool()


def main(argv: list[str] | None = None) -> int:
    return run_alone("python -m perf.overview", _alone, argv)


if __name__ == "__main__":
    sys.exit(main())
