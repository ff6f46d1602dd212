"""The admin's list of token measurements, at a thousand and a million rows.

A page of a list in Piccolo Admin is two requests, made one after the
other by its front end: the count of the matching rows (for the pager),
then the page of rows with the names of the rows they point at
(``__readable=true``), newest first. Both are timed together, as a page
load, over HTTP against ``main.py`` (a page load is the two requests one
after the other), for two pages: the first page unfiltered, and the first
page filtered by tenant and model (the model matched as the admin's filter
form matches text by default, "contains").

:func:`page_loads` is measured once with the small number of measurements
in the table and once with the big number. Ratio: p50 with the big number
/ p50 with the small one. Target: at most 2 for each page.
"""

from __future__ import annotations

import time
from typing import Any, cast

import httpx

from perf.context import Context
from perf.data import MODELS
from perf.harness import Figure, Target, p50

TABLE = "token_measurements"


def pages(context: Context) -> dict[str, dict[str, str]]:
    """The pages measured, by name: their query parameters."""
    return {
        "first page": {"__order": "-created_at,-id"},
        "filtered": {
            "__order": "-created_at,-id",
            "tenant_id": context.catalogue.tenants[1].tenant_id,
            "model_name": MODELS[1],
            "model_name__match": "contains",
        },
    }


async def load_page(client: httpx.AsyncClient, params: dict[str, str]) -> tuple[float, float, int]:
    """One page load as the front end makes it: (count seconds, rows seconds, count)."""
    count_params = {k: v for k, v in params.items() if k != "__order"}
    started = time.perf_counter()
    counted = await client.get(f"/api/tables/{TABLE}/count/", params=count_params)
    counted.raise_for_status()
    middle = time.perf_counter()
    listed = await client.get(
        f"/api/tables/{TABLE}/",
        params={**params, "__readable": "true", "__page_size": "15", "__page": "1"},
    )
    listed.raise_for_status()
    assert listed.json()["rows"], f"no rows for {params}"
    return middle - started, time.perf_counter() - middle, int(counted.json()["count"])


async def page_loads(
    client: httpx.AsyncClient, context: Context, loads: int
) -> dict[str, dict[str, Any]]:
    """p50 of each page's load, its two requests, and the count shown."""
    measured: dict[str, dict[str, Any]] = {}
    for name, params in pages(context).items():
        # Warm-up: caches, prepared statements, the server's and main.py's
        # first requests; none of it is timed.
        for _ in range(max(20, loads // 5)):
            await load_page(client, params)
        counts, rows, totals = [], [], []
        for _ in range(loads):
            count_time, rows_time, shown = await load_page(client, params)
            counts.append(count_time)
            rows.append(rows_time)
            totals.append(count_time + rows_time)
        measured[name] = {
            "rows_plan": await rows_plan(context, params),
            "page_ms": p50(totals) * 1000,
            "count_ms": p50(counts) * 1000,
            "rows_ms": p50(rows) * 1000,
            "count_shown": shown,
        }
    return measured


async def rows_plan(context: Context, params: dict[str, str]) -> list[str]:
    """EXPLAIN ANALYZE of the query the admin runs for a page's rows, built
    by Piccolo API as the admin builds it: what to read when a page is slow."""
    from piccolo.columns import ForeignKey
    from piccolo.query.methods.select import Select
    from piccolo.querystring import QueryString
    from piccolo_api.crud.endpoints import PiccoloCRUD
    from starlette.datastructures import QueryParams

    from tables import TokenMeasurement

    crud = PiccoloCRUD(table=TokenMeasurement, read_only=True)
    split = crud._split_params(crud._parse_params(QueryParams(params)))
    columns = TokenMeasurement._meta.columns
    readable = [
        TokenMeasurement._get_related_readable(column)
        for column in columns
        if isinstance(column, ForeignKey)
    ]
    query = cast(Select[Any], crud._apply_filters(TokenMeasurement.select(*columns, *readable), split))
    for order in split.order_by or []:
        query = query.order_by(order.column, ascending=order.ascending)
    sql, arguments = QueryString("EXPLAIN ANALYZE {}", query.limit(15).querystrings[0]).compile_string()
    return [row[0] for row in await context.owner.fetch(sql, *arguments)]


def figures(
    small: dict[str, dict[str, Any]], big: dict[str, dict[str, Any]], sizes: tuple[int, int]
) -> list[Figure]:
    made = []
    for name in small:
        made.append(
            Figure(
                key=f"admin_list_{name.replace(' ', '_')}",
                what=f"the admin's token measurements, {name}, at {sizes[1]:,} rows",
                measured=big[name]["page_ms"],
                unit="ms (p50)",
                baseline_what=f"the same page at {sizes[0]:,} rows",
                baseline=small[name]["page_ms"],
                ratio=big[name]["page_ms"] / small[name]["page_ms"],
                ratio_meaning="p50 at the big size / p50 at the small size",
                target=Target("at_most", 2.0),
                details={"small": small[name], "big": big[name]},
            )
        )
    return made
