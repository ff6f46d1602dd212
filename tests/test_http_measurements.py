"""
The token-measurement routes over HTTP, against the served app: one
measurement and batches of up to 10,000 (one statement, all or nothing,
bad items listed by index and field), reading, listing, the usage
summary, and scopes; a batch with client ids retried after its connection
was cut (written once, replays listed, aggregates exact), ids reused or
another tenant's. Skills named by slug: a batch of 10,000 naming three
skills (an archived one too) stored under the right ids, every unknown
slug listed (another tenant's alike, byte for byte), neither or both of
skill_id and skill_slug refused, replays by slug.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from everyskill.api_keys import create_api_key
from everyskill.client_ids import FOREIGN_ID
from tests.http_support import (
    add_skill,
    CuttingProxy,
    Served,
    Tenant,
    problem,
    replayed,
)


def measurement(tenant: Tenant, **extra: Any) -> dict[str, Any]:
    return {
        "skill_id": tenant.rows.skill_id,
        "model_name": "claude-sonnet-4-5",
        "input_tokens": 1000,
        "output_tokens": 100,
        "latency_ms": 500,
        **extra,
    }


async def count(owner: asyncpg.Connection, tenant: Tenant) -> int:
    value = await owner.fetchval(
        "SELECT count(*) FROM token_measurements WHERE tenant_id = $1", tenant.rows.tenant_id
    )
    assert isinstance(value, int)
    return value


async def test_one_measurement_is_priced_and_read_back(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        response = client.post("/v1/token-measurements", json=measurement(api_a))
        assert response.status_code == 201, response.text
        row = response.json()["row"]
        # The tenant's own price: 250 and 1250 microcents per token.
        assert row["estimated_cost_microcents"] == 1000 * 250 + 100 * 1250
        assert row["total_tokens"] == 1100 and row["model_provider"] == "anthropic"
        assert client.get(f"/v1/token-measurements/{row['id']}").json() == row
        unpriced = client.post(
            "/v1/token-measurements", json=measurement(api_a, model_name="no-such-model")
        )
        assert unpriced.status_code == 201
        assert unpriced.json()["row"]["estimated_cost_microcents"] is None
        assert unpriced.json()["warnings"] and "no-such-model" in unpriced.json()["warnings"][0]


async def test_a_batch_of_ten_thousand_is_written_whole(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    items = [measurement(api_a, latency_ms=i) for i in range(10_000)]
    with httpx.Client(base_url=api.base, headers=api_a.headers(), timeout=60) as client:
        response = client.post("/v1/token-measurements", json={"items": items})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["count"] == 10_000 and len(set(body["ids"])) == 10_000
        latency = await owner.fetchval(
            "SELECT latency_ms FROM token_measurements WHERE id = $1", body["ids"][1234]
        )
        assert latency == 1234
        problem(
            client.post("/v1/token-measurements", json={"items": items + items[:1]}),
            422,
            "validation",
        )
    assert await count(owner, api_a) == before + 10_000


async def test_a_batch_with_bad_items_lists_them_and_writes_nothing(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    aggregates = await owner.fetchrow(
        "SELECT costed_measurements, measured_cost_microcents FROM skills WHERE id = $1",
        api_a.rows.skill_id,
    )
    items = [
        measurement(api_a),
        measurement(api_a, input_tokens=-1),
        measurement(api_a),
        measurement(api_a, total_tokens=5),
        {"model_name": "x"},
    ]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        typed = problem(
            client.post("/v1/token-measurements", json={"items": items}), 422, "validation"
        )
        assert {(e["index"], e["field"]) for e in typed["errors"]} == {
            (1, "input_tokens"),
            (4, "skill_id"),
        }
        rules = problem(
            client.post("/v1/token-measurements", json={"items": [items[0], items[3], items[3]]}),
            422,
            "validation",
        )
        assert {(e["index"], e["field"]) for e in rules["errors"]} == {
            (1, "total_tokens"),
            (2, "total_tokens"),
        }
        foreign = problem(
            client.post(
                "/v1/token-measurements",
                json={"items": [measurement(api_a), measurement(api_b)]},
            ),
            404,
            "not-found",
        )
        assert (foreign["errors"][0]["index"], foreign["errors"][0]["field"]) == (1, "skill_id")
    assert await count(owner, api_a) == before
    assert await owner.fetchrow(
        "SELECT costed_measurements, measured_cost_microcents FROM skills WHERE id = $1",
        api_a.rows.skill_id,
    ) == aggregates


async def test_lists_and_the_usage_summary(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        client.post(
            "/v1/token-measurements",
            json={"items": [measurement(api_a, model_name="gpt-4o", model_provider="openai")] * 3},
        )
        page = client.get("/v1/token-measurements", params={"model_name": "gpt-4o", "limit": 2})
        assert page.status_code == 200
        assert len(page.json()["items"]) == 2 and page.json()["next_cursor"]
        rest = client.get(
            "/v1/token-measurements",
            params={"model_name": "gpt-4o", "cursor": page.json()["next_cursor"]},
        ).json()
        assert len(rest["items"]) == 1 and rest["next_cursor"] is None
        by_model = client.get("/v1/usage/summary", params={"by": "model"})
        assert by_model.status_code == 200, by_model.text
        rows = {row["model_name"]: row for row in by_model.json()["items"]}
        assert rows["gpt-4o"]["calls"] == 3 and rows["gpt-4o"]["day"] is None
        assert rows["claude-sonnet-4-5"]["calls"] == 1  # the tenant's sample row
        by_day = client.get(
            "/v1/usage/summary", params=[("by", "day"), ("by", "skill"), ("time_zone", "Asia/Tokyo")]
        ).json()["items"]
        assert sum(row["calls"] for row in by_day) == 4 and by_day[0]["day"]
        everything = client.get("/v1/usage/summary").json()["items"]
        assert all(row["day"] and row["skill_id"] and row["model_name"] for row in everything)
        zone = problem(
            client.get("/v1/usage/summary", params={"time_zone": "Mars/Olympus"}), 422, "validation"
        )
        assert zone["errors"][0]["field"] == "time_zone"
        problem(client.get("/v1/usage/summary", params={"by": "week"}), 422, "validation")


async def test_scopes_of_the_measurement_routes(api: Served, api_a: Tenant) -> None:
    reader = (await create_api_key(api_a.rows.tenant_id, "reader", "read")).key
    hook = (await create_api_key(api_a.rows.tenant_id, "hook", "measurements:write")).key
    with httpx.Client(base_url=api.base) as client:
        body = problem(
            client.post(
                "/v1/token-measurements", json=measurement(api_a), headers=api_a.headers(reader)
            ),
            403,
            "missing-scope",
        )
        assert body["scope"] == "measurements:write"
        for path in ("/v1/token-measurements", "/v1/usage/summary",
                     f"/v1/token-measurements/{api_a.rows.measurement_id}"):
            assert problem(client.get(path, headers=api_a.headers(hook)), 403, "missing-scope")[
                "scope"
            ] == "read"
        assert client.post(
            "/v1/token-measurements", json=measurement(api_a), headers=api_a.headers(hook)
        ).status_code == 201


async def cost_aggregates(owner: asyncpg.Connection, tenant: Tenant) -> tuple[int, int]:
    row = await owner.fetchrow(
        "SELECT costed_measurements, measured_cost_microcents FROM skills WHERE id = $1",
        tenant.rows.skill_id,
    )
    assert row is not None
    return row["costed_measurements"], row["measured_cost_microcents"]


async def test_a_batch_retried_after_the_connection_was_cut_is_written_once(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    costed, cost = await cost_aggregates(owner, api_a)
    items = [
        measurement(api_a, id=str(uuid.uuid4()), estimated_cost_microcents=1000 + i)
        for i in range(50)
    ]
    host, port = api.base.removeprefix("http://").split(":")
    proxy = CuttingProxy(host, int(port))
    async with proxy.serving() as cut, httpx.AsyncClient(headers=api_a.headers()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{cut}/v1/token-measurements", json={"items": items})
        assert proxy.withheld[0].startswith(b"HTTP/1.1 201 ")
        retry = await client.post(f"{api.base}/v1/token-measurements", json={"items": items})
        body = replayed(retry)
        assert body["ids"] == body["replayed"] == [item["id"] for item in items]
        assert body["count"] == 0
        # One more item with the replays: 201, only it written.
        extra = measurement(api_a, id=str(uuid.uuid4()), estimated_cost_microcents=7)
        mixed = await client.post(
            f"{api.base}/v1/token-measurements", json={"items": [*items[:2], extra]}
        )
        assert mixed.status_code == 201 and mixed.json()["count"] == 1
        assert mixed.json()["replayed"] == [items[0]["id"], items[1]["id"]]
        # Other values under a stored id: 409 naming the item, nothing written.
        changed = await client.post(
            f"{api.base}/v1/token-measurements",
            json={"items": [measurement(api_a, id=str(uuid.uuid4())), {**items[3], "latency_ms": 1}]},
        )
        reused = problem(changed, 409, "conflict")
        assert reused["errors"][0]["index"] == 1 and reused["errors"][0]["field"] == "id"
    # Another tenant's batch holding one of these ids: refused, nothing revealed.
    async with httpx.AsyncClient(headers=api_b.headers()) as client:
        foreign = await client.post(
            f"{api.base}/v1/token-measurements",
            json={"items": [measurement(api_b, id=items[5]["id"])]},
        )
    refused = problem(foreign, 409, "conflict")
    assert FOREIGN_ID in refused["detail"] and refused["errors"][0]["index"] == 0
    assert await count(owner, api_a) == before + 51
    assert await cost_aggregates(owner, api_a) == (
        costed + 51,
        cost + sum(1000 + i for i in range(50)) + 7,
    )


async def test_boundaries_of_time_zones_and_datetimes_are_422s(api: Served, api_a: Tenant) -> None:
    """Values at and past the edges that fuzzing did not reach: each is a 422
    naming its field, never a 500."""
    async with httpx.AsyncClient(base_url=api.base, headers=api_a.headers(), timeout=30) as client:
        for zone in ("America", "Europe", "Etc", "x" * 300, "../../etc/passwd", "Nowhere/Zone"):
            body = problem(
                await client.get("/v1/usage/summary", params={"by": "day", "time_zone": zone}),
                422,
                "validation",
            )
            assert [e["field"] for e in body["errors"]] == ["time_zone"], body
        for path in ("/v1/feedback", "/v1/token-measurements", "/v1/usage/summary"):
            for name, moment in (
                ("since", "0001-01-01T00:00:00+14:00"),
                ("until", "0001-01-01T00:00:00+14:00"),
                ("since", "9999-12-31T23:59:59-14:00"),
                ("until", "9999-12-31T23:59:59-14:00"),
            ):
                body = problem(await client.get(path, params={name: moment}), 422, "validation")
                assert [e["field"] for e in body["errors"]] == [name], (path, body)
            # The last moments of the calendar in UTC are taken.
            answer = await client.get(
                path, params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"}
            )
            assert answer.status_code == 200, (path, answer.text)


def by_slug(slug: str, **extra: Any) -> dict[str, Any]:
    return {
        "skill_slug": slug,
        "model_name": "claude-sonnet-4-5",
        "input_tokens": 1000,
        "output_tokens": 100,
        **extra,
    }


async def per_skill(owner: asyncpg.Connection, ids: list[str]) -> dict[str, int]:
    rows = await owner.fetch(
        "SELECT skill_id, count(*) AS n FROM token_measurements WHERE id = ANY($1) GROUP BY 1", ids
    )
    return {row["skill_id"]: row["n"] for row in rows}


async def test_a_batch_of_ten_thousand_names_its_skills_by_slug(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    """A hook's key (measurements:write only) names three skills by slug,
    one of them archived, over 10,000 items, some by id: each row is stored
    under its skill of the key's tenant (tenant B's review-code gets
    nothing), and the cost aggregates count them."""
    tests = await add_skill(owner, api_a, "write-tests")
    old = await add_skill(owner, api_a, "old-review", archived=True)
    hook = (await create_api_key(api_a.rows.tenant_id, "hook", "measurements:write")).key
    b_before = await count(owner, api_b)
    slugs = ["review-code", "write-tests", "old-review"]
    items = [
        by_slug(slugs[i % 3], latency_ms=i) if i % 10 else measurement(api_a, latency_ms=i)
        for i in range(10_000)
    ]
    with httpx.Client(base_url=api.base, headers=api_a.headers(hook), timeout=60) as client:
        one = client.post("/v1/token-measurements", json=by_slug("old-review"))
        assert one.status_code == 201, one.text
        assert one.json()["row"]["skill_id"] == old
        assert one.json()["row"]["estimated_cost_microcents"] == 1000 * 250 + 100 * 1250
        batch = client.post("/v1/token-measurements", json={"items": items})
        assert batch.status_code == 201, batch.text
    ids = batch.json()["ids"]
    assert batch.json()["count"] == 10_000
    skills = [api_a.rows.skill_id, tests, old]
    expected: dict[str, int] = {}
    for i in range(10_000):
        skill = skills[i % 3] if i % 10 else api_a.rows.skill_id
        expected[skill] = expected.get(skill, 0) + 1
    assert await per_skill(owner, ids) == expected
    stored = await owner.fetchrow(
        "SELECT skill_id, latency_ms FROM token_measurements WHERE id = $1", ids[1234]
    )
    assert stored is not None and (stored["skill_id"], stored["latency_ms"]) == (tests, 1234)
    assert await owner.fetchval(
        "SELECT costed_measurements FROM skills WHERE id = $1", old
    ) == expected[old] + 1
    assert await count(owner, api_b) == b_before


async def test_unknown_slugs_are_listed_in_one_404_and_nothing_is_written(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    elsewhere = await add_skill(owner, api_b, "only-in-b")
    before = await count(owner, api_a)
    costed = await cost_aggregates(owner, api_a)
    items = [by_slug("review-code")] * 5 + [by_slug("nowhere"), measurement(api_a)]
    items += [by_slug("only-in-b"), by_slug("review-code"), by_slug("nowhere")]
    single = by_slug("only-in-b")
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        batch_foreign = client.post("/v1/token-measurements", json={"items": items})
        single_foreign = client.post("/v1/token-measurements", json=single)
        body = problem(batch_foreign, 404, "not-found")
        assert [(e["index"], e["field"]) for e in body["errors"]] == [
            (5, "skill_slug"), (7, "skill_slug"), (9, "skill_slug"),
        ]
        one = problem(single_foreign, 404, "not-found")
        assert one["errors"] == [{"field": "skill_slug", "message": one["detail"]}]
        await owner.execute("UPDATE skills SET slug = 'moved-in-b' WHERE id = $1", elsewhere)
        batch_unknown = client.post("/v1/token-measurements", json={"items": items})
        single_unknown = client.post("/v1/token-measurements", json=single)
    assert batch_foreign.content == batch_unknown.content
    assert single_foreign.content == single_unknown.content
    assert elsewhere not in batch_foreign.text
    assert await count(owner, api_a) == before
    assert await cost_aggregates(owner, api_a) == costed


async def test_naming_the_skill_twice_or_not_at_all_is_listed_with_the_type_errors(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    items = [
        {"model_name": "x", "input_tokens": -1},
        measurement(api_a, skill_slug="review-code"),
        by_slug("review-code"),
        by_slug("review-code", skill_id=None),
        by_slug("   "),
    ]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        body = problem(
            client.post("/v1/token-measurements", json={"items": items}), 422, "validation"
        )
        assert {(e["index"], e["field"]) for e in body["errors"]} == {
            (0, "skill_id"), (0, "input_tokens"), (1, "skill_slug"), (4, "skill_slug"),
        }, body
        neither = problem(
            client.post("/v1/token-measurements", json={"model_name": "x"}), 422, "validation"
        )
        assert [(e.get("index"), e["field"]) for e in neither["errors"]] == [(None, "skill_id")]
        both = problem(
            client.post("/v1/token-measurements", json=measurement(api_a, skill_slug="review-code")),
            422,
            "validation",
        )
        assert [(e.get("index"), e["field"]) for e in both["errors"]] == [(None, "skill_slug")]
    assert await count(owner, api_a) == before


async def test_measurements_named_by_slug_replay_as_named_by_id(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    tests = await add_skill(owner, api_a, "write-tests")
    before = await count(owner, api_a)
    items = [
        by_slug(slug, id=str(uuid.uuid4()), estimated_cost_microcents=10 + i)
        for i, slug in enumerate(["review-code", "write-tests", "review-code"])
    ]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        sent = client.post("/v1/token-measurements", json={"items": items})
        assert sent.status_code == 201 and sent.json()["count"] == 3, sent.text
        resent = [
            {**{k: v for k, v in item.items() if k != "skill_slug"}, "skill_id": skill}
            for item, skill in zip(items, [api_a.rows.skill_id, tests, api_a.rows.skill_id])
        ]
        again = replayed(client.post("/v1/token-measurements", json={"items": resent}))
        assert again["replayed"] == [item["id"] for item in items] and again["count"] == 0
        assert replayed(client.post("/v1/token-measurements", json=items[1]))["row"]["skill_id"] == tests
        assert replayed(client.post("/v1/token-measurements", json=resent[1]))["row"]["skill_id"] == tests
        # The same id by another skill's slug: other values, a conflict.
        moved = problem(
            client.post(
                "/v1/token-measurements", json={"items": [{**items[1], "skill_slug": "review-code"}]}
            ),
            409,
            "conflict",
        )
        assert (moved["errors"][0]["index"], moved["errors"][0]["field"]) == (0, "id")
    assert await count(owner, api_a) == before + 3
    assert await per_skill(owner, [item["id"] for item in items]) == {
        api_a.rows.skill_id: 2, tests: 1,
    }
