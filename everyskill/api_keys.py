"""The HTTP API's keys: their format, their creation and revocation by staff,
and how a request's key is resolved to a tenant and scopes.

Contract
--------
- **Format** (:func:`generate_key`, pure): ``esk_`` then 32 base62 characters
  drawn with :mod:`secrets` (32 x log2(62) = 190.5 bits) then a 6-character
  checksum: the CRC32 of those 32 characters, base62-encoded and zero-padded
  (62**6 > 2**32). 42 characters in all, letters, digits and one underscore.
  This is the design of GitHub's token formats ("Behind GitHub's new
  authentication token formats", github.blog, 2021-04-05: a type prefix
  ending in ``_``, base62 entropy, a CRC32 checksum in the last 6
  characters): a secret scanner recognises a well-formed key by its prefix
  and checksum without asking the database, and the underscore makes a
  double click select the whole key.
- :func:`is_well_formed` checks the shape and the checksum only, without the
  database. Any change of one character makes it false (CRC32 detects every
  error of one byte).
- **Display prefix**: the first 8 characters after ``esk_``
  (:data:`DISPLAY_PREFIX_LENGTH`) are stored in the clear
  (``api_keys.key_prefix``, unique) so that staff can name a key (listing,
  revoking); the other 24 secret characters (142.9 bits) are what an
  attacker would have to guess.
- **Storage**: only the SHA-256 of the whole key (:func:`key_hash`, 32
  bytes) is stored. A key is returned once, by :func:`create_api_key`; it
  cannot be read back.
- **Staff operations** run as the owner, on the engine ``ApiKey`` is bound
  to (``piccolo_conf``'s), each one statement (one transaction; should a
  new key's display prefix be taken already, a new key is drawn and the
  statement run again):
  :func:`create_api_key` (a tenant by slug or id; a name, whose secrets
  are redacted (:mod:`everyskill.redaction`); scopes from
  :data:`SCOPES`; optional expiry in days and rate limit per minute),
  :func:`revoke_api_key` (by display prefix; revoking again keeps the first
  revocation time), :func:`list_api_keys` (never the hash). Bad input is a
  :class:`~everyskill.errors.ValidationError` naming the field, and so is a
  tenant or a prefix that names nothing (``tenant``, ``prefix``: these are
  staff's input, not rows of a tenant).
- **Resolving** (:func:`resolve`, for the HTTP API): on the application's
  engine (:func:`everyskill.database.app_engine`, as ``everyskill_api``),
  outside any tenant scope (:class:`~everyskill.errors.TenantScopeError`
  inside one), one statement (one round trip) that resolves the key and
  counts the request against the key's and its tenant's rate limits (the
  pooled connection goes back without the pool's session reset: the
  statement leaves nothing on the session), the
  SECURITY DEFINER function ``api_key_resolve(key_hash)``, the login's only
  privilege of its own; it cannot read ``api_keys`` nor the counters. A key
  that works gives a :class:`ResolvedKey` (key id, tenant id, scopes, the
  key's limit, and ``rate_limit``: the
  :class:`~everyskill.rate_limits.RateLimitStatus` for the response's
  headers), or :class:`~everyskill.errors.RateLimitedError` when the request
  is over a limit (see :mod:`everyskill.rate_limits`: algorithm, defaults,
  headers); otherwise
  :class:`~everyskill.errors.AuthenticationError`: ``"malformed"`` when the
  checksum fails (no database round trip), ``"invalid"`` for a key that is
  unknown, revoked or expired: one reason and one message for the three,
  so that whoever holds a key that does not work learns nothing about
  whether it ever existed (the function itself returns nothing in each
  case; the tenant's staff see which it is in the key's row); ``"missing"``
  for no key at all (and ``"invalid"`` for a key deleted while it is
  resolved). A database that cannot be reached, is restarting or shutting
  down, cancels the statement or lacks resources is a
  :class:`~everyskill.errors.DatabaseUnavailableError`; a deadlock or
  serialisation failure (nothing counted) a
  :class:`~everyskill.errors.ConflictError`, which a retry may clear. ``last_used_at`` is
  stamped by the resolution at most once a minute per key (one write a
  minute for a busy key, not one per request), so it is exact to the
  minute; it is stamped for a request over the limit too (the key was
  used).
- ``piccolo everyskill create_api_key --tenant SLUG --name NAME --scopes a,b
  [--expires-in-days N] [--rate-limit-per-minute N]`` prints the key alone
  on stdout (what else it says goes to stderr); ``piccolo everyskill
  revoke_api_key PREFIX`` revokes one. A refused input exits with a non-zero
  status and the error's message on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import re
import secrets
import string
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from everyskill.errors import (
    UNSTORABLE,
    AuthenticationError,
    ConflictError,
    DatabaseUnavailableError,
    EverySkillError,
    ValidationError,
    check_id,
    storable,
)
from everyskill.rate_limits import RateLimitStatus, outcome
from everyskill.redaction import redact_fields_async
from everyskill.tenancy import _CONNECTION_ERRORS

__all__ = [
    "CHECKSUM_LENGTH",
    "DISPLAY_PREFIX_LENGTH",
    "KEY_LENGTH",
    "KEY_PREFIX",
    "SCOPES",
    "SECRET_LENGTH",
    "ApiKeyInfo",
    "CreatedApiKey",
    "ResolvedKey",
    "create_api_key",
    "generate_key",
    "is_well_formed",
    "key_hash",
    "list_api_keys",
    "resolve",
    "revoke_api_key",
]

#: What every key starts with.
KEY_PREFIX = "esk_"
#: Base62 characters of the random secret (190.5 bits).
SECRET_LENGTH = 32
#: Base62 characters of the CRC32 checksum.
CHECKSUM_LENGTH = 6
#: Characters after ``esk_`` stored in the clear to name a key.
DISPLAY_PREFIX_LENGTH = 8
KEY_LENGTH = len(KEY_PREFIX) + SECRET_LENGTH + CHECKSUM_LENGTH
#: The scopes a key may carry, in the order they are stored.
SCOPES = (
    "feedback:write",
    "feedback:review",
    "measurements:write",
    "benchmarks:write",
    "catalogue:write",
    "read",
)
#: Longest key name.
NAME_MAX = 100
#: Longest expiry, in days (ten years).
EXPIRY_MAX_DAYS = 3650
#: Highest rate limit (PostgreSQL's integer).
RATE_LIMIT_MAX = 2**31 - 1

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SHAPE = re.compile(rf"{KEY_PREFIX}[0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH}}}")
_DISPLAY_PREFIX = re.compile(
    rf"(?:{KEY_PREFIX})?([0-9A-Za-z]{{{DISPLAY_PREFIX_LENGTH}}})"
    rf"(?:[0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH - DISPLAY_PREFIX_LENGTH}}})?"
)
# A prefix taken by another key: a new secret is drawn (62**8 prefixes).
_PREFIX_TRIES = 5


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, _ALPHABET[0])


def _checksum(secret: str) -> str:
    return _base62(zlib.crc32(secret.encode("ascii")), CHECKSUM_LENGTH)


def generate_key() -> str:
    """A new key: ``esk_``, 32 random base62 characters, their checksum."""
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))
    return KEY_PREFIX + secret + _checksum(secret)


def is_well_formed(key: object) -> bool:
    """Whether ``key`` has the shape of a key and its checksum holds (no
    database: what a secret scanner checks)."""
    if not isinstance(key, str) or not _SHAPE.fullmatch(key):
        return False
    secret = key[len(KEY_PREFIX) : len(KEY_PREFIX) + SECRET_LENGTH]
    return secrets.compare_digest(_checksum(secret), key[-CHECKSUM_LENGTH:])


def key_hash(key: str) -> bytes:
    """What is stored of ``key``: the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def display_prefix(key: str) -> str:
    """The non-secret part of ``key`` that names it to staff."""
    return key[len(KEY_PREFIX) : len(KEY_PREFIX) + DISPLAY_PREFIX_LENGTH]


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key's row, without its hash."""

    id: str
    tenant_id: str
    name: str
    key_prefix: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None
    expires_at: datetime.datetime | None
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    created_at: datetime.datetime

    @property
    def display(self) -> str:
        """How staff name the key: ``esk_`` and its prefix."""
        return KEY_PREFIX + self.key_prefix


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key (shown this once: it is not stored) and its row."""

    key: str = field(repr=False)
    info: ApiKeyInfo


@dataclass(frozen=True)
class ResolvedKey:
    """What a working key stands for, and where its request leaves the rate
    limits: ``rate_limit_per_minute`` is the key's own limit (the default
    when it has none), ``rate_limit`` the status of the policy (key or
    tenant) that will refuse first, for the response's headers
    (:func:`everyskill.rate_limits.headers`)."""

    key_id: str
    tenant_id: str
    scopes: frozenset[str]
    rate_limit_per_minute: int
    rate_limit: RateLimitStatus

    def allows(self, scope: str) -> bool:
        """Whether the key carries ``scope``."""
        return scope in self.scopes


_COLUMNS = (
    "k.id, k.tenant_id, k.name, k.key_prefix, k.scopes, k.rate_limit_per_minute,"
    " k.expires_at, k.last_used_at, k.revoked_at, k.created_at"
)


def _info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        key_prefix=row["key_prefix"],
        scopes=tuple(row["scopes"]),
        rate_limit_per_minute=row["rate_limit_per_minute"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
        created_at=row["created_at"],
    )


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError.of("name", "must be a non-empty string (what the key is for)")
    if not storable(name):
        raise ValidationError.of("name", UNSTORABLE)
    name = name.strip()
    if len(name) > NAME_MAX:
        raise ValidationError.of("name", f"must be at most {NAME_MAX} characters")
    return name


def _check_scopes(scopes: object) -> list[str]:
    if isinstance(scopes, str):
        items: Iterable[object] = scopes.split(",")
    elif isinstance(scopes, (list, tuple, set, frozenset)):
        items = scopes
    else:
        raise ValidationError.of("scopes", f"must be a list of scopes among {', '.join(SCOPES)}")
    given = set()
    for item in items:
        scope = item.strip() if isinstance(item, str) else item
        if scope not in SCOPES:
            shown = repr(scope) if isinstance(scope, str) and len(scope) <= 40 else "a value"
            raise ValidationError.of(
                "scopes", f"{shown} is not a scope: use {', '.join(SCOPES)}"
            )
        given.add(scope)
    if not given:
        raise ValidationError.of("scopes", f"must name at least one of {', '.join(SCOPES)}")
    return [scope for scope in SCOPES if scope in given]


def _check_positive(field_name: str, value: object, highest: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError.of(field_name, "must be a whole number")
    if not 1 <= value <= highest:
        raise ValidationError.of(field_name, f"must be between 1 and {highest}")
    return value


def _no_tenant(tenant: str) -> ValidationError:
    shown = repr(tenant) if len(tenant) <= 100 else "given"
    return ValidationError.of("tenant", f"no tenant has the slug or id {shown}")


def _owner_table() -> Any:
    from tables import ApiKey

    return ApiKey


async def create_api_key(
    tenant: str,
    name: str,
    scopes: Sequence[str] | str,
    expires_in_days: int | None = None,
    rate_limit_per_minute: int | None = None,
) -> CreatedApiKey:
    """Create a key for ``tenant`` (its slug or id), as the owner; the key is
    in the result and nowhere else. See the module's contract."""
    check_id("tenant", tenant)
    clean_name = _check_name(name)
    # The name is typed by a person: a secret pasted into it is not kept.
    redacted, _found = await redact_fields_async({"name": clean_name})
    clean_name = str(redacted["name"])
    if len(clean_name) > NAME_MAX:
        raise ValidationError.of(
            "name",
            f"must be at most {NAME_MAX} characters once the secret in it is replaced by a"
            " marker: shorten it (and keep secrets out of names)",
        )
    clean_scopes = _check_scopes(scopes)
    days = _check_positive("expires_in_days", expires_in_days, EXPIRY_MAX_DAYS)
    limit = _check_positive("rate_limit_per_minute", rate_limit_per_minute, RATE_LIMIT_MAX)
    table = _owner_table()
    for tried in range(1, _PREFIX_TRIES + 1):
        key = generate_key()
        try:
            rows = await table.raw(
                "INSERT INTO api_keys AS k (tenant_id, name, key_prefix, key_hash, scopes,"
                " rate_limit_per_minute, expires_at)"
                " SELECT t.id, {}, {}, {}, {}::text[], {}::integer,"
                "        now() + make_interval(days => {}::integer)"
                "   FROM tenants t WHERE t.slug = {} OR t.id = {}"
                "  ORDER BY t.id = {} DESC LIMIT 1"
                f" RETURNING {_COLUMNS}",
                clean_name,
                display_prefix(key),
                key_hash(key),
                clean_scopes,
                limit,
                days,
                tenant,
                tenant,
                tenant,
            )
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name == "api_keys_key_prefix_key" and tried < _PREFIX_TRIES:
                continue
            raise
        if not rows:
            raise _no_tenant(tenant)
        return CreatedApiKey(key=key, info=_info(rows[0]))
    raise AssertionError("unreachable")


