"""
Reviews in the admin, and dismissed feedback out of the aggregates.

- ``skill_feedback.reviewed_by_admin`` (added by the migration before this
  one) names the admin login of the platform staff member who reviewed the
  feedback in the admin; ``reviewed_by`` stays the tenant's user who reviewed
  it through the application. The application role may not write it: its
  INSERT and UPDATE grants on ``skill_feedback`` now list every other column.
- The review workflow trigger learns two rules:
  - a review by a tenant's user (``reviewed_by`` set to a user in the same
    UPDATE as the status) clears the staff stamp of an earlier review;
  - ``reviewed_by_admin`` is stamped only by an UPDATE that changes the
    status. When two staff members review the same pending item at once,
    the later UPDATE no longer changes the status and is refused, so the
    first review is never overwritten.
- Dismissed feedback no longer counts in its skill's aggregates
  (``total_feedback``, the thumbs counters and ``positive_feedback_pct``): a
  reviewer dismisses feedback that should not stand (spam, a mistake, a
  duplicate), and the catalogue should not show it. The aggregate triggers
  count only rows whose status is not ``dismissed``; dismissing feedback
  subtracts it, as a DELETE would. Existing counters are recounted.

Every statement is idempotent; ``backwards`` restores the previous
behaviour (function bodies equivalent to the earlier migrations'), grants and
counters.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T07:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "reviews in the admin; dismissed feedback not counted"

# The columns of skill_feedback the application role may insert and update:
# all of them but the admin's stamp. The grant lists the columns there are
# now: a migration that adds a column the application writes grants it too.
GRANTS = """
REVOKE INSERT, UPDATE ON skill_feedback FROM everyskill_app;
DO $$
DECLARE
    writable text;
BEGIN
    SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
      INTO writable
      FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = 'skill_feedback'
       AND column_name <> 'reviewed_by_admin';
    EXECUTE format('GRANT INSERT (%s), UPDATE (%s) ON skill_feedback TO everyskill_app',
                   writable, writable);
END $$;
"""

GRANTS_BACKWARDS = """
REVOKE INSERT, UPDATE ON skill_feedback FROM everyskill_app;
GRANT INSERT, UPDATE ON skill_feedback TO everyskill_app;
"""

# The review workflow trigger of the feedback rules migration, with room for
# the rules below: {on_change} runs when the status changes, {otherwise}
# when it does not; the trigger fires on updates of {columns}.
WORKFLOW = """
-- The review workflow, for every writer: pending feedback is accepted or
-- dismissed, accepted feedback is later implemented; no other change of
-- status. A change of status stamps reviewed_at unless the writer set it.
CREATE OR REPLACE FUNCTION skill_feedback_review_workflow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT ((OLD.status = 'pending' AND NEW.status IN ('accepted', 'dismissed'))
                OR (OLD.status = 'accepted' AND NEW.status = 'implemented')) THEN
            RAISE EXCEPTION 'feedback % cannot go from % to %', OLD.id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation', TABLE = 'skill_feedback',
                      COLUMN = 'status', CONSTRAINT = 'skill_feedback_review_workflow',
                      HINT = 'pending becomes accepted or dismissed; accepted becomes implemented';
        END IF;
        IF NEW.reviewed_at IS NOT DISTINCT FROM OLD.reviewed_at THEN
            NEW.reviewed_at := now();
        END IF;{on_change}{otherwise}
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER skill_feedback_review_workflow
    BEFORE UPDATE OF {columns} ON skill_feedback
    FOR EACH ROW EXECUTE FUNCTION skill_feedback_review_workflow();
