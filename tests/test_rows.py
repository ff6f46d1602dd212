"""
Row types and validated new-row models: exported from the package, required
and optional as the schema says, and refusing exactly what the database
refuses.

The database's verdict on a new row is found by inserting it as the owner in
a transaction that is rolled back: it is stored as given (every value given
reads back unchanged), or it is not (the insert is refused, or a trigger
replaced a value given). The model's verdict is whether it validates. For
each rule there is a row that breaks it, and both refuse it, the model
naming the field; and over candidate rows made by changing valid rows
column by column, and at random, the two verdicts are the same. That
agreement is what keeps the rules in Python from drifting from the
database's.

Candidate values come from each column's type (integers at the edges of the
ranges, empty and blank text, text PostgreSQL cannot store, numbers with
too many digits, arrays with repeats), so a new column is covered too. What
no single row can show is held fixed: the rows a candidate names are rows of
its tenant, unique values are fresh, and a benchmark result names a model of
its running run.
"""

from __future__ import annotations

import datetime
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pydantic
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from piccolo.columns import (
    Array,
    BigInt,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    Numeric,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.base import Default
from piccolo.table import Table

import everyskill
from everyskill import rows
from everyskill.rows import NewSkillFeedback, NewTokenMeasurement, row_from_record
from tables import (
    TABLES,
    BenchmarkResult,
    BenchmarkRun,
    ModelPrice,
    Skill,
    SkillFeedback,
    SkillVersion,
    Tenant,
    TokenMeasurement,
    User,
)
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
    feedback = NewSkillFeedback(tenant_id="t", skill_id="s", feedback_type="thumbs_up", sentiment=1)
    assert feedback.model_dump()["status"] == "pending"
    assert feedback.model_dump()["source"] == "web"
    assert feedback.model_dump()["comment"] is None
    measurement = NewTokenMeasurement(tenant_id="t", skill_id="s", model_name="m")
    assert measurement.model_dump()["model_provider"] == "anthropic"
    assert measurement.model_dump()["source"] == "hook"


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


# ---------------------------------------------------------------------------
# The two verdicts

WHEN = datetime.datetime(2025, 3, 1, 12, 30, 15, 250_000, tzinfo=datetime.timezone.utc)
INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1


def model_of(table: type[Table]) -> type[pydantic.BaseModel]:
    model: type[pydantic.BaseModel] = getattr(rows, f"New{table.__name__}")
    return model


def generated(column: Column) -> bool:
    """A column whose default the database computes (an id, a time)."""
    return bool(column._meta.primary_key) or isinstance(column.default, Default)


async def database_problem(
    owner: asyncpg.Connection, table: type[Table], values: Mapping[str, Any]
) -> tuple[str | None, asyncpg.Record | None]:
    """Why the database does not store ``values`` as given (None: it does),
    and the row it stored. Inserted as the owner, then rolled back."""
    names = list(values)
    sql = (
        f"INSERT INTO {table._meta.tablename} ({', '.join(names)})"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))}) RETURNING *"
    )
    transaction = owner.transaction()
    await transaction.start()
    try:
        record = await owner.fetchrow(sql, *values.values())
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return f"refused: {type(error).__name__}: {error}", None
    finally:
        await transaction.rollback()
    assert record is not None
    changed = [
        f"{name} given {value!r}, stored {record[name]!r}"
        for name, value in values.items()
        if record[name] != value
    ]
    return ("; ".join(changed) or None), record


def model_problem(table: type[Table], values: Mapping[str, Any]) -> tuple[pydantic.ValidationError | None, pydantic.BaseModel | None]:
    try:
        return None, model_of(table)(**values)
    except pydantic.ValidationError as error:
        return error, None


