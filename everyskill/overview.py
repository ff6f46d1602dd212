"""The staff overview's figures and a benchmark run's comparison, read as the owner.

Contract
--------
- :func:`overview_query` checks what the page asks for and raises
  :class:`~everyskill.errors.ValidationError` naming the field and what to
  fix: ``days`` one of :data:`PERIODS` (default 30), ``tenant`` a tenant's
  id or empty for all, ``zone`` one of :data:`TIME_ZONES` (default UTC).
  The period is the last ``days`` whole days in that zone, today included.
- :func:`overview` reads rollups that PostgreSQL keeps exact, never the
  raw tables but for the ten most recent benchmark runs (an index scan), so
  that its cost depends on the period, tenants, skills and models, not on
  how many measurements or feedback items there are. Days are the days of
  the chosen zone. For UTC (the default) it reads the daily rollups
  (``usage_daily_models`` for cost, tokens and calls per day and model,
  ``feedback_daily``; see the migration ``2026-12-07T04:40``): a row per
  day and tenant and model, or skill; the top skills read the period's
  whole weeks from ``usage_weekly_skills`` (migration ``2026-12-07T15:00``)
  and its other days from ``usage_daily_skills`` (:func:`whole_weeks`).
  For another zone it reads the hourly rollups (``usage_hourly``,
  ``feedback_hourly``; migration ``2026-12-07T04:10``), 24 rows where UTC
  reads one: every zone offered has whole-hour offsets at every date
  (summer time included), so its day is a union of whole UTC hours and the
  figures are exact. Zones with :30 or :45 offsets (Asia/Kolkata,
  Asia/Kathmandu, Australia/Adelaide, America/St_Johns) are not offered:
  they would need 15-minute buckets, four times the rows on every read.
  The review queue (pending feedback of all time, whatever the zone) reads
  ``feedback_daily``. :func:`source_of` says which rollups a query reads.
- Money stays in microcents (1e-8 USD) in the figures; :func:`dollars`
  writes it for people: ``$0.0244``, and ``unpriced`` when no call of the
  group had a cost (NULL costs are unknown prices, never $0). A sum over
  calls of which only some had a price is the sum of the priced ones, and
  the page says how many calls were unpriced.
- Feedback per day and the positive share leave dismissed feedback out, as
  the skills' aggregates do; the review queue counts pending feedback of
  all time.
- :func:`run_comparison` is a benchmark run's results per model: results,
  errors, average quality, share matching the expected output (of the
  results whose match was judged), latency
  p50/p95, average cost (microcents); :class:`~everyskill.errors.NotFoundError`
  when no run has that id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from everyskill.errors import NotFoundError, ValidationError

__all__ = [
    "DAILY",
    "HOURLY",
    "DEFAULT_DAYS",
    "PERIODS",
    "TIME_ZONES",
    "ModelResult",
    "Overview",
    "OverviewQuery",
    "RunComparison",
    "dollars",
    "overview",
    "overview_query",
    "run_comparison",
    "source_of",
    "whole_weeks",
]

#: The periods the page offers, in days.
PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
#: The zones the page offers: each has a whole-hour offset from UTC at every
#: date (see the contract).
TIME_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Helsinki",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Dubai",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
#: Microcents in a dollar.
MICROCENTS_PER_DOLLAR = Decimal(100_000_000)


def dollars(microcents: int | Decimal | None, *, places: int = 4) -> str:
    """Microcents as a person reads them: ``$0.0244``; ``unpriced`` for None."""
    if microcents is None:
        return "unpriced"
    value = (Decimal(microcents) / MICROCENTS_PER_DOLLAR).quantize(
        Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP
    )
    return f"${value:,}"


@dataclass(frozen=True)
class OverviewQuery:
    """What the overview shows: ``days`` days up to ``today`` in ``zone``."""

    days: int
    tenant_id: str | None
    zone: str
    today: date

    @property
    def first_day(self) -> date:
        return self.today - timedelta(days=self.days - 1)

    def day_bounds(self) -> tuple[datetime, datetime]:
        """The period as [start, end) instants: local midnights."""
        zone = ZoneInfo(self.zone)
        start = datetime.combine(self.first_day, datetime.min.time(), zone)
        end = datetime.combine(self.today + timedelta(days=1), datetime.min.time(), zone)
        return start.astimezone(timezone.utc), end.astimezone(timezone.utc)

    def day_list(self) -> list[date]:
        return [self.first_day + timedelta(days=n) for n in range(self.days)]


def overview_query(
    *,
    days: str | int | None = None,
    tenant: str | None = None,
    zone: str | None = None,
    now: datetime | None = None,
) -> OverviewQuery:
    """The overview's parameters, checked (see the contract)."""
    problems: list[tuple[str, str]] = []
    chosen_days = DEFAULT_DAYS
    if days not in (None, ""):
        try:
            chosen_days = int(days)
        except ValueError:
            chosen_days = -1
        if chosen_days not in PERIODS:
            problems.append(("days", f"must be one of {', '.join(map(str, PERIODS))}"))
    chosen_zone = zone or "UTC"
    if chosen_zone not in TIME_ZONES:
        problems.append(
            ("zone", "must be one of the offered zones (" + ", ".join(TIME_ZONES) + ")")
        )
        chosen_zone = "UTC"
    if problems:
        raise ValidationError(problems)
    moment = now or datetime.now(timezone.utc)
    return OverviewQuery(
        days=chosen_days,
        tenant_id=tenant or None,
        zone=chosen_zone,
        today=moment.astimezone(ZoneInfo(chosen_zone)).date(),
    )


