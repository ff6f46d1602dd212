"""Benchmark runs: their life cycle, their results and what they show.

Every function runs in the current tenant scope (see
:func:`everyskill.tenancy.tenant_scope`) through
:func:`~everyskill.tenancy.operation`, and writes with one statement: it
writes everything or nothing. A refusal found before writing leaves the
scope usable; one the database makes ends the scope (wrap the call in
``scope.savepoint()`` to carry on).

Contract
--------
- :func:`create_run` creates a ``pending`` run of a skill (optionally pinned
  to one of its versions) over ``models``: a non-empty list of distinct,
  non-empty model names (stripped). Anything else is a
  :class:`~everyskill.errors.ValidationError` on ``models``. The skill, the
  version (a version of *that* skill) and ``triggered_by`` (a user) must be
  rows of the tenant, else :class:`~everyskill.errors.NotFoundError`.
- The life cycle (:data:`TRANSITIONS`): :func:`start_run` makes a pending
  run ``running`` (``started_at`` stamped); :func:`complete_run` makes a
  running run ``completed`` (``completed_at`` stamped, and the best and the
  cheapest model picked by PostgreSQL's ``benchmark_run_picks`` in the same
  UPDATE, so the picks see every result committed before it);
  :func:`fail_run` makes a pending or running run ``failed`` with an error
  message (required, at most :data:`MAX_ERROR_LENGTH` characters, secrets
  redacted; ``completed_at`` stamped). Completed and failed are final. Each
  reads the run ``FOR UPDATE`` and refuses a step that makes no sense with
  :class:`~everyskill.errors.InvalidTransitionError` (``kind="benchmark
  run"``, ``allowed_from`` the states it could come from), leaving the run
  as it was. The database's life-cycle trigger holds the same rules for
  every other writer.
- Picks (by the database): best is the highest average quality, ties to the
  lower average cost, then the name; cheapest is the lowest average cost
  among models with a costed result, ties to the higher average quality,
  then the name. Averages are rounded half away from zero. A run completed
  without results has no picks.
- :func:`record_result` and :func:`record_results` record results of a
  running run, one per (model, test case). Before writing they lock the
  run ``FOR SHARE`` (a completion waits for them, and they wait for a
  completion) and check, in one query: the run is a row of the tenant
  (:class:`~everyskill.errors.NotFoundError`), it is running
  (:class:`~everyskill.errors.RunNotRunningError`, an invalid transition with ``wanted="record
  results"``), every ``model_name`` is one of its models (ValidationError
  listing them). A batch naming one (model, test case) twice is a
  ValidationError; a result recorded before is a
  :class:`~everyskill.errors.ConflictError`. A batch is one ``INSERT ...
  SELECT FROM unnest(...)`` statement: all of it or nothing. Its ids are
  made in Python and returned in input order; a problem in row ``i`` is
  reported as ``results[i].<field>``. A refused batch is one
  ValidationError listing every problem of every item, in item order:
  types and ranges, tokens, models that are not the run's, cases and ids
  given twice (the run's models are read even when other items are bad).
- Tokens follow :class:`~everyskill.pricing.TokenUsage`: with input and
  output tokens known, ``total_tokens`` is input + cache reads + cache
  writes + output (a different total given is refused); otherwise the total
  given is kept. A given ``estimated_cost_microcents`` is kept; otherwise
  the cost is computed with :class:`~everyskill.pricing.Pricer` (the
  tenant's price wins over the genai-prices table). A result that cannot be
  priced (unknown model, missing token counts) gets a NULL cost and a
  :class:`~everyskill.pricing.CostWarning` in the returned warnings; a
  failed call (``error_message``) without token counts gets a NULL cost and
  no warning, as nothing is known to have been billed.
- Free text (:data:`RESULT_TEXT_FIELDS`) goes through
  :func:`everyskill.redaction.redact_fields_async` before it is written; the
  returned :class:`~everyskill.rows.Saved` / :class:`~everyskill.rows.SavedBatch`
  count what was replaced. Blank ``quality_notes`` and ``error_message`` are
  no text (NULL); inputs and outputs are stored as given.
- Client ids (:mod:`everyskill.client_ids`): :func:`create_run` and
  :func:`record_result` take ``id``, each item of :func:`record_results`
  an optional ``"id"`` (``results[3].id``; an id given twice names both
  items). A run or result the tenant already stored under that id with the
  same values is a replay: nothing is written, ``Saved.replayed`` is true
  (``SavedBatch.replayed`` lists the ids; a batch writes its other rows).
  Other values, or an id another tenant holds, are a
  :class:`~everyskill.errors.ConflictError` on the id (the latter reveals
  nothing about that row). Results: the stored results of the ids given
  are read with the run, so a replay with other values is refused before
  writing, and a retry of results all stored already is a replay even
  after the run ended (a result not stored yet is then refused with
  :class:`~everyskill.errors.RunNotRunningError`); an id another tenant holds is found by the INSERT, and in
  a batch that wrote other rows it ends the scope (nothing of it is
  committed). A result's cost is compared only when the caller gave it.
- :func:`run_summary` gives one :class:`ModelSummary` per model of the run,
  in the run's order, models without results included, from one query:
  counts, averages, and the sum of its results' known costs (the sums of
  the models are :attr:`RunCost.results_microcents`).
- :func:`run_cost` is what a run cost (:class:`RunCost`): its results'
  costs plus the costs of scoring them with a model (a judge), which the
  runner records as token measurements of the run's skill with ``source``
  :data:`SCORING_SOURCE` and ``usage_event_id`` the run's id. Costs
  unknown (a model without a price) count as nothing in the sums and are
  counted apart; a failed call without tokens was not billed and is not
  counted as unknown.
- :func:`get_run`, :func:`list_runs` (by skill and status, newest first, in
  keyset pages) and :func:`benchmarked_content` (the skill text the run
  benchmarks: its pinned version, else the skill's latest version) read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import pydantic

from everyskill.client_ids import (
    batch_ids,
    checked_id,
    differences,
    foreign,
    reused,
    settle_skipped,
    stored_rows,
)
from everyskill.errors import (
    check_id,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    RunNotRunningError,
    ValidationError,
)
from everyskill.pagination import DEFAULT_LIMIT, Filter, Page, fetch_page
from everyskill.pricing import COST_MAX, CostWarning, Pricer, TokenUsage, total_tokens
from everyskill.redaction import redact_fields_async
from everyskill.rows import Saved, SavedBatch, row_from_record
from everyskill.tenancy import operation
from tables import BenchmarkResult, BenchmarkRun, BenchmarkStatus

__all__ = [
    "MAX_ERROR_LENGTH",
    "MAX_MODELS",
    "MAX_TEXT_LENGTH",
    "RESULT_TEXT_FIELDS",
    "TRANSITIONS",
    "ModelSummary",
    "ResultInput",
    "RunCost",
    "SCORING_SOURCE",
    "benchmarked_content",
    "complete_run",
    "create_run",
    "fail_run",
    "get_run",
    "list_runs",
    "record_result",
    "record_results",
    "recorded_cases",
    "run_cost",
    "run_summary",
    "start_run",
]

#: The longest text a result field takes, in characters.
MAX_TEXT_LENGTH = 100_000
#: The longest error message (of a run or a result), in characters.
MAX_ERROR_LENGTH = 10_000
#: The most models one run compares.
MAX_MODELS = 100
#: The ``source`` of the token measurements of a run's scoring (a judge's
#: calls); their ``usage_event_id`` is the run's id.
SCORING_SOURCE = "api"
#: Free text of a result, redacted before it is written.
RESULT_TEXT_FIELDS = (
    "input_used",
    "output_produced",
    "expected_output",
    "quality_notes",
    "error_message",
)

#: Each status a step of the life cycle sets, and the statuses it comes from.
TRANSITIONS: dict[BenchmarkStatus, tuple[BenchmarkStatus, ...]] = {
    BenchmarkStatus.running: (BenchmarkStatus.pending,),
    BenchmarkStatus.completed: (BenchmarkStatus.running,),
    BenchmarkStatus.failed: (BenchmarkStatus.pending, BenchmarkStatus.running),
}

_INT4_MAX = 2**31 - 1
_NAME_LENGTH = 200
_KIND = "benchmark run"


# -- input ------------------------------------------------------------------------

_Name = Annotated[
    str, pydantic.StringConstraints(strip_whitespace=True, min_length=1, max_length=_NAME_LENGTH)
]
_Count = Annotated[int, pydantic.Field(ge=0, le=_INT4_MAX)]
_Text = Annotated[str, pydantic.StringConstraints(max_length=MAX_TEXT_LENGTH)]
_Error = Annotated[str, pydantic.StringConstraints(max_length=MAX_ERROR_LENGTH)]


class ResultInput(pydantic.BaseModel):
    """One result to record: the fields of :func:`record_result`, validated."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    model_name: _Name
    model_provider: _Name
    test_case_index: _Count
    input_used: _Text | None = None
    output_produced: _Text | None = None
    expected_output: _Text | None = None
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    total_tokens: _Count | None = None
    cache_read_tokens: _Count | None = None
    cache_write_tokens: _Count | None = None
    latency_ms: _Count | None = None
    estimated_cost_microcents: Annotated[int, pydantic.Field(ge=0, le=COST_MAX)] | None = None
    quality_score: Annotated[int, pydantic.Field(ge=0, le=100)] | None = None
    quality_notes: _Text | None = None
    matches_expected: bool | None = None
    error_message: _Error | None = None
    #: The client's UUID for the result (see :mod:`everyskill.client_ids`).
    id: str | None = None