async def assert_agree(owner: asyncpg.Connection, table: type[Table], values: Mapping[str, Any]) -> bool:
    """The model and the database give ``values`` the same verdict; a row
    both accept is stored as the model has it. Returns the verdict."""
    refused, model_row = model_problem(table, values)
    problem, stored = await database_problem(owner, table, values)
    assert (refused is None) == (problem is None), (
        f"{table._meta.tablename} {dict(values)!r}:\n"
        f"  model: {'accepts' if refused is None else refused}\n"
        f"  database: {'stores it as given' if problem is None else problem}"
    )
    if model_row is not None and stored is not None:
        dumped = model_row.model_dump()
        for column in table._meta.columns:
            name = column._meta.name
            if name in values or not generated(column):
                assert dumped[name] == stored[name], (table._meta.tablename, name, dict(values))
    return refused is None


# ---------------------------------------------------------------------------
# Rows to start from, and candidate values by column type


@dataclass
class Parents:
    """The rows candidates name: a tenant's rows, a skill without versions,
    and a running run without results."""

    tenant_id: str
    user_id: str
    skill_id: str
    version_id: str
    bare_skill_id: str
    run_id: str
    run_models: tuple[str, ...]
    tag: str

    def reference(self, table: type[Table], column: ForeignKey[Any]) -> str:
        target = column._foreign_key_meta.resolved_references
        if target is Skill and table is SkillVersion:
            return self.bare_skill_id
        return {
            Tenant: self.tenant_id,
            User: self.user_id,
            Skill: self.skill_id,
            SkillVersion: self.version_id,
            BenchmarkRun: self.run_id,
        }[target]


@pytest.fixture
async def parents(owner: asyncpg.Connection) -> Parents:
    rows = await make_tenant(owner, "rows")
    bare_skill_id = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'summarise', 'Summarise')"
        " RETURNING id",
        rows.tenant_id,
    )
    models = ("claude-sonnet-4-5", "gpt-4o")
    run_id = await owner.fetchval(
        "INSERT INTO benchmark_runs (tenant_id, skill_id, triggered_by, models)"
        " VALUES ($1, $2, $3, $4) RETURNING id",
        rows.tenant_id, rows.skill_id, rows.user_id, list(models),
    )
    await owner.execute("UPDATE benchmark_runs SET status = 'running' WHERE id = $1", run_id)
    return Parents(
        rows.tenant_id, rows.user_id, rows.skill_id, rows.version_id,
        bare_skill_id, run_id, models, uuid.uuid4().hex[:10],
    )


def valid_rows(p: Parents) -> dict[str, tuple[type[Table], dict[str, Any]]]:
    """One valid new row of each table (of each feedback type), by name."""
    tenant = {"tenant_id": p.tenant_id}
    feedback = {**tenant, "skill_id": p.skill_id}
    return {
        "tenant": (Tenant, {"name": "Initech", "slug": f"initech-{p.tag}"}),
        "user": (User, {**tenant, "email": f"grace-{p.tag}@example.com", "name": "Grace"}),
        "skill": (Skill, {**tenant, "slug": f"triage-{p.tag}", "name": "Triage"}),
        "skill version": (
            SkillVersion,
            {**tenant, "skill_id": p.bare_skill_id, "version": 1, "content": "Summarise it."},
        ),
        "thumbs up": (SkillFeedback, {**feedback, "feedback_type": "thumbs_up", "sentiment": 1}),
        "thumbs down": (SkillFeedback, {**feedback, "feedback_type": "thumbs_down", "sentiment": -1}),
        "suggestion": (
            SkillFeedback,
            {**feedback, "feedback_type": "suggestion", "suggested_diff": "- old\n+ new"},
        ),
        "training example": (
            SkillFeedback,
            {**feedback, "feedback_type": "training_example", "example_input": "2+2",
             "expected_output": "4"},
        ),
        "bug report": (
            SkillFeedback,
            {**feedback, "feedback_type": "bug_report", "comment": "Fails on empty input."},
        ),
        "reviewed feedback": (
            SkillFeedback,
            {**feedback, "feedback_type": "thumbs_down", "sentiment": -1, "status": "accepted",
             "reviewed_by": p.user_id, "reviewed_at": WHEN},
        ),
        "model price": (
            ModelPrice,
            {**tenant, "model_provider": "openai", "model_name": f"gpt-{p.tag}",
             "input_microcents_per_token": Decimal("250"),
             "output_microcents_per_token": Decimal("1000")},
        ),
        "token measurement": (
            TokenMeasurement, {**tenant, "skill_id": p.skill_id, "model_name": "claude-sonnet-4-5"},
        ),
        "benchmark run": (
            BenchmarkRun,
            {**tenant, "skill_id": p.skill_id, "triggered_by": p.user_id,
             "models": ["claude-sonnet-4-5", "gpt-4o"]},
        ),
        "benchmark result": (
            BenchmarkResult,
            {**tenant, "benchmark_run_id": p.run_id, "model_name": "gpt-4o",
             "model_provider": "openai", "test_case_index": 0},
        ),
    }


