"""
Hourly rollups of usage and feedback for the staff overview, kept exact by
PostgreSQL.

- ``usage_hourly``: per (UTC hour, tenant, skill, model) the calls, the
  tokens of each kind (input, output, cache read, cache write, total), the
  calls with a cost and the sum of those costs in microcents. A call with no
  cost (a model without a price) counts in ``calls`` and not in
  ``costed_calls``: an hour whose calls were all unpriced has
  ``costed_calls = 0``, which the overview shows as "unpriced", never $0.
- ``feedback_hourly``: per (UTC hour, tenant, skill, feedback type, review
  status) the number of feedback items, dismissed ones included (the status
  is part of the key, so a review moves an item from one row to another).

Why hours: a day in a time zone is not a UTC day (a Europe/Berlin day starts
at 22:00 or 23:00 UTC). Every zone whose offset from UTC is a whole number
of hours (at every date, summer time included) is a union of whole UTC
hours, so an hourly bucket answers any such zone's days exactly; the
overview offers those zones only (``everyskill.overview.TIME_ZONES``).
Zones with :30 or :45 offsets (India, Nepal, South Australia, Newfoundland)
would need 15-minute buckets: four times the rows on every read.

How they stay exact, for every writer (the query API, the HTTP API, the
admin, raw SQL, a cascade from a deleted skill):
- statement-level AFTER triggers on ``token_measurements`` and
  ``skill_feedback`` read the statement's transition tables, turn the rows
  inserted (+1), deleted (-1) or changed (both) into one delta per rollup
  row, and upsert the deltas (``INSERT ... ON CONFLICT DO UPDATE`` adds to
  what is there, so two writers never lose each other's increments). A
  write costs one upsert per rollup row it touches, however many rows the
  table holds;
- the deltas are applied in key order, so that two statements touching the
  same rollup rows lock them in the same order and cannot deadlock; the
  skills' aggregate triggers (named ``..._aggregates_*``) fire before these
  (``..._rollup_*``): every writer locks skills first, then rollup rows;
- a rollup row that falls to zero is deleted, so that the rollups hold
  exactly the rows a recount would;
- TRUNCATE of a source table empties its rollup;
- ``forwards`` recounts both rollups from the existing rows under a SHARE
  lock (no writer can slip between the recount and the triggers).

Who may read them: staff only. The overview is a staff page served by the
admin, which connects as the owner; the application's roles
(``everyskill_app``, ``everyskill_api``) and PUBLIC hold no privilege on the
rollups. Row-level security is enabled all the same, with the policies
every table has, so that a grant made by mistake would still show a tenant
its own rows only. The trigger functions are SECURITY DEFINER (the
application's writes must update tables it cannot touch), with
``search_path = pg_catalog, pg_temp`` and every table named with its schema.

Every statement is idempotent, and ``backwards`` removes what ``forwards``
made.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-12-07T04:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "hourly usage and feedback rollups for the overview"

TABLES = """
CREATE TABLE IF NOT EXISTS usage_hourly (
    hour_start timestamptz NOT NULL,
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
    PRIMARY KEY (hour_start, tenant_id, skill_id, model_name)
);
COMMENT ON TABLE usage_hourly IS
    'Token measurements per UTC hour, tenant, skill and model; maintained by triggers on token_measurements';
-- One tenant's hours (the overview filtered by tenant).
CREATE INDEX IF NOT EXISTS usage_hourly_tenant_hour ON usage_hourly (tenant_id, hour_start);

CREATE TABLE IF NOT EXISTS feedback_hourly (
    hour_start timestamptz NOT NULL,
    tenant_id text NOT NULL,
    skill_id text NOT NULL,
    feedback_type text NOT NULL,
    status text NOT NULL,
    items bigint NOT NULL,
    PRIMARY KEY (hour_start, tenant_id, skill_id, feedback_type, status)
);
COMMENT ON TABLE feedback_hourly IS
    'Feedback items per UTC hour, tenant, skill, type and review status; maintained by triggers on skill_feedback';
CREATE INDEX IF NOT EXISTS feedback_hourly_tenant_hour ON feedback_hourly (tenant_id, hour_start);
-- The review queue reads the pending rows only, of every hour.
CREATE INDEX IF NOT EXISTS feedback_hourly_pending
    ON feedback_hourly (tenant_id, skill_id) INCLUDE (items) WHERE status = 'pending';

-- Staff only: the admin (the owner) reads them, the triggers write them.
REVOKE ALL ON usage_hourly, feedback_hourly FROM PUBLIC;
DO $$ BEGIN
    REVOKE ALL ON usage_hourly, feedback_hourly FROM everyskill_app;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_api') THEN
        REVOKE ALL ON usage_hourly, feedback_hourly FROM everyskill_api;
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

# A rollup: its source table, its key (besides the hour), the measures a
# source row adds (as SQL over the row), and the rule that keeps a row
# (counted, i.e. "a row of the rollup that counts nothing is deleted").
USAGE = {
    "rollup": "usage_hourly",
    "source": "token_measurements",
    "keys": ["tenant_id", "skill_id", "model_name"],
    "measures": {
        "calls": "1",
        "costed_calls": "(estimated_cost_microcents IS NOT NULL)::int",
        "cost_microcents": "coalesce(estimated_cost_microcents, 0)::bigint",
        "input_tokens": "coalesce(input_tokens, 0)::bigint",
        "output_tokens": "coalesce(output_tokens, 0)::bigint",
        "cache_read_tokens": "coalesce(cache_read_tokens, 0)::bigint",
        "cache_write_tokens": "coalesce(cache_write_tokens, 0)::bigint",
        "total_tokens": "coalesce(total_tokens, 0)::bigint",
    },
    "empty": "calls = 0",
}
FEEDBACK = {
    "rollup": "feedback_hourly",
    "source": "skill_feedback",
    "keys": ["tenant_id", "skill_id", "feedback_type", "status"],
    "measures": {"items": "1"},
    "empty": "items = 0",
}
ROLLUPS = [USAGE, FEEDBACK]

