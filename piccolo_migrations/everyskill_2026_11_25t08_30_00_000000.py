"""
Tenant policies read the tenant once per statement, not once per row.

The permissive policies of the tenant isolation migration (and of the
usage and benchmark rules, for ``model_prices``) compare each
row's ``tenant_id`` with ``NULLIF(current_setting('app.current_tenant_id',
true), '')``. PostgreSQL evaluates that function call for every row a
statement reads or writes: for a statement over ten thousand rows (the
results of a benchmark run, a batch of measurements), the policy costs
more than the query. Written as a scalar subquery, ``(SELECT NULLIF(...))``,
the setting is read once per statement (an InitPlan) and each row is
compared with that value. Which rows pass is the same: the setting cannot
change within a statement's evaluation of it, unset and empty still match
nothing.

The seed's own policy, ``tenant_isolation`` (RESTRICTIVE), stays verbatim:
the planner already folds it into a one-time check, since a row that
passes the permissive policy has ``tenant_id`` equal to the setting.

``backwards`` restores the per-row form.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T08:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "tenant policies read the tenant once per statement"

TENANT_TABLES = [
    "users",
    "skills",
    "skill_versions",
    "skill_feedback",
    "token_measurements",
    "benchmark_runs",
    "benchmark_results",
    "model_prices",
]

ONCE = "(SELECT NULLIF(current_setting('app.current_tenant_id', true), ''))"
PER_ROW = "NULLIF(current_setting('app.current_tenant_id', true), '')"

ACCESS = """
DROP POLICY IF EXISTS tenant_access ON {table};
CREATE POLICY tenant_access ON {table} AS PERMISSIVE FOR ALL TO everyskill_app
    USING (tenant_id = {tenant})
    WITH CHECK (tenant_id = {tenant});
"""

SELF = """
DROP POLICY IF EXISTS tenant_self ON tenants;
CREATE POLICY tenant_self ON tenants AS PERMISSIVE FOR SELECT TO everyskill_app
    USING (id = {tenant});
"""


def _policies(tenant: str) -> str:
    return SELF.format(tenant=tenant) + "".join(
        ACCESS.format(table=table, tenant=tenant) for table in TENANT_TABLES
    )


def forwards_sql() -> str:
    return _policies(ONCE)


def backwards_sql() -> str:
    return _policies(PER_ROW)


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