INTEGERS = [-(2**31) - 1, -(2**31), -1, 0, 1, 2, 10, 11, 100, 101, INT4_MAX, INT4_MAX + 1]
BIG_INTEGERS = [*INTEGERS, -(2**63) - 1, -(2**63), INT8_MAX, INT8_MAX + 1]
DECIMALS = [
    Decimal("0"), Decimal("0.000001"), Decimal("-0.000001"), Decimal("0.0000001"),
    Decimal("300"), Decimal("99999999.999999"), Decimal("100000000"),
]
MODEL_LISTS: list[list[Any]] = [
    [], ["claude-sonnet-4-5"], ["a", "b"], ["a", "a"], ["a", " "], [""], ["\t"], ["a", "A"],
    ["a\x00"], ["a", None],
]
# Text PostgreSQL cannot store: a NUL character, an unpaired surrogate.
UNSTORABLE = ["with \x00 NUL", "with \ud800 surrogate"]


def candidates(table: type[Table], column: Column, p: Parents) -> list[Any]:
    """Values to try in ``column``, from its type."""
    values: list[Any]
    if isinstance(column, ForeignKey):
        values = [p.reference(table, column)]
    elif column._meta.primary_key:
        values = [str(uuid.uuid4()), ""]
    elif table is BenchmarkResult and column._meta.name == "model_name":
        # A result names a model of its run: a rule across rows.
        values = [*p.run_models, "", *UNSTORABLE]
    elif column._meta.choices is not None:
        members = [member.value for member in column._meta.choices]
        values = members + ([-2, 2] if isinstance(members[0], int) else ["other", ""])
    elif isinstance(column, BigInt):
        values = list(BIG_INTEGERS)
    elif isinstance(column, Integer):
        values = list(INTEGERS)
    elif isinstance(column, Numeric):
        values = list(DECIMALS)
    elif isinstance(column, Timestamptz):
        values = [WHEN]
    elif isinstance(column, Boolean):
        values = [True, False]
    elif isinstance(column, Array):
        values = [list(models) for models in MODEL_LISTS]
    elif isinstance(column, Varchar):
        values = ["", "x", "x" * column.length, "x" * (column.length + 1), *UNSTORABLE]
    else:
        values = ["", " ", f"text-{uuid.uuid4().hex[:8]}", *UNSTORABLE]
    if column._meta.null:
        values.append(None)
    return values


# ---------------------------------------------------------------------------
# Every rule: the database refuses a row that breaks it, and so does the
# model, naming the field.

