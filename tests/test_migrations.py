"""
Migrations, through the ``piccolo`` command line on a scratch database:
``forwards all`` builds everything, running it again changes nothing,
``backwards all`` removes every object the project made in the database,
and ``forwards all`` rebuilds the same schema. Also: the Table classes and
the migrations agree.
"""

from __future__ import annotations

import asyncio
import importlib.util
from types import ModuleType

import asyncpg
import pytest
from piccolo.apps.migrations.commands.new import AutoMigrationManager
from piccolo.conf.apps import Finder

from everyskill.tenancy import tenant_transaction
from tables import TABLES
from tests.cluster import private_cluster
from tests.support import PROJECT_ROOT, connected, make_tenant, run_piccolo, snapshot

MIGRATIONS = PROJECT_ROOT / "piccolo_migrations"
# Piccolo's own bookkeeping table is all that may remain after backwards all.
PICCOLO_BOOKKEEPING = {"migration", "migration_pkey", "migration_id_seq"}


def raw_migrations() -> list[ModuleType]:
    """The migration modules that carry raw SQL (forwards_sql/backwards_sql)."""
    modules = []
    for path in sorted(MIGRATIONS.glob("everyskill_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "forwards_sql"):
            modules.append(module)
    return modules


async def role_dependencies(url: str) -> tuple[bool, int, int]:
    """(app role exists, its dependencies in this database, in other databases)."""
    async with connected(url) as connection:
        row = await connection.fetchrow(
            """
            SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_app'),
                   count(*) FILTER (WHERE d.dbid = (SELECT oid FROM pg_database
                                                    WHERE datname = current_database())),
                   count(*) FILTER (WHERE d.dbid <> (SELECT oid FROM pg_database
                                                     WHERE datname = current_database()))
              FROM pg_shdepend d
             WHERE d.refclassid = 'pg_authid'::regclass
               AND d.refobjid = (SELECT oid FROM pg_roles WHERE rolname = 'everyskill_app')
            """
        )
        assert row is not None
        return row[0], row[1], row[2]


async def test_forwards_backwards_forwards_round_trip(fresh_database: str) -> None:
    output = run_piccolo(fresh_database, "migrations", "forwards", "all")
    assert "ok!" in output
    built = await snapshot(fresh_database)
    tables = {name for name, kind, *_ in built["tables"] if kind == "r"}
    assert {table._meta.tablename for table in TABLES} <= tables
    assert built["policies"] and built["grants"] and built["functions"]

    # Running forwards again changes nothing.
    again = run_piccolo(fresh_database, "migrations", "forwards", "all")
    assert "No migrations need to be run" in again
    assert await snapshot(fresh_database) == built

    # Backwards all removes every object the project made in this database.
    run_piccolo(fresh_database, "migrations", "backwards", "all", "--auto_agree")
    emptied = await snapshot(fresh_database)
    assert {name for name, *_ in emptied["tables"]} <= PICCOLO_BOOKKEEPING
    assert emptied["columns"] == [
        row for row in emptied["columns"] if row[0] == "migration"
    ]
    for kind in ("policies", "functions", "triggers", "grants"):
        assert emptied[kind] == [], kind
    assert "everyskill_app" not in str(emptied["schema_privileges"])
    exists, here, elsewhere = await role_dependencies(fresh_database)
    assert here == 0
    # The cluster-wide role stays only while another database still uses it.
    assert exists == (elsewhere > 0)

    # And forwards rebuilds exactly what it built the first time.
    run_piccolo(fresh_database, "migrations", "forwards", "all")
    assert await snapshot(fresh_database) == built


async def test_raw_sql_is_idempotent(fresh_database: str) -> None:
    """Each raw step run a second time over a migrated database changes nothing."""
    run_piccolo(fresh_database, "migrations", "forwards", "all")
    built = await snapshot(fresh_database)
    async with connected(fresh_database) as connection:
        for module in raw_migrations():
            async with connection.transaction():
                await connection.execute(module.forwards_sql())
    assert await snapshot(fresh_database) == built


async def test_backwards_with_data_in_the_tables(fresh_database: str) -> None:
    """backwards all works on a database whose every table holds rows (two
    tenants, reviewed feedback, costed measurements, a completed run with
    results), and forwards all then rebuilds exactly the schema it built on
    an empty database, its rules working again."""
    run_piccolo(fresh_database, "migrations", "forwards", "all")
    built = await snapshot(fresh_database)
    async with connected(fresh_database) as connection:
        for label in ("one", "two"):
            rows = await make_tenant(connection, label)
            await connection.execute(
                "UPDATE skill_feedback SET status = 'accepted', reviewed_by = $2 WHERE id = $1",
                rows.feedback_id,
                rows.user_id,
            )
            await connection.execute(
                "INSERT INTO token_measurements (tenant_id, skill_id, model_name, input_tokens,"
                " output_tokens, estimated_cost_microcents)"
                " SELECT $1, $2, 'm', 10, 10, g FROM generate_series(1, 50) AS g",
                rows.tenant_id,
                rows.skill_id,
            )
            await connection.execute(
                "UPDATE benchmark_runs SET status = 'completed' WHERE id = $1", rows.run_id
            )
        empty = [
            table._meta.tablename
            for table in TABLES
            if not await connection.fetchval(f'SELECT count(*) FROM "{table._meta.tablename}"')
        ]
    assert empty == [], "every table holds rows before going backwards"

    run_piccolo(fresh_database, "migrations", "backwards", "all", "--auto_agree")
    emptied = await snapshot(fresh_database)
    assert {name for name, *_ in emptied["tables"]} <= PICCOLO_BOOKKEEPING

    run_piccolo(fresh_database, "migrations", "forwards", "all")
    assert await snapshot(fresh_database) == built
    async with connected(fresh_database) as connection:
        rows = await make_tenant(connection, "again")
        assert await connection.fetchval(
            "SELECT total_feedback FROM skills WHERE id = $1", rows.skill_id
        ) == 1


def test_tables_and_migrations_agree() -> None:
    """No change to tables.py is left without its auto migration."""
    app_config = Finder().get_app_config("everyskill")
    statements = asyncio.run(AutoMigrationManager().get_alter_statements(app_config))
    changes = [line for statement in statements for line in statement.statements]
    assert changes == [], "run: piccolo migrations new everyskill --auto"



async def test_feedback_rules_and_aggregates_arrive_on_a_database_with_data(
    fresh_database: str,
) -> None:
    """Rows written before the feedback rules and the live aggregates: what can
    be derived is filled in, a rule old rows break is left NOT VALID (new
    writes are still checked) instead of failing the migration, and the
    aggregates start from a recount."""
    run_piccolo(
        fresh_database, "migrations", "forwards", "everyskill",
        "--migration_id=2026-11-25T03:56:33:498239",
    )
    async with connected(fresh_database) as connection:
        rows = await make_tenant(connection, model_price=False)
        await connection.execute(
            "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, status)"
            " VALUES ($1, $2, 'thumbs_up', NULL, 'pending'), ($1, $2, 'thumbs_down', 0, 'accepted'),"
            "        ($1, $2, 'bug_report', NULL, 'pending')",
            rows.tenant_id,
            rows.skill_id,
        )
    run_piccolo(fresh_database, "migrations", "forwards", "all")
    async with connected(fresh_database) as connection:
        thumbs = await connection.fetch(
            "SELECT feedback_type, sentiment, reviewed_at IS NOT NULL FROM skill_feedback"
            " WHERE feedback_type LIKE 'thumbs%' ORDER BY 1, 2, 3"
        )
        assert [tuple(row) for row in thumbs] == [
            ("thumbs_down", -1, True),
            ("thumbs_up", 1, False),
            ("thumbs_up", 1, False),
        ]
        unvalidated = await connection.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'skill_feedback'::regclass"
            " AND NOT convalidated"
        )
        assert [row["conname"] for row in unvalidated] == ["skill_feedback_bug_report_check"]
        aggregates = await connection.fetchrow(
            "SELECT total_feedback, positive_feedback_pct, avg_token_cost_microcents"
            " FROM skills WHERE id = $1",
            rows.skill_id,
        )
        # make_tenant's thumbs up and measurement, and the three rows above.
        assert tuple(aggregates) == (4, 67, 600000)  # type: ignore[arg-type]
        # The rule still holds for new writes.
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(
                "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type) VALUES ($1, $2, 'bug_report')",
                rows.tenant_id,
                rows.skill_id,
            )


BEFORE_USAGE_RULES = "--migration_id=2026-11-25T05:48:14:678615"


async def test_usage_and_benchmark_rules_arrive_on_a_database_with_data(
    fresh_database: str,
) -> None:
    """Runs written before the life cycle existed: a rule they break is left
    NOT VALID (and still checked on new writes) instead of failing the
    migration."""
    run_piccolo(fresh_database, "migrations", "forwards", "everyskill", BEFORE_USAGE_RULES)
    async with connected(fresh_database) as connection:
        rows = await make_tenant(connection)
        # A run marked completed by an older writer, never stamped.
        await connection.execute(
            "INSERT INTO benchmark_runs (tenant_id, skill_id, triggered_by, models, status)"
            " VALUES ($1, $2, $3, ARRAY['gpt-4o'], 'completed')",
            rows.tenant_id,
            rows.skill_id,
            rows.user_id,
        )
    output = run_piccolo(fresh_database, "migrations", "forwards", "all")
    assert "2026-11-25T06:00:00:000000" in output
    async with connected(fresh_database) as connection:
        unvalidated = await connection.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'benchmark_runs'::regclass"
            " AND NOT convalidated ORDER BY 1"
        )
        assert [row["conname"] for row in unvalidated] == [
            "benchmark_runs_completed_at_check",
            "benchmark_runs_started_at_check",
        ]
        # The rules hold for new writes all the same.
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(
                "UPDATE benchmark_runs SET completed_at = NULL WHERE id = $1", rows.run_id
            )


