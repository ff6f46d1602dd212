"""
Least privilege, tried as an attacker would: connected as the application
connects (the ``everyskill_api`` login), never as the owner, with SQL the
application code should never send. The database must refuse every one.
"""

from __future__ import annotations

import os
import uuid
import re
import stat
from pathlib import Path

import asyncpg
import pytest
from piccolo.engine.postgres import PostgresEngine

from everyskill import embedded_db, feedback
from everyskill.database import (
    APP_URL_VARIABLE,
    AppEngine,
    DatabaseConfigurationError,
    app_database_url,
    bind_tables,
    engine_config,
)
from everyskill.errors import NotPermittedError, TenantScopeError
from everyskill.tenancy import APP_ROLE, TENANT_SETTING as TENANT, tenant_scope, tenant_transaction
from tables import STAFF_TABLES, TABLES, Skill, SkillFeedback
from tests.cluster import private_cluster
from tests.support import TenantRows, connected, make_tenant, run_piccolo

APP_LOGIN = "everyskill_api"
# What refuses: a missing privilege, or row-level security's "no rows".
Refused = (asyncpg.InsufficientPrivilegeError, NotPermittedError)


@pytest.fixture
async def two_tenants(
    owner: asyncpg.Connection, engine: PostgresEngine
) -> tuple[TenantRows, TenantRows]:
    return await make_tenant(owner, "a"), await make_tenant(owner, "b")


async def _all_tables(owner: asyncpg.Connection) -> list[str]:
    """Every table of the schema, Piccolo's own (users, sessions,
    migrations) included."""
    return [
        name
        for (name,) in await owner.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        )
    ]


# -- the login ------------------------------------------------------------------


async def test_the_login_has_no_power_and_is_a_member_of_the_application_role_only(
    owner: asyncpg.Connection,
) -> None:
    role = await owner.fetchrow(
        "SELECT rolcanlogin, rolinherit, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole"
        " FROM pg_roles WHERE rolname = $1",
        APP_LOGIN,
    )
    assert role is not None
    assert dict(role) == {
        "rolcanlogin": True,
        "rolinherit": False,
        "rolsuper": False,
        "rolbypassrls": False,
        "rolcreatedb": False,
        "rolcreaterole": False,
    }
    memberships = await owner.fetch(
        "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = $1::regrole", APP_LOGIN
    )
    assert [name for (name,) in memberships] == [APP_ROLE]


async def test_the_login_holds_no_privilege_of_its_own(owner: asyncpg.Connection) -> None:
    """No table, column, sequence or function of the schema grants it
    anything, but EXECUTE on api_key_resolve (an HTTP API key resolved to its
    tenant before the tenant is known, and the request counted against the
    rate limits) and on record_feedback (one feedback
    item in one statement, which switches to the application role itself):
    every other privilege it uses comes with SET ROLE."""
    grants = await owner.fetch(
        """
        SELECT c.relname, a.privilege_type
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.relnamespace = current_schema()::regnamespace
           AND a.grantee = $1::regrole
        UNION ALL
        SELECT c.relname || '.' || att.attname, a.privilege_type
          FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid,
               aclexplode(att.attacl) a
         WHERE c.relnamespace = current_schema()::regnamespace AND a.grantee = $1::regrole
        UNION ALL
        SELECT p.proname, a.privilege_type
          FROM pg_proc p, aclexplode(p.proacl) a
         WHERE p.pronamespace = current_schema()::regnamespace AND a.grantee = $1::regrole
        """,
        APP_LOGIN,
    )
    assert sorted(tuple(grant) for grant in grants) == [
        ("api_key_resolve", "EXECUTE"),
        ("record_feedback", "EXECUTE"),
    ]


# -- outside a tenant transaction -----------------------------------------------


