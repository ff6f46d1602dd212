"""Running raw SQL from a Piccolo migration.

Contract
--------
- :func:`run_sql` executes one or more SQL statements on the connection of the
  migration's transaction (Piccolo wraps each migration in one), so a raw step
  commits or rolls back together with the rest of its migration.
- It is an error to call it outside a transaction: a raw step must never be
  half-applied.
- :func:`raw_migration` is the ``MigrationManager`` of a migration made of
  raw SQL only: its forwards and backwards SQL, each run with :func:`run_sql`.
"""

from __future__ import annotations

from collections.abc import Callable

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder


class MigrationSQLError(RuntimeError):
    """Raw migration SQL was run outside a migration's transaction."""


async def run_sql(sql: str) -> None:
    """Execute ``sql`` (several statements allowed) in the current transaction."""
    engine = engine_finder()
    transaction = engine.current_transaction.get() if engine else None
    if transaction is None:
        raise MigrationSQLError(
            "run_sql() must be called inside a migration's transaction; "
            "run it through `piccolo migrations forwards`."
        )
    await transaction.connection.execute(sql)


def raw_migration(
    migration_id: str,
    description: str,
    forwards_sql: Callable[[], str],
    backwards_sql: Callable[[], str],
) -> MigrationManager:
    """The manager of a raw-SQL migration of the ``everyskill`` app."""
    manager = MigrationManager(
        migration_id=migration_id, app_name="everyskill", description=description
    )

    async def run() -> None:
        await run_sql(forwards_sql())

    async def run_backwards() -> None:
        await run_sql(backwards_sql())

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
