"""
Daily rollups of usage and feedback for the staff overview, kept exact by
PostgreSQL next to the hourly ones.

The hourly rollups of the migration ``2026-12-07T04:10`` answer a day of any
zone the overview offers, but the overview then reads one row per hour of
the period and (tenant, skill, model): 720 hours in 30 days. These rollups
hold UTC days (``day`` is the date of ``created_at`` in UTC), so that the
overview's default (UTC days) reads one row per day:

- ``usage_daily``: per (UTC day, tenant, skill, model) what ``usage_hourly``
  holds per hour: calls, calls with a cost, the sum of those costs in
  microcents, the tokens of each kind. An unpriced call counts in ``calls``
  and not in ``costed_calls``: a day whose calls were all unpriced has
  ``costed_calls = 0``, shown as "unpriced", never $0.
- ``usage_daily_models``: the same per (UTC day, tenant, model), every skill
  together: what the overview's cost, tokens and calls per day read.
- ``usage_daily_skills``: calls, costed calls and cost per (UTC day, tenant,
  skill), every model together: what the overview's top skills read.
- ``feedback_daily``: per (UTC day, tenant, skill, feedback type, review
  status) the number of feedback items, dismissed ones included.

The two narrow usage rollups are ``usage_daily`` summed over a column: a
read of a period then costs a row per day and (tenant, model), or per day
and (tenant, skill), not per day and (tenant, skill, model).

They are kept exact as the hourly ones are, by the same statement-level
triggers, whose functions this migration replaces:
``token_measurements_maintain_rollup()`` now upserts the statement's deltas
into ``usage_hourly``, ``usage_daily``, ``usage_daily_models`` and
``usage_daily_skills``, and ``skill_feedback_maintain_rollup()`` into
``feedback_hourly`` and ``feedback_daily``, in that order and each in key
order: every writer locks rollup rows in one global order (after the
skills, whose aggregate triggers fire first), so that writers do not
deadlock. A write that changes no measure of a rollup writes none of its
rows; rows that fall to zero are deleted; TRUNCATE of a source table
empties all of its rollups; ``forwards`` recounts the daily rollups from the
existing rows under a SHARE lock on their source.

Who may read them: staff only, as the hourly ones (the admin, connected as
the owner); the application's roles and PUBLIC hold no privilege on them;
row-level security is enabled with the policies every table has. The
trigger functions stay SECURITY DEFINER with ``search_path = pg_catalog,
pg_temp`` and every table named with its schema.

Every statement is idempotent. ``backwards`` puts back the functions of
the migration ``2026-12-07T04:10`` (hourly rollups only, loaded from its
file), then drops the daily rollups.
"""

from types import ModuleType

from everyskill.migration_sql import earlier_migration, raw_migration

ID = "2026-12-07T04:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "daily usage and feedback rollups for the overview"

_HOURLY_MIGRATION = "everyskill_2026_12_07t04_10_00_000000.py"

USAGE_MEASURES = {
    "calls": "1",
    "costed_calls": "(estimated_cost_microcents IS NOT NULL)::int",
    "cost_microcents": "coalesce(estimated_cost_microcents, 0)::bigint",
    "input_tokens": "coalesce(input_tokens, 0)::bigint",
    "output_tokens": "coalesce(output_tokens, 0)::bigint",
    "cache_read_tokens": "coalesce(cache_read_tokens, 0)::bigint",
    "cache_write_tokens": "coalesce(cache_write_tokens, 0)::bigint",
    "total_tokens": "coalesce(total_tokens, 0)::bigint",
}
COST_MEASURES = {
    name: USAGE_MEASURES[name] for name in ("calls", "costed_calls", "cost_microcents")
}
# The bucket of a row, whatever the session's TimeZone: its UTC hour, its UTC day.
HOUR = ("hour_start", "date_trunc('hour', created_at, 'UTC')")
DAY = ("day", "(created_at AT TIME ZONE 'UTC')::date")

