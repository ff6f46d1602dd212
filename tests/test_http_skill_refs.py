"""
A skill named by its slug (everyskill.http_api.skill_refs), read the same
way by the list and by the writes: a slug with capitals and surrounding
spaces that ``GET /v1/skills?slug=`` finds names the same skill in
``POST /v1/feedback`` and ``POST /v1/token-measurements`` (alone and in a
batch); a slug PostgreSQL cannot store is a 422 naming the slug's field in
each.
"""

from __future__ import annotations

import asyncpg
import httpx
import pydantic
import pytest

from everyskill.http_api.skill_refs import SkillSlug
from tests.http_support import Served, Tenant, add_skill, problem


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("review-code", "review-code"),
        ("Review-Code", "review-code"),
        ("  REVIEW-CODE\t", "review-code"),
        ("Write-Tests-2", "write-tests-2"),
    ],
)
def test_a_slug_is_stripped_and_folded_to_lowercase(given: str, read: str) -> None:
    assert pydantic.TypeAdapter(SkillSlug).validate_python(given) == read


@pytest.mark.parametrize("given", ["", "   ", "\x1c", "a\x00b", "\ud800x", "r" * 201])
def test_a_slug_that_is_no_text_to_look_up_is_refused(given: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        pydantic.TypeAdapter(SkillSlug).validate_python(given)


async def test_the_list_and_the_writes_read_a_slug_alike(
    api: Served, api_a: Tenant, owner: asyncpg.Connection
) -> None:
    tests = await add_skill(owner, api_a, "write-tests")
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        for given, skill_id in (
            ("Review-Code", api_a.rows.skill_id),
            (" REVIEW-code ", api_a.rows.skill_id),
            ("Write-Tests", tests),
        ):
            listed = client.get("/v1/skills", params={"slug": given})
            assert listed.status_code == 200, listed.text
            assert [s["id"] for s in listed.json()["items"]] == [skill_id], given
            feedback = client.post(
                "/v1/feedback", json={"skill_slug": given, "feedback_type": "thumbs_up"}
            )
            assert feedback.status_code == 201, feedback.text
            assert feedback.json()["row"]["skill_id"] == skill_id
            measured = client.post(
                "/v1/token-measurements",
                json={"skill_slug": given, "model_name": "claude-sonnet-4-5",
                      "input_tokens": 10, "output_tokens": 1},
            )
            assert measured.status_code == 201, measured.text
            assert measured.json()["row"]["skill_id"] == skill_id
        batch = client.post("/v1/feedback", json={"items": [
            {"skill_slug": "Write-Tests", "feedback_type": "thumbs_down"},
            {"skill_slug": "review-code", "feedback_type": "thumbs_down"},
        ]})
        assert batch.status_code == 201, batch.text
        rows = await owner.fetch(
            "SELECT id, skill_id FROM skill_feedback WHERE id = ANY($1)", batch.json()["ids"]
        )
        assert {r["id"]: r["skill_id"] for r in rows} == dict(
            zip(batch.json()["ids"], [tests, api_a.rows.skill_id])
        )
        # A slug no skill has, whatever its case: the 404 of the writes.
        unknown = problem(
            client.post("/v1/feedback", json={"skill_slug": "No-Such", "feedback_type": "thumbs_up"}),
            404, "not-found",
        )
        assert [e["field"] for e in unknown["errors"]] == ["skill_slug"]
        assert client.get("/v1/skills", params={"slug": "No-Such"}).json()["items"] == []


async def test_a_slug_postgresql_cannot_store_is_refused_naming_it(
    api: Served, api_a: Tenant
) -> None:
    with httpx.Client(base_url=api.base, headers=api_a.headers()) as client:
        listed = problem(client.get("/v1/skills", params={"slug": "a\x00b"}), 422, "validation")
        assert [e["field"] for e in listed["errors"]] == ["slug"], listed
        assert "NUL" in listed["errors"][0]["message"]
        blank = problem(client.get("/v1/skills", params={"slug": "  "}), 422, "validation")
        assert [e["field"] for e in blank["errors"]] == ["slug"], blank
        written = problem(
            client.post("/v1/feedback", json={"skill_slug": "a\x00b", "feedback_type": "thumbs_up"}),
            422, "validation",
        )
        assert [e["field"] for e in written["errors"]] == ["skill_slug"], written
        measured = problem(
            client.post("/v1/token-measurements", json={
                "skill_slug": "a\x00b", "model_name": "m", "input_tokens": 1, "output_tokens": 1,
            }),
            422, "validation",
        )
        assert [e["field"] for e in measured["errors"]] == ["skill_slug"], measured
