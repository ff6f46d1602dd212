"""
The skills' live aggregates (total_feedback, positive_feedback_pct,
avg_token_cost_microcents), maintained by PostgreSQL: exact after every
committed write by any writer, compared each time with a recount from the
rows themselves. Dismissed feedback does not count.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from everyskill import feedback
from everyskill.tenancy import tenant_scope, tenant_transaction
from tests.support import TenantRows, connected

# The aggregates, recounted from scratch; the triggers must always agree.
RECOUNT = """
SELECT count(f.*) AS total_feedback,
       round(100.0 * count(*) FILTER (WHERE f.feedback_type = 'thumbs_up')
             / NULLIF(count(*) FILTER (WHERE f.feedback_type IN ('thumbs_up', 'thumbs_down')), 0))::int
           AS positive_feedback_pct,
       (SELECT round(avg(m.estimated_cost_microcents))::int
          FROM token_measurements m WHERE m.skill_id = s.id) AS avg_token_cost_microcents
  FROM skills s LEFT JOIN skill_feedback f ON f.skill_id = s.id AND f.status <> 'dismissed'
 WHERE s.id = $1
 GROUP BY s.id
"""
STORED = """
SELECT total_feedback, positive_feedback_pct, avg_token_cost_microcents
  FROM skills WHERE id = $1