@dataclass
class Overview:
    """The overview's figures. Money in microcents; ``None`` cost: unpriced."""

    query: OverviewQuery
    tenants: list[dict[str, Any]]
    #: (day, model) -> calls, costed_calls, cost_microcents (None: unpriced), tokens...
    usage: list[dict[str, Any]] = field(default_factory=list)
    top_skills: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    positive_share: list[dict[str, Any]] = field(default_factory=list)
    review_queue: list[dict[str, Any]] = field(default_factory=list)
    recent_runs: list[dict[str, Any]] = field(default_factory=list)


def _engine() -> PostgresEngine:
    from tables import Tenant

    engine = Tenant._meta.db
    assert isinstance(engine, PostgresEngine)
    return engine


async def _rows(sql: str, *args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await _engine().run_querystring(QueryString(sql, *args))
    return rows


# What a query reads: the daily rollups for UTC days, the hourly ones for the
# days of another zone. In the templates, {day} is a row's day, {bucket} the
# column its bounds apply to (dates for UTC days, instants for local
# midnights), {usage} and {feedback} the tables, {skill_rows} the rows the
# top skills add up (a source's own query, with its arguments), {tenant} the
# tenant's condition: none for all tenants, so that each query has a plan
# of its own for each case (one query for both, "$n IS NULL OR tenant_id =
# $n", gets a generic plan that reads the whole rollup). The {} left are the
# query's arguments, in order: the zone where {day} names it, the bounds,
# the tenant.
@dataclass(frozen=True)
class _Source:
    usage: str
    #: The rows (tenant_id, skill_id, calls, costed_calls, cost_microcents)
    #: of the period that the top skills add up, with the tenant's condition.
    skill_rows: str
    feedback: str
    day: str
    bucket: str


_SKILL_COLUMNS = "u.tenant_id, u.skill_id, u.calls, u.costed_calls, u.cost_microcents"

# UTC days: the period's whole weeks (Monday to Sunday) from the weekly
# rollup, the days before the first and after the last of them from the
# daily one (migration 2026-12-07T15:00): 6 to 12 rows per skill for 30
# days where the daily rollup alone reads 30. Arguments: the weeks'
# bounds, then the days' two ranges (see whole_weeks()), each followed by
# the tenant when one is chosen.
DAILY = _Source(
    usage="usage_daily_models",
    skill_rows=f"""
        SELECT {_SKILL_COLUMNS} FROM usage_weekly_skills u
         WHERE u.week >= {{{{}}}} AND u.week < {{{{}}}}{{tenant_u}}
        UNION ALL
        SELECT {_SKILL_COLUMNS} FROM usage_daily_skills u
         WHERE u.day >= {{{{}}}} AND u.day < {{{{}}}}{{tenant_u}}
        UNION ALL
        SELECT {_SKILL_COLUMNS} FROM usage_daily_skills u
         WHERE u.day >= {{{{}}}} AND u.day < {{{{}}}}{{tenant_u}}""",
    feedback="feedback_daily",
    day="{alias}.day", bucket="day",
)
HOURLY = _Source(
    usage="usage_hourly",
    skill_rows=f"""
        SELECT {_SKILL_COLUMNS} FROM usage_hourly u
         WHERE u.hour_start >= {{{{}}}} AND u.hour_start < {{{{}}}}{{tenant_u}}""",
    feedback="feedback_hourly",
    day="({alias}.hour_start AT TIME ZONE {{}})::date", bucket="hour_start",
)


def whole_weeks(first: date, end: date) -> tuple[date, date]:
    """The whole weeks (Monday to Sunday) of the days [first, end), as
    [Monday, Monday); (end, end) when there is none. The days of [first,
    end) outside them are [first, start) and [stop, end)."""
    start = first + timedelta(days=-first.weekday() % 7)
    stop = end - timedelta(days=end.weekday())
    return (start, stop) if start < stop else (end, end)


USAGE_BY_DAY = """
SELECT {u_day} AS day, u.model_name,
       sum(u.calls)::bigint AS calls, sum(u.costed_calls)::bigint AS costed_calls,
       CASE WHEN sum(u.costed_calls) > 0 THEN sum(u.cost_microcents) END::bigint AS cost_microcents,
       sum(u.input_tokens)::bigint AS input_tokens, sum(u.output_tokens)::bigint AS output_tokens,
       sum(u.cache_read_tokens)::bigint AS cache_read_tokens,
       sum(u.cache_write_tokens)::bigint AS cache_write_tokens,
       sum(u.total_tokens)::bigint AS total_tokens
  FROM {usage} u
 WHERE u.{bucket} >= {{}} AND u.{bucket} < {{}}{tenant_u}
 GROUP BY 1, 2 ORDER BY 1, 2
"""
# The ten skills first, by their ids; their names then (ten lookups).
TOP_SKILLS = """
SELECT top.tenant_id, t.name AS tenant_name, top.skill_id, s.name AS skill_name,
       top.calls, top.costed_calls,
       CASE WHEN top.costed_calls > 0 THEN top.cost END AS cost_microcents
  FROM (SELECT u.tenant_id, u.skill_id, sum(u.calls)::bigint AS calls,
               sum(u.costed_calls)::bigint AS costed_calls, sum(u.cost_microcents)::bigint AS cost
          FROM ({skill_rows}) AS u
         GROUP BY 1, 2
         ORDER BY 5 DESC, 3 DESC, 2 LIMIT 10) AS top
  JOIN skills s ON s.id = top.skill_id
  JOIN tenants t ON t.id = top.tenant_id
 ORDER BY top.cost DESC, top.calls DESC, top.skill_id
"""
FEEDBACK_BY_DAY = """
SELECT {f_day} AS day, f.feedback_type, sum(f.items)::bigint AS items
  FROM {feedback} f
 WHERE f.{bucket} >= {{}} AND f.{bucket} < {{}}{tenant_f}
   AND f.status <> 'dismissed'
 GROUP BY 1, 2 ORDER BY 1, 2
"""
POSITIVE_SHARE = """
SELECT {f_day} AS day, f.skill_id, s.name AS skill_name,
       coalesce(sum(f.items) FILTER (WHERE f.feedback_type = 'thumbs_up'), 0)::bigint AS up,
       sum(f.items)::bigint AS thumbs
  FROM {feedback} f JOIN skills s ON s.id = f.skill_id
 WHERE f.{bucket} >= {{}} AND f.{bucket} < {{}}{tenant_f}
   AND f.status <> 'dismissed' AND f.feedback_type IN ('thumbs_up', 'thumbs_down')
 GROUP BY 1, 2, 3 ORDER BY 1, 3, 2
"""
# Pending feedback of all time, whatever the zone: the daily rollup's pending rows.
REVIEW_QUEUE = """
SELECT f.tenant_id, t.name AS tenant_name, f.skill_id, s.name AS skill_name,
       sum(f.items)::bigint AS pending
  FROM feedback_daily f
  JOIN skills s ON s.id = f.skill_id
  JOIN tenants t ON t.id = f.tenant_id
 WHERE f.status = 'pending'{tenant_f}
 GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC, 2, 4
"""
RECENT_RUNS = """
SELECT r.id, r.tenant_id, t.name AS tenant_name, s.name AS skill_name, r.status, r.models,
       r.best_model, r.best_quality_score, r.cheapest_model, r.cheapest_cost_microcents,
       r.created_at
  FROM benchmark_runs r
  JOIN skills s ON s.id = r.skill_id
  JOIN tenants t ON t.id = r.tenant_id
 WHERE true{tenant_r}
 ORDER BY r.created_at DESC, r.id DESC LIMIT 10
"""
TEMPLATES = {
    "usage": USAGE_BY_DAY,
    "top_skills": TOP_SKILLS,
    "feedback": FEEDBACK_BY_DAY,
    "positive_share": POSITIVE_SHARE,
    "review_queue": REVIEW_QUEUE,
    "recent_runs": RECENT_RUNS,
}


def _sql(template: str, source: _Source, one_tenant: bool) -> str:
    tenant = {alias: f" AND {alias}.tenant_id = {{}}" if one_tenant else "" for alias in "ufr"}
    return template.format(
        u_day=source.day.format(alias="u"),
        f_day=source.day.format(alias="f"),
        usage=source.usage,
        skill_rows=source.skill_rows.format(tenant_u=tenant["u"]),
        feedback=source.feedback,
        bucket=source.bucket,
        **{f"tenant_{alias}": condition for alias, condition in tenant.items()},
    )


#: The page's queries, for each source, for one tenant (True) or all.
QUERIES = {
    (source, one_tenant): {
        name: _sql(template, source, one_tenant) for name, template in TEMPLATES.items()
    }
    for source in (DAILY, HOURLY)
    for one_tenant in (True, False)
}


async def overview(query: OverviewQuery) -> Overview:
    """The overview's figures for ``query`` (see the contract)."""
    start, end = query.day_bounds()
    tenant = query.tenant_id
    tenants = await _rows("SELECT id, name FROM tenants ORDER BY name, id")
    if tenant is not None and tenant not in {row["id"] for row in tenants}:
        raise ValidationError([("tenant", "is no tenant's id: choose one from the list, or all")])
    source = source_of(query)
    queries = QUERIES[source, tenant is not None]
    chosen: tuple[Any, ...] = () if tenant is None else (tenant,)
    if source is DAILY:
        # UTC days: the dates themselves, [first day, the day after today).
        first, after = query.first_day, query.today + timedelta(days=1)
        period: tuple[Any, ...] = (first, after, *chosen)
        by_day = period
        weeks_start, weeks_stop = whole_weeks(first, after)
        skill_rows: tuple[Any, ...] = (
            weeks_start, weeks_stop, *chosen,
            first, weeks_start, *chosen,
            weeks_stop, after, *chosen,
        )
    else:
        period = (start, end, *chosen)
        by_day = (query.zone, *period)
        skill_rows = period
    return Overview(
        query=query,
        tenants=tenants,
        usage=await _rows(queries["usage"], *by_day),
        top_skills=await _rows(queries["top_skills"], *skill_rows),
        feedback=await _rows(queries["feedback"], *by_day),
        positive_share=await _rows(queries["positive_share"], *by_day),
        review_queue=await _rows(queries["review_queue"], *chosen),
        recent_runs=await _rows(queries["recent_runs"], *chosen),
    )


def source_of(query: OverviewQuery) -> _Source:
    """The rollups ``query`` reads: the daily ones for UTC, the hourly ones otherwise."""
    return DAILY if query.zone == "UTC" else HOURLY


@dataclass(frozen=True)
class ModelResult:
    """One model's results in a run. Costs in microcents; None: unknown."""

    model_name: str
    results: int
    errors: int
    avg_quality: Decimal | None
    match_share: Decimal | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    avg_cost_microcents: Decimal | None
    costed_results: int


@dataclass(frozen=True)
class RunComparison:
    """A benchmark run and its results per model."""

    run: dict[str, Any]
    models: list[ModelResult]


RUN = """
SELECT r.id, r.tenant_id, t.name AS tenant_name, r.skill_id, s.name AS skill_name, r.status,
       r.models, r.best_model, r.best_quality_score, r.cheapest_model,
       r.cheapest_cost_microcents, r.created_at, r.completed_at, r.error_message
  FROM benchmark_runs r JOIN skills s ON s.id = r.skill_id JOIN tenants t ON t.id = r.tenant_id
 WHERE r.id = {}
"""
PER_MODEL = """
SELECT model_name, count(*) AS results,
       count(*) FILTER (WHERE error_message IS NOT NULL) AS errors,
       avg(quality_score) AS avg_quality,
       avg(matches_expected::int) AS match_share,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_p95_ms,
       avg(estimated_cost_microcents) AS avg_cost_microcents,
       count(estimated_cost_microcents) AS costed_results
  FROM benchmark_results WHERE benchmark_run_id = {}
 GROUP BY model_name ORDER BY model_name
"""


async def run_comparison(run_id: str) -> RunComparison:
    """A run's results per model (see the contract)."""
    runs = await _rows(RUN, run_id)
    if not runs:
        raise NotFoundError("benchmark run", run_id)
    models = [
        ModelResult(
            model_name=row["model_name"],
            results=row["results"],
            errors=row["errors"],
            avg_quality=row["avg_quality"],
            match_share=row["match_share"],
            latency_p50_ms=row["latency_p50_ms"],
            latency_p95_ms=row["latency_p95_ms"],
            avg_cost_microcents=row["avg_cost_microcents"],
            costed_results=row["costed_results"],
        )
        for row in await _rows(PER_MODEL, run_id)
    ]
    return RunComparison(run=runs[0], models=models)
