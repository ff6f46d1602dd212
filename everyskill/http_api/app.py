"""The HTTP API as a FastAPI app, to be mounted at ``/v1``.

Contract
--------
- :func:`create_api_app` returns the API: the routers of
  :mod:`~everyskill.http_api.feedback`, :mod:`~everyskill.http_api.measurements`,
  :mod:`~everyskill.http_api.benchmarks` and :mod:`~everyskill.http_api.catalogue`,
  every error answered as problem+json (:mod:`~everyskill.http_api.problems`),
  the key resolved by :class:`~everyskill.http_api.auth.Authenticate`
  before bodies are checked by :class:`~everyskill.http_api.bodies.BodyLimits`. Its
  schema is at ``openapi.json`` and its documentation at ``docs``, both
  under the mount (``/v1/openapi.json``, ``/v1/docs``); the schema's
  ``servers`` says where it is mounted. Every answer of an authenticated
  request carries the rate-limit headers, declared in the schema
  (:mod:`~everyskill.http_api.auth`).
- It has no lifespan: it uses the query API's engine
  (:func:`everyskill.database.app_engine`), whose pool the server that
  mounts it starts and closes (:mod:`everyskill.server`). Without a started
  pool each request opens a connection of its own.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from everyskill.http_api import benchmarks, catalogue, feedback, measurements, problems
from everyskill.http_api.auth import Authenticate, RateLimitHeaders, declare_rate_limit_headers
from everyskill.http_api.bodies import BodyLimits

__all__ = ["create_api_app"]

DESCRIPTION = """\
The EverySkill data layer over HTTP. Authenticate with a tenant's API key:
`Authorization: Bearer esk_...`. A 2xx means committed. Errors are
`application/problem+json` (RFC 9457) with a stable `type`.
"""


def create_api_app() -> FastAPI:
    """The API app (see the module's contract)."""
    app = FastAPI(
        title="EverySkill API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    problems.install(app)
    # The last added runs first: the key is resolved before the body is
    # looked at, and the rate-limit headers go on every answer after that.
    app.add_middleware(BodyLimits)
    app.add_middleware(Authenticate)
    app.add_middleware(RateLimitHeaders)
    for module in (feedback, measurements, benchmarks, catalogue):
        app.include_router(module.router)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            problems.declare_problem_schemas(generate())
            declare_rate_limit_headers(generate())
        return generate()

    app.openapi = openapi  # type: ignore[method-assign]
    return app
