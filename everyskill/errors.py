"""The errors the query API raises: a small typed hierarchy.

Contract
--------
- Every error the API raises on purpose is an :class:`EverySkillError`; its
  message says what was wrong and what to do about it. It never contains a
  secret the caller passed in (text fields are named, not quoted).
- :class:`ValidationError` -- the input was refused before anything was
  written. ``problems`` lists ``(field, reason)`` pairs; ``field`` and
  ``reason`` are the first of them.
  :func:`check_id` is the check every id argument gets.
- :class:`NotFoundError` -- a row named by id does not exist in the current
  tenant (another tenant's row is, for this tenant, not there). ``field``
  names the input that named it, when there is one. A call that looks up
  several rows at once may report every one it did not find in one error
  (``more``): ``missing`` lists them all as ``(id, field)``, the error's
  own first, and the message names the first few.
- :class:`TenantScopeError` -- the call needs a tenant scope and has none, or
  asks for another tenant inside one.
- :class:`NotPermittedError` -- the application role may not read or write
  these columns (``table``, ``columns``, ``privilege``): an id, a tenant, a
  creation time, a stamp or aggregate PostgreSQL maintains, a staff login.
  Raised for Piccolo queries run in a tenant scope; the API never asks.
- :class:`InvalidTransitionError` -- the row is not in a state from which the
  requested change makes sense. :class:`RunNotRunningError` is one: results
  were recorded for a benchmark run that is not running.
- :class:`ConflictError` -- another writer got there first (a concurrent
  review, a duplicate, a row still referenced, a deadlock or serialisation
  failure); retrying with fresh data may succeed. ``field`` names the input
  to change when there is one: the value a unique key of the catalogue
  already holds (a user's ``email``, a skill's ``slug``, a version's
  ``version``, a tenant's ``slug``).
- :class:`AlreadyReviewedError` is both: the feedback was reviewed by someone
  else before this review. Two reviewers racing on one item therefore always
  leave the loser with a :class:`ConflictError`, however their calls
  interleave.
- :class:`AuthenticationError` -- an HTTP API key was refused. ``reason``
  is ``"missing"`` (no key given), ``"malformed"`` (not an ``esk_`` key
  whose checksum holds: a typo or a truncated copy) or ``"invalid"``
  (well-formed, but unknown, revoked or expired: deliberately one reason,
  see :mod:`everyskill.api_keys`). The message never quotes the key.
- :class:`RateLimitedError` -- an HTTP API key made more requests than its
  limit or its tenant's allows (see :mod:`everyskill.rate_limits`); nothing
  was counted. ``retry_after_seconds`` (at least 1) says when a request will
  be allowed again; ``policy`` (``"key"`` or ``"tenant"``), ``limit``,
  ``remaining`` (0) and ``reset_seconds`` describe the limit that refused;
  ``policies`` where the request left each policy (for the headers).
- :class:`DatabaseUnavailableError` -- the database could not be reached, or
  the connection to it was lost (a restart, a crash, a network failure).
  ``during`` says when: ``"connect"`` (the scope did not start, nothing was
  written), ``"call"`` (the scope's transaction was not committed: nothing of
  it was written) or ``"commit"`` (lost while committing: the outcome is
  unknown, and ``outcome_unknown`` is true). In the first two cases the call
  can be retried as it is; after a commit whose outcome is unknown, check what
  was written first.
- Text PostgreSQL cannot store (a NUL character, an unpaired surrogate) is a
  :class:`ValidationError` too, whether a check (:func:`check_id`,
  :func:`storable`) or the database finds it.
- :func:`from_database_error` turns an ``asyncpg`` constraint error into the
  matching typed error, so that a rule the database enforces reads the same
  as one checked in Python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import asyncpg
import pydantic

if TYPE_CHECKING:
    from everyskill.rate_limits import PolicyStatus


class EverySkillError(Exception):
    """Base class of the errors the EverySkill API raises."""


class ValidationError(EverySkillError, ValueError):
    """Input refused before anything was written."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        if not problems:
            raise ValueError("a ValidationError needs at least one problem")
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        self.field, self.reason = self.problems[0]
        super().__init__(
            "invalid input: "
            + "; ".join(f"{field}: {reason}" for field, reason in self.problems)
        )

    @classmethod
    def of(cls, field: str, reason: str) -> ValidationError:
        """One problem with one field."""
        return cls([(field, reason)])

    @classmethod
    def from_pydantic(cls, error: pydantic.ValidationError) -> ValidationError:
        """The problems pydantic found, one per field, without the values."""
        problems = []
        for detail in error.errors(include_input=False, include_url=False):
            field = ".".join(str(part) for part in detail["loc"]) or "input"
            reason = detail["msg"].removeprefix("Value error, ")
            problems.append((field, reason))
        return cls(problems)


