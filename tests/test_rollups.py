"""
The rollups of the overview, hourly (``usage_hourly``, ``feedback_hourly``)
daily (``usage_daily``, ``usage_daily_models``, ``usage_daily_skills``,
``feedback_daily``) and weekly (``usage_weekly_skills``), maintained by PostgreSQL: after every kind of write, by
any writer, and under concurrent writers, they hold exactly what a recount
of the raw rows gives. The application's roles can neither read nor write
them.
"""

from __future__ import annotations

import asyncio
import importlib
import random
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from everyskill import usage
from everyskill.tenancy import tenant_scope, tenant_transaction
from tests.support import TenantRows, connected, make_tenant

# The rollups recounted from the raw rows, written independently of the
# migration: the hour is the UTC hour of created_at, whatever the session's
# time zone.
USAGE_RECOUNT = """
SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour_utc, tenant_id, skill_id,
       model_name, count(*) AS calls, count(estimated_cost_microcents) AS costed_calls,
       coalesce(sum(estimated_cost_microcents), 0) AS cost_microcents,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
       coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
       coalesce(sum(total_tokens), 0) AS total_tokens
  FROM token_measurements GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
USAGE_STORED = """
SELECT hour_start AT TIME ZONE 'UTC', tenant_id, skill_id, model_name, calls, costed_calls,
       cost_microcents, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
       total_tokens
  FROM usage_hourly ORDER BY 1, 2, 3, 4
"""
FEEDBACK_RECOUNT = """
SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC'), tenant_id, skill_id, feedback_type,
       status, count(*)
  FROM skill_feedback GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
"""
FEEDBACK_STORED = """
SELECT hour_start AT TIME ZONE 'UTC', tenant_id, skill_id, feedback_type, status, items
  FROM feedback_hourly ORDER BY 1, 2, 3, 4, 5
