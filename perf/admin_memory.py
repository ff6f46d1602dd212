"""The memory of ``main.py`` serving the admin under load.

Clients of the admin (one login, a connection each) ask for what staff browse, as fast
as they are answered, for a while: lists of every table (the first pages
and pages deep into the token measurements), filtered lists, counts, a
row's page and the rows that reference it. The resident memory of the
``main.py`` process is sampled meanwhile (:class:`perf.served.RssWatch`);
the figure is its peak, against its memory when it had just started.
Target: a peak under 300 MB.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from perf.admin_pages import pages
from perf.context import Context
from perf.harness import Figure, Target
from perf.served import RssWatch, Served, staff_client

TABLES = (
    "token_measurements",
    "skill_feedback",
    "skills",
    "benchmark_runs",
    "benchmark_results",
    "tenants",
    "users",
)


async def _browse(client: httpx.AsyncClient, context: Context, until: float, seed: int) -> int:
    requests = 0
    skill = context.catalogue.tenants[0].skill_ids[0]
    lists = list(pages(context).values())
    while time.monotonic() < until:
        step = (seed + requests) % 6
        if step == 0:
            table = TABLES[(seed + requests) % len(TABLES)]
            response = await client.get(
                f"/api/tables/{table}/", params={"__readable": "true", "__page_size": "15"}
            )
        elif step == 1:
            page = 1 + (seed * 7 + requests) % 200
            response = await client.get(
                "/api/tables/token_measurements/",
                params={"__readable": "true", "__page_size": "100", "__page": str(page),
                        "__order": "-created_at,-id"},
            )
        elif step == 2:
            params = lists[requests % len(lists)]
            response = await client.get(
                "/api/tables/token_measurements/",
                params={**params, "__readable": "true", "__page_size": "50"},
            )
        elif step == 3:
            params = {k: v for k, v in lists[requests % len(lists)].items() if k != "__order"}
            response = await client.get("/api/tables/token_measurements/count/", params=params)
        elif step == 4:
            response = await client.get(f"/api/tables/skills/{skill}/")
        else:
            response = await client.get(
                "/api/tables/skill_feedback/",
                params={"skill_id": skill, "__readable": "true", "__page_size": "15"},
            )
        response.raise_for_status()
        requests += 1
    return requests


async def measure(served: Served, context: Context, watch: RssWatch, started_rss: int) -> Figure:
    seconds, clients = context.scale.load_seconds, context.scale.load_clients
    until = time.monotonic() + seconds
    # One login shared by every client (the login is rate-limited per
    # address); each client is a task with its own connection.
    async with staff_client(served.base_url, connections=clients) as client:
        counts = await asyncio.gather(
            *(_browse(client, context, until, seed) for seed in range(clients))
        )
    peak_mb = watch.peak / 2**20
    start_mb = started_rss / 2**20
    return Figure(
        key="admin_memory",
        what=f"peak RSS of main.py serving the admin to {clients} clients for {seconds:g} s",
        measured=peak_mb,
        unit="MB",
        baseline_what="its RSS when it had just started",
        baseline=start_mb,
        ratio=peak_mb / start_mb,
        ratio_meaning="peak / at start",
        target=Target("at_most", 300, on_value=True),
        details={"requests": sum(counts), "requests_per_s": sum(counts) / seconds},
    )
