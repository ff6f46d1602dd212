"""
Errors over HTTP are RFC 9457 problems, against the served app: malformed
JSON (400), an unknown route (404), a method a route lacks (405 with
Allow), bodies over the route's size (413, with and without a
Content-Length) or not JSON (415), the 422 shape, the database restarting
(503 with Retry-After, then served again), and an unexpected error (a 500
problem whose traceback is logged, not sent).
"""

from __future__ import annotations

import gzip

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from piccolo.engine.postgres import PostgresEngine

from everyskill.http_api import create_api_app
from everyskill.http_api.bodies import BATCH_BODY_LIMIT, BODY_LIMIT
from everyskill.http_api.problems import DATABASE_RETRY_AFTER, TYPES, type_uri
from tests.cluster import Cluster, private_cluster
from tests.http_support import PROBLEM, Served, Tenant, problem, served
from tests.support import connected, make_tenant, run_piccolo


async def test_malformed_json_unknown_routes_and_methods(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        bad = client.post(
            "/v1/skills", content=b'{"slug": ', headers={"Content-Type": "application/json"}
        )
        problem(bad, 400, "malformed-json")
        problem(client.get("/v1/nowhere"), 404, "unknown-route")
        # The mount's own path, without a slash, is the API's too (not the admin's).
        for method in ("GET", "POST", "HEAD"):
            root = client.request(method, "/v1", follow_redirects=False)
            assert root.status_code == 404 and root.headers["content-type"] == PROBLEM, root
            if method != "HEAD":
                assert "/v1/docs" in problem(root, 404, "unknown-route")["detail"]
        wrong = client.delete(f"/v1/skills/{api_a.rows.skill_id}")
        problem(wrong, 405, "method-not-allowed")
        assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "PATCH"}


async def test_bodies_over_the_size_or_not_json(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers(), timeout=60) as client:
        big = b'{"slug": "x", "name": "' + b"n" * BODY_LIMIT + b'"}'
        body = problem(
            client.post("/v1/skills", content=big, headers={"Content-Type": "application/json"}),
            413,
            "content-too-large",
        )
        assert str(BODY_LIMIT) in body["detail"]

        def chunks(total: int) -> Iterator[bytes]:
            yield b'{"items": ['
            sent = 11
            while sent < total:
                yield b" " * 65536
                sent += 65536

        # Without a Content-Length (chunked): counted while read.
        chunked = client.post(
            "/v1/feedback",
            content=chunks(BATCH_BODY_LIMIT + 1),
            headers={"Content-Type": "application/json"},
        )
        problem(chunked, 413, "content-too-large")
        # A batch route takes more than a single-item route.
        under = client.post(
            "/v1/feedback",
            content=b'{"items": []}' + b" " * (BODY_LIMIT + 10),
            headers={"Content-Type": "application/json"},
        )
        problem(under, 422, "validation")
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            request = client.build_request(
                "POST", "/v1/skills", content=b'{"slug": "x", "name": "x"}', headers=headers
            )
            assert "content-type" not in request.headers or content_type
            problem(client.send(request), 415, "unsupported-media-type")
        # JSON with a charset, or a +json type, is JSON.
        assert client.post(
            "/v1/skills",
            content=b'{"slug": "charset", "name": "x"}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        ).status_code == 201


def test_a_compressed_body_is_a_415_saying_identity(api: Served, api_a: Tenant) -> None:
    body = gzip.compress(b'{"slug": "zipped", "name": "x"}')
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        for encoding in ("gzip", "br", "identity, gzip"):
            answer = client.post(
                "/v1/skills",
                content=body,
                headers={"Content-Type": "application/json", "Content-Encoding": encoding},
            )
            refused = problem(answer, 415, "unsupported-media-type")
            assert answer.headers["accept-encoding"] == "identity", encoding
            assert "Content-Encoding" in refused["detail"]
        plain = client.post(
            "/v1/skills",
            content=b'{"slug": "identity", "name": "x"}',
            headers={"Content-Type": "application/json", "Content-Encoding": "identity"},
        )
        assert plain.status_code == 201, plain.text


async def test_the_422_shape(api: Served, api_a: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        body = problem(
            client.post("/v1/skills", json={"slug": 1, "name": "x", "colour": "red"}),
            422,
            "validation",
        )
        assert {(e["field"], "index" in e) for e in body["errors"]} == {
            ("slug", False),
            ("colour", False),
        }
        assert all(e["message"] for e in body["errors"])
        query = problem(client.get("/v1/skills", params={"limit": "many"}), 422, "validation")
        assert query["errors"] == [
            {"field": "limit", "message": query["errors"][0]["message"]}
        ]


def test_every_problem_type_is_documented_in_the_schema(api: Served) -> None:
    schema = httpx.get(f"{api.base}/v1/openapi.json").json()
    documented = Path("docs/http-api.md").read_text()
    for name in TYPES:
        assert type_uri(name) in documented, name
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    # problem+json only: never an application/json error.
                    assert set(response["content"]) == {"application/problem+json"}, (
                        path, method, status,
                    )
            for status in ("401", "403", "404", "422", "503"):
                assert status in operation["responses"], (path, method, status)
            retry_after = operation["responses"]["503"]["headers"]["Retry-After"]
            assert retry_after["required"] is True, (path, method)
    problem_schema = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "errors"} <= set(problem_schema["properties"])
    assert "FieldProblem" in schema["components"]["schemas"]


# -- the database goes away ---------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with private_cluster(tmp_path_factory.mktemp("pg")) as cluster:
        run_piccolo(cluster.url, "migrations", "forwards", "all")
        yield cluster


async def test_503_with_retry_after_while_the_database_restarts(
    cluster: Cluster, tmp_path: Path
) -> None:
    async with connected(cluster.url) as owner:
        rows = await make_tenant(owner, "restart")
        slug = await owner.fetchval("SELECT slug FROM tenants WHERE id = $1", rows.tenant_id)
    output = run_piccolo(
        cluster.url, "everyskill", "create_api_key", "--tenant", slug, "--name", "t",
        "--scopes", "read,feedback:write",
    )
    match = re.search(r"esk_[0-9A-Za-z]{38}", output)
    assert match, output
    env = {
        "DATABASE_URL": cluster.url,
        "EVERYSKILL_APP_DATABASE_URL": cluster.url.replace("everyskill@", "everyskill_api@", 1),
    }
    headers = {"Authorization": f"Bearer {match.group()}"}
    with served(tmp_path / "server.log", env) as server, httpx.Client(
        base_url=server.base, headers=headers, timeout=10
    ) as client:
        assert client.get(f"/v1/skills/{rows.skill_id}").status_code == 200
        await cluster.run_async(cluster.pg_ctl("-m", "fast", "stop"))
        try:
            for request in (
                lambda: client.get(f"/v1/skills/{rows.skill_id}"),
                lambda: client.post(
                    "/v1/feedback", json={"skill_id": rows.skill_id, "feedback_type": "thumbs_up"}
                ),
            ):
                response = request()
                body = problem(response, 503, "database-unavailable")
                assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER)
                assert "Traceback" not in response.text and "retried" in body["detail"]
        finally:
            await cluster.start()
        # Back: the next requests are served (a dead pooled connection may
        # cost one more 503, never a 500).
        statuses = []
        for _ in range(20):
            statuses.append(client.get(f"/v1/skills/{rows.skill_id}").status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.2)
        assert statuses[-1] == 200 and set(statuses) <= {200, 503}, statuses
        written = client.post(
            "/v1/feedback", json={"skill_id": rows.skill_id, "feedback_type": "thumbs_up"}
        )
        assert written.status_code == 201, written.text
        log = server.log_text()
        assert "Exception in ASGI application" not in log and " 500 " not in log