async def test_duplicate_results_stop_the_migration_with_a_way_out(
    fresh_database: str,
) -> None:
    """One result per model and test case cannot be added over duplicates: the
    migration fails, changes nothing, and says how to find them."""
    run_piccolo(fresh_database, "migrations", "forwards", "everyskill", BEFORE_USAGE_RULES)
    async with connected(fresh_database) as connection:
        rows = await make_tenant(connection)
        await connection.execute(
            "INSERT INTO benchmark_results"
            " (tenant_id, benchmark_run_id, model_name, model_provider, test_case_index)"
            " VALUES ($1, $2, 'gpt-4o', 'openai', 0)",
            rows.tenant_id,
            rows.run_id,
        )
    with pytest.raises(AssertionError, match="HAVING count"):
        run_piccolo(fresh_database, "migrations", "forwards", "all")
    async with connected(fresh_database) as connection:
        assert await connection.fetchval("SELECT to_regprocedure('benchmark_run_picks(text)')") is None
        assert await connection.fetchval(
            "SELECT count(*) FROM migration WHERE name = '2026-11-25T06:00:00:000000'"
        ) == 0


BEFORE_ADMIN_REVIEWS = "--migration_id=2026-11-25T06:00:00:000000"
ADMIN_REVIEWS = "2026-11-25T07:13:42:846473"  # the first of its two migrations


