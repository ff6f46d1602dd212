"""Running raw SQL from a Piccolo migration.

Contract
--------
- :func:`run_sql` executes one or more SQL statements on the connection of the
  migration's transaction (Piccolo wraps each migration in one), so a raw step
  commits or rolls back together with the rest of its migration.
- It is an error to call it outside a transaction: a raw step must never be
  half-applied.
"""

from __future__ import annotations

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
