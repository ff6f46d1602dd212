"""
Who may call: API keys over HTTP, against the served app. No key, another
scheme, a malformed, unknown, revoked or expired key: 401 with
WWW-Authenticate: Bearer and the reason. Rate limits per key and per
tenant: a 429 of the IANA quota-exceeded type with Retry-After and the
RateLimit headers, which every answer after the key resolved carries. Tenant A's key on tenant B's ids,
on every route that takes an id: a 404 identical to an id that never
existed, and tenant B's rows unchanged.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import asyncpg
import httpx

from everyskill.api_keys import create_api_key, generate_key, revoke_api_key
from everyskill.rate_limits import DEFAULT_TENANT_LIMIT_PER_MINUTE
from tests.http_support import PROBLEM, Served, Tenant, problem


def refused(response: httpx.Response, reason: str) -> None:
    body = problem(response, 401, "unauthenticated")
    assert body["reason"] == reason
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_requests_without_a_working_key_are_refused(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    revoked = await create_api_key(api_a.rows.tenant_id, "revoked", "read")
    await revoke_api_key(revoked.info.key_prefix)
    expired = await create_api_key(api_a.rows.tenant_id, "expired", "read", expires_in_days=1)
    await owner.execute(
        "UPDATE api_keys SET created_at = now() - interval '2 days',"
        " expires_at = now() - interval '1 second' WHERE id = $1",
        expired.info.id,
    )
    with httpx.Client(base_url=api.base) as client:
        refused(client.get("/v1/skills"), "missing")
        refused(client.get("/v1/skills", headers={"Authorization": f"Basic {api_a.key}"}), "missing")
        # One character of the checksum changed (to another one, whatever it was).
        damaged = api_a.key[:-1] + ("x" if api_a.key[-1] != "x" else "y")
        refused(client.get("/v1/skills", headers=api_a.headers(damaged)), "malformed")
        refused(client.get("/v1/skills", headers=api_a.headers(generate_key())), "invalid")
        refused(client.get("/v1/skills", headers=api_a.headers(revoked.key)), "invalid")
        refused(client.get("/v1/skills", headers=api_a.headers(expired.key)), "invalid")
        # Refused before the body is looked at.
        refused(client.post("/v1/feedback", json={"nonsense": True}), "missing")
        assert client.get("/v1/skills", headers=api_a.headers()).status_code == 200


def routes(b: Tenant, a: Tenant) -> list[tuple[str, str, Any]]:
    """Every route with an id, naming tenant B's rows, with bodies otherwise valid for A."""
    rows = b.rows
    return [
        ("GET", f"/v1/feedback/{rows.feedback_id}", None),
        ("POST", f"/v1/feedback/{rows.feedback_id}/review",
         {"reviewer_id": a.rows.user_id, "decision": "accepted"}),
        ("POST", f"/v1/feedback/{rows.feedback_id}/implemented", {"reviewer_id": a.rows.user_id}),
        ("GET", f"/v1/token-measurements/{rows.measurement_id}", None),
        ("GET", f"/v1/benchmark-runs/{rows.run_id}", None),
        ("POST", f"/v1/benchmark-runs/{rows.run_id}/start", None),
        ("POST", f"/v1/benchmark-runs/{rows.run_id}/complete", None),
        ("POST", f"/v1/benchmark-runs/{rows.run_id}/fail", {"error_message": "x"}),
        ("POST", f"/v1/benchmark-runs/{rows.run_id}/results",
         {"items": [{"model_name": "gpt-4o", "model_provider": "openai", "test_case_index": 9}]}),
        ("GET", f"/v1/skills/{rows.skill_id}", None),
        ("PATCH", f"/v1/skills/{rows.skill_id}", {"name": "taken over"}),
        ("POST", f"/v1/skills/{rows.skill_id}/archive", None),
        ("POST", f"/v1/skills/{rows.skill_id}/unarchive", None),
        ("GET", f"/v1/skills/{rows.skill_id}/versions", None),
        ("POST", f"/v1/skills/{rows.skill_id}/versions", {"content": "taken over"}),
        ("GET", f"/v1/skills/{rows.skill_id}/versions/{rows.version_id}", None),
        ("PATCH", f"/v1/skills/{rows.skill_id}/versions/{rows.version_id}",
         {"changelog": "taken over"}),
        ("GET", f"/v1/skills/{a.rows.skill_id}/versions/{rows.version_id}", None),
        ("GET", f"/v1/users/{rows.user_id}", None),
        ("PATCH", f"/v1/users/{rows.user_id}", {"name": "taken over"}),
        ("GET", f"/v1/training-examples.jsonl?skill_id={rows.skill_id}", None),
    ]


