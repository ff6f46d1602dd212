"""
everyskill.feedback through the API, as the application connects: recording
each type, validation, redaction, the review workflow (including two
reviewers racing), listing and the JSONL export. The owner connection only
prepares rows and checks what was really stored.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
from typing import Any

import asyncpg
import pytest

from everyskill import feedback
from everyskill.errors import (
    AlreadyReviewedError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    TenantScopeError,
    ValidationError,
)
from everyskill.tenancy import tenant_scope
from tests.support import TenantRows, wait_until_blocked

# A fake AWS access key of the documented example shape, for redaction.
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLQ"


async def count_feedback(owner: asyncpg.Connection, tenant: TenantRows) -> int:
    return int(
        await owner.fetchval(
            "SELECT count(*) FROM skill_feedback WHERE tenant_id = $1", tenant.tenant_id
        )
    )


async def add_user(owner: asyncpg.Connection, tenant: TenantRows, name: str) -> str:
    return str(
        await owner.fetchval(
            "INSERT INTO users (tenant_id, email, name) VALUES ($1, $2, $3) RETURNING id",
            tenant.tenant_id,
            f"{name}-{tenant.tenant_id[:8]}@example.com",
            name,
        )
    )


VALID: dict[str, dict[str, Any]] = {
    "thumbs_up": {},
    "thumbs_down": {"comment": "Too verbose."},
    "suggestion": {"suggested_diff": "- old\n+ new\n"},
    "training_example": {
        "example_input": "def f(x): return x*2",
        "expected_output": "Looks good.",
        "example_output": "LGTM",
    },
    "bug_report": {"comment": "It ignores the diff's last hunk."},
}


@pytest.mark.parametrize("kind", sorted(VALID))
async def test_each_type_is_recorded_with_what_it_needs(
    owner: asyncpg.Connection, tenant: TenantRows, kind: str
) -> None:
    async with tenant_scope(tenant.tenant_id):
        saved = await feedback.record_feedback(
            skill_id=tenant.skill_id,
            feedback_type=kind,
            skill_version_id=tenant.version_id,
            user_id=tenant.user_id,
            usage_event_id="evt-1",
            quality_score=7,
            source="mcp",
            **VALID[kind],
        )
    row = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", saved.row.id)
    assert row is not None
    assert row["tenant_id"] == tenant.tenant_id
    assert (row["feedback_type"], row["status"], row["source"]) == (kind, "pending", "mcp")
    assert (row["quality_score"], row["usage_event_id"]) == (7, "evt-1")
    assert row["sentiment"] == {"thumbs_up": 1, "thumbs_down": -1}.get(kind)
    for name, value in VALID[kind].items():
        assert row[name] == value
    assert saved.row.skill_id == tenant.skill_id and saved.row.status == "pending"
    assert saved.redactions == {}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"feedback_type": "suggestion"}, "suggested_content"),
        ({"feedback_type": "suggestion", "suggested_content": "   "}, "suggested_content"),
        ({"feedback_type": "training_example", "example_input": "x"}, "expected_output"),
        ({"feedback_type": "training_example", "expected_output": "y"}, "example_input"),
        ({"feedback_type": "bug_report"}, "comment"),
        ({"feedback_type": "thumbs_up", "sentiment": -1}, "sentiment"),
        ({"feedback_type": "thumbs_down", "sentiment": 1}, "sentiment"),
        ({"feedback_type": "thumbs_up", "example_input": "x"}, "example_input"),
        ({"feedback_type": "bug_report", "comment": "c", "suggested_diff": "d"}, "suggested_diff"),
        ({"feedback_type": "like"}, "feedback_type"),
        ({"feedback_type": "thumbs_up", "quality_score": 11}, "quality_score"),
        ({"feedback_type": "thumbs_up", "quality_score": 0}, "quality_score"),
        ({"feedback_type": "thumbs_up", "sentiment": 2}, "sentiment"),
        ({"feedback_type": "thumbs_up", "source": "email"}, "source"),
        ({"feedback_type": "thumbs_up", "skill_id": ""}, "skill_id"),
        ({"feedback_type": "bug_report", "comment": "x" * 100_001}, "comment"),
        ({"feedback_type": "thumbs_up", "quality_score": "7"}, "quality_score"),
    ],
)
async def test_bad_input_is_refused_with_the_field_and_nothing_is_written(
    owner: asyncpg.Connection, tenant: TenantRows, fields: dict[str, Any], field: str
) -> None:
    before = await count_feedback(owner, tenant)
    arguments = {"skill_id": tenant.skill_id, **fields}
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await feedback.record_feedback(**arguments)
    assert field in [name for name, _ in refused.value.problems]
    assert refused.value.reason
    assert await count_feedback(owner, tenant) == before


async def test_every_problem_is_reported_at_once(tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await feedback.record_feedback(
                skill_id=tenant.skill_id, feedback_type="training_example", suggested_diff="d"
            )
    fields = {name for name, _ in refused.value.problems}
    assert fields == {"example_input", "expected_output", "suggested_diff"}


def test_a_batch_check_lists_every_item_and_every_id_given_twice(tenant: TenantRows) -> None:
    same = "0b8a2f4e-6c1d-4e9a-9b3c-5d7e8f901234"
    items: list[dict[str, Any] | None] = [
        {"skill_id": tenant.skill_id, "feedback_type": "thumbs_up", "id": same},
        {"skill_id": tenant.skill_id, "feedback_type": "bug_report"},  # no comment
        None,  # refused already: its place is kept
        {"skill_id": tenant.skill_id, "feedback_type": "thumbs_up", "quality_score": 99, "id": same},
        {"skill_id": tenant.skill_id, "feedback_type": "thumbs_up", "id": "nope"},
    ]
    with pytest.raises(ValidationError) as refused:
        feedback.check_feedback_batch(items)
    assert [name for name, _ in refused.value.problems] == [
        "items[1].comment",
        "items[3].quality_score",
        "items[3].id",
        "items[4].id",
    ]
    feedback.check_feedback_batch([items[0], None])  # nothing wrong: no error


@pytest.mark.parametrize("reference", ["skill_id", "skill_version_id", "user_id"])
async def test_rows_of_another_tenant_are_not_found(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows, reference: str
) -> None:
    """Naming another tenant's skill, version or user is NotFoundError, and
    nothing is written: the composite keys see through row-level security."""
    before = await count_feedback(owner, tenant)
    other = {
        "skill_id": other_tenant.skill_id,
        "skill_version_id": other_tenant.version_id,
        "user_id": other_tenant.user_id,
    }[reference]
    arguments = {"skill_id": tenant.skill_id, reference: other}
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as missing:
            await feedback.record_feedback(feedback_type="thumbs_up", **arguments)
    assert missing.value.id == other
    assert await count_feedback(owner, tenant) == before


async def test_a_version_of_another_skill_is_not_found(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    second_skill = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'other', 'Other') RETURNING id",
        tenant.tenant_id,
    )
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as missing:
            await feedback.record_feedback(
                skill_id=second_skill, feedback_type="thumbs_up", skill_version_id=tenant.version_id
            )
    assert missing.value.kind == "skill version"


async def test_the_api_needs_a_scope_before_it_touches_the_database(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await count_feedback(owner, tenant)
    with pytest.raises(TenantScopeError, match="tenant_scope"):
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
    with pytest.raises(TenantScopeError):
        await feedback.list_feedback()
    assert await count_feedback(owner, tenant) == before


async def test_secrets_are_redacted_before_they_are_stored(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        saved = await feedback.record_feedback(
            skill_id=tenant.skill_id,
            feedback_type="training_example",
            example_input=f"deploy with aws_access_key_id = {AWS_KEY} please",
            expected_output="Refuse to use inline keys.",
        )
    stored = await owner.fetchval(
        "SELECT example_input FROM skill_feedback WHERE id = $1", saved.row.id
    )
    assert AWS_KEY not in stored
    assert "[REDACTED:aws_access_key]" in stored
    assert saved.redactions.get("aws_access_key") == 1
    assert AWS_KEY not in repr(saved.redactions)


async def test_a_failed_call_in_a_savepoint_leaves_the_scope_usable(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A call in the scope's savepoint: its failure undoes only the savepoint."""
    before = await count_feedback(owner, tenant)
    async with tenant_scope(tenant.tenant_id) as scope:
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        with pytest.raises(NotFoundError):
            async with scope.savepoint():
                await feedback.record_feedback(skill_id="no-such-skill", feedback_type="thumbs_up")
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
    assert await count_feedback(owner, tenant) == before + 2


