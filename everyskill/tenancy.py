"""Tenant isolation: how the application acts for one tenant.

Contract
--------
- The application connects as the owner (the role in ``DATABASE_URL``, see
  :mod:`everyskill.database`). Each tenant operation is one transaction that
  first switches to :data:`APP_ROLE` and sets :data:`TENANT_SETTING` to the
  tenant's id, both with transaction scope (``SET LOCAL`` semantics). Nothing
  survives the transaction, so pooled connections and PgBouncer in
  transaction mode are safe.
- :data:`APP_ROLE` (created by the migrations) is not a superuser, cannot log
  in, has NOBYPASSRLS and owns nothing: PostgreSQL's row-level security confines
  it to the rows whose ``tenant_id`` equals the setting. With the setting unset
  or empty it reads and writes nothing. A query that forgets a tenant filter
  still sees one tenant.
- :func:`tenant_scope` is how the query API is used: ``async with
  tenant_scope(tenant_id):`` opens one such transaction on the Piccolo
  engine (its pool when started) and makes it the current scope of the task.
  Every API call inside it runs in that transaction, as the application role.
  Piccolo queries run inside it too, under the same row-level security.
  - Nested with the same tenant, it reuses the open scope (no new
    transaction). Nested with another tenant, or opened inside a transaction
    that is not a tenant scope, it raises :class:`TenantScopeError` without
    touching the database.
  - It commits when the block ends and rolls back when the block raises.
    Cancelled at any moment (while it begins, runs or ends), it still gives
    its connection back to the pool before the task ends.
- :func:`operation` is how each API call uses the scope: with no scope it
  raises :class:`TenantScopeError` before touching the database. Each call
  runs in a savepoint, so a call that fails leaves nothing half-written and
  the scope usable; database constraint errors come out typed (see
  :mod:`everyskill.errors`). A call's savepoint is released by the next call
  (in the same round trip as its own), or nested after savepoints set since
  by others on the connection taken from the scope (``scope.connection``,
  Piccolo's queries): those stay usable. A call after the transaction was
  committed or rolled back by hand raises :class:`TenantScopeError`, and so
  does the end of a scope whose transaction an error caught in the block had
  aborted (PostgreSQL would silently roll it back). Calls made concurrently within one scope (for
  example with ``asyncio.gather``) take turns on its connection.
- A lost database (a restart, a crash, a network failure) comes out of API
  calls and of the scope as :class:`~everyskill.errors.DatabaseUnavailableError`,
  not as a raw asyncpg or OS error, and is never hidden behind a failed
  rollback: when the scope cannot connect (``during="connect"``), when the
  connection ends during a call or anywhere in the scope's block (``"call"``:
  nothing of the scope was committed), or while committing (``"commit"``: the
  outcome is unknown). The dead connection is not handed out again, and the
  next scope works as soon as the server is back. A pooled connection that
  died while idle is replaced when the scope begins, before any of the
  caller's work: the scope just works. A connection that dies on its way back
  to the pool, after the transaction ended, is discarded with a warning in
  the log; the scope's outcome stands.
- :func:`tenant_transaction` is the same switch on a bare asyncpg
  connection, for code that manages its own connections.
- A tenant id must be a non-empty string; anything else is a
  :class:`TenantScopeError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction

from everyskill.errors import (
    UNSTORABLE,
    DatabaseUnavailableError,
    TenantScopeError,
    from_database_error,
    storable,
    unstorable_input,
)

__all__ = [
    "APP_ROLE",
    "ScopeConnection",
    "TENANT_SETTING",
    "TenantScope",
    "TenantScopeError",
    "current_scope",
    "operation",
    "tenant_scope",
    "tenant_transaction",
]

#: The role row-level security applies to; created by the migrations.
APP_ROLE = "everyskill_app"
#: The setting the policies compare ``tenant_id`` with.
TENANT_SETTING = "app.current_tenant_id"

_SWITCH = "SELECT set_config('role', $1, true), set_config($2, $3, true)"

logger = logging.getLogger(__name__)

# What asyncpg raises when the server cannot be reached or ends the
# connection: refused, reset or missing socket (OSError, TimeoutError
# included), class 08 errors (ConnectionDoesNotExistError is asyncpg's own
# "connection was closed in the middle of operation"), and the server's
# FATAL errors of a shutdown, a crash or a start-up in progress.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)
# What a query on a lost connection raises, besides those: asyncpg's refusal
# to use a closed connection (InterfaceError) or any other database error.
_RAW_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def _lost(connection: asyncpg.Connection) -> bool:
    """Whether ``connection`` is gone. asyncpg closes a connection as soon
    as it reads the end of its socket, and its pool then takes a checked-out
    one back at once (its proxy then refuses every call): both count."""
    try:
        return connection.is_closed()
    except asyncpg.InterfaceError:
        return True


def _cause(error: BaseException) -> str:
    """What ended the connection, for a message: the first connection error
    in ``error``'s chain (a failed rollback on the closed connection comes
    first, and says less). Without one, asyncpg had already seen the
    connection close and only refused to use it: its words ("released back
    to the pool") would mislead."""
    current: BaseException | None = error
    seen = set()
    while current is not None and id(current) not in seen:
        if isinstance(current, _CONNECTION_ERRORS):
            return f"{type(current).__name__}: {current}"
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return "the connection was closed"


# The savepoint each API call runs in. One name is enough: calls in a scope
# take turns, and a call's savepoint is released when the next call sets its
# own (or when the transaction ends).
_SAVEPOINT = "everyskill_call"


@dataclass(eq=False)
class TenantScope:
    """An open tenant scope: one transaction, as the application role.

    ``connection`` is the scope's connection. The scope notes when it is
    handed out, so that a call knows whether anything may have run on it
    since the scope opened (see :func:`operation`).
    """

    tenant_id: str
    _connection: asyncpg.Connection = field(repr=False)
    open: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # The latest call savepoint: whether a call has run in it (else the
    # next call can take it as it is, as the first call takes the one set
    # when the scope opened), and whether the connection was handed out since
    # it was set (someone may have set savepoints after it, which releasing
    # it would release too).
    _savepoint_used: bool = field(default=False, repr=False)
    _handed_out: bool = field(default=False, repr=False)

    @property
    def connection(self) -> asyncpg.Connection:
        self._handed_out = True
        return self._connection


_current: ContextVar[TenantScope | None] = ContextVar("everyskill_tenant_scope", default=None)


def _checked(tenant_id: object) -> str:
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise TenantScopeError(
            f"tenant_id must be a non-empty string, got {tenant_id!r}"
        )
    if not storable(tenant_id):
        raise TenantScopeError(f"tenant_id {UNSTORABLE}")
    return tenant_id


def _literal(value: str) -> str:
    """``value`` (storable text: :func:`_checked` refuses the tenant ids that
    are not) as an SQL string literal, an escape string whose meaning does
    not depend on standard_conforming_strings."""
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _opening(tenant_id: str) -> str:
    """What a scope sends when it opens, in one round trip: BEGIN, the switch
    to the application role and the tenant (SET LOCAL semantics), and the
    savepoint of the first call."""
    return (
        "BEGIN; SELECT set_config('role', {role}, true), set_config({setting}, {tenant}, true);"
        " SAVEPOINT {savepoint}"
    ).format(
        role=_literal(APP_ROLE),
        setting=_literal(TENANT_SETTING),
        tenant=_literal(tenant_id),
        savepoint=_SAVEPOINT,
    )


def _default_engine() -> PostgresEngine:
    # The engine the tables are bound to: piccolo_conf's DB.
    from tables import Tenant

    engine = Tenant._meta.db
    if not isinstance(engine, PostgresEngine):
        raise TenantScopeError(
            f"tenant scopes need a PostgresEngine, piccolo_conf gives {engine!r}"
        )
    return engine


@asynccontextmanager
async def tenant_transaction(
    connection: asyncpg.Connection, tenant_id: str
) -> AsyncIterator[asyncpg.Connection]:
    """Run the block in one transaction, as :data:`APP_ROLE`, for ``tenant_id``.

    Commits when the block ends normally and rolls back when it raises. The
    role and the tenant revert when the transaction ends.
    """
    _checked(tenant_id)
    async with connection.transaction():
        # set_config(..., true) is SET LOCAL: it lasts until the transaction ends.
        await connection.execute(_SWITCH, APP_ROLE, TENANT_SETTING, tenant_id)
        yield connection


@asynccontextmanager
async def tenant_scope(
    tenant_id: str, *, engine: PostgresEngine | None = None
) -> AsyncIterator[TenantScope]:
    """Open (or reuse) the tenant scope for ``tenant_id``; see the module doc."""
    _checked(tenant_id)
    current = _current.get()
    if current is not None and current.open:
        if current.tenant_id != tenant_id:
            raise TenantScopeError(
                f"a scope for tenant {current.tenant_id!r} is open; a scope for "
                f"{tenant_id!r} cannot be opened inside it. Finish the first scope "
                "first, or run the other tenant's work in a task created outside it."
            )
        yield current
        return

    engine = engine or _default_engine()
    if engine.current_transaction.get() is not None:
        raise TenantScopeError(
            "a tenant scope cannot be opened inside another transaction: its role "
            "and tenant would outlive the scope. Open the scope first and run the "
            "work inside it."
        )
    async with _ScopeTransaction(engine, _opening(tenant_id)) as transaction:
        scope = TenantScope(tenant_id=tenant_id, _connection=transaction.raw_connection)
        transaction.scope = scope
        token = _current.set(scope)
        try:
            yield scope
        finally:
            scope.open = False
            _current.reset(token)


class ScopeConnection(asyncpg.Connection):
    """asyncpg's connection, as Piccolo's engine makes it (``connection_class``
    in ``piccolo_conf``): a tenant scope that commits sends the pool's
    session reset (asyncpg's :meth:`~asyncpg.Connection.get_reset_query`) in
    the same round trip as its COMMIT, and the pool then skips that reset
    once. Any other use of the connection is asyncpg's own."""

    _reset_done = False

    def ending_with_reset(self, ending: str) -> str:
        """``ending`` (COMMIT) followed by the session reset."""
        reset: str = super().get_reset_query()
        return f"{ending};\n{reset}" if reset else ending

    def note_reset_done(self) -> None:
        self._reset_done = True

    def get_reset_query(self) -> str:
        if self._reset_done:
            self._reset_done = False
            return ""
        query: str = super().get_reset_query()
        return query


class _ScopeTransaction(PostgresTransaction):
    """Piccolo's transaction (Piccolo queries inside it use its connection),
    safe to cancel: the connection goes back to the pool whatever happens
    while the transaction begins or ends. Piccolo's own skips the release
    when BEGIN, COMMIT or ROLLBACK is interrupted, and the pool then waits
    forever for the lost connection when it closes.

    A lost connection is a DatabaseUnavailableError at every step (see the
    module's contract).

    It opens with one round trip (``opening``: BEGIN, the switch, the first
    call's savepoint) rather than asyncpg's BEGIN followed by the switch, and
    ends with COMMIT or ROLLBACK. ``connection`` is what Piccolo's queries
    in the scope run on: handing it out tells the scope that savepoints may
    have been set since its latest call's (see :func:`operation`)."""

    def __init__(self, engine: PostgresEngine, opening: str) -> None:
        super().__init__(engine)
        self._opening = opening
        self.scope: TenantScope | None = None
        # The pool's proxy of a connection, or a connection of its own.
        self.raw_connection: Any = None

    @property
    def connection(self) -> asyncpg.Connection:
        if self.scope is not None:
            self.scope._handed_out = True
        connection: asyncpg.Connection = self.raw_connection
        return connection

    async def begin(self) -> None:
        await self.raw_connection.execute(self._opening)

    async def commit(self) -> None:
        connection = self.raw_connection
        # With Piccolo's pool of ScopeConnection (piccolo_conf), the session
        # reset the pool does when it gets the connection back is sent with
        # the COMMIT, saving a round trip.
        resets = self.engine.pool is not None and hasattr(connection, "ending_with_reset")
        # "SELECT 1" first: in a transaction an error has aborted (the block
        # caught it and went on), PostgreSQL would answer COMMIT by rolling
        # back without an error; the SELECT fails instead, and so does the
        # scope.
        ending = "SELECT 1; COMMIT"
        try:
            await connection.execute(connection.ending_with_reset(ending) if resets else ending)
        except asyncpg.InFailedSQLTransactionError as error:
            raise TenantScopeError(
                "nothing of the tenant scope was committed: an error inside it (caught by"
                " the block) had aborted its transaction"
            ) from error
        self._committed = True
        if resets:
            connection.note_reset_done()

    async def rollback(self) -> None:
        await self.raw_connection.execute("ROLLBACK")
        self._rolled_back = True

    async def __aenter__(self) -> _ScopeTransaction:
        # A pooled connection can be dead while the pool does not know it
        # yet: the server restarted while this event loop was busy, and the
        # end of the socket is still unread. BEGIN, the first thing sent,
        # finds out; nothing of the caller's work has run, so the connection
        # is given back (the pool replaces a closed one) and BEGIN is tried
        # on another. This costs nothing while connections are alive; the
        # pool's size bounds the tries.
        tries = self.engine.pool.get_max_size() + 1 if self.engine.pool else 1
        for tried in range(1, tries + 1):
            try:
                self.raw_connection = await self.get_connection()  # type: ignore[no-untyped-call]
            except _CONNECTION_ERRORS as error:
                raise DatabaseUnavailableError("connect", _cause(error)) from error
            try:
                await self.begin()
            except BaseException as error:
                # Only an error of the connection itself is retried: one of
                # the opening (a tenant id asyncpg cannot encode) is not.
                lost = isinstance(
                    error, (*_CONNECTION_ERRORS, asyncpg.InterfaceError)
                ) and _lost(self.raw_connection)
                await self._release()
                if not lost:
                    raise
                if tried == tries:
                    raise DatabaseUnavailableError("connect", _cause(error)) from error
                continue
            break
        self.context = self.engine.current_transaction.set(self)
        return self

    async def __aexit__(self, exception_type: Any, exception: Any, traceback: Any) -> bool:
        try:
            if exception is not None:
                # When the connection is gone, the server has already rolled
                # the transaction back: a ROLLBACK would only fail and hide
                # the block's error behind one about a closed connection.
                if not self._rolled_back and not _lost(self.raw_connection):
                    try:
                        await self.rollback()
                    except Exception:
                        if not _lost(self.raw_connection):
                            raise
                if isinstance(exception, _RAW_ERRORS) and _lost(self.raw_connection):
                    # A raw error of the lost connection (a Piccolo query, or
                    # the scope's own set-up): typed like the API calls' own.
                    raise DatabaseUnavailableError("call", _cause(exception)) from exception
            elif not self._committed and not self._rolled_back:
                if _lost(self.raw_connection):
                    # Gone before COMMIT was sent (the block caught a call's
                    # DatabaseUnavailableError and went on): not committed.
                    raise DatabaseUnavailableError(
                        "call", "the connection was closed before the commit"
                    )
                try:
                    await self.commit()
                except Exception as error:
                    if _lost(self.raw_connection):
                        # COMMIT was sent: whether the server committed
                        # before the connection ended cannot be known.
                        raise DatabaseUnavailableError("commit", _cause(error)) from error
                    raise
        finally:
            self.engine.current_transaction.reset(self.context)
            await self._release()
        return exception is None

    async def _release(self) -> None:
        # The pool rolls back a transaction left open on the connection. A
        # cancellation that arrives meanwhile waits for the release to end,
        # then goes on: the task never ends with its connection still out.
        if self.engine.pool:
            release = asyncio.ensure_future(self.engine.pool.release(self.raw_connection))
        else:
            release = asyncio.ensure_future(self.raw_connection.close())
        cancelled = False
        while not release.done():
            try:
                await asyncio.shield(release)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:
                break  # the release is done: its error is looked at below
        try:
            release.result()
        except Exception as error:
            # The pool resets a connection it gets back; when the connection
            # dies meanwhile (a restart during the reset, or just before it,
            # which asyncpg reports as an internal error), the pool closes
            # it and replaces it later. The transaction had already ended,
            # committed or not: raising here would misreport it.
            logger.warning("a database connection was discarded after its transaction: %r", error)
        if cancelled:
            raise asyncio.CancelledError


def current_scope() -> TenantScope:
    """The open tenant scope of this task, or :class:`TenantScopeError`."""
    scope = _current.get()
    if scope is None or not scope.open:
        raise TenantScopeError(
            "no tenant scope: run the call inside `async with tenant_scope(tenant_id):`"
        )
    return scope


@asynccontextmanager
async def operation(
    inputs: Mapping[str, object] | None = None,
) -> AsyncIterator[TenantScope]:
    """One API call: a savepoint in the current scope, errors typed.

    ``inputs`` (the call's values by column name) let an error name the id
    that was not found.
    """
    scope = current_scope()
    async with scope.lock:
        connection = scope._connection
        try:
            if not connection.is_in_transaction():
                # Committed or rolled back by hand (Piccolo's transaction
                # object allows it): what follows would run as the owner.
                raise TenantScopeError(
                    "the tenant scope's transaction has already ended (it was committed"
                    " or rolled back inside the block): open a new scope"
                )
            if scope._handed_out:
                # Savepoints set by others since the latest call's stay: this
                # call's savepoint nests after them.
                await connection.execute(f"SAVEPOINT {_SAVEPOINT}")
            elif scope._savepoint_used:
                # The previous call's savepoint is released in the same round
                # trip (lazily: a call that succeeds leaves it open).
                await connection.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}; SAVEPOINT {_SAVEPOINT}")
            scope._savepoint_used = True
            try:
                yield scope
            except BaseException:
                if not _lost(connection):
                    await connection.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                raise
            finally:
                # The call's own use of the connection sets no savepoint.
                scope._handed_out = False
        except Exception as error:
            if _lost(connection):
                # The connection ended (a restart, a crash): the scope's whole
                # transaction went with it, and what comes out here is often
                # the savepoint's failed rollback. Say what happened.
                raise DatabaseUnavailableError("call", _cause(error)) from error
            if isinstance(error, asyncpg.PostgresError):
                typed = from_database_error(error, inputs)
                if typed is not None:
                    raise typed from error
            if isinstance(error.__cause__, UnicodeEncodeError):
                # asyncpg could not encode an argument (an unpaired
                # surrogate): its message quotes the value, this one does not.
                raise unstorable_input(inputs) from None
            raise
