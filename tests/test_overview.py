"""
The overview's figures and a run's comparison, each compared with SQL over
the raw tables: a dataset that spans time zones (rows next to local
midnights, across Europe's and America's summer-time changes), two tenants,
a model without a price (NULL costs), dismissed feedback and deleted rows.
UTC days are read from the daily rollups (the top skills: whole weeks from
the weekly one), other zones' days from the hourly ones: the zones below
cover both.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from everyskill.errors import NotFoundError, ValidationError
from everyskill.overview import (
    DAILY,
    HOURLY,
    dollars,
    overview,
    overview_query,
    run_comparison,
    source_of,
    whole_weeks,
)
from tests.support import TenantRows, make_tenant

NOW = datetime(2026, 3, 30, 12, 0, tzinfo=timezone.utc)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Pacific/Auckland"]


async def _dataset(owner: asyncpg.Connection) -> tuple[TenantRows, TenantRows]:
    a, b = await make_tenant(owner, "ov-a"), await make_tenant(owner, "ov-b")
    for tenant, factor in ((a, 1), (b, 3)):
        # Every 37 minutes over 12 days before NOW: every hour next to every
        # zone's midnight, Europe's summer time (29 March) and the edges of
        # the periods; one model unpriced, one sometimes.
        await owner.execute(
            "INSERT INTO token_measurements (tenant_id, skill_id, model_name, input_tokens,"
            " output_tokens, cache_read_tokens, total_tokens, estimated_cost_microcents, created_at)"
            " SELECT $1, $2, (ARRAY['claude-sonnet-4-5', 'gpt-4o', 'mystery-model'])[n % 3 + 1],"
            "  n % 500, n % 70, CASE WHEN n % 4 = 0 THEN n END, n % 500 + n % 70,"
            "  CASE n % 3 WHEN 0 THEN n * $3 WHEN 1 THEN CASE WHEN n % 2 = 0 THEN 77 END END,"
            "  $4::timestamptz - n * interval '37 minutes'"
            " FROM generate_series(1, 470) AS n",
            tenant.tenant_id, tenant.skill_id, factor, NOW,
        )
        await owner.execute(
            "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, comment,"
            " created_at)"
            " SELECT $1, $2, (ARRAY['thumbs_up', 'thumbs_down', 'bug_report'])[n % 3 + 1],"
            "  (ARRAY[1, -1, 0])[n % 3 + 1], 'It broke', $3::timestamptz - n * interval '53 minutes'"
            " FROM generate_series(1, 300) AS n",
            tenant.tenant_id, tenant.skill_id, NOW,
        )
        # Reviews: some dismissed, some accepted; some rows deleted.
        await owner.execute(
            "UPDATE skill_feedback SET status = 'dismissed' WHERE tenant_id = $1"
            " AND extract(minute FROM created_at)::int % 5 = 0",
            tenant.tenant_id,
        )
        await owner.execute(
            "UPDATE skill_feedback SET status = 'accepted' WHERE tenant_id = $1 AND status = 'pending'"
            " AND extract(minute FROM created_at)::int % 7 = 0",
            tenant.tenant_id,
        )
        await owner.execute(
            "DELETE FROM skill_feedback WHERE tenant_id = $1"
            " AND extract(minute FROM created_at)::int % 11 = 0",
            tenant.tenant_id,
        )
        await owner.execute(
            "DELETE FROM token_measurements WHERE tenant_id = $1"
            " AND extract(minute FROM created_at)::int % 13 = 0",
            tenant.tenant_id,
        )
    return a, b


RAW_USAGE = """
SELECT (created_at AT TIME ZONE $1)::date AS day, model_name, count(*) AS calls,
       count(estimated_cost_microcents) AS costed_calls,
       sum(estimated_cost_microcents) AS cost_microcents,
       coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
       coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
       coalesce(sum(total_tokens), 0) AS total_tokens
  FROM token_measurements
 WHERE created_at >= $2 AND created_at < $3 AND ($4::text IS NULL OR tenant_id = $4)
 GROUP BY 1, 2 ORDER BY 1, 2
