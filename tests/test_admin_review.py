"""
Reviewing feedback in the admin (``everyskill.admin.review``): a save of the
edit form that changes the status is a stamped review, the workflow holds,
stamps cannot be edited by hand, two reviewers cannot both win, text is
redacted, and the skill's aggregates stay exact (dismissed feedback no longer
counts).
"""

from __future__ import annotations

import asyncio
import datetime

import asyncpg
import pytest

from everyskill import feedback
from everyskill.tenancy import tenant_scope, tenant_transaction
from tests.admin_client import Staff, add, admin_client, make_staff, row, save
from tests.support import TenantRows

# A GitHub token shape the redaction finds.
TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


async def add_feedback(
    owner: asyncpg.Connection, tenant: TenantRows, feedback_type: str, count: int = 1
) -> list[str]:
    ids = []
    for _ in range(count):
        sentiment = {"thumbs_up": 1, "thumbs_down": -1}.get(feedback_type)
        comment = "It broke." if feedback_type == "bug_report" else None
        ids.append(
            await owner.fetchval(
                "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, comment)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                tenant.tenant_id, tenant.skill_id, feedback_type, sentiment, comment,
            )
        )
    return ids


async def aggregates(owner: asyncpg.Connection, skill_id: str) -> tuple[int, int, int, int | None]:
    record = await owner.fetchrow(
        "SELECT total_feedback, feedback_thumbs_up, feedback_thumbs_down, positive_feedback_pct"
        " FROM skills WHERE id = $1",
        skill_id,
    )
    return tuple(record)  # type: ignore[return-value]


async def recount(owner: asyncpg.Connection, skill_id: str) -> tuple[int, int, int, int | None]:
    """The aggregates counted from scratch: every feedback row but the dismissed ones."""
    record = await owner.fetchrow(
        """
        SELECT count(*), count(*) FILTER (WHERE feedback_type = 'thumbs_up'),
               count(*) FILTER (WHERE feedback_type = 'thumbs_down')
          FROM skill_feedback WHERE skill_id = $1 AND status <> 'dismissed'
        """,
        skill_id,
    )
    total, up, down = record
    return total, up, down, (round(100 * up / (up + down)) if up + down else None)


