"""
Live aggregates on skills, maintained by PostgreSQL.

``skills.total_feedback``, ``positive_feedback_pct`` and
``avg_token_cost_microcents`` are exact after every committed write, whoever
writes: the query API, the admin, raw SQL, an UPDATE that changes a type or
moves a row to another skill, a DELETE, a cascade, a TRUNCATE.

How:
- Statement-level AFTER triggers on ``skill_feedback`` and
  ``token_measurements`` read the statement's transition tables (the rows it
  inserted, deleted or changed), turn them into one delta per skill, and add
  the deltas to counters on ``skills`` (thumbs up, thumbs down, count and sum
  of costs). The aggregates are computed from the counters in the same
  UPDATE. A write therefore costs the same whether the skill has ten rows or
  ten million, and a batch of 10,000 rows costs one UPDATE per skill.
- Concurrent writers on one skill queue on that skill's row lock (READ
  COMMITTED re-reads the latest counters after the wait), so increments are
  never lost. Rows are locked in id order, so that two batches touching the
  same skills cannot deadlock each other, and with FOR NO KEY UPDATE, the
  lock an UPDATE of non-key columns takes: it does not conflict with the KEY
  SHARE lock that the foreign-key check of another writer's new row holds on
  the same skill (FOR UPDATE would, and two writers would deadlock).
- The trigger functions are SECURITY DEFINER: the application role may not
  write the aggregate columns itself (see the tenant isolation migration),
  the triggers do it for it. Their search_path is fixed, with pg_temp last,
  so that no temporary table can stand in for ``skills``.
- A BEFORE trigger on ``skills`` keeps the maintained columns out of anyone
  else's hands: a new skill starts from zero whatever its INSERT says, and an
  UPDATE that does not come from a trigger leaves them as they were.

``forwards`` recounts the counters of existing skills before it creates the
triggers; every statement is idempotent, and ``backwards`` removes what
``forwards`` made.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T04:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "live skill aggregates"

# The rows a statement changed, as (skill, values, sign): +1 for a row that
# now exists, -1 for one that no longer does. An UPDATE is both.
CHANGES = {
    "INSERT": "SELECT {columns}, 1 AS sign FROM new_rows",
    "DELETE": "SELECT {columns}, -1 AS sign FROM old_rows",
    "UPDATE": (
        "SELECT {columns}, 1 AS sign FROM new_rows"
        " UNION ALL SELECT {columns}, -1 AS sign FROM old_rows"
    ),
}

FEEDBACK_APPLY = """
        , delta AS (
            SELECT skill_id,
                   sum(sign) AS total,
                   coalesce(sum(sign) FILTER (WHERE feedback_type = 'thumbs_up'), 0) AS up,
                   coalesce(sum(sign) FILTER (WHERE feedback_type = 'thumbs_down'), 0) AS down
              FROM changes
             GROUP BY skill_id
            -- A review changes no count: it locks and updates no skill.
            HAVING sum(sign) <> 0
                OR sum(sign) FILTER (WHERE feedback_type = 'thumbs_up') <> 0
                OR sum(sign) FILTER (WHERE feedback_type = 'thumbs_down') <> 0
        ), locked AS (
            SELECT id FROM skills WHERE id IN (SELECT skill_id FROM delta)
             ORDER BY id FOR NO KEY UPDATE
        )
        UPDATE skills s
           SET total_feedback = s.total_feedback + d.total,
               feedback_thumbs_up = s.feedback_thumbs_up + d.up,
               feedback_thumbs_down = s.feedback_thumbs_down + d.down,
               positive_feedback_pct = round(
                   100.0 * (s.feedback_thumbs_up + d.up)
                   / NULLIF(s.feedback_thumbs_up + d.up + s.feedback_thumbs_down + d.down, 0))
          FROM delta d JOIN locked l ON l.id = d.skill_id
         WHERE s.id = d.skill_id;"""

MEASUREMENT_APPLY = """
        , delta AS (
            SELECT skill_id,
                   sum(sign) FILTER (WHERE estimated_cost_microcents IS NOT NULL) AS costed,
                   sum(sign * estimated_cost_microcents::bigint) AS cost
              FROM changes
             GROUP BY skill_id
            -- Rows without a cost change no aggregate.
            HAVING sum(sign) FILTER (WHERE estimated_cost_microcents IS NOT NULL) <> 0
                OR sum(sign * estimated_cost_microcents::bigint) <> 0
        ), locked AS (
            SELECT id FROM skills WHERE id IN (SELECT skill_id FROM delta)
             ORDER BY id FOR NO KEY UPDATE
        )
        UPDATE skills s
           SET costed_measurements = s.costed_measurements + coalesce(d.costed, 0),
               measured_cost_microcents = s.measured_cost_microcents + coalesce(d.cost, 0),
               avg_token_cost_microcents = round(
                   (s.measured_cost_microcents + coalesce(d.cost, 0))::numeric
                   / NULLIF(s.costed_measurements + coalesce(d.costed, 0), 0))
          FROM delta d JOIN locked l ON l.id = d.skill_id
         WHERE s.id = d.skill_id;"""

# (table, counted columns, the UPDATE that applies the changes, what a
# TRUNCATE of the table resets).
MAINTAINED = [
    (
        "skill_feedback",
        "skill_id, feedback_type",
        FEEDBACK_APPLY,
        "total_feedback = 0, feedback_thumbs_up = 0, feedback_thumbs_down = 0,"
        " positive_feedback_pct = NULL",
    ),
    (
        "token_measurements",
        "skill_id, estimated_cost_microcents",
        MEASUREMENT_APPLY,
        "costed_measurements = 0, measured_cost_microcents = 0,"
        " avg_token_cost_microcents = NULL",
    ),
]

MAINTAINED_COLUMNS = [
    ("total_feedback", "0"),
    ("feedback_thumbs_up", "0"),
    ("feedback_thumbs_down", "0"),
    ("positive_feedback_pct", "NULL"),
    ("costed_measurements", "0"),
    ("measured_cost_microcents", "0"),
    ("avg_token_cost_microcents", "NULL"),
]

COUNTERS_CHECK = """
-- Counters never go below zero; a negative one would mean a lost write.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'skills'::regclass
                 AND conname = 'skills_aggregate_counters_check') THEN
    ALTER TABLE skills ADD CONSTRAINT skills_aggregate_counters_check
      CHECK (feedback_thumbs_up >= 0 AND feedback_thumbs_down >= 0
             AND costed_measurements >= 0 AND measured_cost_microcents >= 0);
  END IF;
