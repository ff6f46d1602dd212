"""
A run's picks are computed as the owner, without row-level security.

Completing a benchmark run computes its best and cheapest model from its
results (``benchmark_run_picks``, called by the ``benchmark_runs_lifecycle``
trigger). Run as the application role, that query applies the tenant policy
to each of the run's results, ten thousand of them in a large run, although
it cannot change the answer: a result's tenant is its run's tenant (the
foreign key ``(tenant_id, benchmark_run_id)`` to ``benchmark_runs(tenant_id,
id)`` says so), and the application role can only update runs of its own
tenant.

- ``benchmark_runs_lifecycle`` becomes SECURITY DEFINER: it runs as the
  owner, for the row being written (which row-level security already let the
  writer reach). Its search_path stays fixed, pg_temp last.
- ``benchmark_run_picks`` becomes SECURITY DEFINER too, and only the owner
  may call it (EXECUTE revoked from PUBLIC): the application role could
  otherwise ask for the picks of another tenant's run by its id. Staff can
  still call it to see what a completion would pick.

``backwards`` makes both functions SECURITY INVOKER again and gives EXECUTE
back to PUBLIC.
"""

from everyskill.migration_sql import raw_migration

ID = "2026-11-25T08:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "a run's picks are computed as the owner"

FORWARDS = """
ALTER FUNCTION benchmark_runs_lifecycle() SECURITY DEFINER;
ALTER FUNCTION benchmark_run_picks(text) SECURITY DEFINER;
REVOKE EXECUTE ON FUNCTION benchmark_run_picks(text) FROM PUBLIC;
"""

BACKWARDS = """
GRANT EXECUTE ON FUNCTION benchmark_run_picks(text) TO PUBLIC;
ALTER FUNCTION benchmark_run_picks(text) SECURITY INVOKER;
ALTER FUNCTION benchmark_runs_lifecycle() SECURITY INVOKER;
"""


def forwards_sql() -> str:
    return FORWARDS


def backwards_sql() -> str:
    return BACKWARDS


async def forwards():
    return raw_migration(ID, DESCRIPTION, forwards_sql, backwards_sql)