# The UTC hour of a row, whatever the session's TimeZone.
HOUR = "date_trunc('hour', created_at, 'UTC')"

# {rows} is a transition table or the source table; @s. is the schema.
DELTA = """
SELECT {hour} AS hour_start, {keys}, {sums}
  FROM ({changes}) AS changes
 GROUP BY {key_numbers}
-- A write that changes no measure (a latency corrected, review notes
-- edited) locks and writes no rollup row.
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

-- TRUNCATE has no transition table: the rollup is emptied with its source.
CREATE OR REPLACE FUNCTION @s.{source}_reset_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    TRUNCATE @s.{rollup};
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
DELETE FROM {rollup};
INSERT INTO {rollup} (hour_start, {keys}, {measures})
{delta};
"""

TRIGGER_EVENTS = ["insert", "update", "delete", "truncate"]


def _columns(rollup: dict[str, object]) -> tuple[list[str], dict[str, str]]:
    keys = rollup["keys"]
    measures = rollup["measures"]
    assert isinstance(keys, list) and isinstance(measures, dict)
    return keys, measures


def _delta(rollup: dict[str, object], changes: str) -> str:
    """The per-row deltas of ``changes`` (rows with a ``sign``) as SQL."""
    keys, measures = _columns(rollup)
    return DELTA.format(
        hour=HOUR,
        keys=", ".join(keys),
        sums=", ".join(f"sum(sign * {sql}) AS {name}" for name, sql in measures.items()),
        changes=changes,
        key_numbers=", ".join(str(n) for n in range(1, len(keys) + 2)),
        any_change=" OR ".join(f"sum(sign * {sql}) <> 0" for sql in measures.values()),
    )


def _changes(rollup: dict[str, object], *sides: tuple[str, int]) -> str:
    keys, measures = _columns(rollup)
    columns = ", ".join(
        ["created_at", *keys, *{column for sql in measures.values() for column in _source_columns(sql)}]
    )
    return " UNION ALL ".join(f"SELECT {columns}, {sign} AS sign FROM {rows}" for rows, sign in sides)


def _source_columns(sql: str) -> list[str]:
    known = [
        "estimated_cost_microcents", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_tokens", "total_tokens",
    ]
    return sorted(column for column in known if column in sql)


def _upsert(rollup: dict[str, object], *sides: tuple[str, int]) -> str:
    keys, measures = _columns(rollup)
    key_list = ", ".join(["hour_start", *keys])
    names = ", ".join(measures)
    added = ",\n               ".join(f"{name} = r.{name} + excluded.{name}" for name in measures)
    return f"""-- Applied in key order: the lock order of every writer.
        INSERT INTO @s.{rollup['rollup']} AS r ({key_list}, {names})
        SELECT {key_list}, {names} FROM ({_delta(rollup, _changes(rollup, *sides))}) AS delta
         ORDER BY {key_list}
        ON CONFLICT ({key_list}) DO UPDATE
           SET {added};"""


def _prune(rollup: dict[str, object]) -> str:
    keys, _measures = _columns(rollup)
    match = " AND ".join(f"r.{key} = o.{key}" for key in ["hour_start", *keys])
    return f"""-- Rows the statement emptied go, so that the rollup holds what a recount would.
        DELETE FROM @s.{rollup['rollup']} AS r
         USING (SELECT DISTINCT {HOUR} AS hour_start, {', '.join(keys)} FROM old_rows) AS o
         WHERE {match} AND r.{rollup['empty']};"""


def forwards_sql() -> str:
    statements = [TABLES]
    for rollup in ROLLUPS:
        keys, measures = _columns(rollup)
        statements.append(POLICIES.format(table=rollup["rollup"]))
        statements.append(
            MAINTAIN.format(
                source=rollup["source"],
                rollup=rollup["rollup"],
                upsert_insert=_upsert(rollup, ("new_rows", 1)),
                upsert_delete=_upsert(rollup, ("old_rows", -1)),
                upsert_update=_upsert(rollup, ("new_rows", 1), ("old_rows", -1)),
                prune=_prune(rollup),
            )
        )
        statements.append(
            RECOUNT.format(
                source=rollup["source"],
                rollup=rollup["rollup"],
                keys=", ".join(keys),
                measures=", ".join(measures),
                delta=_delta(rollup, _changes(rollup, (str(rollup["source"]), 1))),
            )
        )
    return "\n".join(statements)


def backwards_sql() -> str:
    statements = []
    for rollup in reversed(ROLLUPS):
        source = rollup["source"]
        for event in TRIGGER_EVENTS:
            statements.append(f"DROP TRIGGER IF EXISTS {source}_rollup_{event} ON {source};")
        statements.append(f"DROP FUNCTION IF EXISTS {source}_reset_rollup();")
        statements.append(f"DROP FUNCTION IF EXISTS {source}_maintain_rollup();")
        statements.append(f"DROP TABLE IF EXISTS {rollup['rollup']};")
    return "\n".join(statements)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