# Each source's rollups, in the order its trigger function writes them (the
# lock order of every writer): the table, its bucket, its other keys, the
# measures a source row adds (SQL over the row) and the rule of an empty row.
SOURCES = {
    "token_measurements": [
        {"table": "usage_hourly", "bucket": HOUR, "keys": ["tenant_id", "skill_id", "model_name"],
         "measures": USAGE_MEASURES, "empty": "calls = 0"},
        {"table": "usage_daily", "bucket": DAY, "keys": ["tenant_id", "skill_id", "model_name"],
         "measures": USAGE_MEASURES, "empty": "calls = 0"},
        {"table": "usage_daily_models", "bucket": DAY, "keys": ["tenant_id", "model_name"],
         "measures": USAGE_MEASURES, "empty": "calls = 0"},
        {"table": "usage_daily_skills", "bucket": DAY, "keys": ["tenant_id", "skill_id"],
         "measures": COST_MEASURES, "empty": "calls = 0"},
    ],
    "skill_feedback": [
        {"table": "feedback_hourly", "bucket": HOUR,
         "keys": ["tenant_id", "skill_id", "feedback_type", "status"],
         "measures": {"items": "1"}, "empty": "items = 0"},
        {"table": "feedback_daily", "bucket": DAY,
         "keys": ["tenant_id", "skill_id", "feedback_type", "status"],
         "measures": {"items": "1"}, "empty": "items = 0"},
    ],
}
# The rollups this migration makes (the hourly ones are the 04:10 migration's).
NEW = ["usage_daily", "usage_daily_models", "usage_daily_skills", "feedback_daily"]

TABLES = """
CREATE TABLE IF NOT EXISTS usage_daily (
    day date NOT NULL,
    tenant_id text NOT NULL,
    skill_id text NOT NULL,
    model_name text NOT NULL,
    calls bigint NOT NULL,
    costed_calls bigint NOT NULL,
    cost_microcents bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    total_tokens bigint NOT NULL,
    -- No CHECK on the counts: PostgreSQL checks the row an upsert proposes
    -- before it finds the conflict, and a delete proposes negative deltas.
    PRIMARY KEY (day, tenant_id, skill_id, model_name)
);
COMMENT ON TABLE usage_daily IS
    'Token measurements per UTC day, tenant, skill and model; maintained by triggers on token_measurements';
CREATE INDEX IF NOT EXISTS usage_daily_tenant_day ON usage_daily (tenant_id, day);

CREATE TABLE IF NOT EXISTS usage_daily_models (
    day date NOT NULL,
    tenant_id text NOT NULL,
    model_name text NOT NULL,
    calls bigint NOT NULL,
    costed_calls bigint NOT NULL,
    cost_microcents bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    total_tokens bigint NOT NULL,
    PRIMARY KEY (day, tenant_id, model_name)
);
COMMENT ON TABLE usage_daily_models IS
    'Token measurements per UTC day, tenant and model; maintained by triggers on token_measurements';
CREATE INDEX IF NOT EXISTS usage_daily_models_tenant_day ON usage_daily_models (tenant_id, day);

CREATE TABLE IF NOT EXISTS usage_daily_skills (
    day date NOT NULL,
    tenant_id text NOT NULL,
    skill_id text NOT NULL,
    calls bigint NOT NULL,
    costed_calls bigint NOT NULL,
    cost_microcents bigint NOT NULL,
    PRIMARY KEY (day, tenant_id, skill_id)
);
COMMENT ON TABLE usage_daily_skills IS
    'Calls and cost per UTC day, tenant and skill; maintained by triggers on token_measurements';
CREATE INDEX IF NOT EXISTS usage_daily_skills_tenant_day ON usage_daily_skills (tenant_id, day);

CREATE TABLE IF NOT EXISTS feedback_daily (
    day date NOT NULL,
    tenant_id text NOT NULL,
    skill_id text NOT NULL,
    feedback_type text NOT NULL,
    status text NOT NULL,
    items bigint NOT NULL,
    PRIMARY KEY (day, tenant_id, skill_id, feedback_type, status)
);
COMMENT ON TABLE feedback_daily IS
    'Feedback items per UTC day, tenant, skill, type and review status; maintained by triggers on skill_feedback';
CREATE INDEX IF NOT EXISTS feedback_daily_tenant_day ON feedback_daily (tenant_id, day);
-- The review queue reads the pending rows only, of every day.
CREATE INDEX IF NOT EXISTS feedback_daily_pending
    ON feedback_daily (tenant_id, skill_id) INCLUDE (items) WHERE status = 'pending';

-- Staff only: the admin (the owner) reads them, the triggers write them.
REVOKE ALL ON usage_daily, usage_daily_models, usage_daily_skills, feedback_daily FROM PUBLIC;
DO $$ BEGIN
    REVOKE ALL ON usage_daily, usage_daily_models, usage_daily_skills, feedback_daily
        FROM everyskill_app;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        REVOKE ALL ON usage_daily, usage_daily_models, usage_daily_skills, feedback_daily
            FROM everyskill_api;
    END IF;
END $$;
"""