def check_id(field: str, value: object) -> None:
    """ValidationError on ``field`` unless ``value`` is a non-empty string
    PostgreSQL can store."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError.of(field, "must be a non-empty string")
    if not storable(value):
        raise ValidationError.of(field, UNSTORABLE)


#: Why text PostgreSQL cannot hold is refused.
UNSTORABLE = "must not contain NUL characters or unpaired surrogates: PostgreSQL cannot store them"


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: no NUL, valid UTF-8 (no lone
    surrogates)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable_input(inputs: Mapping[str, object] | None) -> ValidationError:
    """The ValidationError of text PostgreSQL (or asyncpg) refused to store:
    naming the first of ``inputs`` that holds such text, else ``input``."""
    for name, value in (inputs or {}).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(item, str) and not storable(item) for item in values):
            return ValidationError.of(name, UNSTORABLE)
    return ValidationError.of("input", UNSTORABLE)


class NotFoundError(EverySkillError, LookupError):
    """A row named by id does not exist in the current tenant; ``more``
    names other rows of the same kind the call did not find either, each as
    ``(id, field)`` (see the module's contract)."""

    #: How many of ``more`` the message names; ``missing`` has them all.
    SHOWN = 5

    def __init__(
        self,
        kind: str,
        id: object,
        field: str | None = None,
        *,
        more: Sequence[tuple[object, str | None]] = (),
    ) -> None:
        self.kind = kind
        self.id = id
        self.field = field
        self.missing: tuple[tuple[object, str | None], ...] = ((id, field), *more)
        message = f"{kind} {id!r} not found in this tenant{_where(field)}"
        if more:
            shown = ", ".join(f"{other!r}{_where(named)}" for other, named in more[: self.SHOWN])
            rest = f" and {len(more) - self.SHOWN} more" if len(more) > self.SHOWN else ""
            message += f"; nor are {shown}{rest}"
        super().__init__(message)


def _where(field: str | None) -> str:
    return f" (from {field})" if field else ""


class TenantScopeError(EverySkillError, RuntimeError):
    """A tenant operation without a valid tenant scope."""


class NotPermittedError(EverySkillError, PermissionError):
    """The application role may not ``privilege`` (SELECT, INSERT, UPDATE or
    DELETE) these ``columns`` of ``table`` (all of it when ``columns`` is
    empty)."""

    def __init__(
        self, table: str, privilege: str, columns: Sequence[str], advice: str = ""
    ) -> None:
        self.table = table
        self.privilege = privilege
        self.columns = tuple(columns)
        verb = {"SELECT": "read", "INSERT": "insert", "UPDATE": "change", "DELETE": "delete", "": "use"}
        what = (
            ", ".join(f"{table}.{column}" for column in self.columns)
            if self.columns
            else f"rows of {table}"
        )
        super().__init__(
            f"the application may not {verb.get(privilege, privilege.lower())} {what}"
            + (f": {advice}" if advice else "")
        )


class InvalidTransitionError(EverySkillError):
    """The requested change does not make sense from the row's current state."""

    def __init__(self, kind: str, id: str, current: str, wanted: str, allowed_from: Sequence[str]) -> None:
        self.kind = kind
        self.id = id
        self.current = current
        self.wanted = wanted
        self.allowed_from = tuple(allowed_from)
        allowed = " or ".join(self.allowed_from) or "no state"
        super().__init__(
            f"{kind} {id!r} is {current}: it can become {wanted} only from {allowed}"
        )


class RunNotRunningError(InvalidTransitionError):
    """Results were recorded for a benchmark run that is not running."""

    def __init__(self, run_id: str, current: str) -> None:
        super().__init__("benchmark run", run_id, current, "record results", ["running"])
        self.args = (
            f"benchmark run {run_id!r} is {current}: results are recorded only while a"
            " run is running (start it first; a completed or failed run is final)",
        )


class ConflictError(EverySkillError):
    """Another writer changed the same data first; retry with fresh data.

    ``field`` names the input that conflicts (a duplicate slug or email), or
    is None when no one input does (a concurrent change).
    """

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AlreadyReviewedError(InvalidTransitionError, ConflictError):
    """The feedback was already reviewed (by someone else, or earlier)."""

    def __init__(
        self,
        kind: str,
        id: str,
        current: str,
        wanted: str,
        allowed_from: Sequence[str],
        reviewed_by: str | None,
        reviewed_at: object,
    ) -> None:
        super().__init__(kind, id, current, wanted, allowed_from)
        self.reviewed_by = reviewed_by
        self.reviewed_at = reviewed_at
        self.args = (
            f"{kind} {id!r} was already {current} by user {reviewed_by!r} at "
            f"{reviewed_at}; reload it before reviewing again",
        )


class AuthenticationError(EverySkillError, PermissionError):
    """An HTTP API key was refused; ``reason`` says how (see the module's
    contract). Unknown, revoked and expired keys share one reason and one
    message: whoever holds a key that does not work learns nothing about
    whether it ever existed; the tenant's staff see which it is in the key's
    row (``revoked_at``, ``expires_at``)."""

    MESSAGES = {
        "missing": "no API key was given: send Authorization: Bearer esk_...",
        "malformed": (
            "the API key is not well-formed (esk_ followed by 38 letters and digits whose"
            " last 6 are a checksum): check that it was copied whole"
        ),
        "invalid": (
            "the API key is not valid: it is unknown, revoked or expired; ask for a new key"
        ),
    }

    def __init__(self, reason: Literal["missing", "malformed", "invalid"]) -> None:
        self.reason = reason
        super().__init__(self.MESSAGES[reason])


class RateLimitedError(EverySkillError):
    """A request over its key's or its tenant's rate limit; it was not
    counted. ``retry_after_seconds`` (at least 1) is when one will be allowed
    again; ``policy`` names the limit that refused (``"key"`` or
    ``"tenant"``; the one that makes the client wait longest when both do),
    ``limit`` its requests per minute, ``remaining`` 0, and
    ``reset_seconds`` the effective window of the refusal: no request is
    allowed within it (it equals ``retry_after_seconds``). ``policies`` is
    where the refused request left every policy, the key's first (see
    :class:`everyskill.rate_limits.PolicyStatus`; empty when not known)."""

    def __init__(
        self,
        policy: Literal["key", "tenant"],
        limit: int,
        retry_after_seconds: int,
        policies: Sequence[PolicyStatus] = (),
    ) -> None:
        if retry_after_seconds < 1:
            raise ValueError("a RateLimitedError needs retry_after_seconds >= 1")
        self.policy = policy
        self.limit = limit
        self.remaining = 0
        self.retry_after_seconds = retry_after_seconds
        self.reset_seconds = retry_after_seconds
        self.policies: tuple[PolicyStatus, ...] = tuple(policies)
        whose = "this API key" if policy == "key" else "this API key's tenant (all its keys together)"
        super().__init__(
            f"rate limit exceeded: {whose} may make {limit} requests per minute;"
            f" retry after {retry_after_seconds} s"
        )


class DatabaseUnavailableError(EverySkillError):
    """The database could not be reached, or the connection was lost.

    ``during`` is ``"connect"``, ``"call"`` or ``"commit"`` (see the module's
    contract); ``cause`` names the underlying error. ``outcome_unknown`` is
    true only when the connection was lost while committing: the server may
    or may not have committed before it went away.
    """

    def __init__(self, during: Literal["connect", "call", "commit"], cause: str) -> None:
        self.during = during
        self.cause = cause
        self.outcome_unknown = during == "commit"
        if during == "connect":
            message = (
                f"could not reach the database ({cause}): the tenant scope was not"
                " opened and nothing was written; the call can be retried once the"
                " database is back"
            )
        elif during == "call":
            message = (
                f"the connection to the database was lost during the call ({cause}):"
                " the transaction was not committed, so nothing of it was written (nor"
                " by earlier calls in the same tenant scope); the call can be retried"
                " in a new tenant scope"
            )
        else:
            message = (
                "the connection to the database was lost while the transaction was"
                f" committing ({cause}): the outcome is unknown, it may or may not have"
                " been committed; check what was written before retrying, since a"
                " retry may write it twice"
            )
        super().__init__(message)


# Table name -> the kind of row it holds, for messages.
_KINDS = {
    "tenants": "tenant",
    "users": "user",
    "skills": "skill",
    "skill_versions": "skill version",
    "skill_feedback": "feedback",
    "model_prices": "model price",
    "token_measurements": "token measurement",
    "benchmark_runs": "benchmark run",
    "benchmark_results": "benchmark result",
}
# "permission denied for table skills"
_DENIED_TABLE = re.compile(r"permission denied for (?:table|relation|view) (?P<table>\S+)")
# Unique keys of the catalogue -> the input a duplicate must change. (With
# row-level security PostgreSQL leaves the key's values out of the error.)
_UNIQUE_FIELDS = {
    "tenants_slug_key": "slug",
    "users_tenant_id_email_key": "email",
    "skills_tenant_id_slug_key": "slug",
    "skill_versions_skill_id_version_key": "version",
}
# "Key (tenant_id, skill_id)=(t1, s1) is not present in table "skills"."
_KEY_DETAIL = re.compile(r"Key \((?P<columns>[^)]*)\)=\((?P<values>.*)\) is not present")


def from_database_error(
    error: asyncpg.PostgresError, inputs: Mapping[str, object] | None = None
) -> EverySkillError | None:
    """The typed error for a database error, or None if it has none.

    ``inputs`` are the call's values by column name: PostgreSQL leaves the
    key out of a foreign-key error when row-level security guards the
    referenced table, so the id is taken from them.
    """
    if isinstance(error, asyncpg.ForeignKeyViolationError):
        detail = error.detail or ""
        if "is still referenced from table" in detail:
            # A delete or key change of a row others point at.
            child = detail.rsplit('table "', 1)[-1].rstrip('".')
            return ConflictError(
                f"{_KINDS.get(error.table_name or '', 'row')} is still referenced by"
                f" {_KINDS.get(child, child)} rows; remove or move those first"
            )
        target = detail.rsplit('table "', 1)[-1].rstrip('".') if 'table "' in detail else ""
        kind = _KINDS.get(target, target or "row")
        # Foreign keys are named <table>_<column>[_tenant]_fkey.
        constraint = error.constraint_name or ""
        field = (
            constraint.removeprefix(f"{error.table_name}_")
            .removesuffix("_fkey")
            .removesuffix("_tenant")
        )
        match = _KEY_DETAIL.search(detail)
        if match:
            # The last column is the reference itself; tenant_id and the
            # skill of a (tenant, skill, version) key come before it.
            field = match["columns"].split(",")[-1].strip()
            return NotFoundError(kind, match["values"].split(",")[-1].strip(), field)
        return NotFoundError(kind, (inputs or {}).get(field), field or None)
    if isinstance(error, asyncpg.CheckViolationError):
        # Constraints are named <table>_<what>_check.
        constraint = error.constraint_name or ""
        field = error.column_name or constraint.removeprefix(
            f"{error.table_name}_"
        ).removesuffix("_check")
        return ValidationError.of(
            field or "input", f"refused by the database rule {constraint}: {error.message}"
        )
    if isinstance(error, asyncpg.CharacterNotInRepertoireError):
        return unstorable_input(inputs)
    if isinstance(error, asyncpg.NotNullViolationError):
        return ValidationError.of(error.column_name or "input", "is required")
    if isinstance(error, asyncpg.UniqueViolationError):
        kind = _KINDS.get(error.table_name or "", "row")
        duplicate = _UNIQUE_FIELDS.get(error.constraint_name or "")
        if duplicate is not None:
            return ConflictError(
                f"a {kind} with this {duplicate} already exists ({error.constraint_name}):"
                f" choose another {duplicate}",
                field=duplicate,
            )
        return ConflictError(f"{kind} already exists ({error.constraint_name})")
    if isinstance(
        error,
        (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, asyncpg.LockNotAvailableError),
    ):
        return ConflictError(f"concurrent change, retry: {error.__class__.__name__}")
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        message = error.message or ""
        if "row-level security" in message:
            return TenantScopeError(
                "the database refused the change for this tenant "
                f"({message}); rows of another tenant cannot be written"
            )
        table = _DENIED_TABLE.search(message)
        if table is not None:
            # The role lacks the privilege: the scope's role was dropped
            # (RESET ROLE), or the statement touches what it may not.
            return NotPermittedError(table["table"], "", (), message)
    return None