async def test_dismissed_feedback_leaves_the_counts_and_comes_back_on_backwards(
    fresh_database: str,
) -> None:
    """Feedback dismissed before the admin-review migration: forwards recounts
    without it; backwards counts it again and gives the application its
    table-wide INSERT and UPDATE grants back."""
    run_piccolo(fresh_database, "migrations", "forwards", "everyskill", BEFORE_ADMIN_REVIEWS)
    async with connected(fresh_database) as connection:
        rows = await make_tenant(connection)
        await connection.execute(
            "INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment, status, reviewed_at)"
            " VALUES ($1, $2, 'thumbs_down', -1, 'dismissed', now()),"
            "        ($1, $2, 'thumbs_down', -1, 'accepted', now())",
            rows.tenant_id,
            rows.skill_id,
        )
        counts = "SELECT total_feedback, positive_feedback_pct FROM skills WHERE id = $1"
        assert tuple(await connection.fetchrow(counts, rows.skill_id)) == (3, 33)  # type: ignore[arg-type]
        grants = (
            "SELECT privilege_type, count(*) FROM information_schema.column_privileges"
            " WHERE table_name = 'skill_feedback' AND grantee = 'everyskill_app'"
            " AND column_name = $1 GROUP BY 1 ORDER BY 1"
        )
        before = [tuple(row) for row in await connection.fetch(grants, "comment")]

    run_piccolo(fresh_database, "migrations", "forwards", "all")
    async with connected(fresh_database) as connection:
        assert tuple(await connection.fetchrow(counts, rows.skill_id)) == (2, 50)  # type: ignore[arg-type]
        # The staff login is not the application's to write, nor (since the
        # least-privilege migration) to read.
        assert [tuple(row) for row in await connection.fetch(grants, "reviewed_by_admin")] == []

    run_piccolo(
        fresh_database, "migrations", "backwards", "everyskill",
        f"--migration_id={ADMIN_REVIEWS}", "--auto_agree",
    )
    async with connected(fresh_database) as connection:
        assert tuple(await connection.fetchrow(counts, rows.skill_id)) == (3, 33)  # type: ignore[arg-type]
        assert [tuple(row) for row in await connection.fetch(grants, "comment")] == before
        table_grants = await connection.fetchval(
            "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type)"
            " FROM information_schema.table_privileges"
            " WHERE table_name = 'skill_feedback' AND grantee = 'everyskill_app'"
        )
        assert table_grants == "DELETE,INSERT,SELECT,UPDATE"