LONG_LOGIN = "x" * 101
RULE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("tenant", {"id": ""}, "id"),
    ("tenant", {"name": ""}, "name"),
    ("tenant", {"slug": ""}, "slug"),
    ("tenant", {"name": "Ini\x00tech"}, "name"),
    ("user", {"email": ""}, "email"),
    ("user", {"email": None}, "email"),
    ("skill", {"slug": ""}, "slug"),
    ("skill", {"name": ""}, "name"),
    ("skill", {"total_feedback": 3}, "total_feedback"),
    ("skill", {"positive_feedback_pct": 50}, "positive_feedback_pct"),
    ("skill", {"avg_token_cost_microcents": 120}, "avg_token_cost_microcents"),
    ("skill", {"feedback_thumbs_up": 1}, "feedback_thumbs_up"),
    ("skill", {"feedback_thumbs_down": 1}, "feedback_thumbs_down"),
    ("skill", {"costed_measurements": 1}, "costed_measurements"),
    ("skill", {"measured_cost_microcents": 1}, "measured_cost_microcents"),
    ("skill", {"average_rating": INT4_MAX + 1}, "average_rating"),
    ("skill version", {"version": 0}, "version"),
    ("thumbs up", {"feedback_type": "like"}, "feedback_type"),
    ("thumbs up", {"sentiment": -1}, "sentiment"),
    ("thumbs up", {"sentiment": None}, "sentiment"),
    ("thumbs up", {"sentiment": 2}, "sentiment"),
    ("thumbs down", {"sentiment": 1}, "sentiment"),
    ("thumbs down", {"sentiment": 0}, "sentiment"),
    ("thumbs up", {"quality_score": 0}, "quality_score"),
    ("thumbs up", {"quality_score": 11}, "quality_score"),
    ("thumbs up", {"status": "done"}, "status"),
    ("thumbs up", {"source": "email"}, "source"),
    ("thumbs up", {"suggested_content": "Say it shorter."}, "suggested_content"),
    ("thumbs up", {"example_output": ""}, "example_output"),
    ("bug report", {"expected_output": "4"}, "expected_output"),
    ("suggestion", {"suggested_diff": None}, "suggested_content"),
    ("suggestion", {"suggested_diff": "", "suggested_content": ""}, "suggested_content"),
    ("suggestion", {"example_input": "2+2"}, "example_input"),
    ("training example", {"example_input": None}, "example_input"),
    ("training example", {"expected_output": ""}, "expected_output"),
    ("training example", {"suggested_diff": "+ x"}, "suggested_diff"),
    ("bug report", {"comment": None}, "comment"),
    ("bug report", {"comment": ""}, "comment"),
    ("reviewed feedback", {"reviewed_at": None}, "reviewed_at"),
    ("thumbs up", {"status": "dismissed"}, "reviewed_at"),
    ("reviewed feedback", {"reviewed_by_admin": LONG_LOGIN}, "reviewed_by_admin"),
    ("model price", {"model_name": ""}, "model_name"),
    ("model price", {"model_provider": ""}, "model_provider"),
    ("model price", {"input_microcents_per_token": Decimal("-0.000001")},
     "input_microcents_per_token"),
    ("model price", {"output_microcents_per_token": Decimal("-1")}, "output_microcents_per_token"),
    ("model price", {"cache_read_microcents_per_token": Decimal("-1")},
     "cache_read_microcents_per_token"),
    ("model price", {"cache_write_microcents_per_token": Decimal("-1")},
     "cache_write_microcents_per_token"),
    ("model price", {"input_microcents_per_token": Decimal("100000000")},
     "input_microcents_per_token"),
    ("model price", {"output_microcents_per_token": Decimal("0.0000001")},
     "output_microcents_per_token"),
    *[("token measurement", {name: -1}, name) for name in (
        "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens",
        "cache_write_tokens", "estimated_cost_microcents", "latency_ms")],
    ("token measurement", {"total_tokens": INT4_MAX + 1}, "total_tokens"),
    ("token measurement", {"model_name": ""}, "model_name"),
    ("token measurement", {"model_provider": ""}, "model_provider"),
    ("token measurement", {"source": ""}, "source"),
    ("token measurement", {"usage_event_id": "ev\ud800"}, "usage_event_id"),
    ("benchmark run", {"status": "running"}, "status"),
    ("benchmark run", {"status": "done"}, "status"),
    ("benchmark run", {"models": []}, "models"),
    ("benchmark run", {"models": ["gpt-4o", "gpt-4o"]}, "models"),
    ("benchmark run", {"models": ["gpt-4o", "  "]}, "models"),
    ("benchmark run", {"models": ["gpt-4o", None]}, "models"),
    ("benchmark run", {"models": ["gpt\x00"]}, "models"),
    *[("benchmark run", {name: value}, name) for name, value in (
        ("started_at", WHEN), ("completed_at", WHEN), ("error_message", "timeout"),
        ("best_model", "gpt-4o"), ("best_quality_score", 90), ("cheapest_model", "gpt-4o"),
        ("cheapest_cost_microcents", 100))],
    ("benchmark result", {"model_name": ""}, "model_name"),
    ("benchmark result", {"model_provider": ""}, "model_provider"),
    ("benchmark result", {"test_case_index": -1}, "test_case_index"),
    *[("benchmark result", {name: -1}, name) for name in (
        "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens",
        "cache_write_tokens", "estimated_cost_microcents", "latency_ms")],
    ("benchmark result", {"quality_score": -1}, "quality_score"),
    ("benchmark result", {"quality_score": 101}, "quality_score"),
]


