"""
The schema, read back from pg_catalog (not from the Table classes), matches
the plan: every column with its type, nullability and default; every foreign
key with its target and ON DELETE; every index; the tenant_isolation policy.
Also the hardening the plan lacked: per-row keys, precision, CHECKs.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from tables import (
    TABLES,
    BenchmarkStatus,
    FeedbackSource,
    FeedbackStatus,
    FeedbackType,
    Sentiment,
    Tenant,
)
from tests.support import make_tenant

TZ3 = "timestamp(3) with time zone"
TZ = "timestamp with time zone"
UUID_DEFAULT = "(gen_random_uuid())::text"

# (column, type, NOT NULL, default) exactly as the plan lists them, in order.
SEED_COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "skill_feedback": [
        ("id", "text", True, UUID_DEFAULT),
        ("tenant_id", "text", True, None),
        ("skill_id", "text", True, None),
        ("skill_version_id", "text", False, None),
        ("user_id", "text", False, None),
        ("usage_event_id", "text", False, None),
        ("feedback_type", "text", True, None),
        ("sentiment", "integer", False, None),
        ("comment", "text", False, None),
        ("suggested_content", "text", False, None),
        ("suggested_diff", "text", False, None),
        ("example_input", "text", False, None),
        ("example_output", "text", False, None),
        ("expected_output", "text", False, None),
        ("quality_score", "integer", False, None),
        ("status", "text", True, "'pending'::text"),
        ("reviewed_by", "text", False, None),
        ("reviewed_at", TZ, False, None),
        ("review_notes", "text", False, None),
        ("source", "text", True, "'web'::text"),
        ("created_at", TZ3, True, "now()"),
    ],
    "token_measurements": [
        ("id", "text", True, UUID_DEFAULT),
        ("tenant_id", "text", True, None),
        ("skill_id", "text", True, None),
        ("usage_event_id", "text", False, None),
        ("user_id", "text", False, None),
        ("input_tokens", "integer", False, None),
        ("output_tokens", "integer", False, None),
        ("total_tokens", "integer", False, None),
        ("model_name", "text", True, None),
        ("model_provider", "text", True, "'anthropic'::text"),
        ("estimated_cost_microcents", "integer", False, None),
        ("latency_ms", "integer", False, None),
        ("source", "text", True, "'hook'::text"),
        ("created_at", TZ3, True, "now()"),
    ],
    "benchmark_runs": [
        ("id", "text", True, UUID_DEFAULT),
        ("tenant_id", "text", True, None),
        ("skill_id", "text", True, None),
        ("skill_version_id", "text", False, None),
        ("triggered_by", "text", True, None),
        ("status", "text", True, "'pending'::text"),
        ("models", "text[]", True, None),
        ("best_model", "text", False, None),
        ("best_quality_score", "integer", False, None),
        ("cheapest_model", "text", False, None),
        ("cheapest_cost_microcents", "integer", False, None),
        ("started_at", TZ, False, None),
        ("completed_at", TZ, False, None),
        ("created_at", TZ3, True, "now()"),
    ],
    "benchmark_results": [
        ("id", "text", True, UUID_DEFAULT),
        ("tenant_id", "text", True, None),
        ("benchmark_run_id", "text", True, None),
        ("model_name", "text", True, None),
        ("model_provider", "text", True, None),
        ("test_case_index", "integer", True, None),
        ("input_used", "text", False, None),
        ("output_produced", "text", False, None),
        ("expected_output", "text", False, None),
        ("input_tokens", "integer", False, None),
        ("output_tokens", "integer", False, None),
        ("total_tokens", "integer", False, None),
        ("latency_ms", "integer", False, None),
        ("estimated_cost_microcents", "integer", False, None),
        ("quality_score", "integer", False, None),
        ("quality_notes", "text", False, None),
        ("matches_expected", "boolean", False, None),
        ("error_message", "text", False, None),
        ("created_at", TZ3, True, "now()"),
    ],
}

# Columns beyond the plan, added after its columns: prompt-cache token counts
# (each priced at its own rate) and a failed run's error message.
ADDED_COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "skill_feedback": [("reviewed_by_admin", "character varying(100)", False, "NULL::character varying")],
    "token_measurements": [
        ("cache_read_tokens", "integer", False, None),
        ("cache_write_tokens", "integer", False, None),
    ],
    "benchmark_runs": [("error_message", "text", False, None)],
    "benchmark_results": [
        ("cache_read_tokens", "integer", False, None),
        ("cache_write_tokens", "integer", False, None),
    ],
}

SKILL_AGGREGATES = [
    ("average_rating", "integer", False, None),
    ("total_feedback", "integer", True, "0"),
    ("positive_feedback_pct", "integer", False, None),
    ("avg_token_cost_microcents", "integer", False, None),
]

# column -> (referenced table, referenced column, ON DELETE), as the plan says.
SEED_FOREIGN_KEYS: dict[str, dict[str, tuple[str, str, str]]] = {
    "skill_feedback": {
        "tenant_id": ("tenants", "id", "NO ACTION"),
        "skill_id": ("skills", "id", "CASCADE"),
        "skill_version_id": ("skill_versions", "id", "NO ACTION"),
        "user_id": ("users", "id", "NO ACTION"),
        "reviewed_by": ("users", "id", "NO ACTION"),
    },
    "token_measurements": {
        "tenant_id": ("tenants", "id", "NO ACTION"),
        "skill_id": ("skills", "id", "CASCADE"),
        "user_id": ("users", "id", "NO ACTION"),
    },
    "benchmark_runs": {
        "tenant_id": ("tenants", "id", "NO ACTION"),
        "skill_id": ("skills", "id", "CASCADE"),
        "skill_version_id": ("skill_versions", "id", "NO ACTION"),
        "triggered_by": ("users", "id", "NO ACTION"),
    },
    "benchmark_results": {
        "tenant_id": ("tenants", "id", "NO ACTION"),
        "benchmark_run_id": ("benchmark_runs", "id", "CASCADE"),
    },
}

SEED_INDEXES = {
    "skill_feedback": {"skill_id", "user_id", "tenant_id", "feedback_type", "status"},
    "token_measurements": {"skill_id", "model_name", "tenant_id", "created_at"},
    "benchmark_runs": {"skill_id", "tenant_id", "status"},
    "benchmark_results": {"benchmark_run_id", "model_name", "tenant_id"},
}

# Every table but tenants carries tenant_id.
TENANT_TABLES = [table._meta.tablename for table in TABLES if table is not Tenant]

ISOLATION = "(tenant_id = current_setting('app.current_tenant_id'::text, true))"

ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


async def columns_of(owner: asyncpg.Connection, table: str) -> list[tuple[str, str, bool, str | None]]:
    rows = await owner.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attribute a
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        table,
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


@pytest.mark.parametrize("table", sorted(SEED_COLUMNS))
async def test_seed_table_columns(owner: asyncpg.Connection, table: str) -> None:
    """Each of the four tables has the plan's columns, in its order, then ours."""
    assert await columns_of(owner, table) == SEED_COLUMNS[table] + ADDED_COLUMNS[table]


