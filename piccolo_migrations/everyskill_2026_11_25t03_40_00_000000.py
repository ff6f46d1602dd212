"""
Keys, defaults and CHECK constraints that Piccolo cannot declare.

Runs after the table migration. Every statement is idempotent (re-running the
migration changes nothing) and ``backwards`` undoes exactly what ``forwards``
did. The definitions are written out here, not imported from ``tables.py``, so
that this migration means the same thing forever.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T03:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "keys, defaults and checks"

TABLES = [
    "tenants",
    "users",
    "skills",
    "skill_versions",
    "skill_feedback",
    "token_measurements",
    "benchmark_runs",
    "benchmark_results",
]

# Timestamps stamped by the database, with millisecond precision.
TIMESTAMPS = [(table, "created_at") for table in TABLES] + [("skills", "updated_at")]

# Columns that are NOT NULL without a default in the plan. Piccolo gave them a
# placeholder default ('' or 0 or '{}'); dropping it makes a missing value an
# error instead of a silent empty string. Foreign-key columns already have
# none.
NO_DEFAULT = [
    ("tenants", "name"),
    ("tenants", "slug"),
    ("users", "email"),
    ("users", "name"),
    ("skills", "slug"),
    ("skills", "name"),
    ("skill_versions", "version"),
    ("skill_versions", "content"),
    ("skill_feedback", "feedback_type"),
    ("token_measurements", "model_name"),
    ("benchmark_runs", "models"),
    ("benchmark_results", "model_name"),
    ("benchmark_results", "model_provider"),
    ("benchmark_results", "test_case_index"),
]
# What Piccolo had set, restored by backwards.
PICCOLO_DEFAULTS = {"version": "0", "test_case_index": "0", "models": "'{}'"}

# (table, constraint name, definition, why). Added in this order, dropped in
# the reverse order.
CONSTRAINTS = [
    # -- Tenant-matching keys ------------------------------------------------
    # PostgreSQL's foreign-key checks bypass row-level security, so a plain
    # `skill_id REFERENCES skills (id)` would let tenant A attach a row to
    # tenant B's skill. Each child therefore also references its parent by
    # (tenant_id, id): the parent must belong to the child's own tenant. These
    # are also the keys a database distributed by tenant_id (Citus) needs. The
    # UNIQUE (tenant_id, id) keys are what the composite references point at.
    ("users", "users_tenant_id_id_key", "UNIQUE (tenant_id, id)",
     "target of tenant-matching references to users"),
    ("skills", "skills_tenant_id_id_key", "UNIQUE (tenant_id, id)",
     "target of tenant-matching references to skills"),
    ("skill_versions", "skill_versions_tenant_id_skill_id_id_key",
     "UNIQUE (tenant_id, skill_id, id)",
     "target of references that name a version of a given skill"),
    ("benchmark_runs", "benchmark_runs_tenant_id_id_key", "UNIQUE (tenant_id, id)",
     "target of tenant-matching references to benchmark runs"),
    ("skills", "skills_author_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, author_id) REFERENCES users (tenant_id, id)",
     "a skill's author is a user of the same tenant"),
    ("skill_versions", "skill_versions_skill_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, skill_id) REFERENCES skills (tenant_id, id) ON DELETE CASCADE",
     "a version belongs to a skill of the same tenant"),
    ("skill_versions", "skill_versions_author_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, author_id) REFERENCES users (tenant_id, id)",
     "a version's author is a user of the same tenant"),
    ("skill_feedback", "skill_feedback_skill_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, skill_id) REFERENCES skills (tenant_id, id) ON DELETE CASCADE",
     "feedback is on a skill of its own tenant"),
    ("skill_feedback", "skill_feedback_skill_version_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, skill_id, skill_version_id) "
     "REFERENCES skill_versions (tenant_id, skill_id, id)",
     "the version named is a version of the same skill, same tenant"),
    ("skill_feedback", "skill_feedback_user_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)",
     "the giver is a user of the same tenant"),
    ("skill_feedback", "skill_feedback_reviewed_by_tenant_fkey",
     "FOREIGN KEY (tenant_id, reviewed_by) REFERENCES users (tenant_id, id)",
     "the reviewer is a user of the same tenant"),
    ("token_measurements", "token_measurements_skill_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, skill_id) REFERENCES skills (tenant_id, id) ON DELETE CASCADE",
     "a measurement is of a skill of its own tenant"),
    ("token_measurements", "token_measurements_user_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)",
     "the user measured is of the same tenant"),
    ("benchmark_runs", "benchmark_runs_skill_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, skill_id) REFERENCES skills (tenant_id, id) ON DELETE CASCADE",
     "a run benchmarks a skill of its own tenant"),
    ("benchmark_runs", "benchmark_runs_skill_version_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, skill_id, skill_version_id) "
     "REFERENCES skill_versions (tenant_id, skill_id, id)",
     "the version benchmarked is a version of the same skill, same tenant"),
    ("benchmark_runs", "benchmark_runs_triggered_by_tenant_fkey",
     "FOREIGN KEY (tenant_id, triggered_by) REFERENCES users (tenant_id, id)",
     "the user who triggered it is of the same tenant"),
    ("benchmark_results", "benchmark_results_benchmark_run_id_tenant_fkey",
     "FOREIGN KEY (tenant_id, benchmark_run_id) "
     "REFERENCES benchmark_runs (tenant_id, id) ON DELETE CASCADE",
     "a result belongs to a run of its own tenant"),
    # -- Uniqueness the catalogue needs -------------------------------------
    ("tenants", "tenants_id_check", "CHECK (id <> '')",
     "an empty tenant id could match an empty app.current_tenant_id"),
    ("users", "users_tenant_id_email_key", "UNIQUE (tenant_id, email)",
     "one account per email address within a tenant"),
    ("skills", "skills_tenant_id_slug_key", "UNIQUE (tenant_id, slug)",
     "a skill's slug names it within its tenant"),
    ("skill_versions", "skill_versions_skill_id_version_key", "UNIQUE (skill_id, version)",
     "version numbers are unique per skill"),
    # -- Domain values -------------------------------------------------------
    ("tenants", "tenants_slug_check", "CHECK (slug <> '' AND name <> '')",
     "a tenant has a name and a slug"),
    ("users", "users_email_check", "CHECK (email <> '')", "a user has an email"),
    ("skills", "skills_slug_check", "CHECK (slug <> '' AND name <> '')",
     "a skill has a name and a slug"),
    ("skills", "skills_total_feedback_check", "CHECK (total_feedback >= 0)",
     "a count"),
    ("skills", "skills_positive_feedback_pct_check",
     "CHECK (positive_feedback_pct BETWEEN 0 AND 100)", "a percentage"),
    ("skills", "skills_avg_token_cost_microcents_check",
     "CHECK (avg_token_cost_microcents >= 0)", "a cost"),
    ("skill_versions", "skill_versions_version_check", "CHECK (version >= 1)",
     "versions count from 1"),
    ("skill_feedback", "skill_feedback_feedback_type_check",
     "CHECK (feedback_type IN "
     "('thumbs_up', 'thumbs_down', 'suggestion', 'training_example', 'bug_report'))",
     "the five feedback types"),
    ("skill_feedback", "skill_feedback_sentiment_check", "CHECK (sentiment IN (-1, 0, 1))",
     "negative, neutral or positive"),
    ("skill_feedback", "skill_feedback_quality_score_check",
     "CHECK (quality_score BETWEEN 1 AND 10)", "feedback quality is 1-10"),
    ("skill_feedback", "skill_feedback_status_check",
     "CHECK (status IN ('pending', 'accepted', 'dismissed', 'implemented'))",
     "the review workflow's states"),
    ("skill_feedback", "skill_feedback_source_check",
     "CHECK (source IN ('web', 'mcp', 'hook', 'api'))", "where feedback comes from"),
    ("token_measurements", "token_measurements_tokens_check",
     "CHECK (input_tokens >= 0 AND output_tokens >= 0 AND total_tokens >= 0)",
     "token counts are not negative"),
    ("token_measurements", "token_measurements_estimated_cost_microcents_check",
     "CHECK (estimated_cost_microcents >= 0)", "costs are not negative"),
    ("token_measurements", "token_measurements_latency_ms_check",
     "CHECK (latency_ms >= 0)", "latencies are not negative"),
    ("token_measurements", "token_measurements_model_check",
     "CHECK (model_name <> '' AND model_provider <> '' AND source <> '')",
     "a measurement names its model, provider and source"),
    ("benchmark_runs", "benchmark_runs_status_check",
     "CHECK (status IN ('pending', 'running', 'completed', 'failed'))",
     "a run's life cycle"),
    ("benchmark_runs", "benchmark_runs_models_check",
     "CHECK (cardinality(models) >= 1 AND array_position(models, NULL) IS NULL)",
     "a run compares at least one model, and names each"),
    ("benchmark_runs", "benchmark_runs_best_quality_score_check",
     "CHECK (best_quality_score BETWEEN 0 AND 100)", "result quality is 0-100"),
    ("benchmark_runs", "benchmark_runs_cheapest_cost_microcents_check",
     "CHECK (cheapest_cost_microcents >= 0)", "costs are not negative"),
    ("benchmark_results", "benchmark_results_model_check",
     "CHECK (model_name <> '' AND model_provider <> '')",
     "a result names its model and provider"),
    ("benchmark_results", "benchmark_results_test_case_index_check",
     "CHECK (test_case_index >= 0)", "test cases count from 0"),
    ("benchmark_results", "benchmark_results_tokens_check",
     "CHECK (input_tokens >= 0 AND output_tokens >= 0 AND total_tokens >= 0)",
     "token counts are not negative"),
    ("benchmark_results", "benchmark_results_estimated_cost_microcents_check",
     "CHECK (estimated_cost_microcents >= 0)", "costs are not negative"),
    ("benchmark_results", "benchmark_results_latency_ms_check",
     "CHECK (latency_ms >= 0)", "latencies are not negative"),
    ("benchmark_results", "benchmark_results_quality_score_check",
     "CHECK (quality_score BETWEEN 0 AND 100)", "result quality is 0-100"),
]

# Indexes on foreign-key columns the plan does not index, so that deleting a
# user or a version does not scan the big tables. Partial where the column is
# nullable: most rows have no value there.
INDEXES = [
    ("skills_author_id", "skills (author_id) WHERE author_id IS NOT NULL"),
    ("skill_versions_author_id",
     "skill_versions (author_id) WHERE author_id IS NOT NULL"),
    ("skill_feedback_skill_version_id",
     "skill_feedback (skill_version_id) WHERE skill_version_id IS NOT NULL"),
    ("skill_feedback_reviewed_by",
     "skill_feedback (reviewed_by) WHERE reviewed_by IS NOT NULL"),
    ("token_measurements_user_id",
     "token_measurements (user_id) WHERE user_id IS NOT NULL"),
    ("benchmark_runs_skill_version_id",
     "benchmark_runs (skill_version_id) WHERE skill_version_id IS NOT NULL"),
    ("benchmark_runs_triggered_by", "benchmark_runs (triggered_by)"),
]


def forwards_sql() -> str:
    statements = []

    # Primary keys: a fresh UUID for every row, generated by the database.
    # Piccolo evaluated the Python default once and froze that one UUID into
    # each DEFAULT; a second raw INSERT would have collided with the first.
    for table in TABLES:
        statements.append(
            f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;"
        )
    for table, column in TIMESTAMPS:
        statements.append(
            f"ALTER TABLE {table} ALTER COLUMN {column} TYPE TIMESTAMPTZ(3),"
            f" ALTER COLUMN {column} SET DEFAULT now();"
        )

    for table, column in NO_DEFAULT:
        statements.append(f"ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT;")

    for table, name, definition, why in CONSTRAINTS:
        statements.append(
            f"-- {why}\n"
            "DO $$ BEGIN\n"
            "  IF NOT EXISTS (SELECT FROM pg_constraint\n"
            f"                 WHERE conrelid = '{table}'::regclass AND conname = '{name}') THEN\n"
            f"    ALTER TABLE {table} ADD CONSTRAINT {name} {definition};\n"
            "  END IF;\n"
            "END $$;"
        )

    for name, definition in INDEXES:
        statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {definition};")

    # skills.updated_at follows edits of the catalogue entry, not the
    # aggregate columns that PostgreSQL maintains on every feedback.
    statements.append(
        """