# The columns an insert writes from a batch, with their array types, in order.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("model_name", "text"),
    ("model_provider", "text"),
    ("test_case_index", "integer"),
    ("input_used", "text"),
    ("output_produced", "text"),
    ("expected_output", "text"),
    ("input_tokens", "integer"),
    ("output_tokens", "integer"),
    ("total_tokens", "integer"),
    ("cache_read_tokens", "integer"),
    ("cache_write_tokens", "integer"),
    ("latency_ms", "integer"),
    ("estimated_cost_microcents", "integer"),
    ("quality_score", "integer"),
    ("quality_notes", "text"),
    ("matches_expected", "boolean"),
    ("error_message", "text"),
)
_INSERT = f"""
INSERT INTO benchmark_results (tenant_id, benchmark_run_id, {", ".join(n for n, _ in _COLUMNS)})
SELECT $1, $2, {", ".join(f"r.{n}" for n, _ in _COLUMNS)}
  FROM unnest({", ".join(f"${i + 3}::{t}[]" for i, (_, t) in enumerate(_COLUMNS))})
       WITH ORDINALITY AS r({", ".join(n for n, _ in _COLUMNS)}, position)
 ORDER BY r.position
ON CONFLICT (id) DO NOTHING
"""


def _result_values(given: object, prefix: str) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """A result's values (validated, total derived), or the problems found."""
    if isinstance(given, ResultInput):
        values = given.model_dump()
    elif isinstance(given, Mapping):
        try:
            values = ResultInput.model_validate(dict(given)).model_dump()
        except pydantic.ValidationError as error:
            return None, [
                (f"{prefix}{field}", reason)
                for field, reason in ValidationError.from_pydantic(error).problems
            ]
    else:
        return None, [
            (prefix.rstrip(".") or "result", "must be a mapping of result fields or a ResultInput")
        ]
    for name in ("quality_notes", "error_message"):
        if values[name] is not None and not values[name].strip():
            values[name] = None
    problems: list[tuple[str, str]] = []
    usage = TokenUsage(
        values["input_tokens"],
        values["output_tokens"],
        values["cache_read_tokens"],
        values["cache_write_tokens"],
    )
    try:
        values["total_tokens"] = total_tokens(usage, values["total_tokens"])
    except ValueError as refused:
        problems.append((f"{prefix}total_tokens", str(refused)))
    return (None if problems else values), problems


