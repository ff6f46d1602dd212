"""
everyskill.catalogue through the API, as the application connects: a skill
and its aggregates are read in the tenant's scope, equal what the database
maintains (checked against a recount), and another tenant's skill, a wrong
id or a missing scope are refused with their typed errors.
"""

from __future__ import annotations

import asyncpg
import pytest

from everyskill import catalogue, feedback, usage
from everyskill.errors import NotFoundError, TenantScopeError, ValidationError
from everyskill.tenancy import tenant_scope
from tests.support import TenantRows
from tests.test_aggregates import RECOUNT


async def test_a_skill_is_read_with_its_aggregates(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        await usage.record_measurement(
            skill_id=tenant.skill_id,
            model_name="claude-sonnet-4-5",
            input_tokens=1000,
            output_tokens=100,
        )
        skill = await catalogue.get_skill(tenant.skill_id)
        aggregates = await catalogue.skill_aggregates(tenant.skill_id)

    stored = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", tenant.skill_id)
    recount = await owner.fetchrow(RECOUNT, tenant.skill_id)
    assert stored is not None and recount is not None
    assert skill.id == tenant.skill_id and skill.tenant_id == tenant.tenant_id
    assert skill.name == stored["name"]
    assert skill.total_feedback == aggregates.total_feedback == recount["total_feedback"] == 3
    assert aggregates.positive_feedback_pct == recount["positive_feedback_pct"] == 67
    assert (aggregates.feedback_thumbs_up, aggregates.feedback_thumbs_down) == (2, 1)
    assert aggregates.avg_token_cost_microcents == recount["avg_token_cost_microcents"]
    assert aggregates.costed_measurements == stored["costed_measurements"] == 2
    assert aggregates.measured_cost_microcents == stored["measured_cost_microcents"]


async def test_another_tenants_skill_is_not_found(
    tenant: TenantRows, other_tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id):
        for read in (catalogue.get_skill, catalogue.skill_aggregates):
            with pytest.raises(NotFoundError) as raised:
                await read(other_tenant.skill_id)
            assert raised.value.kind == "skill"
            assert raised.value.id == other_tenant.skill_id


@pytest.mark.parametrize("skill_id", ["", "  ", None, 42])
async def test_a_bad_id_is_refused_with_its_field(tenant: TenantRows, skill_id: object) -> None:
    async with tenant_scope(tenant.tenant_id):
        with pytest.raises(ValidationError) as raised:
            await catalogue.skill_aggregates(skill_id)  # type: ignore[arg-type]
    assert raised.value.field == "skill_id"


async def test_reading_needs_a_tenant_scope(tenant: TenantRows) -> None:
    with pytest.raises(TenantScopeError):
        await catalogue.get_skill(tenant.skill_id)