async def test_skills_aggregate_columns(owner: asyncpg.Connection) -> None:
    """skills carries the three aggregates after average_rating, as the plan adds them."""
    columns = await columns_of(owner, "skills")
    names = [name for name, *_ in columns]
    start = names.index("average_rating")
    assert columns[start : start + 4] == SKILL_AGGREGATES


async def test_every_table_has_tenant_id_not_null(owner: asyncpg.Connection) -> None:
    for table in TENANT_TABLES:
        columns = {name: (kind, not_null) for name, kind, not_null, _ in await columns_of(owner, table)}
        assert columns["tenant_id"] == ("text", True), table


@pytest.mark.parametrize("table", sorted(SEED_FOREIGN_KEYS))
async def test_seed_foreign_keys(owner: asyncpg.Connection, table: str) -> None:
    """Each single-column FK of the plan: target and ON DELETE (no cascade unless said)."""
    rows = await owner.fetch(
        """
        SELECT a.attname, k.confrelid::regclass::text, fa.attname, k.confdeltype::text
          FROM pg_constraint k
          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
          JOIN pg_attribute fa ON fa.attrelid = k.confrelid AND fa.attnum = k.confkey[1]
         WHERE k.contype = 'f' AND k.conrelid = $1::regclass
           AND cardinality(k.conkey) = 1
        """,
        table,
    )
    found = {column: (target, target_column, ON_DELETE[action]) for column, target, target_column, action in rows}
    assert found == SEED_FOREIGN_KEYS[table]