async def test_dismissing_feedback_is_a_stamped_review_that_leaves_the_aggregates(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    (down,) = await add_feedback(owner, tenant, "thumbs_down")
    before = await aggregates(owner, tenant.skill_id)
    assert before == (2, 1, 1, 50) == await recount(owner, tenant.skill_id)

    response = await save(
        staff.client, "skill_feedback", down,
        status="dismissed", review_notes=f"Spam; the poster pasted {TOKEN}",
    )
    assert response.status_code == 200, response.text

    stored = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", down)
    assert stored["status"] == "dismissed"
    assert stored["reviewed_by_admin"] == staff.username
    assert stored["reviewed_by"] is None
    now = await owner.fetchval("SELECT now()")
    assert datetime.timedelta(0) <= now - stored["reviewed_at"] < datetime.timedelta(minutes=1)
    assert TOKEN not in stored["review_notes"] and stored["review_notes"].startswith("Spam;")
    # Dismissed: it no longer counts.
    assert await aggregates(owner, tenant.skill_id) == (1, 1, 0, 100)
    assert await aggregates(owner, tenant.skill_id) == await recount(owner, tenant.skill_id)


async def test_accepting_then_implementing_keeps_the_counts_and_restamps(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await aggregates(owner, tenant.skill_id)
    assert (await save(staff.client, "skill_feedback", tenant.feedback_id, status="accepted")).status_code == 200
    first = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert (first["status"], first["reviewed_by_admin"]) == ("accepted", staff.username)
    assert await aggregates(owner, tenant.skill_id) == before

    response = await save(staff.client, "skill_feedback", tenant.feedback_id, status="implemented")
    assert response.status_code == 200, response.text
    second = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert second["status"] == "implemented" and second["reviewed_at"] > first["reviewed_at"]
    assert await aggregates(owner, tenant.skill_id) == before == await recount(owner, tenant.skill_id)


@pytest.mark.parametrize(
    ("start", "wanted", "says"),
    [
        ("dismissed", "accepted", "reviewed since the form was loaded (dismissed by nobody recorded at "),
        ("accepted", "dismissed", "reviewed since the form was loaded (accepted by nobody recorded at "),
        ("implemented", "pending", "reviewed since the form was loaded (implemented by nobody recorded"),
        ("dismissed", "implemented", "dismissed, a final status"),
        ("pending", "implemented", "can only become accepted or dismissed"),
    ],
)
async def test_a_review_outside_the_workflow_is_refused_and_changes_nothing(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows, start: str, wanted: str, says: str
) -> None:
    (item,) = await add_feedback(owner, tenant, "thumbs_down")
    path = {"dismissed": ["dismissed"], "implemented": ["accepted", "implemented"], "accepted": ["accepted"]}
    for status in path.get(start, []):
        await owner.execute("UPDATE skill_feedback SET status = $2 WHERE id = $1", item, status)
    before = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", item)
    counts = await aggregates(owner, tenant.skill_id)

    response = await save(staff.client, "skill_feedback", item, status=wanted, review_notes="no")
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"][-1] == "status" and says in problem["msg"]
    assert await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", item) == before
    assert await aggregates(owner, tenant.skill_id) == counts


@pytest.mark.parametrize(
    ("field", "value"),
    [("reviewed_by_admin", "someone-else"), ("reviewed_at", "2020-01-01T00:00:00.000Z")],
)
async def test_review_stamps_cannot_be_edited_by_hand(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows, field: str, value: str
) -> None:
    assert (await save(staff.client, "skill_feedback", tenant.feedback_id, status="accepted")).status_code == 200
    before = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    response = await save(staff.client, "skill_feedback", tenant.feedback_id, **{field: value})
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"][-1] == field and "stamped by the review" in problem["msg"]
    assert await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id) == before


async def test_saving_the_form_unchanged_or_with_new_notes_keeps_stamps_and_times(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    assert (await save(staff.client, "skill_feedback", tenant.feedback_id, status="accepted")).status_code == 200
    before = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    # created_at and reviewed_at carry milliseconds: the form sends them back whole.
    assert before["created_at"].microsecond or before["reviewed_at"].microsecond

    assert (await save(staff.client, "skill_feedback", tenant.feedback_id)).status_code == 200
    assert await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id) == before

    response = await save(staff.client, "skill_feedback", tenant.feedback_id, review_notes="Shipped in v2.")
    assert response.status_code == 200, response.text
    after = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert after["review_notes"] == "Shipped in v2."
    assert {k: v for k, v in after.items() if k != "review_notes"} == {
        k: v for k, v in before.items() if k != "review_notes"
    }


async def test_of_two_reviewers_at_once_one_wins_and_the_other_is_told(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    items = await add_feedback(owner, tenant, "thumbs_down", count=6)
    first, second = await make_staff(), await make_staff()
    async with admin_client(username=first) as one, admin_client(username=second) as two:
        for item in items:
            # Both forms are loaded while the item is pending...
            forms = [await row(one, "skill_feedback", item), await row(two, "skill_feedback", item)]
            for form in forms:
                form.pop("id")
            # ...and saved at once, one accepting and one dismissing, or both accepting.
            decisions = ("accepted", "dismissed") if item in items[:3] else ("accepted", "accepted")
            answers = await asyncio.gather(
                one.patch(f"/api/tables/skill_feedback/{item}/", json={**forms[0], "status": decisions[0]}),
                two.patch(f"/api/tables/skill_feedback/{item}/", json={**forms[1], "status": decisions[1]}),
            )
            codes = sorted(answer.status_code for answer in answers)
            assert codes == [200, 422], [answer.text for answer in answers]
            loser = next(answer for answer in answers if answer.status_code == 422)
            # Told who reviewed it, unless both saves passed the form's checks
            # at once with different decisions: then PostgreSQL's workflow
            # refuses the second.
            assert f"by {(first, second)[answers.index(loser) ^ 1]}" in loser.text or (
                "cannot go from" in loser.text
            ), loser.text
            winner = 0 if answers[0].status_code == 200 else 1
            stored = await owner.fetchrow(
                "SELECT status, reviewed_by_admin FROM skill_feedback WHERE id = $1", item
            )
            assert tuple(stored) == (decisions[winner], (first, second)[winner])
    assert await aggregates(owner, tenant.skill_id) == await recount(owner, tenant.skill_id)


async def test_a_form_loaded_before_someone_else_reviewed_is_refused_with_who_did(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    first, second = await make_staff(), await make_staff()
    async with admin_client(username=first) as one, admin_client(username=second) as two:
        stale = await row(two, "skill_feedback", tenant.feedback_id)
        stale.pop("id")
        assert (await save(one, "skill_feedback", tenant.feedback_id, status="accepted")).status_code == 200
        # The second reviewer only wrote notes, on the form still saying pending.
        response = await two.patch(
            f"/api/tables/skill_feedback/{tenant.feedback_id}/", json={**stale, "review_notes": "Mine."}
        )
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"][-1] == "status"
    assert f"reviewed since the form was loaded (accepted by {first} at " in problem["msg"]
    stored = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert (stored["reviewed_by_admin"], stored["review_notes"]) == (first, None)


async def test_a_review_through_the_api_replaces_the_staff_stamp(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    assert (await save(staff.client, "skill_feedback", tenant.feedback_id, status="accepted")).status_code == 200
    async with tenant_scope(tenant.tenant_id):
        await feedback.mark_implemented(tenant.feedback_id, reviewer_id=tenant.user_id)
    stored = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert (stored["status"], stored["reviewed_by"], stored["reviewed_by_admin"]) == (
        "implemented", tenant.user_id, None,
    )


async def test_notes_of_feedback_reviewed_through_the_api_can_be_edited(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """reviewed_at stamped by PostgreSQL has microseconds; the form sends
    milliseconds back, which is the same time to the form's precision."""
    async with tenant_scope(tenant.tenant_id):
        await feedback.review_feedback(tenant.feedback_id, reviewer_id=tenant.user_id, decision="accepted")
    before = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    stamp = before["reviewed_at"]
    as_the_form_sends = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)
    response = await save(
        staff.client, "skill_feedback", tenant.feedback_id,
        review_notes="Agreed.", reviewed_at=as_the_form_sends.isoformat(),
    )
    assert response.status_code == 200, response.text
    after = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", tenant.feedback_id)
    assert after["review_notes"] == "Agreed."
    assert (after["reviewed_at"], after["reviewed_by"]) == (before["reviewed_at"], tenant.user_id)


async def test_the_application_cannot_forge_a_staff_review(
    app_connection: asyncpg.Connection, tenant: TenantRows
) -> None:
    for statement in (
        "UPDATE skill_feedback SET reviewed_by_admin = 'staff' WHERE id = $1",
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, reviewed_by_admin)"
        " SELECT tenant_id, skill_id, 'thumbs_up', 1, 'staff' FROM skill_feedback WHERE id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, tenant.tenant_id) as db:
                await db.execute(statement, tenant.feedback_id)


async def test_feedback_added_in_the_admin_starts_pending_and_is_redacted(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    new = {
        "tenant_id": tenant.tenant_id,
        "skill_id": tenant.skill_id,
        "feedback_type": "bug_report",
        "comment": f"Fails with key {TOKEN}",
        "source": "web",
    }
    refused = await add(staff.client, "skill_feedback", **new, status="accepted")
    assert refused.status_code == 422 and "starts pending" in refused.text
    stamped = await add(staff.client, "skill_feedback", **new, reviewed_by_admin=staff.username)
    assert stamped.status_code == 422 and "stamped by the review" in stamped.text
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE skill_id = $1", tenant.skill_id) == 1

    response = await add(staff.client, "skill_feedback", **new)
    assert response.status_code == 201, response.text
    (created,) = response.json()
    stored = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", created["id"])
    assert stored["status"] == "pending" and TOKEN not in stored["comment"]
    assert stored["comment"].startswith("Fails with key ")
    assert await aggregates(owner, tenant.skill_id) == await recount(owner, tenant.skill_id)


async def test_text_edited_in_the_admin_is_redacted(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    (item,) = await add_feedback(owner, tenant, "bug_report")
    response = await save(staff.client, "skill_feedback", item, comment=f"Broken. token={TOKEN}")
    assert response.status_code == 200, response.text
    comment = await owner.fetchval("SELECT comment FROM skill_feedback WHERE id = $1", item)
    assert TOKEN not in comment and comment.startswith("Broken.")
