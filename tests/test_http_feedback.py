"""
The feedback routes over HTTP, against the served app: recording one item
and batches (all or nothing, every bad item listed), reading, listing with
cursors, review and implementation, the streamed training-example export
(and a client that goes away mid-stream), scopes, and another tenant's ids.
Client ids: replays (one item, batches), ids reused for other content or
held by another tenant, a retry after the connection was cut before the
answer arrived; and the two database round trips of one feedback. Skills
named by slug: stored under the tenant's skill (archived ones too), every
unknown slug of a batch listed (another tenant's alike, byte for byte),
neither or both of skill_id and skill_slug refused, replays by slug, and
the round trips of one feedback by slug.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from everyskill import feedback
from everyskill.api_keys import create_api_key
from everyskill.client_ids import FOREIGN_ID
from everyskill.database import APP_URL_VARIABLE
from tests.http_support import (
    add_skill,
    CountingProxy,
    CuttingProxy,
    Served,
    Tenant,
    problem,
    replayed,
    served,
)


def thumbs(tenant: Tenant, **extra: Any) -> dict[str, Any]:
    return {"skill_id": tenant.rows.skill_id, "feedback_type": "thumbs_up", **extra}


def example(tenant: Tenant, index: int) -> dict[str, Any]:
    return {
        "skill_id": tenant.rows.skill_id,
        "feedback_type": "training_example",
        "example_input": f"input {index}",
        "expected_output": f"expected {index}",
    }


async def count(owner: asyncpg.Connection, tenant: Tenant) -> int:
    value = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE tenant_id = $1", tenant.rows.tenant_id
    )
    assert isinstance(value, int)
    return value


async def test_one_item_is_committed_and_answered_with_its_row(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        response = client.post(
            "/v1/feedback",
            json=thumbs(api_a, comment="my key is AKIAIOSFODNN7EXAMPLF ok", source="mcp"),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        row = body["row"]
        assert row["feedback_type"] == "thumbs_up" and row["sentiment"] == 1
        assert row["source"] == "mcp" and row["status"] == "pending"
        assert row["tenant_id"] == api_a.rows.tenant_id
        assert set(body) == {"row", "redactions", "warnings", "replayed"}
        assert body["replayed"] is False and "idempotent-replayed" not in response.headers
        stored = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", row["id"])
        assert stored is not None and stored["comment"] == row["comment"]
        read = client.get(f"/v1/feedback/{row['id']}")
        assert read.status_code == 200 and read.json() == row


async def test_a_batch_is_written_whole(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    items = [thumbs(api_a), example(api_a, 1), {**thumbs(api_a), "feedback_type": "thumbs_down"}]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        response = client.post("/v1/feedback", json={"items": items})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["count"] == 3 and len(set(body["ids"])) == 3
    types = await owner.fetch(
        "SELECT id, feedback_type FROM skill_feedback WHERE id = ANY($1)", body["ids"]
    )
    assert {r["id"]: r["feedback_type"] for r in types} == dict(
        zip(body["ids"], ["thumbs_up", "training_example", "thumbs_down"])
    )
    assert await count(owner, api_a) == before + 3


async def test_a_batch_with_bad_items_lists_every_one_and_writes_nothing(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    aggregates = await owner.fetchrow(
        "SELECT total_feedback, feedback_thumbs_up FROM skills WHERE id = $1", api_a.rows.skill_id
    )
    items = [
        thumbs(api_a),
        {"skill_id": api_a.rows.skill_id, "feedback_type": "suggestion"},  # no suggestion
        thumbs(api_a),
        {"skill_id": api_a.rows.skill_id, "feedback_type": "bug_report"},  # no comment
        thumbs(api_a, quality_score=11),
    ]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        body = problem(client.post("/v1/feedback", json={"items": items}), 422, "validation")
        assert {(e["index"], e["field"]) for e in body["errors"]} == {
            (1, "suggested_content"),
            (3, "comment"),
            (4, "quality_score"),
        }, body
        # Type errors are listed by item too, before anything runs.
        typed = problem(
            client.post(
                "/v1/feedback",
                json={"items": [thumbs(api_a), {"skill_id": 5, "feedback_type": "x"}, {}]},
            ),
            422,
            "validation",
        )
        fields = {(e.get("index"), e["field"]) for e in typed["errors"]}
        assert {(1, "skill_id"), (1, "feedback_type"), (2, "skill_id"), (2, "feedback_type")} <= fields
        # More than 500 items.
        too_many = problem(
            client.post("/v1/feedback", json={"items": [thumbs(api_a)] * 501}), 422, "validation"
        )
        assert too_many["errors"][0]["field"] == "items"
    assert await count(owner, api_a) == before
    assert await owner.fetchrow(
        "SELECT total_feedback, feedback_thumbs_up FROM skills WHERE id = $1", api_a.rows.skill_id
    ) == aggregates


async def test_type_errors_rule_errors_and_repeated_ids_are_listed_in_one_422(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    aggregates = await owner.fetchrow(
        "SELECT total_feedback, feedback_thumbs_up, positive_feedback_pct FROM skills WHERE id = $1",
        api_a.rows.skill_id,
    )
    same = str(uuid.uuid4())
    items = [
        {"skill_id": 5, "feedback_type": "thumbs_up"},  # a type error
        {"skill_id": api_a.rows.skill_id, "feedback_type": "bug_report"},  # no comment
        thumbs(api_a, quality_score=99),  # out of range
        thumbs(api_a, id=same),
        thumbs(api_a, id=same),  # an id given twice
        thumbs(api_a),
        7,  # not an object
    ]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        body = problem(client.post("/v1/feedback", json={"items": items}), 422, "validation")
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (0, "skill_id"),
        (1, "comment"),
        (2, "quality_score"),
        (4, "id"),
        (6, "item"),
    ], body
    assert await count(owner, api_a) == before
    assert await owner.fetchrow(
        "SELECT total_feedback, feedback_thumbs_up, positive_feedback_pct FROM skills WHERE id = $1",
        api_a.rows.skill_id,
    ) == aggregates


async def test_a_batch_naming_another_tenants_skill_is_a_404_naming_the_item(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    items = [thumbs(api_a), thumbs(api_a), {**thumbs(api_a), "skill_id": api_b.rows.skill_id}]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        body = problem(client.post("/v1/feedback", json={"items": items}), 404, "not-found")
        assert body["errors"][0]["index"] == 2 and body["errors"][0]["field"] == "skill_id"
        single = problem(
            client.post("/v1/feedback", json=thumbs(api_b)), 404, "not-found"
        )
        nowhere = problem(
            client.post("/v1/feedback", json={**thumbs(api_a), "skill_id": "no-such-skill"}),
            404,
            "not-found",
        )
    assert single["detail"].replace(api_b.rows.skill_id, "ID") == nowhere["detail"].replace(
        "no-such-skill", "ID"
    )
    assert await count(owner, api_a) == before


async def test_lists_page_with_cursors_and_filters(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        written = client.post(
            "/v1/feedback", json={"items": [example(api_a, i) for i in range(5)]}
        ).json()["ids"]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"feedback_type": "training_example", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/feedback", params=params)
            assert page.status_code == 200, page.text
            seen += [row["id"] for row in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        # One transaction: one created_at, so newest first is by id.
        assert seen == sorted(written, reverse=True)
        problem(client.get("/v1/feedback", params={"cursor": "nonsense"}), 422, "validation")
        bad = problem(client.get("/v1/feedback", params={"limit": 0}), 422, "validation")
        assert bad["errors"][0]["field"] == "limit"
        naive = problem(
            client.get("/v1/feedback", params={"since": "2026-01-01T00:00:00"}), 422, "validation"
        )
        assert naive["errors"][0]["field"] == "since"


async def test_review_and_implemented_by_a_user_of_the_tenant(
    api: Served, api_a: Tenant, api_b: Tenant
) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        feedback_id = client.post("/v1/feedback", json=example(api_a, 0)).json()["row"]["id"]
        stranger = problem(
            client.post(
                f"/v1/feedback/{feedback_id}/review",
                json={"reviewer_id": api_b.rows.user_id, "decision": "accepted"},
            ),
            404,
            "not-found",
        )
        assert "user" in stranger["detail"]
        problem(
            client.post(
                f"/v1/feedback/{feedback_id}/implemented",
                json={"reviewer_id": api_a.rows.user_id},
            ),
            409,
            "invalid-transition",
        )
        accepted = client.post(
            f"/v1/feedback/{feedback_id}/review",
            json={"reviewer_id": api_a.rows.user_id, "decision": "accepted", "notes": "good"},
        )
        assert accepted.status_code == 200, accepted.text
        row = accepted.json()["row"]
        assert row["status"] == "accepted" and row["reviewed_by"] == api_a.rows.user_id
        assert row["review_notes"] == "good" and row["reviewed_at"]
        problem(
            client.post(
                f"/v1/feedback/{feedback_id}/review",
                json={"reviewer_id": api_a.rows.user_id, "decision": "dismissed"},
            ),
            409,
            "already-reviewed",
        )
        done = client.post(
            f"/v1/feedback/{feedback_id}/implemented", json={"reviewer_id": api_a.rows.user_id}
        )
        assert done.status_code == 200 and done.json()["row"]["status"] == "implemented"
        problem(
            client.post(
                f"/v1/feedback/{feedback_id}/review",
                json={"reviewer_id": api_a.rows.user_id, "decision": "maybe"},
            ),
            422,
            "validation",
        )


async def test_the_export_streams_accepted_examples_of_the_tenant_only(
    api: Served, api_a: Tenant, api_b: Tenant
) -> None:
    def accepted(tenant: Tenant, n: int) -> list[str]:
        with httpx.Client(base_url=api.base, headers=tenant.headers()) as client:
            ids: list[str] = client.post(
                "/v1/feedback", json={"items": [example(tenant, i) for i in range(n)]}
            ).json()["ids"]
            for feedback_id in ids:
                reviewed = client.post(
                    f"/v1/feedback/{feedback_id}/review",
                    json={"reviewer_id": tenant.rows.user_id, "decision": "accepted"},
                )
                assert reviewed.status_code == 200
            return ids

    ids_a = accepted(api_a, 3)
    accepted(api_b, 2)
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        with client.stream("GET", "/v1/training-examples.jsonl") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in response.iter_lines() if line]
        assert [line["feedback_id"] for line in lines] == sorted(ids_a)  # oldest first, then id
        first = next(line for line in lines if line["feedback_id"] == ids_a[0])
        assert first["input"] == "input 0" and first["expected_output"] == "expected 0"
        assert first["skill_id"] == api_a.rows.skill_id and first["version"] is None
        of_skill = client.get(
            "/v1/training-examples.jsonl", params={"skill_id": api_a.rows.skill_id}
        )
        assert of_skill.text.count("\n") == 3
        # Another tenant's skill is not found, before the stream starts.
        problem(
            client.get("/v1/training-examples.jsonl", params={"skill_id": api_b.rows.skill_id}),
            404,
            "not-found",
        )


async def test_stalled_exports_hold_no_connection_and_starve_no_tenant(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    # Enough accepted examples that each export outruns the socket's buffers.
    big = "x" * 20_000
    await owner.execute(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, example_input,"
        " expected_output, status, reviewed_at)"
        " SELECT $1, $2, 'training_example', $3, 'y', 'accepted', now()"
        " FROM generate_series(1, 2000)",
        api_a.rows.tenant_id,
        api_a.rows.skill_id,
        big,
    )
    host, port = api.base.removeprefix("http://").split(":")
    stalled = []
    try:
        # More stalled clients than the pool has connections (10).
        for _ in range(12):
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(
                f"GET /v1/training-examples.jsonl HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {api_a.key}\r\n\r\n".encode()
            )
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")  # then it reads no more
            stalled.append(sock)
        await asyncio.sleep(1)
        # The server waits on the clients with no export query running or open.
        assert await export_queries(owner) == 0
        # Another tenant is answered at once: the pool is not held by the exports.
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=api.base, timeout=15) as client:
            answer = await client.get("/v1/skills", headers=api_b.headers())
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 3
    finally:
        for sock in stalled:
            sock.close()


async def test_a_paged_export_sends_each_row_once_in_order(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    # Several pages (feedback.EXPORT_PAGE lines each), rows of one instant included.
    count = 2 * feedback.EXPORT_PAGE + 37
    await owner.execute(
        "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, example_input,"
        " expected_output, status, reviewed_at, created_at)"
        " SELECT $1, $2, 'training_example', 'in ' || i, 'y', 'accepted', now(),"
        "        '2026-01-01T00:00:00Z'::timestamptz + (i / 7) * interval '1 second'"
        " FROM generate_series(1, $3) i",
        api_a.rows.tenant_id,
        api_a.rows.skill_id,
        count,
    )
    expected = [
        r["id"]
        for r in await owner.fetch(
            "SELECT id FROM skill_feedback WHERE tenant_id = $1 AND status = 'accepted'"
            " AND feedback_type = 'training_example' ORDER BY created_at, id",
            api_a.rows.tenant_id,
        )
    ]
    async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
        answer = await client.get("/v1/training-examples.jsonl", headers=api_a.headers())
    assert answer.status_code == 200
    sent = [json.loads(line)["feedback_id"] for line in answer.text.splitlines()]
    assert sent == expected and len(expected) >= count


async def export_queries(owner: asyncpg.Connection) -> int:
    """Backends of the login running the export's query or holding it open."""
    found: int = await owner.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND usename = 'everyskill_api'"
        " AND state IN ('active', 'idle in transaction') AND query LIKE '%example_input%'"
    )
    return found


