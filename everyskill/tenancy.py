"""Tenant isolation: how the application acts for one tenant.

Contract
--------
- The application connects as ``everyskill_api``
  (:func:`everyskill.database.app_engine`): a login with no privileges of its
  own, a member of :data:`APP_ROLE` only. Each tenant operation is one
  transaction that first switches to :data:`APP_ROLE` and sets
  :data:`TENANT_SETTING` to the tenant's id, both with transaction scope
  (``SET LOCAL`` semantics). Nothing survives the transaction, so pooled
  connections and PgBouncer in transaction mode are safe. Outside such a
  transaction the login reads and writes nothing, ``RESET ROLE`` inside one
  drops back to nothing, and it can become no other role: the database
  refuses even when application code errs.
- :data:`APP_ROLE` (created by the migrations) is not a superuser, cannot log
  in, has NOBYPASSRLS and owns nothing: PostgreSQL's row-level security confines
  it to the rows whose ``tenant_id`` equals the setting. With the setting unset
  or empty it reads and writes nothing. A query that forgets a tenant filter
  still sees one tenant.
- :func:`tenant_scope` is how the query API is used: ``async with
  tenant_scope(tenant_id):`` opens one such transaction on the application
  engine (its pool when started) and makes it the current scope of the task.
  Every API call inside it runs in that transaction, as the application role.
  Piccolo queries inside it run on the same connection (the tables are bound
  to ``piccolo_conf``'s engine; the scope is that engine's transaction too),
  under the same row-level security; their errors are typed as the API's, and
  a column the application may not read or write is a
  :class:`~everyskill.errors.NotPermittedError` naming it.
  - Nested with the same tenant, it reuses the open scope (no new
    transaction). Nested with another tenant, or opened inside a transaction
    that is not a tenant scope, it raises :class:`TenantScopeError` without
    touching the database.
  - It commits when the block ends and rolls back when the block raises.
    Cancelled at any moment (while it begins, runs or ends), it still gives
    its connection back to the pool before the task ends.
- :func:`operation` is how each API call uses the scope: with no scope it
  raises :class:`TenantScopeError` before touching the database. A call sets
  no savepoint: each call writes with one statement (after reads), so a call
  that fails has written nothing of its own. A refusal raised before anything
  was written (invalid input, a row not found, a state that forbids the
  change) leaves the scope usable. A call that fails in the database (an
  error there aborts the transaction) or with an unexpected error after it
  used the connection *ends the scope*: later calls raise
  :class:`TenantScopeError`, and at its end the scope rolls back and raises
  :class:`TenantScopeError` if the block went on as if nothing happened.
  Nothing of a failed scope is committed. To carry on after a failing call,
  wrap it in :meth:`TenantScope.savepoint`.
  Why no savepoint per call: PostgreSQL keeps the transaction id of every
  subtransaction that wrote, released or not, until the transaction ends;
  past 64 of them (PGPROC_MAX_CACHED_SUBXIDS) the backend's cache overflows
  and every session's snapshots must look subtransactions up on disk. A scope
  of 200 writing calls holds no subtransaction at all.
- Database constraint errors of calls come out typed (see
  :mod:`everyskill.errors`). Calls made concurrently within one scope (for
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
  the log; the scope's outcome stands. A call after the transaction was
  committed or rolled back by hand raises :class:`TenantScopeError`.
- ``tenant_scope(tenant_id, autocommit=True)`` is an *autocommit* scope:
  each API call in it is a transaction of its own, as in a database's
  autocommit mode. A call that writes with one statement that switches to
  the role and tenant itself (:func:`~everyskill.feedback.record_feedback`,
  through the SQL function ``record_feedback``) sends that statement alone,
  outside ``BEGIN``, on a pooled connection of the login: one round trip,
  and nothing is left on the connection (the switch is SET LOCAL, and the
  pool's session reset is skipped). Any other call runs in a tenant
  transaction of its own for its duration, committed when it returns. A
  failed call affects no earlier call and leaves the scope usable. A
  connection lost once that one statement was sent is a
  :class:`~everyskill.errors.DatabaseUnavailableError` with ``during="commit"``
  (``outcome_unknown``): the server may have committed it; retry with the
  same client id (:mod:`everyskill.client_ids`) to be safe. The scope
  has no ``connection`` for SQL of the caller's own and no
  :meth:`TenantScope.savepoint` (both :class:`TenantScopeError`, saying to
  use a transaction scope), and Piccolo queries inside it are refused the
  same way: the engines' current transaction is a refusing one, so a query
  never falls through to the owner's engine the tables may be bound to.
  It cannot be nested in a transaction scope, nor one in it.
- :func:`tenant_transaction` is the same switch on a bare asyncpg
  connection, for code that manages its own connections. Inside an open
  transaction it raises :class:`TenantScopeError` (as a savepoint, its
  tenant would outlive it).
- A tenant id must be a non-empty string; anything else is a
  :class:`TenantScopeError`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction

from everyskill.errors import (
    UNSTORABLE,
    DatabaseUnavailableError,
    EverySkillError,
    NotPermittedError,
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
    "refuse_inside_scope",
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
    # 53300: the server has max_connections clients already (while it starts,
    # or under load); the next attempt may get in.
    asyncpg.TooManyConnectionsError,
)
# What a query on a lost connection raises, besides those: asyncpg's refusal
# to use a closed connection (InterfaceError), its refusal to start a query
# while it still reads the server's last message (InternalClientError,
# "another operation is in progress"), or any other database error.
_RAW_ERRORS = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError
)


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


@dataclass(eq=False)
class TenantScope:
    """An open tenant scope: one transaction, as the application role.

    ``connection`` is the scope's connection. ``failed`` says why the scope
    has ended, when a call failed in it (see :func:`operation`).
    """

    tenant_id: str
    _connection: asyncpg.Connection = field(repr=False)
    open: bool = True
    failed: str | None = None
    #: Whether each call is its own transaction (``tenant_scope(...,
    #: autocommit=True)``): the scope then has no connection of its own.
    autocommit: bool = False
    _engine: Any = field(default=None, repr=False)
    # A call's own connection outside any transaction: its one statement
    # switches to the role and tenant itself.
    _bare: bool = field(default=False, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # Whether a call is running, and whether it has used the connection.
    _in_call: bool = field(default=False, repr=False)
    _touched: bool = field(default=False, repr=False)
    # Whether anything used the connection with success before now, and so
    # whether a failure loses work done before it.
    _used: bool = field(default=False, repr=False)
    _lost_work: bool = field(default=False, repr=False)
    # The open savepoints, outermost first, and whether there is none: work
    # from outside a savepoint's block waits until it ends (a rollback to it
    # would undo that work too).
    _savepoints: list[object] = field(default_factory=list, repr=False)
    _no_savepoint: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self._no_savepoint.set()

    @property
    def connection(self) -> asyncpg.Connection:
        """The scope's connection. Refused once a call has failed in the
        scope: nothing done on it could be committed. An autocommit scope
        has none."""
        if self.autocommit:
            raise _no_connection("has no connection for SQL of your own")
        self._refuse_if_failed()
        if self._in_call:
            self._touched = True
        else:
            self._used = True  # handed out to the block's own code
        return self._connection

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Hold the scope's connection for one statement or call: wait while
        another call runs, and while a savepoint of another block is open."""
        while True:
            while self._savepoints and self._savepoints[0] not in _savepoints_here.get():
                await self._no_savepoint.wait()
            await self.lock.acquire()
            if not self._savepoints or self._savepoints[0] in _savepoints_here.get():
                break
            self.lock.release()  # a savepoint opened meanwhile: wait for it
        try:
            yield
        finally:
            self.lock.release()

    def fail_after_write(self, error: BaseException) -> None:
        """End the scope because a call refuses ``error`` after its
        statement wrote: what it wrote must not be committed (a batch that
        turns out to name an id another tenant holds)."""
        self._fail(error)

    def _fail(self, error: BaseException | str) -> None:
        self.failed = error if isinstance(error, str) else _reason(error)
        self._lost_work = self._used

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """Run the block in a savepoint: when a call in it fails, the block's
        work is undone and the scope stays usable (the error still comes
        out). A block that catches a failed call's error and goes on has its
        work undone too, and raises :class:`TenantScopeError` at its end.
        While it is open, calls and Piccolo queries from outside its block
        (other tasks of the scope) wait for it to end; those of its block,
        tasks it starts included, go on. Each savepoint that writes holds a
        subtransaction id until the scope ends: keep them to a few dozen per
        scope."""
        if self.autocommit:
            raise _no_connection("has no savepoint")
        marker = object()
        async with self._turn():
            self._refuse_if_failed()
            self._savepoints.append(marker)
            self._no_savepoint.clear()
            here = _savepoints_here.set((*_savepoints_here.get(), marker))
            name = f"everyskill_savepoint_{len(self._savepoints)}"
            try:
                await self._connection.execute(f"SAVEPOINT {name}")
            except BaseException:
                _savepoints_here.reset(here)
                self._savepoints.remove(marker)
                if not self._savepoints:
                    self._no_savepoint.set()
                raise
        try:
            try:
                yield
            except BaseException:
                if not _lost(self._connection):
                    await self._undo(name)
                raise
            if self.failed is not None:
                reason = self.failed
                await self._undo(name)
                raise TenantScopeError(
                    f"a call in the savepoint failed ({reason}) and the block went on:"
                    " the savepoint's work was rolled back"
                )
            async with self.lock:
                await self._connection.execute(f"RELEASE SAVEPOINT {name}")
        finally:
            _savepoints_here.reset(here)
            self._savepoints.remove(marker)
            if not self._savepoints:
                self._no_savepoint.set()

    async def _undo(self, name: str) -> None:
        async with self.lock:
            await self._connection.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
        self.failed = None
        self._lost_work = False

    def _refuse_if_failed(self) -> None:
        if self.failed is not None:
            raise TenantScopeError(
                f"an earlier call in this tenant scope failed ({self.failed}): nothing of"
                " the scope will be committed. Open a new scope (or wrap calls that may"
                " fail in `async with scope.savepoint():`)."
            )


