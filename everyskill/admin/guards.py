"""What the admin refuses to change, and the text it redacts.

Piccolo Admin edits a row through Piccolo API's CRUD endpoints; the
validators and hooks made here plug into them (see
:mod:`everyskill.admin.table_configs`). A refusal is an HTTP error whose
message the admin shows on the page, and nothing is written.

Contract
--------
- :func:`measurement_validators`: token measurements and benchmark results
  are records of what happened. The admin refuses to add or edit one, with
  HTTP 405 and a message that says why and what to do instead. A token
  measurement may be deleted (the skill's aggregates follow); a benchmark
  result may not be deleted on its own, as its run's best and cheapest
  model were picked from it: deleting the run deletes its results.
- :func:`refuse_put`: PUT, which would replace a row without any hook, is
  refused for every table (the admin's front end edits with PATCH).
- :func:`created_now`: a row added in the admin gets a new id and the time
  of the save as ``created_at``.
- :func:`fixed_columns`: a ``pre_patch`` hook for columns an edit may not
  change (ids, tenants, creation times, what PostgreSQL maintains). The edit
  form sends every field back: a value equal to the stored one is left out
  of the update, a different one is refused with HTTP 422 naming the field
  and why.
- :func:`redacting`: ``pre_save`` and ``pre_patch`` hooks that pass the named
  text columns through :func:`everyskill.redaction.redact_fields_async`
  before they are written, as the query API does.
- :func:`field_error` is the 422 error the admin's form shows next to a
  field's name; :func:`same_value` tells whether the form sent a stored
  value back unchanged (times to the millisecond); :func:`stored_row` reads a row's stored values, or answers
  404 when the row was deleted meanwhile.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from piccolo.columns import Column
from piccolo.table import Table
from piccolo_api.crud.endpoints import PiccoloCRUD
from piccolo_api.crud.hooks import Hook, HookType
from piccolo_api.crud.validators import Validators
from starlette.exceptions import HTTPException
from starlette.requests import Request

from everyskill.redaction import redact_fields_async

__all__ = [
    "created_now",
    "field_error",
    "fixed_columns",
    "measurement_validators",
    "redacted_columns",
    "redacting",
    "refuse_put",
    "same_value",
    "stored_row",
]

def field_error(field: str, reason: str) -> HTTPException:
    """HTTP 422 in the shape the admin's form shows as ``<field> field - <reason>``."""
    return HTTPException(
        status_code=422,
        detail=[{"loc": ["body", field], "msg": reason, "type": "value_error"}],  # type: ignore[arg-type]
    )


def measurement_validators(what: str, instead: str, *, undeletable: str | None = None) -> Validators:
    """Validators that refuse adding and editing rows of a measurement table.

    ``what`` names the rows ("Token measurements"); ``instead`` says how they
    are recorded. With ``undeletable`` (what to do instead), deleting a row
    is refused too.
    """
    refusal = (
        f"{what} are measurements of what happened: they cannot be edited or added"
        f" in the admin. {instead}"
    )

    def refuse(piccolo_crud: PiccoloCRUD, request: Request) -> None:
        raise HTTPException(status_code=405, detail=refusal)

    def refuse_delete(piccolo_crud: PiccoloCRUD, request: Request) -> None:
        raise HTTPException(status_code=405, detail=f"{what} cannot be deleted one by one: {undeletable}")

    return Validators(
        post_single=[refuse],
        put_single=[refuse],
        patch_single=[refuse],
        delete_single=[] if undeletable is None else [refuse_delete],
    )


def refuse_put(piccolo_crud: PiccoloCRUD, request: Request) -> None:
    """PUT replaces a row without the hooks that guard an edit: refused for
    every table (the admin's front end edits with PATCH)."""
    raise HTTPException(
        status_code=405,
        detail="Rows are edited with PATCH in the admin; PUT would skip its checks.",
    )


