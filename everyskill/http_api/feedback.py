"""The feedback routes: recording (one or a batch), reading, review, export.

Contract
--------
- ``POST /v1/feedback`` (``feedback:write``) records one feedback item
  (the fields of :func:`everyskill.feedback.record_feedback`) or
  ``{"items": [...]}`` of 1 to :data:`MAX_BATCH` items, in one tenant
  transaction: all of them or none. Every item is checked on its own, its
  types and then the query API's rules
  (:func:`~everyskill.feedback.check_feedback_batch`), with the ids given
  twice; when any is bad the answer is one 422 listing every bad item by
  ``index`` and ``field``, and nothing is written. An id that names
  no row of the tenant (a skill, version or user) is found by the
  database, which ends the transaction at that item: the answer is a 404
  naming it (``errors[0].index``), and nothing is written. One item answers
  201 :class:`~everyskill.http_api.schemas.Written`, a batch 201
  :class:`~everyskill.http_api.schemas.BatchWritten`.
- Each item may carry its own ``id`` (a UUID): an item whose id the tenant
  already stored with the same values is a replay (nothing written, the
  stored row answered, ``replayed``); one item replayed, or a batch of
  replays only, answers 200 with ``Idempotent-Replayed: true``. An id
  another tenant holds, or one stored with other values, is a 409
  (``conflict``, field ``id``, the item's ``index`` in a batch) saying
  nothing about the other row; an id given twice in a batch is a 422.
- Each item names its skill by ``skill_id`` or by ``skill_slug``
  (:mod:`~everyskill.http_api.skill_refs`): neither or both is a 422 with
  the item's other problems. The slugs of a batch are looked up with one
  query, in the batch's transaction, once every item passed its checks;
  an unknown slug (another tenant's included) is a 404 naming every item
  that gives one (``errors``, by ``index``), and nothing is written.
- One item is written in an autocommit tenant scope: the query API sends
  the one statement of the SQL function ``record_feedback`` alone, so the
  write is one round trip (and the key's resolution another). One item
  naming its skill by slug costs one more query: its lookup and the write
  run in one tenant transaction (BEGIN with the switch, the lookup, the
  write, COMMIT: four round trips, five with the key's). Every other
  route but a batch makes one query-API call, in an autocommit scope too
  (the call is its own transaction); a batch is one transaction.
- ``GET /v1/feedback`` (``read``) lists with the filters of
  :func:`~everyskill.feedback.list_feedback`; ``GET /v1/feedback/{id}`` reads one.
- ``POST /v1/feedback/{id}/review`` (``decision``: accepted or dismissed)
  and ``POST /v1/feedback/{id}/implemented`` (``feedback:review``) take the
  reviewer (``reviewer_id``, a user of the tenant) and optional ``notes``.
- ``GET /v1/training-examples.jsonl`` (``read``, optional ``skill_id``)
  streams the accepted training examples as ``application/x-ndjson``, in
  pages of :func:`~everyskill.feedback.training_example_page`
  (:data:`~everyskill.feedback.EXPORT_PAGE` lines): each page is read in an
  autocommit tenant scope of its own, whose connection is back in the pool
  before the page is sent. A slow or stalled client holds no database
  connection and no transaction while the server waits on it (the next
  page is read once the client took this one), and at most one page is in
  memory. The export is therefore not one snapshot: a row committed while
  it runs may or may not appear; no row appears twice. A client that goes
  away ends the export. An error before the first line is a problem answer
  (an unknown skill, 404); one after it cuts the stream short (no final
  chunk), so the client can tell the export is incomplete, and is logged.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

import pydantic
from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from everyskill import feedback
from everyskill.errors import ConflictError, NotFoundError, ValidationError
from everyskill.http_api.auth import FeedbackReviewer, FeedbackWriter, Reader
from everyskill.http_api.problems import (
    ERROR_RESPONSES,
    FieldProblem,
    item_problems,
    validation_problems,
)
from everyskill.http_api.schemas import (
    BatchWritten,
    ClientId,
    create_responses,
    created,
    FeedbackOut,
    Limit,
    one_or_batch,
    Page,
    page_json,
    row_json,
    Since,
    Until,
    Written,
    written,
)
from everyskill.http_api.skill_refs import NamesOneSkill, with_skill_ids
from everyskill.pagination import DEFAULT_LIMIT
from everyskill.tenancy import tenant_scope
from tables import FeedbackSource, FeedbackStatus, FeedbackType

__all__ = ["MAX_BATCH", "router"]

logger = logging.getLogger("everyskill.http_api")

#: The most items of one POST /v1/feedback.
MAX_BATCH = 500

router = APIRouter(tags=["feedback"], responses=ERROR_RESPONSES)

_Types = Literal[tuple(t.value for t in FeedbackType)]  # type: ignore[valid-type]
_Sources = Literal[tuple(s.value for s in FeedbackSource)]  # type: ignore[valid-type]
_Statuses = Literal[tuple(s.value for s in FeedbackStatus)]  # type: ignore[valid-type]


class _Input(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class FeedbackIn(NamesOneSkill, _Input):
    """One feedback item: what each type needs is checked by the query API
    (thumbs: sentiment; suggestion: suggested content or diff; training
    example: example_input and expected_output; bug report: comment). The
    skill is named by skill_id or by skill_slug."""

    feedback_type: _Types  # type: ignore[valid-type]
    skill_version_id: str | None = None
    user_id: str | None = None
    usage_event_id: str | None = None
    sentiment: Literal[-1, 0, 1] | None = None
    quality_score: int | None = pydantic.Field(default=None, description="1 to 10.")
    source: _Sources = pydantic.Field(default="web")  # type: ignore[valid-type]
    comment: str | None = None
    suggested_content: str | None = None
    suggested_diff: str | None = None
    example_input: str | None = None
    example_output: str | None = None
    expected_output: str | None = None
    id: ClientId


class FeedbackBatchIn(_Input):
    """A batch of feedback items, written all or none."""

    # Each item is validated by the route, on its own (the schema is
    # FeedbackIn's): a bad item does not hide the others' problems.
    items: list[pydantic.SkipValidation[FeedbackIn]] = pydantic.Field(
        min_length=1, max_length=MAX_BATCH
    )


_ITEM = pydantic.TypeAdapter(FeedbackIn)


def _fields(item: FeedbackIn) -> dict[str, Any]:
    """The keyword arguments of record_feedback given by an item whose
    skill is named by id (see :func:`~everyskill.http_api.skill_refs.with_skill_ids`)."""
    return item.model_dump(exclude_unset=True, exclude={"skill_slug"})


def _checked_items(given: list[object]) -> list[FeedbackIn]:
    """The batch's items, or ValidationError listing every bad one."""
    items: list[FeedbackIn | None] = []
    problems: list[FieldProblem] = []
    for index, raw in enumerate(given):
        try:
            items.append(_ITEM.validate_python(raw))
        except pydantic.ValidationError as error:
            problems += item_problems(error, index)
            items.append(None)
    try:
        # The rules do not depend on which skill: an item naming its skill
        # by slug is checked with the slug in the id's place (the slug is
        # looked up once the whole batch passes).
        feedback.check_feedback_batch(
            [
                None
                if item is None
                else {**_fields(item), "skill_id": item.skill_id or item.skill_slug}
                for item in items
            ]
        )
    except ValidationError as error:
        problems += validation_problems(error)
    if problems:
        problems.sort(key=lambda problem: problem.index or 0)
        raise ValidationError([(f"items[{p.index}].{p.field}", p.message) for p in problems])
    return [item for item in items if item is not None]