# -- review ----------------------------------------------------------------------


async def test_review_accepts_then_implements_and_stamps(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    reviewer = await add_user(owner, tenant, "reviewer")
    async with tenant_scope(tenant.tenant_id):
        accepted = await feedback.review_feedback(
            tenant.feedback_id, reviewer_id=reviewer, decision="accepted", notes="Good catch."
        )
    row = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert row is not None
    assert (row["status"], row["reviewed_by"], row["review_notes"]) == ("accepted", reviewer, "Good catch.")
    assert row["reviewed_at"] is not None
    assert accepted.row.status == "accepted"
    first_stamp = row["reviewed_at"]

    async with tenant_scope(tenant.tenant_id):
        implemented = await feedback.mark_implemented(tenant.feedback_id, reviewer_id=tenant.user_id)
    row = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert row is not None
    assert (row["status"], row["reviewed_by"], row["review_notes"]) == ("implemented", tenant.user_id, "Good catch.")
    assert row["reviewed_at"] >= first_stamp
    assert implemented.row.status == "implemented"


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("accepted", "accepted"),
        ("accepted", "dismissed"),
        ("dismissed", "accepted"),
        ("dismissed", "implemented"),
        (None, "implemented"),
    ],
)
async def test_transitions_that_make_no_sense_are_refused(
    owner: asyncpg.Connection, tenant: TenantRows, first: str | None, then: str
) -> None:
    async with tenant_scope(tenant.tenant_id):
        if first:
            await feedback.review_feedback(tenant.feedback_id, reviewer_id=tenant.user_id, decision=first)  # type: ignore[arg-type]
        with pytest.raises(InvalidTransitionError) as refused:
            if then == "implemented":
                await feedback.mark_implemented(tenant.feedback_id, reviewer_id=tenant.user_id)
            else:
                await feedback.review_feedback(tenant.feedback_id, reviewer_id=tenant.user_id, decision=then)  # type: ignore[arg-type]
    assert refused.value.current == (first or "pending")
    status = await owner.fetchval("SELECT status FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert status == (first or "pending")


async def test_review_decision_and_reviewer_are_checked(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await feedback.review_feedback(tenant.feedback_id, reviewer_id=tenant.user_id, decision="implemented")  # type: ignore[arg-type]
        assert refused.value.field == "decision"
        # A reviewer of another tenant is refused by the database: the scope
        # ends with it.
        with pytest.raises(NotFoundError) as missing:
            await feedback.review_feedback(
                tenant.feedback_id, reviewer_id=other_tenant.user_id, decision="accepted"
            )
        assert missing.value.kind == "user"
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError):
            await feedback.review_feedback(
                other_tenant.feedback_id, reviewer_id=tenant.user_id, decision="accepted"
            )
    status = await owner.fetchval("SELECT status FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert status == "pending"


async def test_review_notes_are_redacted(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    async with tenant_scope(tenant.tenant_id):
        saved = await feedback.review_feedback(
            tenant.feedback_id,
            reviewer_id=tenant.user_id,
            decision="dismissed",
            notes=f"user pasted {AWS_KEY}",
        )
    notes = await owner.fetchval("SELECT review_notes FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert AWS_KEY not in notes and saved.redactions == {"aws_access_key": 1}




async def test_two_reviewers_racing_one_wins_the_other_gets_a_conflict(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Reviewer A has changed the item but not committed; reviewer B, who read
    it as pending, waits for A and then gets ConflictError, not a silent
    overwrite."""
    reviewer_b = await add_user(owner, tenant, "reviewer-b")
    a_reviewed = asyncio.Event()
    a_may_commit = asyncio.Event()

    async def reviewer_a() -> None:
        async with tenant_scope(tenant.tenant_id):
            await feedback.review_feedback(
                tenant.feedback_id, reviewer_id=tenant.user_id, decision="accepted"
            )
            a_reviewed.set()
            await a_may_commit.wait()

    async def reviewer_b_() -> None:
        await a_reviewed.wait()
        async with tenant_scope(tenant.tenant_id):
            await feedback.review_feedback(
                tenant.feedback_id, reviewer_id=reviewer_b, decision="dismissed"
            )

    task_a = asyncio.create_task(reviewer_a())
    task_b = asyncio.create_task(reviewer_b_())
    await a_reviewed.wait()
    await wait_until_blocked(owner)
    a_may_commit.set()
    await task_a
    with pytest.raises(ConflictError, match="already accepted"):
        await task_b
    row = await owner.fetchrow(
        "SELECT status, reviewed_by FROM skill_feedback WHERE id = $1", tenant.feedback_id
    )
    assert row is not None
    assert (row["status"], row["reviewed_by"]) == ("accepted", tenant.user_id)


async def test_a_reviewer_who_comes_second_gets_a_conflict_too(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Read after the winner committed: still a conflict, naming the winner."""
    reviewer_b = await add_user(owner, tenant, "reviewer-b")
    async with tenant_scope(tenant.tenant_id):
        await feedback.review_feedback(tenant.feedback_id, reviewer_id=tenant.user_id, decision="dismissed")
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(AlreadyReviewedError) as lost:
            await feedback.review_feedback(tenant.feedback_id, reviewer_id=reviewer_b, decision="accepted")
    assert isinstance(lost.value, ConflictError) and isinstance(lost.value, InvalidTransitionError)
    assert lost.value.reviewed_by == tenant.user_id and tenant.user_id in str(lost.value)


# -- listing ---------------------------------------------------------------------


async def make_feedback(owner: asyncpg.Connection, tenant: TenantRows, specs: list[tuple[str, str, str, str]]) -> list[str]:
    """Insert (type, status, source, created_at offset in hours) rows; return ids."""
    ids = []
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    for kind, status, source, hours in specs:
        extra = {
            "suggestion": ("suggested_content", "x"),
            "bug_report": ("comment", "x"),
            "training_example": ("example_input", "x"),
        }.get(kind)
        ids.append(
            await owner.fetchval(
                """
                INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment,
                    status, reviewed_at, source, created_at, comment, suggested_content,
                    example_input, expected_output)
                VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 <> 'pending' THEN now() END, $6, $7,
                        $8, $9, $10, $11)
                RETURNING id
                """,
                tenant.tenant_id,
                tenant.skill_id,
                kind,
                {"thumbs_up": 1, "thumbs_down": -1}.get(kind),
                status,
                source,
                base + datetime.timedelta(hours=int(hours)),
                "x" if extra and extra[0] == "comment" else None,
                "x" if extra and extra[0] == "suggested_content" else None,
                "in" if kind == "training_example" else None,
                "out" if kind == "training_example" else None,
            )
        )
    return ids


async def test_listing_pages_newest_first_without_gaps_or_repeats(
    owner: asyncpg.Connection, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    ids = await make_feedback(
        owner, tenant, [("thumbs_up", "pending", "web", str(hour)) for hour in range(7)]
    )
    seen: list[str] = []
    cursor = None
    async with tenant_scope(tenant.tenant_id):
        while True:
            page = await feedback.list_feedback(
                since=datetime.datetime(2025, 12, 31, tzinfo=datetime.timezone.utc),
                until=datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc),
                limit=3,
                cursor=cursor,
            )
            seen += [row.id for row in page.items]
            assert len(page.items) <= 3
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert seen == list(reversed(ids))


async def test_listing_filters(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    ids = await make_feedback(
        owner,
        tenant,
        [
            ("bug_report", "pending", "web", "1"),
            ("bug_report", "accepted", "mcp", "2"),
            ("suggestion", "pending", "mcp", "3"),
            ("training_example", "dismissed", "api", "4"),
        ],
    )
    day = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

    async def listed(**filters: Any) -> list[str]:
        # Within the day of these rows (the tenant's own sample row is newer).
        filters = {"since": day, "until": day + datetime.timedelta(days=1), **filters}
        async with tenant_scope(tenant.tenant_id):
            page = await feedback.list_feedback(**filters)
        return [row.id for row in page.items]

    assert await listed(feedback_type="bug_report") == [ids[1], ids[0]]
    assert await listed(status="pending") == [ids[2], ids[0]]
    assert await listed(source="mcp") == [ids[2], ids[1]]
    assert await listed(source="mcp", status="pending") == [ids[2]]
    assert await listed(skill_id=tenant.skill_id, until=day + datetime.timedelta(hours=2)) == [ids[0]]
    assert await listed(since=day + datetime.timedelta(hours=4)) == [ids[3]]
    assert await listed(skill_id="no-such-skill") == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "not-a-cursor"},
        {"status": "open"},
        {"since": datetime.datetime(2026, 1, 1)},
    ],
)
async def test_listing_refuses_bad_arguments(tenant: TenantRows, arguments: dict[str, Any]) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError):
            await feedback.list_feedback(**arguments)


async def test_a_cursor_of_another_list_is_refused(tenant: TenantRows) -> None:
    from everyskill.pagination import encode_cursor

    cursor = encode_cursor("token_measurements", datetime.datetime.now(datetime.timezone.utc), "x")
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as refused:
            await feedback.list_feedback(cursor=cursor)
    assert refused.value.field == "cursor"


# -- export ----------------------------------------------------------------------


async def test_export_writes_accepted_training_examples_as_jsonl(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        kept = await feedback.record_feedback(
            skill_id=tenant.skill_id,
            skill_version_id=tenant.version_id,
            feedback_type="training_example",
            example_input="Review: x = 1",
            expected_output="Fine — «ünïcode» kept.",
            quality_score=9,
        )
        pending = await feedback.record_feedback(
            skill_id=tenant.skill_id,
            feedback_type="training_example",
            example_input="a",
            expected_output="b",
        )
        dismissed = await feedback.record_feedback(
            skill_id=tenant.skill_id,
            feedback_type="training_example",
            example_input="c",
            expected_output="d",
        )
        await feedback.review_feedback(kept.row.id, reviewer_id=tenant.user_id, decision="accepted")
        await feedback.review_feedback(dismissed.row.id, reviewer_id=tenant.user_id, decision="dismissed")
        out = io.StringIO()
        count = await feedback.export_training_examples(out, skill_id=tenant.skill_id)
        everything = io.StringIO()
        tenant_count = await feedback.export_training_examples(everything)

    lines = out.getvalue().splitlines()
    assert count == len(lines) == 1
    assert json.loads(lines[0]) == {
        "input": "Review: x = 1",
        "expected_output": "Fine — «ünïcode» kept.",
        "output": None,
        "skill": "review-code",
        "skill_id": tenant.skill_id,
        "version": 1,
        "quality": 9,
        "feedback_id": kept.row.id,
    }
    assert tenant_count == 1 and everything.getvalue() == out.getvalue()
    assert pending.row.id not in everything.getvalue()


async def test_export_of_an_unknown_skill_is_not_found(
    tenant: TenantRows, other_tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError):
            await feedback.export_training_examples(io.StringIO(), skill_id=other_tenant.skill_id)
