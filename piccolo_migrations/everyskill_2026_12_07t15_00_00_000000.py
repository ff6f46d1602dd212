"""
A weekly rollup of calls and cost per skill, so that the overview's top
skills read a row per week of the period rather than a row per day.

``usage_weekly_skills`` holds, per (UTC week, tenant, skill), what
``usage_daily_skills`` holds per day: calls, calls with a cost, the sum of
those costs in microcents. ``week`` is the Monday that starts the UTC week
of ``created_at`` (``date_trunc('week', ...)``, ISO weeks). The overview's
top skills of a period of UTC days read the period's whole weeks from it
and the days before the first and after the last whole week from
``usage_daily_skills``: for the default 30 days that is 6 to 12 rows per
skill (whole weeks plus the days around them) instead of 30
(``perf/overview.py`` measures it: docs/performance.md).

It is kept exact as the daily rollups are: ``token_measurements_maintain_rollup()``
is replaced by the same function (built by the ``2026-12-07T04:40``
migration's code, loaded from its file) with this rollup added last to
its list, so writers still lock rollup rows in one global order.
``forwards`` recounts it from the existing rows under a SHARE lock; TRUNCATE
of ``token_measurements`` empties it with the others; it is staff only,
with the policies every table has.

Every statement is idempotent. ``backwards`` puts back the ``2026-12-07T04:40``
functions, then drops the table.
"""

from types import ModuleType

from everyskill.migration_sql import earlier_migration, raw_migration

ID = "2026-12-07T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "weekly rollup of calls and cost per skill for the overview's top skills"

_DAILY_MIGRATION = "everyskill_2026_12_07t04_40_00_000000.py"


def _daily_migration() -> ModuleType:
    """The daily rollups' migration, loaded from its file."""
    return earlier_migration(__file__, _DAILY_MIGRATION)


# The UTC week of a row: the Monday it starts with, whatever the session's TimeZone.
WEEK = ("week", "date_trunc('week', created_at AT TIME ZONE 'UTC')::date")
TABLE = "usage_weekly_skills"

TABLES = """
CREATE TABLE IF NOT EXISTS usage_weekly_skills (
    week date NOT NULL,
    tenant_id text NOT NULL,
    skill_id text NOT NULL,
    calls bigint NOT NULL,
    costed_calls bigint NOT NULL,
    cost_microcents bigint NOT NULL,
    -- No CHECK on the counts (see usage_daily): an upsert's proposed row may be negative.
    PRIMARY KEY (week, tenant_id, skill_id),
    CONSTRAINT usage_weekly_skills_week_is_monday CHECK (extract(isodow FROM week) = 1)
);
COMMENT ON TABLE usage_weekly_skills IS
    'Calls and cost per UTC week (from Monday), tenant and skill; maintained by triggers on token_measurements';
CREATE INDEX IF NOT EXISTS usage_weekly_skills_tenant_week
    ON usage_weekly_skills (tenant_id, week);

-- Staff only: the admin (the owner) reads it, the triggers write it.
REVOKE ALL ON usage_weekly_skills FROM PUBLIC;
DO $$ BEGIN
    REVOKE ALL ON usage_weekly_skills FROM everyskill_app;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        REVOKE ALL ON usage_weekly_skills FROM everyskill_api;
    END IF;
END $$;
"""


def sources(daily: ModuleType) -> dict[str, list[dict]]:
    """The daily migration's rollups of each source, with this one added
    last to ``token_measurements``' list (the lock order)."""
    usage = list(daily.SOURCES["token_measurements"])
    usage.append(
        {"table": TABLE, "bucket": WEEK, "keys": ["tenant_id", "skill_id"],
         "measures": daily.COST_MEASURES, "empty": "calls = 0"}
    )
    return {"token_measurements": usage}


def forwards_sql() -> str:
    daily = _daily_migration()
    rollups = sources(daily)["token_measurements"]
    weekly = rollups[-1]
    return "\n".join(
        [
            TABLES,
            daily.POLICIES.format(table=TABLE),
            daily._maintain("token_measurements", rollups),
            daily.RECOUNT.format(
                source="token_measurements",
                table=TABLE,
                bucket_name=WEEK[0],
                keys=", ".join(weekly["keys"]),
                measures=", ".join(weekly["measures"]),
                delta=daily._delta(weekly, daily._changes(weekly, ("token_measurements", 1))),
            ),
        ]
    )


def backwards_sql() -> str:
    daily = _daily_migration()
    # The daily migration's function (CREATE OR REPLACE: idempotent), which
    # no longer names the weekly rollup; then the weekly rollup goes.
    return "\n".join(
        [
            daily._maintain("token_measurements", daily.SOURCES["token_measurements"]),
            f"DROP TABLE IF EXISTS {TABLE};",
        ]
    )


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