async def test_scopes_of_the_feedback_routes(api: Served, api_a: Tenant) -> None:
    reader = (await create_api_key(api_a.rows.tenant_id, "reader", "read")).key
    writer = (await create_api_key(api_a.rows.tenant_id, "hook", "feedback:write")).key
    with httpx.Client(base_url=api.base) as client:
        refused = problem(
            client.post("/v1/feedback", json=thumbs(api_a), headers=api_a.headers(reader)),
            403,
            "missing-scope",
        )
        assert refused["scope"] == "feedback:write" and "feedback:write" in refused["detail"]
        for path in ("/v1/feedback", f"/v1/feedback/{api_a.rows.feedback_id}",
                     "/v1/training-examples.jsonl"):
            body = problem(client.get(path, headers=api_a.headers(writer)), 403, "missing-scope")
            assert body["scope"] == "read"
        # Reviewing needs its own scope: neither a reader nor a key that
        # sends feedback (a hook's) may accept feedback.
        for key in (reader, writer):
            for path in ("review", "implemented"):
                body = problem(
                    client.post(
                        f"/v1/feedback/{api_a.rows.feedback_id}/{path}",
                        json={"reviewer_id": api_a.rows.user_id, "decision": "accepted"},
                        headers=api_a.headers(key),
                    ),
                    403,
                    "missing-scope",
                )
                assert body["scope"] == "feedback:review"
        assert client.post(
            "/v1/feedback", json=thumbs(api_a), headers=api_a.headers(writer)
        ).status_code == 201
        assert client.get("/v1/feedback", headers=api_a.headers(reader)).status_code == 200