@pytest.mark.parametrize("table", sorted(SEED_INDEXES))
async def test_seed_indexes(owner: asyncpg.Connection, table: str) -> None:
    """Every index the plan lists is there, as a plain single-column index."""
    rows = await owner.fetch(
        """
        SELECT a.attname
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = $1::regclass AND i.indnkeyatts = 1
           AND i.indpred IS NULL AND NOT i.indisprimary
        """,
        table,
    )
    assert SEED_INDEXES[table] <= {row[0] for row in rows}


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_isolation_policy_verbatim(owner: asyncpg.Connection, table: str) -> None:
    """The plan's restrictive tenant_isolation policy, plus the permissive grant."""
    rows = await owner.fetch(
        "SELECT policyname, permissive, roles::text[], cmd, qual, with_check"
        " FROM pg_policies WHERE tablename = $1 ORDER BY policyname",
        table,
    )
    policies = {row["policyname"]: dict(row) for row in rows}
    assert set(policies) == {"tenant_access", "tenant_isolation"}
    isolation = policies["tenant_isolation"]
    assert (isolation["permissive"], isolation["roles"], isolation["cmd"]) == (
        "RESTRICTIVE",
        ["public"],
        "ALL",
    )
    assert isolation["qual"] == ISOLATION
    assert isolation["with_check"] == ISOLATION
    access = policies["tenant_access"]
    assert (access["permissive"], access["roles"], access["cmd"]) == (
        "PERMISSIVE",
        ["everyskill_app"],
        "ALL",
    )
    enabled = await owner.fetchval(
        "SELECT relrowsecurity FROM pg_class WHERE oid = $1::regclass", table
    )
    assert enabled


async def test_tenant_isolation_needs_the_permissive_policy(owner: asyncpg.Connection) -> None:
    """Why the permissive policy exists: with the restrictive one alone, the
    application role would see nothing, not even its own tenant's rows."""
    rows = await make_tenant(owner)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with owner.transaction():
            await owner.execute(
                "SELECT set_config('role', 'everyskill_app', true),"
                " set_config('app.current_tenant_id', $1, true)",
                rows.tenant_id,
            )
            assert await owner.fetchval("SELECT count(*) FROM skills") == 1
            await owner.execute("RESET ROLE")
            await owner.execute("DROP POLICY tenant_access ON skills")
            await owner.execute("SET LOCAL ROLE everyskill_app")
            assert await owner.fetchval("SELECT count(*) FROM skills") == 0
            raise Rollback


async def test_ids_and_created_at_are_generated_per_row(owner: asyncpg.Connection) -> None:
    """Raw inserts get a fresh UUID each and a millisecond created_at."""
    ids = []
    for index in range(2):
        row = await owner.fetchrow(
            "INSERT INTO tenants (name, slug) VALUES ($1, $1) RETURNING id, created_at",
            f"raw-{index}-{datetime.datetime.now().timestamp()}",
        )
        assert row is not None
        ids.append(row["id"])
        assert row["created_at"].microsecond % 1000 == 0
    assert ids[0] != ids[1]
    assert all(len(value) == 36 for value in ids)


@pytest.mark.parametrize(
    ("column", "values", "enum"),
    [
        ("feedback_type", [m.value for m in FeedbackType], FeedbackType),
        ("status", [m.value for m in FeedbackStatus], FeedbackStatus),
        ("source", [m.value for m in FeedbackSource], FeedbackSource),
        ("sentiment", [m.value for m in Sentiment], Sentiment),
    ],
)
async def test_feedback_domain_values_match_the_enums(
    owner: asyncpg.Connection, column: str, values: list[object], enum: type
) -> None:
    """The CHECK constraints accept exactly the values of the Python enums."""
    rows = await make_tenant(owner)
    # A row of each type carries what its type needs (see test_feedback_type_rules).
    insert = (
        f"INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, comment,"
        f" reviewed_at, {column}) VALUES ($1, $2, 'bug_report', 'broken', now(), $3)"
        if column != "feedback_type"
        else "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, comment,"
        " suggested_content, example_input, expected_output)"
        " VALUES ($1, $2, $3, CASE $3 WHEN 'thumbs_up' THEN 1 WHEN 'thumbs_down' THEN -1 END,"
        " 'c', CASE $3 WHEN 'suggestion' THEN 's' END,"
        " CASE $3 WHEN 'training_example' THEN 'in' END, CASE $3 WHEN 'training_example' THEN 'out' END)"
    )
    for value in values:
        await owner.execute(insert, rows.tenant_id, rows.skill_id, value)
    bogus = 2 if column == "sentiment" else "bogus"
    with pytest.raises(asyncpg.CheckViolationError):
        await owner.execute(insert, rows.tenant_id, rows.skill_id, bogus)


