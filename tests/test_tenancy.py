"""
Tenant isolation, tested the way the application connects: the owner's URL,
and every tenant operation in ``tenant_transaction`` (the application role,
one tenant). The owner only prepares rows and checks what really happened.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from everyskill import feedback
from everyskill.database import AppEngine
from everyskill.errors import DatabaseUnavailableError, NotFoundError, ValidationError
from everyskill.tenancy import (
    APP_ROLE,
    ScopeConnection,
    TenantScopeError,
    current_scope,
    operation,
    tenant_scope,
    tenant_transaction,
)
from tables import Skill, User
from tests.http_support import CountingProxy
from tests.support import TenantRows, make_tenant

TABLES = {
    "users": "user_id",
    "skills": "skill_id",
    "skill_versions": "version_id",
    "skill_feedback": "feedback_id",
    "model_prices": "model_price_id",
    "token_measurements": "measurement_id",
    "benchmark_runs": "run_id",
    "benchmark_results": "result_id",
}


@pytest.fixture
async def two_tenants(owner: asyncpg.Connection) -> tuple[TenantRows, TenantRows]:
    return await make_tenant(owner, "a"), await make_tenant(owner, "b")


async def test_application_role_is_confined(owner: asyncpg.Connection) -> None:
    """The role the application runs as cannot skip row-level security."""
    role = await owner.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = $1",
        APP_ROLE,
    )
    assert role is not None
    assert (role["rolsuper"], role["rolbypassrls"], role["rolcanlogin"]) == (False, False, False)
    owned = await owner.fetchval(
        "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = $1)",
        APP_ROLE,
    )
    assert owned == 0


async def test_a_tenant_reads_only_its_own_rows(
    app_connection: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, b = two_tenants
    async with tenant_transaction(app_connection, a.tenant_id) as db:
        assert await db.fetchval("SELECT current_user") == APP_ROLE
        tenants = await db.fetch("SELECT id FROM tenants")
        assert [row["id"] for row in tenants] == [a.tenant_id]
        for table, attribute in TABLES.items():
            ids = {row["id"] for row in await db.fetch(f"SELECT id FROM {table}")}
            assert getattr(a, attribute) in ids, table
            assert getattr(b, attribute) not in ids, table
            tenant_ids = {row["tenant_id"] for row in await db.fetch(f"SELECT tenant_id FROM {table}")}
            assert tenant_ids == {a.tenant_id}, table


async def test_a_tenant_changes_only_its_own_rows(
    app_connection: asyncpg.Connection,
    owner: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    """An UPDATE with no WHERE at all still touches one tenant's rows."""
    a, b = two_tenants
    async with tenant_transaction(app_connection, a.tenant_id) as db:
        await db.execute("UPDATE skills SET description = 'changed by a'")
        await db.execute("UPDATE skill_feedback SET comment = 'changed by a'")
    assert await owner.fetchval("SELECT description FROM skills WHERE id = $1", a.skill_id) == "changed by a"
    assert await owner.fetchval("SELECT description FROM skills WHERE id = $1", b.skill_id) is None
    assert await owner.fetchval("SELECT comment FROM skill_feedback WHERE id = $1", b.feedback_id) is None