async def revoke_api_key(prefix: str) -> ApiKeyInfo:
    """Revoke the key whose display prefix is ``prefix`` (with or without
    ``esk_``; a whole key works too), as the owner. Revoking a revoked key
    keeps its first revocation time."""
    if not isinstance(prefix, str):
        raise ValidationError.of("prefix", "must be a string")
    match = _DISPLAY_PREFIX.fullmatch(prefix.strip())
    if match is None:
        raise ValidationError.of(
            "prefix",
            f"must be the {DISPLAY_PREFIX_LENGTH} letters and digits after esk_"
            " (as listed for the key)",
        )
    rows = await _owner_table().raw(
        "UPDATE api_keys AS k SET revoked_at = coalesce(k.revoked_at, now())"
        f" WHERE k.key_prefix = {{}} RETURNING {_COLUMNS}",
        match.group(1),
    )
    if not rows:
        raise ValidationError.of("prefix", f"no API key has the prefix {KEY_PREFIX}{match.group(1)}")
    return _info(rows[0])


async def list_api_keys(tenant: str) -> list[ApiKeyInfo]:
    """Every key of ``tenant`` (its slug or id), newest first, as the owner;
    revoked and expired keys included, their hashes never."""
    check_id("tenant", tenant)
    rows = await _owner_table().raw(
        "WITH t AS (SELECT id FROM tenants WHERE slug = {} OR id = {}"
        "           ORDER BY id = {} DESC LIMIT 1)"
        f" SELECT t.id AS found, {_COLUMNS}"
        "   FROM t LEFT JOIN api_keys k ON k.tenant_id = t.id"
        "  ORDER BY k.created_at DESC, k.id DESC",
        tenant,
        tenant,
        tenant,
    )
    if not rows:
        raise _no_tenant(tenant)
    return [_info(row) for row in rows if row["id"] is not None]


