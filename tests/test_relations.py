"""
everyskill.relations through the API: each "many" relation of the plan
returns its rows and no other tenant's, an unknown parent is NotFoundError,
and forward relations load in a fixed number of queries, not one per row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from everyskill import relations
from everyskill.errors import NotFoundError
from everyskill.pagination import Page
from everyskill.tenancy import tenant_scope
from tests.support import TenantRows

# relation, the attribute of TenantRows naming its parent (None: the tenant),
# the attribute naming the row it must return.
RELATIONS: list[tuple[Callable[..., Awaitable[Page[Any]]], str | None, str]] = [
    (relations.feedback_of_skill, "skill_id", "feedback_id"),
    (relations.measurements_of_skill, "skill_id", "measurement_id"),
    (relations.benchmark_runs_of_skill, "skill_id", "run_id"),
    (relations.results_of_run, "run_id", "result_id"),
    (relations.feedback_by_user, "user_id", "feedback_id"),
    (relations.measurements_of_user, "user_id", "measurement_id"),
    (relations.benchmark_runs_triggered_by, "user_id", "run_id"),
    (relations.tenant_feedback, None, "feedback_id"),
    (relations.tenant_measurements, None, "measurement_id"),
    (relations.tenant_benchmark_runs, None, "run_id"),
    (relations.tenant_benchmark_results, None, "result_id"),
]


@pytest.mark.parametrize(("relation", "parent", "child"), RELATIONS, ids=lambda v: getattr(v, "__name__", v))
async def test_each_relation_returns_its_rows_and_no_other_tenants(
    tenant: TenantRows,
    other_tenant: TenantRows,
    relation: Callable[..., Awaitable[Page[Any]]],
    parent: str | None,
    child: str,
) -> None:
    async with tenant_scope(tenant.tenant_id):
        arguments = [getattr(tenant, parent)] if parent else []
        page = await relation(*arguments, limit=500)
    ids = {row.id for row in page.items}
    assert getattr(tenant, child) in ids
    assert getattr(other_tenant, child) not in ids
    assert {row.tenant_id for row in page.items} == {tenant.tenant_id}


@pytest.mark.parametrize(
    ("relation", "parent", "child"),
    [r for r in RELATIONS if r[1] is not None],
    ids=lambda v: getattr(v, "__name__", v),
)
async def test_another_tenants_parent_is_not_found(
    tenant: TenantRows,
    other_tenant: TenantRows,
    relation: Callable[..., Awaitable[Page[Any]]],
    parent: str,
    child: str,
) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(NotFoundError) as missing:
            await relation(getattr(other_tenant, parent))
    assert missing.value.id == getattr(other_tenant, parent)


async def test_reviewed_feedback_of_a_user(owner: asyncpg.Connection, tenant: TenantRows) -> None:
    await owner.execute(
        "UPDATE skill_feedback SET status = 'accepted', reviewed_by = $2, reviewed_at = now()"
        " WHERE id = $1",
        tenant.feedback_id,
        tenant.user_id,
    )
    async with tenant_scope(tenant.tenant_id):
        page = await relations.feedback_reviewed_by(tenant.user_id)
    assert [row.id for row in page.items] == [tenant.feedback_id]


async def test_forward_relations_load_in_four_queries_for_any_number_of_rows(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    reviewer = await owner.fetchval(
        "INSERT INTO users (tenant_id, email, name) VALUES ($1, 'rev@example.com', 'Rev') RETURNING id",
        tenant.tenant_id,
    )
    await owner.executemany(
        "INSERT INTO skill_feedback (tenant_id, skill_id, skill_version_id, user_id,"
        " feedback_type, sentiment, status, reviewed_by, reviewed_at)"
        " VALUES ($1, $2, $3, $4, 'thumbs_up', 1, $5, $6, CASE WHEN $5 <> 'pending' THEN now() END)",
        [
            (tenant.tenant_id, tenant.skill_id, tenant.version_id if i % 2 else None,
             tenant.user_id if i % 3 else None, "accepted" if i % 4 else "pending",
             reviewer if i % 4 else None)
            for i in range(60)
        ],
    )
    async with tenant_scope(tenant.tenant_id) as scope:
        page = await relations.feedback_of_skill(tenant.skill_id, limit=500)
        queries: list[str] = []
        def log(record: Any) -> None:
            queries.append(record.query)

        scope.connection.add_query_logger(log)
        loaded = await relations.feedback_with_relations(page.items)
        scope.connection.remove_query_logger(log)
    assert len(page.items) == 61
    # Four SELECTs (and the savepoints around them), whatever the row count.
    assert len([q for q in queries if q.lstrip().upper().startswith("SELECT")]) == 4
    for item in loaded:
        row = item.feedback
        assert item.skill.id == row.skill_id and item.skill.name == "Review code"
        assert (item.skill_version.id if item.skill_version else None) == row.skill_version_id
        assert (item.user.id if item.user else None) == row.user_id
        assert (item.reviewer.email if item.reviewer else None) == (
            "rev@example.com" if row.reviewed_by else None
        )
    assert any(item.reviewer for item in loaded) and any(item.user is None for item in loaded)
