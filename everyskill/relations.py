"""The relations between rows, as async helpers.

Every helper runs in the current tenant scope, so a relation never reaches
another tenant's rows.

Contract
--------
- "Many" relations return a :class:`~everyskill.pagination.Page`, newest
  first (``limit``, ``cursor`` as in :func:`~everyskill.pagination.fetch_page`):

  ======================  ==================================================
  a skill's               :func:`feedback_of_skill`,
                          :func:`measurements_of_skill`,
                          :func:`benchmark_runs_of_skill`
  a benchmark run's       :func:`results_of_run`
  a user's                :func:`feedback_by_user`,
                          :func:`feedback_reviewed_by`,
                          :func:`measurements_of_user`,
                          :func:`benchmark_runs_triggered_by`
  the tenant's            :func:`tenant_feedback`, :func:`tenant_measurements`,
                          :func:`tenant_benchmark_runs`,
                          :func:`tenant_benchmark_results`
  ======================  ==================================================

  The first page of a relation of a skill, run or user raises
  :class:`~everyskill.errors.NotFoundError` when that parent is not a row
  of the tenant (rather than an empty page that hides a wrong id).
- "One" relations load in batches: :func:`parents` takes rows and one of
  their foreign-key columns and returns the referenced rows by id, in one
  query however many rows there are. :func:`feedback_with_relations` uses it
  to give each feedback its skill, version, user and reviewer in four
  queries in all, not four per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from piccolo.columns import ForeignKey
from piccolo.table import Table

from everyskill.columns import select_list
from everyskill.errors import NotFoundError, ValidationError
from everyskill.pagination import DEFAULT_LIMIT, Filter, Page, fetch_page
from everyskill.rows import RowT, row_from_record
from everyskill.tenancy import operation
from tables import (
    BenchmarkResult,
    BenchmarkRun,
    Skill,
    SkillFeedback,
    SkillVersion,
    TokenMeasurement,
    User,
)

__all__ = [
    "FeedbackWithRelations",
    "benchmark_runs_of_skill",
    "benchmark_runs_triggered_by",
    "feedback_by_user",
    "feedback_of_skill",
    "feedback_reviewed_by",
    "feedback_with_relations",
    "measurements_of_skill",
    "measurements_of_user",
    "parents",
    "results_of_run",
    "tenant_benchmark_results",
    "tenant_benchmark_runs",
    "tenant_feedback",
    "tenant_measurements",
]


async def _children(
    table: type[RowT],
    column: str,
    parent: type[Table] | None,
    parent_id: str | None,
    limit: int,
    cursor: str | None,
) -> Page[RowT]:
    where = Filter()
    if parent is not None:
        if not isinstance(parent_id, str) or not parent_id.strip():
            raise ValidationError.of(column, "must be a non-empty id string")
        where.equal(column, parent_id)
    async with operation() as scope:
        if parent is not None and cursor is None:
            exists = await scope.connection.fetchval(
                f"SELECT EXISTS (SELECT FROM {parent._meta.tablename} WHERE id = $1)",
                parent_id,
            )
            if not exists:
                kind = parent._meta.tablename.removesuffix("s").replace("_", " ")
                raise NotFoundError(kind, parent_id, column)
        return await fetch_page(scope.connection, table, where, limit=limit, cursor=cursor)


# -- a skill's rows ------------------------------------------------------------


async def feedback_of_skill(
    skill_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[SkillFeedback]:
    return await _children(SkillFeedback, "skill_id", Skill, skill_id, limit, cursor)


async def measurements_of_skill(
    skill_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[TokenMeasurement]:
    return await _children(TokenMeasurement, "skill_id", Skill, skill_id, limit, cursor)


async def benchmark_runs_of_skill(
    skill_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[BenchmarkRun]:
    return await _children(BenchmarkRun, "skill_id", Skill, skill_id, limit, cursor)


# -- a run's results -----------------------------------------------------------


async def results_of_run(
    run_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[BenchmarkResult]:
    return await _children(
        BenchmarkResult, "benchmark_run_id", BenchmarkRun, run_id, limit, cursor
    )


# -- a user's rows -------------------------------------------------------------


async def feedback_by_user(
    user_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[SkillFeedback]:
    return await _children(SkillFeedback, "user_id", User, user_id, limit, cursor)


async def feedback_reviewed_by(
    user_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[SkillFeedback]:
    return await _children(SkillFeedback, "reviewed_by", User, user_id, limit, cursor)


async def measurements_of_user(
    user_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[TokenMeasurement]:
    return await _children(TokenMeasurement, "user_id", User, user_id, limit, cursor)


async def benchmark_runs_triggered_by(
    user_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[BenchmarkRun]:
    return await _children(BenchmarkRun, "triggered_by", User, user_id, limit, cursor)


# -- the tenant's rows ---------------------------------------------------------


async def tenant_feedback(
    *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[SkillFeedback]:
    return await _children(SkillFeedback, "tenant_id", None, None, limit, cursor)


async def tenant_measurements(
    *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[TokenMeasurement]:
    return await _children(TokenMeasurement, "tenant_id", None, None, limit, cursor)


async def tenant_benchmark_runs(
    *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[BenchmarkRun]:
    return await _children(BenchmarkRun, "tenant_id", None, None, limit, cursor)


async def tenant_benchmark_results(
    *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[BenchmarkResult]:
    return await _children(BenchmarkResult, "tenant_id", None, None, limit, cursor)


# -- "one" relations, in batches -------------------------------------------------


async def parents(rows: Sequence[Table], column: ForeignKey[Any]) -> dict[str, Table]:
    """The rows ``column`` of ``rows`` references, by id, in one query."""
    target: type[Table] = column._foreign_key_meta.resolved_references
    name = column._meta.name
    ids = list(dict.fromkeys(v for row in rows if (v := getattr(row, name)) is not None))
    if not ids:
        return {}
    async with operation() as scope:
        records = await scope.connection.fetch(
            f"SELECT {select_list(target)} FROM {target._meta.tablename}"
            " WHERE id = ANY($1::text[])",
            ids,
        )
    return {record["id"]: row_from_record(target, record) for record in records}


@dataclass(frozen=True)
class FeedbackWithRelations:
    """A feedback row with the rows it references (None where it has none)."""

    feedback: SkillFeedback
    skill: Skill
    skill_version: SkillVersion | None
    user: User | None
    reviewer: User | None


async def feedback_with_relations(
    feedback: Sequence[SkillFeedback],
) -> list[FeedbackWithRelations]:
    """Each feedback with its skill, version, user and reviewer: four queries."""
    skills = await parents(feedback, SkillFeedback.skill_id)
    versions = await parents(feedback, SkillFeedback.skill_version_id)
    users = await parents(feedback, SkillFeedback.user_id)
    reviewers = await parents(feedback, SkillFeedback.reviewed_by)
    missing = [row.skill_id for row in feedback if row.skill_id not in skills]
    if missing:
        # Rows read in another scope, or whose skill was deleted since.
        raise NotFoundError("skill", missing[0], "skill_id")
    return [
        FeedbackWithRelations(
            feedback=row,
            skill=skills[row.skill_id],  # type: ignore[arg-type]
            skill_version=versions.get(row.skill_version_id),  # type: ignore[arg-type]
            user=users.get(row.user_id),  # type: ignore[arg-type]
            reviewer=reviewers.get(row.reviewed_by),  # type: ignore[arg-type]
        )
        for row in feedback
    ]