def created_now(table: type[Table]) -> Hook:
    """A ``pre_save`` hook: a row added in the admin gets a new id and is
    created at the time of the save, whatever the add form said."""
    primary_key = table._meta.primary_key
    has_created_at = any(column._meta.name == "created_at" for column in table._meta.columns)

    async def stamp(row: Table) -> Table:
        setattr(row, primary_key._meta.name, primary_key.get_default_value())
        if has_created_at:
            row.created_at = datetime.datetime.now(datetime.timezone.utc)  # type: ignore[attr-defined]
        return row

    return Hook(hook_type=HookType.pre_save, callable=stamp)


def fixed_columns(table: type[Table], reasons: Mapping[Column, str]) -> Hook:
    """A ``pre_patch`` hook keeping ``reasons``' columns as they are stored.

    ``reasons`` maps each column to why it cannot be edited ("is when the row
    was recorded").
    """
    names = {column._meta.name: reason for column, reason in reasons.items()}

    async def keep(row_id: Any, values: dict[Column, Any]) -> dict[Column, Any]:
        submitted = {column: value for column, value in values.items() if column._meta.name in names}
        if not submitted:
            return values
        stored = await stored_row(table, row_id, list(submitted))
        for column, value in submitted.items():
            if not same_value(value, stored[column._meta.name]):
                raise field_error(column._meta.name, names[column._meta.name])
        # Columns compare by name: ``==`` on a Piccolo column builds a query.
        return {column: value for column, value in values.items() if column._meta.name not in names}

    return Hook(hook_type=HookType.pre_patch, callable=keep)


def same_value(submitted: Any, stored: Any) -> bool:
    """Whether a value sent back by the edit form is the stored one.

    The form holds times to the millisecond: a stored time with
    microseconds (``now()`` in a trigger) comes back cut to milliseconds.
    """
    if isinstance(submitted, datetime.datetime) and isinstance(stored, datetime.datetime):
        return submitted in (stored, stored.replace(microsecond=stored.microsecond // 1000 * 1000))
    return bool(submitted == stored)


async def stored_row(table: type[Table], row_id: Any, columns: list[Column]) -> dict[str, Any]:
    """The stored values of ``columns`` of one row; HTTP 404 when it is gone."""
    row = (
        await table.select(*columns)
        .where(table._meta.primary_key == row_id)
        .first()
        .run()
    )
    if row is None:
        raise HTTPException(
            status_code=404,
            detail=f"{table._meta.tablename} {row_id!r} no longer exists: it was deleted.",
        )
    return row


#: The columns each hook made by :func:`redacting` redacts (for the test
#: that every free-text column is redacted on every write path).
REDACTED_BY_HOOK: dict[Callable[..., Any], frozenset[str]] = {}


def redacted_columns(hooks: Sequence[Hook]) -> frozenset[str]:
    """The columns that ``hooks`` redact both when a row is added
    (``pre_save``) and when one is edited (``pre_patch``)."""
    by_type: dict[HookType, set[str]] = {HookType.pre_save: set(), HookType.pre_patch: set()}
    for hook in hooks:
        if hook.hook_type in by_type:
            by_type[hook.hook_type] |= REDACTED_BY_HOOK.get(hook.callable, frozenset())
    return frozenset(by_type[HookType.pre_save] & by_type[HookType.pre_patch])


def redacting(*columns: Column) -> list[Hook]:
    """``pre_save`` and ``pre_patch`` hooks redacting secrets in ``columns``."""
    names = [column._meta.name for column in columns]

    async def on_save(row: Table) -> Table:
        texts, _found = await redact_fields_async(
            {name: getattr(row, name) for name in names}
        )
        for name, text in texts.items():
            setattr(row, name, text)
        return row

    async def on_patch(row_id: Any, values: dict[Column, Any]) -> dict[Column, Any]:
        texts, _found = await redact_fields_async(
            {column._meta.name: value for column, value in values.items() if column._meta.name in names}
        )
        return {column: texts.get(column._meta.name, value) for column, value in values.items()}

    REDACTED_BY_HOOK[on_save] = REDACTED_BY_HOOK[on_patch] = frozenset(names)
    return [
        Hook(hook_type=HookType.pre_save, callable=on_save),
        Hook(hook_type=HookType.pre_patch, callable=on_patch),
    ]