async def total_feedback(owner: asyncpg.Connection, tenant: Tenant) -> int:
    total: int = await owner.fetchval(
        "SELECT total_feedback FROM skills WHERE id = $1", tenant.rows.skill_id
    )
    return total


async def test_an_item_with_its_own_id_is_written_once_and_replayed(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    before = await total_feedback(owner, api_a)
    item = thumbs(api_a, id=str(uuid.uuid4()).upper(), comment="clear")
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        first = client.post("/v1/feedback", json=item)
        assert first.status_code == 201 and first.json()["replayed"] is False
        assert "idempotent-replayed" not in first.headers
        row = first.json()["row"]
        assert row["id"] == item["id"].lower()
        again = replayed(client.post("/v1/feedback", json=item))
        assert again["replayed"] is True and again["row"] == row
        # The same id for other content: refused, nothing written.
        other = problem(client.post("/v1/feedback", json={**item, "comment": "vague"}), 409, "conflict")
        assert other["errors"][0]["field"] == "id" and "different content" in other["detail"]
        # An id that is not a UUID: 422 naming it.
        bad = problem(client.post("/v1/feedback", json=thumbs(api_a, id="nope")), 422, "validation")
        assert bad["errors"][0]["field"] == "id"
    # Tenant B sending A's id: the same refusal whatever the row is.
    with httpx.Client(base_url=api.base, headers=api_b.headers()) as client:
        foreign = problem(client.post("/v1/feedback", json=thumbs(api_b, id=row["id"])), 409, "conflict")
        assert foreign["detail"] == f"id: {FOREIGN_ID}"
        assert foreign["errors"] == [{"field": "id", "message": foreign["detail"]}]
        assert row["id"] not in foreign["detail"] and api_a.rows.skill_id not in str(foreign)
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE id = $1", row["id"]) == 1
    assert await total_feedback(owner, api_a) == before + 1
    assert await total_feedback(owner, api_b) == 1  # make_tenant's one row


async def test_a_batch_with_ids_lists_its_replays(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    before = await total_feedback(owner, api_a)
    items = [thumbs(api_a, id=str(uuid.uuid4())) for _ in range(3)]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        first = client.post("/v1/feedback", json={"items": items[:2]})
        assert first.status_code == 201, first.text
        assert first.json()["replayed"] == [] and first.json()["count"] == 2
        # Two replays and one new item: something was written, 201.
        mixed = client.post("/v1/feedback", json={"items": items})
        assert mixed.status_code == 201 and "idempotent-replayed" not in mixed.headers
        assert mixed.json()["ids"] == [item["id"] for item in items]
        assert mixed.json()["replayed"] == [items[0]["id"], items[1]["id"]]
        assert mixed.json()["count"] == 1
        # Only replays: 200.
        only = replayed(client.post("/v1/feedback", json={"items": items}))
        assert only["replayed"] == only["ids"] and only["count"] == 0
        # An id given twice: 422 naming the second item.
        twice = problem(
            client.post("/v1/feedback", json={"items": [thumbs(api_a, id=items[0]["id"])] * 2}),
            422,
            "validation",
        )
        assert [(e["index"], e["field"]) for e in twice["errors"]] == [(1, "id")]
    # Tenant B's batch naming one of A's ids at item 1: 409 naming it, nothing written.
    fresh = str(uuid.uuid4())
    with httpx.Client(base_url=api.base, headers=api_b.headers()) as client:
        refused = problem(
            client.post(
                "/v1/feedback",
                json={"items": [thumbs(api_b, id=fresh), thumbs(api_b, id=items[2]["id"])]},
            ),
            409,
            "conflict",
        )
    assert refused["errors"][0]["index"] == 1 and refused["errors"][0]["field"] == "id"
    assert FOREIGN_ID in refused["detail"]
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE id = $1", fresh) == 0
    assert await total_feedback(owner, api_a) == before + 3


async def test_a_retry_after_the_connection_was_cut_is_a_replay(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    before = await total_feedback(owner, api_a)
    item = thumbs(api_a, id=str(uuid.uuid4()), comment="cut off")
    host, port = api.base.removeprefix("http://").split(":")
    proxy = CuttingProxy(host, int(port))
    async with proxy.serving() as cut, httpx.AsyncClient(headers=api_a.headers()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{cut}/v1/feedback", json=item)
        # The server had answered 201 (committed); the client never saw it.
        assert proxy.withheld[0].startswith(b"HTTP/1.1 201 ")
        retry = await client.post(f"{api.base}/v1/feedback", json=item)
    body = replayed(retry)
    assert body["replayed"] is True and body["row"]["id"] == item["id"]
    assert body["row"]["comment"] == "cut off"
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE id = $1", item["id"]) == 1
    assert await total_feedback(owner, api_a) == before + 1


async def stored_skills(owner: asyncpg.Connection, ids: list[str]) -> list[str]:
    """The skill of each feedback row, in the order of ``ids``."""
    rows = await owner.fetch("SELECT id, skill_id FROM skill_feedback WHERE id = ANY($1)", ids)
    by_id = {row["id"]: row["skill_id"] for row in rows}
    return [by_id[feedback_id] for feedback_id in ids]


async def test_a_skill_is_named_by_its_slug_alone_or_in_a_batch(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    """Both tenants have a review-code: each key's finds its own tenant's.
    An archived skill's slug names it, as its id does. A key that may only
    write feedback (an MCP server's) names skills it cannot list."""
    tests = await add_skill(owner, api_a, "write-tests")
    old = await add_skill(owner, api_a, "old-review", archived=True)
    mcp = (await create_api_key(api_a.rows.tenant_id, "mcp", "feedback:write")).key
    with httpx.Client(base_url=api.base, headers=api_a.headers(mcp)) as client:
        one = client.post(
            "/v1/feedback", json={"skill_slug": "review-code", "feedback_type": "thumbs_up"}
        )
        assert one.status_code == 201, one.text
        assert one.json()["row"]["skill_id"] == api_a.rows.skill_id
        # Surrounding whitespace is stripped, as from every name; null is not given.
        spaced = client.post(
            "/v1/feedback",
            json={"skill_slug": " write-tests ", "skill_id": None, "feedback_type": "thumbs_down"},
        )
        assert spaced.status_code == 201 and spaced.json()["row"]["skill_id"] == tests
        items = [
            {"skill_slug": "review-code", "feedback_type": "thumbs_up"},
            {"skill_id": tests, "feedback_type": "thumbs_up"},
            {"skill_slug": "write-tests", "feedback_type": "bug_report", "comment": "flaky"},
            {"skill_slug": "old-review", "feedback_type": "thumbs_down"},
            {"skill_slug": "review-code", "feedback_type": "thumbs_down"},
        ]
        batch = client.post("/v1/feedback", json={"items": items})
        assert batch.status_code == 201, batch.text
    assert await stored_skills(owner, [one.json()["row"]["id"], *batch.json()["ids"]]) == [
        api_a.rows.skill_id, api_a.rows.skill_id, tests, tests, old, api_a.rows.skill_id,
    ]
    # The aggregates of the archived skill count what was recorded by slug.
    assert await owner.fetchval("SELECT total_feedback FROM skills WHERE id = $1", old) == 1
    assert await total_feedback(owner, api_b) == 1  # B's review-code got nothing


async def test_unknown_slugs_are_404s_naming_every_item_and_nothing_is_written(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    """Every item whose slug names no skill of the tenant is listed (a
    client re-attributes them and resends); another tenant's slug is
    answered byte for byte as a slug no skill has."""
    elsewhere = await add_skill(owner, api_b, "only-in-b")
    before = await count(owner, api_a)
    aggregates = await total_feedback(owner, api_a)
    items = [
        {"skill_slug": "review-code", "feedback_type": "thumbs_up"},
        {"skill_slug": "nowhere", "feedback_type": "thumbs_up"},
        thumbs(api_a),
        {"skill_slug": "only-in-b", "feedback_type": "thumbs_up"},
        {"skill_slug": "nowhere", "feedback_type": "thumbs_down"},
    ]
    single = {"skill_slug": "only-in-b", "feedback_type": "thumbs_up"}
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        batch_foreign = client.post("/v1/feedback", json={"items": items})
        single_foreign = client.post("/v1/feedback", json=single)
        body = problem(batch_foreign, 404, "not-found")
        assert [(e["index"], e["field"]) for e in body["errors"]] == [
            (1, "skill_slug"), (3, "skill_slug"), (4, "skill_slug"),
        ]
        assert "'nowhere'" in body["errors"][0]["message"]
        assert "'only-in-b'" in body["errors"][1]["message"]
        assert "nowhere" in body["detail"] and "only-in-b" in body["detail"]
        one = problem(single_foreign, 404, "not-found")
        assert one["errors"] == [{"field": "skill_slug", "message": one["detail"]}]
        # Once B's skill has another slug, only-in-b is a slug no skill has.
        await owner.execute("UPDATE skills SET slug = 'moved-in-b' WHERE id = $1", elsewhere)
        batch_unknown = client.post("/v1/feedback", json={"items": items})
        single_unknown = client.post("/v1/feedback", json=single)
    assert batch_foreign.content == batch_unknown.content
    assert single_foreign.content == single_unknown.content
    assert elsewhere not in batch_foreign.text and api_b.rows.tenant_id not in batch_foreign.text
    assert await count(owner, api_a) == before
    assert await total_feedback(owner, api_a) == aggregates


async def test_naming_the_skill_twice_or_not_at_all_is_a_422(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    before = await count(owner, api_a)
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        neither = problem(
            client.post("/v1/feedback", json={"feedback_type": "thumbs_up"}), 422, "validation"
        )
        assert [(e.get("index"), e["field"]) for e in neither["errors"]] == [(None, "skill_id")]
        assert "skill_slug" in neither["errors"][0]["message"]
        both = problem(
            client.post("/v1/feedback", json=thumbs(api_a, skill_slug="review-code")),
            422,
            "validation",
        )
        assert [(e.get("index"), e["field"]) for e in both["errors"]] == [(None, "skill_slug")]
        assert "not both" in both["errors"][0]["message"]
        # In a batch, with the items' other problems, in one 422.
        items = [
            {"feedback_type": "thumbs_up", "sentiment": 5},
            thumbs(api_a, skill_slug="review-code", sentiment=5),
            {"skill_slug": "review-code", "feedback_type": "thumbs_up"},
            {"skill_id": api_a.rows.skill_id, "skill_slug": "x", "feedback_type": "nope"},
            {"skill_slug": "", "feedback_type": "thumbs_up"},
        ]
        batch = problem(client.post("/v1/feedback", json={"items": items}), 422, "validation")
    assert {(e["index"], e["field"]) for e in batch["errors"]} == {
        (0, "skill_id"), (0, "sentiment"), (1, "skill_slug"), (1, "sentiment"),
        (3, "skill_slug"), (3, "feedback_type"), (4, "skill_slug"),
    }, batch
    assert await count(owner, api_a) == before


async def test_an_item_named_by_slug_replays_as_one_named_by_id(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    """The resolved id is what is stored and compared: the same id sent by
    slug or by id is the same item; by another skill's slug, a conflict."""
    tests = await add_skill(owner, api_a, "write-tests")
    before = await total_feedback(owner, api_a)
    item = {"id": str(uuid.uuid4()), "skill_slug": "review-code", "feedback_type": "thumbs_up"}
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        first = client.post("/v1/feedback", json=item)
        assert first.status_code == 201, first.text
        row = first.json()["row"]
        assert replayed(client.post("/v1/feedback", json=item))["row"] == row
        by_id = {**item, "skill_slug": None, "skill_id": api_a.rows.skill_id}
        assert replayed(client.post("/v1/feedback", json=by_id))["row"] == row
        other = problem(
            client.post("/v1/feedback", json={**item, "skill_slug": "write-tests"}), 409, "conflict"
        )
        assert other["errors"][0]["field"] == "id"
        # A batch sent by slug, then resent by id: replays only.
        items = [
            {"id": str(uuid.uuid4()), "skill_slug": slug, "feedback_type": "thumbs_down"}
            for slug in ("review-code", "write-tests", "review-code")
        ]
        sent = client.post("/v1/feedback", json={"items": items})
        assert sent.status_code == 201 and sent.json()["count"] == 3, sent.text
        resent = [
            {"id": i["id"], "skill_id": skill, "feedback_type": "thumbs_down"}
            for i, skill in zip(items, (api_a.rows.skill_id, tests, api_a.rows.skill_id))
        ]
        again = replayed(client.post("/v1/feedback", json={"items": resent}))
        assert again["replayed"] == [i["id"] for i in items] and again["count"] == 0
        assert replayed(client.post("/v1/feedback", json={"items": items}))["count"] == 0
    assert await total_feedback(owner, api_a) == before + 3
    assert await stored_skills(owner, [i["id"] for i in items]) == [
        api_a.rows.skill_id, tests, api_a.rows.skill_id,
    ]


def test_one_feedback_costs_two_database_round_trips(
    api_a: Tenant, app_url_for_tests: str
) -> None:
    """The served app's login connects through a proxy counting round trips:
    POST /v1/feedback is the key's resolution (one statement that counts the
    rate limits too) and the write (one statement, in an autocommit scope).
    Named by its slug, the skill is looked up first, in one transaction
    with the write: BEGIN (with the switch), the lookup, the write and
    COMMIT, five round trips in all."""
    url = urllib.parse.urlsplit(app_url_for_tests)
    query = urllib.parse.parse_qs(url.query)
    socket_dir, port = query["host"][0], query.get("port", ["5432"])[0]
    proxy = CountingProxy(f"{socket_dir}/.s.PGSQL.{port}")
    here = tempfile.mkdtemp(prefix="es")  # a short path: a socket's is limited
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_unix_server(proxy.handle, path=f"{here}/.s.PGSQL.{port}"), loop
    ).result()
    query["host"] = [here]
    through = url._replace(query=urllib.parse.urlencode(query, doseq=True)).geturl()
    try:
        with served(Path(here) / "server.log", {APP_URL_VARIABLE: through}) as counted:
            with httpx.Client(base_url=counted.base, headers=api_a.headers()) as client:
                for _ in range(3):  # the pool's connections prepare their statements
                    assert client.post("/v1/feedback", json=thumbs(api_a)).status_code == 201
                proxy.round_trips = 0
                answer = client.post("/v1/feedback", json=thumbs(api_a, comment="counted"))
                round_trips = proxy.round_trips
                by_slug = {"skill_slug": "review-code", "feedback_type": "thumbs_up"}
                for _ in range(3):
                    assert client.post("/v1/feedback", json=by_slug).status_code == 201
                proxy.round_trips = 0
                named = client.post("/v1/feedback", json={**by_slug, "comment": "named"})
                round_trips_by_slug = proxy.round_trips
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
    assert answer.status_code == 201 and answer.json()["row"]["comment"] == "counted"
    assert round_trips == 2
    assert named.status_code == 201 and named.json()["row"]["skill_id"] == api_a.rows.skill_id
    assert round_trips_by_slug == 5
