"""Row types and validated new-row models, one pair per table.

Contract
--------
- The row type of a table is its Piccolo ``Table`` class (``SkillFeedback``,
  ``TokenMeasurement``, ...), re-exported here.
- ``New<Row>`` (``NewSkillFeedback``, ``NewTokenMeasurement``, ...) is a
  pydantic model of a row to insert, built from the table's columns: a column
  that is NOT NULL without a default is required; a nullable one is optional
  (``None``); one with a default takes it. ``id`` and ``created_at`` are
  optional, since the database generates them.
- The models refuse what the database's CHECK constraints refuse: values
  outside a column's choices, negative tokens, costs and latencies, scores
  out of range, empty names. A refusal is a ``pydantic.ValidationError`` that
  names the field and the reason.
- :func:`row_from_record` makes a row object from a database record, and
  :class:`Saved` is what the API returns for a row it wrote: the row, the
  counts of secrets redacted from its text, and warnings (a cost that could
  not be computed, say). :class:`SavedBatch` is the same for a batch: the
  new rows' ids in input order, summed redactions, and the warnings.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, Literal, Optional, TypeVar

import asyncpg
import pydantic
from piccolo.columns import Array, Column, ForeignKey, Timestamptz
from piccolo.table import Table

from tables import (
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

__all__ = [
    "BenchmarkResult",
    "BenchmarkRun",
    "ModelPrice",
    "NewBenchmarkResult",
    "NewBenchmarkRun",
    "NewModelPrice",
    "NewSkill",
    "NewSkillFeedback",
    "NewSkillVersion",
    "NewTenant",
    "NewTokenMeasurement",
    "NewUser",
    "Saved",
    "SavedBatch",
    "Skill",
    "SkillFeedback",
    "SkillVersion",
    "Tenant",
    "TokenMeasurement",
    "User",
    "new_row_model",
    "row_from_record",
]

# Bounds the CHECK constraints of the migrations enforce, by column name.
_NON_NEGATIVE = {
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "estimated_cost_microcents",
    "cheapest_cost_microcents",
    "avg_token_cost_microcents",
    "latency_ms",
    "test_case_index",
    "total_feedback",
}
_NON_EMPTY = {"name", "slug", "email", "model_name", "model_provider", "source"}
_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("skill_feedback", "quality_score"): (1, 10),
    ("benchmark_results", "quality_score"): (0, 100),
    ("benchmark_runs", "best_quality_score"): (0, 100),
    ("skills", "positive_feedback_pct"): (0, 100),
    ("skill_versions", "version"): (1, 2**31 - 1),
}
_INT4_MAX = 2**31 - 1


def _value_type(column: Column) -> Any:
    if isinstance(column, ForeignKey):
        return _value_type(column._foreign_key_meta.resolved_target_column)
    if isinstance(column, Array):
        return list[_value_type(column.base_column)]  # type: ignore[misc]
    if isinstance(column, Timestamptz):
        return datetime.datetime
    choices = column._meta.choices
    if choices is not None and issubclass(choices, Enum):
        return Literal[tuple(member.value for member in choices)]
    return column.value_type


def _field(table: type[Table], column: Column) -> tuple[Any, Any]:
    name = column._meta.name
    annotation = _value_type(column)
    constraints: dict[str, Any] = {"description": column._meta.help_text}
    if annotation is int:
        low, high = _RANGES.get((table._meta.tablename, name), (None, _INT4_MAX))
        if name in _NON_NEGATIVE:
            low = 0
        constraints.update(ge=low, le=high)
    if name.endswith("_per_token"):
        constraints.update(ge=0, max_digits=14, decimal_places=6)
    if annotation is str and name in _NON_EMPTY:
        constraints["min_length"] = 1
    if name == "models":
        constraints["min_length"] = 1

    if column._meta.primary_key or name == "created_at":
        return Optional[annotation], pydantic.Field(default=None, **constraints)
    if column._meta.null:
        return Optional[annotation], pydantic.Field(default=None, **constraints)
    if column._meta.required:
        return annotation, pydantic.Field(**constraints)
    default = column.default
    if callable(default):
        return annotation, pydantic.Field(default_factory=default, **constraints)
    if isinstance(default, Enum):
        default = default.value
    return annotation, pydantic.Field(default=default, **constraints)


def new_row_model(table: type[Table]) -> type[pydantic.BaseModel]:
    """A pydantic model of a new row of ``table``, named ``New<Table>``."""
    fields = {
        column._meta.name: _field(table, column) for column in table._meta.columns
    }
    model: type[pydantic.BaseModel] = pydantic.create_model(  # type: ignore[call-overload]
        f"New{table.__name__}",
        __config__=pydantic.ConfigDict(extra="forbid", strict=False),
        __doc__=f"A new row of ``{table._meta.tablename}``, validated.",
        **fields,
    )
    return model


NewTenant = new_row_model(Tenant)
NewUser = new_row_model(User)
NewSkill = new_row_model(Skill)
NewSkillVersion = new_row_model(SkillVersion)
NewSkillFeedback = new_row_model(SkillFeedback)
NewModelPrice = new_row_model(ModelPrice)
NewTokenMeasurement = new_row_model(TokenMeasurement)
NewBenchmarkRun = new_row_model(BenchmarkRun)
NewBenchmarkResult = new_row_model(BenchmarkResult)


RowT = TypeVar("RowT", bound=Table)


def _column_names(table: type[Table]) -> frozenset[str]:
    names = _COLUMN_NAMES.get(table)
    if names is None:
        names = _COLUMN_NAMES[table] = frozenset(
            column._meta.name for column in table._meta.columns
        )
    return names


_COLUMN_NAMES: dict[type[Table], frozenset[str]] = {}


def row_from_record(table: type[RowT], record: asyncpg.Record | Mapping[str, Any]) -> RowT:
    """A row object of ``table`` from a database record (all its columns).

    A record holding exactly the table's columns (``SELECT *``, ``RETURNING
    *``) is set on the object as Piccolo's constructor would set it, without
    the constructor's look-up of a default for each column it is not given:
    that look-up is most of the cost of a row. Any other record goes through
    the constructor.
    """
    values = dict(record)
    if values.keys() != _column_names(table):
        return table(_exists_in_db=True, **values)
    row = table.__new__(table)
    row._exists_in_db = True
    row._was_created = None
    row.__dict__.update(values)
    return row


@dataclass(frozen=True)
class Saved(Generic[RowT]):
    """A row the API wrote, with what it had to redact from its text.

    ``redactions`` maps a kind of secret (``"aws_access_key"``, ...) to how
    many were replaced by markers; it never holds the secrets themselves.
    ``warnings`` say what was written but deserves a look, for example a
    cost left NULL because no price is known for the model.
    """

    row: RowT
    redactions: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[Warning, ...] = ()


@dataclass(frozen=True)
class SavedBatch:
    """A batch of rows the API wrote in one transaction.

    ``ids`` are the new rows' ids, in the order of the input; ``redactions``
    and ``warnings`` are as in :class:`Saved`, for the whole batch.
    """

    ids: tuple[str, ...]
    redactions: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[Warning, ...] = ()

    @property
    def count(self) -> int:
        """How many rows were written."""
        return len(self.ids)