_RESOLVE = "SELECT * FROM api_key_resolve($1::bytea)"
# The connection was not made or was lost: every error a tenant scope counts
# as a lost database (a restart, a crash, a start-up, too many connections,
# the network), and asyncpg's refusal to use a connection it saw close.
_LOST = (*_CONNECTION_ERRORS, asyncpg.InterfaceError)
# The server refused the work for now: a cancelled statement (a timeout, an
# operator), too many connections, out of memory or disk.
_BUSY = (asyncpg.OperatorInterventionError, asyncpg.InsufficientResourcesError)


async def resolve(key: object) -> ResolvedKey:
    """The tenant and scopes of a request's key (the ``esk_...`` after
    ``Bearer``), the request counted against the rate limits; or
    :class:`AuthenticationError`, or :class:`RateLimitedError` (nothing
    counted). See the module's contract."""
    from everyskill.database import app_engine
    from everyskill.tenancy import ScopeConnection, refuse_inside_scope

    refuse_inside_scope(
            "an API key is resolved before the tenant is known: call resolve() outside"
            " any tenant scope"
        )
    if key is None or key == "":
        raise AuthenticationError("missing")
    if not is_well_formed(key):
        raise AuthenticationError("malformed")
    assert isinstance(key, str)
    digest = key_hash(key)
    engine = app_engine()
    try:
        if engine.pool is not None:
            # A bounded wait for a pooled connection (DatabaseUnavailableError).
            connection = await engine.acquire()
            try:
                row = await connection.fetchrow(_RESOLVE, digest)
                if isinstance(connection, ScopeConnection):
                    # The statement leaves nothing on the session (the
                    # function's search_path is its own): the pool's reset
                    # would be a round trip for nothing.
                    connection.note_reset_done()
            finally:
                await engine.pool.release(connection)
        else:
            connection = await engine.get_new_connection()
            try:
                row = await connection.fetchrow(_RESOLVE, digest)
            finally:
                await connection.close()
    except (*_LOST, *_BUSY) as error:
        raise DatabaseUnavailableError("connect", f"{type(error).__name__}: {error}") from error
    except asyncpg.ForeignKeyViolationError:
        # The key or its tenant was deleted while its first counter was
        # being made: the key no longer exists.
        raise AuthenticationError("invalid") from None
    except (asyncpg.TransactionRollbackError, asyncpg.LockNotAvailableError) as error:
        # A deadlock or serialisation failure: the statement was rolled
        # back, nothing was counted; a retry may succeed.
        raise ConflictError(
            f"the API key could not be resolved because of a concurrent change"
            f" ({type(error).__name__}): nothing was counted; retry the request"
        ) from error
    if row is None:
        raise AuthenticationError("invalid")
    status = outcome(row)
    return ResolvedKey(
        key_id=row["key_id"],
        tenant_id=row["tenant_id"],
        scopes=frozenset(row["scopes"]),
        rate_limit_per_minute=row["key_limit"],
        rate_limit=status,
    )


