"""Reviewing feedback in the admin.

A reviewer filters ``skill_feedback`` to pending items, opens one, reads it,
and in its edit form sets the status to ``accepted`` or ``dismissed`` with
review notes, then saves. :func:`review_hooks` are the ``pre_patch`` hooks
that make that save a review.

Contract
--------
- A save that changes the status is a review: it must follow the workflow
  (pending becomes accepted or dismissed, accepted becomes implemented;
  :data:`everyskill.feedback.TRANSITIONS`), otherwise HTTP 422 says which
  statuses the item can take. The review is stamped: ``reviewed_by_admin``
  is the logged-in admin's username, ``reviewed_by`` (a tenant's user) is
  cleared, and PostgreSQL sets ``reviewed_at`` to the time of the save.
- A save that keeps the status leaves the stamps as they are; a stamp
  changed by hand is refused with HTTP 422. Feedback added in the admin
  starts pending and unreviewed.
- Two reviewers saving the same pending item: the first wins; the second
  save is refused, by this hook when the first has committed, otherwise by
  PostgreSQL (the status it sets is no longer a change, so the staff stamp
  may not change either), with who reviewed it. Two saves by the same login
  both pass; the later notes win.
- Dismissed feedback stops counting in its skill's aggregates, which
  PostgreSQL keeps exact (see the migration "reviews in the admin").
- The feedback's text and the review notes are redacted like everything the
  query API writes (:func:`everyskill.admin.guards.redacting`).
"""

from __future__ import annotations

from typing import Any

from piccolo.columns import Column
from piccolo_api.crud.hooks import Hook, HookType
from starlette.requests import Request

from everyskill.admin.guards import field_error, redacting, same_value, stored_row
from everyskill.feedback import FEEDBACK_TEXT_FIELDS, TRANSITIONS
from tables import FeedbackStatus, SkillFeedback

__all__ = ["REVIEW_STAMPS", "review_hooks"]

#: The columns a review stamps.
REVIEW_STAMPS = (
    SkillFeedback.reviewed_by,
    SkillFeedback.reviewed_by_admin,
    SkillFeedback.reviewed_at,
)
_STAMP_NAMES = {column._meta.name for column in REVIEW_STAMPS}
#: The statuses a form loaded while the feedback was pending can send.
_ASKED_OF_PENDING = frozenset(
    {FeedbackStatus.pending.value}
    | {wanted.value for wanted, sources in TRANSITIONS.items() if FeedbackStatus.pending in sources}
)


async def review(row_id: Any, values: dict[Column, Any], request: Request) -> dict[Column, Any]:
    """The ``pre_patch`` hook that turns a change of status into a stamped review."""
    by_name = {column._meta.name: value for column, value in values.items()}
    stored = await stored_row(
        SkillFeedback, row_id, [SkillFeedback.status, *REVIEW_STAMPS]
    )
    status = by_name.get("status", stored["status"])
    kept = {
        column: value for column, value in values.items() if column._meta.name not in _STAMP_NAMES
    }
    if status != stored["status"]:
        try:
            allowed_from = TRANSITIONS[FeedbackStatus(status)]
        except (ValueError, KeyError):
            allowed_from = ()
        if stored["status"] not in allowed_from:
            raise field_error("status", _refusal(stored, status))
        kept[SkillFeedback.reviewed_by_admin] = request.user.user.username
        kept[SkillFeedback.reviewed_by] = None
        return kept  # reviewed_at: PostgreSQL stamps the time of the save
    for name in sorted(_STAMP_NAMES & by_name.keys()):
        if not same_value(by_name[name], stored[name]):
            raise field_error(
                name,
                f"is stamped by the review ({_last_review(stored)}): reload the feedback,"
                " and change its status to review it",
            )
    return kept


async def new_feedback(row: SkillFeedback) -> SkillFeedback:
    """The ``pre_save`` hook: feedback added in the admin starts pending, unreviewed."""
    if row.status is None:  # not sent: the default
        row.status = FeedbackStatus.pending.value
    if row.status != FeedbackStatus.pending.value:
        raise field_error("status", "new feedback starts pending: save it, then review it")
    for name in sorted(_STAMP_NAMES):
        if getattr(row, name) is not None:
            raise field_error(name, "is stamped by the review: leave it empty")
    return row


def _refusal(stored: dict[str, Any], requested: str) -> str:
    """Why the stored feedback cannot take the status a form asked for."""
    current = stored["status"]
    if requested in _ASKED_OF_PENDING and current != FeedbackStatus.pending.value:
        # The form was loaded while the item was pending: someone reviewed
        # it since.
        return f"the feedback was reviewed since the form was loaded ({_last_review(stored)}): reload it"
    can_become = [
        wanted.value for wanted, sources in TRANSITIONS.items() if current in sources
    ]
    if not can_become:
        return f"the feedback is {current}, a final status: it cannot be reviewed again"
    return f"the feedback is {current}: it can only become {' or '.join(can_become)}"


def _last_review(stored: dict[str, Any]) -> str:
    who = stored["reviewed_by_admin"] or (
        f"user {stored['reviewed_by']}" if stored["reviewed_by"] else "nobody recorded"
    )
    when = stored["reviewed_at"].isoformat(timespec="seconds") if stored["reviewed_at"] else "an unknown time"
    return f"{stored['status']} by {who} at {when}"


def review_hooks() -> list[Hook]:
    """The ``pre_patch`` and ``pre_save`` hooks of ``skill_feedback`` in the admin."""
    texts = [
        getattr(SkillFeedback, name) for name in (*FEEDBACK_TEXT_FIELDS, "review_notes")
    ]
    return [
        *redacting(*texts),
        Hook(hook_type=HookType.pre_save, callable=new_feedback),
        Hook(hook_type=HookType.pre_patch, callable=review),
    ]
