"""
The benchmark routes over HTTP, against the served app: a run's life cycle,
its results in batches (all or nothing), the run with its per-model summary
and picks, listing, refusals, scopes, and a run and results with client ids
(replayed, reused for other content, another tenant's).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from everyskill.api_keys import create_api_key
from everyskill.client_ids import FOREIGN_ID
from tests.http_support import Served, Tenant, problem, replayed


def result(model: str, case: int, **extra: Any) -> dict[str, Any]:
    return {
        "model_name": model,
        "model_provider": "anthropic" if model.startswith("claude") else "openai",
        "test_case_index": case,
        "input_tokens": 100,
        "output_tokens": 10,
        "latency_ms": 100 + case,
        "quality_score": 90 if model == "claude-sonnet-4-5" else 60,
        **extra,
    }


async def test_a_run_from_creation_to_its_picks(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    models = ["claude-sonnet-4-5", "gpt-4o"]
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        created = client.post(
            "/v1/benchmark-runs",
            json={
                "skill_id": api_a.rows.skill_id,
                "models": models,
                "triggered_by": api_a.rows.user_id,
                "skill_version_id": api_a.rows.version_id,
            },
        )
        assert created.status_code == 201, created.text
        run = created.json()["row"]
        assert run["status"] == "pending" and run["models"] == models
        run_id = run["id"]
        problem(
            client.post(f"/v1/benchmark-runs/{run_id}/results", json={"items": [result("gpt-4o", 0)]}),
            409,
            "run-not-running",
        )
        problem(client.post(f"/v1/benchmark-runs/{run_id}/complete"), 409, "invalid-transition")
        started = client.post(f"/v1/benchmark-runs/{run_id}/start")
        assert started.status_code == 200 and started.json()["row"]["started_at"]
        items = [result(model, case) for model in models for case in range(3)]
        recorded = client.post(f"/v1/benchmark-runs/{run_id}/results", json={"items": items})
        assert recorded.status_code == 201, recorded.text
        assert recorded.json()["count"] == 6
        # A result recorded before is a conflict, and nothing of the batch is written.
        again = problem(
            client.post(
                f"/v1/benchmark-runs/{run_id}/results",
                json={"items": [result("gpt-4o", 7), result("gpt-4o", 0)]},
            ),
            409,
            "conflict",
        )
        assert "one result per model and test case" in again["detail"]
        bad = problem(
            client.post(
                f"/v1/benchmark-runs/{run_id}/results",
                json={"items": [result("gpt-4o", 8), result("llama", 9), result("gpt-4o", 8)]},
            ),
            422,
            "validation",
        )
        assert {(e["index"], e["field"]) for e in bad["errors"]} >= {(2, "test_case_index")}
        count = await owner.fetchval(
            "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", run_id
        )
        assert count == 6
        completed = client.post(f"/v1/benchmark-runs/{run_id}/complete")
        assert completed.status_code == 200, completed.text
        assert completed.json()["row"]["best_model"] == "claude-sonnet-4-5"
        detail = client.get(f"/v1/benchmark-runs/{run_id}")
        assert detail.status_code == 200, detail.text
        body = detail.json()
        assert body["run"]["status"] == "completed"
        assert [m["model_name"] for m in body["summary"]] == models
        assert body["summary"][0]["results"] == 3 and body["summary"][0]["avg_quality"] == 90
        problem(
            client.post(f"/v1/benchmark-runs/{run_id}/fail", json={"error_message": "late"}),
            409,
            "invalid-transition",
        )
        listed = client.get("/v1/benchmark-runs", params={"status": "completed"}).json()["items"]
        assert [r["id"] for r in listed] == [run_id]


async def test_every_bad_result_of_a_batch_is_listed_in_one_422(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        created = client.post(
            "/v1/benchmark-runs",
            json={
                "skill_id": api_a.rows.skill_id,
                "models": ["gpt-4o"],
                "triggered_by": api_a.rows.user_id,
            },
        )
        run_id = created.json()["row"]["id"]
        assert client.post(f"/v1/benchmark-runs/{run_id}/start").status_code == 200
        same = str(uuid.uuid4())
        items = [
            result("nope", 0),  # not a model of the run
            result("gpt-4o", 1, quality_score=500),  # out of range
            result("gpt-4o", 2, id=same),
            result("gpt-4o", 3, id=same),  # an id given twice
            result("gpt-4o", 4),
        ]
        body = problem(
            client.post(f"/v1/benchmark-runs/{run_id}/results", json={"items": items}),
            422,
            "validation",
        )
        assert [(e["index"], e["field"]) for e in body["errors"]] == [
            (0, "model_name"),
            (1, "quality_score"),
            (3, "id"),
        ], body
        summary = client.get(f"/v1/benchmark-runs/{run_id}").json()["summary"]
    assert summary[0]["results"] == 0
    assert await owner.fetchval(
        "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", run_id
    ) == 0


async def test_failing_a_run_and_refusals(api: Served, api_a: Tenant, api_b: Tenant) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        bad = problem(
            client.post(
                "/v1/benchmark-runs",
                json={"skill_id": api_a.rows.skill_id, "models": ["a", "a"],
                      "triggered_by": api_a.rows.user_id},
            ),
            422,
            "validation",
        )
        assert bad["errors"][0]["field"] == "models"
        problem(
            client.post(
                "/v1/benchmark-runs",
                json={"skill_id": api_a.rows.skill_id, "models": ["a"],
                      "triggered_by": api_b.rows.user_id},
            ),
            404,
            "not-found",
        )
        run_id = client.post(
            "/v1/benchmark-runs",
            json={"skill_id": api_a.rows.skill_id, "models": ["a"],
                  "triggered_by": api_a.rows.user_id},
        ).json()["row"]["id"]
        problem(client.post(f"/v1/benchmark-runs/{run_id}/fail", json={"error_message": " "}),
                422, "validation")
        failed = client.post(
            f"/v1/benchmark-runs/{run_id}/fail", json={"error_message": "provider down"}
        )
        assert failed.status_code == 200
        assert failed.json()["row"]["status"] == "failed"
        assert failed.json()["row"]["error_message"] == "provider down"


async def test_scopes_of_the_benchmark_routes(api: Served, api_a: Tenant) -> None:
    reader = (await create_api_key(api_a.rows.tenant_id, "reader", "read")).key
    ci = (await create_api_key(api_a.rows.tenant_id, "ci", "benchmarks:write")).key
    run_id = api_a.rows.run_id
    with httpx.Client(base_url=api.base) as client:
        for path, body in (
            ("/v1/benchmark-runs", {"skill_id": "x", "models": ["a"], "triggered_by": "u"}),
            (f"/v1/benchmark-runs/{run_id}/start", None),
            (f"/v1/benchmark-runs/{run_id}/complete", None),
            (f"/v1/benchmark-runs/{run_id}/fail", {"error_message": "x"}),
            (f"/v1/benchmark-runs/{run_id}/results", {"items": [result("gpt-4o", 5)]}),
        ):
            refused = problem(
                client.post(path, json=body, headers=api_a.headers(reader)), 403, "missing-scope"
            )
            assert refused["scope"] == "benchmarks:write"
        for path in ("/v1/benchmark-runs", f"/v1/benchmark-runs/{run_id}"):
            assert problem(client.get(path, headers=api_a.headers(ci)), 403, "missing-scope")[
                "scope"
            ] == "read"
        recorded = client.post(
            f"/v1/benchmark-runs/{run_id}/results",
            json={"items": [result("gpt-4o", 5)]},
            headers=api_a.headers(ci),
        )
        assert recorded.status_code == 201, recorded.text


async def test_a_run_and_its_results_with_client_ids_are_replayed(
    api: Served, api_a: Tenant, api_b: Tenant, owner: asyncpg.Connection
) -> None:
    run = {
        "skill_id": api_a.rows.skill_id,
        "models": ["gpt-4o"],
        "triggered_by": api_a.rows.user_id,
        "id": str(uuid.uuid4()),
    }
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        first = client.post("/v1/benchmark-runs", json=run)
        assert first.status_code == 201 and first.json()["replayed"] is False
        again = replayed(client.post("/v1/benchmark-runs", json=run))
        assert again["row"] == first.json()["row"]
        other = problem(
            client.post("/v1/benchmark-runs", json={**run, "models": ["o3"]}), 409, "conflict"
        )
        assert other["errors"][0]["field"] == "id"
        assert client.post(f"/v1/benchmark-runs/{run['id']}/start").status_code == 200
        items = [{**result("gpt-4o", case), "id": str(uuid.uuid4())} for case in range(2)]
        path = f"/v1/benchmark-runs/{run['id']}/results"
        assert client.post(path, json={"items": items}).status_code == 201
        results = replayed(client.post(path, json={"items": items}))
        assert results["replayed"] == [item["id"] for item in items] and results["count"] == 0
    foreign = httpx.post(
        f"{api.base}/v1/benchmark-runs",
        json={**run, "skill_id": api_b.rows.skill_id, "triggered_by": api_b.rows.user_id},
        headers=api_b.headers(),
    )
    assert problem(foreign, 409, "conflict")["detail"] == f"id: {FOREIGN_ID}"
    assert foreign.json()["errors"][0]["field"] == "id"
    assert await owner.fetchval(
        "SELECT count(*) FROM benchmark_results WHERE benchmark_run_id = $1", run["id"]
    ) == 2
