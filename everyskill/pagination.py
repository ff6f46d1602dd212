"""Pages of rows, newest first, with opaque cursors.

Contract
--------
- :func:`fetch_page` reads one page of a table's rows matching a filter,
  ordered by ``(created_at, id)`` descending, inside the current tenant
  scope (row-level security applies). It returns a :class:`Page`: the rows,
  and ``next_cursor`` to pass back for the following page (None on the last
  page).
- Pages are keyset pages: rows written while a client pages through never
  make it see a row twice or skip an older one, and with an index on
  ``(filter column, created_at DESC, id DESC)`` (feedback and token
  measurements have them, by skill and by tenant) a page costs the same
  however deep it is; without one,
  PostgreSQL sorts the matching rows for each page.
- A cursor is opaque text. A cursor that was not made by this module, or for
  another table, is a :class:`~everyskill.errors.ValidationError` on the field
  ``cursor`` (whatever it holds: any text, any JSON, however deep, any
  date); ``limit`` must be between 1 and :data:`MAX_LIMIT`.
- A moment (``since``, ``until``, a cursor's) must be timezone-aware and
  fall between 0001-01-01 and 9999-12-31 once in UTC (Python's range):
  ``0001-01-01T00:00:00+14:00`` is a ValidationError naming the field, not
  an overflow (:func:`check_moment`).
- A :class:`Filter` is built from column names this module writes itself and
  values passed as query parameters: no caller text is ever spliced into SQL.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Generic

import asyncpg

from everyskill.columns import select_list
from everyskill.errors import ValidationError
from everyskill.rows import RowT, row_from_record

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Filter", "Page", "check_moment", "fetch_page"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class Page(Generic[RowT]):
    """One page of rows, newest first."""

    items: list[RowT]
    next_cursor: str | None


@dataclass
class Filter:
    """Conditions on one table, joined with AND, as parameterised SQL."""

    conditions: list[str] = field(default_factory=list)
    arguments: list[Any] = field(default_factory=list)

    def add(self, template: str, *values: Any) -> Filter:
        """Add ``template``, each ``{}`` in it standing for a value's parameter."""
        placeholders = []
        for value in values:
            self.arguments.append(value)
            placeholders.append(f"${len(self.arguments)}")
        self.conditions.append(template.format(*placeholders))
        return self

    def equal(self, column: str, value: Any) -> Filter:
        """``column = value``, unless ``value`` is None (no condition)."""
        return self if value is None else self.add(f"{column} = {{}}", value)

    def created_between(
        self, since: datetime.datetime | None, until: datetime.datetime | None
    ) -> Filter:
        """``since <= created_at < until``, each bound when given; a bound must
        be a timezone-aware datetime (ValidationError naming it otherwise)."""
        for name, moment, template in (
            ("since", since, "created_at >= {}"),
            ("until", until, "created_at < {}"),
        ):
            if moment is not None:
                self.add(template, check_moment(name, moment))
        return self

    def sql(self) -> str:
        return " AND ".join(self.conditions) if self.conditions else "TRUE"


def check_moment(name: str, moment: object) -> datetime.datetime:
    """``moment``, a timezone-aware datetime that exists in UTC; else a
    ValidationError on the field ``name``."""
    if not isinstance(moment, datetime.datetime) or moment.utcoffset() is None:
        raise ValidationError.of(name, "must be a timezone-aware datetime")
    try:
        moment.astimezone(datetime.timezone.utc)
    except OverflowError:
        raise ValidationError.of(
            name,
            "is out of range: in UTC it must fall between 0001-01-01 and 9999-12-31",
        ) from None
    return moment


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError.of("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return limit


def encode_cursor(table: str, created_at: datetime.datetime, id: str) -> str:
    payload = json.dumps([table, created_at.isoformat(), id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(table: str, cursor: str) -> tuple[datetime.datetime, str]:
    refused = ValidationError.of(
        "cursor", "is not the next_cursor of a previous page of this list"
    )
    if not isinstance(cursor, str):
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_table, created_at, id = json.loads(raw)
        moment = check_moment("cursor", datetime.datetime.fromisoformat(created_at))
    # RecursionError: JSON nested deeper than the parser goes ("[[[[...").
    except (binascii.Error, ValueError, TypeError, RecursionError, ValidationError):
        raise refused from None
    if cursor_table != table or not isinstance(id, str):
        raise refused
    return moment, id


async def fetch_page(
    connection: asyncpg.Connection,
    table: type[RowT],
    where: Filter,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[RowT]:
    """One page of ``table``'s rows matching ``where``, newest first."""
    check_limit(limit)
    name = table._meta.tablename
    where = Filter(list(where.conditions), list(where.arguments))
    if cursor is not None:
        moment, id = decode_cursor(name, cursor)
        where.add("(created_at, id) < ({}, {})", moment, id)
    where.arguments.append(limit + 1)
    records = await connection.fetch(
        f"SELECT {select_list(table)} FROM {name} WHERE {where.sql()}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(where.arguments)}",
        *where.arguments,
    )
    items = [row_from_record(table, record) for record in records[:limit]]
    next_cursor = None
    if len(records) > limit:
        last = records[limit - 1]
        next_cursor = encode_cursor(name, last["created_at"], last["id"])
    return Page(items=items, next_cursor=next_cursor)

