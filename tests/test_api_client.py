"""
The HTTP API's client against the served API: a 2xx answer's JSON,
problems with their fields and whether a retry may help, no answer at
all, and batches whose refused items are set aside while the others are
stored, each once.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from everyskill.api_client import ApiClient, ApiProblem, ApiUnreachable, post_items
from everyskill.api_keys import create_api_key
from tests.http_support import Served, Tenant
from tests.support import free_port


def item(tenant: Tenant, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "skill_id": tenant.rows.skill_id,
        "model_name": "claude-sonnet-4-5",
        "input_tokens": 10,
        "output_tokens": 5,
        **extra,
    }


async def stored(owner: asyncpg.Connection, ids: list[str]) -> int:
    value = await owner.fetchval(
        "SELECT count(*) FROM token_measurements WHERE id = ANY($1::text[])", ids
    )
    assert isinstance(value, int)
    return value


async def test_a_2xx_answer_is_its_json(api: Served, api_a: Tenant) -> None:
    async with ApiClient(api.base, api_a.key) as client:
        skill = await client.get(f"/skills/{api_a.rows.skill_id}")
        assert skill["id"] == api_a.rows.skill_id
        page = await client.get("/token-measurements", limit=1, cursor=None)
        assert len(page["items"]) == 1


async def test_problems_carry_their_fields(api: Served, api_a: Tenant) -> None:
    async with ApiClient(api.base, "esk_" + "x" * 36) as client:
        with pytest.raises(ApiProblem) as unauthenticated:
            await client.get("/skills")
    assert unauthenticated.value.status == 401 and not unauthenticated.value.retryable
    assert unauthenticated.value.type_name == "unauthenticated"

    narrow = await create_api_key(api_a.rows.tenant_id, "narrow", "feedback:write")
    async with ApiClient(api.base, narrow.key) as client:
        with pytest.raises(ApiProblem) as forbidden:
            await client.get("/skills")
    assert forbidden.value.status == 403 and forbidden.value.scope == "read"

    async with ApiClient(api.base, api_a.key) as client:
        with pytest.raises(ApiProblem) as invalid:
            await client.post("/token-measurements", item(api_a, input_tokens=-1))
    assert invalid.value.status == 422 and invalid.value.type_name == "validation"
    assert invalid.value.errors[0]["field"] == "input_tokens"
    assert "422" in str(invalid.value)


async def test_no_answer_is_unreachable_and_retryable() -> None:
    async with ApiClient(f"http://127.0.0.1:{free_port()}", "esk_k", timeout=1) as client:
        with pytest.raises(ApiUnreachable) as raised:
            await client.get("/skills")
    assert raised.value.retryable and "ConnectError" in str(raised.value)


async def test_refused_items_are_set_aside_and_the_rest_stored_once(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    good = [item(api_a) for _ in range(5)]
    bad_field = item(api_a, output_tokens="many")
    foreign_skill = item(api_a, skill_id=api_b.rows.skill_id)
    items = [good[0], bad_field, good[1], good[2], foreign_skill, good[3], good[4]]
    async with ApiClient(api.base, api_a.key) as client:
        delivery = await post_items(client, "/token-measurements", items, batch_size=3)
        assert [i["id"] for i in delivery.stored] == [i["id"] for i in good]
        assert [i["id"] for i, _ in delivery.refused] == [bad_field["id"], foreign_skill["id"]]
        assert delivery.refused[0][1].startswith("output_tokens:")
        assert delivery.refused[1][1].startswith("skill_id:")
        assert delivery.unsent == [] and delivery.error is None
        assert await stored(owner, [i["id"] for i in items]) == 5

        again = await post_items(client, "/token-measurements", good, batch_size=100)
        assert len(again.stored) == 5
        assert await stored(owner, [i["id"] for i in good]) == 5


async def test_a_repaired_item_is_sent_instead(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    moved = item(api_a, skill_id=api_b.rows.skill_id)

    def repair(given: dict[str, Any], field: str) -> dict[str, Any] | None:
        assert field == "skill_id"
        return {**given, "skill_id": api_a.rows.skill_id}

    async with ApiClient(api.base, api_a.key) as client:
        delivery = await post_items(client, "/token-measurements", [moved], batch_size=10, repair=repair)
    assert delivery.refused == [] and delivery.stored[0]["skill_id"] == api_a.rows.skill_id
    row = await owner.fetchrow("SELECT skill_id FROM token_measurements WHERE id = $1", moved["id"])
    assert row is not None and row["skill_id"] == api_a.rows.skill_id


async def test_a_retryable_failure_leaves_the_rest_unsent(api_a: Tenant) -> None:
    items = [item(api_a) for _ in range(4)]
    async with ApiClient(f"http://127.0.0.1:{free_port()}", api_a.key, timeout=1) as client:
        delivery = await post_items(client, "/token-measurements", items, batch_size=2)
    assert delivery.unsent == items and delivery.stored == []
    assert isinstance(delivery.error, ApiUnreachable)


async def test_a_route_the_api_does_not_have_keeps_the_items(api: Served, api_a: Tenant) -> None:
    items = [item(api_a) for _ in range(4)]
    # An address that already ends in /v1: the client adds its own.
    async with ApiClient(api.base + "/v1", api_a.key) as client:
        delivery = await post_items(client, "/token-measurements", items, batch_size=2)
    assert delivery.refused == [] and delivery.stored == [] and delivery.unsent == items
    assert isinstance(delivery.error, ApiProblem) and delivery.error.status == 404
