"""
What the admin refuses to change (``everyskill.admin.guards``): token
measurements and benchmark results are not added or edited, ids, tenants,
creation times and what PostgreSQL maintains are not edited, and edited text
is redacted. Each refusal says why and writes nothing.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.admin_client import Staff, add, row, save
from tests.support import TenantRows

TOKEN = "ghp_" + "Zq8VbN3kLw7RtY2mPx5HcJ9sDf4GaK6eUo1B"


async def test_a_token_measurement_cannot_be_edited_or_added(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await owner.fetchrow("SELECT * FROM token_measurements WHERE id = $1", tenant.measurement_id)
    response = await save(staff.client, "token_measurements", tenant.measurement_id, latency_ms=1)
    assert response.status_code == 405
    message = response.json()["detail"]
    assert "Token measurements are measurements" in message and "cannot be edited" in message
    assert "everyskill.usage" in message
    assert await owner.fetchrow("SELECT * FROM token_measurements WHERE id = $1", tenant.measurement_id) == before

    count = await owner.fetchval("SELECT count(*) FROM token_measurements")
    fields = {key: value for key, value in dict(before).items() if key not in ("id", "created_at")}
    added = await add(staff.client, "token_measurements", **fields)
    assert added.status_code == 405 and "cannot be edited or added" in added.json()["detail"]
    assert await owner.fetchval("SELECT count(*) FROM token_measurements") == count


async def test_a_wrong_token_measurement_can_be_deleted_and_the_cost_average_follows(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    assert await owner.fetchval(
        "SELECT avg_token_cost_microcents FROM skills WHERE id = $1", tenant.skill_id
    ) == 600_000
    response = await staff.client.delete(f"/api/tables/token_measurements/{tenant.measurement_id}/")
    assert response.status_code == 204, response.text
    assert await owner.fetchval(
        "SELECT avg_token_cost_microcents FROM skills WHERE id = $1", tenant.skill_id
    ) is None


async def test_a_benchmark_result_cannot_be_edited_added_or_deleted(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await owner.fetchrow("SELECT * FROM benchmark_results WHERE id = $1", tenant.result_id)
    edited = await save(staff.client, "benchmark_results", tenant.result_id, quality_score=100)
    assert edited.status_code == 405 and "Benchmark results are measurements" in edited.json()["detail"]
    fields = {key: value for key, value in dict(before).items() if key not in ("id", "created_at")}
    added = await add(staff.client, "benchmark_results", **{**fields, "test_case_index": 7})
    assert added.status_code == 405
    deleted = await staff.client.delete(f"/api/tables/benchmark_results/{tenant.result_id}/")
    assert deleted.status_code == 405 and "delete the benchmark run" in deleted.json()["detail"]
    assert await owner.fetchrow("SELECT * FROM benchmark_results WHERE id = $1", tenant.result_id) == before


@pytest.mark.parametrize(
    ("table", "attribute", "field", "value", "says"),
    [
        ("skills", "skill_id", "total_feedback", 99, "maintained by PostgreSQL"),
        ("skills", "skill_id", "positive_feedback_pct", 1, "maintained by PostgreSQL"),
        ("skills", "skill_id", "avg_token_cost_microcents", 5, "maintained by PostgreSQL"),
        ("skills", "skill_id", "created_at", "2020-01-01T00:00:00.000Z", "when the row was recorded"),
        ("skill_feedback", "feedback_id", "tenant_id", "other", "cannot be moved to another tenant"),
        ("skill_versions", "version_id", "skill_id", "other", "cannot be moved"),
        ("benchmark_runs", "run_id", "skill_id", "other", "cannot be moved"),
        ("skill_feedback", "feedback_id", "user_id", None, "who gave the feedback"),
        ("skill_feedback", "feedback_id", "source", "api", "where the feedback came from"),
        ("benchmark_runs", "run_id", "best_model", "gpt-4o", "life cycle"),
        ("benchmark_runs", "run_id", "started_at", "2020-01-01T00:00:00.000Z", "life cycle"),
        ("model_prices", "model_price_id", "updated_at", "2020-01-01T00:00:00.000Z", "stamped by PostgreSQL"),
    ],
)
async def test_fixed_columns_are_refused_with_the_reason(
    staff: Staff,
    owner: asyncpg.Connection,
    tenant: TenantRows,
    table: str,
    attribute: str,
    field: str,
    value: object,
    says: str,
) -> None:
    row_id = getattr(tenant, attribute)
    before = await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id)
    response = await save(staff.client, table, row_id, **{field: value})
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["loc"][-1] == field and says in problem["msg"]
    assert await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id) == before


async def test_a_skill_edited_in_the_admin_keeps_its_aggregates_and_times(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id)
    response = await save(staff.client, "skills", tenant.skill_id, name="Review code, carefully")
    assert response.status_code == 200, response.text
    after = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id)
    assert after["name"] == "Review code, carefully"
    assert after["created_at"] == before["created_at"]  # to the millisecond
    assert after["updated_at"] > before["updated_at"]  # stamped by PostgreSQL
    unchanged = ("total_feedback", "positive_feedback_pct", "avg_token_cost_microcents", "feedback_thumbs_up")
    assert [after[name] for name in unchanged] == [before[name] for name in unchanged]


async def test_a_run_failed_in_the_admin_is_stamped_and_its_message_redacted(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    response = await save(
        staff.client, "benchmark_runs", tenant.run_id,
        status="failed", error_message=f"Provider refused key {TOKEN}",
    )
    assert response.status_code == 200, response.text
    run = await owner.fetchrow("SELECT * FROM benchmark_runs WHERE id = $1", tenant.run_id)
    assert run["status"] == "failed" and run["completed_at"] is not None
    assert TOKEN not in run["error_message"] and run["error_message"].startswith("Provider refused key ")


async def test_a_run_completed_in_the_admin_gets_its_picks(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    response = await save(staff.client, "benchmark_runs", tenant.run_id, status="completed")
    assert response.status_code == 200, response.text
    run = await owner.fetchrow("SELECT * FROM benchmark_runs WHERE id = $1", tenant.run_id)
    assert (run["status"], run["best_model"], run["best_quality_score"]) == ("completed", "gpt-4o", 80)
    # The run's life cycle is PostgreSQL's: a completed run stays completed.
    again = await save(staff.client, "benchmark_runs", tenant.run_id, status="running")
    assert again.status_code == 422 and "Database error" not in again.text
    assert "completed" in again.json()["db_error"]


async def test_put_is_refused_for_every_table(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """PUT would replace a row without the hooks above (no redaction, no
    fixed columns, no review stamp)."""
    rows = {
        "skill_feedback": tenant.feedback_id,
        "skills": tenant.skill_id,
        "users": tenant.user_id,
        "tenants": tenant.tenant_id,
        "benchmark_runs": tenant.run_id,
        "model_prices": tenant.model_price_id,
    }
    for table, row_id in rows.items():
        before = await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id)
        fields = await row(staff.client, table, row_id)
        fields.pop("id")
        response = await staff.client.put(
            f"/api/tables/{table}/{row_id}/", json={**fields, "created_at": "2001-01-01T00:00:00Z"}
        )
        assert response.status_code == 405 and "PATCH" in response.json()["detail"], table
        assert await owner.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id) == before


async def test_a_row_added_in_the_admin_gets_a_new_id_and_is_created_now(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    response = await add(
        staff.client, "skills",
        tenant_id=tenant.tenant_id, slug="triage", name="Triage",
        id="chosen-by-hand", created_at="2001-01-01T00:00:00.000Z",
    )
    assert response.status_code == 201, response.text
    (created,) = response.json()
    assert created["id"] != "chosen-by-hand"
    stored = await owner.fetchrow("SELECT *, now() - created_at AS age FROM skills WHERE id = $1", created["id"])
    assert stored["slug"] == "triage"
    assert abs(stored["age"].total_seconds()) < 60