"""
RAW_FEEDBACK = """
SELECT (created_at AT TIME ZONE $1)::date AS day, feedback_type, count(*) AS items
  FROM skill_feedback
 WHERE created_at >= $2 AND created_at < $3 AND ($4::text IS NULL OR tenant_id = $4)
   AND status <> 'dismissed'
 GROUP BY 1, 2 ORDER BY 1, 2
"""
RAW_SHARE = """
SELECT (created_at AT TIME ZONE $1)::date AS day, skill_id,
       count(*) FILTER (WHERE feedback_type = 'thumbs_up') AS up, count(*) AS thumbs
  FROM skill_feedback
 WHERE created_at >= $2 AND created_at < $3 AND ($4::text IS NULL OR tenant_id = $4)
   AND status <> 'dismissed' AND feedback_type IN ('thumbs_up', 'thumbs_down')
 GROUP BY 1, 2 ORDER BY 1, 2
"""
RAW_QUEUE = """
SELECT tenant_id, skill_id, count(*) AS pending FROM skill_feedback
 WHERE status = 'pending' AND ($1::text IS NULL OR tenant_id = $1)
 GROUP BY 1, 2 ORDER BY 1, 2
"""
RAW_TOP = """
SELECT skill_id, count(*) AS calls, count(estimated_cost_microcents) AS costed_calls,
       sum(estimated_cost_microcents) AS cost_microcents
  FROM token_measurements
 WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR tenant_id = $3)
 GROUP BY 1 ORDER BY 1
