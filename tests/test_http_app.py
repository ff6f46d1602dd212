"""
The API app as served: its schema at /v1/openapi.json and its docs at
/v1/docs, every route declared with its answers, and Schemathesis run
against the schema with a key of every scope: no answer is a 5xx, and
every answer matches the schema (status, content type, body, headers).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from everyskill.api_keys import create_api_key
from tests.http_support import ALL_SCOPES, Served, Tenant


def test_the_schema_and_the_docs_are_served_under_v1(api: Served) -> None:
    schema = httpx.get(f"{api.base}/v1/openapi.json").json()
    assert schema["servers"] == [{"url": "/v1"}]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    expected = {
        "/feedback": {"get", "post"},
        "/feedback/{feedback_id}": {"get"},
        "/feedback/{feedback_id}/review": {"post"},
        "/feedback/{feedback_id}/implemented": {"post"},
        "/training-examples.jsonl": {"get"},
        "/token-measurements": {"get", "post"},
        "/token-measurements/{measurement_id}": {"get"},
        "/usage/summary": {"get"},
        "/benchmark-runs": {"get", "post"},
        "/benchmark-runs/{run_id}": {"get"},
        "/benchmark-runs/{run_id}/start": {"post"},
        "/benchmark-runs/{run_id}/complete": {"post"},
        "/benchmark-runs/{run_id}/fail": {"post"},
        "/benchmark-runs/{run_id}/results": {"post"},
        "/skills": {"get", "post"},
        "/skills/{skill_id}": {"get", "patch"},
        "/skills/{skill_id}/archive": {"post"},
        "/skills/{skill_id}/unarchive": {"post"},
        "/skills/{skill_id}/versions": {"get", "post"},
        "/skills/{skill_id}/versions/{version_id}": {"get", "patch"},
        "/users": {"get", "post"},
        "/users/{user_id}": {"get", "patch"},
    }
    assert {path: set(methods) for path, methods in schema["paths"].items()} == expected
    docs = httpx.get(f"{api.base}/v1/docs")
    assert docs.status_code == 200 and "/v1/openapi.json" in docs.text


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: Examples per operation: the whole run stays well under two minutes.
EXAMPLES = 60


#: A limit per minute no run of Schemathesis comes near, for its key and its tenant.
UNLIMITED = 1_000_000


async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    # Its ~2,000 requests in a minute or two would go over the default limits
    # (600 a minute per key): a 429 is a right answer, but not what is tested.
    await owner.execute(
        "UPDATE tenants SET rate_limit_per_minute = $1 WHERE id = $2",
        UNLIMITED,
        api_a.rows.tenant_id,
    )
    created = await create_api_key(
        api_a.rows.tenant_id, "schemathesis", ALL_SCOPES, rate_limit_per_minute=UNLIMITED
    )
    headers = api_a.headers(created.key)
    schema = schemathesis.openapi.from_url(f"{api.base}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 31  # every method of every path of the schema
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(
                base_url=f"{api.base}/v1", headers=headers, checks=CHECKS
            )

        await asyncio.to_thread(run)
