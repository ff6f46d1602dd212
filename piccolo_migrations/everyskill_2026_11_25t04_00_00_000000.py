"""
Feedback rules: what each feedback type must carry, and the indexes that list
feedback newest first.

The query API checks the same rules before it writes (``everyskill.feedback``);
these constraints hold them for every other writer too (the admin, raw SQL).
Every statement is idempotent, and ``backwards`` undoes exactly what
``forwards`` did.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from everyskill.migration_sql import run_sql

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


def forwards_sql() -> str:
    statements = []
    for name, definition, why in CONSTRAINTS:
        statements.append(
            f"-- {why}\n"
            "DO $$ BEGIN\n"
            "  IF NOT EXISTS (SELECT FROM pg_constraint\n"
            "                 WHERE conrelid = 'skill_feedback'::regclass"
            f" AND conname = '{name}') THEN\n"
            f"    ALTER TABLE skill_feedback ADD CONSTRAINT {name} {definition};\n"
            "  END IF;\n"
            "END $$;"
        )
    for name, definition in INDEXES:
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {definition};")
    return "\n".join(statements)


def backwards_sql() -> str:
    statements = [f"DROP INDEX IF EXISTS {name};" for name, _ in reversed(INDEXES)]
    for name, _definition, _why in reversed(CONSTRAINTS):
        statements.append(
            f"ALTER TABLE skill_feedback DROP CONSTRAINT IF EXISTS {name};"
        )
    return "\n".join(statements)


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="everyskill", description=DESCRIPTION
    )

    async def run():
        await run_sql(forwards_sql())

    async def run_backwards():
        await run_sql(backwards_sql())

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