"""


TOP_KEYS = ("skill_id", "calls", "costed_calls", "cost_microcents")


def _pick(rows: list[Any], *keys: str) -> list[tuple[Any, ...]]:
    return sorted(tuple(row[key] for key in keys) for row in rows)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("days", [7, 30])
async def test_every_figure_equals_sql_over_the_raw_rows(
    owner: asyncpg.Connection, engine: object, zone: str, days: int
) -> None:
    a, b = await _dataset(owner)
    for tenant in (a.tenant_id, b.tenant_id, None):
        query = overview_query(days=str(days), tenant=tenant or "", zone=zone, now=NOW)
        start, end = query.day_bounds()
        # The period is whole local days: from a local midnight to one.
        assert start.astimezone(ZoneInfo(zone)).hour == 0
        data = await overview(query)
        usage_keys = ("day", "model_name", "calls", "costed_calls", "cost_microcents",
                      "input_tokens", "output_tokens", "cache_read_tokens",
                      "cache_write_tokens", "total_tokens")
        raw = await owner.fetch(RAW_USAGE, zone, start, end, tenant)
        assert _pick(data.usage, *usage_keys) == _pick(raw, *usage_keys)
        assert any(row["cost_microcents"] is None for row in data.usage)  # unpriced groups
        raw = await owner.fetch(RAW_FEEDBACK, zone, start, end, tenant)
        assert _pick(data.feedback, "day", "feedback_type", "items") == _pick(
            raw, "day", "feedback_type", "items"
        )
        raw = await owner.fetch(RAW_SHARE, zone, start, end, tenant)
        assert _pick(data.positive_share, "day", "skill_id", "up", "thumbs") == _pick(
            raw, "day", "skill_id", "up", "thumbs"
        )
        raw = await owner.fetch(RAW_QUEUE, tenant)
        assert _pick(data.review_queue, "tenant_id", "skill_id", "pending") == _pick(
            raw, "tenant_id", "skill_id", "pending"
        )
        if tenant is None:
            # All tenants' ten, ranked (other tests' skills may be among them).
            found = [tuple(r[key] for key in ("tenant_id", *TOP_KEYS)) for r in data.top_skills]
            assert found == [tuple(r) for r in await owner.fetch(RAW_TOP_SKILLS, start, end)]
        else:
            raw = await owner.fetch(RAW_TOP, start, end, tenant)
            assert _pick(data.top_skills, *TOP_KEYS) == _pick(raw, *TOP_KEYS)
            assert [run["id"] for run in data.recent_runs] == [
                (a if tenant == a.tenant_id else b).run_id
            ]


async def test_the_days_of_a_zone_are_not_utc_days(owner: asyncpg.Connection, engine: object) -> None:
    """One call at 23:30 UTC on 27 March: 28 March in Berlin, 27 March in UTC."""
    tenant = await make_tenant(owner, "ov-zone")
    await owner.execute("DELETE FROM token_measurements WHERE tenant_id = $1", tenant.tenant_id)
    await owner.execute(
        "INSERT INTO token_measurements (tenant_id, skill_id, model_name, estimated_cost_microcents,"
        " created_at) VALUES ($1, $2, 'm', 2439840, '2026-03-27 23:30+00')",
        tenant.tenant_id, tenant.skill_id,
    )
    days = {}
    for zone in ("UTC", "Europe/Berlin"):
        data = await overview(overview_query(days=7, tenant=tenant.tenant_id, zone=zone, now=NOW))
        days[zone] = [(row["day"].isoformat(), row["cost_microcents"]) for row in data.usage]
    assert days == {"UTC": [("2026-03-27", 2439840)], "Europe/Berlin": [("2026-03-28", 2439840)]}


def test_utc_reads_the_daily_rollups_and_other_zones_the_hourly_ones() -> None:
    assert source_of(overview_query(now=NOW)) is DAILY
    assert [source_of(overview_query(zone=zone, now=NOW)) for zone in ZONES] == [
        DAILY, HOURLY, HOURLY, HOURLY, HOURLY
    ]
    assert DAILY.usage == "usage_daily_models" and HOURLY.usage == "usage_hourly"


def test_money_in_dollars() -> None:
    assert dollars(2439840) == "$0.0244"
    assert dollars(0) == "$0.0000"
    assert dollars(None) == "unpriced"
    assert dollars(12_345_678_900_000) == "$123,456.7890"
    assert dollars(Decimal("150000000.5"), places=2) == "$1.50"


def test_what_the_page_may_ask_for() -> None:
    assert overview_query(now=NOW).days == 30
    assert overview_query(now=NOW).zone == "UTC"
    assert overview_query(zone="Pacific/Auckland", now=NOW).today.isoformat() == "2026-03-31"
    with pytest.raises(ValidationError) as refused:
        overview_query(days="12", now=NOW)
    assert refused.value.field == "days" and "7, 30, 90" in refused.value.reason
    with pytest.raises(ValidationError) as refused:
        overview_query(zone="Asia/Kolkata", now=NOW)
    assert refused.value.field == "zone" and "Europe/Berlin" in refused.value.reason


async def test_an_unknown_tenant_is_refused(engine: object) -> None:
    with pytest.raises(ValidationError) as refused:
        await overview(overview_query(tenant="no-such-tenant", now=NOW))
    assert refused.value.field == "tenant"


async def test_a_run_comparison_equals_sql_over_its_results(
    owner: asyncpg.Connection, engine: object
) -> None:
    tenant = await make_tenant(owner, "ov-run")
    await owner.execute(
        "INSERT INTO benchmark_results (tenant_id, benchmark_run_id, model_name, model_provider,"
        " test_case_index, quality_score, matches_expected, latency_ms, estimated_cost_microcents,"
        " error_message)"
        " SELECT $1, $2, m, 'x', n, CASE WHEN n % 5 <> 0 THEN 40 + n * 3 % 60 END, n % 2 = 0,"
        "  100 + n * 37 % 900, CASE WHEN m = 'gpt-4o' THEN NULL ELSE 1000 * n END,"
        "  CASE WHEN n % 5 = 0 THEN 'timeout' END"
        " FROM generate_series(1, 9) AS n, unnest(ARRAY['claude-sonnet-4-5', 'gpt-4o']) AS m",
        tenant.tenant_id, tenant.run_id,
    )
    comparison = await run_comparison(tenant.run_id)
    raw = await owner.fetch(
        "SELECT model_name, count(*) AS results, count(error_message) AS errors,"
        " avg(quality_score) AS q, avg(CASE WHEN matches_expected THEN 1 WHEN NOT matches_expected THEN 0 END) AS share,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,"
        " avg(estimated_cost_microcents) AS cost"
        " FROM benchmark_results WHERE benchmark_run_id = $1 GROUP BY 1 ORDER BY 1",
        tenant.run_id,
    )
    assert [
        (m.model_name, m.results, m.errors, m.avg_quality, m.match_share, m.latency_p50_ms,
         m.latency_p95_ms, m.avg_cost_microcents)
        for m in comparison.models
    ] == [tuple(row) for row in raw]
    assert [m.avg_cost_microcents for m in comparison.models if m.model_name == "gpt-4o"] == [None]
    with pytest.raises(NotFoundError):
        await run_comparison("no-such-run")


async def _measure_at(
    owner: asyncpg.Connection,
    rows: TenantRows,
    zone: str,
    costs: list[int],
    stamps: list[datetime],
) -> None:
    """One measurement of ``rows``' skill per cost and instant, written in
    a session whose TimeZone is ``zone``."""
    await owner.execute(f"SET TimeZone = '{zone}'")
    try:
        for cost, stamp in zip(costs, stamps, strict=True):
            await owner.execute(
                "INSERT INTO token_measurements (tenant_id, skill_id, model_name,"
                " estimated_cost_microcents, created_at) VALUES ($1, $2, 'm', $3, $4)",
                rows.tenant_id, rows.skill_id, cost, stamp,
            )
    finally:
        await owner.execute("RESET TimeZone")


async def test_a_day_begins_and_ends_at_its_midnights(
    owner: asyncpg.Connection, engine: object
) -> None:
    """The period's first and last instants are in, the ones just outside
    are not, written in a session whose TimeZone is not UTC."""
    rows = await make_tenant(owner, "midnights")
    await owner.execute("DELETE FROM token_measurements WHERE tenant_id = $1", rows.tenant_id)
    now = datetime(2026, 3, 30, 23, 59, 59, tzinfo=timezone.utc)
    query = overview_query(days=7, tenant=rows.tenant_id, now=now)
    stamps = [
        datetime(2026, 3, 24, 0, 0, tzinfo=timezone.utc),  # the first day's midnight: in
        datetime(2026, 3, 23, 23, 59, 59, 999000, tzinfo=timezone.utc),  # before it: out
        datetime(2026, 3, 30, 23, 59, 59, 999000, tzinfo=timezone.utc),  # today's last: in
        datetime(2026, 3, 31, 0, 0, tzinfo=timezone.utc),  # tomorrow's midnight: out
    ]
    await _measure_at(owner, rows, "America/Los_Angeles", [10**n for n in range(4)], stamps)
    data = await overview(query)
    assert sorted((r["day"].isoformat(), r["cost_microcents"]) for r in data.usage) == [
        ("2026-03-24", 1), ("2026-03-30", 100)
    ]
    assert [(r["skill_id"], r["cost_microcents"]) for r in data.top_skills] == [(rows.skill_id, 101)]


RAW_TOP_SKILLS = """
SELECT tenant_id, skill_id, count(*) AS calls, count(estimated_cost_microcents) AS costed,
       sum(estimated_cost_microcents) AS cost
  FROM token_measurements WHERE created_at >= $1 AND created_at < $2
 GROUP BY 1, 2
 ORDER BY coalesce(sum(estimated_cost_microcents), 0) DESC, count(*) DESC, skill_id LIMIT 10
