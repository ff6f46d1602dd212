"""Feedback on skills: recording, review, listing and training-data export.

Every function runs in the current tenant scope (see
:func:`everyskill.tenancy.tenant_scope`) through
:func:`~everyskill.tenancy.operation`, and writes with one statement: it
writes everything or nothing. A refusal found before writing leaves the
scope usable; one the database makes ends the scope (wrap the call in
``scope.savepoint()`` to carry on).

Contract
--------
- :func:`record_feedback` records one of the five feedback types with what
  that type needs, and refuses the rest with a
  :class:`~everyskill.errors.ValidationError` naming each bad field, before
  anything is written:

  ==================  ===================================================
  ``thumbs_up``       sentiment is 1 (set when not given)
  ``thumbs_down``     sentiment is -1 (set when not given)
  ``suggestion``      ``suggested_content`` or ``suggested_diff``
  ``training_example`` ``example_input`` and ``expected_output``;
                      ``example_output`` optional
  ``bug_report``      ``comment``
  ==================  ===================================================

  Suggested content and diffs belong to suggestions only, example fields to
  training examples only. Optional for all: ``comment``, ``skill_version_id``
  (a version of the same skill), ``user_id``, ``usage_event_id``,
  ``quality_score`` (1-10), ``sentiment`` (-1, 0, 1), ``source`` (web, mcp,
  hook, api; default web). Ids that name no row of the tenant raise
  :class:`~everyskill.errors.NotFoundError`.
- ``id`` (optional) is the client's UUID for the new row, which makes a
  retry safe (:mod:`everyskill.client_ids`): when the tenant already has
  feedback with that id and the same values, nothing is written and the
  stored row comes back with ``replayed=True``; other values are a
  :class:`~everyskill.errors.ConflictError` on ``id``, and so is an id
  another tenant holds (nothing is revealed about that row). Without it the
  row gets a new random UUID.
- Secrets never reach the database: every free-text field (and review notes)
  goes through :func:`everyskill.redaction.redact_fields_async` first (big
  texts are scanned off the event loop); the returned
  :class:`~everyskill.rows.Saved` reports how many of each kind were replaced.
- Review: pending feedback is ``accepted`` or ``dismissed``
  (:func:`review_feedback`); accepted feedback is later ``implemented``
  (:func:`mark_implemented`). The reviewer is a user of the same tenant;
  ``reviewed_by`` and ``reviewed_at`` are stamped, notes kept (a staff stamp
  of an earlier review in the admin, ``reviewed_by_admin``, is cleared).
  Dismissed feedback stops counting in the skill's aggregates. Any other
  change of status raises :class:`~everyskill.errors.InvalidTransitionError`.
  Reviewing feedback already reviewed raises
  :class:`~everyskill.errors.AlreadyReviewedError`, which is both an invalid
  transition and a :class:`~everyskill.errors.ConflictError`: when two
  reviewers race on one item, one wins and the other gets a conflict,
  whether it read the item before or after the winner committed.
- :func:`check_feedback_batch` checks a batch of items (the keyword
  arguments of :func:`record_feedback`, as mappings) without writing: one
  ValidationError lists every problem of every item, named
  ``items[3].comment``, and every id given twice; ``None`` stands for an
  item refused already, which keeps its position and is not checked.
- :func:`list_feedback` filters by skill, type, status, source and a
  ``[since, until)`` range of ``created_at``, newest first, in keyset pages.
- :func:`export_training_examples` writes the accepted (and implemented)
  training examples of a skill, or of the whole tenant, as JSONL: one JSON
  object per line with ``input``, ``expected_output``, ``output``, ``skill``
  (the skill's slug), ``skill_id``, ``version`` (or null), ``quality`` (or
  null) and ``feedback_id``, oldest first, streamed from the database.
  ``out.write`` may be a coroutine function: each line is then awaited, so
  that a slow reader holds the export back and it never piles up in memory.
  It reads in one statement of the caller's scope, which stays open until
  the last line is written.
- :func:`training_example_page` reads the same lines one keyset page at a
  time, ordered by ``(created_at, id)``: at most ``limit`` lines (1 to
  :data:`EXPORT_PAGE_LIMIT`, default :data:`EXPORT_PAGE`) after the key
  ``after`` (None for the first page), and the key to pass for the next
  page (None after the last one). Each page is one call that holds no
  connection once it returns, for an export whose reader may be slow (the
  HTTP API's). Such an export is not one snapshot: a row committed
  meanwhile may or may not appear, but no row appears twice and none
  committed before the export began is skipped. An unknown ``skill_id`` is
  a :class:`~everyskill.errors.NotFoundError` on the first page.
"""