"""


async def aggregates(owner: asyncpg.Connection, skill_id: str) -> tuple[object, ...]:
    row = await owner.fetchrow(STORED, skill_id)
    assert row is not None
    return tuple(row)


async def assert_exact(owner: asyncpg.Connection, skill_id: str) -> tuple[object, ...]:
    stored = await aggregates(owner, skill_id)
    recount = await owner.fetchrow(RECOUNT, skill_id)
    assert recount is not None
    assert stored == tuple(recount), f"stored {stored} != recount {tuple(recount)}"
    return stored


async def new_skill(owner: asyncpg.Connection, tenant: TenantRows, slug: str) -> str:
    return str(
        await owner.fetchval(
            "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, $2, $2) RETURNING id",
            tenant.tenant_id,
            slug,
        )
    )


async def thumbs(owner: asyncpg.Connection, tenant: TenantRows, skill_id: str, up: int, down: int) -> None:
    await owner.executemany(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment) VALUES ($1, $2, $3, $4)",
        [(tenant.tenant_id, skill_id, "thumbs_up", 1)] * up
        + [(tenant.tenant_id, skill_id, "thumbs_down", -1)] * down,
    )


async def test_a_new_skill_starts_empty(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    """Whatever an INSERT says, a new skill has no feedback and no cost yet."""
    skill = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name, total_feedback, positive_feedback_pct,"
        " avg_token_cost_microcents) VALUES ($1, 'fresh', 'Fresh', 42, 99, 7) RETURNING id",
        tenant.tenant_id,
    )
    assert await aggregates(owner, skill) == (0, None, None)


async def test_feedback_through_the_api(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    skill = await new_skill(owner, tenant, "api")
    async with tenant_scope(tenant.tenant_id):
        for kind in ["thumbs_up", "thumbs_up", "thumbs_down"]:
            await feedback.record_feedback(skill_id=skill, feedback_type=kind)
        await feedback.record_feedback(skill_id=skill, feedback_type="bug_report", comment="x")
    assert await assert_exact(owner, skill) == (4, 67, None)


async def test_every_kind_of_write_by_any_writer(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    skill = await new_skill(owner, tenant, "writes")
    other = await new_skill(owner, tenant, "other")
    await thumbs(owner, tenant, skill, up=3, down=1)
    assert await assert_exact(owner, skill) == (4, 75, None)

    # An UPDATE that changes a type.
    await owner.execute(
        "UPDATE skill_feedback SET feedback_type = 'thumbs_down', sentiment = -1"
        " WHERE id = (SELECT id FROM skill_feedback WHERE skill_id = $1"
        "             AND feedback_type = 'thumbs_up' LIMIT 1)",
        skill,
    )
    assert await assert_exact(owner, skill) == (4, 50, None)

    # An UPDATE that moves feedback to another skill.
    await owner.execute(
        "UPDATE skill_feedback SET skill_id = $2 WHERE id = (SELECT id FROM skill_feedback"
        " WHERE skill_id = $1 AND feedback_type = 'thumbs_down' LIMIT 1)",
        skill,
        other,
    )
    assert await assert_exact(owner, skill) == (3, 67, None)
    assert await assert_exact(owner, other) == (1, 0, None)

    # Accepting changes no aggregate.
    await owner.execute(
        "UPDATE skill_feedback SET status = 'accepted', reviewed_at = now() WHERE skill_id = $1", skill
    )
    assert await assert_exact(owner, skill) == (3, 67, None)

    # Dismissing takes the feedback out of the counts; so does deleting it.
    await owner.execute(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
        " VALUES ($1, $2, 'thumbs_down', -1), ($1, $2, 'thumbs_down', -1)",
        tenant.tenant_id,
        skill,
    )
    assert await assert_exact(owner, skill) == (5, 40, None)
    await owner.execute(
        "UPDATE skill_feedback SET status = 'dismissed'"
        " WHERE skill_id = $1 AND status = 'pending'",
        skill,
    )
    assert await assert_exact(owner, skill) == (3, 67, None)
    # Moving or retyping dismissed feedback changes nothing; deleting it neither.
    await owner.execute(
        "UPDATE skill_feedback SET skill_id = $2, feedback_type = 'thumbs_up', sentiment = 1"
        " WHERE skill_id = $1 AND status = 'dismissed'",
        skill,
        other,
    )
    assert await assert_exact(owner, skill) == (3, 67, None)
    assert await assert_exact(owner, other) == (1, 0, None)
    await owner.execute("DELETE FROM skill_feedback WHERE status = 'dismissed' AND skill_id = $1", other)
    assert await assert_exact(owner, other) == (1, 0, None)

    # Deletes, down to no thumbs at all.
    await owner.execute("DELETE FROM skill_feedback WHERE skill_id = $1 AND feedback_type = 'thumbs_down'", skill)
    assert await assert_exact(owner, skill) == (2, 100, None)
    await owner.execute("DELETE FROM skill_feedback WHERE skill_id = $1", skill)
    assert await assert_exact(owner, skill) == (0, None, None)

    # The application role, through row-level security.
    async with tenant_transaction(owner, tenant.tenant_id) as db:
        await db.execute(
            "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
            " VALUES ($1, $2, 'thumbs_down', -1)",
            tenant.tenant_id,
            skill,
        )
        await db.execute("DELETE FROM skill_feedback WHERE skill_id = $1", other)
    assert await assert_exact(owner, skill) == (1, 0, None)
    assert await assert_exact(owner, other) == (0, None, None)


async def test_token_costs(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    skill = await new_skill(owner, tenant, "costs")
    insert = (
        "INSERT INTO token_measurements (tenant_id, skill_id, model_name, estimated_cost_microcents)"
        " VALUES ($1, $2, 'claude-sonnet-4-5', $3)"
    )
    await owner.executemany(insert, [(tenant.tenant_id, skill, cost) for cost in [100, 201, None]])
    assert await assert_exact(owner, skill) == (0, None, 151)  # NULL costs are not zeros
    await owner.execute(
        "UPDATE token_measurements SET estimated_cost_microcents = 400"
        " WHERE skill_id = $1 AND estimated_cost_microcents IS NULL",
        skill,
    )
    assert await assert_exact(owner, skill) == (0, None, 234)
    await owner.execute("DELETE FROM token_measurements WHERE skill_id = $1 AND estimated_cost_microcents < 300", skill)
    assert await assert_exact(owner, skill) == (0, None, 400)
    await owner.execute("UPDATE token_measurements SET estimated_cost_microcents = NULL WHERE skill_id = $1", skill)
    assert await assert_exact(owner, skill) == (0, None, None)


async def test_big_costs_are_summed_without_overflow(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    skill = await new_skill(owner, tenant, "big")
    biggest = 2**31 - 1
    await owner.executemany(
        "INSERT INTO token_measurements (tenant_id, skill_id, model_name, estimated_cost_microcents)"
        " VALUES ($1, $2, 'm', $3)",
        [(tenant.tenant_id, skill, biggest)] * 4,
    )
    assert await assert_exact(owner, skill) == (0, None, biggest)


async def test_direct_writes_to_the_aggregates_are_ignored(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await assert_exact(owner, tenant.skill_id)
    await owner.execute(
        "UPDATE skills SET total_feedback = 1000, positive_feedback_pct = 3,"
        " avg_token_cost_microcents = 5, feedback_thumbs_up = 9, name = 'Renamed' WHERE id = $1",
        tenant.skill_id,
    )
    assert await assert_exact(owner, tenant.skill_id) == before
    assert await owner.fetchval("SELECT name FROM skills WHERE id = $1", tenant.skill_id) == "Renamed"


async def test_the_application_role_may_not_write_them(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(owner, tenant.tenant_id) as db:
            await db.execute("UPDATE skills SET total_feedback = 5 WHERE id = $1", tenant.skill_id)


async def test_cascades_and_truncate(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    skill = await new_skill(owner, tenant, "cascade")
    await thumbs(owner, tenant, skill, up=2, down=0)
    # Deleting the skill cascades to its feedback; the triggers cope with the
    # skill being gone.
    await owner.execute("DELETE FROM skills WHERE id = $1", skill)
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE skill_id = $1", skill) == 0

    # TRUNCATE resets every skill (inside a transaction rolled back, so as to
    # leave other tests' rows alone).
    transaction = owner.transaction()
    await transaction.start()
    try:
        await owner.execute("TRUNCATE skill_feedback, token_measurements")
        assert await assert_exact(owner, tenant.skill_id) == (0, None, None)
    finally:
        await transaction.rollback()
    assert await assert_exact(owner, tenant.skill_id) == (1, 100, 600000)


async def test_a_write_reads_none_of_the_skills_existing_rows(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """The cost of a write does not grow with the rows a skill has: inserting
    or deleting one feedback row of a skill with 2,000 reads no other row of
    skill_feedback (PostgreSQL's own per-transaction statistics say so)."""
    skill = await new_skill(owner, tenant, "large")
    await thumbs(owner, tenant, skill, up=1500, down=500)
    async with owner.transaction():
        await owner.execute(
            "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
            " VALUES ($1, $2, 'thumbs_up', 1)",
            tenant.tenant_id,
            skill,
        )
        read = await owner.fetchrow(
            "SELECT seq_scan, seq_tup_read, coalesce(idx_tup_fetch, 0) AS idx_tup_fetch"
            " FROM pg_stat_xact_user_tables WHERE relname = 'skill_feedback'"
        )
        assert read is not None
        assert (read["seq_scan"], read["seq_tup_read"], read["idx_tup_fetch"]) == (0, 0, 0)
    assert await assert_exact(owner, skill) == (2001, 75, None)


async def test_concurrent_writers_on_one_skill_stay_exact(
    owner: asyncpg.Connection, tenant: TenantRows, database_url_for_tests: str
) -> None:
    """16 writers at once on one skill, through the API and as raw SQL,
    inserting and deleting: the aggregates equal a recount afterwards."""
    skill = await new_skill(owner, tenant, "busy")
    rounds = 15

    async def api_writer(seed: int) -> None:
        chooser = random.Random(seed)
        for _ in range(rounds):
            async with tenant_scope(tenant.tenant_id):
                await feedback.record_feedback(
                    skill_id=skill, feedback_type=chooser.choice(["thumbs_up", "thumbs_down"])
                )

    async def raw_writer(seed: int) -> None:
        chooser = random.Random(seed)
        async with connected(database_url_for_tests) as connection:
            for _ in range(rounds):
                async with connection.transaction():
                    await connection.execute(
                        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
                        " VALUES ($1, $2, 'thumbs_up', 1)",
                        tenant.tenant_id,
                        skill,
                    )
                    await connection.execute(
                        "INSERT INTO token_measurements (tenant_id, skill_id, model_name,"
                        " estimated_cost_microcents) VALUES ($1, $2, 'm', $3)",
                        tenant.tenant_id,
                        skill,
                        chooser.randrange(0, 10_000),
                    )
                    if chooser.random() < 0.3:
                        await connection.execute(
                            "DELETE FROM skill_feedback WHERE id = (SELECT id FROM skill_feedback"
                            " WHERE skill_id = $1 LIMIT 1 FOR UPDATE SKIP LOCKED)",
                            skill,
                        )

    await asyncio.gather(*[api_writer(i) for i in range(8)], *[raw_writer(100 + i) for i in range(8)])
    total, _, average = await assert_exact(owner, skill)
    assert 8 * rounds <= int(total) <= 16 * rounds  # type: ignore[call-overload]
    assert average is not None


async def test_concurrent_batches_over_several_skills_stay_exact(
    owner: asyncpg.Connection, tenant: TenantRows, database_url_for_tests: str
) -> None:
    """Batches that each touch many skills, in random orders, from 12 writers
    at once: skills are locked in id order, so no deadlock, and every skill's
    aggregates equal a recount."""
    skills = [await new_skill(owner, tenant, f"batch-{i}") for i in range(12)]

    async def writer(seed: int) -> None:
        chooser = random.Random(seed)
        async with connected(database_url_for_tests) as connection:
            for _ in range(10):
                picked = chooser.sample(skills, 6)
                await connection.execute(
                    "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment)"
                    " SELECT $1, skill, kind, CASE kind WHEN 'thumbs_up' THEN 1 ELSE -1 END"
                    "   FROM unnest($2::text[], $3::text[]) AS batch (skill, kind)",
                    tenant.tenant_id,
                    picked,
                    [chooser.choice(["thumbs_up", "thumbs_down"]) for _ in picked],
                )

    await asyncio.gather(*[writer(i) for i in range(12)])
    totals = [int((await assert_exact(owner, skill))[0]) for skill in skills]  # type: ignore[call-overload]
    assert sum(totals) == 12 * 10 * 6


# Writers that change rows of the same two skills in every statement, each
# listing the rows in its own order: two of every three as the owner (raw
# SQL, the admin's view), the rest as the application connects, in a tenant
# transaction. Each has rows of its own, so the skills' rows are all they
# share. Every statement is its own transaction: none may deadlock.
WRITERS = 8
ROUNDS = 100


async def _rows_per_writer(
    owner: asyncpg.Connection, table: str, skills: list[str]
) -> list[list[list[str]]]:
    """For each writer, ROUNDS pairs of row ids: one of each skill."""
    ids = {
        skill: [
            str(row[0])
            for row in await owner.fetch(f"SELECT id FROM {table} WHERE skill_id = $1 ORDER BY id", skill)
        ]
        for skill in skills
    }
    return [
        [[ids[skills[0]][g * ROUNDS + r], ids[skills[1]][g * ROUNDS + r]] for r in range(ROUNDS)]
        for g in range(WRITERS)
    ]


async def _run_writers(
    owner_url: str,
    app_url: str | None,
    tenant: TenantRows,
    statements: list[str],
    pairs: list[list[list[str]]],
) -> list[str]:
    """Run the writers at once; return the deadlocks PostgreSQL reported."""
    deadlocks: list[str] = []

    async def writer(index: int) -> None:
        as_app = app_url is not None and index % 3 == 2
        async with connected(app_url if app_url is not None and as_app else owner_url) as connection:
            for round_, pair in enumerate(pairs[index]):
                ids = pair if index % 2 else pair[::-1]
                statement = statements[(index + round_) % len(statements)]
                try:
                    if as_app:
                        async with tenant_transaction(connection, tenant.tenant_id):
                            await connection.execute(statement, ids)
                    else:
                        await connection.execute(statement, ids)
                except asyncpg.DeadlockDetectedError as error:
                    deadlocks.append(f"{statement}: {error.detail} ({error.as_dict().get('context')})")

    await asyncio.gather(*[writer(i) for i in range(WRITERS)])
    return deadlocks


async def test_concurrent_dismissals_over_two_skills_never_deadlock(
    owner: asyncpg.Connection, tenant: TenantRows, database_url_for_tests: str, app_url_for_tests: str
) -> None:
    """Dismissals and deletes of feedback, each statement on both skills, from
    six writers (owner and application role): no 40P01, and the aggregates
    equal a recount."""
    skills = sorted([await new_skill(owner, tenant, "pair-a"), await new_skill(owner, tenant, "pair-b")])
    for skill in skills:
        await thumbs(owner, tenant, skill, up=WRITERS * ROUNDS // 2, down=WRITERS * ROUNDS // 2)
    pairs = await _rows_per_writer(owner, "skill_feedback", skills)
    deadlocks = await _run_writers(
        database_url_for_tests,
        app_url_for_tests,
        tenant,
        [
            "UPDATE skill_feedback SET status = 'dismissed' WHERE id = ANY($1::text[])",
            "DELETE FROM skill_feedback WHERE id = ANY($1::text[])",
        ],
        pairs,
    )
    assert deadlocks == []
    for skill in skills:
        assert await assert_exact(owner, skill) == (0, None, None)


async def test_concurrent_moves_and_deletes_of_measurements_never_deadlock(
    owner: asyncpg.Connection, tenant: TenantRows, database_url_for_tests: str
) -> None:
    """Token measurements moved between the two skills (UPDATE skill_id) and
    deleted, each statement on both skills, from six writers: no 40P01, and
    the aggregates equal a recount. (The application role may not change
    measurements: these writers are the owner.)"""
    skills = sorted([await new_skill(owner, tenant, "cost-a"), await new_skill(owner, tenant, "cost-b")])
    await owner.execute(
        "INSERT INTO token_measurements (tenant_id, skill_id, model_name, estimated_cost_microcents)"
        " SELECT $1, skill, 'm', n FROM unnest($2::text[]) AS skill, generate_series(1, $3) AS n",
        tenant.tenant_id,
        skills,
        WRITERS * ROUNDS,
    )
    pairs = await _rows_per_writer(owner, "token_measurements", skills)
    swap = (
        "UPDATE token_measurements SET skill_id = CASE skill_id WHEN '{0}' THEN '{1}' ELSE '{0}' END"
        " WHERE id = ANY($1::text[])"
    ).format(*skills)
    deadlocks = await _run_writers(
        database_url_for_tests,
        None,
        tenant,
        [swap, swap, "DELETE FROM token_measurements WHERE id = ANY($1::text[])"],
        pairs,
    )
    assert deadlocks == []
    for skill in skills:
        await assert_exact(owner, skill)
    remaining = await owner.fetchval(
        "SELECT count(*) FROM token_measurements WHERE skill_id = ANY($1::text[])", skills
    )
    deleted = sum(2 for w in range(WRITERS) for r in range(ROUNDS) if (w + r) % 3 == 2)
    assert remaining == 2 * WRITERS * ROUNDS - deleted