"""


async def test_the_top_skills_of_all_tenants_are_ranked_as_sql_ranks_them(
    owner: asyncpg.Connection, engine: object
) -> None:
    """Sixteen skills of two tenants, some unpriced: the ten that cost most,
    in order, for UTC days and another zone's."""
    rng = random.Random("top skills")
    now = datetime(2031, 5, 10, 12, tzinfo=timezone.utc)  # a period no other test writes in
    for label in ("rank-a", "rank-b"):
        rows = await make_tenant(owner, label)
        for number in range(8):
            skill_id = await owner.fetchval(
                "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, $2, $2) RETURNING id",
                rows.tenant_id, f"ranked-{number}",
            )
            for _ in range(rng.randrange(1, 6)):
                await owner.execute(
                    "INSERT INTO token_measurements (tenant_id, skill_id, model_name,"
                    " estimated_cost_microcents, created_at) VALUES ($1, $2, 'm', $3, $4)",
                    rows.tenant_id, skill_id, rng.choice([None, 0, 5, 5, 17]),
                    now - timedelta(hours=rng.randrange(0, 200)),
                )
    for zone in ("UTC", "Asia/Tokyo"):
        query = overview_query(days=7, zone=zone, now=now)
        start, end = query.day_bounds()
        data = await overview(query)
        found = [
            (r["tenant_id"], r["skill_id"], r["calls"], r["costed_calls"], r["cost_microcents"])
            for r in data.top_skills
        ]
        expected = [tuple(r) for r in await owner.fetch(RAW_TOP_SKILLS, start, end)]
        assert len(expected) == 10 and found == expected, zone