@pytest.mark.parametrize(
    ("row", "change", "field"),
    RULE_CASES,
    ids=[f"{row}-{field}-{index}" for index, (row, _, field) in enumerate(RULE_CASES)],
)
async def test_a_row_the_database_refuses_is_refused_by_its_model_naming_the_field(
    owner: asyncpg.Connection, parents: Parents, row: str, change: dict[str, Any], field: str
) -> None:
    table, valid = valid_rows(parents)[row]
    values = {**valid, **change}
    problem, _stored = await database_problem(owner, table, values)
    assert problem is not None, f"the database stores {values!r}"
    refused, _row = model_problem(table, values)
    assert refused is not None, f"New{table.__name__} accepts {values!r}; the database: {problem}"
    assert [error["loc"][0] for error in refused.errors()] == [field], refused
    assert all(error["msg"] for error in refused.errors())


def test_a_thumbs_up_with_sentiment_minus_one_is_refused() -> None:
    """The case that once passed the model and not the database."""
    with pytest.raises(pydantic.ValidationError) as raised:
        NewSkillFeedback(tenant_id="t", skill_id="s", feedback_type="thumbs_up", sentiment=-1)
    assert raised.value.errors()[0]["loc"] == ("sentiment",)
    assert raised.value.errors()[0]["msg"] == "a thumbs_up has sentiment 1"


# ---------------------------------------------------------------------------
# Agreement: the same verdict on every candidate.

# A column left out of the row (its default applies).
OMIT = object()


async def test_model_and_database_agree_on_every_single_change_of_a_valid_row(
    owner: asyncpg.Connection, parents: Parents
) -> None:
    """Each valid row, then each column of it set to each candidate of its
    type, or left out."""
    verdicts: Counter[tuple[str, bool]] = Counter()
    for name, (table, valid) in valid_rows(parents).items():
        assert await assert_agree(owner, table, valid), name
        for column in table._meta.columns:
            column_name = column._meta.name
            without = {key: value for key, value in valid.items() if key != column_name}
            verdicts[table._meta.tablename, await assert_agree(owner, table, without)] += 1
            for value in candidates(table, column, parents):
                accepted = await assert_agree(owner, table, {**valid, column_name: value})
                verdicts[table._meta.tablename, accepted] += 1
    # Every table had candidates of both verdicts: the check is not vacuous.
    for table in TABLES:
        assert verdicts[table._meta.tablename, True] > 0, table
        assert verdicts[table._meta.tablename, False] > 0, table


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_model_and_database_agree_on_random_rows(
    data: st.DataObject, owner: asyncpg.Connection, parents: Parents
) -> None:
    """A valid row with up to four columns changed at once to candidates of
    their type, or left out: rules across fields (a feedback's type, its
    texts and sentiment, a review's status and time) meet at random."""
    valid_by_name = valid_rows(parents)
    table, valid = valid_by_name[data.draw(st.sampled_from(sorted(valid_by_name)), label="row")]
    values = dict(valid)
    columns = {column._meta.name: column for column in table._meta.columns}
    for name in data.draw(st.lists(st.sampled_from(sorted(columns)), max_size=4, unique=True)):
        value = data.draw(
            st.sampled_from([OMIT, *candidates(table, columns[name], parents)]), label=name
        )
        if value is OMIT:
            values.pop(name, None)
        else:
            values[name] = value
    accepted = await assert_agree(owner, table, values)
    event(f"{table._meta.tablename}: {'stored' if accepted else 'refused'}")
