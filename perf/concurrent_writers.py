"""Many writers of feedback on one skill against one writer.

Every feedback on a skill updates that skill's aggregate row, so writers on
one skill queue for its row lock: concurrency cannot multiply throughput
there, and must not lose a count. The same number of feedback items is
written by one writer, then by ``writers`` concurrent writers (each its own
tenant scope, so its own connection and transaction per item), on two
fresh skills. Reported: both throughputs and their ratio, and whether the
aggregates equal a recount afterwards (they must).
"""

from __future__ import annotations

import asyncio
import time

from everyskill import feedback
from everyskill.tenancy import tenant_scope
from perf.context import Context
from perf.harness import Figure

RECOUNT = """
SELECT s.total_feedback = count(f.id)
       AND s.feedback_thumbs_up = count(f.id) FILTER (WHERE f.feedback_type = 'thumbs_up')
       AND s.feedback_thumbs_down = count(f.id) FILTER (WHERE f.feedback_type = 'thumbs_down')
       AND s.positive_feedback_pct IS NOT DISTINCT FROM round(
             100.0 * count(f.id) FILTER (WHERE f.feedback_type = 'thumbs_up')
             / NULLIF(count(f.id) FILTER (WHERE f.feedback_type IN ('thumbs_up', 'thumbs_down')), 0)
           )::int
  FROM skills s LEFT JOIN skill_feedback f ON f.skill_id = s.id AND f.status <> 'dismissed'
 WHERE s.id = $1
 GROUP BY s.id
"""


async def _write(tenant_id: str, skill_id: str, count: int, seed: int) -> None:
    for number in range(count):
        kind = "thumbs_up" if (number + seed) % 3 else "thumbs_down"
        async with tenant_scope(tenant_id):
            await feedback.record_feedback(skill_id=skill_id, feedback_type=kind)


async def measure(context: Context) -> list[Figure]:
    tenant = context.catalogue.tenants[1]
    alone_skill, shared_skill = tenant.skill_ids[3], tenant.skill_ids[4]
    writers, total = context.scale.writers, context.scale.writer_rows
    each = total // writers

    started = time.perf_counter()
    await _write(tenant.tenant_id, alone_skill, each * writers, 0)
    one = each * writers / (time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(_write(tenant.tenant_id, shared_skill, each, seed) for seed in range(writers)))
    many = each * writers / (time.perf_counter() - started)

    exact = [bool(await context.owner.fetchval(RECOUNT, skill)) for skill in (alone_skill, shared_skill)]
    return [
        Figure(
            key="concurrent_writers",
            what=f"{writers} concurrent writers of feedback on one skill",
            measured=many,
            unit="rows/s",
            baseline_what="one writer on one skill",
            baseline=one,
            ratio=many / one,
            ratio_meaning=f"throughput of {writers} writers / of one",
            checks={
                "aggregates equal a recount after one writer": exact[0],
                f"aggregates equal a recount after {writers} writers": exact[1],
            },
            details={"rows_each_way": each * writers},
        )
    ]