# A problem of a batch found before writing: the item's position, the field, why.
_Problem = tuple[int, str, str]


def _validated_results(
    results: Iterable[object], batch: bool
) -> tuple[list[dict[str, Any]], list[int], list[_Problem]]:
    """The valid results with their positions in ``results``, and every
    problem of every item (types, ranges, tokens, a case given twice, ids)."""
    if isinstance(results, (str, bytes, Mapping)) or not isinstance(results, Iterable):
        raise ValidationError.of("results", "must be a list of results")
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    problems: list[_Problem] = []
    first_of: dict[tuple[str, int], int] = {}
    given = list(results)
    for index, item in enumerate(given):
        prefix = f"results[{index}]." if batch else ""
        values, found = _result_values(item, prefix)
        problems += [(index, field, reason) for field, reason in found]
        if values is None:
            continue
        key = (values["model_name"], values["test_case_index"])
        if key in first_of:
            problems.append(
                (
                    index,
                    f"{prefix}test_case_index",
                    f"repeats model {key[0]!r} test case {key[1]} of"
                    f" results[{first_of[key]}]: one result per model and test case",
                )
            )
        else:
            first_of[key] = index
        rows.append(values)
        positions.append(index)
    # Ids are checked on the valid items, in their places (an id given twice
    # names both), whatever else is wrong: every problem is listed at once.
    ids: list[object] = [None] * len(given)
    for row, index in zip(rows, positions):
        ids[index] = row["id"]
    try:
        if batch:
            canonical = batch_ids(ids, "results")
        else:
            canonical = [checked_id(value) for value in ids]
    except ValidationError as error:
        problems += [(_position(field), field, reason) for field, reason in error.problems]
    else:
        for row, index in zip(rows, positions):
            row["id"] = canonical[index]
    return rows, positions, problems


