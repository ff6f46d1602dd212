"""Token measurements: recording, listing and summaries of usage and cost.

Every function runs in the current tenant scope (see
:func:`everyskill.tenancy.tenant_scope`) through
:func:`~everyskill.tenancy.operation`, and writes with one statement: it
writes everything or nothing. A refusal found before writing leaves the
scope usable; one the database makes ends the scope (wrap the call in
``scope.savepoint()`` to carry on).

Contract
--------
- Units and tokens: costs are in microcents (1e-6 cent, 1e-8 USD). Token
  counts follow Anthropic's usage report: ``input_tokens`` exclude the
  tokens read from the prompt cache (``cache_read_tokens``) and written to
  it (``cache_write_tokens``); ``total_tokens`` is every input token
  (uncached, cache read, cache write) plus ``output_tokens``. (OpenAI's
  ``prompt_tokens`` include cached tokens: subtract them before recording.)
- :func:`record_measurement` records one measurement and returns a
  :class:`~everyskill.rows.Saved` row; :func:`record_measurements` records a
  batch of mappings or :class:`MeasurementInput` rows (at most
  :data:`MAX_BATCH`) and returns a :class:`~everyskill.rows.SavedBatch` whose
  ``ids`` are in input order. Both share one code path and these rules:

  - ``skill_id`` is required; ``model_name`` is required, ``model_provider``
    defaults to ``anthropic`` and ``source`` to ``hook``. Ids and names are
    non-empty strings of at most 200 characters, stripped of surrounding
    whitespace.
  - Token counts, ``estimated_cost_microcents`` and ``latency_ms`` are
    optional non-negative integers that fit the 32-bit columns; a bool, a
    float or a numeric string is refused, and so is any unknown field.
  - ``total_tokens``: when it is not given and both ``input_tokens`` and
    ``output_tokens`` are, it is input + cache read + cache write + output
    (a missing cache count is 0). When it is given it must equal that sum
    (if input and output are known) and be at least the tokens given.
  - The cost: a given ``estimated_cost_microcents`` is kept. Otherwise it
    is computed with :class:`~everyskill.pricing.Pricer` (the tenant's own
    price of the model first, then the maintained price table). When no
    cost can be computed (unknown model, input or output tokens missing, a
    cost beyond the column) the row is written with a NULL cost -- never a
    silent 0 -- and the result's ``warnings`` hold one
    :class:`~everyskill.pricing.CostWarning` per model and reason, with the
    number of rows; they are logged too.
  - Refusals come before anything is written. Bad input is a
    :class:`~everyskill.errors.ValidationError` naming each bad field; in a
    batch the field names the row: ``measurements[3].input_tokens``. An
    empty batch and one of more than :data:`MAX_BATCH` rows (split it) are
    refused too. A ``skill_id`` or ``user_id`` that names no row of the
    tenant (another tenant's rows included) is a
    :class:`~everyskill.errors.NotFoundError` with the id and, in a batch,
    the row (``measurements[3].skill_id``); with row-level security the
    foreign-key error would hide the key, so the ids are looked up first.
  - A batch is one statement: ``INSERT INTO token_measurements (...)
    SELECT ... FROM unnest($2::text[], $3::text[], $4::int4[], ...)``, one
    array per column (a column with the same value in every row, such as
    the provider, is sent once as a scalar). Not ``COPY FROM``: PostgreSQL
    refuses it on a table with row-level security for a role that is
    subject to it, as the application role is. The ids are random UUIDs
    made in Python, so ``SavedBatch.ids`` are in input order. No Piccolo row
    object is made per row; the tenant's skills and users among the
    batch's ids are read with one query, the tenant's prices with another.
  - ``id`` (an optional ``"id"`` in each item of a batch) is the client's
    UUID for the row (:mod:`everyskill.client_ids`), checked with the rest
    (``measurements[3].id``; an id given twice in a batch names both
    items). An id the tenant already stored with the same values is a
    replay: nothing is written for it, and ``Saved.replayed`` is true
    (``SavedBatch.replayed`` lists such ids; a batch writes its other rows).
    The stored rows of the ids given are read with the skills and users,
    in the same query, so a replay with other values is a
    :class:`~everyskill.errors.ConflictError` on the item's ``id`` before
    anything is written, and a replay costs no price look-up. The cost is
    compared only when the caller gave it. An id another tenant holds is
    a ConflictError on the item's ``id`` that reveals nothing about that
    row; it is found by the INSERT (``ON CONFLICT (id) DO NOTHING``), so in
    a batch that wrote other rows it ends the tenant scope, as a call that
    fails in the database does: nothing of the scope is committed. Rows
    without an id get a random UUID.
  - The aggregates on skills (``costed_measurements``,
    ``measured_cost_microcents``, ``avg_token_cost_microcents``) are kept by
    PostgreSQL's statement-level triggers: one update per skill per batch,
    nothing to do here.
- :func:`get_measurement` returns one measurement of the tenant, or
  :class:`~everyskill.errors.NotFoundError`. :func:`list_measurements`
  filters by skill, model name, provider, user and a ``[since, until)``
  range of ``created_at`` (timezone-aware datetimes), newest first, in
  keyset pages (:func:`~everyskill.pagination.fetch_page`).
- :func:`usage_summary` sums the tenant's measurements in one query,
  grouped by any subset of :data:`SUMMARY_KEYS`: ``skill``, ``model``
  (provider and model name) and ``day`` (the calendar day of ``created_at``
  in ``time_zone``, an IANA name such as ``Europe/Berlin``; an unknown one
  is a :class:`~everyskill.errors.ValidationError`), in any order; a single
  key may be given as a string. Filters: skill, model
  name and ``[since, until)``. Each :class:`UsageSummary` has the keys it
  is grouped by (the others are None), the number of calls, the sums of
  the recorded token counts (a NULL count adds nothing), the sum of the
  known costs with the number of calls that have one, and the 50th and
  95th percentiles of the latency (``percentile_cont``, interpolated; None
  without latencies). Sums are 64-bit (PostgreSQL's ``sum`` of integers is
  ``bigint``), so no sum overflows the 32-bit columns it adds up. Rows come
  ordered by day, skill, provider and model (names in byte order).
  Grouped by nothing, the list holds one row of totals, zeros when nothing
  matches: :func:`tenant_usage_totals` returns it.
- SQL is built only from names this module writes; values are parameters.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import pydantic

from everyskill.client_ids import (
    batch_ids,
    checked_id,
    differences,
    reused,
    settle_skipped,
    stored_rows,
)
from everyskill.errors import check_id, NotFoundError, ValidationError
from everyskill.pagination import DEFAULT_LIMIT, Filter, Page, fetch_page
from everyskill.pricing import CostWarning, Pricer, TokenUsage, total_tokens
from everyskill.rows import Saved, SavedBatch, row_from_record
from everyskill.tenancy import operation
from tables import TokenMeasurement

__all__ = [
    "INT4_MAX",
    "MAX_BATCH",
    "SUMMARY_KEYS",
    "MeasurementInput",
    "UsageSummary",
    "get_measurement",
    "list_measurements",
    "record_measurement",
    "record_measurements",
    "tenant_usage_totals",
    "usage_summary",
]

logger = logging.getLogger(__name__)

#: The largest count, cost or latency a row holds: the columns are 32-bit.
INT4_MAX = 2**31 - 1
#: The most measurements one call of :func:`record_measurements` writes.
MAX_BATCH = 100_000
#: What :func:`usage_summary` can group by.
SUMMARY_KEYS = ("skill", "model", "day")

# Problems of a batch listed in one ValidationError; the rest are counted.
_MAX_PROBLEMS = 20

_Text = Annotated[
    str, pydantic.StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]
_Count = Annotated[int, pydantic.Field(ge=0, le=INT4_MAX)]


class MeasurementInput(pydantic.BaseModel):
    """One measurement to record: types and ranges (see the module's contract)."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid", frozen=True)

    skill_id: _Text
    model_name: _Text
    model_provider: _Text = "anthropic"
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    total_tokens: _Count | None = None
    cache_read_tokens: _Count | None = None
    cache_write_tokens: _Count | None = None
    estimated_cost_microcents: _Count | None = None
    latency_ms: _Count | None = None
    user_id: _Text | None = None
    usage_event_id: _Text | None = None
    source: _Text = "hook"
    #: The client's UUID for the row (see :mod:`everyskill.client_ids`).
    id: str | None = None


_BATCH: pydantic.TypeAdapter[list[MeasurementInput]] = pydantic.TypeAdapter(list[MeasurementInput])

# A field of row ``index``, as errors name it.
_Namer = Callable[[int, str], str]


def _single_field(index: int, name: str) -> str:
    return name


def _batch_field(index: int, name: str) -> str:
    return f"measurements[{index}].{name}" if name else f"measurements[{index}]"


###############################################################################
# Validation: the same for one row and for a batch.


def _validated_batch(measurements: object) -> list[MeasurementInput]:
    """The rows of a batch, typed, or ValidationError naming row and field."""
    if isinstance(measurements, (str, bytes, Mapping)) or not isinstance(measurements, Iterable):
        raise ValidationError.of("measurements", "must be a list (or iterable) of measurements")
    given = list(itertools.islice(measurements, MAX_BATCH + 1))
    if not given:
        raise ValidationError.of("measurements", "is empty: give at least one measurement")
    if len(given) > MAX_BATCH:
        raise ValidationError.of(
            "measurements",
            f"holds more than {MAX_BATCH} measurements: split it into batches"
            f" of at most {MAX_BATCH}",
        )
    # Strict validation takes dicts and model instances; other mappings are
    # read as dicts.
    rows = [
        dict(row) if type(row) is not dict and isinstance(row, Mapping) else row for row in given
    ]
    try:
        return _BATCH.validate_python(rows)
    except pydantic.ValidationError as error:
        problems: list[tuple[str, str]] = []
        for detail in error.errors(include_input=False, include_url=False):
            index, *rest = detail["loc"]
            field = ".".join(str(part) for part in rest)
            problems.append(
                (_batch_field(int(index), field), detail["msg"].removeprefix("Value error, "))
            )
        raise _refusal(problems) from None


def _refusal(problems: list[tuple[str, str]]) -> ValidationError:
    """A ValidationError listing the first problems and counting the rest."""
    if len(problems) > _MAX_PROBLEMS:
        rest = len(problems) - _MAX_PROBLEMS
        problems = problems[:_MAX_PROBLEMS] + [
            ("measurements", f"and {rest} more problems not listed")
        ]
    return ValidationError(problems)


def _totals(rows: Sequence[MeasurementInput], field: _Namer) -> list[int | None]:
    """Each row's total_tokens, derived or checked (see :func:`~everyskill.pricing.total_tokens`)."""
    totals: list[int | None] = []
    problems: list[tuple[str, str]] = []
    for index, row in enumerate(rows):
        usage = TokenUsage(
            row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_write_tokens
        )
        try:
            totals.append(total_tokens(usage, row.total_tokens))
        except ValueError as refused:
            problems.append((field(index, "total_tokens"), str(refused)))
    if problems:
        raise _refusal(problems)
    return totals


###############################################################################
# Writing: one statement for one row or a batch.

# The columns written from Python, with their types, in the order of
# _columns(); tenant_id is the scope's, created_at the database's.
_COLUMNS = (
    ("id", "text"),
    ("skill_id", "text"),
    ("user_id", "text"),
    ("usage_event_id", "text"),
    ("model_provider", "text"),
    ("model_name", "text"),
    ("input_tokens", "int4"),
    ("output_tokens", "int4"),
    ("total_tokens", "int4"),
    ("cache_read_tokens", "int4"),
    ("cache_write_tokens", "int4"),
    ("estimated_cost_microcents", "int4"),
    ("latency_ms", "int4"),
    ("source", "text"),
)


def _insert_statement(
    columns: Sequence[list[Any]], returning: bool, report_ids: bool = True
) -> tuple[str, list[Any]]:
    """The INSERT of ``columns`` (one list per column of ``_COLUMNS``) and its
    arguments after the tenant's id ($1).

    One statement for the whole batch: ``INSERT ... SELECT ... FROM
    unnest($2::text[], ...)``, one array per column. A column whose value is
    the same in every row (the provider, the source, often the skill and the
    user) is sent once, as a scalar, instead of as an array: encoding the
    arrays is most of the client's work. Ids are always an array.
    """
    selected: list[str] = []
    arrays: list[str] = []
    arguments: list[Any] = []
    for index, ((_name, kind), values) in enumerate(zip(_COLUMNS, columns)):
        if index > 0 and values.count(values[0]) == len(values):
            arguments.append(values[0])
            selected.append(f"${len(arguments) + 1}::{kind}")
        else:
            arguments.append(values)
            arrays.append(f"${len(arguments) + 1}::{kind}[]")
            selected.append(f"u.c{len(arrays)}")
    names = ", ".join(f"c{number}" for number in range(1, len(arrays) + 1))
    sql = (
        f"INSERT INTO token_measurements"
        f" (tenant_id, {', '.join(name for name, _ in _COLUMNS)})"
        f" SELECT $1::text, {', '.join(selected)}"
        f" FROM unnest({', '.join(arrays)}) AS u({names})"
        # An id already taken writes nothing (see the module's contract).
        " ON CONFLICT (id) DO NOTHING"
        + (" RETURNING *" if returning else " RETURNING id" if report_ids else "")
    )
    return sql, arguments


# The hex digit that starts the variant field of an RFC 4122 UUID, keeping
# two random bits of the digit it replaces.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _new_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as text, as ``str(uuid.uuid4())``.

    Made from one read of the system's random source: for a batch, several
    times faster than one ``uuid.uuid4()`` per row.
    """
    digits = os.urandom(16 * count).hex()
    ids = []
    for start in range(0, 32 * count, 32):
        d = digits[start : start + 32]
        ids.append(f"{d[:8]}-{d[8:12]}-4{d[13:16]}-{_VARIANT[d[16]]}{d[17:20]}-{d[20:]}")
    return ids


# The tenant's skills and users among the ids of a batch, and its rows
# already stored under the client ids given, in one query.
_KNOWN = """
SELECT ARRAY(SELECT id FROM skills WHERE id = ANY($1::text[])) AS skills,
       ARRAY(SELECT id FROM users WHERE id = ANY($2::text[])) AS users,
       (SELECT jsonb_agg(t) FROM token_measurements t WHERE t.id = ANY($3::text[])) AS stored
"""


async def _check_references(
    connection: asyncpg.Connection,
    rows: Sequence[MeasurementInput],
    field: _Namer,
    client_ids: list[str],
) -> dict[str, dict[str, Any]]:
    """NotFoundError for the first row naming a skill or user not in the
    tenant; else the tenant's rows stored under ``client_ids``, by id."""
    skills = {row.skill_id for row in rows}
    users = {row.user_id for row in rows if row.user_id is not None}
    known = await connection.fetchrow(_KNOWN, list(skills), list(users), client_ids)
    assert known is not None
    known_skills, known_users = set(known["skills"]), set(known["users"])
    if len(known_skills) == len(skills) and len(known_users) == len(users):
        return stored_rows(known["stored"])
    for index, row in enumerate(rows):
        if row.skill_id not in known_skills:
            raise NotFoundError("skill", row.skill_id, field(index, "skill_id"))
        if row.user_id is not None and row.user_id not in known_users:
            raise NotFoundError("user", row.user_id, field(index, "user_id"))
    return stored_rows(known["stored"])


async def _costs(
    connection: asyncpg.Connection, rows: Sequence[MeasurementInput]
) -> tuple[list[int | None], tuple[CostWarning, ...]]:
    """Each row's cost, given or computed, and the warnings of what has none."""
    if all(row.estimated_cost_microcents is not None for row in rows):
        return [row.estimated_cost_microcents for row in rows], ()
    pricer = await Pricer.load(connection)
    costs = [
        (
            row.estimated_cost_microcents
            if row.estimated_cost_microcents is not None
            else pricer.cost(
                row.model_provider,
                row.model_name,
                TokenUsage(
                    row.input_tokens,
                    row.output_tokens,
                    row.cache_read_tokens,
                    row.cache_write_tokens,
                ),
            )
        )
        for row in rows
    ]
    return costs, pricer.warnings()


def _columns(
    ids: list[str],
    rows: Sequence[MeasurementInput],
    totals: list[int | None],
    costs: list[int | None],
) -> list[list[Any]]:
    """The values of ``_COLUMNS``, one list per column."""
    return [
        ids,
        [row.skill_id for row in rows],
        [row.user_id for row in rows],
        [row.usage_event_id for row in rows],
        [row.model_provider for row in rows],
        [row.model_name for row in rows],
        [row.input_tokens for row in rows],
        [row.output_tokens for row in rows],
        totals,
        [row.cache_read_tokens for row in rows],
        [row.cache_write_tokens for row in rows],
        costs,
        [row.latency_ms for row in rows],
        [row.source for row in rows],
    ]


def _given(row: MeasurementInput, total: int | None) -> dict[str, Any]:
    """What a row writes from the caller's input, as a replay is compared:
    every written column but the id, the cost only when the caller gave it."""
    values = {
        name: getattr(row, name)
        for name, _ in _COLUMNS
        if name not in ("id", "total_tokens", "estimated_cost_microcents")
    }
    values["total_tokens"] = total
    if row.estimated_cost_microcents is not None:
        values["estimated_cost_microcents"] = row.estimated_cost_microcents
    return values


async def _write(
    rows: Sequence[MeasurementInput],
    given_ids: list[str | None],
    field: _Namer,
    *,
    returning: bool,
) -> tuple[list[str], list[str], asyncpg.Record | None, tuple[CostWarning, ...]]:
    """Check, price and insert ``rows`` with one statement: the ids in row
    order, the replayed ones, the row (for one row, when ``returning``) and
    the cost warnings. See the module's contract for ids given."""
    totals = _totals(rows, field)
    fresh = iter(_new_ids(sum(1 for given in given_ids if given is None)))
    ids = [given if given is not None else next(fresh) for given in given_ids]
    client_ids = [given for given in given_ids if given is not None]
    # A foreign-key error (a skill deleted meanwhile) names the id of a single row.
    inputs = rows[0].model_dump() if len(rows) == 1 else None
    record = None
    replayed: set[str] = set()
    warnings: tuple[CostWarning, ...] = ()
    async with operation(inputs) as scope:
        connection = scope.connection
        stored = await _check_references(connection, rows, field, client_ids)
        for index, row_id in enumerate(ids):
            if row_id in stored:
                differing = differences(stored[row_id], _given(rows[index], totals[index]))
                if differing:
                    raise reused("token measurement", row_id, differing, field(index, "id"))
                replayed.add(row_id)
        new = [index for index, row_id in enumerate(ids) if row_id not in replayed]
        if new:
            new_rows = [rows[index] for index in new]
            costs, warnings = await _costs(connection, new_rows)
            sql, arguments = _insert_statement(
                _columns(
                    [ids[index] for index in new],
                    new_rows,
                    [totals[index] for index in new],
                    costs,
                ),
                returning,
                report_ids=bool(client_ids),
            )
            if returning or client_ids:
                written = await connection.fetch(sql, scope.tenant_id, *arguments)
            else:
                # Fresh random ids: every row is written, none to report.
                await connection.execute(sql, scope.tenant_id, *arguments)
                written = []
            if returning and written:
                record = written[0]
            if (returning or client_ids) and len(written) < len(new):
                inserted = {written_row["id"] for written_row in written}
                missing = [index for index in new if ids[index] not in inserted]
                replayed |= await settle_skipped(
                    scope,
                    "token_measurements",
                    "token measurement",
                    [
                        (ids[index], field(index, "id"), _given(rows[index], totals[index]))
                        for index in missing
                    ],
                    wrote=bool(written),
                )
        if returning and record is None:
            # A replay of one row: the stored row is the answer.
            record = await connection.fetchrow(
                "SELECT * FROM token_measurements WHERE id = $1", ids[0]
            )
    for warning in warnings:
        logger.warning("%s", warning)
    return ids, [row_id for row_id in ids if row_id in replayed], record, warnings


async def record_measurement(
    *,
    skill_id: str,
    model_name: str,
    model_provider: str = "anthropic",
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    total_tokens: int | None = None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    estimated_cost_microcents: int | None = None,
    latency_ms: int | None = None,
    user_id: str | None = None,
    usage_event_id: str | None = None,
    source: str = "hook",
    id: str | None = None,
) -> Saved[TokenMeasurement]:
    """Record one measurement; ``warnings`` say when it has no cost.

    See the module's contract for the rules.
    """
    given_id = checked_id(id)
    try:
        row = MeasurementInput(
            skill_id=skill_id,
            model_name=model_name,
            model_provider=model_provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            estimated_cost_microcents=estimated_cost_microcents,
            latency_ms=latency_ms,
            user_id=user_id,
            usage_event_id=usage_event_id,
            source=source,
        )
    except pydantic.ValidationError as error:
        raise ValidationError.from_pydantic(error) from None
    _ids, replayed, record, warnings = await _write(
        [row], [given_id], _single_field, returning=True
    )
    assert record is not None  # the row written, or the one stored under the id
    return Saved(
        row_from_record(TokenMeasurement, record), warnings=warnings, replayed=bool(replayed)
    )


async def record_measurements(
    measurements: Iterable[Mapping[str, Any] | MeasurementInput],
) -> SavedBatch:
    """Record a batch of measurements in one statement, all or nothing.

    Each item is a mapping of :class:`MeasurementInput`'s fields or a
    :class:`MeasurementInput`. The result's ``ids`` are in input order; its
    ``warnings`` say which rows have no cost. See the module's contract.
    """
    rows = _validated_batch(measurements)
    given_ids = batch_ids([row.id for row in rows], "measurements")
    ids, replayed, _record, warnings = await _write(
        rows, given_ids, _batch_field, returning=False
    )
    return SavedBatch(tuple(ids), warnings=warnings, replayed=tuple(replayed))


###############################################################################
# Reading.


async def get_measurement(measurement_id: str) -> TokenMeasurement:
    """One measurement of the tenant, or NotFoundError."""
    check_id("measurement_id", measurement_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(
            "SELECT * FROM token_measurements WHERE id = $1", measurement_id
        )
    if record is None:
        raise NotFoundError("token measurement", measurement_id)
    return row_from_record(TokenMeasurement, record)


async def list_measurements(
    *,
    skill_id: str | None = None,
    model_name: str | None = None,
    model_provider: str | None = None,
    user_id: str | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[TokenMeasurement]:
    """The tenant's measurements matching every filter given, newest first."""
    where = _filter(
        skill_id=skill_id,
        model_name=model_name,
        model_provider=model_provider,
        user_id=user_id,
        since=since,
        until=until,
    )
    async with operation() as scope:
        return await fetch_page(
            scope.connection, TokenMeasurement, where, limit=limit, cursor=cursor
        )


###############################################################################
# Summaries.


@dataclass(frozen=True)
class UsageSummary:
    """Usage of one group (see :func:`usage_summary`); costs in microcents.

    The keys a summary is not grouped by are None.
    """

    skill_id: str | None
    model_provider: str | None
    model_name: str | None
    day: datetime.date | None
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    total_tokens: int
    #: The sum of the known costs.
    cost_microcents: int
    #: How many calls have a cost.
    costed_calls: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None


# Each grouping key: the expressions selected (as the UsageSummary fields
# they fill) and the sort order. {tz} stands for the time zone's parameter.
_GROUPS: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "day": (
        (("day", "(created_at AT TIME ZONE {tz})::date"),),
        ("day",),
    ),
    "skill": (
        (("skill_id", "skill_id"),),
        ('skill_id COLLATE "C"',),
    ),
    "model": (
        (("model_provider", "model_provider"), ("model_name", "model_name")),
        ('model_provider COLLATE "C"', 'model_name COLLATE "C"'),
    ),
}
_SUMS = """
       count(*) AS calls,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
       coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
       coalesce(sum(total_tokens), 0) AS total_tokens,
       coalesce(sum(estimated_cost_microcents), 0) AS cost_microcents,
       count(estimated_cost_microcents) AS costed_calls,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms"""


def _summary_keys(by: object) -> list[str]:
    if isinstance(by, str):
        by = (by,)
    if not isinstance(by, Iterable) or isinstance(by, (bytes, Mapping)):
        raise ValidationError.of("by", f"must be a collection of {', '.join(SUMMARY_KEYS)}")
    keys = list(by)
    unknown = [key for key in keys if key not in SUMMARY_KEYS]
    if unknown:
        raise ValidationError.of(
            "by",
            f"{', '.join(repr(key) for key in unknown)}: a summary groups by"
            f" {', '.join(SUMMARY_KEYS)}, or any subset of them",
        )
    # The order of the grouping is fixed, whatever the order given.
    return [key for key in _GROUPS if key in keys]


def _check_time_zone(time_zone: object) -> str:
    refused = ValidationError.of(
        "time_zone", "must be an IANA time zone name such as 'UTC' or 'Europe/Berlin'"
    )
    if not isinstance(time_zone, str) or not time_zone.strip():
        raise refused
    try:
        zoneinfo.ZoneInfo(time_zone)
    # OSError: a name that is a directory of the time zone data ("America",
    # IsADirectoryError) or too long for a file name.
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise refused from None
    return time_zone


async def usage_summary(
    *,
    by: Iterable[str] = SUMMARY_KEYS,
    skill_id: str | None = None,
    model_name: str | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    time_zone: str = "UTC",
) -> list[UsageSummary]:
    """The tenant's usage grouped by ``by``, in one query; see the module's contract."""
    keys = _summary_keys(by)
    where = _filter(skill_id=skill_id, model_name=model_name, since=since, until=until)
    time_zone = _check_time_zone(time_zone)
    tz = ""
    if "day" in keys:
        where.arguments.append(time_zone)
        tz = f"${len(where.arguments)}::text"
    selected: list[str] = []
    order: list[str] = []
    for key in keys:
        expressions, sort = _GROUPS[key]
        selected += [f"{sql.format(tz=tz)} AS {name}" for name, sql in expressions]
        order += list(sort)
    # GROUP BY and ORDER BY by output column number: the day's expression,
    # with its parameter, is written once.
    numbers = ", ".join(str(number) for number in range(1, len(selected) + 1))
    sql = (
        f"SELECT {''.join(column + ',' for column in selected)}{_SUMS}"
        f" FROM token_measurements WHERE {where.sql()}"
        + (f" GROUP BY {numbers} ORDER BY {', '.join(order)}" if selected else "")
    )
    try:
        async with operation() as scope:
            records = await scope.connection.fetch(sql, *where.arguments)
    except asyncpg.InvalidParameterValueError as error:
        if "day" not in keys:
            raise
        # A name Python's zoneinfo knows but this server's time zone data does not.
        raise ValidationError.of(
            "time_zone", f"is not known to the database: {error.message}"
        ) from None
    return [_summary(record) for record in records]


async def tenant_usage_totals(
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> UsageSummary:
    """The tenant's usage in ``[since, until)``, grouped by nothing."""
    (totals,) = await usage_summary(by=(), since=since, until=until)
    return totals


def _summary(record: asyncpg.Record) -> UsageSummary:
    values = dict(record)
    return UsageSummary(
        skill_id=values.get("skill_id"),
        model_provider=values.get("model_provider"),
        model_name=values.get("model_name"),
        day=values.get("day"),
        calls=int(values["calls"]),
        input_tokens=int(values["input_tokens"]),
        output_tokens=int(values["output_tokens"]),
        cache_read_tokens=int(values["cache_read_tokens"]),
        cache_write_tokens=int(values["cache_write_tokens"]),
        total_tokens=int(values["total_tokens"]),
        cost_microcents=int(values["cost_microcents"]),
        costed_calls=int(values["costed_calls"]),
        p50_latency_ms=values["p50_latency_ms"],
        p95_latency_ms=values["p95_latency_ms"],
    )


###############################################################################
# Filters shared by listing and summaries.


def _filter(
    *,
    skill_id: str | None = None,
    model_name: str | None = None,
    model_provider: str | None = None,
    user_id: str | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> Filter:
    where = Filter()
    for name, value in (
        ("skill_id", skill_id),
        ("model_name", model_name),
        ("model_provider", model_provider),
        ("user_id", user_id),
    ):
        if value is not None:
            check_id(name, value)
            where.equal(name, value.strip())
    where.created_between(since, until)
    return where

