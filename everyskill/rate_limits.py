"""Rate limits of the HTTP API: per key and per tenant, counted in PostgreSQL.

Contract
--------
- **Where it is counted**: by :func:`everyskill.api_keys.resolve`, in the
  same statement (one round trip, one transaction of its own) that resolves
  the request's key: the SECURITY DEFINER function ``api_key_resolve``.
  Every worker process and every server share the counts, exactly: the
  counters are rows of PostgreSQL. A request locks its key's counter row,
  judges the request against the key's limit with the time read once it
  holds it, and only when the key allows it locks its tenant's counter row
  and judges both again with the time read then: a key over its own limit
  never makes its tenant's other keys wait. The key's row of ``api_keys``
  (stamped with ``last_used_at``) is never waited for. Every request takes
  its locks in this order (key counter, then tenant counter), and so does
  deleting a key or a tenant (the row, then by ``ON DELETE CASCADE`` the
  key's counter, then the tenant's): no deadlock. A key that is missing,
  malformed, unknown, revoked or expired is refused before anything is
  counted.
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
  background job. The arithmetic is exact (``numeric`` seconds; the cost
  ``60/limit`` truncated to 18 decimals by an integer division, never
  rounded up; the remaining requests truncated): exactly ``limit`` requests
  fit in a whole minute, whatever the limit (one that does not divide 60
  too). When a limit changes, the share of the minute already used is
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
  tie), carrying in ``policies`` a :class:`PolicyStatus` for each policy
  (the key's, then the tenant's); a refused one raises
  :class:`~everyskill.errors.RateLimitedError` for the policy that makes
  the client wait longest (``retry_after_seconds`` at least 1: the request
  will be allowed after that many seconds, if no other request of the key
  or tenant comes first), with ``policies`` likewise. When the key refuses,
  the tenant's status is read without waiting for its counter.
- **Headers** (:func:`headers`, pure): the fields of the IETF draft
  *RateLimit header fields for HTTP*, draft-ietf-httpapi-ratelimit-headers-11
  (23 May 2026), as Structured Field lists with one item per policy, the
  key's then the tenant's, in every response (the draft's section 3: the
  policies SHOULD be the same across responses):
  ``RateLimit-Policy: "key";q=600;w=60, "tenant";q=6000;w=60`` (each
  policy's quota per 60-second window) and
  ``RateLimit: "key";r=599;t=1, "tenant";r=5999;t=1``, where ``r`` is the
  requests the policy still allows now and ``t`` its effective window: for
  a policy that allows, the seconds until its whole quota is back (a client
  that spreads its ``r`` requests over ``t`` seconds is never refused by
  it); for a policy that refused, ``r=0`` and ``t`` the seconds until it
  allows a request, at most ``Retry-After`` (the draft: Retry-After SHOULD
  NOT point earlier than the end of the effective window). A refusal also
  carries ``Retry-After: <seconds>``. :data:`QUOTA_EXCEEDED_TYPE` and
  :func:`violated_policies` are the draft's problem type for a 429 and its
  ``violated-policies`` member (every policy that refused).
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
    "PolicyStatus",
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
class PolicyStatus:
    """Where a request left one policy: its ``limit`` per minute, the
    requests it still allows now (``remaining``), the seconds until its
    whole quota is back (``reset_seconds``), and the seconds until it allows
    a request (``wait_seconds``: 0 when it allowed this one, at least 1 when
    it refused it)."""

    limit: int
    remaining: int
    reset_seconds: int
    policy: Policy
    wait_seconds: int = 0

    @property
    def refused(self) -> bool:
        """Whether this policy refused the request."""
        return self.wait_seconds > 0


@dataclass(frozen=True)
class RateLimitStatus:
    """Where an allowed request leaves the policy that will refuse first:
    its ``limit`` per minute, the requests still allowed now
    (``remaining``), and the seconds until its whole quota is back
    (``reset_seconds``); ``policies`` holds every policy's status, the
    key's first (empty when not known: :func:`headers` then names this one
    policy only)."""

    limit: int
    remaining: int
    reset_seconds: int
    policy: Policy
    policies: tuple[PolicyStatus, ...] = ()


def outcome(row: Mapping[str, Any] | asyncpg.Record) -> RateLimitStatus:
    """The status of the policy that will refuse first, from a row of
    ``api_key_resolve``; :class:`RateLimitedError` when the request was
    refused."""
    policies = (
        PolicyStatus(
            row["key_limit"], row["key_remaining"], row["key_reset"], "key", row["key_wait"]
        ),
        PolicyStatus(
            row["tenant_limit"],
            row["tenant_remaining"],
            row["tenant_reset"],
            "tenant",
            row["tenant_wait"],
        ),
    )
    if not row["allowed"]:
        refusing = [status for status in policies if status.refused] or list(policies)
        # The longest wait: the client may come back only once both allow
        # it (max() keeps the first of equals: the key's).
        longest = max(refusing, key=lambda status: status.wait_seconds)
        raise RateLimitedError(
            longest.policy, longest.limit, max(1, longest.wait_seconds), policies
        )
    # min() keeps the first of equals: the key's.
    tightest = min(policies, key=lambda status: status.remaining)
    return RateLimitStatus(
        tightest.limit, tightest.remaining, tightest.reset_seconds, tightest.policy, policies
    )


def _item(policy: str, parameters: Mapping[str, int]) -> str:
    # A Structured Field item: a String (policy names are plain ASCII
    # words) with Integer parameters.
    return f'"{policy}"' + "".join(f";{name}={value}" for name, value in parameters.items())


def _fields(policies: list[tuple[Policy, int, int, int]]) -> dict[str, str]:
    # (policy, quota, remaining, effective window) -> the two list fields.
    return {
        "RateLimit-Policy": ", ".join(
            _item(policy, {"q": quota, "w": PERIOD_SECONDS}) for policy, quota, _, _ in policies
        ),
        "RateLimit": ", ".join(
            _item(policy, {"r": remaining, "t": window})
            for policy, _, remaining, window in policies
        ),
    }


def headers(result: RateLimitStatus | RateLimitedError) -> dict[str, str]:
    """The response header fields of an allowed request's status, or of a
    refusal: ``RateLimit-Policy`` and ``RateLimit`` (draft-11's form, one
    item per policy), and ``Retry-After`` for a refusal."""
    if isinstance(result, RateLimitedError):
        retry_after = result.retry_after_seconds
        if result.policies:
            items = [
                (s.policy, s.limit, 0, min(max(1, s.wait_seconds), retry_after))
                if s.refused
                else (s.policy, s.limit, s.remaining, s.reset_seconds)
                for s in result.policies
            ]
        else:
            items = [(result.policy, result.limit, 0, retry_after)]
        return {**_fields(items), "Retry-After": str(retry_after)}
    statuses = result.policies or (
        PolicyStatus(result.limit, result.remaining, result.reset_seconds, result.policy),
    )
    return _fields([(s.policy, s.limit, s.remaining, s.reset_seconds) for s in statuses])


def violated_policies(error: RateLimitedError) -> list[str]:
    """The draft's ``violated-policies`` member of a 429 problem: every
    policy that refused (the one that makes the client wait longest when
    they are not known)."""
    refusing: list[str] = [status.policy for status in error.policies if status.refused]
    return refusing or [error.policy]