async def test_every_table_is_refused_outside_a_tenant_transaction(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection, two_tenants: object
) -> None:
    tables = await _all_tables(owner)
    assert {
        "skill_feedback", "tenants", "piccolo_user", "sessions", "rate_limit_keys",
        "rate_limit_tenants",
    } <= set(tables)
    for table in tables:
        # Its first column (not every table has an id: the rate limit counters).
        column = await owner.fetchval(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum = 1", table
        )
        for statement in (
            f'SELECT * FROM "{table}" LIMIT 1',
            f'SELECT count(*) FROM "{table}"',
            f'DELETE FROM "{table}"',
            f'UPDATE "{table}" SET "{column}" = "{column}"',
            f'INSERT INTO "{table}" DEFAULT VALUES',
            f'TRUNCATE "{table}"',
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app_connection.execute(statement)
    # Nor by a function that runs as its owner.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_connection.fetch("SELECT * FROM benchmark_run_picks('x')")


async def test_the_login_cannot_become_the_owner_or_anyone_else(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection
) -> None:
    owner_role = await owner.fetchval("SELECT current_user")
    for statement in (
        f'SET ROLE "{owner_role}"',
        f"SELECT set_config('role', '{owner_role}', false)",
        f'SET SESSION AUTHORIZATION "{owner_role}"',
        "SET ROLE pg_read_all_data",
        "SET ROLE pg_write_all_data",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_connection.execute(statement)
    # Being everyskill_app without a tenant is no better: no rows, no writes.
    await app_connection.execute(f"SET ROLE {APP_ROLE}")
    assert await app_connection.fetchval("SELECT count(*) FROM skill_feedback") == 0
    assert await app_connection.fetchval("SELECT count(*) FROM skills") == 0
    await app_connection.execute("RESET ROLE")


async def test_a_piccolo_query_outside_a_scope_is_refused(
    app_url_for_tests: str, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """In a process whose tables are bound to the application's engine
    (``bind_tables(app_engine())``), a Piccolo query that forgets its scope
    is refused by PostgreSQL, and one inside a scope sees one tenant."""
    a, _ = two_tenants
    engine = AppEngine(config=engine_config(app_url_for_tests))
    previous = Skill._meta.db
    bind_tables(engine)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await SkillFeedback.select(SkillFeedback.id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await Skill.update({Skill.name: "everyone's"}, force=True)
        async with tenant_scope(a.tenant_id, engine=engine):
            rows = await Skill.select(Skill.tenant_id)
        assert {row["tenant_id"] for row in rows} == {a.tenant_id}
    finally:
        bind_tables(previous)  # type: ignore[arg-type]


# -- inside a tenant scope -------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    ["RESET ROLE", "SET ROLE NONE", f"SELECT set_config('role', '{APP_LOGIN}', true)"],
)
async def test_dropping_the_application_role_in_a_scope_leaves_nothing(
    owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows], statement: str
) -> None:
    a, _ = two_tenants
    before = await owner.fetchval("SELECT count(*) FROM skill_feedback")
    # The refusal aborts the scope's transaction: it commits nothing.
    with pytest.raises(TenantScopeError, match="nothing of the tenant scope was committed"):
        async with tenant_scope(a.tenant_id) as scope:
            await scope.connection.execute(statement)
            assert await scope.connection.fetchval("SELECT current_user") == APP_LOGIN
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await scope.connection.fetch("SELECT * FROM skill_feedback")
    # The API's calls after it are refused too, typed.
    with pytest.raises(TenantScopeError, match="nothing of the tenant scope was committed"):
        async with tenant_scope(a.tenant_id) as scope:
            await scope.connection.execute(statement)
            with pytest.raises(NotPermittedError, match="skill_feedback"):
                await feedback.record_feedback(skill_id=a.skill_id, feedback_type="thumbs_up")
    assert await owner.fetchval("SELECT count(*) FROM skill_feedback") == before


async def test_reset_all_in_a_scope_leaves_no_other_tenant(
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    """RESET ALL keeps the transaction's role (a SET LOCAL of role is undone
    at the transaction's end only) and clears the tenant: nothing is seen."""
    a, _ = two_tenants
    async with tenant_scope(a.tenant_id) as scope:
        await scope.connection.execute("RESET ALL")
        assert await scope.connection.fetchval("SELECT current_user") == APP_ROLE
        assert await scope.connection.fetchval("SELECT count(*) FROM skills") == 0


@pytest.mark.parametrize(
    "how",
    [
        'SET ROLE "{}"',
        "SELECT set_config('role', '{}', false)",
        "SELECT set_config('role', '{}', true)",
        'SET SESSION AUTHORIZATION "{}"',
        'SET LOCAL ROLE "{}"',
    ],
)
async def test_a_scope_cannot_switch_to_the_owner(
    owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows], how: str
) -> None:
    a, _ = two_tenants
    owner_role = await owner.fetchval("SELECT current_user")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_scope(a.tenant_id) as scope:
            await scope.connection.execute(how.format(owner_role))


async def test_a_nested_tenant_transaction_is_refused_and_the_outer_tenant_stays(
    app_connection: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, b = two_tenants
    async with tenant_transaction(app_connection, a.tenant_id) as db:
        with pytest.raises(TenantScopeError, match="inside another transaction"):
            async with tenant_transaction(db, b.tenant_id):
                pass
        tenants = await db.fetch("SELECT DISTINCT tenant_id FROM skills")
        assert [row["tenant_id"] for row in tenants] == [a.tenant_id]
    async with app_connection.transaction():
        with pytest.raises(TenantScopeError):
            async with tenant_transaction(app_connection, b.tenant_id):
                pass


# -- grants ----------------------------------------------------------------------


# What the application role may not do, column by column (a table-wide
# refusal is listed as "*"). A column added later without its grant shows
# up here.
NOT_GRANTED = {
    "tenants": {"INSERT": {"*"}, "UPDATE": {"*"}, "DELETE": {"*"}},
    "users": {"UPDATE": {"id", "tenant_id", "created_at"}},
    "skills": {
        "UPDATE": {
            "id", "tenant_id", "created_at", "total_feedback", "feedback_thumbs_up",
            "feedback_thumbs_down", "positive_feedback_pct", "costed_measurements",
            "measured_cost_microcents", "avg_token_cost_microcents",
        },
        "DELETE": {"*"},
    },
    "skill_versions": {
        "UPDATE": {"id", "tenant_id", "created_at", "skill_id", "version", "content"},
        "DELETE": {"*"},
    },
    "skill_feedback": {
        "SELECT": {"reviewed_by_admin"},
        "INSERT": {"reviewed_by_admin", "reviewed_by", "reviewed_at"},
        "UPDATE": {
            "id", "tenant_id", "created_at", "skill_id", "reviewed_by_admin", "reviewed_at"
        },
    },
    "benchmark_runs": {"UPDATE": {"id", "tenant_id", "created_at", "skill_id"}},
    "model_prices": {"UPDATE": {"id", "tenant_id", "created_at"}},
    "token_measurements": {"UPDATE": {"*"}, "DELETE": {"*"}},
    "benchmark_results": {"UPDATE": {"*"}, "DELETE": {"*"}},
    # Staff only: keys are resolved by api_key_resolve, as the login.
    "api_keys": {"SELECT": {"*"}, "INSERT": {"*"}, "UPDATE": {"*"}, "DELETE": {"*"}},
}


async def test_the_application_role_has_exactly_its_grants(owner: asyncpg.Connection) -> None:
    refused: dict[str, dict[str, set[str]]] = {}
    for table in (*TABLES, *STAFF_TABLES):
        name = table._meta.tablename
        columns = [column._meta.db_column_name for column in table._meta.columns]
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            if privilege == "DELETE":
                denied = (
                    set()
                    if await owner.fetchval(
                        "SELECT has_table_privilege($1, $2, 'DELETE')", APP_ROLE, name
                    )
                    else {"*"}
                )
            else:
                denied = {
                    column
                    for column in columns
                    if not await owner.fetchval(
                        "SELECT has_column_privilege($1, $2, $3, $4)", APP_ROLE, name, column, privilege
                    )
                }
                if denied == set(columns):
                    denied = {"*"}
            if denied:
                refused.setdefault(name, {})[privilege] = denied
    assert refused == NOT_GRANTED


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE skills SET id = 'x' WHERE id = $1",
        "UPDATE skills SET tenant_id = tenant_id WHERE id = $1",
        "UPDATE skills SET created_at = now() - interval '1 year' WHERE id = $1",
        "UPDATE skills SET total_feedback = 1000 WHERE id = $1",
        "UPDATE skills SET positive_feedback_pct = 100 WHERE id = $1",
        "UPDATE skills SET avg_token_cost_microcents = 0 WHERE id = $1",
        "DELETE FROM skills WHERE id = $1",
        "UPDATE users SET created_at = now() WHERE tenant_id <> $1",
        "UPDATE skill_versions SET skill_id = skill_id WHERE skill_id = $1",
        "UPDATE skill_versions SET content = 'rewritten' WHERE skill_id = $1",
        "DELETE FROM skill_versions WHERE skill_id = $1",
        "UPDATE skill_feedback SET skill_id = skill_id WHERE skill_id = $1",
        "UPDATE benchmark_runs SET skill_id = skill_id WHERE skill_id = $1",
        "UPDATE skill_feedback SET reviewed_at = now() WHERE skill_id = $1",
        "UPDATE skill_feedback SET reviewed_by_admin = 'someone' WHERE skill_id = $1",
        "UPDATE token_measurements SET estimated_cost_microcents = 0 WHERE skill_id = $1",
        "DELETE FROM benchmark_results WHERE benchmark_run_id <> $1",
        "SELECT reviewed_by_admin FROM skill_feedback WHERE skill_id = $1",
        "SELECT * FROM skill_feedback WHERE skill_id = $1",
        "SELECT count(*) FROM skill_feedback WHERE reviewed_by_admin IS NOT NULL AND skill_id = $1",
    ],
)
async def test_ids_stamps_aggregates_and_the_staff_login_are_refused(
    owner: asyncpg.Connection,
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    statement: str,
) -> None:
    a, _ = two_tenants
    before = await owner.fetchrow("SELECT * FROM skills WHERE id = $1", a.skill_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.execute(statement, a.skill_id)
    assert await owner.fetchrow("SELECT * FROM skills WHERE id = $1", a.skill_id) == before


async def test_the_reviewer_changes_only_with_a_review(
    owner: asyncpg.Connection,
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    a, _ = two_tenants
    with pytest.raises(asyncpg.CheckViolationError, match="set by its review"):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.execute(
                "UPDATE skill_feedback SET reviewed_by = $1 WHERE id = $2", a.user_id, a.feedback_id
            )
    # Feedback is created unreviewed: the stamps cannot come with the row.
    for columns, values in (("reviewed_by", "$3"), ("reviewed_at", "now()")):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, a.tenant_id) as db:
                await db.execute(
                    f"INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, comment, {columns})"
                    f" VALUES ($1, $2, 'bug_report', 'x', {values})",
                    a.tenant_id,
                    a.skill_id,
                    *([a.user_id] if values == "$3" else []),
                )
    # A review sets both: the workflow's trigger stamps the time.
    async with tenant_scope(a.tenant_id):
        reviewed = await feedback.review_feedback(a.feedback_id, reviewer_id=a.user_id, decision="accepted")
    assert reviewed.row.reviewed_by == a.user_id
    assert reviewed.row.reviewed_at is not None


async def test_a_tenant_learns_that_staff_reviewed_an_item_not_who(
    owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    await owner.execute(
        "UPDATE skill_feedback SET status = 'dismissed', reviewed_by_admin = 'staff.login'"
        " WHERE id = $1",
        a.feedback_id,
    )
    async with tenant_scope(a.tenant_id):
        item = await feedback.get_feedback(a.feedback_id)
        listed = await feedback.list_feedback(skill_id=a.skill_id)
    assert item.reviewed_by_admin == "staff"
    assert item.status == "dismissed" and item.reviewed_by is None
    assert [row.reviewed_by_admin for row in listed.items] == ["staff"]


# -- Piccolo's writes in a scope ---------------------------------------------------


async def test_piccolo_writes_in_a_scope_work_or_name_the_column(
    owner: asyncpg.Connection, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    a, _ = two_tenants
    async with tenant_scope(a.tenant_id):
        # An insert with every column: the maintained ones start at zero.
        skill = Skill(tenant_id=a.tenant_id, slug="piccolo", name="By Piccolo", total_feedback=99)
        await skill.save()
        # Saving only what changed works.
        skill.name = "Renamed"
        await skill.save([Skill.name])
        await Skill.update({Skill.description: "described"}).where(Skill.id == skill.id)
    row = await owner.fetchrow(
        "SELECT name, description, total_feedback FROM skills WHERE slug = 'piccolo' AND tenant_id = $1",
        a.tenant_id,
    )
    assert row is not None and tuple(row) == ("Renamed", "described", 0)

    # Saving the whole row writes its id, tenant, creation time and
    # aggregates: refused, and the scope (which had read the row) ends.
    with pytest.raises(TenantScopeError, match="nothing of the tenant scope was committed"):
        async with tenant_scope(a.tenant_id):
            loaded = await Skill.objects().where(Skill.slug == "piccolo").first()
            assert loaded is not None
            loaded.name = "Again"
            with pytest.raises(NotPermittedError) as refused:
                await loaded.save()
    assert refused.value.table == "skills" and refused.value.privilege == "UPDATE"
    assert {"id", "tenant_id", "created_at", "total_feedback"} <= set(refused.value.columns)
    assert "name" not in refused.value.columns
    assert "row.save([Table.column])" in str(refused.value)

    async with tenant_scope(a.tenant_id):
        with pytest.raises(NotPermittedError) as hidden:
            await SkillFeedback.select()
    assert (hidden.value.privilege, hidden.value.columns) == ("SELECT", ("reviewed_by_admin",))
    async with tenant_scope(a.tenant_id):
        with pytest.raises(NotPermittedError) as deleted:
            await Skill.delete().where(Skill.slug == "piccolo")
    assert (deleted.value.table, deleted.value.privilege) == ("skills", "DELETE")
    assert await owner.fetchval("SELECT name FROM skills WHERE slug = 'piccolo' AND tenant_id = $1", a.tenant_id) == "Renamed"


# -- schema and functions ---------------------------------------------------------


async def test_security_definer_functions_trust_nothing_in_the_search_path(
    owner: asyncpg.Connection,
) -> None:
    functions = await owner.fetch(
        "SELECT proname, proconfig, prosrc FROM pg_proc"
        " WHERE pronamespace = current_schema()::regnamespace AND prosecdef ORDER BY 1"
    )
    assert len(functions) >= 5
    tables = "|".join(
        [table._meta.tablename for table in (*TABLES, *STAFF_TABLES)]
        + ["rate_limit_keys", "rate_limit_tenants"]
    )
    unqualified = re.compile(rf"\b(FROM|JOIN|UPDATE|INTO)\s+({tables}|benchmark_run_picks)\b", re.I)
    for function in functions:
        assert function["proconfig"] == ["search_path=pg_catalog, pg_temp"], function["proname"]
        # With pg_catalog and pg_temp only, a table is found by its full name.
        assert not unqualified.search(function["prosrc"]), function["proname"]
    assert not await owner.fetchval(
        "SELECT has_schema_privilege('public', 'public', 'CREATE')"
    )
    assert not await owner.fetchval(
        "SELECT has_schema_privilege($1, 'public', 'CREATE')", APP_LOGIN
    )
    assert not await owner.fetchval(
        "SELECT has_database_privilege('public', current_database(), 'TEMPORARY')"
    )


async def test_the_rate_limits_are_counted_only_by_the_resolution(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    """The login cannot read, reset or raise a rate limit: not the counters
    (no privilege at all, outside a tenant or in one), not a tenant's or a
    key's limit; only api_key_resolve counts, and only for the login,
    outside a tenant transaction."""
    a, _ = two_tenants
    statements = [
        "SELECT * FROM rate_limit_keys",
        "SELECT tat FROM rate_limit_tenants",
        "UPDATE rate_limit_keys SET tat = 0",
        "UPDATE rate_limit_tenants SET tat = 0",
        "DELETE FROM rate_limit_tenants",
        "TRUNCATE rate_limit_keys, rate_limit_tenants",
        "INSERT INTO rate_limit_tenants (tenant_id, tat) SELECT id, 0 FROM tenants",
        "UPDATE tenants SET rate_limit_per_minute = NULL",
        "UPDATE tenants SET rate_limit_per_minute = 2147483647",
        "UPDATE api_keys SET rate_limit_per_minute = 2147483647",
        "ALTER TABLE rate_limit_keys SET LOGGED",
        "DROP TABLE rate_limit_tenants",
    ]
    for statement in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_connection.execute(statement)
        with pytest.raises(Refused):
            async with tenant_transaction(app_connection, a.tenant_id) as db:
                await db.execute(statement)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_connection, a.tenant_id) as db:
            await db.fetch("SELECT * FROM api_key_resolve($1)", os.urandom(32))
    # An unknown key is counted nowhere.
    counters = (
        "SELECT (SELECT count(*) FROM rate_limit_keys), (SELECT count(*) FROM rate_limit_tenants)"
    )
    before = tuple(await owner.fetchrow(counters) or ())
    unknown = os.urandom(32)
    assert await app_connection.fetch("SELECT * FROM api_key_resolve($1)", unknown) == []
    assert tuple(await owner.fetchrow(counters) or ()) == before
    for role in (APP_LOGIN, APP_ROLE, "public"):
        for table in ("rate_limit_keys", "rate_limit_tenants"):
            assert not await owner.fetchval(
                "SELECT has_table_privilege($1, $2, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE,"
                " REFERENCES, TRIGGER')",
                role, table,
            ), (role, table)


async def test_the_application_cannot_create_temporary_objects(
    owner: asyncpg.Connection, app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    """A temporary table comes first in a session's search path: one named
    skills, made in a tenant's transaction, would stay on the pooled
    connection and take the next tenant's reads and writes. The application
    may not make one, in a scope or outside."""
    a, _ = two_tenants
    assert not await owner.fetchval(
        "SELECT has_database_privilege($1, current_database(), 'TEMPORARY')", APP_ROLE
    )
    for statement in (
        "CREATE TEMPORARY TABLE skills (id text)",
        "CREATE TEMPORARY VIEW skills AS SELECT 1 AS id",
        "CREATE TEMPORARY SEQUENCE s",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_connection.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, a.tenant_id) as db:
                await db.execute(statement)


# -- configuration ------------------------------------------------------------------


async def test_the_owners_login_is_refused_as_the_applications(
    database_url_for_tests: str,
) -> None:
    engine = AppEngine(config=engine_config(database_url_for_tests))
    with pytest.raises(DatabaseConfigurationError, match="not 'everyskill_api'.*owns the tables"):
        await engine.start_connection_pool()


async def test_an_unknown_login_is_a_clear_error(app_url_for_tests: str) -> None:
    url = app_url_for_tests.replace(f"{APP_LOGIN}:", "nobody:", 1)
    engine = AppEngine(config=engine_config(url))
    with pytest.raises(DatabaseConfigurationError, match="was refused"):
        await engine.check()


def test_an_owner_url_without_the_applications_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://owner@db.example/everyskill")
    monkeypatch.delenv(APP_URL_VARIABLE, raising=False)
    with pytest.raises(DatabaseConfigurationError, match=APP_URL_VARIABLE):
        app_database_url()


def test_the_embedded_login_password_is_made_once_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys" / "app-login-password"
    monkeypatch.setenv("EVERYSKILL_APP_PASSWORD_FILE", str(path))
    password = embedded_db.app_password()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(password) >= 40 and embedded_db.app_password() == password
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no draft left
    path.chmod(0o644)
    assert embedded_db.app_password() == password
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_text("it's\n")
    with pytest.raises(embedded_db.EmbeddedDatabaseError, match="delete it"):
        embedded_db.app_password()

async def test_a_login_given_powers_settings_or_roles_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """What a DBA could do to everyskill_api by mistake, on a cluster of its
    own: each makes the application's start-up check fail, naming it."""
    with private_cluster(tmp_path_factory.mktemp("login")) as cluster:
        run_piccolo(cluster.url, "migrations", "forwards", "all")
        superuser = cluster.url.replace("everyskill@", "postgres@", 1)
        login = cluster.url.replace("everyskill@", f"{APP_LOGIN}@", 1)
        mistakes = [
            ("ALTER ROLE everyskill_api REPLICATION", "ALTER ROLE everyskill_api NOREPLICATION",
             "a power it must not have"),
            ("ALTER ROLE everyskill_api INHERIT", "ALTER ROLE everyskill_api NOINHERIT",
             "INHERIT"),
            ("GRANT pg_read_all_data TO everyskill_app",
             "REVOKE pg_read_all_data FROM everyskill_app", "member of pg_read_all_data"),
            ("ALTER ROLE everyskill_api SET role = 'everyskill_app'",
             "ALTER ROLE everyskill_api RESET ALL", "settings of its own"),
            ("ALTER ROLE everyskill_api IN DATABASE everyskill SET work_mem = '8MB'",
             "ALTER ROLE everyskill_api IN DATABASE everyskill RESET ALL", "settings of its own"),
        ]
        await AppEngine(config=engine_config(login)).check()  # as migrated: fine
        async with connected(superuser) as admin:
            for mistake, undo, named in mistakes:
                await admin.execute(mistake)
                try:
                    with pytest.raises(DatabaseConfigurationError, match=named):
                        await AppEngine(config=engine_config(login)).check()
                finally:
                    await admin.execute(undo)


async def test_an_unreachable_application_database_is_a_clear_error(
    app_url_for_tests: str,
) -> None:
    missing = app_url_for_tests.replace("/everyskill_test_", "/no_such_database_", 1)
    with pytest.raises(DatabaseConfigurationError, match="cannot be reached.*database"):
        await AppEngine(config=engine_config(missing)).check()


# -- record_feedback: one statement that switches to the application role ----------

RECORD = "SELECT * FROM record_feedback($1, $2, $3, NULL, NULL, NULL, 'thumbs_up', 1," \
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'api')"


SIGNATURE = (
    "record_feedback(text, text, text, text, text, text, text, integer, text, text, text,"
    " text, text, text, integer, text)"
)


async def _feedback_count(owner: asyncpg.Connection) -> int:
    return int(await owner.fetchval("SELECT count(*) FROM skill_feedback"))


async def test_record_feedback_writes_for_its_tenant_and_leaves_nothing_behind(
    owner: asyncpg.Connection,
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    a, _ = two_tenants
    row = await app_connection.fetchrow(RECORD, a.tenant_id, str(uuid.uuid4()), a.skill_id)
    assert row is not None and row["tenant_id"] == a.tenant_id and not row["replayed"]
    # The statement was its own transaction: the role and the tenant ended with it.
    assert await app_connection.fetchval("SELECT current_user") == APP_LOGIN
    assert not await app_connection.fetchval("SELECT current_setting($1, true)", TENANT)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_connection.fetch("SELECT * FROM skill_feedback")


async def test_record_feedback_refuses_another_tenants_skill(
    owner: asyncpg.Connection,
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
) -> None:
    a, b = two_tenants
    before = await _feedback_count(owner)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await app_connection.fetchrow(RECORD, a.tenant_id, str(uuid.uuid4()), b.skill_id)
    assert await _feedback_count(owner) == before


@pytest.mark.parametrize("tenant", [None, "", " "])
async def test_record_feedback_refuses_an_empty_tenant(
    owner: asyncpg.Connection,
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    tenant: str | None,
) -> None:
    a, _ = two_tenants
    before = await _feedback_count(owner)
    with pytest.raises(asyncpg.PostgresError):
        await app_connection.fetchrow(RECORD, tenant, str(uuid.uuid4()), a.skill_id)
    assert await _feedback_count(owner) == before


@pytest.mark.parametrize("statement", ["RESET ROLE", "SET ROLE NONE"])
async def test_record_feedback_refuses_a_tenant_transaction_that_dropped_its_role(
    owner: asyncpg.Connection,
    app_connection: asyncpg.Connection,
    two_tenants: tuple[TenantRows, TenantRows],
    statement: str,
) -> None:
    a, b = two_tenants
    before = await _feedback_count(owner)
    for tenant in (a, b):  # its own tenant, and another
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_transaction(app_connection, a.tenant_id):
                await app_connection.execute(statement)
                await app_connection.fetchrow(
                    RECORD, tenant.tenant_id, str(uuid.uuid4()), tenant.skill_id
                )
    # Nor does it switch a tenant transaction to another tenant.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with tenant_transaction(app_connection, a.tenant_id):
            await app_connection.fetchrow(RECORD, b.tenant_id, str(uuid.uuid4()), b.skill_id)
    assert await _feedback_count(owner) == before


async def test_record_feedback_refuses_a_role_outside_the_application_role(
    owner: asyncpg.Connection, app_url_for_tests: str, two_tenants: tuple[TenantRows, TenantRows]
) -> None:
    """A login that is no member of everyskill_app: refused EXECUTE, and
    given EXECUTE, refused the switch to the application role."""
    a, _ = two_tenants
    outsider = f"everyskill_outsider_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    before = await _feedback_count(owner)
    await owner.execute(f"CREATE ROLE {outsider} LOGIN PASSWORD '{password}'")
    await owner.execute(f"GRANT CONNECT ON DATABASE {await owner.fetchval('SELECT current_database()')} TO {outsider}")
    url = re.sub(r"//[^@]*@", f"//{outsider}:{password}@", app_url_for_tests, count=1)
    try:
        async with connected(url) as connection:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="record_feedback"):
                await connection.fetchrow(RECORD, a.tenant_id, str(uuid.uuid4()), a.skill_id)
            await owner.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {outsider}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="everyskill_app"):
                await connection.fetchrow(RECORD, a.tenant_id, str(uuid.uuid4()), a.skill_id)
    finally:
        await owner.execute(
            f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM {outsider};"
            f" REVOKE ALL ON DATABASE {await owner.fetchval('SELECT current_database()')} FROM {outsider};"
            f" DROP ROLE {outsider}"
        )
    assert await _feedback_count(owner) == before
