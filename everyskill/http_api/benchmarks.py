"""The benchmark routes: runs, their life cycle, results and summaries.

Contract
--------
Writes need ``benchmarks:write``, reads ``read``; each route calls
:mod:`everyskill.benchmarks`, whose rules apply:

- ``POST /v1/benchmark-runs`` (:func:`~everyskill.benchmarks.create_run`:
  ``skill_id``, ``models``, ``triggered_by`` (a user of the tenant),
  optional ``skill_version_id``, optional ``id``: a UUID of the client's)
  answers 201 with the pending run; a replay of a stored id with the same
  values 200 with the stored run, ``replayed`` and
  ``Idempotent-Replayed: true``; another tenant's id, or one stored with
  other values, a 409 (field ``id``).
- ``POST /v1/benchmark-runs/{id}/start``, ``/complete`` and ``/fail``
  (``error_message``) move the run along its life cycle; a step it cannot
  take is a 409 ``invalid-transition``.
- ``POST /v1/benchmark-runs/{id}/results`` records ``{"items": [...]}`` of
  1 to :data:`MAX_RESULTS` results (:class:`~everyskill.benchmarks.ResultInput`)
  with :func:`~everyskill.benchmarks.record_results`: one statement, all or
  nothing; one 422 listing every bad item by ``index`` and ``field`` (types
  and ranges, models of the run, cases and ids given twice, together), 409
  ``run-not-running`` unless the run is running, 409 ``conflict`` for a
  result recorded before. A result may carry its own ``id``: replays are
  listed in ``replayed`` (200 when every result was one), an id of another
  tenant or reused for other values is a 409 naming the item.
- Every route but ``GET /v1/benchmark-runs/{id}`` makes one query-API call,
  in an autocommit tenant scope (the call is its own transaction).
- ``GET /v1/benchmark-runs`` lists runs (``skill_id``, ``status``);
  ``GET /v1/benchmark-runs/{id}`` answers ``{"run": ..., "summary": [...]}``:
  the run (its picks included) and one
  :class:`~everyskill.benchmarks.ModelSummary` per model, read in one
  transaction.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from fastapi import APIRouter, Response

from everyskill import benchmarks
from everyskill.http_api.auth import BenchmarkWriter, Reader
from everyskill.http_api.problems import ERROR_RESPONSES
from everyskill.http_api.schemas import (
    batch_written,
    BatchWritten,
    BenchmarkRunOut,
    ClientId,
    create_responses,
    created,
    Limit,
    Page,
    page_json,
    row_json,
    Written,
    written,
)
from everyskill.pagination import DEFAULT_LIMIT
from everyskill.tenancy import tenant_scope
from tables import BenchmarkStatus

__all__ = ["MAX_RESULTS", "router"]

#: The most results of one POST /v1/benchmark-runs/{id}/results.
MAX_RESULTS = 10_000

router = APIRouter(tags=["benchmark runs"], responses=ERROR_RESPONSES)

_Statuses = Literal[tuple(s.value for s in BenchmarkStatus)]  # type: ignore[valid-type]


class _Input(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class RunIn(_Input):
    skill_id: str
    models: list[str] = pydantic.Field(description="Distinct model names, at least one.")
    triggered_by: str = pydantic.Field(description="The user who started it, of the tenant.")
    skill_version_id: str | None = None
    id: ClientId


class FailIn(_Input):
    error_message: str = pydantic.Field(description="Why the run failed.")


class ResultsIn(_Input):
    """Results of a running run, written with one statement, all or none."""

    # The query API validates each item on its own (the schema is
    # ResultInput's), with the run's models: one 422 lists every bad item.
    items: list[pydantic.SkipValidation[benchmarks.ResultInput]] = pydantic.Field(
        min_length=1, max_length=MAX_RESULTS
    )


class RunDetail(pydantic.BaseModel):
    """A run and what each of its models did."""

    run: BenchmarkRunOut
    summary: list[benchmarks.ModelSummary]


@router.post(
    "/benchmark-runs",
    status_code=201,
    response_model=Written[BenchmarkRunOut],
    responses=create_responses(Written[BenchmarkRunOut]),
    summary="Create a pending benchmark run",
)
async def create_run(key: BenchmarkWriter, body: RunIn, response: Response) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await benchmarks.create_run(**body.model_dump(exclude_unset=True))
    created(response, saved.replayed)
    return written(saved)


@router.get(
    "/benchmark-runs", response_model=Page[BenchmarkRunOut], summary="List runs, newest first"
)
async def list_runs(
    key: Reader,
    skill_id: str | None = None,
    status: _Statuses | None = None,  # type: ignore[valid-type]
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        page = await benchmarks.list_runs(
            skill_id=skill_id, status=status, limit=limit, cursor=cursor
        )
    return page_json(page)


@router.get(
    "/benchmark-runs/{run_id}",
    response_model=RunDetail,
    summary="Read a run with its per-model summary",
)
async def get_run(key: Reader, run_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id):
        run = await benchmarks.get_run(run_id)
        summary = await benchmarks.run_summary(run_id)
    return {"run": row_json(run), "summary": summary}


@router.post(
    "/benchmark-runs/{run_id}/start",
    response_model=Written[BenchmarkRunOut],
    summary="Start a pending run",
)
async def start_run(key: BenchmarkWriter, run_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return written(await benchmarks.start_run(run_id))


@router.post(
    "/benchmark-runs/{run_id}/complete",
    response_model=Written[BenchmarkRunOut],
    summary="Complete a running run: the database picks the best and cheapest model",
)
async def complete_run(key: BenchmarkWriter, run_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return written(await benchmarks.complete_run(run_id))


@router.post(
    "/benchmark-runs/{run_id}/fail",
    response_model=Written[BenchmarkRunOut],
    summary="Fail a pending or running run, saying why",
)
async def fail_run(key: BenchmarkWriter, run_id: str, body: FailIn) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        return written(await benchmarks.fail_run(run_id, error_message=body.error_message))


@router.post(
    "/benchmark-runs/{run_id}/results",
    status_code=201,
    response_model=BatchWritten,
    responses=create_responses(BatchWritten),
    summary="Record a batch of results of a running run",
)
async def record_results(
    key: BenchmarkWriter, run_id: str, body: ResultsIn, response: Response
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await benchmarks.record_results(run_id, body.items)
    created(response, saved.count == 0)
    return batch_written(saved)
