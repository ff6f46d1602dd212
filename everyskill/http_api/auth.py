"""Who is calling: the request's API key, resolved once, and the route's scope.

Contract
--------
- :class:`Authenticate`, a middleware of the API placed before the one
  that checks bodies, turns the request's ``Authorization: Bearer esk_...``
  into a :class:`~everyskill.api_keys.ResolvedKey` with
  :func:`everyskill.api_keys.resolve` (outside any tenant scope) *before
  anything of the body is read*, for every request whose path and method
  are a route of the API (not ``openapi.json`` nor ``docs``; an unknown
  route or method is answered 404 or 405 without a key). Whatever
  ``resolve`` refuses is answered at once as its problem, the body unread:
  no key, or another scheme than Bearer, is an
  :class:`~everyskill.errors.AuthenticationError` ``missing``; a key that
  is not well-formed ``malformed``; an unknown, revoked or expired key
  ``invalid`` (401); a database that cannot be reached a
  :class:`~everyskill.errors.DatabaseUnavailableError` (503). So an
  unauthenticated client never makes the server buffer or parse a body.
  The key is kept in the request's state, where :func:`authenticated`, the
  routes' FastAPI dependency, finds it (it resolves the key itself when the
  middleware did not run).
- **Rate limits**: ``resolve`` counts the request against its key's and its
  tenant's limits (:mod:`everyskill.rate_limits`, in PostgreSQL, shared by
  every worker). A request over one is a
  :class:`~everyskill.errors.RateLimitedError`: a 429 problem of the IANA
  type ``quota-exceeded`` with ``violated-policies``, ``Retry-After`` and the
  ``RateLimit`` and ``RateLimit-Policy`` headers (nothing counted, nothing
  run). An allowed request's status is kept in the request's state, and
  :class:`RateLimitHeaders` (a middleware of the API) adds its
  ``RateLimit`` and ``RateLimit-Policy`` to the answer, whatever it is: a
  2xx, or an error raised after the key resolved (403, 404, 409, 422...).
  An answer given before the key resolved (401, 503 of the resolution, an
  unknown route's 404, a 405) has none; a 413 or 415 comes after it and has
  them.
  :func:`declare_rate_limit_headers` writes these headers, and the 429,
  into the OpenAPI schema of every route.
- :func:`needs` is the dependency of a route: the resolved key, provided
  it carries the scope (``feedback:write``, ``feedback:review``, ``measurements:write``,
  ``benchmarks:write``, ``catalogue:write`` or ``read``); otherwise
  :class:`~everyskill.http_api.problems.MissingScopeError` (403 naming the
  scope). FastAPI caches the key within a request, so a key is resolved
  once per request.
- The handlers then act as the key's tenant: ``async with
  tenant_scope(key.tenant_id, autocommit=True):`` around one query-API call
  (the call is its own transaction; a single feedback is one round trip),
  ``async with tenant_scope(key.tenant_id):`` around several that must be
  one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from everyskill import rate_limits
from everyskill.api_keys import SCOPES, ResolvedKey, resolve
from everyskill.errors import EverySkillError
from everyskill.http_api.problems import RATE_LIMIT_STATE, MissingScopeError, problem_for

__all__ = [
    "RATE_LIMIT_HEADERS",
    "READ",
    "Authenticate",
    "RateLimitHeaders",
    "authenticated",
    "declare_rate_limit_headers",
    "needs",
]

READ = "read"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A tenant's API key: Authorization: Bearer esk_...",
)


# Where the status of an allowed request waits for its answer's headers.
_STATE = RATE_LIMIT_STATE
# Where the middleware keeps the request's resolved key.
_KEY = "everyskill_key"


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ResolvedKey:
    """The request's key, resolved (see the module's contract)."""
    key = request.scope.get("state", {}).get(_KEY)
    if isinstance(key, ResolvedKey):
        return key
    key = await resolve(credentials.credentials if credentials is not None else None)
    setattr(request.state, _STATE, key.rate_limit)
    return key


class Authenticate:
    """The middleware resolving a route's key before its body is read (see
    the module's contract)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_route(scope):
            await self.app(scope, receive, send)
            return
        scheme, credentials = get_authorization_scheme_param(
            Headers(scope=scope).get("authorization")
        )
        try:
            key = await resolve(credentials if scheme.lower() == "bearer" and credentials else None)
        except EverySkillError as error:
            response = await problem_for(Request(scope), error)
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[_KEY] = key
        state[_STATE] = key.rate_limit
        await self.app(scope, receive, send)


