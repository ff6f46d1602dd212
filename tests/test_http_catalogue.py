"""
The catalogue routes over HTTP, against the served app: skills (created,
read with their aggregates, changed, archived and unarchived, listed),
versions (published, listed, read, changelog changed; a version reached
through another skill is not found), users, refusals (422 naming the
field, 409 for a taken slug or email), scopes, and creates with client ids
(replayed, reused for other content, another tenant's).
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
import httpx

from everyskill.api_keys import create_api_key
from everyskill.client_ids import FOREIGN_ID
from tests.http_support import Served, Tenant, problem, replayed


async def test_skills_from_creation_to_archive(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        created = client.post(
            "/v1/skills",
            json={"slug": "write-tests", "name": "Write tests", "author_id": api_a.rows.user_id},
        )
        assert created.status_code == 201, created.text
        skill = created.json()["row"]
        assert skill["slug"] == "write-tests" and skill["total_feedback"] == 0
        assert skill["positive_feedback_pct"] is None and skill["archived_at"] is None
        taken = problem(
            client.post("/v1/skills", json={"slug": "write-tests", "name": "Again"}), 409, "conflict"
        )
        assert taken["errors"][0]["field"] == "slug"
        bad = problem(client.post("/v1/skills", json={"slug": "Not A Slug", "name": ""}), 422,
                      "validation")
        assert {e["field"] for e in bad["errors"]} == {"slug", "name"}
        # Aggregates: a thumbs up through the API shows in the skill's row.
        assert client.post(
            "/v1/feedback", json={"skill_id": skill["id"], "feedback_type": "thumbs_up"}
        ).status_code == 201
        read = client.get(f"/v1/skills/{skill['id']}").json()
        assert read["total_feedback"] == 1 and read["positive_feedback_pct"] == 100
        changed = client.patch(
            f"/v1/skills/{skill['id']}", json={"name": "Write good tests", "description": None}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["row"]["name"] == "Write good tests"
        assert changed.json()["row"]["slug"] == "write-tests"
        problem(client.patch(f"/v1/skills/{skill['id']}", json={}), 422, "validation")
        problem(client.patch(f"/v1/skills/{skill['id']}", json={"slug": None}), 422, "validation")
        archived = client.post(f"/v1/skills/{skill['id']}/archive")
        assert archived.status_code == 200 and archived.json()["row"]["archived_at"]
        listed = [s["id"] for s in client.get("/v1/skills").json()["items"]]
        assert skill["id"] not in listed and api_a.rows.skill_id in listed
        with_archived = client.get("/v1/skills", params={"include_archived": True}).json()
        assert skill["id"] in [s["id"] for s in with_archived["items"]]
        problem(
            client.post(f"/v1/skills/{skill['id']}/versions", json={"content": "x"}),
            409,
            "invalid-transition",
        )
        back = client.post(f"/v1/skills/{skill['id']}/unarchive")
        assert back.status_code == 200 and back.json()["row"]["archived_at"] is None
    stored = await owner.fetchval("SELECT name FROM skills WHERE id = $1", skill["id"])
    assert stored == "Write good tests"


async def test_a_skill_is_listed_by_its_slug(api: Served, api_a: Tenant, api_b: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        found = client.get("/v1/skills", params={"slug": "review-code"})
        missing = client.get("/v1/skills", params={"slug": "no-such-skill"})
    assert found.status_code == 200, found.text
    assert [s["id"] for s in found.json()["items"]] == [api_a.rows.skill_id]
    assert missing.status_code == 200 and missing.json() == {"items": [], "next_cursor": None}
    # Tenant B's skill of the same slug is B's alone.
    with httpx.Client(base_url=api.base, headers=api_b.headers()) as client:
        theirs = client.get("/v1/skills", params={"slug": "review-code"}).json()["items"]
    assert [s["id"] for s in theirs] == [api_b.rows.skill_id]


async def test_versions_of_a_skill(api: Served, api_a: Tenant, owner: asyncpg.Connection) -> None:
    skill_id = api_a.rows.skill_id
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        published = [
            client.post(
                f"/v1/skills/{skill_id}/versions",
                json={"content": f"Review it, take {n}.", "changelog": f"take {n}"},
            )
            for n in (2, 3)
        ]
        assert [p.status_code for p in published] == [201, 201]
        assert [p.json()["row"]["version"] for p in published] == [2, 3]
        page = client.get(f"/v1/skills/{skill_id}/versions", params={"limit": 2}).json()
        assert [v["version"] for v in page["items"]] == [3, 2] and page["next_cursor"] == "2"
        last = client.get(
            f"/v1/skills/{skill_id}/versions", params={"cursor": page["next_cursor"]}
        ).json()
        assert [v["version"] for v in last["items"]] == [1] and last["next_cursor"] is None
        version_id = published[0].json()["row"]["id"]
        assert client.get(f"/v1/skills/{skill_id}/versions/{version_id}").json()["version"] == 2
        changed = client.patch(
            f"/v1/skills/{skill_id}/versions/{version_id}", json={"changelog": "second take"}
        )
        assert changed.status_code == 200 and changed.json()["row"]["changelog"] == "second take"
        problem(
            client.patch(
                f"/v1/skills/{skill_id}/versions/{version_id}", json={"content": "rewritten"}
            ),
            422,
            "validation",
        )
        other = client.post("/v1/skills", json={"slug": "other", "name": "Other"}).json()["row"]
        problem(client.get(f"/v1/skills/{other['id']}/versions/{version_id}"), 404, "not-found")
        problem(
            client.patch(f"/v1/skills/{other['id']}/versions/{version_id}", json={"changelog": "x"}),
            404,
            "not-found",
        )
        problem(client.post(f"/v1/skills/{skill_id}/versions", json={"content": "  "}), 422,
                "validation")
    assert await owner.fetchval(
        "SELECT content FROM skill_versions WHERE id = $1", version_id
    ) == "Review it, take 2."


async def test_users(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        created = client.post("/v1/users", json={"email": "Grace@Example.COM", "name": "Grace"})
        assert created.status_code == 201, created.text
        user = created.json()["row"]
        assert user["email"] == "Grace@example.com"
        taken = problem(
            client.post("/v1/users", json={"email": "Grace@example.com", "name": "G"}),
            409,
            "conflict",
        )
        assert taken["errors"][0]["field"] == "email"
        problem(client.post("/v1/users", json={"email": "nobody", "name": "N"}), 422, "validation")
        renamed = client.patch(f"/v1/users/{user['id']}", json={"name": "Grace Hopper"})
        assert renamed.status_code == 200 and renamed.json()["row"]["name"] == "Grace Hopper"
        assert client.get(f"/v1/users/{user['id']}").json()["name"] == "Grace Hopper"
        listed = client.get("/v1/users").json()["items"]
        assert {u["id"] for u in listed} == {user["id"], api_a.rows.user_id}


async def test_scopes_of_the_catalogue_routes(api: Served, api_a: Tenant) -> None:
    reader = (await create_api_key(api_a.rows.tenant_id, "reader", "read")).key
    staff = (await create_api_key(api_a.rows.tenant_id, "catalogue", "catalogue:write")).key
    rows = api_a.rows
    writes = [
        ("POST", "/v1/skills", {"slug": "x", "name": "x"}),
        ("PATCH", f"/v1/skills/{rows.skill_id}", {"name": "x"}),
        ("POST", f"/v1/skills/{rows.skill_id}/archive", None),
        ("POST", f"/v1/skills/{rows.skill_id}/unarchive", None),
        ("POST", f"/v1/skills/{rows.skill_id}/versions", {"content": "x"}),
        ("PATCH", f"/v1/skills/{rows.skill_id}/versions/{rows.version_id}", {"changelog": "x"}),
        ("POST", "/v1/users", {"email": "a@b.c", "name": "x"}),
        ("PATCH", f"/v1/users/{rows.user_id}", {"name": "x"}),
    ]
    reads = [
        "/v1/skills",
        f"/v1/skills/{rows.skill_id}",
        f"/v1/skills/{rows.skill_id}/versions",
        f"/v1/skills/{rows.skill_id}/versions/{rows.version_id}",
        "/v1/users",
        f"/v1/users/{rows.user_id}",
    ]
    with httpx.Client(base_url=api.base) as client:
        for method, path, body in writes:
            refused = problem(
                client.request(method, path, json=body, headers=api_a.headers(reader)),
                403,
                "missing-scope",
            )
            assert refused["scope"] == "catalogue:write", path
        for path in reads:
            assert problem(client.get(path, headers=api_a.headers(staff)), 403, "missing-scope")[
                "scope"
            ] == "read"
        assert client.post(
            "/v1/users", json={"email": "s@example.com", "name": "S"}, headers=api_a.headers(staff)
        ).status_code == 201


async def test_creates_with_client_ids_are_replayed_and_conflicts_refused(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    tag = uuid.uuid4().hex[:8]
    creates: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
        ("/v1/skills", {"slug": f"replayed-{tag}", "name": "Replayed"}, {"name": "Other"}, "skills"),
        (
            f"/v1/skills/{api_a.rows.skill_id}/versions",
            {"content": "Do it carefully.", "changelog": "first"},
            {"content": "Do it quickly."},
            "skill_versions",
        ),
        ("/v1/users", {"email": f"r-{tag}@example.com", "name": "R"}, {"name": "S"}, "users"),
    ]
    with httpx.Client(base_url=api.base) as client:
        for path, body, change, table in creates:
            row_id = str(uuid.uuid4())
            first = client.post(path, json={**body, "id": row_id}, headers=api_a.headers())
            assert first.status_code == 201, (path, first.text)
            assert first.json()["replayed"] is False and first.json()["row"]["id"] == row_id
            again = replayed(client.post(path, json={**body, "id": row_id}, headers=api_a.headers()))
            assert again["row"] == first.json()["row"] and again["replayed"] is True
            other = problem(
                client.post(path, json={**body, **change, "id": row_id}, headers=api_a.headers()),
                409,
                "conflict",
            )
            assert other["errors"][0]["field"] == "id", path
            # Tenant B using A's id (on its own skill for a version).
            b_path = path.replace(api_a.rows.skill_id, api_b.rows.skill_id)
            b_body = {**body, "slug": f"b-{tag}"} if "slug" in body else body
            foreign = problem(
                client.post(b_path, json={**b_body, "id": row_id}, headers=api_b.headers()),
                409,
                "conflict",
            )
            assert foreign["detail"] == f"id: {FOREIGN_ID}", path
            stored = await owner.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", row_id)
            assert stored == 1, path


async def test_crafted_cursors_are_422s_naming_the_cursor(api: Served, api_a: Tenant) -> None:
    def raw(payload: bytes) -> str:
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")

    crafted = [
        raw(b"[" * 3000 + b"]" * 3000),
        raw(b'["users","0001-01-01T00:00:00+14:00","x"]'),
        raw(b'["skills","9999-12-31T23:59:59-14:00","x"]'),
        raw(b'["skill_feedback","9999-12-31T23:59:59-14:00","x"]'),
        raw(b'["benchmark_runs","0001-01-01T00:00:00+14:00","x"]'),
    ]
    paths = ["/v1/skills", "/v1/users", "/v1/feedback", "/v1/token-measurements",
             "/v1/benchmark-runs", f"/v1/skills/{api_a.rows.skill_id}/versions"]
    async with httpx.AsyncClient(base_url=api.base, headers=api_a.headers(), timeout=30) as client:
        for path in paths:
            for cursor in crafted:
                body = problem(await client.get(path, params={"cursor": cursor}), 422, "validation")
                assert [e["field"] for e in body["errors"]] == ["cursor"], (path, body)