def _position(field: str) -> int:
    """The item position of a batch field ``results[3].id`` (0 for one result)."""
    return int(field.split("[", 1)[1].split("]", 1)[0]) if field.startswith("results[") else 0


def _refused(problems: Iterable[_Problem]) -> ValidationError:
    """One ValidationError listing ``problems`` in the order of the items."""
    return ValidationError([(field, reason) for _, field, reason in sorted(problems, key=lambda p: p[0])])


def _strangers(
    run_id: str, models: Sequence[str], rows: Sequence[Mapping[str, Any]], positions: Sequence[int], batch: bool
) -> list[_Problem]:
    """A problem for each row whose model is not one of the run's ``models``."""
    return [
        (
            index,
            f"results[{index}].model_name" if batch else "model_name",
            f"{row['model_name']!r} is not a model of benchmark run {run_id!r};"
            f" its models are {', '.join(models)}",
        )
        for row, index in zip(rows, positions)
        if row["model_name"] not in models
    ]


def _checked_models(models: object) -> list[str]:
    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence):
        raise ValidationError.of("models", "must be a list of model names, not one string")
    if not models:
        raise ValidationError.of("models", "must name at least one model")
    if len(models) > MAX_MODELS:
        raise ValidationError.of("models", f"names at most {MAX_MODELS} models")
    names: list[str] = []
    for index, name in enumerate(models):
        if not isinstance(name, str) or not name.strip():
            raise ValidationError.of("models", f"models[{index}] must be a non-empty name")
        if len(name.strip()) > _NAME_LENGTH:
            raise ValidationError.of(
                "models", f"models[{index}] is longer than {_NAME_LENGTH} characters"
            )
        if name.strip() in names:
            raise ValidationError.of(
                "models", f"names each model once; {name.strip()!r} is repeated"
            )
        names.append(name.strip())
    return names



def _value(value: object) -> object:
    """An enum member's value, anything else as it is."""
    return getattr(value, "value", value)


# -- runs ---------------------------------------------------------------------------


async def create_run(
    *,
    skill_id: str,
    models: Sequence[str],
    triggered_by: str,
    skill_version_id: str | None = None,
    id: str | None = None,
) -> Saved[BenchmarkRun]:
    """Create a pending run of a skill over ``models``; see the module's contract."""
    given_id = checked_id(id)
    check_id("skill_id", skill_id)
    check_id("triggered_by", triggered_by)
    if skill_version_id is not None:
        check_id("skill_version_id", skill_version_id)
    names = _checked_models(models)
    inputs = {
        "skill_id": skill_id,
        "skill_version_id": skill_version_id,
        "triggered_by": triggered_by,
    }
    row_id = given_id or str(uuid.uuid4())
    async with operation(inputs) as scope:
        connection = scope.connection
        record = await connection.fetchrow(
            """
            INSERT INTO benchmark_runs
                   (tenant_id, id, skill_id, skill_version_id, triggered_by, models)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (id) DO NOTHING
            RETURNING *
            """,
            scope.tenant_id,
            row_id,
            skill_id,
            skill_version_id,
            triggered_by,
            names,
        )
        replayed = record is None
        if record is None:
            record = await connection.fetchrow("SELECT * FROM benchmark_runs WHERE id = $1", row_id)
            if record is None:
                raise foreign()
            differing = differences(record, {**inputs, "models": names})
            if differing:
                raise reused(_KIND, row_id, differing)
    return Saved(row_from_record(BenchmarkRun, record), replayed=replayed)