class ReviewIn(_Input):
    reviewer_id: str = pydantic.Field(description="The reviewing user, a user of the tenant.")
    decision: Literal["accepted", "dismissed"]
    notes: str | None = None


class ImplementedIn(_Input):
    reviewer_id: str = pydantic.Field(description="The reviewing user, a user of the tenant.")
    notes: str | None = None


class _BatchRefused(Exception):
    """Raised inside the batch's scope so that it rolls back."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems


@router.post(
    "/feedback",
    status_code=201,
    response_model=Written[FeedbackOut] | BatchWritten,
    responses=create_responses(Written[FeedbackOut] | BatchWritten),
    summary="Record one feedback item, or a batch of up to 500",
)
async def record_feedback(
    key: FeedbackWriter,
    body: one_or_batch(FeedbackIn, FeedbackBatchIn),  # type: ignore[valid-type]
    response: Response,
) -> dict[str, Any]:
    if isinstance(body, FeedbackIn):
        if body.skill_slug is None:
            # One round trip: record_feedback's one statement, sent alone.
            async with tenant_scope(key.tenant_id, autocommit=True):
                saved = await feedback.record_feedback(**_fields(body))
        else:
            # The slug's lookup and the write, in one transaction.
            async with tenant_scope(key.tenant_id):
                (item,) = await with_skill_ids([body], batch=False)
                saved = await feedback.record_feedback(**_fields(item))
        created(response, saved.replayed)
        return written(saved)
    assert isinstance(body, FeedbackBatchIn)
    items = _checked_items(list(body.items))
    problems: list[FieldProblem] = []
    ids: list[str] = []
    replayed: list[str] = []
    redactions: dict[str, int] = {}
    try:
        async with tenant_scope(key.tenant_id) as scope:
            # Every slug of the batch with one query; nothing is written
            # when one is unknown.
            items = await with_skill_ids(items, batch=True)
            for index, item in enumerate(items):
                try:
                    saved = await feedback.record_feedback(**_fields(item))
                except ValidationError as error:
                    problems += validation_problems(error, index)
                    if scope.failed is not None:  # refused by the database: no more checks
                        break
                    continue
                except NotFoundError as error:
                    raise NotFoundError(
                        error.kind, error.id, f"items[{index}].{error.field or 'id'}"
                    ) from error
                except ConflictError as error:
                    if error.field is None:
                        raise
                    raise ConflictError(
                        f"items[{index}].{error}", field=f"items[{index}].{error.field}"
                    ) from error
                ids.append(saved.row.id)
                if saved.replayed:
                    replayed.append(saved.row.id)
                    continue
                for kind, count in saved.redactions.items():
                    redactions[kind] = redactions.get(kind, 0) + count
            if problems:
                raise _BatchRefused(problems)
    except _BatchRefused:
        raise ValidationError(
            [(f"items[{p.index}].{p.field}", p.message) for p in problems]
        ) from None
    created(response, len(replayed) == len(ids))
    return {
        "ids": ids,
        "count": len(ids) - len(replayed),
        "redactions": redactions,
        "warnings": [],
        "replayed": replayed,
    }


@router.get("/feedback", response_model=Page[FeedbackOut], summary="List feedback, newest first")
async def list_feedback(
    key: Reader,
    skill_id: str | None = None,
    feedback_type: _Types | None = None,  # type: ignore[valid-type]
    status: _Statuses | None = None,  # type: ignore[valid-type]
    source: _Sources | None = None,  # type: ignore[valid-type]
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        page = await feedback.list_feedback(
            skill_id=skill_id,
            feedback_type=feedback_type,
            status=status,
            source=source,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    return page_json(page)


@router.get("/feedback/{feedback_id}", response_model=FeedbackOut, summary="Read one feedback item")
async def get_feedback(key: Reader, feedback_id: str) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        row = await feedback.get_feedback(feedback_id)
    return row_json(row)


@router.post(
    "/feedback/{feedback_id}/review",
    response_model=Written[FeedbackOut],
    summary="Accept or dismiss pending feedback",
)
async def review_feedback(key: FeedbackReviewer, feedback_id: str, body: ReviewIn) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await feedback.review_feedback(
            feedback_id, reviewer_id=body.reviewer_id, decision=body.decision, notes=body.notes
        )
    return written(saved)


@router.post(
    "/feedback/{feedback_id}/implemented",
    response_model=Written[FeedbackOut],
    summary="Mark accepted feedback as implemented",
)
async def mark_implemented(
    key: FeedbackReviewer, feedback_id: str, body: ImplementedIn
) -> dict[str, Any]:
    async with tenant_scope(key.tenant_id, autocommit=True):
        saved = await feedback.mark_implemented(
            feedback_id, reviewer_id=body.reviewer_id, notes=body.notes
        )
    return written(saved)


@router.get(
    "/training-examples.jsonl",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "description": "One JSON object per line: input, expected_output, output, skill,"
            " skill_id, version, quality, feedback_id; oldest first.",
        }
    },
    summary="Export accepted training examples as JSON lines, streamed",
)
async def export_training_examples(key: Reader, skill_id: str | None = None) -> StreamingResponse:
    async def page(after: tuple[datetime.datetime, str] | None) -> feedback.ExportPage:
        async with tenant_scope(key.tenant_id, autocommit=True):
            return await feedback.training_example_page(skill_id=skill_id, after=after)

    # Errors of the first page (an unknown skill) are the answer.
    first = await page(None)

    async def stream() -> AsyncIterator[str]:
        current = first
        try:
            while True:
                # No connection is held here: sending waits on the client.
                if current.lines:
                    yield "".join(current.lines)
                if current.after is None:
                    return
                current = await page(current.after)
        except Exception:
            logger.exception("the training-example export failed while streaming")
            raise

    return StreamingResponse(stream(), media_type="application/x-ndjson")
