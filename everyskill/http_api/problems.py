"""Errors of the HTTP API as RFC 9457 ``application/problem+json``.

Contract
--------
- Every error answer of the API is a :class:`Problem`: ``type`` (a stable
  URI per kind of error, ``urn:everyskill:problem:<name>``, listed in
  :data:`TYPES`), ``title`` (the same for every problem of a type),
  ``status`` (the HTTP status, repeated), ``detail`` (what was wrong with
  this request and what to do about it), and, when they apply:
  ``errors`` (for a 422, every bad field: ``{"index": 3, "field":
  "skill_id", "message": ...}``, ``index`` being the item's position in a
  batch's ``items`` and absent for a single item or a query parameter),
  ``scope`` (for a 403, the scope the key lacks) and ``reason`` (for a 401:
  ``missing``, ``malformed`` or ``invalid``).
- :func:`install` maps onto problems every error the query API raises
  (:mod:`everyskill.errors`) and the errors of FastAPI and Starlette
  themselves:

  ====================================  ======  =========================
  error                                 status  type name
  ====================================  ======  =========================
  body that is not JSON                 400     ``malformed-json``
  other bad request                     400     ``bad-request``
  AuthenticationError                   401     ``unauthenticated``
  (with ``WWW-Authenticate: Bearer``)
  a key without the route's scope       403     ``missing-scope``
  NotFoundError (another tenant's id    404     ``not-found``
  is exactly as an id never used;
  ``errors`` lists every one missing)
  an unknown route                      404     ``unknown-route``
  a method the route does not have      405     ``method-not-allowed``
  (with ``Allow``)
  ConflictError                         409     ``conflict``
  AlreadyReviewedError                  409     ``already-reviewed``
  InvalidTransitionError                409     ``invalid-transition``
  RunNotRunningError                    409     ``run-not-running``
  a body over the route's size          413     ``content-too-large``
  a body that is not ``application/json``  415  ``unsupported-media-type``
  or has a Content-Encoding (with
  ``Accept-Encoding: identity``)
  ValidationError, request validation   422     ``validation``
  RateLimitedError (with Retry-After,   429     ``quota-exceeded``
  RateLimit, RateLimit-Policy)
  DatabaseUnavailableError              503     ``database-unavailable``
  (with ``Retry-After``)
  anything else                         500     ``internal-error``
  ====================================  ======  =========================

  A 429's ``type`` is the IANA-registered
  :data:`~everyskill.rate_limits.QUOTA_EXCEEDED_TYPE` (the draft
  RateLimit header fields' problem type) rather than a URN of this API, and
  its ``violated-policies`` names the policy that refused (``key`` or
  ``tenant``); :func:`everyskill.rate_limits.headers` gives its headers.
  A 500 says only that the error was logged; its traceback goes to the log
  (logger ``everyskill.http_api``), never to the client; it carries the
  rate-limit headers when the key had resolved.
- :data:`ERROR_RESPONSES` declares the problem answers for the OpenAPI
  schema of every route, as ``application/problem+json`` only, a 503 with
  ``Retry-After``; :func:`declare_problem_schemas` adds their schema to
  the OpenAPI components.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from everyskill.errors import (
    AlreadyReviewedError,
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    EverySkillError,
    InvalidTransitionError,
    NotFoundError,
    RateLimitedError,
    RunNotRunningError,
    ValidationError,
)
from everyskill import rate_limits
from everyskill.rate_limits import QUOTA_EXCEEDED_TYPE

__all__ = [
    "DATABASE_RETRY_AFTER",
    "ERROR_RESPONSES",
    "PROBLEM_MEDIA_TYPE",
    "RATE_LIMIT_STATE",
    "TYPES",
    "FieldProblem",
    "MissingScopeError",
    "Problem",
    "declare_problem_schemas",
    "install",
    "item_problems",
    "problem_for",
    "problem_response",
    "type_uri",
]

logger = logging.getLogger("everyskill.http_api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Seconds a client is asked to wait when the database is unavailable.
DATABASE_RETRY_AFTER = 2

#: Each problem type's name, status and title.
TYPES: dict[str, tuple[int, str]] = {
    "malformed-json": (400, "The body is not valid JSON"),
    "bad-request": (400, "Bad request"),
    "unauthenticated": (401, "No valid API key"),
    "missing-scope": (403, "The API key lacks a scope"),
    "not-found": (404, "Not found"),
    "unknown-route": (404, "No such route"),
    "method-not-allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflict"),
    "already-reviewed": (409, "Already reviewed"),
    "invalid-transition": (409, "Invalid transition"),
    "run-not-running": (409, "The benchmark run is not running"),
    "content-too-large": (413, "Content too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation": (422, "Invalid input"),
    "quota-exceeded": (429, "Request quota exceeded"),
    "database-unavailable": (503, "The database is unavailable"),
    "internal-error": (500, "Internal error"),
}


# Problem types registered elsewhere, by their name here.
_REGISTERED = {"quota-exceeded": QUOTA_EXCEEDED_TYPE}


def type_uri(name: str) -> str:
    """The ``type`` URI of the problem type ``name``."""
    return _REGISTERED.get(name, f"urn:everyskill:problem:{name}")


class FieldProblem(pydantic.BaseModel):
    """One bad field: of the item at ``index`` of a batch, when it is one."""

    index: int | None = pydantic.Field(
        default=None, description="The item's position in the batch's items (from 0)."
    )
    field: str = pydantic.Field(description="The field (dotted for nested ones), or 'input'.")
    message: str = pydantic.Field(description="What is wrong and what to do about it.")


class Problem(pydantic.BaseModel):
    """An RFC 9457 problem details object."""

    model_config = pydantic.ConfigDict(validate_by_name=True, validate_by_alias=True)

    type: str = pydantic.Field(
        description="urn:everyskill:problem:<name>, stable per kind; a 429 has the IANA"
        " type " + QUOTA_EXCEEDED_TYPE + "."
    )
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None
    scope: str | None = pydantic.Field(default=None, description="403: the scope the key lacks.")
    reason: str | None = pydantic.Field(
        default=None, description="401: missing, malformed or invalid."
    )
    violated_policies: list[str] | None = pydantic.Field(
        default=None,
        alias="violated-policies",
        description="429: the rate-limit policy that refused the request (key or tenant).",
    )


class MissingScopeError(Exception):
    """The request's key does not carry ``scope``."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__(
            f"this route needs the scope {scope!r}, which the API key does not carry;"
            " use a key with that scope"
        )


