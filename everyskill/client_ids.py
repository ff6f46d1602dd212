"""Client-supplied ids: what makes a retried create safe.

Contract
--------
- Every create call of the query API takes an optional ``id`` (a batch: an
  optional ``"id"`` in each item). It must be a UUID written as 32
  hexadecimal digits in the 8-4-4-4-12 hyphenated layout, in any case,
  of a random version (:data:`RANDOM_VERSIONS`: 4 or 7; a guessable id
  could be taken first by another tenant, since ids are global);
  :func:`checked_id` stores its canonical lowercase form, and refuses
  anything else with a :class:`~everyskill.errors.ValidationError` on the
  field (``id``, or ``measurements[3].id`` in a batch). :func:`batch_ids`
  does the same for a batch and refuses an id given twice, naming both
  items.
- The database decides what an id means, with ``INSERT ... ON CONFLICT
  (id) DO NOTHING``: no row is written when the id is taken, whoever holds
  it (row-level security hides another tenant's row, and primary keys are
  global). When nothing was inserted, a read by id (as the tenant) tells
  the two cases apart:

  - the row is the tenant's: the call is a *replay*. It writes nothing and
    returns the stored row, marked ``replayed`` (``Saved.replayed``,
    ``SavedBatch.replayed``), provided the call's own values equal the
    stored row's (:func:`differences`, the same comparison for every table:
    each column the call would write from its input is compared with the
    stored column of that name; values the database or the price table
    computes, such as a cost the caller did not give or a version number,
    are not input and are not compared). A replay with other values is
    refused by :func:`reused` (:class:`~everyskill.errors.ConflictError`,
    ``field="id"``): the id was already used for different content, as a
    payment API's idempotency key is;
  - the row is not visible: another tenant holds the id. :func:`foreign`
    refuses it with one message whatever the row is: nothing about it is
    revealed, not even its kind beyond the table the call writes.
- The BEFORE INSERT triggers of the tables written this way only check and
  set the new row's own columns (``skills_guard_aggregates``,
  ``benchmark_runs_lifecycle``): they have no side effect when the row is
  then not inserted. The AFTER INSERT statement triggers that maintain the
  aggregates and guard benchmark results read the statement's transition
  table, which holds only the rows really inserted: a replay counts nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from everyskill.errors import ConflictError, ValidationError

__all__ = [
    "FOREIGN_ID",
    "batch_ids",
    "checked_id",
    "differences",
    "foreign",
    "reused",
    "settle_skipped",
    "stored_rows",
]

_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_WHAT = (
    "must be a UUID such as 123e4567-e89b-42d3-a456-426614174000"
    " (32 hexadecimal digits in groups of 8-4-4-4-12, joined by hyphens)"
)
#: The versions accepted: the random ones (RFC 9562: version 4 has 122
#: random bits, version 7 a time and 74 random bits). Ids are primary keys
#: shared by every tenant, so an id someone else can derive or guess
#: (versions 1 and 6 from a time and a node, 3 and 5 from a name, 8 and
#: the nil and max UUIDs from anything) could be taken first by another
#: tenant, and every write of it then refused.
RANDOM_VERSIONS = (4, 7)
_NOT_RANDOM = (
    "must be a random UUID, version 4 (uuid.uuid4(), crypto.randomUUID()) or 7:"
    " ids are shared by every tenant, so an id that can be guessed or derived"
    " could be taken by someone else"
)
#: The message of an id another tenant holds: the same whatever the row.
FOREIGN_ID = "this id cannot be used; generate a new UUID (for example uuid.uuid4()) and retry"


def checked_id(value: object, field: str = "id") -> str | None:
    """``value`` as a canonical UUID (lowercase, hyphenated), None for None,
    or ValidationError on ``field``."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        parsed = value
    elif not isinstance(value, str) or _UUID.fullmatch(value) is None:
        raise ValidationError.of(field, _WHAT)
    else:
        parsed = uuid.UUID(value)
    if parsed.variant != uuid.RFC_4122 or parsed.version not in RANDOM_VERSIONS:
        raise ValidationError.of(field, _NOT_RANDOM)
    return str(parsed)


