"""The JSON shapes of the HTTP API's answers, shared by its routers.

Contract
--------
- :func:`row_model` is the answer model of a table's row: every column the
  application reads (:mod:`everyskill.columns`), under its name (the Python
  API's field names), typed from the column, ``null`` allowed exactly where
  the column is nullable, every field always present. The row models are
  :data:`SkillOut`, :data:`SkillVersionOut`, :data:`UserOut`,
  :data:`FeedbackOut`, :data:`MeasurementOut`, :data:`BenchmarkRunOut`.
- :func:`row_json` turns a row object of the query API into that model's
  fields.
- Writes of one row answer :class:`Written` (``row``, ``redactions``:
  secrets replaced by markers, by kind; ``warnings``: what was written but
  deserves a look, such as a cost left null; ``replayed``), as the query
  API's :class:`~everyskill.rows.Saved`. Writes of a batch answer
  :class:`BatchWritten` (``ids`` in the order of the items, ``count`` of
  rows written, ``redactions``, ``warnings``, ``replayed``: the ids already
  stored), as :class:`~everyskill.rows.SavedBatch`.
- **Client ids** (:mod:`everyskill.client_ids`): every created item may
  carry its own ``id`` (:data:`ClientId`, a UUID), which makes a retry
  safe; its schema's pattern (:data:`CLIENT_ID_PATTERN`) is what the
  query API accepts. :func:`created` gives a create's status: 201 when it wrote
  something; 200 with ``Idempotent-Replayed: true`` (:data:`REPLAYED_HEADER`)
  when the row, or every row of a batch, was already stored under the ids
  given, and nothing was written. :func:`create_responses` declares that
  200 in a create route's schema.
- Lists answer ``{"items": [...], "next_cursor": ...}``: pass
  ``next_cursor`` back as ``cursor`` for the next page (null on the last).
- :func:`one_or_batch` is the body of a route that takes one item or
  ``{"items": [...]}``: a JSON object with an ``items`` member is a batch,
  any other object is one item, so that a validation error is about the
  shape the client meant.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Annotated, Any, Generic, TypeVar

import pydantic
from fastapi import Query, Response
from piccolo.columns import (
    Array,
    BigInt,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from everyskill.client_ids import RANDOM_VERSIONS
from everyskill.pagination import MAX_LIMIT
from everyskill.pagination import Page as RowPage
from everyskill.rows import Saved, SavedBatch
from tables import BenchmarkRun, Skill, SkillFeedback, SkillVersion, TokenMeasurement, User

__all__ = [
    "CLIENT_ID_PATTERN",
    "REPLAYED_HEADER",
    "BatchWritten",
    "ClientId",
    "BenchmarkRunOut",
    "FeedbackOut",
    "MeasurementOut",
    "Page",
    "SkillOut",
    "SkillVersionOut",
    "UserOut",
    "Written",
    "batch_written",
    "create_responses",
    "created",
    "one_or_batch",
    "row_json",
    "row_model",
    "written",
]

RowModel = TypeVar("RowModel", bound=pydantic.BaseModel)
Item = TypeVar("Item")


def _python_type(column: Column) -> Any:
    if isinstance(column, ForeignKey):
        return _python_type(column._foreign_key_meta.resolved_target_column)
    if isinstance(column, Array):
        return list[_python_type(column.base_column)]  # type: ignore[misc]
    if isinstance(column, Timestamptz):
        return datetime.datetime
    if isinstance(column, Boolean):
        return bool
    if isinstance(column, (Integer, BigInt)):
        return int
    if isinstance(column, (Text, Varchar)):
        return str
    raise TypeError(f"no JSON type for column {column._meta.name} ({type(column).__name__})")


def row_model(table: type[Table], name: str) -> type[pydantic.BaseModel]:
    """The answer model of a row of ``table`` (see the module's contract)."""
    fields: dict[str, Any] = {}
    for column in table._meta.columns:
        annotation = _python_type(column)
        if column._meta.null:
            annotation = annotation | None
        fields[column._meta.name] = (
            annotation,
            pydantic.Field(description=column._meta.help_text or None),
        )
    model: type[pydantic.BaseModel] = pydantic.create_model(
        name,
        __doc__=(table.__doc__ or "").strip().split("\n\n")[0] or None,
        **fields,
    )
    return model


# Subclassed so that they are types for the routes' annotations.
class SkillOut(row_model(Skill, "Skill")):  # type: ignore[misc]
    """A skill of the catalogue, with the aggregates PostgreSQL keeps exact."""


class SkillVersionOut(row_model(SkillVersion, "SkillVersion")):  # type: ignore[misc]
    """A published version of a skill."""


class UserOut(row_model(User, "User")):  # type: ignore[misc]
    """A user of the tenant."""


class FeedbackOut(row_model(SkillFeedback, "Feedback")):  # type: ignore[misc]
    """A feedback item on a skill."""


class MeasurementOut(row_model(TokenMeasurement, "TokenMeasurement")):  # type: ignore[misc]
    """A token measurement of one use of a skill."""


class BenchmarkRunOut(row_model(BenchmarkRun, "BenchmarkRun")):  # type: ignore[misc]
    """A benchmark run of a skill over models."""


def row_json(row: Table) -> dict[str, Any]:
    """A row object's columns by name."""
    return {column._meta.name: getattr(row, column._meta.name) for column in row._meta.columns}


def page_json(page: RowPage[Any]) -> dict[str, Any]:
    """A page of the query API as a list answers it."""
    return {"items": [row_json(row) for row in page.items], "next_cursor": page.next_cursor}


#: The query parameters every list takes as the query API does.
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Since = Annotated[
    datetime.datetime | None, Query(description="created_at >= since (with a time zone)")
]
Until = Annotated[
    datetime.datetime | None, Query(description="created_at < until (with a time zone)")
]


class Page(pydantic.BaseModel, Generic[Item]):
    """One page of a list, newest first."""

    items: list[Item]
    next_cursor: str | None = pydantic.Field(
        description="Pass it as cursor for the next page; null on the last page."
    )


class Written(pydantic.BaseModel, Generic[Item]):
    """A row written (committed), with what was redacted from its text."""

    row: Item
    redactions: dict[str, int] = pydantic.Field(
        description="Secrets replaced by markers in the row's text, by kind."
    )
    warnings: list[str] = pydantic.Field(
        description="What was written but deserves a look (a cost left null, say)."
    )
    replayed: bool = pydantic.Field(
        description="True when the id given was already stored: nothing was written and"
        " row is the stored row (answered 200 with Idempotent-Replayed: true)."
    )


class BatchWritten(pydantic.BaseModel):
    """A batch written (committed) in one transaction, all of it."""

    ids: list[str] = pydantic.Field(description="The rows' ids, in the order of the items.")
    count: int = pydantic.Field(description="How many rows were written (replays aside).")
    redactions: dict[str, int]
    warnings: list[str]
    replayed: list[str] = pydantic.Field(
        description="The ids among ids that were already stored: nothing was written for them."
    )


#: The response header of a create that wrote nothing: the ids were stored already.
REPLAYED_HEADER = "Idempotent-Replayed"

#: The ids the API accepts (:func:`everyskill.client_ids.checked_id`): a
#: hyphenated UUID, in any case, of a random version
#: (:data:`~everyskill.client_ids.RANDOM_VERSIONS`) and the RFC 9562 variant.
CLIENT_ID_PATTERN = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-["
    + "".join(str(version) for version in RANDOM_VERSIONS)
    + "][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
)

#: The optional client id of a created item.
ClientId = Annotated[
    Annotated[
        str,
        # Checked by the query API, whose message says what to send; the
        # schema states the same rule.
        pydantic.WithJsonSchema(
            {"type": "string", "format": "uuid", "pattern": CLIENT_ID_PATTERN}
        ),
    ]
    | None,
    pydantic.Field(
        default=None,
        description="Your own UUID for the new row: a retry with the same id and the same"
        " values answers the stored row (200, replayed) instead of writing it twice.",
    ),
]


def created(response: Response, replayed: bool) -> None:
    """Set a create's status: 201, or 200 and :data:`REPLAYED_HEADER` when
    nothing was written (see the module's contract)."""
    if replayed:
        response.status_code = 200
        response.headers[REPLAYED_HEADER] = "true"


def create_responses(model: Any) -> dict[int | str, dict[str, Any]]:
    """The schema's 200 of a create route answering ``model``: a replay."""
    return {
        200: {
            "model": model,
            "description": "A replay: every id given was stored already, with these values;"
            " nothing was written, and the stored rows are answered.",
            "headers": {
                REPLAYED_HEADER: {
                    "description": "true: nothing was written.",
                    "required": True,
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        }
    }


def _warnings(warnings: tuple[Warning, ...]) -> list[str]:
    return [str(warning) for warning in warnings]


def written(saved: Saved[Any] | Table, redactions: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The :class:`Written` fields of a Saved row (or of a bare row)."""
    if isinstance(saved, Saved):
        return {
            "row": row_json(saved.row),
            "redactions": dict(saved.redactions),
            "warnings": _warnings(saved.warnings),
            "replayed": saved.replayed,
        }
    return {
        "row": row_json(saved),
        "redactions": dict(redactions or {}),
        "warnings": [],
        "replayed": False,
    }


def batch_written(saved: SavedBatch) -> dict[str, Any]:
    """The :class:`BatchWritten` fields of a SavedBatch."""
    return {
        "ids": list(saved.ids),
        "count": saved.count,
        "redactions": dict(saved.redactions),
        "warnings": _warnings(saved.warnings),
        "replayed": list(saved.replayed),
    }


def _shape(value: Any) -> str:
    return "batch" if isinstance(value, Mapping) and "items" in value else "item"


def one_or_batch(item: type[pydantic.BaseModel], batch: type[pydantic.BaseModel]) -> Any:
    """The body type of a route taking one ``item`` or a ``batch`` (see the contract)."""
    return Annotated[
        Annotated[item, pydantic.Tag("item")] | Annotated[batch, pydantic.Tag("batch")],
        pydantic.Discriminator(_shape),
    ]
