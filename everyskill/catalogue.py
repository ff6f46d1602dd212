"""Reading the catalogue: a skill and its live aggregates.

Contract
--------
- :func:`get_skill` returns one skill of the current tenant, with its
  maintained aggregates, or raises :class:`~everyskill.errors.NotFoundError`.
- :func:`skill_aggregates` returns only the aggregates, as
  :class:`SkillAggregates`. They are columns of the skill's row, kept
  exact by the database on every write of feedback and measurements, so
  the read is one indexed row whatever the number of rows behind it.
- Both run in the current tenant scope (another tenant's skill is not
  found) and check the id first (:func:`~everyskill.errors.check_id`).
"""

from __future__ import annotations

from dataclasses import dataclass

from everyskill.errors import NotFoundError, check_id
from everyskill.rows import row_from_record
from everyskill.tenancy import operation
from tables import Skill

__all__ = ["SkillAggregates", "get_skill", "skill_aggregates"]


@dataclass(frozen=True)
class SkillAggregates:
    """A skill's aggregates, dismissed feedback aside.

    ``positive_feedback_pct`` is thumbs up out of thumbs up and down (None
    with no thumbs); ``avg_token_cost_microcents`` is the average cost of
    the measurements that have one (None without any).
    """

    skill_id: str
    total_feedback: int
    feedback_thumbs_up: int
    feedback_thumbs_down: int
    positive_feedback_pct: int | None
    costed_measurements: int
    measured_cost_microcents: int
    avg_token_cost_microcents: int | None


_AGGREGATES = """
SELECT id AS skill_id, total_feedback, feedback_thumbs_up, feedback_thumbs_down,
       positive_feedback_pct, costed_measurements, measured_cost_microcents,
       avg_token_cost_microcents
  FROM skills WHERE id = $1
"""


async def get_skill(skill_id: str) -> Skill:
    """One skill of the tenant, aggregates included, or NotFoundError."""
    check_id("skill_id", skill_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow("SELECT * FROM skills WHERE id = $1", skill_id)
    if record is None:
        raise NotFoundError("skill", skill_id)
    return row_from_record(Skill, record)


async def skill_aggregates(skill_id: str) -> SkillAggregates:
    """The skill's aggregates, or NotFoundError."""
    check_id("skill_id", skill_id)
    async with operation() as scope:
        record = await scope.connection.fetchrow(_AGGREGATES, skill_id)
    if record is None:
        raise NotFoundError("skill", skill_id)
    return SkillAggregates(**record)
