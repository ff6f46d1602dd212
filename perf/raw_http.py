"""The HTTP benchmarks' baseline: a minimal FastAPI app doing the raw INSERT.

Contract
--------
- :func:`create_app` is a FastAPI app with one route, ``POST /feedback``:
  it parses the JSON body (``skill_id``, ``feedback_type``, optional
  ``user_id`` and ``comment``), sends one asyncpg INSERT of the feedback row
  for the tenant named by :data:`TENANT_VARIABLE` (as the owner, from
  ``DATABASE_URL``: no authentication, no role or tenant switch, no
  row-level security; the table's triggers fire) and answers 201 with the
  new row's id as JSON. It validates nothing of its own (the database's
  checks still apply) and redacts nothing.
- Its pool is asyncpg's, with asyncpg's default size (as the application's
  engine) and :data:`everyskill.database.SERVER_SETTINGS`; a connection
  goes back to the pool without asyncpg's session reset, since the one
  statement leaves nothing on the session: one round trip per request.
- ``python -m perf.raw_http --port N`` serves it as ``main.py`` serves the
  API: ``uvicorn.run`` of an app factory, on 127.0.0.1, one worker, uvicorn's
  defaults otherwise.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from everyskill.database import SERVER_SETTINGS

#: The environment variable naming the tenant the app writes for.
TENANT_VARIABLE = "EVERYSKILL_PERF_TENANT"
#: The factory, for uvicorn.
IMPORT_STRING = "perf.raw_http:create_app"

INSERT = """
INSERT INTO skill_feedback (tenant_id, skill_id, user_id, feedback_type, sentiment, comment, source)
VALUES ($1, $2, $3, $4, CASE $4 WHEN 'thumbs_up' THEN 1 WHEN 'thumbs_down' THEN -1 END, $5, 'web')
RETURNING id
"""


async def _no_reset(connection: asyncpg.Connection) -> None:
    """The pool's reset: nothing (one statement outside a transaction leaves
    nothing on the session)."""


def create_app() -> FastAPI:
    """The baseline app (see the module's contract)."""
    url, tenant_id = os.environ["DATABASE_URL"], os.environ[TENANT_VARIABLE]
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(url, server_settings=SERVER_SETTINGS, reset=_no_reset)
        pools.append(pool)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/feedback", status_code=201)
    async def record_feedback(request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        row_id = await pools[0].fetchval(
            INSERT,
            tenant_id,
            body["skill_id"],
            body.get("user_id"),
            body["feedback_type"],
            body.get("comment"),
        )
        return JSONResponse({"id": row_id}, status_code=201)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m perf.raw_http")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(IMPORT_STRING, factory=True, host="127.0.0.1", port=args.port, workers=1)


if __name__ == "__main__":
    main()
