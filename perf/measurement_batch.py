"""A batch of token measurements through the API against a raw COPY.

The API call validates every row, checks the skills are the tenant's,
prices each row from its tokens (the tenant's prices or genai-prices), and
inserts the batch in one statement under row-level security, with the
aggregate trigger. The baseline is asyncpg's COPY of the same rows (ids and
costs made beforehand, outside the timing) into the same table by the
owner, without row-level security (the owner is exempt) and with the same
statement trigger keeping the skills' aggregates (COPY fires it too). Throughput of each, rounds alternating.
Target: the API at least 0.7x the COPY throughput.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from everyskill import usage
from everyskill.tenancy import tenant_scope
from perf.context import Context
from perf.data import MODELS, PROVIDERS
from perf.harness import Figure, Target, p50

COPIED_COLUMNS = (
    "id",
    "tenant_id",
    "skill_id",
    "model_name",
    "model_provider",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "estimated_cost_microcents",
    "latency_ms",
    "source",
)


def batch(skills: list[str], size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` measurements as an application sends them: tokens, no cost."""
    return [
        {
            "skill_id": skills[(seed + number) % len(skills)],
            "model_name": MODELS[number % len(MODELS)],
            "model_provider": PROVIDERS[MODELS[number % len(MODELS)]],
            "input_tokens": 1000 + (seed * 31 + number) % 4000,
            "output_tokens": 200 + number % 700,
            "latency_ms": 400 + number % 3000,
        }
        for number in range(size)
    ]


async def measure(context: Context) -> list[Figure]:
    tenant = context.catalogue.tenants[2]
    skills = tenant.skill_ids
    size = context.scale.batch_rows
    owner = context.owner

    def copied(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (
                str(uuid.uuid4()),
                tenant.tenant_id,
                row["skill_id"],
                row["model_name"],
                row["model_provider"],
                row["input_tokens"],
                row["output_tokens"],
                row["input_tokens"] + row["output_tokens"],
                row["input_tokens"] * 3 + row["output_tokens"] * 15,
                row["latency_ms"],
                "hook",
            )
            for row in rows
        ]

    async def copy_round(seed: int) -> float:
        records = copied(batch(skills, size, seed))
        started = time.perf_counter()
        await owner.copy_records_to_table(
            "token_measurements", records=records, columns=COPIED_COLUMNS
        )
        return size / (time.perf_counter() - started)

    async def api_round(seed: int) -> float:
        rows = batch(skills, size, seed)
        started = time.perf_counter()
        async with tenant_scope(tenant.tenant_id):
            saved = await usage.record_measurements(rows)
        elapsed = time.perf_counter() - started
        assert len(saved.ids) == size
        return size / elapsed

    await copy_round(0)
    await api_round(0)
    raw, api = [], []
    for seed in range(1, context.scale.batch_rounds + 1):
        raw.append(await copy_round(seed))
        api.append(await api_round(seed))
    raw_rate, api_rate = p50(raw), p50(api)
    return [
        Figure(
            key="measurement_batch",
            what=f"a batch of {size:,} token measurements through the API",
            measured=api_rate,
            unit="rows/s",
            baseline_what=(
                "raw asyncpg COPY of the same rows into the same table by the owner"
                " (no RLS; the table's aggregate trigger fires, as for the API)"
            ),
            baseline=raw_rate,
            ratio=api_rate / raw_rate,
            ratio_meaning="API throughput / COPY throughput",
            target=Target("at_least", 0.7),
            details={
                "rows_per_batch": size,
                "rounds": len(api),
                "api_ms_per_batch": 1000 * size / api_rate,
                "copy_ms_per_batch": 1000 * size / raw_rate,
                "api_rows_per_s": api,
                "copy_rows_per_s": raw,
            },
        )
    ]