END $$;
"""

# Existing rows are counted once, before the triggers exist (the guard on
# skills would otherwise keep the old values). SHARE mode holds writers off
# until the migration commits, so that no row lands between the recount and
# the triggers that count it.
RECOUNT = """
LOCK TABLE skill_feedback, token_measurements IN SHARE MODE;
DROP TRIGGER IF EXISTS skills_guard_aggregates ON skills;
UPDATE skills s
   SET total_feedback = coalesce(f.total, 0),
       feedback_thumbs_up = coalesce(f.up, 0),
       feedback_thumbs_down = coalesce(f.down, 0),
       positive_feedback_pct = round(100.0 * f.up / NULLIF(f.up + f.down, 0)),
       costed_measurements = coalesce(m.costed, 0),
       measured_cost_microcents = coalesce(m.cost, 0),
       avg_token_cost_microcents = round(m.cost::numeric / NULLIF(m.costed, 0))
  FROM skills k
  LEFT JOIN (SELECT skill_id, count(*) AS total,
                    count(*) FILTER (WHERE feedback_type = 'thumbs_up') AS up,
                    count(*) FILTER (WHERE feedback_type = 'thumbs_down') AS down
               FROM skill_feedback GROUP BY skill_id) f ON f.skill_id = k.id
  LEFT JOIN (SELECT skill_id, count(estimated_cost_microcents) AS costed,
                    sum(estimated_cost_microcents) AS cost
               FROM token_measurements GROUP BY skill_id) m ON m.skill_id = k.id
 WHERE s.id = k.id;