"""

# The daily rollups recounted the same way: the day is the UTC date of
# created_at; the narrow ones sum over the skills or over the models.
USAGE_MEASURES = """count(*), count(estimated_cost_microcents),
       coalesce(sum(estimated_cost_microcents), 0), coalesce(sum(input_tokens), 0),
       coalesce(sum(output_tokens), 0), coalesce(sum(cache_read_tokens), 0),
       coalesce(sum(cache_write_tokens), 0), coalesce(sum(total_tokens), 0)"""
STORED_MEASURES = """calls, costed_calls, cost_microcents, input_tokens, output_tokens,
       cache_read_tokens, cache_write_tokens, total_tokens"""
DAILY = [
    (
        f"SELECT (created_at AT TIME ZONE 'UTC')::date, tenant_id, skill_id, model_name,"
        f" {USAGE_MEASURES} FROM token_measurements GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        f"SELECT day, tenant_id, skill_id, model_name, {STORED_MEASURES}"
        " FROM usage_daily ORDER BY 1, 2, 3, 4",
    ),
    (
        f"SELECT (created_at AT TIME ZONE 'UTC')::date, tenant_id, model_name,"
        f" {USAGE_MEASURES} FROM token_measurements GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        f"SELECT day, tenant_id, model_name, {STORED_MEASURES}"
        " FROM usage_daily_models ORDER BY 1, 2, 3",
    ),
    (
        "SELECT (created_at AT TIME ZONE 'UTC')::date, tenant_id, skill_id, count(*),"
        " count(estimated_cost_microcents), coalesce(sum(estimated_cost_microcents), 0)"
        " FROM token_measurements GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        "SELECT day, tenant_id, skill_id, calls, costed_calls, cost_microcents"
        " FROM usage_daily_skills ORDER BY 1, 2, 3",
    ),
    (
        # The UTC week: the Monday on or before the UTC date (ISO day 1 to 7).
        "SELECT (created_at AT TIME ZONE 'UTC')::date"
        "  - (extract(isodow FROM created_at AT TIME ZONE 'UTC')::int - 1), tenant_id, skill_id,"
        " count(*), count(estimated_cost_microcents), coalesce(sum(estimated_cost_microcents), 0)"
        " FROM token_measurements GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        "SELECT week, tenant_id, skill_id, calls, costed_calls, cost_microcents"
        " FROM usage_weekly_skills ORDER BY 1, 2, 3",
    ),
    (
        "SELECT (created_at AT TIME ZONE 'UTC')::date, tenant_id, skill_id, feedback_type,"
        " status, count(*) FROM skill_feedback GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
        "SELECT day, tenant_id, skill_id, feedback_type, status, items"
        " FROM feedback_daily ORDER BY 1, 2, 3, 4, 5",
    ),
]
ROLLUP_TABLES = [
    "usage_hourly", "feedback_hourly", "usage_daily", "usage_daily_models",
    "usage_daily_skills", "feedback_daily", "usage_weekly_skills",
]

T0 = datetime(
    2026, 3, 28, 21, 30, tzinfo=timezone.utc
)  # the eve of Europe's summer time

MEASURE = (
    "INSERT INTO token_measurements (tenant_id, skill_id, model_name, input_tokens,"
    " output_tokens, cache_read_tokens, cache_write_tokens, total_tokens,"
    " estimated_cost_microcents, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id"
)


async def assert_exact(connection: asyncpg.Connection) -> tuple[int, int]:
    """Every rollup, hourly and daily, equals a recount; returns the row
    counts of the hourly ones."""
    usage_rows = [tuple(row) for row in await connection.fetch(USAGE_STORED)]
    assert usage_rows == [tuple(row) for row in await connection.fetch(USAGE_RECOUNT)]
    feedback_rows = [tuple(row) for row in await connection.fetch(FEEDBACK_STORED)]
    assert feedback_rows == [
        tuple(row) for row in await connection.fetch(FEEDBACK_RECOUNT)
    ]
    for recount, stored in DAILY:
        assert [tuple(row) for row in await connection.fetch(stored)] == [
            tuple(row) for row in await connection.fetch(recount)
        ], stored
    return len(usage_rows), len(feedback_rows)


async def new_skill(owner: asyncpg.Connection, tenant: TenantRows, slug: str) -> str:
    return str(
        await owner.fetchval(
            "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, $2, $2) RETURNING id",
            tenant.tenant_id,
            slug,
        )
    )


async def measure(
    connection: asyncpg.Connection,
    tenant: TenantRows,
    skill: str,
    model: str,
    at: datetime,
    cost: int | None,
    tokens: tuple[int | None, ...] = (100, 20, 5, 3, 128),
) -> str:
    return str(
        await connection.fetchval(
            MEASURE, tenant.tenant_id, skill, model, *tokens, cost, at
        )
    )


async def test_every_kind_of_write_keeps_both_rollups_exact(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection, tenant: TenantRows
) -> None:
    skill = await new_skill(owner, tenant, "rollup-writes")
    other = await new_skill(owner, tenant, "rollup-other")
    await assert_exact(owner)

    # Inserts as the owner, across hours, with and without a cost or tokens.
    first = await measure(owner, tenant, skill, "claude-sonnet-4-5", T0, 1_000)
    await measure(
        owner, tenant, skill, "claude-sonnet-4-5", T0 + timedelta(minutes=20), None
    )
    await measure(
        owner,
        tenant,
        skill,
        "mystery-model",
        T0 + timedelta(hours=3),
        None,
        (None, None, None, None, None),
    )
    stored = await owner.fetchrow(
        "SELECT calls, costed_calls, cost_microcents FROM usage_hourly"
        " WHERE skill_id = $1 AND model_name = 'claude-sonnet-4-5'",
        skill,
    )
    # Two calls in the 21:00 hour, one of them unpriced.
    assert stored is not None and tuple(stored) == (2, 1, 1_000)
    await assert_exact(owner)

    # A batch as the application (everyskill_api in a tenant transaction).
    async with tenant_transaction(app_connection, tenant.tenant_id) as db:
        await db.execute(
            "INSERT INTO token_measurements (tenant_id, skill_id, model_name, total_tokens,"
            " estimated_cost_microcents, created_at)"
            " SELECT $1, $2, 'gpt-4o', n, n * 10, $3::timestamptz + n * interval '7 minutes'"
            "   FROM generate_series(1, 50) AS n",
            tenant.tenant_id,
            skill,
            T0,
        )
    await assert_exact(owner)
    # Through the query API.
    async with tenant_scope(tenant.tenant_id):
        await usage.record_measurement(
            skill_id=skill,
            model_name="claude-sonnet-4-5",
            input_tokens=10,
            output_tokens=5,
        )
    await assert_exact(owner)

    # A backfill: rows of days long past, over a UTC midnight, some unpriced.
    await owner.execute(
        "INSERT INTO token_measurements (tenant_id, skill_id, model_name, input_tokens,"
        " total_tokens, estimated_cost_microcents, created_at)"
        " SELECT $1, $2, (ARRAY['gpt-4o', 'mystery-model'])[n % 2 + 1], n, n,"
        "  CASE WHEN n % 2 = 0 THEN n * 3 END,"
        "  $3::timestamptz - interval '40 days' + n * interval '41 minutes'"
        " FROM generate_series(1, 60) AS n",
        tenant.tenant_id,
        other,
        T0,
    )
    await assert_exact(owner)

    # Updates that move rows between skills, hours, days, tenants and
    # models, and change costs.
    await owner.execute(
        "UPDATE token_measurements SET skill_id = $2 WHERE id = $1", first, other
    )
    await assert_exact(owner)
    moved_to = await make_tenant(owner, "rollup-moved")
    await owner.execute(
        "UPDATE token_measurements SET tenant_id = $3, skill_id = $4,"
        " created_at = created_at - interval '3 days'"
        " WHERE tenant_id = $1 AND skill_id = $2 AND input_tokens % 4 = 0",
        tenant.tenant_id,
        other,
        moved_to.tenant_id,
        moved_to.skill_id,
    )
    assert await owner.fetchval(
        "SELECT sum(calls) FROM usage_daily_skills WHERE skill_id = $1", moved_to.skill_id
    ) > 1
    await assert_exact(owner)
    await owner.execute(
        "UPDATE token_measurements SET created_at = created_at + interval '1 day'"
        " WHERE skill_id = $1 AND model_name = 'gpt-4o' AND total_tokens % 3 = 0",
        skill,
    )
    await assert_exact(owner)
    # Saturday evening to Monday: into the next UTC week.
    await owner.execute(
        "UPDATE token_measurements SET created_at = created_at + interval '2 days'"
        " WHERE skill_id = $1 AND model_name = 'gpt-4o' AND total_tokens % 3 = 1",
        skill,
    )
    assert await owner.fetchval(
        "SELECT calls FROM usage_weekly_skills WHERE skill_id = $1 AND week = $2",
        skill, (T0 + timedelta(days=2)).date(),
    ) > 0
    await assert_exact(owner)
    await owner.execute(
        "UPDATE token_measurements SET model_name = 'gpt-4o-mini', estimated_cost_microcents = NULL"
        " WHERE skill_id = $1 AND total_tokens % 5 = 0",
        skill,
    )
    await assert_exact(owner)
    # An update that changes no measure writes no rollup row (their row
    # versions stay as they were).
    versions = (
        "SELECT array_agg(xmin::text ORDER BY ctid) FROM {} WHERE tenant_id = $1"
    )
    usage_tables = (
        "usage_hourly", "usage_daily", "usage_daily_models", "usage_daily_skills",
        "usage_weekly_skills",
    )
    before = [await owner.fetchval(versions.format(table), tenant.tenant_id) for table in usage_tables]
    await owner.execute(
        "UPDATE token_measurements SET latency_ms = 5 WHERE skill_id = $1", skill
    )
    assert [
        await owner.fetchval(versions.format(table), tenant.tenant_id) for table in usage_tables
    ] == before
    await assert_exact(owner)

    # Deletes, down to nothing: emptied rollup rows go.
    await owner.execute("DELETE FROM token_measurements WHERE id = $1", first)
    # It was the other skill's only call of that model, hour and day.
    for table in ("usage_hourly", "usage_daily"):
        assert not await owner.fetchval(
            f"SELECT count(*) FROM {table} WHERE skill_id = $1"
            " AND model_name = 'claude-sonnet-4-5'",
            other,
        )
    assert not await owner.fetchval(
        "SELECT count(*) FROM usage_daily_skills WHERE skill_id = $1 AND day = $2",
        other,
        T0.date(),
    )
    await owner.execute(
        "DELETE FROM token_measurements WHERE skill_id = $1 AND total_tokens % 2 = 0",
        skill,
    )
    await assert_exact(owner)

    # Feedback: inserts, reviews (accepted, dismissed), a type changed, a move, deletes.
    await owner.executemany(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, created_at,"
        " comment, suggested_content) VALUES ($1, $2, $3, $4, $5, 'It fails',"
        " CASE WHEN $3 = 'suggestion' THEN 'Say more' END)",
        [
            (tenant.tenant_id, skill, kind, sentiment, T0 + timedelta(minutes=25 * n))
            for n, (kind, sentiment) in enumerate(
                [
                    ("thumbs_up", 1),
                    ("thumbs_down", -1),
                    ("suggestion", 0),
                    ("bug_report", -1),
                ]
                * 4
            )
        ],
    )
    await assert_exact(owner)
    await owner.execute(
        "UPDATE skill_feedback SET status = 'dismissed' WHERE skill_id = $1"
        " AND feedback_type = 'thumbs_down'",
        skill,
    )
    await owner.execute(
        "UPDATE skill_feedback SET status = 'accepted' WHERE skill_id = $1"
        " AND feedback_type = 'suggestion'",
        skill,
    )
    await assert_exact(owner)
    pending = await owner.fetchval(
        "SELECT sum(items) FROM feedback_hourly WHERE skill_id = $1 AND status = 'pending'",
        skill,
    )
    assert pending == 8  # 4 thumbs up and 4 bug reports wait
    await owner.execute(
        "UPDATE skill_feedback SET feedback_type = 'thumbs_down', sentiment = -1"
        " WHERE skill_id = $1 AND feedback_type = 'thumbs_up'",
        skill,
    )
    await owner.execute(
        "UPDATE skill_feedback SET skill_id = $2 WHERE skill_id = $1 AND feedback_type = 'bug_report'",
        skill,
        other,
    )
    await assert_exact(owner)
    async with tenant_transaction(app_connection, tenant.tenant_id) as db:
        await db.execute(
            "DELETE FROM skill_feedback WHERE skill_id = $1 AND status = 'dismissed'",
            skill,
        )
    await assert_exact(owner)

    # A skill deleted (by staff) takes its rows with it: the cascade counts.
    await owner.execute("DELETE FROM skills WHERE id = $1", other)
    for table in [table for table in ROLLUP_TABLES if table != "usage_daily_models"]:
        assert not await owner.fetchval(
            f"SELECT count(*) FROM {table} WHERE skill_id = $1", other
        )
    await assert_exact(owner)


async def test_truncate_empties_the_rollups(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    await measure(owner, tenant, tenant.skill_id, "m", T0, 5)
    # In a transaction rolled back: the other tests' rows stay.
    transaction = owner.transaction()
    await transaction.start()
    try:
        assert await owner.fetchval("SELECT count(*) FROM usage_hourly") > 0
        await owner.execute("TRUNCATE token_measurements, skill_feedback")
        assert await assert_exact(owner) == (0, 0)
        # Rows written after the TRUNCATE count again.
        await measure(owner, tenant, tenant.skill_id, "m", T0, 5)
        assert await assert_exact(owner) == (1, 0)
    finally:
        await transaction.rollback()
    await assert_exact(owner)


HOURLY_MIGRATION = "piccolo_migrations.everyskill_2026_12_07t04_10_00_000000"
DAILY_MIGRATION = "piccolo_migrations.everyskill_2026_12_07t04_40_00_000000"
WEEKLY_MIGRATION = "piccolo_migrations.everyskill_2026_12_07t15_00_00_000000"


async def test_the_hourly_migration_recounts_existing_rows(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """forwards on a database with rows (here: rollups emptied and spoiled by
    hand, triggers off) rebuilds both rollups from the rows, and is idempotent."""
    migration = importlib.import_module(HOURLY_MIGRATION)
    daily = importlib.import_module(DAILY_MIGRATION)
    weekly = importlib.import_module(WEEKLY_MIGRATION)
    await measure(owner, tenant, tenant.skill_id, "m", T0, 7)
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("DELETE FROM usage_hourly")
        await owner.execute("UPDATE feedback_hourly SET items = items + 1")
        await owner.execute(migration.forwards_sql())
        await owner.execute(migration.forwards_sql())
        # The migrations that come after put back the functions that
        # maintain their rollups too.
        await owner.execute(daily.forwards_sql())
        await owner.execute(weekly.forwards_sql())
        assert (await assert_exact(owner))[0] > 0
        # backwards (the later migrations', then this one's) removes it all;
        # forwards brings it back, recounted.
        await owner.execute(weekly.backwards_sql())
        await owner.execute(daily.backwards_sql())
        await owner.execute(migration.backwards_sql())
        assert not await owner.fetchval(
            "SELECT to_regclass('usage_hourly') IS NOT NULL"
        )
        await measure(owner, tenant, tenant.skill_id, "m", T0, 9)
        await owner.execute(migration.forwards_sql())
        await owner.execute(daily.forwards_sql())
        await owner.execute(weekly.forwards_sql())
        await assert_exact(owner)
    finally:
        await transaction.rollback()
    await assert_exact(owner)


async def test_the_daily_migration_recounts_existing_rows(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The daily migration's forwards rebuilds the daily rollups from the
    rows (here: emptied and spoiled by hand) and is idempotent; its
    backwards drops them and leaves the hourly ones maintained."""
    migration = importlib.import_module(DAILY_MIGRATION)
    weekly = importlib.import_module(WEEKLY_MIGRATION)
    await measure(owner, tenant, tenant.skill_id, "m", T0, 7)
    await measure(owner, tenant, tenant.skill_id, "m", T0 - timedelta(days=9), None)
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("DELETE FROM usage_daily")
        await owner.execute("UPDATE usage_daily_models SET cost_microcents = cost_microcents + 1")
        await owner.execute("DELETE FROM usage_daily_skills WHERE costed_calls = 0")
        await owner.execute("UPDATE feedback_daily SET items = items + 1")
        await owner.execute(migration.forwards_sql())
        await owner.execute(migration.forwards_sql())
        # The weekly migration, which comes after, puts back its function.
        await owner.execute(weekly.forwards_sql())
        await assert_exact(owner)
        assert await owner.fetchval("SELECT count(*) FROM usage_daily") > 0
        await owner.execute(weekly.backwards_sql())
        await owner.execute(migration.backwards_sql())
        await owner.execute(migration.backwards_sql())
        for table in ("usage_daily", "usage_daily_models", "usage_daily_skills", "feedback_daily"):
            assert not await owner.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        # The hourly rollups are still maintained, by the functions of their migration.
        await measure(owner, tenant, tenant.skill_id, "m", T0, 9)
        await owner.execute("DELETE FROM token_measurements WHERE created_at < $1", T0)
        assert [tuple(row) for row in await owner.fetch(USAGE_STORED)] == [
            tuple(row) for row in await owner.fetch(USAGE_RECOUNT)
        ]
        await owner.execute(migration.forwards_sql())
        await owner.execute(weekly.forwards_sql())
        await assert_exact(owner)
    finally:
        await transaction.rollback()
    await assert_exact(owner)


