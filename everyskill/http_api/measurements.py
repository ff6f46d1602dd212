"""The token-measurement routes: recording (one or a batch), reading, summaries.

Contract
--------
- ``POST /v1/token-measurements`` (``measurements:write``) records one
  measurement (the fields of :class:`everyskill.usage.MeasurementInput`)
  with :func:`~everyskill.usage.record_measurement`, answering 201
  :class:`~everyskill.http_api.schemas.Written`, or ``{"items": [...]}`` of
  1 to :data:`MAX_BATCH` with :func:`~everyskill.usage.record_measurements`
  (one statement: all or nothing), answering 201
  :class:`~everyskill.http_api.schemas.BatchWritten`. A refused batch is a
  422 listing the bad items by ``index`` and ``field`` (the query API lists
  the first 20 problems and counts the rest); an id that names no row of
  the tenant a 404 naming the item. Costs left null are in ``warnings``.
  Each item may carry its own ``id`` (a UUID); replays (ids the tenant
  stored with the same values) are written once: a single replay, or a
  batch of replays only, answers 200 with ``Idempotent-Replayed: true``,
  and a batch lists its replayed ids. An id another tenant holds, or one
  stored with other values, is a 409 naming the item; nothing is written.
- Each item names its skill by ``skill_id`` or by ``skill_slug``
  (:mod:`~everyskill.http_api.skill_refs`): neither or both is a 422 with
  the item's other type problems. The slugs of a request are looked up
  with one query, before the query API checks the items' rules; an
  unknown slug (another tenant's included) is a 404 naming every item
  that gives one, and nothing is written.
- ``GET /v1/token-measurements`` (``read``) lists with the filters of
  :func:`~everyskill.usage.list_measurements`;
  ``GET /v1/token-measurements/{id}`` reads one.
- Each route makes one query-API call, in an autocommit tenant scope (the
  call is its own transaction); a write naming a skill by slug makes two,
  the slugs' lookup and the write, in one tenant transaction.
- ``GET /v1/usage/summary`` (``read``): :func:`~everyskill.usage.usage_summary`
  grouped by ``by`` (repeat it: ``by=skill&by=model``; none given: skill,
  model and day), with ``time_zone`` (IANA name) for days, and the filters
  ``skill_id``, ``model_name``, ``since``, ``until``.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import pydantic
from fastapi import APIRouter, Query, Response

from everyskill import usage
from everyskill.http_api.auth import MeasurementWriter, Reader
from everyskill.http_api.problems import ERROR_RESPONSES
from everyskill.http_api.schemas import (
    batch_written,
    BatchWritten,
    create_responses,
    created,
    Limit,
    MeasurementOut,
    one_or_batch,
    Page,
    page_json,
    row_json,
    Since,
    Until,
    Written,
    written,
)
from everyskill.http_api.skill_refs import NamesOneSkill, SKILL_ID_DESCRIPTION, with_skill_ids
from everyskill.pagination import DEFAULT_LIMIT
from everyskill.tenancy import tenant_scope

__all__ = ["MAX_BATCH", "router"]

#: The most items of one POST /v1/token-measurements.
MAX_BATCH = 10_000

router = APIRouter(tags=["token measurements"], responses=ERROR_RESPONSES)

_SKILL_ID = usage.MeasurementInput.model_fields["skill_id"]


class MeasurementIn(NamesOneSkill, usage.MeasurementInput):
    """One measurement to record: the fields of the query API's
    MeasurementInput, its skill named by skill_id or by skill_slug. Once its
    slug is resolved (:func:`~everyskill.http_api.skill_refs.with_skill_ids`),
    it is the MeasurementInput the query API takes."""

    # The query API's type of skill_id, optional here.
    skill_id: Annotated[str, *_SKILL_ID.metadata] | None = pydantic.Field(  # type: ignore[assignment]
        default=None, description=SKILL_ID_DESCRIPTION
    )


class MeasurementBatchIn(pydantic.BaseModel):
    """A batch of measurements, written with one statement, all or none."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    items: list[MeasurementIn] = pydantic.Field(min_length=1, max_length=MAX_BATCH)


class UsageSummaries(pydantic.BaseModel):
    """Usage by group; the keys a row is not grouped by are null."""

    items: list[usage.UsageSummary]


@router.post(
    "/token-measurements",
    status_code=201,
    response_model=Written[MeasurementOut] | BatchWritten,
    responses=create_responses(Written[MeasurementOut] | BatchWritten),
    summary="Record one token measurement, or a batch of up to 10,000",
)
async def record_measurements(
    key: MeasurementWriter,
    body: one_or_batch(MeasurementIn, MeasurementBatchIn),  # type: ignore[valid-type]
    response: Response,
) -> dict[str, Any]:
    if isinstance(body, MeasurementIn):
        # By slug: the lookup and the write in one transaction.
        async with tenant_scope(key.tenant_id, autocommit=body.skill_slug is None):
            (item,) = await with_skill_ids([body], batch=False)
            saved = await usage.record_measurement(
                **item.model_dump(exclude_unset=True, exclude={"skill_slug"})
            )
        created(response, saved.replayed)
        return written(saved)
    assert isinstance(body, MeasurementBatchIn)
    by_slug = any(item.skill_slug is not None for item in body.items)
    async with tenant_scope(key.tenant_id, autocommit=not by_slug):
        # Every slug of the batch with one query; nothing is written when
        # one is unknown.
        items = await with_skill_ids(body.items, batch=True)
        batch = await usage.record_measurements(items)
    created(response, batch.count == 0)
    return batch_written(batch)


@router.get(
    "/token-measurements",
    response_model=Page[MeasurementOut],
    summary="List token measurements, newest first",
)
async def list_measurements(
    key: Reader,
    skill_id: str | None = None,
    model_name: str | None = None,
    model_provider: str | None = None,
    user_id: str | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        page = await usage.list_measurements(
            skill_id=skill_id,
            model_name=model_name,
            model_provider=model_provider,
            user_id=user_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    return page_json(page)


@router.get(
    "/token-measurements/{measurement_id}",
    response_model=MeasurementOut,
    summary="Read one token measurement",
)
async def get_measurement(key: Reader, measurement_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        row = await usage.get_measurement(measurement_id)
    return row_json(row)


@router.get(
    "/usage/summary",
    response_model=UsageSummaries,
    summary="Sum usage and cost by skill, model and/or day",
)
async def usage_summary(
    key: Reader,
    by: Annotated[
        list[Literal["skill", "model", "day"]] | None,
        Query(description="Group by these (repeat the parameter); none: all three."),
    ] = None,
    time_zone: Annotated[str, Query(description="IANA time zone of the days.")] = "UTC",
    skill_id: str | None = None,
    model_name: str | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        rows = await usage.usage_summary(
            by=usage.SUMMARY_KEYS if by is None else by,
            skill_id=skill_id,
            model_name=model_name,
            since=since,
            until=until,
            time_zone=time_zone,
        )
    return {"items": rows}