def problem_response(
    name: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The problem+json answer of type ``name``."""
    status, title = TYPES[name]
    problem = Problem(type=type_uri(name), title=title, status=status, detail=detail, **extra)
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True, by_alias=True),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _responses() -> dict[int | str, dict[str, Any]]:
    described: dict[int, str] = {}
    for status, title in TYPES.values():
        described.setdefault(status, title)
    # Only problem+json: a "model" would declare application/json too. The
    # Problem schema is added to the components by declare_problem_schemas.
    responses: dict[int | str, dict[str, Any]] = {
        status: {
            "description": description,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status, description in sorted(described.items())
    }
    responses[503]["headers"] = {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    }
    responses[415]["headers"] = {
        "Accept-Encoding": {
            "description": "identity, when the body was refused for its Content-Encoding.",
            "required": False,
            "schema": {"type": "string"},
        }
    }
    return responses


def declare_problem_schemas(schema: dict[str, Any]) -> None:
    """Add :class:`Problem` (and what it refers to) to an OpenAPI ``schema``'s
    components (in place), for the answers of :data:`ERROR_RESPONSES`."""
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(problem.pop("$defs", {}))
    components["Problem"] = problem


#: The problem answers every route may give, for its OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = _responses()

# A field of an item of a batch, as the query API names it:
# "measurements[3].input_tokens", "results[0].model_name", "items[2].skill_id".
_ITEM_FIELD = re.compile(r"^(?:items|measurements|results)\[(?P<index>\d+)\](?:\.(?P<field>.+))?$")


def field_problem(field: str, message: str, index: int | None = None) -> FieldProblem:
    """A FieldProblem, with the index of a batch item read from ``field``."""
    match = _ITEM_FIELD.match(field)
    if index is None and match:
        return FieldProblem(
            index=int(match["index"]), field=match["field"] or "item", message=message
        )
    return FieldProblem(index=index, field=field, message=message)


def validation_problems(
    error: ValidationError, index: int | None = None
) -> list[FieldProblem]:
    """The problems of a query-API ValidationError (of item ``index``)."""
    return [field_problem(field, reason, index) for field, reason in error.problems]


# Union tags of bodies that are one item or a batch (see schemas.one_or_batch).
_UNION_TAGS = frozenset({"item", "batch"})


def _request_problems(errors: Sequence[Any]) -> list[FieldProblem]:
    found: list[FieldProblem] = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        if loc and loc[0] in _UNION_TAGS:
            loc = loc[1:]
        index = None
        if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
            index = loc[1]
            loc = loc[2:]
        field = ".".join(str(part) for part in loc) or ("item" if index is not None else "input")
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        found.append(FieldProblem(index=index, field=field, message=message))
    return found


def item_problems(error: pydantic.ValidationError, index: int) -> list[FieldProblem]:
    """The problems pydantic found in the item at ``index`` of a batch."""
    return _request_problems(
        [
            {**detail, "loc": ("items", index, *detail["loc"])}
            for detail in error.errors(include_input=False, include_url=False)
        ]
    )


async def _validation(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, (ValidationError, RequestValidationError))
    if isinstance(error, RequestValidationError):
        errors = error.errors()
        if any(item.get("type") == "json_invalid" for item in errors):
            return problem_response(
                "malformed-json", "the body is not valid JSON: send one JSON object"
            )
        problems = _request_problems(errors)
    else:
        problems = validation_problems(error)
    where = ", ".join(
        (f"items[{p.index}]." if p.index is not None else "") + p.field for p in problems[:5]
    )
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return problem_response(
        "validation",
        f"the request is invalid ({where}{more}); nothing was written: fix every field"
        " listed in errors",
        errors=problems,
    )


async def problem_for(request: Request, error: EverySkillError) -> JSONResponse:
    """The problem answering a query-API ``error`` raised by ``request``."""
    return await _everyskill_error(request, error)


async def _everyskill_error(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, AuthenticationError):
        return problem_response(
            "unauthenticated",
            str(error),
            headers={"WWW-Authenticate": 'Bearer realm="everyskill"'},
            reason=error.reason,
        )
    if isinstance(error, RateLimitedError):
        return problem_response(
            "quota-exceeded",
            str(error),
            headers=rate_limits.headers(error),
            violated_policies=rate_limits.violated_policies(error),
        )
    if isinstance(error, NotFoundError):
        # Every row the call did not find, each with its own message (the
        # error's own when it found one missing).
        missing = [
            field_problem(field, str(NotFoundError(error.kind, row_id, field)))
            for row_id, field in error.missing
            if field
        ]
        return problem_response("not-found", str(error), errors=missing or None)
    if isinstance(error, AlreadyReviewedError):
        return problem_response("already-reviewed", str(error))
    if isinstance(error, RunNotRunningError):
        return problem_response("run-not-running", str(error))
    if isinstance(error, InvalidTransitionError):
        return problem_response("invalid-transition", str(error))
    if isinstance(error, ConflictError):
        # A batch item's field ("items[2].id", "measurements[2].id") gives its index.
        errors = [field_problem(error.field, str(error))] if error.field else None
        return problem_response("conflict", str(error), errors=errors)
    if isinstance(error, DatabaseUnavailableError):
        logger.warning("database unavailable: %s", error)
        return problem_response(
            "database-unavailable",
            str(error),
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    return await _unexpected(request, error)


async def _missing_scope(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, MissingScopeError)
    return problem_response("missing-scope", str(error), scope=error.scope)


_HTTP_TYPES = {
    400: "bad-request",
    404: "unknown-route",
    405: "method-not-allowed",
    413: "content-too-large",
    415: "unsupported-media-type",
}


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    name = _HTTP_TYPES.get(error.status_code)
    if name is None:
        return await _unexpected(request, error)
    if name == "unknown-route":
        detail = f"no route {request.url.path}: the routes are listed at /v1/docs"
    elif name == "method-not-allowed":
        detail = f"{request.method} is not a method of {request.url.path}"
        # Starlette's Allow names the methods of the first route of the path
        # only; FastAPI makes a route per method.
        return problem_response(
            name, detail, headers={**(error.headers or {}), "Allow": _allowed(request)}
        )
    else:
        detail = str(error.detail)
    return problem_response(name, detail, headers=error.headers)


def _allowed(request: Request) -> str:
    """The methods some route of the request's path answers."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in routes
        )
    )


#: Where an allowed request's rate-limit status is kept in its scope's state.
RATE_LIMIT_STATE = "everyskill_rate_limit"


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.error(
        "unexpected error answering %s %s", request.method, request.url.path, exc_info=error
    )
    # Answered outside the API's middleware: a key that resolved still gets
    # its rate-limit headers here.
    status = request.scope.get("state", {}).get(RATE_LIMIT_STATE)
    headers = (
        rate_limits.headers(status) if isinstance(status, rate_limits.RateLimitStatus) else None
    )
    return problem_response(
        "internal-error",
        "an unexpected error occurred and was logged; whether anything was written is not"
        " known: read before retrying",
        headers=headers,
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem (see the module's contract)."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(EverySkillError, _everyskill_error)
    app.add_exception_handler(MissingScopeError, _missing_scope)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