async def test_503_with_retry_after_when_no_pooled_connection_comes_free(
    tmp_path: Path, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    """A pool of one connection, held by a request waiting on a lock: the next
    request waits EVERYSKILL_POOL_TIMEOUT seconds, then is a 503, not a hang."""
    env = {"EVERYSKILL_POOL_SIZE": "1", "EVERYSKILL_POOL_TIMEOUT": "0.5"}
    with served(tmp_path / "server.log", env) as server:
        async with httpx.AsyncClient(
            base_url=server.base, headers=api_a.headers(), timeout=30
        ) as client:
            locked = owner.transaction()
            await locked.start()
            try:
                await owner.execute("LOCK TABLE skills IN ACCESS EXCLUSIVE MODE")
                waiting = asyncio.create_task(client.get("/v1/skills"))
                for _ in range(200):
                    if await owner.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'everyskill_api'"
                        " AND wait_event_type = 'Lock' AND datname = current_database()"
                    ):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the first request never waited on the lock")
                started = time.monotonic()
                response = await client.get("/v1/users")
                body = problem(response, 503, "database-unavailable")
                assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER)
                assert "EVERYSKILL_POOL_TIMEOUT" in body["detail"]
                assert 0.4 < time.monotonic() - started < 5
            finally:
                await locked.rollback()
            assert (await waiting).status_code == 200
            assert (await client.get("/v1/users")).status_code == 200


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("57P03", "the database system is starting up"),
        ("57P01", "terminating connection due to administrator command"),
        ("53300", "sorry, too many clients already"),
    ],
)
async def test_503_with_retry_after_when_the_server_refuses_connections(
    engine: PostgresEngine, monkeypatch: pytest.MonkeyPatch, code: str, message: str
) -> None:
    """The server starting, shutting down or full when the key is resolved."""
    from everyskill import database
    from everyskill.api_keys import generate_key
    from tests.fake_postgres import refusing_server

    refused = database.AppEngine(config=dict(engine.config))  # see test_tenancy
    async with refusing_server(code, message) as url:
        refused.config = database.engine_config(url)
        refused._checked = True
        monkeypatch.setattr(database, "_app_engine", refused)
        transport = httpx.ASGITransport(app=create_api_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get(
                "/skills", headers={"Authorization": f"Bearer {generate_key()}"}
            )
    body = problem(response, 503, "database-unavailable")
    assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER)
    assert message in body["detail"]


# -- an unexpected error ------------------------------------------------------------


async def test_an_unexpected_error_is_a_500_problem_and_its_traceback_is_logged(
    caplog: pytest.LogCaptureFixture, api_a: Tenant
) -> None:
    app = create_api_app()

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug with a secret-looking detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        with caplog.at_level(logging.ERROR, logger="everyskill.http_api"):
            response = await client.get("/broken", headers=api_a.headers())
    body = problem(response, 500, "internal-error")
    assert "secret-looking" not in response.text and "Traceback" not in response.text
    assert "was logged" in body["detail"]
    # The key resolved: the answer still says where the rate limits stand.
    assert "ratelimit" in response.headers and "ratelimit-policy" in response.headers
    logged = [r for r in caplog.records if r.name == "everyskill.http_api"]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is RuntimeError