CREATE OR REPLACE FUNCTION skills_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.slug, NEW.name, NEW.description, NEW.author_id)
       IS DISTINCT FROM (OLD.slug, OLD.name, OLD.description, OLD.author_id) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER skills_touch_updated_at
    BEFORE UPDATE ON skills
    FOR EACH ROW EXECUTE FUNCTION skills_touch_updated_at();
"""
    )
    return "\n".join(statements)


def backwards_sql() -> str:
    statements = [
        "DROP TRIGGER IF EXISTS skills_touch_updated_at ON skills;",
        "DROP FUNCTION IF EXISTS skills_touch_updated_at();",
    ]
    for name, _definition in reversed(INDEXES):
        statements.append(f"DROP INDEX IF EXISTS {name};")
    for table, name, _definition, _why in reversed(CONSTRAINTS):
        statements.append(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name};")
    for table, column in NO_DEFAULT:
        default = PICCOLO_DEFAULTS.get(column, "''")
        statements.append(
            f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT {default};"
        )
    for table, column in TIMESTAMPS:
        statements.append(
            f"ALTER TABLE {table} ALTER COLUMN {column} TYPE TIMESTAMPTZ,"
            f" ALTER COLUMN {column} SET DEFAULT current_timestamp;"
        )
    # The primary keys keep a database-generated default: Piccolo's frozen
    # UUID is not worth restoring, and the tables are dropped next anyway.
    return "\n".join(statements)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
