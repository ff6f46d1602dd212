"""
Row types and validated new-row models: exported from the package, required
and optional as the schema says, and refusing exactly what the database or
the catalogue API refuses.

The database's verdict on a new row is found by inserting it as the owner in
a transaction that is rolled back: it is stored as given (every value given
reads back unchanged), or it is not (the insert is refused, or a trigger
replaced a value given). The catalogue API's verdict on a skill, a skill
version or a user is found by calling it (``create_skill``,
``publish_version``, ``create_user``) with the row's fields in a tenant
scope that is rolled back. The model's verdict is whether it validates. For
each rule there is a row that breaks it, and the database or the API (for
the API's input rules on top of the database's) refuses it, and so does the
model, naming the field; and over candidate rows made by changing valid
rows column by column, and at random, the model refuses a row exactly when
the database or the API does, and a row it accepts is stored, by the
database and by the API, as the model holds it. That agreement is what
keeps the rules in Python from drifting from the database's and the API's.

Candidate values come from each column's type (integers at the edges of the
ranges, empty and blank text, text PostgreSQL cannot store, numbers with
too many digits, arrays with repeats), so a new column is covered too, and,
for the columns the catalogue API has input rules for, from hand-picked
values and public lists of valid and invalid email addresses and DNS-style
names. What no single row can show is held fixed: the rows a candidate
names are rows of its tenant, unique values are fresh, and a benchmark
result names a model of its running run.
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
from piccolo.engine.postgres import PostgresEngine
from piccolo.table import Table

import everyskill
from everyskill import catalogue, rows
from everyskill.errors import ValidationError
from everyskill.rows import NewSkillFeedback, NewTokenMeasurement, Saved, row_from_record
from everyskill.rules import INPUT_RULES
from everyskill.tenancy import tenant_scope
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


class _RollBack(Exception):
    """Raised to end a tenant scope without committing it."""


# The catalogue API's call that writes a new row of each table it writes,
# and the fields of the row it takes.
API_CALLS: dict[type[Table], tuple[Any, tuple[str, ...]]] = {
    Skill: (catalogue.create_skill, ("slug", "name", "description", "author_id")),
    SkillVersion: (
        catalogue.publish_version, ("skill_id", "content", "changelog", "author_id")
    ),
    User: (catalogue.create_user, ("email", "name")),
}
# The fields without which the call cannot be made.
API_REQUIRED = {Skill: {"slug", "name"}, SkillVersion: {"skill_id", "content"},
                User: {"email", "name"}}


@dataclass(frozen=True)
class ApiVerdict:
    """What the catalogue API made of a row's fields: the fields its
    ValidationError named (none: it accepted them), and the row it wrote
    (rolled back since)."""

    refused: frozenset[str]
    written: dict[str, Any] | None


async def api_verdict(tenant_id: str, table: type[Table], values: Mapping[str, Any]) -> ApiVerdict:
    """The API's verdict on ``values`` (their fields the API takes), in a
    scope of ``tenant_id`` that is rolled back."""
    call, fields = API_CALLS[table]
    arguments = {name: values[name] for name in fields if name in values}
    written: dict[str, Any] | None = None
    try:
        async with tenant_scope(tenant_id):
            try:
                result = await call(**arguments)
            except ValidationError as refused:
                return ApiVerdict(frozenset(field for field, _ in refused.problems), None)
            row = result.row if isinstance(result, Saved) else result
            written = {column._meta.name: getattr(row, column._meta.name)
                       for column in table._meta.columns}
            raise _RollBack
    except _RollBack:
        pass
    return ApiVerdict(frozenset(), written)


def refused_fields(error: pydantic.ValidationError) -> frozenset[str]:
    return frozenset(str(detail["loc"][0]) for detail in error.errors())


# The verdicts of assert_agree.
STORED = "stored"
REFUSED = "refused"
REFUSED_BY_THE_API = "refused by the API, stored by the database"


async def assert_agree(
    owner: asyncpg.Connection, tenant_id: str, table: type[Table], values: Mapping[str, Any]
) -> str:
    """The model refuses ``values`` exactly when the database does not store
    them as given, or (for a table the catalogue API writes) the API
    refuses them; what the model accepts, the database and the API store as
    the model holds it. Returns the verdict: STORED, REFUSED (by the
    database, and the model) or REFUSED_BY_THE_API (and the model)."""
    refused, model_row = model_problem(table, values)
    problem, stored = await database_problem(owner, table, values)
    where = (
        f"{table._meta.tablename} {dict(values)!r}:\n"
        f"  model: {'accepts' if refused is None else refused}\n"
        f"  database: {'stores it as given' if problem is None else problem}"
    )
    api_takes = table in API_CALLS and API_REQUIRED[table] <= values.keys()
    if refused is not None:
        if problem is None:
            # The database stores it: only the API's input rules may refuse
            # it, and the API refuses it, naming the same fields.
            fields = refused_fields(refused)
            assert fields <= INPUT_RULES.get(table, {}).keys(), where
            assert api_takes, where
            api = await api_verdict(tenant_id, table, values)
            assert api.refused == fields, f"{where}\n  API: refuses {set(api.refused)}"
            return REFUSED_BY_THE_API
        return REFUSED
    assert problem is None, where
    assert model_row is not None
    dumped = model_row.model_dump()
    held = {name: dumped[name] for name in values}
    if held != dict(values):
        # The model stripped or lowercased a value as the API does: the
        # database stores the value the model holds.
        problem, stored = await database_problem(owner, table, held)
        assert problem is None, f"{where}\n  the model's values: {problem}"
    assert stored is not None
    for column in table._meta.columns:
        name = column._meta.name
        if name in values or not generated(column):
            assert dumped[name] == stored[name], (table._meta.tablename, name, dict(values))
    if api_takes:
        api = await api_verdict(tenant_id, table, values)
        assert not api.refused and api.written is not None, f"{where}\n  API: refuses {set(api.refused)}"
        for name in INPUT_RULES[table]:
            assert api.written[name] == dumped[name], (where, name, api.written[name])
    return STORED


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
async def parents(owner: asyncpg.Connection, engine: PostgresEngine) -> Parents:
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

# Hand-picked values for the columns the catalogue API has input rules for:
# what the database stores and the API refuses or rewrites (padding, case,
# blank text, lengths at and past the limits), and ordinary values.
_NAMES = [" Padded name ", "\t\n", "\u3000", "n" * 200, "n" * 201, "Zoë 名前"]
_FREE_TEXT = ["   ", "d" * 100_000, "d" * 100_001]
INPUT_CANDIDATES: dict[tuple[type[Table], str], list[Any]] = {
    (Skill, "slug"): [
        " padded-slug ", "v2", "x" * 100, "x" * 101, "Mixed-Case", "two--hyphens",
        "-leading", "trailing-", "snake_case", "with space", "\t",
    ],
    (Skill, "name"): _NAMES,
    (Skill, "description"): _FREE_TEXT,
    (User, "email"): [
        " Ada.Lovelace@Example.COM ", "ada@example.com", "x" * 242 + "@example.com",
        "x" * 243 + "@example.com", "no-at-sign", "two@at@example.com",
        "with space@example.com", "@example.com", "ada@",
    ],
    (User, "name"): _NAMES,
    (SkillVersion, "content"): [" \n\t ", "  indented\n", "c" * 100_000, "c" * 100_001],
    (SkillVersion, "changelog"): _FREE_TEXT,
}


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
    values += INPUT_CANDIDATES.get((table, column._meta.name), [])
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
# Every input rule of the catalogue API: the database stores a row that
# breaks it, and the API and the model refuse it, naming the field.

API_RULE_CASES: list[tuple[str, dict[str, Any], str]] = [
    # What review found the models accepting.
    ("skill", {"slug": "Bad Slug!"}, "slug"),
    ("skill", {"name": "   "}, "name"),
    ("user", {"email": "not an email"}, "email"),
    ("skill version", {"content": "   "}, "content"),
    # The rest of the rules.
    ("skill", {"slug": "review--code"}, "slug"),
    ("skill", {"slug": "-review"}, "slug"),
    ("skill", {"slug": "review_code"}, "slug"),
    ("skill", {"slug": "r" * 101}, "slug"),
    ("skill", {"slug": " "}, "slug"),
    ("skill", {"name": "n" * 201}, "name"),
    ("skill", {"name": "\u3000"}, "name"),
    ("skill", {"description": "d" * 100_001}, "description"),
    ("user", {"email": "ada@example.com@example.org"}, "email"),
    ("user", {"email": "ada lovelace@example.com"}, "email"),
    ("user", {"email": "x" * 243 + "@example.com"}, "email"),
    ("user", {"email": " "}, "email"),
    ("user", {"name": ""}, "name"),
    ("user", {"name": "\t"}, "name"),
    ("user", {"name": "n" * 201}, "name"),
    ("skill version", {"content": ""}, "content"),
    ("skill version", {"content": "c" * 100_001}, "content"),
    ("skill version", {"changelog": "c" * 100_001}, "changelog"),
]


@pytest.mark.parametrize(
    ("row", "change", "field"),
    API_RULE_CASES,
    ids=[f"{row}-{field}-{index}" for index, (row, _, field) in enumerate(API_RULE_CASES)],
)
async def test_a_row_the_api_refuses_is_refused_by_its_model_naming_the_field(
    owner: asyncpg.Connection, parents: Parents, row: str, change: dict[str, Any], field: str
) -> None:
    table, valid = valid_rows(parents)[row]
    values = {**valid, **change}
    problem, _stored = await database_problem(owner, table, values)
    assert problem is None, f"the database refuses {values!r}: not a rule on top of its own"
    api = await api_verdict(parents.tenant_id, table, values)
    assert api.refused == {field}, api
    refused, _row = model_problem(table, values)
    assert refused is not None, f"New{table.__name__} accepts {values!r}; the API refuses it"
    assert [error["loc"][0] for error in refused.errors()] == [field], refused
    assert all(error["msg"] for error in refused.errors())


ROW_TABLES = {"skill": Skill, "user": User, "skill version": SkillVersion}


def test_every_input_rule_has_a_case() -> None:
    cases = {(ROW_TABLES[row], field) for row, _change, field in API_RULE_CASES}
    assert cases == {(table, name) for table, names in INPUT_RULES.items() for name in names}


# Public examples of email addresses, as their sources classify them (RFC
# 5322): the English Wikipedia's article "Email address" (its examples of
# valid and invalid addresses) and the email address test cases of
# Microsoft's "testing123" blog (2009). The API's rule is a plausibility
# check, looser than RFC 5322 ("local@domain" without whitespace): what
# matters here is that the model and the API judge each alike.
EMAILS_VALID = [
    "simple@example.com", "very.common@example.com", "FirstName.LastName@EasierReading.org",
    "x@example.com", "long.email-address-with-hyphens@and.subdomains.example.com",
    "user.name+tag+sorting@example.com", "name/surname@example.com", "admin@example",
    "example@s.example", '" "@example.org', '"john..doe"@example.org',
    "mailhost!username@example.org",
    '"very.(),:;<>[]\\".VERY.\\"very@\\\\ \\"very\\".unusual"@strange.example.com',
    "user%example.com@example.org", "user-@example.org", "postmaster@[123.123.123.123]",
    "postmaster@[IPv6:2001:0db8:85a3:0000:0000:8a2e:0370:7334]",
    "_test@[IPv6:2001:0db8:85a3:0000:0000:8a2e:0370:7334]",
    "email@example.com", "firstname.lastname@example.com", "email@subdomain.example.com",
    "firstname+lastname@example.com", "email@123.123.123.123", "email@[123.123.123.123]",
    '"email"@example.com', "1234567890@example.com", "email@example-one.com",
    "_______@example.com", "email@example.name", "email@example.museum",
    "email@example.co.jp", "firstname-lastname@example.com",
]
EMAILS_INVALID = [
    "abc.example.com", "a@b@c@example.com", 'a"b(c)d,e:f;g<h>i[j\\k]l@example.com',
    'just"not"right@example.com', 'this is"not\\allowed@example.com',
    'this\\ still\\"not\\\\allowed@example.com',
    "1234567890123456789012345678901234567890123456789012345678901234+x@example.com",
    "i.like.underscores@but_they_are_not_allowed_in_this_part",
    "QA\U0001f36bCHOCOLATE\U0001f36b@test.com",
    "plainaddress", "#@%^%#$@#$@#.com", "@example.com", "Joe Smith <email@example.com>",
    "email.example.com", "email@example@example.com", ".email@example.com",
    "email.@example.com", "email..email@example.com", "あいうえお@example.com",
    "email@example.com (Joe Smith)", "email@example", "email@-example.com",
    "email@example.web", "email@111.222.333.44444", "email@example..com",
    "Abc..123@example.com",
]
# Hand-picked: padding and case, whitespace inside, lengths at and past the
# limit, text PostgreSQL cannot store.
EMAILS_HAND_PICKED = [
    " Ada.Lovelace@Example.COM ", "ada@EXAMPLE.com\n", "ÉLODIE@Exemple.FR", "ada@exa mple.com",
    "ada\t@example.com", "ada@example.com\u00a0x", "", " ", "@", "ada@", "x" * 242 + "@example.com",
    "x" * 243 + "@example.com", "ada\x00@example.com",
]
# Public examples of names made of lowercase words and hyphens: the good and
# bad values of Kubernetes' test of DNS-1123 labels (apimachinery's
# pkg/util/validation, TestIsDNS1123Label). A slug is stricter (single
# hyphens) and longer (100 characters, not 63), and surrounding whitespace
# is stripped.
SLUGS_DNS_LABELS = [
    "a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a", "1--a--b--2",
    "a" * 63,
    "", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_", "a_", "_a",
    "a_b", "1_", "_1", "1_2", ".", "a.", ".a", "a.b", "1.", ".1", "1.2", " ", "a ", " a",
    "a b", "1 ", " 1", "1 2", "a" * 64,
]
SLUGS_HAND_PICKED = [
    "summarise-pr", "v2", "2024-q3-report", "Review-Code", "review code", "review--code",
    "rëview", "review\u2011code", "ｒｅｖｉｅｗ", "\treview-pr\n", "x" * 100, "x" * 101,
    "a\x00b", "review-pr/2",
]
NAMES = [
    "Review code", " Padded ", "", "\t", "\u3000", "\u200b", "n" * 200, "n" * 201, "名前",
    "with \x00 NUL",
]
CONTENTS = ["Review the diff.", " \n ", "", "  indented\n", "c" * 100_000, "c" * 100_001]

PUBLIC_CANDIDATES: list[tuple[str, str, list[Any]]] = [
    ("user", "email", EMAILS_VALID + EMAILS_INVALID + EMAILS_HAND_PICKED),
    ("skill", "slug", SLUGS_DNS_LABELS + SLUGS_HAND_PICKED),
    ("skill", "name", NAMES),
    ("user", "name", NAMES),
    ("skill version", "content", CONTENTS),
]


@pytest.mark.parametrize(("row", "field", "values"), PUBLIC_CANDIDATES,
                         ids=[f"{row}-{field}" for row, field, _ in PUBLIC_CANDIDATES])
async def test_model_and_api_agree_on_public_and_hand_picked_values(
    owner: asyncpg.Connection, parents: Parents, row: str, field: str, values: list[Any]
) -> None:
    """Each value in a valid row: the model and the API accept it alike and
    hold the same value, or both refuse it naming the field; and the
    database agrees as in the tests above."""
    table, valid = valid_rows(parents)[row]
    held: dict[Any, Any] = {}
    for value in values:
        candidate = {**valid, field: value}
        refused, model_row = model_problem(table, candidate)
        api = await api_verdict(parents.tenant_id, table, candidate)
        if refused is None:
            assert model_row is not None
            assert not api.refused and api.written is not None, (value, api)
            assert api.written[field] == getattr(model_row, field), value
            held[value] = api.written[field]
        else:
            assert refused_fields(refused) == api.refused == {field}, (value, refused, api)
        await assert_agree(owner, parents.tenant_id, table, candidate)
    # Both verdicts occurred.
    assert 0 < len(held) < len(values)
    expected = EXPECTED.get((row, field), {})
    for value, wanted in expected.items():
        assert value in values
        assert held.get(value) == wanted, (value, held.get(value, "refused"))


# What a few of the values must give: the value stored, or None (refused).
EXPECTED: dict[tuple[str, str], dict[str, str | None]] = {
    ("user", "email"): {
        "simple@example.com": "simple@example.com",
        "FirstName.LastName@EasierReading.org": "FirstName.LastName@easierreading.org",
        "user.name+tag+sorting@example.com": "user.name+tag+sorting@example.com",
        "postmaster@[123.123.123.123]": "postmaster@[123.123.123.123]",
        " Ada.Lovelace@Example.COM ": "Ada.Lovelace@example.com",
        "ÉLODIE@Exemple.FR": "ÉLODIE@exemple.fr",
        "x" * 242 + "@example.com": "x" * 242 + "@example.com",
        "abc.example.com": None, "a@b@c@example.com": None, "plainaddress": None,
        "@example.com": None, "Joe Smith <email@example.com>": None,
        "email@example.com (Joe Smith)": None, "email@example@example.com": None,
        '" "@example.org': None, "ada@exa mple.com": None, "x" * 243 + "@example.com": None,
        "": None, "ada@": None, "ada\x00@example.com": None,
    },
    ("skill", "slug"): {
        "a": "a", "a-1": "a-1", "012": "012", "1-a": "1-a", "a ": "a", " 1": "1",
        "summarise-pr": "summarise-pr", "\treview-pr\n": "review-pr", "x" * 100: "x" * 100,
        "a--1--2--b": None, "A": None, "aBc": None, "-a": None, "a-": None, "a_b": None,
        "a.b": None, "a b": None, "": None, " ": None, "rëview": None, "review\u2011code": None,
        "ｒｅｖｉｅｗ": None, "x" * 101: None,
    },
    ("skill", "name"): {" Padded ": "Padded", "n" * 200: "n" * 200, "": None, "\t": None,
                        "\u3000": None, "n" * 201: None},
    ("skill version", "content"): {"  indented\n": "  indented\n", " \n ": None, "": None,
                                   "c" * 100_001: None},
}


# ---------------------------------------------------------------------------
# Agreement: the same verdict on every candidate.

# A column left out of the row (its default applies).
OMIT = object()


async def test_model_database_and_api_agree_on_every_single_change_of_a_valid_row(
    owner: asyncpg.Connection, parents: Parents
) -> None:
    """Each valid row, then each column of it set to each candidate of its
    type, or left out."""
    verdicts: Counter[tuple[str, str]] = Counter()
    for name, (table, valid) in valid_rows(parents).items():
        assert await assert_agree(owner, parents.tenant_id, table, valid) == STORED, name
        for column in table._meta.columns:
            column_name = column._meta.name
            without = {key: value for key, value in valid.items() if key != column_name}
            verdict = await assert_agree(owner, parents.tenant_id, table, without)
            verdicts[table._meta.tablename, verdict] += 1
            for value in candidates(table, column, parents):
                verdict = await assert_agree(
                    owner, parents.tenant_id, table, {**valid, column_name: value}
                )
                verdicts[table._meta.tablename, verdict] += 1
    # Every table had candidates of both verdicts, and each table the API
    # writes had rows only the API refuses: the check is not vacuous.
    for table in TABLES:
        assert verdicts[table._meta.tablename, STORED] > 0, table
        assert verdicts[table._meta.tablename, REFUSED] > 0, table
        assert (verdicts[table._meta.tablename, REFUSED_BY_THE_API] > 0) == (table in API_CALLS)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_model_database_and_api_agree_on_random_rows(
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
    verdict = await assert_agree(owner, parents.tenant_id, table, values)
    event(f"{table._meta.tablename}: {verdict}")
