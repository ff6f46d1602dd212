"""Who is calling: the request's API key, resolved once, and the route's scope.

Contract
--------
- :func:`authenticated` is the one FastAPI dependency that turns the
  request's ``Authorization: Bearer esk_...`` into a
  :class:`~everyskill.api_keys.ResolvedKey` with
  :func:`everyskill.api_keys.resolve` (outside any tenant scope). Whatever
  ``resolve`` refuses comes out as its typed error: no key, or another
  scheme than Bearer, is an :class:`~everyskill.errors.AuthenticationError`
  ``missing``; a key that is not well-formed ``malformed``; an unknown,
  revoked or expired key ``invalid`` (401); a database that cannot be
  reached a :class:`~everyskill.errors.DatabaseUnavailableError` (503).
  Every check made per request before the handler runs belongs here.
- :func:`needs` is the dependency of a route: the resolved key, provided
  it carries the scope (``feedback:write``, ``measurements:write``,
  ``benchmarks:write``, ``catalogue:write`` or ``read``); otherwise
  :class:`~everyskill.http_api.problems.MissingScopeError` (403 naming the
  scope). FastAPI caches the key within a request, so a key is resolved
  once per request.
- The handlers then act as the key's tenant: ``async with
  tenant_scope(key.tenant_id):``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from everyskill.api_keys import SCOPES, ResolvedKey, resolve
from everyskill.http_api.problems import MissingScopeError

__all__ = ["READ", "authenticated", "needs"]

READ = "read"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A tenant's API key: Authorization: Bearer esk_...",
)


async def authenticated(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ResolvedKey:
    """The request's key, resolved (see the module's contract)."""
    return await resolve(credentials.credentials if credentials is not None else None)


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
MeasurementWriter = Annotated[ResolvedKey, Depends(needs("measurements:write"))]
BenchmarkWriter = Annotated[ResolvedKey, Depends(needs("benchmarks:write"))]
CatalogueWriter = Annotated[ResolvedKey, Depends(needs("catalogue:write"))]
