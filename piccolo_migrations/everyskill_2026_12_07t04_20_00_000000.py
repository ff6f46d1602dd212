"""
The skills' aggregate triggers lock the skills in one statement, then update
them in the next: concurrent writes on the same skills no longer deadlock.

The statement-level triggers of the live-aggregates migration (and of the
migration that took dismissed feedback out of the counts) locked the skills
in id order and updated them in the same statement: a CTE ``SELECT ... ORDER
BY id FOR NO KEY UPDATE`` joined into the ``UPDATE skills``. The lock order
was right, but the UPDATE read the skills with the snapshot its statement
started with. When a skill was updated by another transaction while this one
waited for its lock, the lock was taken on the newest version of the row and
the UPDATE then met the older version it had read, and went through
PostgreSQL's recheck of a concurrently updated row: it queued on the
heavyweight lock of that older tuple. A third writer, waiting for the first
to finish, could be holding that tuple lock (it takes it while it follows
the row's chain of versions), and the two then waited for each other:
``deadlock detected`` (40P01) in ``skill_feedback_maintain_aggregates`` or
``token_measurements_maintain_aggregates``, with no other trigger involved.
Two dismissals, deletes or moves of rows of the same skills, each a
statement of its own, were enough.

The functions now:
- add up the statement's changes once, one delta per skill, into arrays in
  skill id order (a statement that changes no count still locks and updates
  no skill);
- lock those skills in a statement of their own, in id order, FOR NO KEY
  UPDATE (the lock an UPDATE of non-key columns takes: it does not conflict
  with the KEY SHARE lock of another writer's foreign-key check);
- then update them in the next statement. In READ COMMITTED each statement
  of a function takes a new snapshot, and this one starts after every lock
  is held: it reads the newest version of each skill, which no one else can
  change any more, and updates it in place of any recheck.

A TRUNCATE's reset locks every skill in id order before it updates them all,
so that it cannot deadlock with a writer of the other table either.

The functions stay SECURITY DEFINER and, as the least-privilege migration
left every such function, run with ``search_path = pg_catalog, pg_temp``
and name this schema's tables in full: its hardening (``DEFINER_FUNCTIONS``,
loaded from its file) runs again after them, both ways. Dismissed feedback
still does not count. Every statement is
idempotent; ``backwards`` restores the functions of the two earlier
migrations (loaded from their files), which count the same rows.
"""

from types import ModuleType

from everyskill.migration_sql import earlier_migration, raw_migration

ID = "2026-12-07T04:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "aggregate triggers lock the skills before they update them"

_AGGREGATES_MIGRATION = "everyskill_2026_11_25t04_10_00_000000.py"
_DISMISSED_MIGRATION = "everyskill_2026_11_25t07_20_00_000000.py"
_LEAST_PRIVILEGE_MIGRATION = "everyskill_2026_12_07t01_10_00_000000.py"

# The rows a statement changed, as (skill, values, sign): +1 for a row that
# now exists (and counts), -1 for one that no longer does. An UPDATE is both.
CHANGES = {
    "INSERT": "SELECT {columns}, 1 AS sign FROM new_rows WHERE {counted}",
    "DELETE": "SELECT {columns}, -1 AS sign FROM old_rows WHERE {counted}",
    "UPDATE": (
        "SELECT {columns}, 1 AS sign FROM new_rows WHERE {counted}"
        " UNION ALL SELECT {columns}, -1 AS sign FROM old_rows WHERE {counted}"
    ),
}

FEEDBACK = {
    "table": "skill_feedback",
    "columns": "skill_id, feedback_type",
    # Dismissed feedback does not count: dismissing subtracts it.
    "counted": "status <> 'dismissed'",
    "variables": "totals bigint[]; thumbs_up bigint[]; thumbs_down bigint[];",
    "collect": """
        , delta AS (
            SELECT skill_id,
                   sum(sign) AS total,
                   coalesce(sum(sign) FILTER (WHERE feedback_type = 'thumbs_up'), 0) AS up,
                   coalesce(sum(sign) FILTER (WHERE feedback_type = 'thumbs_down'), 0) AS down
              FROM changes
             GROUP BY skill_id
            -- A write that changes no count locks and updates no skill.
            HAVING sum(sign) <> 0
                OR sum(sign) FILTER (WHERE feedback_type = 'thumbs_up') <> 0
                OR sum(sign) FILTER (WHERE feedback_type = 'thumbs_down') <> 0
        )
        SELECT array_agg(skill_id ORDER BY skill_id), array_agg(total ORDER BY skill_id),
               array_agg(up ORDER BY skill_id), array_agg(down ORDER BY skill_id)
          INTO skill_ids, totals, thumbs_up, thumbs_down
          FROM delta;""",
    "apply": """
    UPDATE skills s
       SET total_feedback = s.total_feedback + d.total,
           feedback_thumbs_up = s.feedback_thumbs_up + d.up,
           feedback_thumbs_down = s.feedback_thumbs_down + d.down,
           positive_feedback_pct = round(
               100.0 * (s.feedback_thumbs_up + d.up)
               / NULLIF(s.feedback_thumbs_up + d.up + s.feedback_thumbs_down + d.down, 0))
      FROM unnest(skill_ids, totals, thumbs_up, thumbs_down) AS d (skill_id, total, up, down)
     WHERE s.id = d.skill_id;""",
    "reset": (
        "total_feedback = 0, feedback_thumbs_up = 0, feedback_thumbs_down = 0,"
        " positive_feedback_pct = NULL"
    ),
}

