"""One feedback through the API against a raw INSERT of the same row.

The API call is what an application makes per request: a tenant scope (one
transaction as the application role), validation, redaction, the INSERT
under row-level security with the aggregate trigger, the row returned. The
baseline is the same 15-column INSERT by the owner over one asyncpg
connection, with the table's triggers off and no row-level security (the
owner is not subject to it). Throughput of each, rounds alternating.
Target: the API at least 0.5x the raw throughput.
"""

from __future__ import annotations

import time

from everyskill import feedback
from everyskill.tenancy import tenant_scope
from perf.context import Context
from perf.harness import Figure, Target, p50

COMMENT = "Worked well on the quarterly report; the summary matched the source."

RAW_INSERT = """
INSERT INTO skill_feedback (
    tenant_id, skill_id, skill_version_id, user_id, usage_event_id,
    feedback_type, sentiment, comment, suggested_content, suggested_diff,
    example_input, example_output, expected_output, quality_score, source)
VALUES ($1, $2, NULL, $3, NULL, 'thumbs_up', 1, $4, NULL, NULL, NULL, NULL, NULL, NULL, 'web')
"""


async def measure(context: Context) -> list[Figure]:
    tenant = context.catalogue.tenants[0]
    raw_skill, api_skill = tenant.skill_ids[1], tenant.skill_ids[2]
    user = tenant.user_ids[1]
    rows = context.scale.single_rows
    owner = context.owner

    async def raw_round() -> float:
        await owner.execute("ALTER TABLE skill_feedback DISABLE TRIGGER USER")
        try:
            started = time.perf_counter()
            for _ in range(rows):
                await owner.execute(RAW_INSERT, tenant.tenant_id, raw_skill, user, COMMENT)
            return rows / (time.perf_counter() - started)
        finally:
            await owner.execute("ALTER TABLE skill_feedback ENABLE TRIGGER USER")

    async def api_round() -> float:
        started = time.perf_counter()
        for _ in range(rows):
            async with tenant_scope(tenant.tenant_id):
                await feedback.record_feedback(
                    skill_id=api_skill, feedback_type="thumbs_up", user_id=user, comment=COMMENT
                )
        return rows / (time.perf_counter() - started)

    # A first round of each warms the caches and prepared statements.
    await raw_round()
    await api_round()
    raw, api = [], []
    for _ in range(context.scale.single_rounds):
        raw.append(await raw_round())
        api.append(await api_round())
    stored = await owner.fetchval("SELECT total_feedback FROM skills WHERE id = $1", api_skill)
    counted = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE skill_id = $1 AND status <> 'dismissed'",
        api_skill,
    )
    raw_rate, api_rate = p50(raw), p50(api)
    return [
        Figure(
            key="single_feedback",
            what="one feedback through the API (scope, validation, redaction, RLS, aggregates)",
            measured=api_rate,
            unit="rows/s",
            baseline_what="raw asyncpg INSERT of the same row as the owner, no RLS or triggers",
            baseline=raw_rate,
            ratio=api_rate / raw_rate,
            ratio_meaning="API throughput / raw throughput",
            target=Target("at_least", 0.5),
            details={
                "rows_per_round": rows,
                "rounds": len(api),
                "api_rows_per_s": api,
                "raw_rows_per_s": raw,
                "api_ms_per_row": 1000 / api_rate,
                "raw_ms_per_row": 1000 / raw_rate,
            },
            checks={"aggregates equal a recount": stored == counted},
        )
    ]