async def get_run(run_id: str) -> BenchmarkRun:
    """One run of the tenant, or NotFoundError."""
    check_id("run_id", run_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(
            "SELECT * FROM benchmark_runs WHERE id = $1", run_id
        )
    if record is None:
        raise NotFoundError(_KIND, run_id)
    return row_from_record(BenchmarkRun, record)


async def list_runs(
    *,
    skill_id: str | None = None,
    status: str | BenchmarkStatus | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[BenchmarkRun]:
    """The tenant's runs, of a skill and in a status when given, newest first."""
    where = Filter()
    if skill_id is not None:
        check_id("skill_id", skill_id)
        where.equal("skill_id", skill_id)
    if status is not None:
        value = _value(status)
        if value not in {member.value for member in BenchmarkStatus}:
            raise ValidationError.of(
                "status", f"must be one of {', '.join(m.value for m in BenchmarkStatus)}"
            )
        where.equal("status", value)
    async with operation() as scope:
        return await fetch_page(scope.connection, BenchmarkRun, where, limit=limit, cursor=cursor)


async def start_run(run_id: str) -> BenchmarkRun:
    """Make a pending run running; ``started_at`` is stamped."""
    return await _transition(run_id, BenchmarkStatus.running)


async def complete_run(run_id: str) -> BenchmarkRun:
    """Make a running run completed; the database picks the best and cheapest model."""
    return await _transition(run_id, BenchmarkStatus.completed)


async def fail_run(run_id: str, *, error_message: str) -> BenchmarkRun:
    """Make a pending or running run failed, saying why (secrets redacted)."""
    if (
        not isinstance(error_message, str)
        or not error_message.strip()
        or len(error_message) > MAX_ERROR_LENGTH
    ):
        raise ValidationError.of(
            "error_message",
            f"a failed run says why: non-blank text of at most {MAX_ERROR_LENGTH} characters",
        )
    texts, _redactions = await redact_fields_async({"error_message": error_message.strip()})
    return await _transition(run_id, BenchmarkStatus.failed, texts["error_message"])


async def _transition(
    run_id: str, wanted: BenchmarkStatus, error_message: str | None = None
) -> BenchmarkRun:
    check_id("run_id", run_id)
    allowed_from = [status.value for status in TRANSITIONS[wanted]]
    async with operation() as scope:
        connection = scope.connection
        # One statement when the step is allowed. The UPDATE's row lock orders
        # it after writers of results (who hold a SHARE lock on the run) and
        # after any other step of the life cycle; a step that committed
        # meanwhile is seen, as PostgreSQL re-checks the WHERE on the row it
        # waited for.
        # The UPDATE skips a row whose status its snapshot shows not allowed;
        # a step committed since then may have made it allowed: one more try.
        for _attempt in range(2):
            record = await connection.fetchrow(
                """
                UPDATE benchmark_runs SET status = $2, error_message = $3
                 WHERE id = $1 AND status = ANY($4::text[])
                RETURNING *
                """,
                run_id,
                wanted.value,
                error_message,
                allowed_from,
            )
            if record is not None:
                break
            status = await connection.fetchval(
                "SELECT status FROM benchmark_runs WHERE id = $1", run_id
            )
            if status is None:
                raise NotFoundError(_KIND, run_id)
            if status not in allowed_from:
                raise InvalidTransitionError(_KIND, run_id, status, wanted.value, allowed_from)
        else:
            raise ConflictError(f"benchmark run {run_id!r} changed during the step; retry")
    return row_from_record(BenchmarkRun, record)


async def benchmarked_content(run_id: str) -> str | None:
    """The skill text a run benchmarks: its pinned version's, else the latest
    version's of its skill (None when the skill has no version)."""
    check_id("run_id", run_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(
            """
            SELECT r.skill_version_id,
                   (SELECT v.content FROM skill_versions v
                     WHERE v.id = r.skill_version_id) AS pinned,
                   (SELECT v.content FROM skill_versions v
                     WHERE v.skill_id = r.skill_id
                     ORDER BY v.version DESC LIMIT 1) AS latest
              FROM benchmark_runs r
             WHERE r.id = $1
            """,
            run_id,
        )
    if record is None:
        raise NotFoundError(_KIND, run_id)
    content = record["pinned"] if record["skill_version_id"] is not None else record["latest"]
    return content if isinstance(content, str) else None


# -- results ------------------------------------------------------------------------


async def record_result(
    run_id: str,
    *,
    model_name: str,
    model_provider: str,
    test_case_index: int,
    input_used: str | None = None,
    output_produced: str | None = None,
    expected_output: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    total_tokens: int | None = None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    latency_ms: int | None = None,
    estimated_cost_microcents: int | None = None,
    quality_score: int | None = None,
    quality_notes: str | None = None,
    matches_expected: bool | None = None,
    error_message: str | None = None,
    id: str | None = None,
) -> Saved[BenchmarkResult]:
    """Record one result of a running run; see the module's contract."""
    fields = {
        "id": id,
        "model_name": model_name,
        "model_provider": model_provider,
        "test_case_index": test_case_index,
        "input_used": input_used,
        "output_produced": output_produced,
        "expected_output": expected_output,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens,
        "latency_ms": latency_ms,
        "estimated_cost_microcents": estimated_cost_microcents,
        "quality_score": quality_score,
        "quality_notes": quality_notes,
        "matches_expected": matches_expected,
        "error_message": error_message,
    }
    check_id("run_id", run_id)
    rows, positions, problems = _validated_results([fields], batch=False)
    records, replayed, redactions, warnings = await _record(
        run_id, rows, batch=False, positions=positions, problems=problems
    )
    return Saved(
        row_from_record(BenchmarkResult, records[0]), redactions, warnings, bool(replayed)
    )


async def record_results(
    run_id: str, results: Iterable[Mapping[str, Any] | ResultInput]
) -> SavedBatch:
    """Record a batch of results of a running run in one statement; all or nothing."""
    check_id("run_id", run_id)
    rows, positions, problems = _validated_results(results, batch=True)
    if not rows and not problems:
        raise ValidationError.of("results", "is empty: give at least one result")
    _records, replayed, redactions, warnings = await _record(
        run_id, rows, batch=True, positions=positions, problems=problems
    )
    return SavedBatch(tuple(row["id"] for row in rows), redactions, warnings, tuple(replayed))


def _given(run_id: str, row: Mapping[str, Any], cost_given: bool) -> dict[str, Any]:
    """What a result writes from the caller's input, as a replay is
    compared: its columns but the id, the cost only when the caller gave it."""
    values = {name: row[name] for name, _ in _COLUMNS if name != "id"}
    if not cost_given:
        del values["estimated_cost_microcents"]
    return {"benchmark_run_id": run_id, **values}


async def _record(
    run_id: str,
    rows: list[dict[str, Any]],
    *,
    batch: bool,
    positions: Sequence[int],
    problems: Sequence[_Problem],
) -> tuple[list[asyncpg.Record], list[str], dict[str, int], tuple[Warning, ...]]:
    if problems:
        # Refused whatever the run says; its models are still read, so that
        # the valid items' models are checked too and every problem is
        # listed at once. Nothing is redacted or written.
        async with operation({"benchmark_run_id": run_id}) as scope:
            models = await scope.connection.fetchval(
                "SELECT models FROM benchmark_runs WHERE id = $1", run_id
            )
        found = list(problems)
        if models is not None:
            found += _strangers(run_id, list(models), rows, positions, batch)
        raise _refused(found)
    texts, redactions = await redact_fields_async(
        {f"{index}.{name}": row[name] for index, row in enumerate(rows) for name in RESULT_TEXT_FIELDS}
    )
    for index, row in enumerate(rows):
        for name in RESULT_TEXT_FIELDS:
            row[name] = texts[f"{index}.{name}"]
    client_ids = [row["id"] for row in rows if row["id"] is not None]
    for row in rows:
        if row["id"] is None:
            row["id"] = str(uuid.uuid4())
    cost_given = [row["estimated_cost_microcents"] is not None for row in rows]

    def field_of(index: int, field: str) -> str:
        return f"results[{index}].{field}" if batch else field

    async with operation({"benchmark_run_id": run_id}) as scope:
        connection = scope.connection
        run = await connection.fetchrow(
            """
            SELECT status, models,
                   (SELECT jsonb_agg(r) FROM benchmark_results r
                     WHERE r.id = ANY($2::text[])) AS stored
              FROM benchmark_runs WHERE id = $1 FOR SHARE
            """,
            run_id,
            client_ids,
        )
        if run is None:
            raise NotFoundError(_KIND, run_id, "run_id")
        models = list(run["models"])
        strangers = _strangers(run_id, models, rows, positions, batch)
        if strangers:
            raise _refused(strangers)
        stored = stored_rows(run["stored"])
        replayed: set[str] = set()
        for index, row in enumerate(rows):
            if row["id"] in stored:
                differing = differences(stored[row["id"]], _given(run_id, row, cost_given[index]))
                if differing:
                    raise reused("benchmark result", row["id"], differing, field_of(index, "id"))
                replayed.add(row["id"])
        new = [index for index, row in enumerate(rows) if row["id"] not in replayed]
        if new and run["status"] != BenchmarkStatus.running.value:
            # Results are recorded while the run runs; a retry of results
            # already stored is a replay, whatever the run's state now.
            raise RunNotRunningError(run_id, run["status"])
        all_rows = rows
        rows = [all_rows[index] for index in new]
        if not rows:
            records: list[asyncpg.Record] = []
            if not batch:
                record = await connection.fetchrow(
                    "SELECT * FROM benchmark_results WHERE id = $1", all_rows[0]["id"]
                )
                assert record is not None  # read under the same lock on the run
                records = [record]
            return records, [row["id"] for row in all_rows], redactions, ()

        warnings: tuple[CostWarning, ...] = ()
        to_price = [
            row
            for row in rows
            if row["estimated_cost_microcents"] is None
            and not (
                row["error_message"] is not None
                and row["input_tokens"] is None
                and row["output_tokens"] is None
            )
        ]
        if to_price:
            pricer = await Pricer.load(connection)
            for row in to_price:
                row["estimated_cost_microcents"] = pricer.cost(
                    row["model_provider"],
                    row["model_name"],
                    TokenUsage(
                        row["input_tokens"],
                        row["output_tokens"],
                        row["cache_read_tokens"],
                        row["cache_write_tokens"],
                    ),
                )
            warnings = pricer.warnings()

        arguments = [[row[column] for row in rows] for column, _ in _COLUMNS]
        statement = _INSERT + (" RETURNING *" if not batch else " RETURNING id")
        try:
            records = await connection.fetch(statement, scope.tenant_id, run_id, *arguments)
        except asyncpg.UniqueViolationError as error:
            raise ConflictError(
                f"benchmark result already recorded for this model and test case"
                f" ({error.detail or error.constraint_name}); one result per model"
                " and test case of a run"
            ) from error
        if len(records) < len(rows):
            inserted = {record["id"] for record in records}
            missing = [index for index in new if all_rows[index]["id"] not in inserted]
            replayed |= await settle_skipped(
                scope,
                "benchmark_results",
                "benchmark result",
                [
                    (
                        all_rows[index]["id"],
                        field_of(index, "id"),
                        _given(run_id, all_rows[index], cost_given[index]),
                    )
                    for index in missing
                ],
                wrote=bool(records),
            )
            if not batch:
                record = await connection.fetchrow(
                    "SELECT * FROM benchmark_results WHERE id = $1", all_rows[0]["id"]
                )
                assert record is not None  # settle_skipped found it
                records = [record]
    return list(records), [row["id"] for row in all_rows if row["id"] in replayed], redactions, warnings


async def recorded_cases(run_id: str) -> set[tuple[str, int]]:
    """The (model, test case index) pairs a run has results for."""
    check_id("run_id", run_id)
    async with operation() as scope:
        exists = await scope.connection.fetchval(
            "SELECT EXISTS (SELECT FROM benchmark_runs WHERE id = $1)", run_id
        )
        if not exists:
            raise NotFoundError(_KIND, run_id)
        records = await scope.connection.fetch(
            "SELECT model_name, test_case_index FROM benchmark_results"
            " WHERE benchmark_run_id = $1",
            run_id,
        )
    return {(record["model_name"], record["test_case_index"]) for record in records}


# -- summary ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSummary:
    """What one model of a run did, over its results."""

    model_name: str
    #: How many results the model has.
    results: int
    #: Average quality score of the results scored (0-100), or None.
    avg_quality: float | None
    #: Share (0-1) of results matching the expected output, among those
    #: where a match was judged; None when none was.
    match_rate: float | None
    avg_latency_ms: float | None
    #: 95th percentile of latency, linearly interpolated (percentile_cont).
    p95_latency_ms: float | None
    #: Average cost of the results with a known cost (the costed ones).
    avg_cost_microcents: float | None
    #: How many results are errors (have an error message).
    errors: int
    #: The sum of the results' known costs, in microcents; None when none
    #: is known. The sums of a run's models are its results' cost
    #: (:attr:`RunCost.results_microcents`).
    cost_microcents: int | None
    #: How many results are answers without a quality score: answers a
    #: judge could not score, or (offline scoring) cases without an
    #: expected output.
    unscored: int


_SUMMARY = """
SELECT m.model_name,
       count(r.id) AS results,
       avg(r.quality_score)::float8 AS avg_quality,
       (count(*) FILTER (WHERE r.matches_expected))::float8
           / nullif(count(r.matches_expected), 0) AS match_rate,
       avg(r.latency_ms)::float8 AS avg_latency_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms) AS p95_latency_ms,
       avg(r.estimated_cost_microcents)::float8 AS avg_cost_microcents,
       count(r.error_message) AS errors,
       sum(r.estimated_cost_microcents)::bigint AS cost_microcents,
       count(r.id) FILTER (WHERE r.error_message IS NULL AND r.quality_score IS NULL) AS unscored
  FROM benchmark_runs run
 CROSS JOIN LATERAL unnest(run.models) WITH ORDINALITY AS m(model_name, position)
  LEFT JOIN benchmark_results r
         ON r.benchmark_run_id = run.id AND r.model_name = m.model_name
 WHERE run.id = $1
 GROUP BY m.model_name, m.position
 ORDER BY m.position
"""


async def run_summary(run_id: str) -> list[ModelSummary]:
    """One summary per model of the run, in the run's order; see :class:`ModelSummary`."""
    check_id("run_id", run_id)
    async with operation() as scope:
        records = await scope.connection.fetch(_SUMMARY, run_id)
    if not records:  # a run has at least one model: no row, no run
        raise NotFoundError(_KIND, run_id)
    return [
        ModelSummary(
            model_name=record["model_name"],
            results=record["results"],
            avg_quality=record["avg_quality"],
            match_rate=record["match_rate"],
            avg_latency_ms=record["avg_latency_ms"],
            p95_latency_ms=record["p95_latency_ms"],
            avg_cost_microcents=record["avg_cost_microcents"],
            errors=record["errors"],
            cost_microcents=record["cost_microcents"],
            unscored=record["unscored"],
        )
        for record in records
    ]


# -- cost ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCost:
    """What a run cost, in microcents (1e-8 USD): its model calls and the
    judging of their answers."""

    #: The sum of the results' known costs.
    results_microcents: int
    #: The sum of the known costs of the run's scoring calls (a judge's).
    judging_microcents: int
    #: How many scoring calls the run has (judgements made).
    judgements: int
    #: Results with tokens but no cost (a model without a price).
    unpriced_results: int
    #: Scoring calls with tokens but no cost.
    unpriced_judgements: int

    @property
    def total_microcents(self) -> int:
        """The run's cost: its results' and its judging's."""
        return self.results_microcents + self.judging_microcents


_COST = """
SELECT (SELECT skill_id FROM benchmark_runs WHERE id = $1) AS skill_id,
       r.results_microcents, r.unpriced_results,
       j.judging_microcents, j.judgements, j.unpriced_judgements
  FROM (SELECT coalesce(sum(estimated_cost_microcents), 0)::bigint AS results_microcents,
               count(*) FILTER (WHERE estimated_cost_microcents IS NULL
                                  AND (input_tokens IS NOT NULL
                                       OR output_tokens IS NOT NULL)) AS unpriced_results
          FROM benchmark_results WHERE benchmark_run_id = $1) r,
       -- The scoring measurements of the run: tied to it by usage_event_id,
       -- of its skill (read through the skill's index), with the source the
       -- runner writes.
       (SELECT coalesce(sum(m.estimated_cost_microcents), 0)::bigint AS judging_microcents,
               count(*) AS judgements,
               count(*) FILTER (WHERE m.estimated_cost_microcents IS NULL) AS unpriced_judgements
          FROM token_measurements m
         WHERE m.skill_id = (SELECT skill_id FROM benchmark_runs WHERE id = $1)
           AND m.usage_event_id = $1 AND m.source = $2) j
"""


async def run_cost(run_id: str) -> RunCost:
    """What a run cost: its results and its judging; see :class:`RunCost`."""
    check_id("run_id", run_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(_COST, run_id, SCORING_SOURCE)
    if record is None or record["skill_id"] is None:
        raise NotFoundError(_KIND, run_id)
    return RunCost(
        results_microcents=int(record["results_microcents"]),
        judging_microcents=int(record["judging_microcents"]),
        judgements=int(record["judgements"]),
        unpriced_results=int(record["unpriced_results"]),
        unpriced_judgements=int(record["unpriced_judgements"]),
    )