POLICIES = """
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON {table};
CREATE POLICY tenant_isolation ON {table} AS RESTRICTIVE FOR ALL
    USING (tenant_id = current_setting('app.current_tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));
DROP POLICY IF EXISTS tenant_access ON {table};
CREATE POLICY tenant_access ON {table} AS PERMISSIVE FOR ALL TO everyskill_app
    USING (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''));
"""

# {changes}: rows with a sign (+1 inserted or new, -1 deleted or old).
DELTA = """
SELECT {bucket} AS {bucket_name}, {keys}, {sums}
  FROM ({changes}) AS changes
 GROUP BY {key_numbers}
-- A write that changes no measure of this rollup locks and writes none of its rows.
HAVING {any_change}
"""

MAINTAIN = """
DO $do$ BEGIN
EXECUTE replace($function$
CREATE OR REPLACE FUNCTION @s.{source}_maintain_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {upsert_insert}
    ELSIF TG_OP = 'DELETE' THEN
        {upsert_delete}
        {prune}
    ELSE
        {upsert_update}
        {prune}
    END IF;
    RETURN NULL;
END
$body$;

-- TRUNCATE has no transition table: the rollups are emptied with their source.
CREATE OR REPLACE FUNCTION @s.{source}_reset_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    TRUNCATE {truncated};
    RETURN NULL;
END
$body$;
$function$, '@s.', quote_ident(current_schema()) || '.');
END $do$;

CREATE OR REPLACE TRIGGER {source}_rollup_insert
    AFTER INSERT ON {source} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {source}_maintain_rollup();
CREATE OR REPLACE TRIGGER {source}_rollup_update
    AFTER UPDATE ON {source} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {source}_maintain_rollup();
CREATE OR REPLACE TRIGGER {source}_rollup_delete
    AFTER DELETE ON {source} REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {source}_maintain_rollup();
CREATE OR REPLACE TRIGGER {source}_rollup_truncate
    AFTER TRUNCATE ON {source}
    FOR EACH STATEMENT EXECUTE FUNCTION {source}_reset_rollup();
"""

RECOUNT = """
-- Existing rows, counted once. SHARE mode holds writers off until the
-- migration commits, so that no row lands between the recount and the
-- triggers that count it.
LOCK TABLE {source} IN SHARE MODE;
DELETE FROM {table};
INSERT INTO {table} ({bucket_name}, {keys}, {measures})
{delta};
"""

SOURCE_COLUMNS = [
    "estimated_cost_microcents", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "total_tokens",
]


def _delta(rollup: dict, changes: str) -> str:
    bucket_name, bucket = rollup["bucket"]
    keys, measures = rollup["keys"], rollup["measures"]
    return DELTA.format(
        bucket=bucket,
        bucket_name=bucket_name,
        keys=", ".join(keys),
        sums=", ".join(f"sum(sign * {sql}) AS {name}" for name, sql in measures.items()),
        changes=changes,
        key_numbers=", ".join(str(n) for n in range(1, len(keys) + 2)),
        any_change=" OR ".join(f"sum(sign * {sql}) <> 0" for sql in measures.values()),
    )


