"""
The admin's counts (``everyskill.admin.counts``): exact for short lists,
PostgreSQL's estimate for long ones, with Piccolo API's filters and its
refusals, and only for a logged-in admin. The lists are real tables on the
scratch database, as the admin reads them.
"""

from __future__ import annotations

import asyncpg

from everyskill.admin.counts import ESTIMATED_TABLES, EXACT_UP_TO, PROBE
from tests.admin_client import Staff, admin_client
from tests.support import TenantRows

COUNT = "/api/tables/token_measurements/count/"


async def add_measurements(owner: asyncpg.Connection, tenant: TenantRows, model: str, rows: int) -> None:
    await owner.execute(
        """
        INSERT INTO token_measurements (tenant_id, skill_id, model_name, input_tokens,
                                        output_tokens, total_tokens)
        SELECT $1, $2, $3, 10, 10, 20 FROM generate_series(1, $4)
        """,
        tenant.tenant_id,
        tenant.skill_id,
        model,
        rows,
    )


async def shown(staff: Staff, **filters: str) -> int:
    response = await staff.client.get(COUNT, params=filters)
    assert response.status_code == 200, response.text
    assert response.json()["page_size"] == 15
    return int(response.json()["count"])


async def test_short_lists_are_counted_exactly(
    owner: asyncpg.Connection, staff: Staff, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    await add_measurements(owner, tenant, "model-a", 7)
    await add_measurements(owner, other_tenant, "model-a", 3)
    await owner.execute("ANALYZE token_measurements")
    assert await shown(staff, tenant_id=tenant.tenant_id) == 8  # make_tenant's one too
    assert await shown(staff, tenant_id=tenant.tenant_id, model_name="model-a") == 7
    assert await shown(staff, model_name="model-a", model_name__match="exact") == 10
    assert await shown(staff, model_name="no such model") == 0
    total = await owner.fetchval("SELECT count(*) FROM token_measurements")
    if total <= EXACT_UP_TO:
        assert await shown(staff) == total


async def test_long_lists_show_the_estimate_and_short_ones_among_them_stay_exact(
    owner: asyncpg.Connection, staff: Staff, tenant: TenantRows
) -> None:
    many = 3 * EXACT_UP_TO
    await add_measurements(owner, tenant, "model-long", many)
    await add_measurements(owner, tenant, "model-rare", 40)
    await owner.execute("ANALYZE token_measurements")

    # A filter on one column: the estimate, close to the truth.
    estimate = await shown(staff, model_name="model-long", model_name__match="exact")
    assert estimate > EXACT_UP_TO
    assert abs(estimate - many) <= many * 0.2, estimate
    # A filter that matches few rows of the long table is counted exactly.
    assert await shown(staff, tenant_id=tenant.tenant_id, model_name="model-rare",
                       model_name__match="exact") == 40


async def test_a_short_list_the_planner_expects_long_is_counted_exactly(
    owner: asyncpg.Connection, staff: Staff, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    """Filters on two columns are taken as independent by the planner: one
    tenant's rows of a skill of another tenant are expected many, and are
    none (or a few)."""
    await add_measurements(owner, tenant, "model-x", 3 * EXACT_UP_TO)
    await add_measurements(owner, other_tenant, "model-x", 2 * EXACT_UP_TO)
    await owner.execute("ANALYZE token_measurements")
    assert await shown(staff, tenant_id=tenant.tenant_id, skill_id=other_tenant.skill_id) == 0
    small = PROBE - 1
    await owner.execute(
        """
        INSERT INTO token_measurements (tenant_id, skill_id, model_name, input_tokens,
                                        output_tokens, total_tokens)
        SELECT $1, $2, 'model-y', 1, 1, 2 FROM generate_series(1, $3)
        """,
        tenant.tenant_id,
        tenant.skill_id,
        small,
    )
    assert await shown(staff, tenant_id=tenant.tenant_id, model_name="model-y") == small


async def test_bad_filters_are_refused_as_piccolo_api_refuses_them(staff: Staff) -> None:
    for table in ESTIMATED_TABLES:
        response = await staff.client.get(f"/api/tables/{table}/count/", params={"bogus": "1"})
        assert response.status_code == 400, (table, response.text)
        assert "bogus" in response.text


async def test_counts_need_a_logged_in_admin(engine: object) -> None:
    async with admin_client() as client:
        for table in ESTIMATED_TABLES:
            response = await client.get(f"/api/tables/{table}/count/")
            assert response.status_code == 401, (table, response.text)