from __future__ import annotations

import datetime
import inspect
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import asyncpg
import pydantic

from everyskill.client_ids import batch_ids, checked_id, differences, foreign, reused
from everyskill.errors import (
    check_id,
    AlreadyReviewedError,
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from everyskill.columns import select_list
from everyskill.pagination import DEFAULT_LIMIT, Filter, Page, fetch_page
from everyskill.redaction import redact_fields_async
from everyskill.rows import Saved, row_from_record
from everyskill.rules import BOUNDS, FEEDBACK_RULES, SENTIMENT_OF, problems
from everyskill.tenancy import operation
from tables import FeedbackSource, FeedbackStatus, FeedbackType, SkillFeedback

__all__ = [
    "FEEDBACK_TEXT_FIELDS",
    "MAX_TEXT_LENGTH",
    "TRANSITIONS",
    "check_feedback_batch",
    "EXPORT_PAGE",
    "EXPORT_PAGE_LIMIT",
    "ExportPage",
    "export_training_examples",
    "get_feedback",
    "list_feedback",
    "mark_implemented",
    "record_feedback",
    "review_feedback",
    "training_example_page",
]

#: Free text of a feedback row, redacted before it is written.
FEEDBACK_TEXT_FIELDS = (
    "comment",
    "suggested_content",
    "suggested_diff",
    "example_input",
    "example_output",
    "expected_output",
)
#: The longest text a field takes, in characters.
MAX_TEXT_LENGTH = 100_000

#: Each status a review can set, and the statuses it can be set from.
TRANSITIONS: dict[FeedbackStatus, tuple[FeedbackStatus, ...]] = {
    FeedbackStatus.accepted: (FeedbackStatus.pending,),
    FeedbackStatus.dismissed: (FeedbackStatus.pending,),
    FeedbackStatus.implemented: (FeedbackStatus.accepted,),
}

_Id = pydantic.constr(strip_whitespace=True, min_length=1, max_length=200)
_Text = pydantic.constr(max_length=MAX_TEXT_LENGTH)
_QUALITY_LOW, _QUALITY_HIGH = BOUNDS[SkillFeedback]["quality_score"]


class _FeedbackInput(pydantic.BaseModel):
    """The fields a caller may give; types and ranges only."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True)

    skill_id: _Id  # type: ignore[valid-type]
    feedback_type: Literal[tuple(t.value for t in FeedbackType)]  # type: ignore[valid-type]
    skill_version_id: _Id | None = None  # type: ignore[valid-type]
    user_id: _Id | None = None  # type: ignore[valid-type]
    usage_event_id: _Id | None = None  # type: ignore[valid-type]
    sentiment: Literal[-1, 0, 1] | None = None
    quality_score: pydantic.conint(ge=_QUALITY_LOW, le=_QUALITY_HIGH) | None = None  # type: ignore[valid-type]
    source: Literal[tuple(s.value for s in FeedbackSource)] = FeedbackSource.web.value  # type: ignore[valid-type]
    comment: _Text | None = None  # type: ignore[valid-type]
    suggested_content: _Text | None = None  # type: ignore[valid-type]
    suggested_diff: _Text | None = None  # type: ignore[valid-type]
    example_input: _Text | None = None  # type: ignore[valid-type]
    example_output: _Text | None = None  # type: ignore[valid-type]
    expected_output: _Text | None = None  # type: ignore[valid-type]


def _validated(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a new feedback row, or ValidationError with every problem."""
    try:
        values = _FeedbackInput(**fields).model_dump()
    except pydantic.ValidationError as error:
        raise ValidationError.from_pydantic(error) from None
    # Blank optional text is no text.
    for name in FEEDBACK_TEXT_FIELDS:
        if values[name] is not None and not values[name].strip():
            values[name] = None

    # A thumb's sentiment follows its type when not given; then the rules
    # of a stored row, as the New* models and the database hold them.
    kind = values["feedback_type"]
    if kind in SENTIMENT_OF and values["sentiment"] is None:
        values["sentiment"] = SENTIMENT_OF[kind]
    found = problems(FEEDBACK_RULES, values)
    if found:
        raise ValidationError(found)
    return values


# The columns a new feedback row is written with from the call's values,
# after tenant_id ($1) and id ($2).
_WRITTEN = (
    "skill_id", "skill_version_id", "user_id", "usage_event_id",
    "feedback_type", "sentiment", "comment", "suggested_content", "suggested_diff",
    "example_input", "example_output", "expected_output", "quality_score", "source",
)
# One statement: the database function record_feedback switches to the
# application role and the tenant (SET LOCAL), inserts with ON CONFLICT (id)
# DO NOTHING, and returns the new row, or the tenant's row stored under the
# id (replayed), or nothing (the id is another tenant's). See its migration.
_RECORD = "SELECT * FROM record_feedback({})".format(
    ", ".join(f"${number}" for number in range(1, len(_WRITTEN) + 3))
)


async def record_feedback(
    *,
    skill_id: str,
    feedback_type: str | FeedbackType,
    skill_version_id: str | None = None,
    user_id: str | None = None,
    usage_event_id: str | None = None,
    sentiment: int | None = None,
    quality_score: int | None = None,
    source: str | FeedbackSource = FeedbackSource.web,
    comment: str | None = None,
    suggested_content: str | None = None,
    suggested_diff: str | None = None,
    example_input: str | None = None,
    example_output: str | None = None,
    expected_output: str | None = None,
    id: str | None = None,
) -> Saved[SkillFeedback]:
    """Record one piece of feedback on a skill; see the module's contract."""
    given_id = checked_id(id)
    values = _validated(
        {
            "skill_id": skill_id,
            "feedback_type": _value(feedback_type),
            "skill_version_id": skill_version_id,
            "user_id": user_id,
            "usage_event_id": usage_event_id,
            "sentiment": sentiment,
            "quality_score": quality_score,
            "source": _value(source),
            "comment": comment,
            "suggested_content": suggested_content,
            "suggested_diff": suggested_diff,
            "example_input": example_input,
            "example_output": example_output,
            "expected_output": expected_output,
        }
    )
    texts, redactions = await redact_fields_async({name: values[name] for name in FEEDBACK_TEXT_FIELDS})
    values.update(texts)
    row_id = given_id or str(uuid.uuid4())
    written = [values[name] for name in _WRITTEN]
    async with operation(values, single_statement=True) as scope:
        record = await scope.connection.fetchrow(_RECORD, scope.tenant_id, row_id, *written)
    if record is None:
        # The id is taken by a row row-level security hides.
        raise foreign()
    row = dict(record)
    replayed = row.pop("replayed")
    if replayed:
        differing = differences(row, dict(zip(_WRITTEN, written)))
        if differing:
            raise reused("feedback", row_id, differing)
    return Saved(row_from_record(SkillFeedback, row), redactions, replayed=replayed)


def check_feedback_batch(items: Sequence[Mapping[str, Any] | None], field: str = "items") -> None:
    """ValidationError listing every problem of every item of a batch
    (``field`` names it), before anything is written; see the contract."""
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        if item is None:
            continue
        fields = {name: _value(value) for name, value in item.items() if name != "id"}
        try:
            _validated(fields)
        except ValidationError as error:
            problems += [(f"{field}[{index}].{name}", reason) for name, reason in error.problems]
    try:
        batch_ids([None if item is None else item.get("id") for item in items], field)
    except ValidationError as error:
        problems += error.problems
    if problems:
        # In the order of the items; an item's own problems keep theirs.
        raise ValidationError(sorted(problems, key=lambda problem: _index(problem[0])))


def _index(field: str) -> int:
    """The item position of a batch field such as ``items[3].comment``."""
    return int(field.split("[", 1)[1].split("]", 1)[0])


async def get_feedback(feedback_id: str) -> SkillFeedback:
    """One feedback row of the tenant, or NotFoundError."""
    check_id("feedback_id", feedback_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(
            f"SELECT {select_list(SkillFeedback)} FROM skill_feedback WHERE id = $1", feedback_id
        )
    if record is None:
        raise NotFoundError("feedback", feedback_id)
    return row_from_record(SkillFeedback, record)


async def review_feedback(
    feedback_id: str,
    *,
    reviewer_id: str,
    decision: Literal["accepted", "dismissed"] | FeedbackStatus,
    notes: str | None = None,
) -> Saved[SkillFeedback]:
    """Accept or dismiss pending feedback, as ``reviewer_id``, with notes."""
    wanted = _value(decision)
    if wanted not in (FeedbackStatus.accepted.value, FeedbackStatus.dismissed.value):
        raise ValidationError.of(
            "decision", "must be 'accepted' or 'dismissed' (use mark_implemented to implement)"
        )
    return await _transition(feedback_id, FeedbackStatus(wanted), reviewer_id, notes)


async def mark_implemented(
    feedback_id: str, *, reviewer_id: str, notes: str | None = None
) -> Saved[SkillFeedback]:
    """Mark accepted feedback as implemented, as ``reviewer_id``."""
    return await _transition(feedback_id, FeedbackStatus.implemented, reviewer_id, notes)


_REVIEW_STATE = "SELECT status, reviewed_by, reviewed_at FROM skill_feedback WHERE id = $1"


async def _transition(
    feedback_id: str, wanted: FeedbackStatus, reviewer_id: str, notes: str | None
) -> Saved[SkillFeedback]:
    check_id("feedback_id", feedback_id)
    check_id("reviewer_id", reviewer_id)
    if notes is not None and (not isinstance(notes, str) or len(notes) > MAX_TEXT_LENGTH):
        raise ValidationError.of("notes", f"must be text of at most {MAX_TEXT_LENGTH} characters")
    texts, redactions = await redact_fields_async({"review_notes": notes or None})
    allowed_from = TRANSITIONS[wanted]
    async with operation({"reviewed_by": reviewer_id}) as scope:
        connection = scope.connection
        current = await connection.fetchrow(_REVIEW_STATE, feedback_id)
        if current is None:
            raise NotFoundError("feedback", feedback_id)
        if current["status"] not in allowed_from:
            raise _refusal(feedback_id, current, wanted)
        # The status read above is the condition: if another reviewer changed
        # it meanwhile, this UPDATE waits for them, then matches no row.
        record = await connection.fetchrow(
            """
            UPDATE skill_feedback
               SET status = $3, reviewed_by = $4, review_notes = coalesce($5, review_notes)
             WHERE id = $1 AND status = $2
            RETURNING {columns}
            """.format(columns=select_list(SkillFeedback)),
            feedback_id,
            current["status"],
            wanted.value,
            reviewer_id,
            texts["review_notes"],
        )
        if record is None:
            now = await connection.fetchrow(_REVIEW_STATE, feedback_id)
            if now is None:
                raise ConflictError(
                    f"feedback {feedback_id!r} was deleted while it was being reviewed"
                )
            raise _refusal(feedback_id, now, wanted)
    return Saved(row_from_record(SkillFeedback, record), redactions)


async def list_feedback(
    *,
    skill_id: str | None = None,
    feedback_type: str | FeedbackType | None = None,
    status: str | FeedbackStatus | None = None,
    source: str | FeedbackSource | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[SkillFeedback]:
    """The tenant's feedback matching every filter given, newest first."""
    where = Filter()
    for name, given, enum in (
        ("feedback_type", feedback_type, FeedbackType),
        ("status", status, FeedbackStatus),
        ("source", source, FeedbackSource),
    ):
        if given is not None:
            value = _value(given)
            if value not in {member.value for member in enum}:
                raise ValidationError.of(
                    name, f"must be one of {', '.join(m.value for m in enum)}"
                )
            where.equal(name, value)
    if skill_id is not None:
        check_id("skill_id", skill_id)
        where.equal("skill_id", skill_id)
    where.created_between(since, until)
    async with operation() as scope:
        return await fetch_page(
            scope.connection, SkillFeedback, where, limit=limit, cursor=cursor
        )


class _Writer(Protocol):
    def write(self, text: str, /) -> Any: ...


#: Lines of a page of :func:`training_example_page`, by default.
EXPORT_PAGE = 100
#: The most lines of one page.
EXPORT_PAGE_LIMIT = 1000

_EXPORT_SELECT = """
    SELECT f.id, f.created_at, f.example_input, f.expected_output, f.example_output,
           f.quality_score, s.id AS skill_id, s.slug, v.version
      FROM skill_feedback f
      JOIN skills s ON s.id = f.skill_id
      LEFT JOIN skill_versions v ON v.id = f.skill_version_id
     WHERE {where}
     ORDER BY f.created_at, f.id
"""


def _export_filter(skill_id: str | None) -> Filter:
    where = Filter().add("f.feedback_type = {}", FeedbackType.training_example.value)
    where.add(
        "f.status = ANY({})",
        [FeedbackStatus.accepted.value, FeedbackStatus.implemented.value],
    )
    if skill_id is not None:
        check_id("skill_id", skill_id)
        where.add("f.skill_id = {}", skill_id)
    return where


async def _check_skill(connection: asyncpg.Connection, skill_id: str | None) -> None:
    if skill_id is not None and not await connection.fetchval(
        "SELECT EXISTS (SELECT FROM skills WHERE id = $1)", skill_id
    ):
        raise NotFoundError("skill", skill_id)


def _export_line(record: asyncpg.Record) -> str:
    line = {
        "input": record["example_input"],
        "expected_output": record["expected_output"],
        "output": record["example_output"],
        "skill": record["slug"],
        "skill_id": record["skill_id"],
        "version": record["version"],
        "quality": record["quality_score"],
        "feedback_id": record["id"],
    }
    return json.dumps(line, ensure_ascii=False) + "\n"


async def export_training_examples(out: _Writer, *, skill_id: str | None = None) -> int:
    """Write accepted training examples as JSONL to ``out`` (whose ``write``
    may be async); return how many."""
    where = _export_filter(skill_id)
    count = 0
    async with operation() as scope:
        await _check_skill(scope.connection, skill_id)
        records = scope.connection.cursor(
            _EXPORT_SELECT.format(where=where.sql()), *where.arguments, prefetch=500
        )
        async for record in records:
            written = out.write(_export_line(record))
            if inspect.isawaitable(written):
                await written
            count += 1
    return count


@dataclass(frozen=True)
class ExportPage:
    """One page of the training-example export: its JSONL lines, and the
    key to read the next page after (None when this page was the last)."""

    lines: list[str]
    after: tuple[datetime.datetime, str] | None


async def training_example_page(
    *,
    skill_id: str | None = None,
    after: tuple[datetime.datetime, str] | None = None,
    limit: int = EXPORT_PAGE,
) -> ExportPage:
    """One page of the export (see the module's contract)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= EXPORT_PAGE_LIMIT:
        raise ValidationError.of("limit", f"must be an integer from 1 to {EXPORT_PAGE_LIMIT}")
    where = _export_filter(skill_id)
    if after is not None:
        where.add("(f.created_at, f.id) > ({}, {})", *after)
    where.arguments.append(limit + 1)
    async with operation() as scope:
        if after is None:
            await _check_skill(scope.connection, skill_id)
        records = await scope.connection.fetch(
            _EXPORT_SELECT.format(where=where.sql()) + f" LIMIT ${len(where.arguments)}",
            *where.arguments,
        )
    lines = [_export_line(record) for record in records[:limit]]
    last = records[limit - 1] if len(records) > limit else None
    return ExportPage(lines, None if last is None else (last["created_at"], last["id"]))


def _refusal(
    feedback_id: str, current: asyncpg.Record, wanted: FeedbackStatus
) -> InvalidTransitionError:
    """Why feedback in ``current`` state cannot become ``wanted``.

    Reviewing feedback that someone already reviewed (or implementing it
    twice) is an :class:`AlreadyReviewedError`, a conflict: that is what the
    loser of two racing reviewers gets, whichever read first.
    """
    status = current["status"]
    allowed_from = [s.value for s in TRANSITIONS[wanted]]
    already = (
        status == FeedbackStatus.implemented.value
        if wanted is FeedbackStatus.implemented
        else status != FeedbackStatus.pending.value
    )
    if already:
        return AlreadyReviewedError(
            "feedback", feedback_id, status, wanted.value, allowed_from,
            current["reviewed_by"], current["reviewed_at"],
        )
    return InvalidTransitionError("feedback", feedback_id, status, wanted.value, allowed_from)


def _value(value: object) -> object:
    """An enum member's value, anything else as it is."""
    return getattr(value, "value", value)

