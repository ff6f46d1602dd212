"""Reading a skill's aggregates with a thousand against a million feedback rows.

The aggregates are columns of the skill's row that the database keeps
exact on every write, so reading them must not depend on how much feedback
lies behind them. Two skills of one tenant: one with the small number of
feedback rows, one with the big number. The read is the API's
(``catalogue.skill_aggregates`` in a tenant scope), timed alternately on
each skill. Ratio: p50 with the big number / p50 with the small one.
Target: at most 1.5. The values read are checked against a recount.
"""

from __future__ import annotations

import time

from everyskill import catalogue
from everyskill.tenancy import tenant_scope
from perf.context import Context
from perf.data import add_feedback
from perf.harness import Figure, Target, p50

RECOUNT = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE feedback_type = 'thumbs_up') AS up,
       count(*) FILTER (WHERE feedback_type = 'thumbs_down') AS down
  FROM skill_feedback WHERE skill_id = $1 AND status <> 'dismissed'
"""


async def measure(context: Context) -> list[Figure]:
    tenant = context.catalogue.tenants[3]
    small_skill, big_skill = tenant.skill_ids[5], tenant.skill_ids[6]
    small, big = context.scale.small_feedback, context.scale.big_feedback
    await add_feedback(context.owner, tenant.tenant_id, small_skill, small)
    await add_feedback(context.owner, tenant.tenant_id, big_skill, big)
    await context.owner.execute("VACUUM ANALYZE skill_feedback")
    await context.owner.execute("VACUUM ANALYZE skills")

    async def read(skill_id: str) -> tuple[float, catalogue.SkillAggregates]:
        started = time.perf_counter()
        async with tenant_scope(tenant.tenant_id):
            aggregates = await catalogue.skill_aggregates(skill_id)
        return time.perf_counter() - started, aggregates

    timings: dict[str, list[float]] = {small_skill: [], big_skill: []}
    read_values = {}
    for _ in range(20):  # warm-up
        await read(small_skill)
        await read(big_skill)
    for _ in range(context.scale.aggregate_reads):
        for skill in (small_skill, big_skill):
            elapsed, read_values[skill] = await read(skill)
            timings[skill].append(elapsed)

    checks = {}
    for skill, label in ((small_skill, "small"), (big_skill, "big")):
        recount = await context.owner.fetchrow(RECOUNT, skill)
        assert recount is not None
        values = read_values[skill]
        checks[f"the {label} skill's aggregates equal a recount"] = (
            values.total_feedback,
            values.feedback_thumbs_up,
            values.feedback_thumbs_down,
        ) == (recount["total"], recount["up"], recount["down"])

    small_p50, big_p50 = p50(timings[small_skill]), p50(timings[big_skill])
    return [
        Figure(
            key="aggregate_read",
            what=f"reading a skill's aggregates with {big:,} feedback rows",
            measured=big_p50 * 1000,
            unit="ms (p50)",
            baseline_what=f"the same read with {small:,} feedback rows",
            baseline=small_p50 * 1000,
            ratio=big_p50 / small_p50,
            ratio_meaning="p50 with the big number / p50 with the small number",
            target=Target("at_most", 1.5),
            checks=checks,
            details={"reads_each": len(timings[big_skill])},
        )
    ]