def _no_connection(what: str) -> TenantScopeError:
    return TenantScopeError(
        f"an autocommit tenant scope {what}: each API call in it is a transaction of its"
        " own. Use a transaction scope, `async with tenant_scope(tenant_id):`, for SQL or"
        " Piccolo queries of your own and for savepoints."
    )


class _Refusing:
    """The engines' current transaction in an autocommit scope: a Piccolo
    query there gets no connection (not another engine's, not a new one)."""

    @property
    def connection(self) -> asyncpg.Connection:
        raise _no_connection("runs no Piccolo query")


_current: ContextVar[TenantScope | None] = ContextVar("everyskill_tenant_scope", default=None)
# The savepoints whose blocks this task runs in (tasks started in a block
# inherit them).
_savepoints_here: ContextVar[tuple[object, ...]] = ContextVar(
    "everyskill_savepoints", default=()
)


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
    """What a scope sends when it opens, in one round trip: BEGIN and the
    switch to the application role and the tenant (SET LOCAL semantics)."""
    return (
        "BEGIN; SELECT set_config('role', {role}, true), set_config({setting}, {tenant}, true)"
    ).format(
        role=_literal(APP_ROLE),
        setting=_literal(TENANT_SETTING),
        tenant=_literal(tenant_id),
    )


def _tables_engine() -> PostgresEngine:
    # The engine the tables are bound to (piccolo_conf's DB): Piccolo queries
    # in a scope run in the scope's transaction through it.
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
    if connection.is_in_transaction():
        raise TenantScopeError(
            "tenant_transaction cannot be opened inside another transaction: as a"
            " savepoint, its role and tenant would outlive it. Finish the open"
            " transaction first."
        )
    async with connection.transaction():
        # set_config(..., true) is SET LOCAL: it lasts until the transaction ends.
        await connection.execute(_SWITCH, APP_ROLE, TENANT_SETTING, tenant_id)
        yield connection


