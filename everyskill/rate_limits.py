"""Rate limits of the HTTP API: per key and per tenant, counted in PostgreSQL.

Contract
--------
- **Where it is counted**: by :func:`everyskill.api_keys.resolve`, in the
  same statement (one round trip, one transaction of its own) that resolves
  the request's key: the SECURITY DEFINER function ``api_key_resolve``.
  Every worker process and every server share the counts, exactly: the
  counters are rows of PostgreSQL, each request locks its key's row and then
  its tenant's (always in that order: no deadlock) and judges the request
  with the time read once it holds them. A key that is missing, malformed,
  unknown, revoked or expired is refused before anything is counted.
- **Limits**: requests per minute. A key's is ``api_keys.rate_limit_per_minute``
  (given at creation: ``create_api_key(..., rate_limit_per_minute=N)`` or
  ``--rate-limit-per-minute N``), :data:`DEFAULT_KEY_LIMIT_PER_MINUTE` (600,
  10 a second) when NULL. A tenant's, shared by all its keys, is
  ``tenants.rate_limit_per_minute`` (staff set it in the admin's tenant
  form), :data:`DEFAULT_TENANT_LIMIT_PER_MINUTE` (6,000, 100 a second) when
  NULL. A change applies from the next request.
- **Algorithm**: GCRA (the generic cell rate algorithm, a token bucket kept
  as one timestamp per subject). A request costs ``60/limit`` seconds; each
  subject's row holds the *theoretical arrival time* ``tat``, and a request
  at ``now`` is allowed when ``max(tat, now) + 60/limit - now <= 60``. So
  ``limit`` requests may come at once from rest, and then one every
  ``60/limit`` seconds: the quota refills smoothly, with no window edge at
  which twice the limit gets through (a fixed window's flaw), and from the
  state the exact time at which the next request will be allowed follows,
  hence an exact ``Retry-After``. It costs one small row per key and per
  tenant, updated in place: no log of requests (a sliding log's cost), no
  background job. The arithmetic is exact (``numeric`` seconds, the cost
  truncated, never rounded up): exactly ``limit`` requests fit in a whole
  minute. When a limit changes, the share of the minute already used is
  kept.
- **Both limits, fairly**: a request is counted against its key and its
  tenant only when both allow it. A request refused by one is counted by
  neither: a key over its own limit does not use up its tenant's quota
  (the tenant's other keys keep theirs), and a request the tenant's limit
  refuses does not use up its key's.
- **Storage**: the counters are UNLOGGED tables (``rate_limit_keys``,
  ``rate_limit_tenants``): a write to them makes no WAL, so counting adds no
  disk flush to a request. A crash of PostgreSQL (not a clean shutdown or
  restart) empties them: every key and tenant starts again with its whole
  quota; they are not copied to replicas either (after a failover, the
  counts start again). No role but the owner may read or write them.
- **Contention**: the requests of one tenant take turns on its counter row
  (and those of one key on the key's), each for the duration of one short
  statement that writes no WAL; ``perf/rate_limits.py`` measures what that
  costs against the same resolution without counting, for one client and
  for 16 on one key.
- **Outcome**: an allowed request gives a :class:`RateLimitStatus` for the
  policy that will refuse first (fewest remaining requests; the key's on a
  tie); a refused one raises :class:`~everyskill.errors.RateLimitedError`
  for the policy that makes the client wait longest (``retry_after_seconds``
  at least 1: the request will be allowed after that many seconds, if no
  other request of the key or tenant comes first).
- **Headers** (:func:`headers`, pure): the fields of the IETF draft
  *RateLimit header fields for HTTP*, draft-ietf-httpapi-ratelimit-headers-11
  (23 May 2026), as Structured Field lists:
  ``RateLimit-Policy: "key";q=600;w=60`` (the policy's quota per 60-second
  window) and ``RateLimit: "key";r=599;t=1``, where ``r`` is the requests
  still allowed now and ``t`` the effective window: after a success, the
  seconds until the whole quota is back (a client that spreads its ``r``
  requests over ``t`` seconds is never refused by this policy); in a
  refusal, ``r=0`` and ``t`` equals ``Retry-After`` (the draft: Retry-After
  SHOULD NOT point earlier than the end of the effective window). A refusal
  also carries ``Retry-After: <seconds>``. :data:`QUOTA_EXCEEDED_TYPE` and
  :func:`violated_policies` are the draft's problem type for a 429 and its
  ``violated-policies`` member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from everyskill.errors import RateLimitedError

__all__ = [
    "DEFAULT_KEY_LIMIT_PER_MINUTE",
    "DEFAULT_TENANT_LIMIT_PER_MINUTE",
    "PERIOD_SECONDS",
    "QUOTA_EXCEEDED_TYPE",
    "Policy",
    "RateLimitStatus",
    "RateLimitedError",
    "headers",
    "outcome",
    "violated_policies",
]

Policy = Literal["key", "tenant"]

#: Every limit is a number of requests per this many seconds.
PERIOD_SECONDS = 60
#: A key's limit when ``api_keys.rate_limit_per_minute`` is NULL.
DEFAULT_KEY_LIMIT_PER_MINUTE = 600
#: A tenant's limit when ``tenants.rate_limit_per_minute`` is NULL.
DEFAULT_TENANT_LIMIT_PER_MINUTE = 6000
#: The draft's problem type for a request over a quota (RFC 9457 ``type``).
QUOTA_EXCEEDED_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"


@dataclass(frozen=True)
class RateLimitStatus:
    """Where an allowed request leaves one policy: its ``limit`` per minute,
    the requests still allowed now (``remaining``), and the seconds until
    the whole quota is back (``reset_seconds``)."""

    limit: int
    remaining: int
    reset_seconds: int
    policy: Policy


def outcome(row: Mapping[str, Any] | asyncpg.Record) -> RateLimitStatus:
    """The status of the policy that will refuse first, from a row of
    ``api_key_resolve``; :class:`RateLimitedError` when the request was
    refused."""
    if not row["allowed"]:
        waits: list[tuple[int, int, Policy]] = [
            (row["key_wait"], row["key_limit"], "key"),
            (row["tenant_wait"], row["tenant_limit"], "tenant"),
        ]
        # The longest wait: the client may come back only once both allow it.
        wait, limit, policy = max(waits, key=lambda item: item[0])
        raise RateLimitedError(policy, limit, max(1, wait))
    statuses = [
        RateLimitStatus(row["key_limit"], row["key_remaining"], row["key_reset"], "key"),
        RateLimitStatus(
            row["tenant_limit"], row["tenant_remaining"], row["tenant_reset"], "tenant"
        ),
    ]
    # min() keeps the first of equals: the key's.
    return min(statuses, key=lambda status: status.remaining)


def _item(policy: str, parameters: Mapping[str, int]) -> str:
    # A Structured Field item: a String (policy names are plain ASCII
    # words) with Integer parameters.
    return f'"{policy}"' + "".join(f";{name}={value}" for name, value in parameters.items())


def headers(result: RateLimitStatus | RateLimitedError) -> dict[str, str]:
    """The response header fields of an allowed request's status, or of a
    refusal: ``RateLimit-Policy`` and ``RateLimit`` (draft-11's form), and
    ``Retry-After`` for a refusal."""
    if isinstance(result, RateLimitedError):
        fields = {
            "RateLimit-Policy": _item(result.policy, {"q": result.limit, "w": PERIOD_SECONDS}),
            "RateLimit": _item(result.policy, {"r": 0, "t": result.retry_after_seconds}),
            "Retry-After": str(result.retry_after_seconds),
        }
        return fields
    return {
        "RateLimit-Policy": _item(result.policy, {"q": result.limit, "w": PERIOD_SECONDS}),
        "RateLimit": _item(result.policy, {"r": result.remaining, "t": result.reset_seconds}),
    }


def violated_policies(error: RateLimitedError) -> list[str]:
    """The draft's ``violated-policies`` member of a 429 problem: the policy
    that refused."""
    return [error.policy]
