"""
Feedback rules: what each feedback type must carry, the review workflow, and
the indexes that list feedback newest first.

The query API checks the same rules before it writes (``everyskill.feedback``);
the constraints and the trigger below hold them for every other writer too
(the admin, raw SQL, Piccolo queries).

Rows written before these rules existed are first given what can be derived
(a thumb's sentiment, a review time). Each rule is then added NOT VALID, which
checks every new write, and validated against the existing rows; if old rows
break a rule the migration still succeeds, with a WARNING naming the rule and
the statement to run once those rows are fixed.

Every statement is idempotent, and ``backwards`` undoes what ``forwards`` did.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "feedback rules"

# (constraint name, definition, why). A CHECK passes when its expression is
# NULL, hence the coalesce() around text that must be present.
CONSTRAINTS = [
    ("skill_feedback_thumbs_sentiment_check",
     "CHECK (feedback_type NOT IN ('thumbs_up', 'thumbs_down')"
     " OR coalesce(sentiment, 0) = CASE feedback_type WHEN 'thumbs_up' THEN 1 ELSE -1 END)",
     "a thumbs up is positive and a thumbs down negative"),
    ("skill_feedback_suggestion_check",
     "CHECK (feedback_type <> 'suggestion'"
     " OR coalesce(suggested_content, '') <> '' OR coalesce(suggested_diff, '') <> '')",
     "a suggestion carries suggested content or a suggested diff"),
    ("skill_feedback_suggestion_fields_check",
     "CHECK (feedback_type = 'suggestion'"
     " OR (suggested_content IS NULL AND suggested_diff IS NULL))",
     "only a suggestion carries suggested content or a diff"),
    ("skill_feedback_training_example_check",
     "CHECK (feedback_type <> 'training_example'"
     " OR (coalesce(example_input, '') <> '' AND coalesce(expected_output, '') <> ''))",
     "a training example has an input and an expected output"),
    ("skill_feedback_training_example_fields_check",
     "CHECK (feedback_type = 'training_example'"
     " OR (example_input IS NULL AND example_output IS NULL AND expected_output IS NULL))",
     "only a training example carries example input and outputs"),
    ("skill_feedback_bug_report_check",
     "CHECK (feedback_type <> 'bug_report' OR coalesce(comment, '') <> '')",
     "a bug report says what is wrong"),
    ("skill_feedback_review_check",
     "CHECK (status = 'pending' OR reviewed_at IS NOT NULL)",
     "reviewed feedback records when it was reviewed"),
]

# Listing feedback newest first, by skill or for the whole tenant, with
# (created_at, id) as the page cursor: an index scan, never a sort of every
# row the skill has.
INDEXES = [
    ("skill_feedback_skill_id_created_at",
     "skill_feedback (skill_id, created_at DESC, id DESC)"),
    ("skill_feedback_tenant_id_created_at",
     "skill_feedback (tenant_id, created_at DESC, id DESC)"),
]


BACKFILL = """
-- What older rows lack and can be derived: a thumb's sentiment follows its
-- type, and reviewed feedback without a review time takes its creation time.
UPDATE skill_feedback
   SET sentiment = CASE feedback_type WHEN 'thumbs_up' THEN 1 ELSE -1 END
 WHERE feedback_type IN ('thumbs_up', 'thumbs_down')
   AND sentiment IS DISTINCT FROM CASE feedback_type WHEN 'thumbs_up' THEN 1 ELSE -1 END;
UPDATE skill_feedback SET reviewed_at = created_at
 WHERE status <> 'pending' AND reviewed_at IS NULL;
"""

ADD_RULE = """
-- {why}
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'skill_feedback'::regclass
                 AND conname = '{name}') THEN
    ALTER TABLE skill_feedback ADD CONSTRAINT {name} {definition} NOT VALID;
  END IF;
  IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'skill_feedback'::regclass
             AND conname = '{name}' AND NOT convalidated) THEN
    BEGIN
      ALTER TABLE skill_feedback VALIDATE CONSTRAINT {name};
    EXCEPTION WHEN check_violation THEN
      RAISE WARNING 'skill_feedback has rows written before the rule {name} ({why_text}); '
        'new writes are checked. Fix those rows, then run: '
        'ALTER TABLE skill_feedback VALIDATE CONSTRAINT {name};';
    END;
  END IF;
END $$;
"""

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
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER skill_feedback_review_workflow
    BEFORE UPDATE OF status ON skill_feedback
    FOR EACH ROW EXECUTE FUNCTION skill_feedback_review_workflow();
"""


def forwards_sql() -> str:
    statements = [BACKFILL]
    for name, definition, why in CONSTRAINTS:
        statements.append(
            ADD_RULE.format(
                name=name, definition=definition, why=why, why_text=why.replace("'", "''")
            )
        )
    statements.append(WORKFLOW)
    for name, definition in INDEXES:
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {definition};")
    return "\n".join(statements)


def backwards_sql() -> str:
    statements = [f"DROP INDEX IF EXISTS {name};" for name, _ in reversed(INDEXES)]
    statements.append(
        "DROP TRIGGER IF EXISTS skill_feedback_review_workflow ON skill_feedback;"
    )
    statements.append("DROP FUNCTION IF EXISTS skill_feedback_review_workflow();")
    for name, _definition, _why in reversed(CONSTRAINTS):
        statements.append(
            f"ALTER TABLE skill_feedback DROP CONSTRAINT IF EXISTS {name};"
        )
    return "\n".join(statements)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