@pytest.mark.parametrize(
    ("columns", "values", "constraint"),
    [
        ("feedback_type, sentiment", "'thumbs_up', -1", "skill_feedback_thumbs_sentiment_check"),
        ("feedback_type", "'thumbs_down'", "skill_feedback_thumbs_sentiment_check"),
        ("feedback_type", "'suggestion'", "skill_feedback_suggestion_check"),
        ("feedback_type, suggested_diff", "'suggestion', ''", "skill_feedback_suggestion_check"),
        ("feedback_type, comment, suggested_diff", "'bug_report', 'c', 'd'",
         "skill_feedback_suggestion_fields_check"),
        ("feedback_type, example_input", "'training_example', 'in'",
         "skill_feedback_training_example_check"),
        ("feedback_type, sentiment, expected_output", "'thumbs_up', 1, 'out'",
         "skill_feedback_training_example_fields_check"),
        ("feedback_type, comment", "'bug_report', ''", "skill_feedback_bug_report_check"),
        ("feedback_type, sentiment, status", "'thumbs_up', 1, 'accepted'",
         "skill_feedback_review_check"),
    ],
)
async def test_feedback_type_rules(
    owner: asyncpg.Connection, columns: str, values: str, constraint: str
) -> None:
    """Every writer, not only the query API, gives each type what it needs."""
    rows = await make_tenant(owner)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await owner.execute(
            f"INSERT INTO skill_feedback (tenant_id, skill_id, {columns})"
            f" VALUES ($1, $2, {values})",
            rows.tenant_id,
            rows.skill_id,
        )
    assert refused.value.constraint_name == constraint


async def test_benchmark_statuses_match_the_enum(owner: asyncpg.Connection) -> None:
    """Each status of the enum is reachable through the life cycle; others are refused."""
    rows = await make_tenant(owner)
    seen = {await owner.fetchval("SELECT status FROM benchmark_runs WHERE id = $1", rows.run_id)}
    seen.add(
        await owner.fetchval(
            "UPDATE benchmark_runs SET status = 'completed' WHERE id = $1 RETURNING status",
            rows.run_id,
        )
    )
    other = await owner.fetchrow(
        "INSERT INTO benchmark_runs (tenant_id, skill_id, triggered_by, models)"
        " VALUES ($1, $2, $3, ARRAY['gpt-4o']) RETURNING id, status",
        rows.tenant_id,
        rows.skill_id,
        rows.user_id,
    )
    assert other is not None
    seen.add(other["status"])
    seen.add(
        await owner.fetchval(
            "UPDATE benchmark_runs SET status = 'failed', error_message = 'no quota'"
            " WHERE id = $1 RETURNING status",
            other["id"],
        )
    )
    assert seen == {status.value for status in BenchmarkStatus}
    with pytest.raises(asyncpg.CheckViolationError, match="check constraint"):
        async with without_lifecycle(owner):
            await owner.execute("UPDATE benchmark_runs SET status = 'done' WHERE id = $1", rows.run_id)