def test_whole_weeks_and_the_days_around_them_are_the_period() -> None:
    """For every period of 1 to 100 days starting on any day of two weeks:
    the weeks are whole (Monday to Sunday) and inside the period, the days
    around them are the rest of it, and no whole week of the period is
    left to the days."""
    for offset in range(14):
        first = date(2026, 2, 23) + timedelta(days=offset)
        for length in range(1, 101):
            end = first + timedelta(days=length)
            start, stop = whole_weeks(first, end)
            period = {first + timedelta(days=n) for n in range(length)}
            weeks = {start + timedelta(days=n) for n in range((stop - start).days)}
            around = {day for day in period if day < start or day >= stop}
            assert weeks <= period and weeks | around == period and not weeks & around
            assert start.weekday() == 0 and (stop - start).days % 7 == 0 or start == stop == end
            monday = first + timedelta(days=-first.weekday() % 7)
            assert (monday + timedelta(days=7) <= end) == (start < stop)


@pytest.mark.parametrize(
    "now, days",
    [
        # A Wednesday, 30 days: 3 whole weeks, 6 days before and 3 after them.
        (datetime(2032, 6, 9, 15, tzinfo=timezone.utc), 30),
        # A Sunday, 7 days: one whole week and nothing around it.
        (datetime(2032, 6, 13, 15, tzinfo=timezone.utc), 7),
        # A Sunday, 30 days: 4 whole weeks and the 2 days before them.
        (datetime(2032, 6, 13, 15, tzinfo=timezone.utc), 30),
    ],
)
async def test_the_top_skills_count_each_instant_of_the_period_once(
    owner: asyncpg.Connection, engine: object, now: datetime, days: int
) -> None:
    """A call at each edge of the period and of its whole weeks (the first
    and last instants in, the ones just outside out), written in a session
    whose TimeZone is not UTC: the top skills count each call of the period
    once, from the weekly or the daily rollup, and none outside it."""
    rows = await make_tenant(owner, "week-edges")
    await owner.execute("DELETE FROM token_measurements WHERE tenant_id = $1", rows.tenant_id)
    query = overview_query(days=days, tenant=rows.tenant_id, now=now)
    start, end = query.day_bounds()
    midnights = {start, end}
    monday = start + timedelta(days=-start.weekday() % 7)
    while monday <= end:
        midnights.add(monday)
        monday += timedelta(days=7)
    tick = timedelta(milliseconds=1)
    stamps = sorted({stamp for midnight in midnights for stamp in (midnight - tick, midnight)})
    await _measure_at(
        owner, rows, "Pacific/Auckland", [2**n for n in range(len(stamps))], stamps
    )
    inside = [2**number for number, stamp in enumerate(stamps) if start <= stamp < end]
    data = await overview(query)
    assert [(r["skill_id"], r["calls"], r["cost_microcents"]) for r in data.top_skills] == [
        (rows.skill_id, len(inside), sum(inside))
    ]
    # All tenants (the query's other form), as SQL ranks them: this skill and
    # those of the other cases, whose calls sit at the same edges.
    every = await overview(overview_query(days=days, now=now))
    found = [(r["tenant_id"], r["skill_id"], r["calls"], r["costed_calls"], r["cost_microcents"])
             for r in every.top_skills]
    assert (rows.tenant_id, rows.skill_id, len(inside), len(inside), sum(inside)) in found
    assert found == [tuple(r) for r in await owner.fetch(RAW_TOP_SKILLS, start, end)]
    assert len(stamps) - len(inside) == 2  # just before the period, and its end