MEASUREMENTS = {
    "table": "token_measurements",
    "columns": "skill_id, estimated_cost_microcents",
    "counted": "true",
    "variables": "costed_counts bigint[]; cost_sums numeric[];",
    "collect": """
        , delta AS (
            SELECT skill_id,
                   coalesce(sum(sign) FILTER (WHERE estimated_cost_microcents IS NOT NULL), 0)
                       AS costed,
                   coalesce(sum(sign * estimated_cost_microcents::bigint), 0) AS cost
              FROM changes
             GROUP BY skill_id
            -- Rows without a cost change no aggregate.
            HAVING sum(sign) FILTER (WHERE estimated_cost_microcents IS NOT NULL) <> 0
                OR sum(sign * estimated_cost_microcents::bigint) <> 0
        )
        SELECT array_agg(skill_id ORDER BY skill_id), array_agg(costed ORDER BY skill_id),
               array_agg(cost ORDER BY skill_id)
          INTO skill_ids, costed_counts, cost_sums
          FROM delta;""",
    "apply": """
    UPDATE skills s
       SET costed_measurements = s.costed_measurements + d.costed,
           measured_cost_microcents = s.measured_cost_microcents + d.cost,
           avg_token_cost_microcents = round(
               (s.measured_cost_microcents + d.cost)::numeric
               / NULLIF(s.costed_measurements + d.costed, 0))
      FROM unnest(skill_ids, costed_counts, cost_sums) AS d (skill_id, costed, cost)
     WHERE s.id = d.skill_id;""",
    "reset": (
        "costed_measurements = 0, measured_cost_microcents = 0,"
        " avg_token_cost_microcents = NULL"
    ),
}

MAINTAIN = """
-- {table}: add the statement's changes to the counters of the skills it
-- touched. Three statements: the deltas, the locks (in id order, a statement
-- of their own), the update (a new snapshot, taken once every lock is held,
-- so it reads and writes the newest version of each skill; see the module
-- docstring for the deadlock an UPDATE joined to its locks ran into).
CREATE OR REPLACE FUNCTION {table}_maintain_aggregates() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    skill_ids text[];
    {variables}
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH changes AS ({insert}){collect}
    ELSIF TG_OP = 'DELETE' THEN
        WITH changes AS ({delete}){collect}
    ELSE
        WITH changes AS ({update}){collect}
    END IF;
    IF skill_ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM FROM skills WHERE id = ANY (skill_ids) ORDER BY id FOR NO KEY UPDATE;{apply}
    RETURN NULL;
END $$;

-- TRUNCATE has no transition table: every skill's counters go back to zero,
-- every skill locked first, in id order, as the function above locks them.
CREATE OR REPLACE FUNCTION {table}_reset_aggregates() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM skills ORDER BY id FOR NO KEY UPDATE;
    UPDATE skills SET {reset};
    RETURN NULL;
END $$;
"""


def _maintain(spec: dict[str, str]) -> str:
    changes = {
        event: sql.format(columns=spec["columns"], counted=spec["counted"])
        for event, sql in CHANGES.items()
    }
    return MAINTAIN.format(
        table=spec["table"],
        variables=spec["variables"],
        collect=spec["collect"],
        apply=spec["apply"],
        reset=spec["reset"],
        insert=changes["INSERT"],
        delete=changes["DELETE"],
        update=changes["UPDATE"],
    )


def _migration(filename: str) -> ModuleType:
    """An earlier migration module, loaded from its file."""
    return earlier_migration(__file__, filename)


def _hardened() -> str:
    """The least-privilege migration's rewrite of every SECURITY DEFINER
    function: CREATE OR REPLACE resets a function's settings, and the
    bodies above name tables without their schema."""
    definer_functions: str = _migration(_LEAST_PRIVILEGE_MIGRATION).DEFINER_FUNCTIONS
    return definer_functions


def forwards_sql() -> str:
    return "\n".join([_maintain(FEEDBACK), _maintain(MEASUREMENTS), _hardened()])


def backwards_sql() -> str:
    # The live-aggregates migration's functions and triggers for both tables
    # (CREATE OR REPLACE: idempotent), then its successor's feedback function,
    # which leaves dismissed feedback out as this one does.
    aggregates = _migration(_AGGREGATES_MIGRATION)
    dismissed = _migration(_DISMISSED_MIGRATION)
    statements = []
    for table, columns, apply, reset in aggregates.MAINTAINED:
        changes = {event: sql.format(columns=columns) for event, sql in aggregates.CHANGES.items()}
        statements.append(
            aggregates.MAINTAIN.format(
                table=table,
                insert=changes["INSERT"],
                delete=changes["DELETE"],
                update=changes["UPDATE"],
                apply=apply,
                reset=reset,
            )
        )
    statements.append(
        dismissed.MAINTAIN_FEEDBACK.format(counted=dismissed.COUNTED, apply=dismissed.APPLY)
    )
    statements.append(_hardened())
    return "\n".join(statements)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