@asynccontextmanager
async def tenant_scope(
    tenant_id: str, *, engine: PostgresEngine | None = None, autocommit: bool = False
) -> AsyncIterator[TenantScope]:
    """Open (or reuse) the tenant scope for ``tenant_id``; see the module doc."""
    _checked(tenant_id)
    current = _current.get()
    if current is not None and current.open:
        if current.autocommit != autocommit:
            raise TenantScopeError(
                "an autocommit tenant scope and a transaction scope cannot be nested in"
                " each other: finish the open scope first"
            )
        if current.tenant_id != tenant_id:
            raise TenantScopeError(
                f"a scope for tenant {current.tenant_id!r} is open; a scope for "
                f"{tenant_id!r} cannot be opened inside it. Finish the first scope "
                "first, or run the other tenant's work in a task created outside it."
            )
        yield current
        return

    from everyskill.database import AppEngine, app_engine

    if engine is None:
        engine = app_engine()
    elif not isinstance(engine, AppEngine):
        raise TenantScopeError(
            "tenant scopes run on the application's engine (everyskill.database.AppEngine,"
            " logged in as everyskill_api), whose login is checked; got"
            f" {type(engine).__name__}. Use everyskill.database.app_engine()."
        )
    tables_engine = _tables_engine()
    if any(e.current_transaction.get() is not None for e in (engine, tables_engine)):
        raise TenantScopeError(
            "a tenant scope cannot be opened inside another transaction: its role "
            "and tenant would outlive the scope. Open the scope first and run the "
            "work inside it."
        )
    if autocommit:
        # No connection: each call takes one of its own (_own_transaction).
        scope = TenantScope(
            tenant_id=tenant_id, _connection=cast(asyncpg.Connection, None), autocommit=True,
            _engine=engine,
        )
        refusing = cast(PostgresTransaction, _Refusing())
        contexts = [(e, e.current_transaction.set(refusing)) for e in {engine, tables_engine}]
        token = _current.set(scope)
        try:
            yield scope
        finally:
            scope.open = False
            _current.reset(token)
            for e, context in contexts:
                e.current_transaction.reset(context)
        return
    async with _ScopeTransaction(engine, _opening(tenant_id), tables_engine) as transaction:
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
    once; so does a caller that ran one statement leaving nothing on the
    session (:meth:`note_reset_done`: the API key's resolution). Any other
    use of the connection is asyncpg's own."""

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

    It is the current transaction of the engine it came from (the
    application's) and of ``tables_engine``, the one the tables are bound to,
    so that Piccolo queries in the scope run on its connection. What they get
    as ``connection`` turns their errors into typed ones.

    A lost connection is a DatabaseUnavailableError at every step (see the
    module's contract).

    It opens with one round trip (``opening``: BEGIN and the switch) rather
    than asyncpg's BEGIN followed by the switch, and ends with COMMIT or
    ROLLBACK."""

    def __init__(
        self, engine: PostgresEngine, opening: str, tables_engine: PostgresEngine
    ) -> None:
        super().__init__(engine)
        self._opening = opening
        self._tables_engine = tables_engine
        self._tables_context: Any = None
        self.scope: TenantScope | None = None
        # The pool's proxy of a connection, or a connection of its own.
        self.raw_connection: Any = None

    @property
    def connection(self) -> asyncpg.Connection:
        typed: asyncpg.Connection = _PiccoloConnection(self)  # type: ignore[assignment]
        return typed

    async def get_connection(self) -> Any:
        # The application's engine waits a bounded time for a pooled one.
        acquire = getattr(self.engine, "acquire", None)
        if acquire is not None:
            return await acquire()
        return await super().get_connection()  # type: ignore[no-untyped-call]

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
                self.raw_connection = await self.get_connection()
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
                if isinstance(error, asyncpg.InternalClientError):
                    # A connection ended while idle in the pool may have read
                    # the server's last message and not yet the end of its
                    # socket: asyncpg then refuses the first query with this
                    # ("another operation is in progress"). It is of no use:
                    # ended here, the pool replaces it.
                    self.raw_connection.terminate()
                    lost = True
                await self._release()
                if not lost:
                    raise
                if tried == tries:
                    raise DatabaseUnavailableError("connect", _cause(error)) from error
                continue
            break
        self.context = self.engine.current_transaction.set(self)
        if self._tables_engine is not self.engine:
            self._tables_context = self._tables_engine.current_transaction.set(self)
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
                scope = self.scope
                if scope is not None and scope.failed is not None and not _lost(self.raw_connection):
                    # A call failed and the block went on: nothing can be
                    # committed. When work done before the failure is lost
                    # with it, say so; a failed first use loses nothing.
                    await self.rollback()
                    if scope._lost_work:
                        raise TenantScopeError(
                            "nothing of the tenant scope was committed: a call in it failed"
                            f" ({scope.failed}), and what the scope did before it is rolled"
                            " back with it"
                        )
                    return True
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
            if self._tables_context is not None:
                self._tables_engine.current_transaction.reset(self._tables_context)
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


def refuse_inside_scope(message: str) -> None:
    """Raise :class:`TenantScopeError` with ``message`` when a tenant scope
    is open in this task: for work that opens scopes of its own, or must run
    before the tenant is known."""
    scope = _current.get()
    if scope is not None and scope.open:
        raise TenantScopeError(message)


def current_scope() -> TenantScope:
    """The open tenant scope of this task, or :class:`TenantScopeError`."""
    scope = _current.get()
    if scope is None or not scope.open:
        raise TenantScopeError(
            "no tenant scope: run the call inside `async with tenant_scope(tenant_id):`"
        )
    return scope


def _from_database(error: BaseException) -> bool:
    """Whether ``error`` comes from an error of PostgreSQL (which aborts the
    transaction it happens in), itself or anywhere in its chain."""
    current: BaseException | None = error
    seen = set()
    while current is not None and id(current) not in seen:
        if isinstance(current, asyncpg.PostgresError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


@asynccontextmanager
async def operation(
    inputs: Mapping[str, object] | None = None,
    *,
    single_statement: bool = False,
) -> AsyncIterator[TenantScope]:
    """One API call in the current scope, errors typed; see the module doc.

    ``inputs`` (the call's values by column name) let an error name the id
    that was not found. ``single_statement``: the call sends one statement
    that switches to the role and the tenant itself (a function such as
    ``record_feedback``); in an autocommit scope it is then sent alone,
    outside any transaction, on a connection of the login.
    """
    scope = current_scope()
    if scope.autocommit:
        async with _own_transaction(scope, single_statement) as call_scope:
            token = _current.set(call_scope)
            try:
                async with operation(inputs) as same:
                    yield same
            finally:
                _current.reset(token)
        return
    async with scope._turn():
        connection = scope._connection
        try:
            scope._refuse_if_failed()
            if not scope._bare and not connection.is_in_transaction():
                # Committed or rolled back by hand (Piccolo's transaction
                # object allows it): what follows would run as the login,
                # which can do nothing.
                raise TenantScopeError(
                    "the tenant scope's transaction has already ended (it was committed"
                    " or rolled back inside the block): open a new scope"
                )
            scope._touched = False
            scope._in_call = True
            try:
                yield scope
            except BaseException as error:
                # A refusal of our own, raised before writing, leaves the
                # scope as it was; anything else that happened after the
                # connection was used may have left part of the call behind.
                if _from_database(error) or (
                    scope._touched and not isinstance(error, EverySkillError)
                ):
                    scope._fail(error)
                raise
            else:
                scope._used = scope._used or scope._touched
            finally:
                scope._in_call = False
        except Exception as error:
            if _lost(connection):
                scope._fail("the connection to the database was lost")
                if scope._bare and scope._touched:
                    # The call's statement was its own transaction: the
                    # server may have committed it before the connection
                    # went, so its outcome is unknown.
                    raise DatabaseUnavailableError("commit", _cause(error)) from error
                # The connection ended (a restart, a crash): the scope's whole
                # transaction went with it. Say what happened.
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


@asynccontextmanager
async def _own_transaction(scope: TenantScope, bare: bool) -> AsyncIterator[TenantScope]:
    """A call's own transaction in an autocommit scope: the scope of one
    call. ``bare``: the call's connection outside any transaction, for its
    one statement (one round trip); else a tenant transaction as a scope
    opens it, committed when the call ends and rolled back when it fails."""
    engine = scope._engine
    if not bare:
        async with _ScopeTransaction(
            engine, _opening(scope.tenant_id), _tables_engine()
        ) as transaction:
            call = TenantScope(tenant_id=scope.tenant_id, _connection=transaction.raw_connection)
            transaction.scope = call
            try:
                yield call
            finally:
                call.open = False
        return
    try:
        connection = await engine.acquire()
    except _CONNECTION_ERRORS as error:
        raise DatabaseUnavailableError("connect", _cause(error)) from error
    call = TenantScope(tenant_id=scope.tenant_id, _connection=connection, _bare=True)
    try:
        yield call
    finally:
        call.open = False
        # The statement was a transaction of its own and left nothing on the
        # session (its role and tenant were SET LOCAL): the pool's session
        # reset, a round trip, is not needed. A statement that failed is
        # no reason to keep the connection either way.
        if hasattr(connection, "note_reset_done") and not _lost(connection):
            connection.note_reset_done()
        if engine.pool:
            await engine.pool.release(connection)
        else:
            await connection.close()


class _PiccoloConnection:
    """The scope's connection as Piccolo's queries get it: the same
    connection (every attribute is its own), whose ``fetch`` and ``execute``
    raise typed errors. A query the database refuses ends the scope, as a
    failed call does (unless it runs in :meth:`TenantScope.savepoint`)."""

    def __init__(self, transaction: _ScopeTransaction) -> None:
        self._transaction = transaction
        self._connection = transaction.raw_connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._run(self._connection.fetch, query, *args, **kwargs)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._run(self._connection.execute, query, *args, **kwargs)

    async def _run(self, method: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        # Piccolo's queries take turns with the calls, and none runs once the
        # scope has failed (its work could not be committed).
        scope = self._transaction.scope
        if scope is None:
            return await method(query, *args, **kwargs)
        async with scope._turn():
            scope._refuse_if_failed()
            try:
                result = await method(query, *args, **kwargs)
            except asyncpg.PostgresError as error:
                raise await self._typed(error, query) from error
        self._used()
        return result

    def _used(self) -> None:
        if self._transaction.scope is not None:
            self._transaction.scope._used = True

    async def _typed(self, error: asyncpg.PostgresError, query: str) -> BaseException:
        scope = self._transaction.scope
        if scope is not None:
            scope._fail(error)
        if isinstance(error, asyncpg.InsufficientPrivilegeError) and "row-level" not in (
            error.message or ""
        ):
            refused = await _not_permitted(self._transaction.engine, query)
            if refused is not None:
                return refused
        return from_database_error(error) or error


# The statement Piccolo sent: its verb and table. Piccolo quotes every name.
_STATEMENT = re.compile(
    r'^\s*(?:(?P<insert>INSERT\s+INTO)|(?P<update>UPDATE)|(?P<delete>DELETE\s+FROM)|SELECT\b.*?\bFROM)'
    r'\s+"(?P<table>[^"]+)"',
    re.IGNORECASE | re.DOTALL,
)
_QUOTED = re.compile(r'"([^"]+)"')
_ADVICE = {
    "SELECT": "select the other columns (Piccolo's select() with the columns you need)",
    "INSERT": "leave them to PostgreSQL, or write through the query API",
    "UPDATE": "save only the columns you changed (row.save([Table.column])), or write"
    " through the query API",
    "DELETE": "write through the query API (skills are archived, not deleted)",
}
_DENIED_COLUMNS = """
SELECT attname FROM pg_attribute
 WHERE attrelid = to_regclass(quote_ident($1)) AND attnum > 0 AND NOT attisdropped
   AND attname = ANY($2::text[])
   AND NOT has_column_privilege($3, attrelid, attname, $4)
 ORDER BY attnum
"""


async def _not_permitted(engine: PostgresEngine, query: str) -> NotPermittedError | None:
    """What a statement Piccolo sent may not do, as the application role:
    the columns it names that the role lacks the statement's privilege on.
    Asked on a connection of its own (the scope's transaction is aborted)."""
    match = _STATEMENT.match(query)
    if match is None:
        return None
    table = match["table"]
    privilege = (
        "INSERT" if match["insert"] else "UPDATE" if match["update"]
        else "DELETE" if match["delete"] else "SELECT"
    )
    if privilege == "DELETE":  # a privilege of the whole table
        return NotPermittedError(table, privilege, (), _ADVICE[privilege])
    names = sorted(set(_QUOTED.findall(query)) - {table})
    try:
        connection = await asyncpg.connect(**engine.config)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        denied = [
            record["attname"]
            for record in await connection.fetch(
                _DENIED_COLUMNS, table, names, APP_ROLE, privilege
            )
        ]
    finally:
        await connection.close()
    return NotPermittedError(table, privilege, denied, _ADVICE[privilege])
