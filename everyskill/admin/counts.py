"""How many rows the admin says a list has: exact when small, estimated when big.

Piccolo Admin loads a page of a list in two requests: the count of the
matching rows (for the pager: "1 to 15 of N"), then the rows. Piccolo
API's count is ``SELECT count(*)`` over every matching row, which reads the
whole table: at a million token measurements it takes longer than the page
itself, and the time grows with the table. The rows need only an index
scan of the first page.

Contract
--------
- For the tables in :data:`ESTIMATED_TABLES`, the admin's count endpoint
  (``/api/tables/<table>/count/``, same filters, same answer shape
  ``{"count": N, "page_size": P}``) is answered by :class:`EstimatingCRUD`:
  - it asks PostgreSQL's planner how many rows match (``EXPLAIN`` of the
    filtered query: no row is read);
  - when the planner expects at most :data:`EXACT_UP_TO` rows, they are
    counted: the count is exact;
  - otherwise at most :data:`PROBE` matching rows are counted: fewer is the
    exact count (a list the planner wrongly expects long);
  - otherwise the count is the planner's estimate (at least ``PROBE``).
    PostgREST's "estimated" count works the same way. Counting the first
    10,001 of many rows would be no way out: with a filter no index serves
    (the admin matches text with "contains") it reads a large part of the
    table.
- What a user sees: exact counts of lists of up to 1,000 rows, and of lists
  the planner expects to hold at most 10,000; for longer ones an estimate:
  within a few percent for a filter on one column, once the table has been
  analysed, but possibly far off (tens of percent) for filters on several
  columns, which the planner takes as independent. The pager may then offer
  empty last pages or miss some. Exporting a long list as CSV from the admin
  (which pages by this count, and asks for confirmation above 10,000 rows)
  may therefore be incomplete: use SQL or the query API for such exports.
- Filters that Piccolo API refuses are refused the same way (HTTP 400).
- :func:`install` puts these count routes in front of Piccolo Admin's own,
  inside its authentication (a count needs a logged-in admin, as before).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from piccolo.querystring import QueryString
from piccolo.table import Table
from piccolo_api.crud.endpoints import ParamException, PiccoloCRUD
from piccolo_api.crud.exceptions import MalformedQuery
from piccolo_api.crud.validators import apply_validators
from piccolo_admin.endpoints import TableConfig
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

__all__ = ["ESTIMATED_TABLES", "EXACT_UP_TO", "PROBE", "EstimatingCRUD", "install"]

#: When the planner expects at most this many matching rows, they are counted.
EXACT_UP_TO = 10_000
#: When it expects more, at most this many are counted: fewer is exact.
PROBE = 1_000


class EstimatingCRUD(PiccoloCRUD):
    """Piccolo API's CRUD with the count of the module's contract."""

    @apply_validators  # type: ignore[untyped-decorator]
    async def get_count(self, request: Request) -> Response:
        params = self._parse_params(request.query_params)
        try:
            split_params = self._split_params(params)
        except ParamException as exception:
            return Response(str(exception), status_code=400)
        primary_key = self.table._meta.primary_key
        try:
            matching = self._apply_filters(self.table.select(primary_key), split_params)
        except MalformedQuery as exception:
            return Response(str(exception), status_code=400)
        count = await estimated_count(self.table, matching.querystrings[0])
        return JSONResponse({"count": count, "page_size": self.page_size})


async def estimated_count(table: type[Table], matching: QueryString) -> int:
    """The count of the rows ``matching`` selects, as the module's contract says."""
    engine = table._meta.db
    planned = await engine.run_querystring(
        QueryString("EXPLAIN (FORMAT JSON) {}", matching)
    )
    plan = planned[0]["QUERY PLAN"]
    estimate = int((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"])
    if estimate <= EXACT_UP_TO:
        rows = await engine.run_querystring(
            QueryString("SELECT count(*) AS count FROM ({}) AS matching", matching)
        )
        return int(rows[0]["count"])
    # The estimate can be far off when filters on several columns combine
    # (the planner takes them as independent): a short list the planner
    # expects long is still counted exactly, by counting at most PROBE rows.
    rows = await engine.run_querystring(
        QueryString("SELECT count(*) AS count FROM ({} LIMIT {}) AS matching", matching, PROBE)
    )
    counted = int(rows[0]["count"])
    return counted if counted < PROBE else max(estimate, PROBE)


#: The tables whose counts may be estimated: those that grow with use.
ESTIMATED_TABLES = ("token_measurements", "skill_feedback", "benchmark_results")


def _private_api(app: Any) -> FastAPI:
    """The FastAPI app Piccolo Admin serves behind its authentication at /api."""
    seen = 0
    while app is not None and seen < 10:
        for route in getattr(app, "routes", []):
            if isinstance(route, Mount) and route.path == "/api":
                inner: Any = route.app
                while not isinstance(inner, FastAPI):
                    inner = inner.app  # the authentication middleware
                return inner
        app = getattr(app, "app", None)
        seen += 1
    raise RuntimeError("Piccolo Admin's /api mount was not found: its layout changed")


def install(admin: Any, configs: list[TableConfig], page_size: int = 15) -> None:
    """Answer the count requests of the :data:`ESTIMATED_TABLES` among
    ``configs`` (with their validators) in ``admin``, whose page size
    (``create_admin``'s, 15 by default) is ``page_size``."""
    private = _private_api(admin)
    for config in configs:
        table = config.table_class
        if table._meta.tablename not in ESTIMATED_TABLES:
            continue
        crud = EstimatingCRUD(
            table=table,
            read_only=True,
            page_size=page_size,
            validators=config.validators,
        )

        async def count(request: Request, crud: EstimatingCRUD = crud) -> Response:
            response: Response = await crud.get_count(request)
            return response

        private.router.routes.insert(
            0, Route(f"/tables/{table._meta.tablename}/count/", count, methods=["GET"])
        )