async def test_backwards_drops_the_roles_unless_another_database_uses_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The roles are cluster-wide: on a cluster of its own, with two migrated
    databases, backwards in one keeps them for the other; backwards in the
    last drops them; forwards makes them again, as they must be."""
    with private_cluster(tmp_path_factory.mktemp("roles")) as cluster:
        other = cluster.url.replace("/everyskill?", "/other?", 1)
        async with connected(cluster.url) as owner:
            await owner.execute("CREATE DATABASE other")
        roles = (
            "SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles"
            " WHERE rolname IN ('everyskill_api', 'everyskill_app')"
        )
        both = ["everyskill_api", "everyskill_app"]
        for url in (cluster.url, other):
            run_piccolo(url, "migrations", "forwards", "all")
        run_piccolo(cluster.url, "migrations", "backwards", "all", "--auto_agree")
        async with connected(other) as owner:
            assert await owner.fetchval(roles) == both
            # The other database still works as the application.
            rows = await make_tenant(owner, "kept")
        app_login = other.replace("everyskill@", "everyskill_api@", 1)
        async with connected(app_login) as app:
            async with tenant_transaction(app, rows.tenant_id):
                assert await app.fetchval("SELECT count(*) FROM skills") == 1
        run_piccolo(other, "migrations", "backwards", "all", "--auto_agree")
        async with connected(cluster.url) as owner:
            assert await owner.fetchval(roles) is None
        run_piccolo(cluster.url, "migrations", "forwards", "all")
        async with connected(cluster.url) as owner:
            assert await owner.fetchval(roles) == both
            login = await owner.fetchrow(
                "SELECT rolcanlogin, rolinherit, rolsuper, rolbypassrls FROM pg_roles"
                " WHERE rolname = 'everyskill_api'"
            )
            assert login is not None and tuple(login) == (True, False, False, False)