"""

GUARD = """
-- The maintained columns belong to the triggers below. pg_trigger_depth() is
-- 1 when this trigger fires for a statement someone ran, and greater when it
-- fires for the UPDATE of an aggregate trigger.
CREATE OR REPLACE FUNCTION skills_guard_aggregates() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
{on_insert}
    ELSIF pg_trigger_depth() = 1 THEN
{on_update}
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER skills_guard_aggregates
    BEFORE INSERT OR UPDATE ON skills
    FOR EACH ROW EXECUTE FUNCTION skills_guard_aggregates();
"""

MAINTAIN = """
-- {table}: add the statement's changes to the counters of the skills it
-- touched. One function for the three events; each trigger passes the
-- transition tables its event has.
CREATE OR REPLACE FUNCTION {table}_maintain_aggregates() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH changes AS ({insert}){apply}
    ELSIF TG_OP = 'DELETE' THEN
        WITH changes AS ({delete}){apply}
    ELSE
        WITH changes AS ({update}){apply}
    END IF;
    RETURN NULL;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION {table}_maintain_aggregates()'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;
CREATE OR REPLACE TRIGGER {table}_aggregates_insert
    AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_maintain_aggregates();
CREATE OR REPLACE TRIGGER {table}_aggregates_update
    AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_maintain_aggregates();
CREATE OR REPLACE TRIGGER {table}_aggregates_delete
    AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_maintain_aggregates();

-- TRUNCATE has no transition table: every skill's counters go back to zero.
CREATE OR REPLACE FUNCTION {table}_reset_aggregates() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE skills SET {reset};
    RETURN NULL;
END $$;
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION {table}_reset_aggregates()'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;
CREATE OR REPLACE TRIGGER {table}_aggregates_truncate
    AFTER TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_reset_aggregates();
"""

TRIGGER_EVENTS = ["insert", "update", "delete", "truncate"]


def forwards_sql() -> str:
    statements = [COUNTERS_CHECK, RECOUNT]
    statements.append(
        GUARD.format(
            on_insert="\n".join(
                f"        NEW.{column} := {value};" for column, value in MAINTAINED_COLUMNS
            ),
            on_update="\n".join(
                f"        NEW.{column} := OLD.{column};" for column, _ in MAINTAINED_COLUMNS
            ),
        )
    )
    for table, columns, apply, reset in MAINTAINED:
        changes = {event: sql.format(columns=columns) for event, sql in CHANGES.items()}
        statements.append(
            MAINTAIN.format(
                table=table,
                insert=changes["INSERT"],
                delete=changes["DELETE"],
                update=changes["UPDATE"],
                apply=apply,
                reset=reset,
            )
        )
    return "\n".join(statements)


def backwards_sql() -> str:
    statements = []
    for table, _columns, _apply, _reset in reversed(MAINTAINED):
        for event in TRIGGER_EVENTS:
            statements.append(f"DROP TRIGGER IF EXISTS {table}_aggregates_{event} ON {table};")
        statements.append(f"DROP FUNCTION IF EXISTS {table}_reset_aggregates();")
        statements.append(f"DROP FUNCTION IF EXISTS {table}_maintain_aggregates();")
    statements.append("DROP TRIGGER IF EXISTS skills_guard_aggregates ON skills;")
    statements.append("DROP FUNCTION IF EXISTS skills_guard_aggregates();")
    statements.append(
        "ALTER TABLE skills DROP CONSTRAINT IF EXISTS skills_aggregate_counters_check;"
    )
    return "\n".join(statements)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