def batch_ids(given: Sequence[object], field: str) -> list[str | None]:
    """The ids of a batch's items (None where none was given), canonical,
    or ValidationError naming every bad item and every id given twice
    (``field`` is the batch's name: ``measurements``, ``results``)."""
    ids: list[str | None] = []
    problems: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for index, value in enumerate(given):
        name = f"{field}[{index}].id"
        try:
            canonical = checked_id(value, name)
        except ValidationError as error:
            problems += error.problems
            ids.append(None)
            continue
        if canonical is not None:
            if canonical in first:
                problems.append(
                    (name, f"repeats the id of {field}[{first[canonical]}]: give each item its own id")
                )
            else:
                first[canonical] = index
        ids.append(canonical)
    if problems:
        raise ValidationError(problems)
    return ids


def _same(stored: object, given: object) -> bool:
    if isinstance(stored, (list, tuple)) and isinstance(given, (list, tuple)):
        return len(stored) == len(given) and all(map(_same, stored, given))
    if isinstance(stored, bool) or isinstance(given, bool):
        return stored is given
    return bool(stored == given)


def differences(stored: Mapping[str, Any] | asyncpg.Record, given: Mapping[str, Any]) -> list[str]:
    """The names in ``given`` whose value differs from ``stored``'s (a
    database record, or a row read as JSON), in ``given``'s order."""
    return [name for name, value in given.items() if not _same(stored[name], value)]


def reused(kind: str, row_id: str, fields: Iterable[str], field: str = "id") -> ConflictError:
    """The refusal of a replay whose values differ from the stored row's."""
    return ConflictError(
        f"{field}: {row_id} was already used for a {kind} with different content"
        f" ({', '.join(fields)} differ); a retry must send the same values, and new"
        " content needs a new id",
        field=field,
    )


def foreign(field: str = "id") -> ConflictError:
    """The refusal of an id another tenant holds (see :data:`FOREIGN_ID`)."""
    return ConflictError(f"{field}: {FOREIGN_ID}", field=field)


def stored_rows(value: object) -> dict[str, dict[str, Any]]:
    """Rows read as a JSON array (``jsonb_agg(t)``), by id."""
    if value is None:
        return {}
    rows = json.loads(value) if isinstance(value, str) else value
    assert isinstance(rows, list)
    return {row["id"]: row for row in rows}


async def settle_skipped(
    scope: Any,
    table: str,
    kind: str,
    skipped: Sequence[tuple[str, str, Mapping[str, Any]]],
    *,
    wrote: bool,
) -> set[str]:
    """The rows an ``INSERT ... ON CONFLICT (id) DO NOTHING`` of ``table``
    (a name of this package's own) skipped, as ``(id, field, given values)``:
    their ids, when the tenant holds each with the values given (replays),
    else a ConflictError for the first that another tenant holds
    (:func:`foreign`) or that holds other values (:func:`reused`). When the
    statement wrote other rows (``wrote``), the refusal ends the tenant
    scope (``scope.fail_after_write``): they must not be committed."""
    stored = stored_rows(
        await scope.connection.fetchval(
            f"SELECT jsonb_agg(t) FROM {table} t WHERE t.id = ANY($1::text[])",
            [row_id for row_id, _field, _given in skipped],
        )
    )
    refusal: ConflictError | None = None
    for row_id, field, given in skipped:
        if row_id not in stored:
            refusal = foreign(field)
            break
        differing = differences(stored[row_id], given)
        if differing:
            refusal = reused(kind, row_id, differing, field)
            break
    if refusal is not None:
        if wrote:
            scope.fail_after_write(refusal)
        raise refusal
    return {row_id for row_id, _field, _given in skipped}