def _is_route(scope: Scope) -> bool:
    """Whether the request's path and method are those of a route of the API
    that takes a key (the schema and the docs take none)."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    if router is None:
        return True
    # FastAPI's own routes: the schema and the documentation.
    own = {
        getattr(app, name, None)
        for name in ("openapi_url", "docs_url", "redoc_url", "swagger_ui_oauth2_redirect_url")
    } - {None}
    for route in router.routes:
        if route.matches(scope)[0] is Match.FULL:
            return getattr(route, "path", None) not in own
    return False


class RateLimitHeaders:
    """The middleware adding an allowed request's ``RateLimit`` and
    ``RateLimit-Policy`` to its answer (see the module's contract)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = scope.get("state", {}).get(_STATE)
                if isinstance(status, rate_limits.RateLimitStatus):
                    fields = MutableHeaders(scope=message)
                    for name, value in rate_limits.headers(status).items():
                        if name not in fields:
                            fields[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


_LIST = "a Structured Field list (draft-ietf-httpapi-ratelimit-headers-11)"
#: The OpenAPI declarations of the rate-limit headers, by name.
RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit": {
        "description": "Each policy, the key's then the tenant's: r, the requests still"
        " allowed now; t, the seconds until its whole quota is back (for a policy that"
        f" refused: until a request is allowed). {_LIST}",
        "schema": {
            "type": "string",
            "pattern": r'^"(key|tenant)";r=[0-9]+;t=[0-9]+(, "(key|tenant)";r=[0-9]+;t=[0-9]+)*$',
        },
    },
    "RateLimit-Policy": {
        "description": f"Each policy's quota q per window of w seconds. {_LIST}",
        "schema": {
            "type": "string",
            "pattern": (
                rf'^"(key|tenant)";q=[0-9]+;w={rate_limits.PERIOD_SECONDS}'
                rf'(, "(key|tenant)";q=[0-9]+;w={rate_limits.PERIOD_SECONDS})*$'
            ),
        },
    },
    "Retry-After": {
        "description": "Seconds after which the request will be allowed.",
        "schema": {"type": "integer", "minimum": 1},
    },
}


def declare_rate_limit_headers(schema: dict[str, Any]) -> None:
    """Declare the rate-limit headers in an OpenAPI ``schema`` (in place):
    required on every operation's 2xx answers and its 429 (with
    ``Retry-After``), optional on its other errors (an answer given before
    the key resolved has none)."""
    policy = {name: RATE_LIMIT_HEADERS[name] for name in ("RateLimit", "RateLimit-Policy")}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, response in operation["responses"].items():
                declared = response.setdefault("headers", {})
                if status.startswith("2"):
                    declared.update({n: {**h, "required": True} for n, h in policy.items()})
                elif status == "429":
                    declared.update(
                        {n: {**h, "required": True} for n, h in RATE_LIMIT_HEADERS.items()}
                    )
                else:
                    declared.update({n: {**h, "required": False} for n, h in policy.items()})


def needs(scope: str) -> Callable[[ResolvedKey], Awaitable[ResolvedKey]]:
    """The dependency of a route that needs ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"{scope!r} is not a scope: use one of {', '.join(SCOPES)}")

    async def allowed(key: Annotated[ResolvedKey, Depends(authenticated)]) -> ResolvedKey:
        if not key.allows(scope):
            raise MissingScopeError(scope)
        return key

    return allowed


Reader = Annotated[ResolvedKey, Depends(needs(READ))]
FeedbackWriter = Annotated[ResolvedKey, Depends(needs("feedback:write"))]
FeedbackReviewer = Annotated[ResolvedKey, Depends(needs("feedback:review"))]
MeasurementWriter = Annotated[ResolvedKey, Depends(needs("measurements:write"))]
BenchmarkWriter = Annotated[ResolvedKey, Depends(needs("benchmarks:write"))]
CatalogueWriter = Annotated[ResolvedKey, Depends(needs("catalogue:write"))]