"""

STAMP_RULES = {
    "on_change": """
        -- Reviewed by a tenant's user: the staff stamp of an earlier review
        -- does not describe this one.
        IF NEW.reviewed_by IS NOT NULL AND NEW.reviewed_by IS DISTINCT FROM OLD.reviewed_by THEN
            NEW.reviewed_by_admin := NULL;
        END IF;""",
    "otherwise": """
    ELSIF NEW.reviewed_by_admin IS NOT NULL
          AND NEW.reviewed_by_admin IS DISTINCT FROM OLD.reviewed_by_admin THEN
        -- A staff stamp without a change of status: someone else reviewed
        -- this feedback since it was read.
        RAISE EXCEPTION 'feedback % was already reviewed (% by %, at %): reload it before reviewing',
                OLD.id, OLD.status,
                coalesce(OLD.reviewed_by_admin, 'user ' || OLD.reviewed_by, 'nobody recorded'),
                OLD.reviewed_at
            USING ERRCODE = 'check_violation', TABLE = 'skill_feedback',
                  COLUMN = 'reviewed_by_admin', CONSTRAINT = 'skill_feedback_review_stamp',
                  HINT = 'reviewed_by_admin is stamped by the review that changes the status';""",
    "columns": "status, reviewed_by_admin",
}
NO_STAMP_RULES = {"on_change": "", "otherwise": "", "columns": "status"}


# The feedback aggregate trigger of the live-aggregates migration, with the
# rows that count chosen by {counted}. Each side of an UPDATE counts on its
# own: a row that becomes dismissed is only on the old side, so it is
# subtracted; a review that accepts it is on both sides and changes nothing.
MAINTAIN_FEEDBACK = """
CREATE OR REPLACE FUNCTION skill_feedback_maintain_aggregates() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH changes AS (
            SELECT skill_id, feedback_type, 1 AS sign FROM new_rows WHERE {counted}
        ){apply}
    ELSIF TG_OP = 'DELETE' THEN
        WITH changes AS (
            SELECT skill_id, feedback_type, -1 AS sign FROM old_rows WHERE {counted}
        ){apply}
    ELSE
        WITH changes AS (
            SELECT skill_id, feedback_type, 1 AS sign FROM new_rows WHERE {counted}
            UNION ALL
            SELECT skill_id, feedback_type, -1 AS sign FROM old_rows WHERE {counted}
        ){apply}
    END IF;
    RETURN NULL;
END $$;
-- CREATE OR REPLACE resets the function's settings: its search_path is fixed
-- again, pg_temp last, so that no temporary table can stand in for skills.
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION skill_feedback_maintain_aggregates()'
                   ' SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;
"""

APPLY = """
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

# The counters of every skill, recounted from the rows that count. SHARE mode
# holds feedback writers off until the migration commits, so no row lands
# between the recount and the function that counts it. The guard on skills
# keeps the maintained columns out of any statement's hands, this one's too,
# so it is off for the recount.
RECOUNT = """
LOCK TABLE skill_feedback IN SHARE MODE;
ALTER TABLE skills DISABLE TRIGGER skills_guard_aggregates;
UPDATE skills s
   SET total_feedback = coalesce(f.total, 0),
       feedback_thumbs_up = coalesce(f.up, 0),
       feedback_thumbs_down = coalesce(f.down, 0),
       positive_feedback_pct = round(100.0 * f.up / NULLIF(f.up + f.down, 0))
  FROM skills k
  LEFT JOIN (SELECT skill_id, count(*) AS total,
                    count(*) FILTER (WHERE feedback_type = 'thumbs_up') AS up,
                    count(*) FILTER (WHERE feedback_type = 'thumbs_down') AS down
               FROM skill_feedback WHERE {counted} GROUP BY skill_id) f ON f.skill_id = k.id
 WHERE s.id = k.id;
ALTER TABLE skills ENABLE TRIGGER skills_guard_aggregates;
"""

COUNTED = "status <> 'dismissed'"
ALL_ROWS = "true"


def _aggregates(counted: str) -> str:
    return MAINTAIN_FEEDBACK.format(counted=counted, apply=APPLY) + RECOUNT.format(
        counted=counted
    )


def forwards_sql() -> str:
    return "\n".join([GRANTS, WORKFLOW.format(**STAMP_RULES), _aggregates(COUNTED)])


def backwards_sql() -> str:
    return "\n".join([_aggregates(ALL_ROWS), WORKFLOW.format(**NO_STAMP_RULES), GRANTS_BACKWARDS])


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
