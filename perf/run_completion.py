"""Completing a benchmark run against the same SQL over its results, run raw.

Completing a run (``benchmarks.complete_run`` in a tenant scope) locks the
run, checks its state, and updates it; the life-cycle trigger computes the
best and the cheapest model from the results in one statement
(``benchmark_run_picks``). The baseline is that statement itself, the body
of ``benchmark_run_picks`` as stored in the database, run raw by the owner
over the same run's results. Each run is timed once through the API (a run
completes once) after the median of three raw runs over it.
Target: the API at least 0.8x the speed of the raw statement. The picks the
completion stored must equal what the raw statement returned.
"""

from __future__ import annotations

import re
import time

from everyskill import benchmarks
from everyskill.tenancy import tenant_scope
from perf.context import Context
from perf.data import add_running_run
from perf.harness import Figure, Target, p50


async def measure(context: Context) -> list[Figure]:
    owner = context.owner
    tenant = context.catalogue.tenants[0]
    scale = context.scale
    results = scale.results_per_model * scale.run_models
    body = await owner.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'benchmark_run_picks'"
    )
    raw_sql = re.sub(r"\brun_id\b", "$1", body)

    runs = [
        await add_running_run(owner, tenant, scale.run_models, scale.results_per_model)
        for _ in range(scale.runs + 1)
    ]
    await owner.execute("VACUUM ANALYZE benchmark_results")

    raw_times, api_times, same_picks = [], [], []
    for number, run_id in enumerate(runs):
        each = []
        for _ in range(3):
            started = time.perf_counter()
            picks = await owner.fetchrow(raw_sql, run_id)
            each.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with tenant_scope(tenant.tenant_id):
            run = await benchmarks.complete_run(run_id)
        elapsed = time.perf_counter() - started
        assert picks is not None
        same_picks.append(
            (run.best_model, run.best_quality_score, run.cheapest_model, run.cheapest_cost_microcents)
            == tuple(picks)
        )
        if number > 0:  # the first run warms the caches
            raw_times.append(p50(each))
            api_times.append(elapsed)

    raw, api = p50(raw_times), p50(api_times)
    return [
        Figure(
            key="run_completion",
            what=f"completing a benchmark run with {results:,} results",
            measured=api * 1000,
            unit="ms (p50)",
            baseline_what="the same SQL over the results, run raw",
            baseline=raw * 1000,
            ratio=raw / api,
            ratio_meaning="speed of the API / speed of the raw SQL",
            target=Target("at_least", 0.8),
            checks={"the stored picks equal the raw SQL's": all(same_picks)},
            details={"runs": len(api_times), "api_ms": [t * 1000 for t in api_times]},
        )
    ]
