"""
How the admin lists the tables (``everyskill.admin.table_configs``): every
table registered in its menu group, short list columns, the filters that
matter, newest first, foreign keys shown by name and linked both ways, a
skill's aggregates and a run's picks in their lists.
"""

from __future__ import annotations

import asyncpg
from piccolo.columns import Text, Varchar

from everyskill.admin.table_configs import TABLE_CONFIGS
from tables import STAFF_TABLES, TABLES
from tests.admin_client import Staff
from tests.support import TenantRows

MENU = {
    "Catalogue": ["skill_versions", "skills", "tenants", "users"],
    "Feedback": ["skill_feedback"],
    "Usage and cost": ["model_prices", "token_measurements"],
    "Benchmarks": ["benchmark_results", "benchmark_runs"],
    "API access": ["api_keys"],
}
# Text columns short enough for a list: names, kinds and identifiers.
SHORT_TEXT = {
    "id", "name", "slug", "email", "feedback_type", "status", "source", "model_name",
    "model_provider", "best_model", "cheapest_model", "reviewed_by_admin", "key_prefix",
}
# The filters each table must offer.
FILTERS = {
    "skills": {"tenant_id", "name", "created_at"},
    "skill_feedback": {"tenant_id", "skill_id", "feedback_type", "status", "source", "created_at"},
    "token_measurements": {"tenant_id", "skill_id", "model_name", "source", "created_at"},
    "benchmark_runs": {"tenant_id", "skill_id", "status", "created_at"},
    "benchmark_results": {"tenant_id", "benchmark_run_id", "model_name", "created_at"},
    "model_prices": {"tenant_id", "model_provider", "model_name"},
}


async def test_every_table_is_in_its_menu_group(staff: Staff) -> None:
    response = await staff.client.get("/api/tables/grouped/")
    assert response.status_code == 200
    grouped = response.json()
    assert grouped["ungrouped"] == []
    assert {group: sorted(names) for group, names in grouped["grouped"].items()} == MENU
    assert sorted(sum(MENU.values(), [])) == sorted(
        table._meta.tablename for table in (*TABLES, *STAFF_TABLES)
    )


async def test_lists_show_short_columns_and_the_filters_that_matter(staff: Staff) -> None:
    for config in TABLE_CONFIGS:
        table = config.table_class._meta.tablename
        schema = (await staff.client.get(f"/api/tables/{table}/schema/")).json()
        visible = set(schema["extra"]["visible_column_names"])
        long_text = {
            column._meta.name
            for column in config.table_class._meta.columns
            if isinstance(column, (Text, Varchar)) and column._meta.name not in SHORT_TEXT
        }
        assert not visible & long_text, f"{table} lists free text: {visible & long_text}"
        assert "tenant_id" in visible or table == "tenants"
        assert FILTERS.get(table, set()) <= set(schema["extra"]["visible_filter_names"]), table


async def test_newest_rows_first(staff: Staff, owner: asyncpg.Connection, tenant: TenantRows) -> None:
    for config in TABLE_CONFIGS:
        table = config.table_class._meta.tablename
        schema = (await staff.client.get(f"/api/tables/{table}/schema/")).json()
        if table != "model_prices":
            assert schema["extra"]["order_by"] == [
                {"column": "created_at", "ascending": False},
                {"column": "id", "ascending": False},
            ], table
    await owner.execute(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, created_at)"
        " VALUES ($1, $2, 'thumbs_up', 1, now() + interval '1 day')",
        tenant.tenant_id,
        tenant.skill_id,
    )
    # The list, asked for in the schema's order as the admin's front end asks.
    order = ",".join(
        ("" if item["ascending"] else "-") + item["column"]
        for item in (await staff.client.get("/api/tables/skill_feedback/schema/")).json()["extra"]["order_by"]
    )
    params = {"__order": order, "tenant_id": tenant.tenant_id}
    rows = (await staff.client.get("/api/tables/skill_feedback/", params=params)).json()["rows"]
    stamps = [row["created_at"] for row in rows]
    assert len(stamps) == 2 and stamps == sorted(stamps, reverse=True)
    assert rows[0]["id"] != tenant.feedback_id  # the one created a day later comes first


async def test_filters_narrow_the_list(staff: Staff, owner: asyncpg.Connection, tenant: TenantRows) -> None:
    await owner.execute(
        "UPDATE skill_feedback SET status = 'accepted' WHERE id = $1", tenant.feedback_id
    )
    params = {"status": "pending", "tenant_id": tenant.tenant_id}
    pending = (await staff.client.get("/api/tables/skill_feedback/", params=params)).json()["rows"]
    assert pending == []
    params["status"] = "accepted"
    accepted = (await staff.client.get("/api/tables/skill_feedback/", params=params)).json()["rows"]
    assert [row["id"] for row in accepted] == [tenant.feedback_id]


async def test_foreign_keys_show_their_row_and_link_both_ways(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    params = {"__readable": "true", "tenant_id": tenant.tenant_id}
    (feedback,) = (await staff.client.get("/api/tables/skill_feedback/", params=params)).json()["rows"]
    assert feedback["skill_id"] == tenant.skill_id
    assert feedback["skill_id_readable"] == "Review code"
    assert feedback["tenant_id_readable"].startswith("api ")

    (result,) = (await staff.client.get("/api/tables/benchmark_results/", params=params)).json()["rows"]
    run_created = await owner.fetchval("SELECT created_at FROM benchmark_runs WHERE id = $1", tenant.run_id)
    assert result["benchmark_run_id_readable"].startswith("Review code, running run of ")
    assert str(run_created.year) in result["benchmark_run_id_readable"]

    references = (await staff.client.get("/api/tables/skills/references/")).json()["references"]
    assert {(ref["tableName"], ref["columnName"]) for ref in references} >= {
        ("skill_feedback", "skill_id"),
        ("token_measurements", "skill_id"),
        ("benchmark_runs", "skill_id"),
        ("skill_versions", "skill_id"),
    }


async def test_a_skill_lists_its_aggregates_and_a_run_its_picks(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    await owner.execute("UPDATE benchmark_runs SET status = 'completed' WHERE id = $1", tenant.run_id)
    params = {"tenant_id": tenant.tenant_id}
    (skill,) = (await staff.client.get("/api/tables/skills/", params=params)).json()["rows"]
    stored = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id)
    for name in ("total_feedback", "positive_feedback_pct", "avg_token_cost_microcents"):
        assert skill[name] == stored[name], name
    assert (skill["total_feedback"], skill["positive_feedback_pct"]) == (1, 100)

    (run,) = (await staff.client.get("/api/tables/benchmark_runs/", params=params)).json()["rows"]
    assert (run["best_model"], run["best_quality_score"]) == ("gpt-4o", 80)
    assert run["cheapest_model"] is None  # the one result has no cost
    schema = (await staff.client.get("/api/tables/benchmark_runs/schema/")).json()
    assert {"best_model", "cheapest_model"} <= set(schema["extra"]["visible_column_names"])
