"""
The API app as served: its schema at /v1/openapi.json and its docs at
/v1/docs, every route declared with its answers, and Schemathesis run
against the schema with a key of every scope: no answer is a 5xx, and
every answer matches the schema (status, content type, body, headers).
"""

from __future__ import annotations

from typing import Any

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

from tests.http_support import Served, Tenant


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


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_schema(
    api: Served, api_a: Tenant
) -> None:
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
                base_url=f"{api.base}/v1", headers=api_a.headers(), checks=CHECKS
            )

        run()
