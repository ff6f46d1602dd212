"""
Tenant isolation: the application role, its grants, and row-level security.

How it works: the application connects as the owner (the role that runs these
migrations) and starts every tenant operation with one transaction that does
``SET LOCAL ROLE everyskill_app`` and sets ``app.current_tenant_id`` for that
transaction only. ``everyskill_app`` owns nothing, cannot log in, is no
superuser and has NOBYPASSRLS, so PostgreSQL applies the policies below to it.
The owner (the admin, for platform staff) is exempt from row-level security as
the table owner, and sees every tenant.

Policies, per table with a tenant_id:
- ``tenant_isolation`` is the plan's policy, verbatim: RESTRICTIVE, so on its own
  it grants nothing (with only restrictive policies no row is visible).
- ``tenant_access`` is the PERMISSIVE policy that grants the application role
  its own tenant's rows. NULLIF makes both an unset setting (NULL) and an empty
  one ('') match no row: with no tenant set, nothing is read or written.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T03:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "tenant isolation"

TENANT_TABLES = [
    "users",
    "skills",
    "skill_versions",
    "skill_feedback",
    "token_measurements",
    "benchmark_runs",
    "benchmark_results",
]

FORWARDS = """
-- The application role. NOLOGIN: it is reached only by SET ROLE from the
-- owner's connection. Created once per cluster; a role that exists with
-- powers that defeat row-level security is refused rather than used.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_app') THEN
        CREATE ROLE everyskill_app
            NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
    ELSIF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_app'
                  AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role everyskill_app exists with SUPERUSER or BYPASSRLS; '
            'row-level security would not apply to it'
            USING HINT = 'ALTER ROLE everyskill_app NOSUPERUSER NOBYPASSRLS';
    END IF;
END $$;

-- The owner may switch to the application role (SET LOCAL ROLE). Granting
-- again is harmless: PostgreSQL only notes that the membership exists.
GRANT everyskill_app TO CURRENT_USER;

-- Grants: what the application needs, nothing more.
DO $$ BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO everyskill_app', current_schema());
END $$;
-- Tenants are created by platform staff; the application only reads its own.
GRANT SELECT ON tenants TO everyskill_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON users, skill_versions, skill_feedback, benchmark_runs TO everyskill_app;
-- The aggregate columns of skills are maintained by PostgreSQL: the
-- application may not write them.
GRANT SELECT, DELETE ON skills TO everyskill_app;
GRANT INSERT (id, tenant_id, slug, name, description, author_id, average_rating,
              created_at, updated_at) ON skills TO everyskill_app;
GRANT UPDATE (slug, name, description, author_id, average_rating, updated_at)
    ON skills TO everyskill_app;
-- Measurements and benchmark results are records of what happened: they are
-- added, never edited (a run's results go with the run, by cascade).
GRANT SELECT, INSERT ON token_measurements, benchmark_results TO everyskill_app;

-- Row-level security on every table.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_self ON tenants;
CREATE POLICY tenant_self ON tenants AS PERMISSIVE FOR SELECT TO everyskill_app
    USING (id = NULLIF(current_setting('app.current_tenant_id', true), ''));
"""

POLICIES = """
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON {table};
CREATE POLICY tenant_isolation ON {table} AS RESTRICTIVE FOR ALL
    USING (tenant_id = current_setting('app.current_tenant_id', true))
    WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));
DROP POLICY IF EXISTS tenant_access ON {table};
CREATE POLICY tenant_access ON {table} AS PERMISSIVE FOR ALL TO everyskill_app
    USING (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.current_tenant_id', true), ''));
"""

BACKWARDS_POLICIES = """
DROP POLICY IF EXISTS tenant_access ON {table};
DROP POLICY IF EXISTS tenant_isolation ON {table};
ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
"""

BACKWARDS = """
DROP POLICY IF EXISTS tenant_self ON tenants;
ALTER TABLE tenants DISABLE ROW LEVEL SECURITY;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM everyskill_app;
DO $$ BEGIN
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM everyskill_app', current_schema());
END $$;

-- The role is cluster-wide: drop it unless another database still grants it
-- something, or it was created by someone this role may not drop it for.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'everyskill_app') THEN
        BEGIN
            DROP ROLE everyskill_app;
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            RAISE NOTICE 'role everyskill_app kept: %', SQLERRM;
        END;
    END IF;
END $$;
"""


def forwards_sql() -> str:
    return FORWARDS + "".join(POLICIES.format(table=t) for t in TENANT_TABLES)


def backwards_sql() -> str:
    return (
        "".join(BACKWARDS_POLICIES.format(table=t) for t in TENANT_TABLES)
        + BACKWARDS
    )


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
