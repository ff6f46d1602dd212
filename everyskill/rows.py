"""Row types and validated new-row models, one pair per table.

Contract
--------
- The row type of a table is its Piccolo ``Table`` class (``SkillFeedback``,
  ``TokenMeasurement``, ...), re-exported here.
- ``New<Row>`` (``NewSkillFeedback``, ``NewTokenMeasurement``, ...) is a
  pydantic model of a row to insert, built from the table's columns: a column
  that is NOT NULL without a default is required; a nullable one is optional
  (``None``); one with a default takes it. ``id``, ``created_at`` and
  ``updated_at`` are optional: ``None`` leaves them to the database, which
  generates them.
- The models refuse what the database refuses on a new row, and what the
  catalogue API refuses, with the rules of :mod:`everyskill.rules` (the
  rules the feedback and catalogue APIs check too): values outside a
  column's choices or its type's range (``integer``, ``bigint``,
  ``numeric(14, 6)``, ``varchar(100)``), negative tokens, costs, latencies
  and rates, scores out of range, empty names, text PostgreSQL cannot store;
  a feedback type without what it carries or with another type's fields (a
  thumbs up has sentiment 1, a thumbs down -1), reviewed feedback without
  ``reviewed_at``; a benchmark run not created pending, or over no models,
  blank or repeated ones; and the catalogue's input rules
  (:data:`everyskill.rules.INPUT_RULES`): a skill slug that is not
  lowercase words joined by single hyphens, a blank skill or user name or
  version content, an email that is not ``local@domain`` without spaces,
  text too long. As the API does, slugs, names and emails are stripped of
  surrounding whitespace, an email's domain is lowercased, and a blank
  description or changelog is none: the model holds the value the API
  would write. Columns PostgreSQL sets itself on a new row (a skill's
  aggregates, a run's life-cycle stamps and picks) are refused unless left
  at their default, rather than silently replaced. A refusal is a
  ``pydantic.ValidationError`` whose error names the field and the reason.
  What a model accepts, the database stores as the model holds it (times to
  the millisecond), provided the rows it names exist in the same tenant and
  it repeats no unique value (and a benchmark result's run is running and
  names its model): the database alone can check those.
- The database does not hold the catalogue's input rules: a skill, user or
  version written another way (the staff admin, SQL as the owner) may break
  them, and its model refuses such a row although the database stored it.
- :func:`row_from_record` makes a row object from a database record, and
  :class:`Saved` is what the API returns for a row it wrote: the row, the
  counts of secrets redacted from its text, and warnings (a cost that could
  not be computed, say), and ``replayed``: whether the row was already
  stored under the id the caller gave, so that nothing was written (see
  :mod:`everyskill.client_ids`). :class:`SavedBatch` is the same for a
  batch: the rows' ids in input order, summed redactions, the warnings,
  and ``replayed``, the ids among them that were already stored.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Generic, Literal, Optional, TypeVar

import asyncpg
import pydantic
from piccolo.columns import (
    Array,
    BigInt,
    Column,
    ForeignKey,
    Integer,
    Numeric,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.base import Default
from piccolo.table import Table
from pydantic_core import PydanticCustomError

from everyskill.errors import UNSTORABLE, storable
from everyskill.rules import (
    BOUNDS,
    INPUT_RULES,
    INT4,
    INT8,
    NON_EMPTY,
    ROW_RULES,
    SET_BY_DATABASE,
    Bound,
    Rule,
)

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
    if column.value_type is str:
        return _StorableText
    return column.value_type


def _storable(text: str) -> str:
    if not storable(text):
        raise PydanticCustomError("unstorable_text", UNSTORABLE)
    return text


_StorableText = Annotated[str, pydantic.AfterValidator(_storable)]


def _constraints(table: type[Table], column: Column) -> dict[str, Any]:
    """Field constraints from the column's type and the table's column rules."""
    name = column._meta.name
    constraints: dict[str, Any] = {"description": column._meta.help_text}
    low: Bound = None
    high: Bound = None
    if isinstance(column, Integer) and not column._meta.choices:
        low, high = INT8 if isinstance(column, BigInt) else INT4
    rule_low, rule_high = BOUNDS.get(table, {}).get(name, (None, None))
    if rule_low is not None:
        low = rule_low if low is None else max(low, rule_low)
    if rule_high is not None:
        high = rule_high if high is None else min(high, rule_high)
    if low is not None:
        constraints["ge"] = low
    if high is not None:
        constraints["le"] = high
    if isinstance(column, Numeric) and column.digits is not None:
        constraints["max_digits"], constraints["decimal_places"] = column.digits
    if isinstance(column, Varchar):
        constraints["max_length"] = column.length
    # An input rule of the catalogue refuses empty text itself, saying what
    # the text must be.
    if name in NON_EMPTY.get(table, ()) and name not in INPUT_RULES.get(table, {}):
        constraints["min_length"] = 1
    return constraints


def _set_by_database(name: str, default: Any, why: str) -> Any:
    def leave_out(value: Any) -> Any:
        if value != default:
            raise PydanticCustomError(
                "set_by_database", f"{why}: leave {name} out of a new row"
            )
        return value

    return pydantic.AfterValidator(leave_out)


def _row_rules(name: str, rules: tuple[Rule, ...]) -> Any:
    """An after-validator applying ``rules`` (all on ``name``) with the
    fields validated before it."""

    def check(value: Any, info: pydantic.ValidationInfo) -> Any:
        values = {**info.data, name: value}
        for rule in rules:
            reason = rule.reason(values)
            if reason is not None:
                raise PydanticCustomError("row_rule", reason)
        return value

    return pydantic.AfterValidator(check)


def _default(column: Column) -> Any:
    default = column.default
    return default.value if isinstance(default, Enum) else default


def _field(table: type[Table], column: Column, rules: tuple[Rule, ...]) -> tuple[Any, Any]:
    name = column._meta.name
    # The catalogue API's input rule of the column, when it has one: it is
    # stricter than the database's, and gives the value the API would store.
    annotation = INPUT_RULES.get(table, {}).get(name) or _value_type(column)
    constraints = _constraints(table, column)
    validators: list[Any] = []
    why = SET_BY_DATABASE.get(table, {}).get(name)
    if why is not None:
        validators.append(_set_by_database(name, _default(column), why))
    if rules:
        # A rule runs on a default value too: a bug report without a
        # comment breaks one.
        validators.append(_row_rules(name, rules))
        constraints["validate_default"] = True

    # The database generates ids and times (created_at, updated_at): None
    # leaves them to it.
    generated = column._meta.primary_key or isinstance(column.default, Default)
    if generated or column._meta.null:
        annotation = Optional[annotation]
    if validators:
        annotation = Annotated[(annotation, *validators)]

    if generated or column._meta.null:
        return annotation, pydantic.Field(default=None, **constraints)
    if column._meta.required:
        return annotation, pydantic.Field(**constraints)
    default = _default(column)
    if callable(default):
        return annotation, pydantic.Field(default_factory=default, **constraints)
    return annotation, pydantic.Field(default=default, **constraints)


def _field_order(table: type[Table], rules: tuple[Rule, ...]) -> list[str]:
    """The table's columns in order, each field a rule is on moved after the
    fields the rule reads (a field's validators see the fields before it)."""
    order = [column._meta.name for column in table._meta.columns]
    for _ in range(len(order) + 1):
        moved = False
        for rule in rules:
            after = max((order.index(name) for name in rule.reads), default=-1)
            if order.index(rule.field) < after:
                order.remove(rule.field)
                order.insert(after, rule.field)
                moved = True
        if not moved:
            return order
    raise ValueError(f"the rules of {table._meta.tablename} read each other in a circle")


def new_row_model(table: type[Table]) -> type[pydantic.BaseModel]:
    """A pydantic model of a new row of ``table``, named ``New<Table>``."""
    rules = ROW_RULES.get(table, ())
    columns = {column._meta.name: column for column in table._meta.columns}
    fields = {
        name: _field(
            table, columns[name], tuple(rule for rule in rules if rule.field == name)
        )
        for name in _field_order(table, rules)
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
    ``replayed`` is true when the caller's id was already stored in the
    tenant: nothing was written and ``row`` is the stored row (its
    redactions are those of the values given this time).
    """

    row: RowT
    redactions: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[Warning, ...] = ()
    replayed: bool = False


@dataclass(frozen=True)
class SavedBatch:
    """A batch of rows the API wrote in one transaction.

    ``ids`` are the rows' ids, in the order of the input; ``replayed`` are
    those among them that were already stored in the tenant under the ids
    the caller gave (nothing was written for them), in the same order;
    ``redactions`` and ``warnings`` are as in :class:`Saved`, for the rows
    written.
    """

    ids: tuple[str, ...]
    redactions: Mapping[str, int] = field(default_factory=dict)
    warnings: tuple[Warning, ...] = ()
    replayed: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """How many rows were written (replays aside)."""
        return len(self.ids) - len(self.replayed)