async def test_a_tenant_deletes_only_its_own_rows(
    app_connection: asyncpg.Connection,
    owner: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    a, b = two_tenants
    async with tenant_transaction(app_connection, a.tenant_id) as db:
        await db.execute("DELETE FROM skill_feedback")
        await db.execute("DELETE FROM benchmark_runs")
    for row_id in (a.feedback_id, a.run_id, a.result_id):
        assert await owner.fetchval(
            "SELECT count(*) FROM (SELECT id FROM skill_feedback UNION ALL SELECT id FROM benchmark_runs"
            " UNION ALL SELECT id FROM benchmark_results) x WHERE id = $1",
            row_id,
        ) == 0
    for table, row_id in (
        ("skill_feedback", b.feedback_id),
        ("benchmark_runs", b.run_id),
        ("benchmark_results", b.result_id),
    ):
        assert await owner.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", row_id) == 1


async def test_a_tenant_cannot_write_rows_of_another_tenant(
    app_connection: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, b = two_tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.execute(
                "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'x', 'X')", b.tenant_id
            )
    async with tenant_transaction(app_connection, a.tenant_id) as db:
        assert await db.execute("UPDATE skills SET name = 'hijacked' WHERE id = $1", b.skill_id) == "UPDATE 0"
        assert await db.execute("DELETE FROM users WHERE id = $1", b.user_id) == "DELETE 0"


@pytest.mark.parametrize("setting", [None, ""])
async def test_no_tenant_reads_and_writes_nothing(
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    setting: str | None,
) -> None:
    """As the application role with the tenant unset or empty: fail closed."""
    a, _ = two_tenants
    async with app_connection.transaction():
        await app_connection.execute(f"SET LOCAL ROLE {APP_ROLE}")
        if setting is not None:
            await app_connection.execute("SELECT set_config('app.current_tenant_id', $1, true)", setting)
        assert await app_connection.fetchval("SELECT count(*) FROM tenants") == 0
        for table in TABLES:
            assert await app_connection.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        assert await app_connection.execute("UPDATE skills SET name = 'x'") == "UPDATE 0"
        assert await app_connection.execute("DELETE FROM skill_feedback") == "DELETE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with app_connection.transaction():
            await app_connection.execute(f"SET LOCAL ROLE {APP_ROLE}")
            if setting is not None:
                await app_connection.execute("SELECT set_config('app.current_tenant_id', $1, true)", setting)
            await app_connection.execute(
                "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, comment)"
                " VALUES ($1, $2, 'bug_report', 'x')",
                a.tenant_id,
                a.skill_id,
            )


async def test_an_empty_tenant_id_is_refused_before_the_database(app_connection: asyncpg.Connection) -> None:
    for bad in ("", "   "):
        with pytest.raises(TenantScopeError):
            async with tenant_transaction(app_connection, bad):
                pass
    assert not app_connection.is_in_transaction()


async def test_a_row_cannot_be_moved_to_another_tenant(
    app_connection: asyncpg.Connection,
    owner: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    a, b = two_tenants
    for table, attribute in TABLES.items():
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, a.tenant_id) as db:
                await db.execute(
                    f"UPDATE {table} SET tenant_id = $1 WHERE id = $2",
                    b.tenant_id,
                    getattr(a, attribute),
                )
    assert await owner.fetchval("SELECT tenant_id FROM skills WHERE id = $1", a.skill_id) == a.tenant_id


@pytest.mark.parametrize(
    ("statement", "target"),
    [
        ("INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, comment) VALUES ($1, $2, 'bug_report', 'x')", "skill_id"),
        ("INSERT INTO token_measurements (tenant_id, skill_id, model_name) VALUES ($1, $2, 'm')", "skill_id"),
        ("INSERT INTO skill_versions (tenant_id, skill_id, version, content) VALUES ($1, $2, 9, 'c')", "skill_id"),
        ("INSERT INTO skills (tenant_id, slug, name, author_id) VALUES ($1, 'stolen', 'S', $2)", "user_id"),
        ("INSERT INTO benchmark_results (tenant_id, benchmark_run_id, model_name, model_provider, test_case_index)"
         " VALUES ($1, $2, 'm', 'p', 0)", "run_id"),
    ],
)
async def test_a_row_cannot_point_at_another_tenants_row(
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    statement: str,
    target: str,
) -> None:
    """Foreign-key checks bypass row-level security; the tenant-matching keys
    refuse a reference to another tenant's row all the same."""
    a, b = two_tenants
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.execute(statement, a.tenant_id, getattr(b, target))


@pytest.mark.parametrize("column", ["user_id", "reviewed_by"])
async def test_feedback_cannot_name_another_tenants_user(
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    column: str,
) -> None:
    a, b = two_tenants
    # reviewed_by is set by a review (with the status), user_id on its own.
    review = ", status = 'accepted'" if column == "reviewed_by" else ""
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.execute(
                f"UPDATE skill_feedback SET {column} = $1{review} WHERE id = $2", b.user_id, a.feedback_id
            )


async def test_a_version_must_belong_to_the_same_skill(
    app_connection: asyncpg.Connection, owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """Feedback cannot cite a version of a different skill of its own tenant."""
    a, _ = two_tenants
    other_skill = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name) VALUES ($1, 'other', 'Other') RETURNING id", a.tenant_id
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.execute(
                "INSERT INTO skill_feedback (tenant_id, skill_id, skill_version_id, feedback_type, comment)"
                " VALUES ($1, $2, $3, 'bug_report', 'x')",
                a.tenant_id,
                other_skill,
                a.version_id,
            )


async def test_the_tenant_does_not_leak_into_the_next_transaction(
    app_connection: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """After a committed tenant transaction, the same connection is the owner
    again with no tenant set; as the application role it then sees nothing."""
    a, _ = two_tenants
    async with tenant_transaction(app_connection, a.tenant_id) as db:
        assert await db.fetchval("SELECT count(*) FROM skills") == 1
    assert await app_connection.fetchval("SELECT current_user") != APP_ROLE
    assert await app_connection.fetchval("SELECT current_setting('app.current_tenant_id', true)") in (None, "")
    async with app_connection.transaction():
        await app_connection.execute(f"SET LOCAL ROLE {APP_ROLE}")
        assert await app_connection.fetchval("SELECT count(*) FROM skills") == 0


async def test_a_rolled_back_tenant_transaction_leaves_nothing(
    app_connection: asyncpg.Connection, owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    with pytest.raises(RuntimeError):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.execute("UPDATE skills SET name = 'half-written'")
            raise RuntimeError("boom")
    assert await owner.fetchval("SELECT name FROM skills WHERE id = $1", a.skill_id) == "Review code"
    assert await app_connection.fetchval("SELECT current_setting('app.current_tenant_id', true)") in (None, "")


async def test_the_application_cannot_write_the_aggregates(
    app_connection: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """The aggregate columns are PostgreSQL's to maintain."""
    a, _ = two_tenants
    for column in ("total_feedback", "positive_feedback_pct", "avg_token_cost_microcents"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, a.tenant_id) as db:
                await db.execute(f"UPDATE skills SET {column} = 1 WHERE id = $1", a.skill_id)


async def test_measurements_and_results_are_not_edited(
    app_connection: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    for statement in (
        "UPDATE token_measurements SET latency_ms = 1",
        "UPDATE benchmark_results SET quality_score = 1",
        "DELETE FROM token_measurements",
        "INSERT INTO tenants (name, slug) VALUES ('x', 'x')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, a.tenant_id) as db:
                await db.execute(statement)


async def test_the_application_cannot_read_admin_logins(
    app_connection: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.fetch("SELECT * FROM piccolo_user")


# -- tenant_scope: how the query API acts for a tenant ----------------------------


async def test_scope_runs_as_the_application_role_and_piccolo_queries_see_one_tenant(
    engine: PostgresEngine, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """Inside a scope even a Piccolo query with no filter at all sees one
    tenant: PostgreSQL does the filtering."""
    a, b = two_tenants
    async with tenant_scope(a.tenant_id) as scope:
        assert await scope.connection.fetchval("SELECT current_user") == APP_ROLE
        skills = await Skill.select(Skill.id, Skill.tenant_id)
        users = await User.objects()
    assert {row["tenant_id"] for row in skills} == {a.tenant_id}
    assert a.skill_id in {row["id"] for row in skills}
    assert {user.tenant_id for user in users} == {a.tenant_id}


async def test_nested_scope_of_the_same_tenant_is_the_same_transaction(
    engine: PostgresEngine, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    async with tenant_scope(a.tenant_id) as outer:
        outer_xid = await outer.connection.fetchval("SELECT txid_current()")
        async with tenant_scope(a.tenant_id) as inner:
            assert inner is outer
            assert await inner.connection.fetchval("SELECT txid_current()") == outer_xid


async def test_scope_of_another_tenant_inside_one_is_refused(
    engine: PostgresEngine, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, b = two_tenants
    async with tenant_scope(a.tenant_id):
        with pytest.raises(TenantScopeError, match="cannot be opened inside"):
            async with tenant_scope(b.tenant_id):
                pass  # pragma: no cover


async def test_scope_inside_a_plain_transaction_is_refused(
    engine: PostgresEngine, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    async with engine.transaction():
        with pytest.raises(TenantScopeError, match="inside another transaction"):
            async with tenant_scope(a.tenant_id):
                pass  # pragma: no cover


@pytest.mark.parametrize("bad", ["", "  ", None, 42])
async def test_scope_needs_a_tenant_id(engine: PostgresEngine, bad: object) -> None:
    with pytest.raises(TenantScopeError):
        async with tenant_scope(bad):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_no_scope_is_an_error_and_an_ended_scope_is_closed(
    engine: PostgresEngine, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    with pytest.raises(TenantScopeError, match="no tenant scope"):
        current_scope()
    async with tenant_scope(a.tenant_id) as scope:
        assert current_scope() is scope
    assert not scope.open
    with pytest.raises(TenantScopeError):
        current_scope()


async def test_scope_commits_at_the_end_and_rolls_back_on_error(
    engine: PostgresEngine, owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants

    async def rename(name: str) -> None:
        async with operation() as scope:
            await scope.connection.execute("UPDATE skills SET name = $1 WHERE id = $2", name, a.skill_id)

    async with tenant_scope(a.tenant_id):
        await rename("committed")
    with pytest.raises(RuntimeError, match="boom"):
        async with tenant_scope(a.tenant_id):
            await rename("rolled back")
            raise RuntimeError("boom")
    assert await owner.fetchval("SELECT name FROM skills WHERE id = $1", a.skill_id) == "committed"


async def test_pooled_connections_leave_a_scope_as_the_login(
    app_url_for_tests: str, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """Role and tenant end with the scope: a pool of one connection hands the
    very same backend back as the login, with no tenant set."""
    a, _ = two_tenants
    engine = AppEngine(config={"dsn": app_url_for_tests})
    await engine.start_connection_pool(min_size=1, max_size=1)
    try:
        async with tenant_scope(a.tenant_id, engine=engine) as scope:
            pid = await scope.connection.fetchval("SELECT pg_backend_pid()")
            assert await scope.connection.fetchval("SELECT current_user") == APP_ROLE
        assert engine.pool is not None
        async with engine.pool.acquire() as pooled:
            after = await pooled.fetchrow(
                "SELECT pg_backend_pid(), current_user,"
                " current_setting('app.current_tenant_id', true)"
            )
    finally:
        await engine.close_connection_pool()
    assert after is not None
    assert after[0] == pid
    assert after[1] == "everyskill_api" and not after[2]


async def test_calls_gathered_in_one_scope_take_turns(
    engine: PostgresEngine, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants

    async def tenant_of_setting() -> str:
        async with operation() as scope:
            await scope.connection.execute("SELECT pg_sleep(0.01)")
            return str(await scope.connection.fetchval("SELECT current_setting('app.current_tenant_id')"))

    async with tenant_scope(a.tenant_id):
        results = await asyncio.gather(*[tenant_of_setting() for _ in range(5)])
    assert results == [a.tenant_id] * 5


async def test_cancelling_a_scope_at_any_moment_returns_its_connection(
    engine: PostgresEngine, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A task cancelled while its scope begins, runs or ends gives its
    connection back to the pool before it ends, and leaves no transaction open."""
    pool = engine.pool
    assert pool is not None

    async def write() -> None:
        async with tenant_scope(tenant.tenant_id) as scope:
            await scope.connection.execute(
                "UPDATE skills SET description = 'cancelled' WHERE id = $1", tenant.skill_id
            )
            await scope.connection.execute("SELECT pg_sleep(0.002)")

    # Delays from 0 to 6 ms land the cancellation in every phase: acquiring,
    # BEGIN, the statements, COMMIT, the release. A leak fails, not hangs.
    async with asyncio.timeout(60):
        for step in range(60):
            task = asyncio.create_task(write())
            await asyncio.sleep(step / 10_000)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert pool.get_idle_size() == pool.get_size(), f"a connection leaked ({step / 10} ms)"
        # Every connection is usable, and a scope works as before.
        async with tenant_scope(tenant.tenant_id) as scope:
            assert await scope.connection.fetchval("SELECT current_user") == APP_ROLE
    assert await owner.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        " AND datname = current_database()"
    ) == 0


# A connection that ends under a scope: the server ends the session (as on a
# restart, see test_restart.py for the restart itself), here with
# pg_terminate_backend from the owner, the session user of every backend.


@pytest.fixture
async def small_pool(app_url_for_tests: str) -> AsyncIterator[PostgresEngine]:
    """A pool of its own, so that ended connections disturb no other test."""
    engine = AppEngine(config={"dsn": app_url_for_tests})
    await engine.start_connection_pool(min_size=1, max_size=2)
    try:
        yield engine
    finally:
        async with asyncio.timeout(10):  # a leaked connection fails, not hangs
            await engine.close_connection_pool()


async def end_session(owner: asyncpg.Connection, pid: int) -> None:
    """End backend ``pid`` and wait until it has exited."""
    assert await owner.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)


async def rename_skill(skill_id: str, name: str) -> None:
    async with operation() as scope:
        await scope.connection.execute("UPDATE skills SET name = $1 WHERE id = $2", name, skill_id)


async def test_a_call_on_an_ended_connection_is_a_typed_error_and_nothing_is_committed(
    small_pool: PostgresEngine, owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """The call and the scope raise DatabaseUnavailableError (the scope's end
    does not hide it behind a failed rollback); nothing of the scope is
    written, and the next scope on the same pool works on a new connection."""
    a, _ = two_tenants
    with pytest.raises(DatabaseUnavailableError) as raised:
        async with tenant_scope(a.tenant_id, engine=small_pool) as scope:
            await rename_skill(a.skill_id, "before the end")
            pid = await scope.connection.fetchval("SELECT pg_backend_pid()")
            await end_session(owner, pid)
            await rename_skill(a.skill_id, "after the end")
    assert (raised.value.during, raised.value.outcome_unknown) == ("call", False)
    assert await owner.fetchval("SELECT name FROM skills WHERE id = $1", a.skill_id) == "Review code"

    async with tenant_scope(a.tenant_id, engine=small_pool) as scope:
        assert await scope.connection.fetchval("SELECT pg_backend_pid()") != pid
        await rename_skill(a.skill_id, "next scope")
    assert await owner.fetchval("SELECT name FROM skills WHERE id = $1", a.skill_id) == "next scope"


async def test_a_scope_that_goes_on_after_losing_its_connection_does_not_commit(
    small_pool: PostgresEngine, owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """A block that catches the call's error and ends normally gets the error
    again from the scope's end: there was nothing left to commit. A query
    run through the scope's engine on the lost connection (as Piccolo runs
    its queries) comes out typed too."""
    a, _ = two_tenants
    with pytest.raises(DatabaseUnavailableError, match="closed before the commit") as raised:
        async with tenant_scope(a.tenant_id, engine=small_pool) as scope:
            await rename_skill(a.skill_id, "lost")
            await end_session(owner, await scope.connection.fetchval("SELECT pg_backend_pid()"))
            with pytest.raises(DatabaseUnavailableError, match="lost during the call"):
                await rename_skill(a.skill_id, "lost again")
    assert raised.value.during == "call"

    with pytest.raises(DatabaseUnavailableError, match="lost during the call"):
        async with tenant_scope(a.tenant_id, engine=small_pool) as scope:
            await end_session(owner, await scope.connection.fetchval("SELECT pg_backend_pid()"))
            await small_pool.run_querystring(QueryString("SELECT id FROM skills"))
    assert await owner.fetchval("SELECT name FROM skills WHERE id = $1", a.skill_id) == "Review code"


async def test_pooled_connections_ended_while_idle_are_replaced(
    small_pool: PostgresEngine, owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """Every idle connection of the pool ended: the next scope just works."""
    a, _ = two_tenants

    async def backend() -> int:
        async with tenant_scope(a.tenant_id, engine=small_pool) as scope:
            await asyncio.sleep(0.01)  # so that the two scopes overlap
            return int(await scope.connection.fetchval("SELECT pg_backend_pid()"))

    pids = set(await asyncio.gather(backend(), backend()))
    assert len(pids) == 2
    for pid in pids:
        await end_session(owner, pid)
    assert not pids & set(await asyncio.gather(backend(), backend()))


async def test_a_connection_that_dies_on_its_way_back_to_the_pool_loses_nothing(
    app_url_for_tests: str,
    owner: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pool resets each connection it gets back. When the connection dies
    then (here the reset ends its own session), the scope has already
    committed: it ends normally, and the next scope gets a new connection."""
    a, _ = two_tenants

    async def reset_that_dies(connection: asyncpg.Connection) -> None:
        await connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    engine = AppEngine(config={"dsn": app_url_for_tests})
    await engine.start_connection_pool(min_size=1, max_size=1, reset=reset_that_dies)
    try:
        pids = []
        for name in ("first", "second"):
            async with tenant_scope(a.tenant_id, engine=engine) as scope:
                pids.append(await scope.connection.fetchval("SELECT pg_backend_pid()"))
                await rename_skill(a.skill_id, name)
            assert await owner.fetchval("SELECT name FROM skills WHERE id = $1", a.skill_id) == name
        assert pids[0] != pids[1]
        assert "discarded" in caplog.text
    finally:
        async with asyncio.timeout(10):
            await engine.close_connection_pool()


async def test_a_call_that_fails_in_the_database_ends_the_scope(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A call the database refuses aborts the transaction: later calls say
    so, and nothing of the scope is committed, what ran before the failed
    call included (by Piccolo, on the connection, by other calls)."""
    before = await owner.fetchrow(
        "SELECT description, name, total_feedback FROM skills WHERE id = $1", tenant.skill_id
    )
    with pytest.raises(TenantScopeError, match="nothing of the tenant scope was committed"):
        async with tenant_scope(tenant.tenant_id) as scope:
            await Skill.update({Skill.description: "by Piccolo"}).where(Skill.id == tenant.skill_id)
            await scope.connection.execute(
                "UPDATE skills SET name = 'on the connection' WHERE id = $1", tenant.skill_id
            )
            await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
            with pytest.raises(NotFoundError):
                await feedback.record_feedback(skill_id="no-such-skill", feedback_type="thumbs_up")
            with pytest.raises(TenantScopeError, match="an earlier call in this tenant scope failed"):
                await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
    after = await owner.fetchrow(
        "SELECT description, name, total_feedback FROM skills WHERE id = $1", tenant.skill_id
    )
    assert after == before


async def test_a_refusal_before_writing_leaves_the_scope_usable(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """Invalid input, and a row found missing by a read, are refused before
    anything is written: the scope goes on and commits."""
    async with tenant_scope(tenant.tenant_id):
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        with pytest.raises(ValidationError):
            await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="like")
        with pytest.raises(NotFoundError):
            await feedback.get_feedback(str(uuid.uuid4()))
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
    assert await owner.fetchval(
        "SELECT total_feedback FROM skills WHERE id = $1", tenant.skill_id
    ) == 3  # make_tenant's and the two recorded


async def test_a_savepoint_undoes_only_its_block(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id) as scope:
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        with pytest.raises(NotFoundError):
            async with scope.savepoint():
                await Skill.update({Skill.description: "undone"}).where(Skill.id == tenant.skill_id)
                await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
                await feedback.record_feedback(skill_id="no-such-skill", feedback_type="thumbs_up")
        # The block's error was caught and went on: its work is undone, and
        # the scope says so at the savepoint's end.
        with pytest.raises(TenantScopeError, match="savepoint's work was rolled back"):
            async with scope.savepoint():
                await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
                with pytest.raises(NotFoundError):
                    await feedback.record_feedback(skill_id="no-such-skill", feedback_type="thumbs_up")
        async with scope.savepoint():
            await Skill.update({Skill.description: "kept"}).where(Skill.id == tenant.skill_id)
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
    row = await owner.fetchrow(
        "SELECT description, total_feedback, feedback_thumbs_down FROM skills WHERE id = $1",
        tenant.skill_id,
    )
    assert row is not None
    assert (row["description"], row["total_feedback"], row["feedback_thumbs_down"]) == ("kept", 3, 0)


async def test_a_scope_holds_no_subtransaction_however_many_calls_it_makes(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """200 writing API calls and Piccolo queries in one scope: PostgreSQL's
    cache of the backend's subtransaction ids (64) never overflows."""
    async with tenant_scope(tenant.tenant_id) as scope:
        pid = await scope.connection.fetchval("SELECT pg_backend_pid()")
        for index in range(100):
            await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
            await Skill.update({Skill.description: f"update {index}"}).where(
                Skill.id == tenant.skill_id
            )
            await feedback.list_feedback(skill_id=tenant.skill_id, limit=1)
            await Skill.select(Skill.name).where(Skill.id == tenant.skill_id)
        # Seen from another session, as the statistics see the backend now.
        subtransactions = await owner.fetchrow(
            "SELECT (s).subxact_count, (s).subxact_overflowed FROM"
            " (SELECT pg_stat_get_backend_subxact(b) AS s FROM pg_stat_get_backend_idset() AS b"
            "   WHERE pg_stat_get_backend_pid(b) = $1) AS backend",
            pid,
        )
    assert subtransactions is not None
    assert (subtransactions["subxact_count"], subtransactions["subxact_overflowed"]) == (0, False)
    assert await owner.fetchval(
        "SELECT total_feedback FROM skills WHERE id = $1", tenant.skill_id
    ) == 101


@pytest.mark.parametrize("connection_class", [ScopeConnection, asyncpg.Connection])
async def test_session_state_set_in_a_scope_does_not_reach_the_next(
    app_url_for_tests: str, tenant: TenantRows, connection_class: type
) -> None:
    """The pool's session reset runs after every scope: with ScopeConnection
    (piccolo_conf's) it goes with the COMMIT, in the same round trip, and
    the pool skips its own; with a plain asyncpg connection the pool does it."""
    engine = AppEngine(
        config={"dsn": app_url_for_tests, "connection_class": connection_class}
    )
    await engine.start_connection_pool(min_size=1, max_size=1)
    try:
        async with tenant_scope(tenant.tenant_id, engine=engine) as scope:
            await scope.connection.execute("SET application_name = 'left behind'")
            await scope.connection.execute("SELECT pg_advisory_lock(4242)")
            await scope.connection.execute("LISTEN left_behind")
        async with tenant_scope(tenant.tenant_id, engine=engine) as scope:
            state = await scope.connection.fetchrow(
                """
                SELECT current_setting('application_name') AS name,
                       (SELECT count(*) FROM pg_locks
                         WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks,
                       (SELECT count(*) FROM pg_listening_channels()) AS channels,
                       current_user AS role
                """
            )
        assert state is not None
        assert (state["name"], state["locks"], state["channels"]) == ("", 0, 0)
        assert state["role"] == APP_ROLE
        # Outside a scope the pooled connection is the login's again.
        async with engine.pool.acquire() as connection:
            assert await connection.fetchval("SELECT current_user") == "everyskill_api"
            assert await connection.fetchval("SHOW app.current_tenant_id") == ""
    finally:
        await engine.close_connection_pool()


async def test_piccolo_savepoints_in_a_scope_work(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    """Piccolo's savepoints set on the scope's transaction (through the
    tables' engine) roll back what was done since, calls included."""
    async with tenant_scope(tenant.tenant_id):
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        transaction = Skill._meta.db.current_transaction.get()
        assert transaction is not None
        savepoint = await transaction.savepoint()
        await Skill.update({Skill.description: "undone"}).where(Skill.id == tenant.skill_id)
        await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
        await savepoint.rollback_to()  # the update and the second feedback go
    row = await owner.fetchrow(
        "SELECT description, total_feedback FROM skills WHERE id = $1", tenant.skill_id
    )
    assert row is not None
    assert (row["description"], row["total_feedback"]) == (None, 2)


async def test_a_tenant_id_postgresql_cannot_store_is_refused_before_connecting(
    engine: PostgresEngine,
) -> None:
    for tenant_id in ("a\x00b", "a\ud800b"):
        with pytest.raises(TenantScopeError, match="NUL"):
            async with tenant_scope(tenant_id):
                pass


async def test_a_call_after_the_transaction_was_ended_by_hand_is_refused(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows, other_tenant: TenantRows
) -> None:
    """Committing the scope's transaction by hand ends the tenant's role:
    a call then would run as the bare login, outside any tenant. It is
    refused before it runs."""
    with pytest.raises(TenantScopeError, match="already ended"):
        async with tenant_scope(tenant.tenant_id):
            transaction = engine.current_transaction.get()
            assert transaction is not None
            await transaction.commit()
            await feedback.list_feedback(skill_id=other_tenant.skill_id)


async def test_a_scope_whose_transaction_an_error_aborted_commits_nothing_and_says_so(
    owner: asyncpg.Connection, engine: PostgresEngine, tenant: TenantRows
) -> None:
    before = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE skill_id = $1", tenant.skill_id
    )
    with pytest.raises(TenantScopeError, match="nothing of the tenant scope was committed"):
        async with tenant_scope(tenant.tenant_id) as scope:
            await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
            with pytest.raises(asyncpg.UndefinedTableError):
                await scope.connection.execute("SELECT * FROM no_such_table")
    assert await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE skill_id = $1", tenant.skill_id
    ) == before


async def test_a_call_from_outside_a_savepoint_waits_for_it_and_is_kept(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    """A rollback to a savepoint undoes what ran since on the connection: a
    call of another task waits until the savepoint ends, so that a failure
    in it cannot undo a call that already said it succeeded."""
    in_savepoint = asyncio.Event()
    outside_done = asyncio.Event()

    async def outside() -> str:
        await in_savepoint.wait()
        saved = await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        outside_done.set()
        return saved.row.id

    async with tenant_scope(tenant.tenant_id) as scope:
        task = asyncio.create_task(outside())
        with pytest.raises(NotFoundError):
            async with scope.savepoint():
                in_savepoint.set()
                await asyncio.sleep(0.05)
                assert not outside_done.is_set()  # it waits for the savepoint
                # A task started inside the block is part of it, and goes on.
                inner = await asyncio.gather(
                    feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_down")
                )
                assert inner[0].row.id
                await feedback.record_feedback(skill_id="no-such-skill", feedback_type="thumbs_up")
        kept = await task
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE id = $1", kept) == 1
    assert await owner.fetchval(
        "SELECT feedback_thumbs_down FROM skills WHERE id = $1", tenant.skill_id
    ) == 0  # the savepoint's own work is undone


async def test_piccolo_queries_take_turns_and_stop_once_the_scope_failed(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with tenant_scope(tenant.tenant_id) as scope:
        names = await asyncio.gather(
            Skill.select(Skill.name).where(Skill.id == tenant.skill_id),
            feedback.list_feedback(skill_id=tenant.skill_id),
            Skill.select(Skill.slug).where(Skill.id == tenant.skill_id),
        )
        assert len(names[0]) == 1 and len(names[2]) == 1
    with pytest.raises(TenantScopeError, match="nothing of the tenant scope was committed"):
        async with tenant_scope(tenant.tenant_id) as scope:
            await Skill.update({Skill.description: "before"}).where(Skill.id == tenant.skill_id)
            with pytest.raises(NotFoundError):
                await feedback.record_feedback(skill_id="no-such-skill", feedback_type="thumbs_up")
            # Nothing more runs in a failed scope: Piccolo's queries, the
            # connection, calls.
            with pytest.raises(TenantScopeError, match="an earlier call"):
                await Skill.update({Skill.description: "after"}).where(Skill.id == tenant.skill_id)
            with pytest.raises(TenantScopeError, match="an earlier call"):
                scope.connection
    assert await owner.fetchval(
        "SELECT description FROM skills WHERE id = $1", tenant.skill_id
    ) is None


async def test_a_scope_runs_only_on_the_applications_engine(
    database_url_for_tests: str, tenant: TenantRows
) -> None:
    """An engine logged in as the owner would survive RESET ROLE with every
    tenant in sight: a scope refuses it."""
    owners = PostgresEngine(config={"dsn": database_url_for_tests})
    with pytest.raises(TenantScopeError, match="application's engine"):
        async with tenant_scope(tenant.tenant_id, engine=owners):
            pass


# -- autocommit scopes --------------------------------------------------------------


async def test_each_call_of_an_autocommit_scope_is_its_own_transaction(
    owner: asyncpg.Connection, tenant: TenantRows, engine: PostgresEngine
) -> None:
    """Calls write and commit one by one; a failed call leaves the earlier
    ones committed and the scope usable; the scope has no connection, no
    savepoint and runs no Piccolo query."""
    before = await owner.fetchval("SELECT total_feedback FROM skills WHERE id = $1", tenant.skill_id)
    async with tenant_scope(tenant.tenant_id, autocommit=True) as scope:
        first = await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        # Committed already: the owner sees it before the scope ends.
        assert await owner.fetchval(
            "SELECT count(*) FROM skill_feedback WHERE id = $1", first.row.id
        ) == 1
        with pytest.raises(NotFoundError):
            await feedback.record_feedback(skill_id=str(uuid.uuid4()), feedback_type="thumbs_up")
        # A call of several statements runs in a transaction of its own.
        review = await feedback.review_feedback(
            first.row.id, reviewer_id=tenant.user_id, decision="accepted"
        )
        assert review.row.status == "accepted"
        with pytest.raises(TenantScopeError, match="transaction scope"):
            scope.connection
        with pytest.raises(TenantScopeError, match="transaction scope"):
            async with scope.savepoint():
                pass
        with pytest.raises(TenantScopeError, match="transaction scope"):
            await Skill.select()
        with pytest.raises(TenantScopeError):
            async with tenant_scope(tenant.tenant_id):
                pass
    assert await owner.fetchval(
        "SELECT total_feedback FROM skills WHERE id = $1", tenant.skill_id
    ) == before + 1


@asynccontextmanager
async def _through_proxy(engine: PostgresEngine, tmp_path: Any) -> AsyncIterator[tuple[CountingProxy, PostgresEngine]]:
    """A copy of the application's engine whose one connection goes through
    a :class:`CountingProxy` (a copy: a new engine would ask the server's
    version synchronously, through a proxy served by this event loop)."""
    import urllib.parse

    dsn = urllib.parse.urlsplit(engine.config["dsn"])
    query = urllib.parse.parse_qs(dsn.query)
    socket_dir, port = query["host"][0], query.get("port", ["5432"])[0]
    proxy = CountingProxy(f"{socket_dir}/.s.PGSQL.{port}")
    server = await asyncio.start_unix_server(proxy.handle, path=f"{tmp_path}/.s.PGSQL.{port}")
    query["host"] = [str(tmp_path)]
    proxied = copy.copy(engine)
    proxied.pool = None
    proxied.config = {
        **engine.config,
        "dsn": dsn._replace(query=urllib.parse.urlencode(query, doseq=True)).geturl(),
    }
    await proxied.start_connection_pool(min_size=1, max_size=1)
    try:
        yield proxy, proxied
    finally:
        await proxied.close_connection_pool()
        server.close()


async def test_a_feedback_in_an_autocommit_scope_is_one_round_trip(
    tenant: TenantRows, engine: PostgresEngine, tmp_path: Any
) -> None:
    async with _through_proxy(engine, tmp_path) as (proxy, counted):
        async with tenant_scope(tenant.tenant_id, engine=counted, autocommit=True):
            # The first use of a connection prepares the statement.
            await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
            proxy.round_trips = 0
            saved = await feedback.record_feedback(
                skill_id=tenant.skill_id, feedback_type="bug_report", comment="It broke."
            )
            one = proxy.round_trips
        proxy.round_trips = 0
        async with tenant_scope(tenant.tenant_id, engine=counted):
            await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
        in_transaction = proxy.round_trips
    assert saved.row.comment == "It broke." and not saved.replayed
    assert one == 1
    # BEGIN with the switch, the statement, COMMIT with the pool's reset.
    assert in_transaction == 3


async def test_a_lost_answer_to_a_single_statement_write_is_an_unknown_outcome(
    owner: asyncpg.Connection, tenant: TenantRows, engine: PostgresEngine, tmp_path: Any
) -> None:
    """In an autocommit scope the statement is its own transaction: when the
    connection goes after it was sent, the server may have committed it. The
    caller is told the outcome is unknown (not that nothing was written), and
    a retry with the same id returns the stored row as a replay."""
    client_id = str(uuid.uuid4())
    async with _through_proxy(engine, tmp_path) as (proxy, proxied):
        async with tenant_scope(tenant.tenant_id, engine=proxied, autocommit=True):
            await feedback.record_feedback(skill_id=tenant.skill_id, feedback_type="thumbs_up")
            proxy.lose_answers = True
            with pytest.raises(DatabaseUnavailableError) as lost:
                await feedback.record_feedback(
                    id=client_id, skill_id=tenant.skill_id, feedback_type="bug_report",
                    comment="The answer was lost.",
                )
    assert lost.value.during == "commit" and lost.value.outcome_unknown
    # The server committed it.
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE id = $1", client_id) == 1
    async with tenant_scope(tenant.tenant_id, autocommit=True):
        again = await feedback.record_feedback(
            id=client_id, skill_id=tenant.skill_id, feedback_type="bug_report",
            comment="The answer was lost.",
        )
    assert again.replayed and again.row.id == client_id
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback WHERE id = $1", client_id) == 1


_REFUSALS = [
    ("57P03", "the database system is starting up"),
    ("57P01", "terminating connection due to administrator command"),
    ("53300", "sorry, too many clients already"),
]


@pytest.mark.parametrize(("code", "message"), _REFUSALS)
@pytest.mark.parametrize("autocommit", [False, True])
async def test_a_server_refusing_connections_is_unavailable_not_an_error(
    engine: PostgresEngine, code: str, message: str, autocommit: bool
) -> None:
    """Starting up, shutting down or full: the scope cannot connect, which is
    a DatabaseUnavailableError (a 503 over HTTP), not asyncpg's own error."""
    from everyskill.database import engine_config
    from tests.fake_postgres import refusing_server

    # Made on the real server: the engine asks for the server's version when
    # made, synchronously, which the fake one (on this event loop) cannot answer.
    refused = AppEngine(config=dict(engine.config))
    async with refusing_server(code, message) as url:
        refused.config = engine_config(url)
        refused._checked = True  # as after a successful start
        with pytest.raises(DatabaseUnavailableError) as raised:
            async with tenant_scope(str(uuid.uuid4()), engine=refused, autocommit=autocommit):
                await feedback.get_feedback(str(uuid.uuid4()))
    assert raised.value.during == "connect" and message in str(raised.value)


async def test_a_pool_that_stays_busy_is_unavailable_after_the_bounded_wait(
    engine: PostgresEngine, tenant: TenantRows
) -> None:
    """Every pooled connection busy: a scope waits acquire_timeout at most,
    then raises DatabaseUnavailableError, and works again once one is free."""
    busy = AppEngine(config=dict(engine.config))
    await busy.start_connection_pool(max_size=1)
    busy.acquire_timeout = 0.3
    try:
        assert busy.pool is not None and busy.pool.get_max_size() == 1
        held = await busy.pool.acquire()
        started = asyncio.get_running_loop().time()
        for autocommit in (False, True):
            with pytest.raises(DatabaseUnavailableError, match="came free within 0.3 s") as raised:
                async with tenant_scope(tenant.tenant_id, engine=busy, autocommit=autocommit):
                    await feedback.get_feedback(tenant.feedback_id)
            assert raised.value.during == "connect"
        assert asyncio.get_running_loop().time() - started < 5
        await busy.pool.release(held)
        async with tenant_scope(tenant.tenant_id, engine=busy):
            assert (await feedback.get_feedback(tenant.feedback_id)).id == tenant.feedback_id
    finally:
        await busy.close_connection_pool()
