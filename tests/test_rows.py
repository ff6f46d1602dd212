"""
Row types and validated new-row models: exported from the package, required
and optional as the schema says, and refusing what the database refuses.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pydantic
import pytest

import everyskill
from everyskill.rows import NewBenchmarkRun, NewSkillFeedback, NewTokenMeasurement, row_from_record
from tables import TABLES, SkillFeedback
from tests.support import make_tenant

ROW_TYPES = [table.__name__ for table in TABLES]


@pytest.mark.parametrize("name", ROW_TYPES)
def test_row_and_new_row_types_are_exported(name: str) -> None:
    row_type = getattr(everyskill, name)
    new_row = getattr(everyskill, f"New{name}")
    assert row_type in TABLES
    assert issubclass(new_row, pydantic.BaseModel)
    assert new_row.__name__ == f"New{name}"
    assert set(new_row.model_fields) == {column._meta.name for column in row_type._meta.columns}


def test_required_optional_and_defaults_follow_the_schema() -> None:
    fields = NewSkillFeedback.model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    assert required == {"tenant_id", "skill_id", "feedback_type"}
    feedback = NewSkillFeedback(tenant_id="t", skill_id="s", feedback_type="thumbs_up")
    assert feedback.model_dump()["status"] == "pending"
    assert feedback.model_dump()["source"] == "web"
    assert feedback.model_dump()["comment"] is None
    measurement = NewTokenMeasurement(tenant_id="t", skill_id="s", model_name="m")
    assert measurement.model_dump()["model_provider"] == "anthropic"
    assert measurement.model_dump()["source"] == "hook"


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (NewSkillFeedback, {"feedback_type": "like"}, "feedback_type"),
        (NewSkillFeedback, {"feedback_type": "thumbs_up", "sentiment": 2}, "sentiment"),
        (NewSkillFeedback, {"feedback_type": "thumbs_up", "quality_score": 11}, "quality_score"),
        (NewSkillFeedback, {"feedback_type": "thumbs_up", "status": "done"}, "status"),
        (NewSkillFeedback, {"feedback_type": "thumbs_up", "source": "email"}, "source"),
        (NewSkillFeedback, {"feedback_type": "thumbs_up", "colour": "red"}, "colour"),
        (NewTokenMeasurement, {"model_name": "m", "input_tokens": -1}, "input_tokens"),
        (NewTokenMeasurement, {"model_name": "m", "estimated_cost_microcents": -1}, "estimated_cost_microcents"),
        (NewTokenMeasurement, {"model_name": "m", "latency_ms": -1}, "latency_ms"),
        (NewTokenMeasurement, {"model_name": ""}, "model_name"),
        (NewTokenMeasurement, {"model_name": "m", "total_tokens": 2**31}, "total_tokens"),
        (NewBenchmarkRun, {"triggered_by": "u", "models": []}, "models"),
        (NewBenchmarkRun, {"triggered_by": "u", "models": ["m"], "status": "done"}, "status"),
    ],
)
def test_invalid_values_name_the_field(model: type[pydantic.BaseModel], data: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        model(tenant_id="t", skill_id="s", **data)
    assert [error["loc"][0] for error in raised.value.errors()] == [field]


async def test_a_validated_row_is_accepted_by_the_database(owner: asyncpg.Connection) -> None:
    """What the models let through, the CHECK constraints accept."""
    rows = await make_tenant(owner)
    feedback = NewSkillFeedback(
        tenant_id=rows.tenant_id,
        skill_id=rows.skill_id,
        feedback_type="training_example",
        quality_score=10,
        sentiment=0,
        example_input="2+2",
        expected_output="4",
        source="mcp",
    )
    values = {k: v for k, v in feedback.model_dump().items() if v is not None}
    columns = ", ".join(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    inserted = await owner.fetchrow(
        f"INSERT INTO skill_feedback ({columns}) VALUES ({placeholders}) RETURNING id, created_at",
        *values.values(),
    )
    assert inserted is not None and inserted["id"]


def test_a_row_from_a_whole_record_is_the_row_its_constructor_makes() -> None:
    record = {column._meta.name: None for column in SkillFeedback._meta.columns}
    record.update(id="f1", tenant_id="t1", skill_id="s1", feedback_type="thumbs_up",
                  status="pending", source="web", sentiment=1)
    fast = row_from_record(SkillFeedback, record)
    built = SkillFeedback(_exists_in_db=True, **record)
    assert type(fast) is SkillFeedback
    assert fast.to_dict() == built.to_dict() and fast._exists_in_db
    assert vars(fast) == vars(built)
    # A record missing columns goes through the constructor (its defaults).
    partial = {**record, "id": "f2"}
    del partial["status"]
    row = row_from_record(SkillFeedback, partial)
    assert row.id == "f2" and row.status == "pending"