B_STATE = """
SELECT (SELECT row(s.name, s.archived_at, s.total_feedback)::text FROM skills s WHERE id = $1),
       (SELECT row(f.status, f.reviewed_by)::text FROM skill_feedback f WHERE id = $2),
       (SELECT row(r.status, r.error_message)::text FROM benchmark_runs r WHERE id = $3),
       (SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $3),
       (SELECT count(*) FROM skill_versions WHERE skill_id = $1),
       (SELECT string_agg(coalesce(changelog, ''), ',') FROM skill_versions WHERE skill_id = $1),
       (SELECT name FROM users WHERE id = $4)
"""


async def test_another_tenants_ids_are_not_found_on_every_route(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    b = api_b.rows
    before = await owner.fetchrow(B_STATE, b.skill_id, b.feedback_id, b.run_id, b.user_id)
    ids = {b.feedback_id, b.measurement_id, b.run_id, b.skill_id, b.version_id, b.user_id}
    missing = "00000000-0000-4000-8000-000000000000"
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        for method, path, body in routes(api_b, api_a):
            foreign = client.request(method, path, json=body)
            never = path
            for row_id in ids:
                never = never.replace(row_id, missing)
            nowhere = client.request(method, never, json=body)
            problem(foreign, 404, "not-found")
            problem(nowhere, 404, "not-found")
            shown = foreign.json()
            for row_id in ids:
                shown = {k: (v.replace(row_id, missing) if isinstance(v, str) else v)
                         for k, v in shown.items()}
                if "errors" in shown:
                    shown["errors"] = [
                        {**e, "message": e["message"].replace(row_id, missing)}
                        for e in shown["errors"]
                    ]
            assert shown == nowhere.json(), (method, path)
    assert await owner.fetchrow(B_STATE, b.skill_id, b.feedback_id, b.run_id, b.user_id) == before


QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
ITEM = re.compile(r'^"(key|tenant)"((?:;[a-z]+=\d+)+)$')


def items(field: str) -> dict[str, dict[str, int]]:
    """A RateLimit or RateLimit-Policy field (a Structured Field list of
    draft-11), parsed: each policy's parameters, in the order given."""
    parsed: dict[str, dict[str, int]] = {}
    for item in field.split(", "):
        match = ITEM.match(item)
        assert match, field
        parsed[match.group(1)] = {
            name: int(value)
            for name, value in (pair.split("=") for pair in match.group(2)[1:].split(";"))
        }
    return parsed


def quota_exceeded(response: httpx.Response, policy: str, limit: int) -> int:
    """Check a 429's shape and headers; return its Retry-After."""
    assert response.status_code == 429, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == QUOTA_EXCEEDED and body["status"] == 429
    assert body["title"] and f"{limit} requests per minute" in body["detail"]
    assert body["violated-policies"] == [policy]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    # Both policies, always, the key's first; the refusing one at r=0 with
    # its wait (the Retry-After).
    policies = items(response.headers["ratelimit-policy"])
    assert list(policies) == ["key", "tenant"] and policies[policy] == {"q": limit, "w": 60}
    assert items(response.headers["ratelimit"])[policy] == {"r": 0, "t": retry_after}
    return retry_after


async def test_a_key_over_its_limit_gets_429s_and_every_answer_says_where_it_stands(
    api: Served, api_a: Tenant
) -> None:
    limited = await create_api_key(api_a.rows.tenant_id, "limited", "read", rate_limit_per_minute=3)
    with httpx.Client(base_url=api.base, headers=api_a.headers(limited.key)) as client:
        ok = client.get("/v1/skills")
        assert ok.status_code == 200
        assert items(ok.headers["ratelimit-policy"]) == {
            "key": {"q": 3, "w": 60}, "tenant": {"q": DEFAULT_TENANT_LIMIT_PER_MINUTE, "w": 60}
        }
        state = items(ok.headers["ratelimit"])
        assert state["key"]["r"] == 2 and 1 <= state["key"]["t"] <= 60
        # An error after the key resolved carries the headers too: a 404 ...
        missing = client.get(f"/v1/skills/{uuid.uuid4()}")
        problem(missing, 404, "not-found")
        assert items(missing.headers["ratelimit"])["key"]["r"] == 1
        # ... and a 403 (the key reads only).
        forbidden = client.post("/v1/users", json={"email": "x@example.com", "name": "X"})
        problem(forbidden, 403, "missing-scope")
        assert items(forbidden.headers["ratelimit"])["key"]["r"] == 0
        retry_after = quota_exceeded(client.get("/v1/skills"), "key", 3)
        assert retry_after == 20  # one request's share of the minute
        # Refused requests are not counted: still refused, still 20 s or less.
        assert quota_exceeded(client.get("/v1/skills"), "key", 3) <= retry_after
        # A 401 comes before any key: it has no rate-limit headers.
        unauthenticated = client.get("/v1/skills", headers={"Authorization": "Bearer x"})
        assert unauthenticated.status_code == 401 and "ratelimit" not in unauthenticated.headers
    # The tenant's other keys keep their own quota.
    assert httpx.get(f"{api.base}/v1/skills", headers=api_a.headers()).status_code == 200


async def test_a_tenant_over_its_limit_gets_429s_whichever_key_it_uses(
    api: Served, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    await owner.execute(
        "UPDATE tenants SET rate_limit_per_minute = 4 WHERE id = $1", api_b.rows.tenant_id
    )
    second = await create_api_key(api_b.rows.tenant_id, "second", "read")
    with httpx.Client(base_url=api.base) as client:
        answers = [
            client.get("/v1/users", headers=api_b.headers(key))
            for key in (api_b.key, second.key, api_b.key, second.key, api_b.key, second.key)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429, 429]
    # Both policies are shown on every answer; the tenant's runs out first.
    assert items(answers[0].headers["ratelimit-policy"])["tenant"] == {"q": 4, "w": 60}
    assert items(answers[3].headers["ratelimit"])["tenant"]["r"] == 0
    for refused_answer in answers[4:]:
        quota_exceeded(refused_answer, "tenant", 4)


async def test_the_key_is_resolved_before_the_body_is_read(api: Served, api_a: Tenant) -> None:
    async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
        # Malformed JSON without a key: the key is what is wrong.
        for headers in ({}, {"Authorization": "Bearer esk_nope"}, {"Authorization": "Basic eA=="}):
            answer = await client.post(
                "/v1/feedback", content=b"{", headers={"content-type": "application/json", **headers}
            )
            problem(answer, 401, "unauthenticated")
            assert "ratelimit" not in answer.headers
        # Not JSON, without a key: 401 too.
        problem(
            await client.post("/v1/feedback", content=b"x", headers={"content-type": "text/plain"}),
            401,
            "unauthenticated",
        )
        # With a key, the body is then checked (and the answer says where the limits stand).
        answer = await client.post(
            "/v1/feedback", content=b"{", headers={"content-type": "application/json", **api_a.headers()}
        )
        problem(answer, 400, "malformed-json")
        assert "ratelimit" in answer.headers
        # The schema and the docs take no key; an unknown route is a 404 without one.
        assert (await client.get("/v1/openapi.json")).status_code == 200
        assert (await client.get("/v1/docs")).status_code == 200
        problem(await client.get("/v1/nope"), 404, "unknown-route")
    # A body announced as far over the limit, never sent: answered 401 at once.
    host, port = api.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST /v1/feedback HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode()
            + b"{" * 1024
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 401"), head
    finally:
        writer.close()