async def test_the_weekly_migration_recounts_existing_rows(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The weekly migration's forwards rebuilds its rollup from the rows
    (here: spoiled by hand) and is idempotent; its backwards drops it and
    leaves the daily rollups maintained."""
    migration = importlib.import_module(WEEKLY_MIGRATION)
    await measure(owner, tenant, tenant.skill_id, "m", T0, 7)
    await measure(owner, tenant, tenant.skill_id, "m", T0 + timedelta(days=2), None)
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("UPDATE usage_weekly_skills SET calls = calls + 1")
        await owner.execute("DELETE FROM usage_weekly_skills WHERE week = $1", T0.date() - timedelta(days=5))
        await owner.execute(migration.forwards_sql())
        await owner.execute(migration.forwards_sql())
        await assert_exact(owner)
        await owner.execute(migration.backwards_sql())
        await owner.execute(migration.backwards_sql())
        assert not await owner.fetchval("SELECT to_regclass('usage_weekly_skills') IS NOT NULL")
        # The daily rollups are still maintained, by the functions of their migration.
        await measure(owner, tenant, tenant.skill_id, "m", T0 - timedelta(days=8), 3)
        await owner.execute("TRUNCATE token_measurements")
        await measure(owner, tenant, tenant.skill_id, "m", T0, 2)
        for recount, stored in DAILY:
            if "usage_weekly_skills" not in stored:
                assert [tuple(row) for row in await owner.fetch(stored)] == [
                    tuple(row) for row in await owner.fetch(recount)
                ], stored
        await owner.execute(migration.forwards_sql())
        await assert_exact(owner)
    finally:
        await transaction.rollback()
    await assert_exact(owner)


async def test_the_application_can_neither_read_nor_write_the_rollups(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection, tenant: TenantRows
) -> None:
    await measure(owner, tenant, tenant.skill_id, "m", T0, 5)
    statements = [
        statement
        for table in ROLLUP_TABLES
        for statement in (
            f"SELECT count(*) FROM {table}",
            f"DELETE FROM {table}",
            f"TRUNCATE {table}",
            f"UPDATE {table} SET tenant_id = tenant_id",
        )
    ] + [
        "INSERT INTO usage_hourly (hour_start, tenant_id, skill_id, model_name, calls,"
        " costed_calls, cost_microcents, input_tokens, output_tokens, cache_read_tokens,"
        " cache_write_tokens, total_tokens) VALUES (now(), 'x', 'x', 'x', 1, 0, 0, 0, 0, 0, 0, 0)",
        "INSERT INTO usage_daily_skills (day, tenant_id, skill_id, calls, costed_calls,"
        " cost_microcents) VALUES (current_date, 'x', 'x', 1, 0, 0)",
        "INSERT INTO feedback_daily (day, tenant_id, skill_id, feedback_type, status, items)"
        " VALUES (current_date, 'x', 'x', 'thumbs_up', 'pending', 1)",
        "INSERT INTO usage_weekly_skills (week, tenant_id, skill_id, calls, costed_calls,"
        " cost_microcents) VALUES (date_trunc('week', current_date)::date, 'x', 'x', 1, 0, 0)",
    ]
    for statement in statements:
        # Inside its tenant's transaction, as everyskill_app ...
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, tenant.tenant_id) as db:
                await db.execute(statement)
        # ... and as the login itself.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_connection.execute(statement)
    await assert_exact(owner)


ZONES_OF_WRITERS = ("Pacific/Auckland", "UTC", "America/Los_Angeles")


async def test_concurrent_writers_lose_nothing_and_never_deadlock(
    owner: asyncpg.Connection,
    tenant: TenantRows,
    app_url_for_tests: str,
    database_url_for_tests: str,
) -> None:
    """12 writers at once, as the application and as raw SQL, each statement
    a transaction, in sessions of three time zones: batches over the same
    skills, models and hours (on both sides of a UTC week's end) in random
    orders, dismissals, deletes and moves. Nobody deadlocks, and every
    rollup equals a recount afterwards."""
    skills = [await new_skill(owner, tenant, f"rollup-busy-{i}") for i in range(4)]
    models = ["claude-sonnet-4-5", "gpt-4o", "unpriced-model"]

    async def writer(seed: int, url: str, as_app: bool, phase: str) -> None:
        chooser = random.Random(seed)
        async with connected(url) as connection:
            # The buckets are UTC's whatever the session's zone.
            await connection.execute(f"SET TimeZone = '{ZONES_OF_WRITERS[seed % 3]}'")
            for _ in range(12):
                rows = [
                    (
                        chooser.choice(skills),
                        chooser.choice(models),
                        # Saturday evening, or around Monday's midnight (a new UTC week).
                        T0 + timedelta(minutes=chooser.choice([0, 1500]) + chooser.randrange(0, 180)),
                        chooser.choice([None, chooser.randrange(0, 5000)]),
                    )
                    for _ in range(6)
                ]

                statements: list[tuple[str, tuple[object, ...]]] = [
                    (
                        "INSERT INTO token_measurements (tenant_id, skill_id, model_name,"
                        " total_tokens, estimated_cost_microcents, created_at)"
                        " SELECT $1, s, m, 10, c, t FROM unnest($2::text[], $3::text[],"
                        " $4::int[], $5::timestamptz[]) AS b (s, m, c, t)",
                        (
                            tenant.tenant_id,
                            [row[0] for row in rows],
                            [row[1] for row in rows],
                            [row[3] for row in rows],
                            [row[2] for row in rows],
                        ),
                    ),
                    (
                        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type,"
                        " sentiment, created_at) SELECT $1, s, 'thumbs_up', 1, t"
                        " FROM unnest($2::text[], $3::timestamptz[]) AS b (s, t)",
                        (tenant.tenant_id, [row[0] for row in rows], [row[2] for row in rows]),
                    ),
                ]
                if phase == "reviews" and seed == 100:
                    statements.append(
                        (
                            "UPDATE skill_feedback SET status = 'dismissed' WHERE id IN (SELECT id"
                            " FROM skill_feedback WHERE skill_id = ANY($1::text[])"
                            " AND status = 'pending' LIMIT 4 FOR UPDATE SKIP LOCKED)",
                            (skills,),
                        )
                    )
                elif phase == "corrections" and seed == 100:  # by staff only
                    statements += [
                        (
                            "DELETE FROM token_measurements WHERE id IN (SELECT id FROM"
                            " token_measurements WHERE skill_id = ANY($1::text[]) LIMIT 4"
                            " FOR UPDATE SKIP LOCKED)",
                            (skills,),
                        ),
                        (
                            "UPDATE token_measurements SET skill_id = $2, created_at"
                            " = created_at + interval '1 hour' WHERE id IN (SELECT id FROM"
                            " token_measurements WHERE skill_id = ANY($1::text[]) LIMIT 4"
                            " FOR UPDATE SKIP LOCKED)",
                            (skills, chooser.choice(skills)),
                        ),
                    ]
                # Each statement is a transaction of its own: the lock order
                # is kept within a statement (a transaction of several
                # statements touching the same rows in other orders can
                # deadlock on any table).
                for sql, args in chooser.sample(statements, len(statements)):
                    if as_app:
                        async with tenant_transaction(connection, tenant.tenant_id) as db:
                            await db.execute(sql, *args)
                    else:
                        await connection.execute(sql, *args)

    # Dismissals (by one reviewer) in one round, deletes and moves of
    # measurements (by one staff member) in the other, while everyone else
    # inserts: the skills' own aggregate triggers, which these rollups leave
    # as they are, can deadlock when two such corrections meet on the same
    # skills.
    for phase in ("reviews", "corrections"):
        await asyncio.gather(
            *[writer(i, app_url_for_tests, True, phase) for i in range(6)],
            *[writer(100 + i, database_url_for_tests, False, phase) for i in range(6)],
        )
        await assert_exact(owner)
    total = await owner.fetchval(
        "SELECT sum(items) FROM feedback_hourly WHERE skill_id = ANY($1::text[])",
        skills,
    )
    assert total == 2 * 12 * 12 * 6
    dismissed = await owner.fetchval(
        "SELECT sum(items) FROM feedback_hourly WHERE skill_id = ANY($1::text[])"
        " AND status = 'dismissed'",
        skills,
    )
    assert dismissed > 0