def _changes(rollup: dict, *sides: tuple[str, int]) -> str:
    used = sorted(
        column for column in SOURCE_COLUMNS
        if any(column in sql for sql in rollup["measures"].values())
    )
    columns = ", ".join(["created_at", *rollup["keys"], *used])
    return " UNION ALL ".join(
        f"SELECT {columns}, {sign} AS sign FROM {rows}" for rows, sign in sides
    )


def _upsert(rollup: dict, *sides: tuple[str, int]) -> str:
    key_list = ", ".join([rollup["bucket"][0], *rollup["keys"]])
    names = ", ".join(rollup["measures"])
    added = ",\n               ".join(
        f"{name} = r.{name} + excluded.{name}" for name in rollup["measures"]
    )
    return f"""-- {rollup['table']}, in key order: the lock order of every writer.
        INSERT INTO @s.{rollup['table']} AS r ({key_list}, {names})
        SELECT {key_list}, {names} FROM ({_delta(rollup, _changes(rollup, *sides))}) AS delta
         ORDER BY {key_list}
        ON CONFLICT ({key_list}) DO UPDATE
           SET {added};"""


def _prune(rollup: dict) -> str:
    bucket_name, bucket = rollup["bucket"]
    keys = rollup["keys"]
    match = " AND ".join(f"r.{key} = o.{key}" for key in [bucket_name, *keys])
    return f"""-- {rollup['table']}: rows the statement emptied go, so that it holds what a recount would.
        DELETE FROM @s.{rollup['table']} AS r
         USING (SELECT DISTINCT {bucket} AS {bucket_name}, {', '.join(keys)} FROM old_rows) AS o
         WHERE {match} AND r.{rollup['empty']};"""


def _maintain(source: str, rollups: list[dict]) -> str:
    def each(make, *args):  # one statement per rollup, in the order of the list
        return "\n        ".join(make(rollup, *args) for rollup in rollups)

    return MAINTAIN.format(
        source=source,
        upsert_insert=each(_upsert, ("new_rows", 1)),
        upsert_delete=each(_upsert, ("old_rows", -1)),
        upsert_update=each(_upsert, ("new_rows", 1), ("old_rows", -1)),
        prune=each(_prune),
        truncated=", ".join(f"@s.{rollup['table']}" for rollup in rollups),
    )


def forwards_sql() -> str:
    statements = [TABLES]
    statements += [POLICIES.format(table=table) for table in NEW]
    for source, rollups in SOURCES.items():
        statements.append(_maintain(source, rollups))
        for rollup in rollups:
            if rollup["table"] in NEW:
                statements.append(
                    RECOUNT.format(
                        source=source,
                        table=rollup["table"],
                        bucket_name=rollup["bucket"][0],
                        keys=", ".join(rollup["keys"]),
                        measures=", ".join(rollup["measures"]),
                        delta=_delta(rollup, _changes(rollup, (source, 1))),
                    )
                )
    return "\n".join(statements)


def _hourly_migration() -> ModuleType:
    """The hourly rollups' migration, loaded from its file."""
    return earlier_migration(__file__, _HOURLY_MIGRATION)


def backwards_sql() -> str:
    hourly = _hourly_migration()
    statements = []
    # The hourly migration's functions (CREATE OR REPLACE: idempotent), which
    # no longer name the daily rollups; then the daily rollups go.
    for rollup in hourly.ROLLUPS:
        statements.append(
            hourly.MAINTAIN.format(
                source=rollup["source"],
                rollup=rollup["rollup"],
                upsert_insert=hourly._upsert(rollup, ("new_rows", 1)),
                upsert_delete=hourly._upsert(rollup, ("old_rows", -1)),
                upsert_update=hourly._upsert(rollup, ("new_rows", 1), ("old_rows", -1)),
                prune=hourly._prune(rollup),
            )
        )
    statements += [f"DROP TABLE IF EXISTS {table};" for table in reversed(NEW)]
    return "\n".join(statements)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