@asynccontextmanager
async def without_lifecycle(owner: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction, rolled back, in which the run life-cycle trigger is off:
    what the CHECK constraints behind it refuse on their own."""
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("ALTER TABLE benchmark_runs DISABLE TRIGGER benchmark_runs_lifecycle")
        yield
    finally:
        await transaction.rollback()


@pytest.mark.parametrize(
    ("statement", "value"),
    [
        ("UPDATE skill_feedback SET quality_score = $2 WHERE id = $1", 0),
        ("UPDATE skill_feedback SET quality_score = $2 WHERE id = $1", 11),
        ("UPDATE benchmark_results SET quality_score = $2 WHERE id = $1", -1),
        ("UPDATE benchmark_results SET quality_score = $2 WHERE id = $1", 101),
        ("UPDATE token_measurements SET input_tokens = $2 WHERE id = $1", -1),
        ("UPDATE token_measurements SET output_tokens = $2 WHERE id = $1", -1),
        ("UPDATE token_measurements SET total_tokens = $2 WHERE id = $1", -1),
        ("UPDATE token_measurements SET estimated_cost_microcents = $2 WHERE id = $1", -1),
        ("UPDATE token_measurements SET latency_ms = $2 WHERE id = $1", -5),
        ("UPDATE benchmark_results SET latency_ms = $2 WHERE id = $1", -5),
        ("UPDATE benchmark_results SET estimated_cost_microcents = $2 WHERE id = $1", -1),
        ("UPDATE benchmark_runs SET best_quality_score = $2 WHERE id = $1", 101),
        ("UPDATE benchmark_runs SET cheapest_cost_microcents = $2 WHERE id = $1", -1),
    ],
)
async def test_ranges_and_non_negative_values(owner: asyncpg.Connection, statement: str, value: int) -> None:
    """Scores out of range and negative tokens, costs or latencies are refused."""
    rows = await make_tenant(owner)
    table = statement.split()[1]
    row_id = {
        "skill_feedback": rows.feedback_id,
        "benchmark_results": rows.result_id,
        "token_measurements": rows.measurement_id,
        "benchmark_runs": rows.run_id,
    }[table]
    with pytest.raises(asyncpg.CheckViolationError):
        # The life cycle keeps a run's picks out of plain UPDATEs.
        async with without_lifecycle(owner):
            await owner.execute(statement, row_id, value)


async def test_required_columns_have_no_silent_default(owner: asyncpg.Connection) -> None:
    """Leaving out a required column is an error, not an empty string."""
    rows = await make_tenant(owner)
    with pytest.raises(asyncpg.NotNullViolationError):
        await owner.execute(
            "INSERT INTO skill_feedback (tenant_id, skill_id) VALUES ($1, $2)",
            rows.tenant_id,
            rows.skill_id,
        )
    with pytest.raises(asyncpg.NotNullViolationError):
        await owner.execute(
            "INSERT INTO benchmark_runs (tenant_id, skill_id, triggered_by) VALUES ($1, $2, $3)",
            rows.tenant_id,
            rows.skill_id,
            rows.user_id,
        )


async def test_deleting_a_skill_cascades_to_its_rows(owner: asyncpg.Connection) -> None:
    """Feedback, measurements, runs and results go with their skill, even when
    feedback and runs name one of the skill's versions."""
    rows = await make_tenant(owner)
    await owner.execute(
        "UPDATE benchmark_runs SET skill_version_id = $1 WHERE id = $2",
        rows.version_id,
        rows.run_id,
    )
    await owner.execute("DELETE FROM skills WHERE id = $1", rows.skill_id)
    for table in ["skill_feedback", "token_measurements", "benchmark_runs", "skill_versions"]:
        count = await owner.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", rows.tenant_id)
        assert count == 0, table
    assert await owner.fetchval(
        "SELECT count(*) FROM benchmark_results WHERE tenant_id = $1", rows.tenant_id
    ) == 0


async def test_deleting_a_user_with_feedback_is_refused(owner: asyncpg.Connection) -> None:
    """The plan gives users' foreign keys no cascade: their rows are not lost."""
    rows = await make_tenant(owner)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await owner.execute("DELETE FROM users WHERE id = $1", rows.user_id)


async def test_review_workflow_holds_for_every_writer(owner: asyncpg.Connection) -> None:
    """Even the owner cannot move feedback backwards or skip a step; a change
    of status stamps reviewed_at."""
    rows = await make_tenant(owner)
    update = "UPDATE skill_feedback SET status = $2 WHERE id = $1"
    with pytest.raises(asyncpg.CheckViolationError, match="cannot go from pending to implemented"):
        await owner.execute(update, rows.feedback_id, "implemented")
    await owner.execute(update, rows.feedback_id, "accepted")
    stamped = await owner.fetchval("SELECT reviewed_at FROM skill_feedback WHERE id = $1", rows.feedback_id)
    assert stamped is not None
    for backwards in ["pending", "dismissed"]:
        with pytest.raises(asyncpg.CheckViolationError, match=f"from accepted to {backwards}"):
            await owner.execute(update, rows.feedback_id, backwards)
    await owner.execute(update, rows.feedback_id, "implemented")
    with pytest.raises(asyncpg.CheckViolationError):
        await owner.execute(update, rows.feedback_id, "accepted")