def _fail(error: EverySkillError) -> None:
    print(error, file=sys.stderr)
    raise SystemExit(1)


def _create_options(argv: Sequence[str]) -> argparse.Namespace:
    """The options of ``create_api_key`` on a command line: ``--tenant SLUG``
    and ``--tenant=SLUG`` alike, dashes or underscores in the names."""
    parser = argparse.ArgumentParser(prog="piccolo everyskill create_api_key", add_help=False)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--scopes", required=True)
    parser.add_argument("--expires-in-days", "--expires_in_days", type=int, default=None)
    parser.add_argument(
        "--rate-limit-per-minute", "--rate_limit_per_minute", type=int, default=None
    )
    return parser.parse_args(list(argv))


async def create_api_key_command(
    tenant: str = "",
    name: str = "",
    scopes: str = "",
    expires_in_days: str = "",
    rate_limit_per_minute: str = "",
    **_others: str,
) -> None:
    """Create an HTTP API key; print it (it is shown this once, never stored).

    :param tenant:
        The tenant's slug (or id).
    :param name:
        What the key is for, e.g. laptop-hook.
    :param scopes:
        Comma-separated: feedback:write, feedback:review, measurements:write,
        benchmarks:write, catalogue:write, read.
    :param expires_in_days:
        Days until the key stops working; none: it does not expire.
    :param rate_limit_per_minute:
        Requests per minute for this key; none: the default limit.
    """
    # Piccolo's command line (targ) takes --option=value only, and maps the
    # words of "--option value" by position: the options are read from the
    # command line itself, so that both forms mean what they say.
    argv = sys.argv
    if "create_api_key" in argv:
        options = _create_options(argv[argv.index("create_api_key") + 1 :])
    else:
        options = argparse.Namespace(
            tenant=tenant,
            name=name,
            scopes=scopes,
            expires_in_days=int(expires_in_days) if expires_in_days else None,
            rate_limit_per_minute=int(rate_limit_per_minute) if rate_limit_per_minute else None,
        )
    try:
        created = await create_api_key(
            options.tenant,
            options.name,
            options.scopes,
            options.expires_in_days,
            options.rate_limit_per_minute,
        )
    except ValidationError as error:
        _fail(error)
        return
    print(
        f"Created {created.info.display} ({created.info.name}) for tenant"
        f" {created.info.tenant_id}. The key is printed on stdout once: it is not stored.",
        file=sys.stderr,
    )
    print(created.key)


async def revoke_api_key_command(prefix: str) -> None:
    """Revoke an HTTP API key; it stops working at once.

    :param prefix:
        The key's prefix: the 8 characters after esk_ (esk_ may be included).
    """
    try:
        info = await revoke_api_key(prefix)
    except ValidationError as error:
        _fail(error)
        return
    print(f"Revoked {info.display} ({info.name}) at {info.revoked_at:%Y-%m-%d %H:%M:%S %Z}.")
