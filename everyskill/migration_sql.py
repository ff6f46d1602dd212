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
- :func:`validated_check` is the SQL of a CHECK constraint added to a table
  that may hold older rows: enforced on new writes at once, validated when
  the old rows allow it.
- :func:`earlier_migration` loads another migration's module from its file
  (migration files are not an importable package), for a migration that
  reuses or restores an earlier one's SQL.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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


def earlier_migration(here: str, filename: str) -> ModuleType:
    """The migration module in ``filename``, a file next to ``here`` (a
    migration's ``__file__``), loaded from its file."""
    path = Path(here).with_name(filename)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validated_check(table: str, name: str, definition: str, why: str) -> str:
    """SQL that adds a CHECK constraint, keeping a database with older rows usable.

    The constraint is added NOT VALID, which checks every new write, then
    validated against the existing rows. When older rows break it, the
    migration still succeeds with a WARNING that names the rule and the
    statement to run once those rows are fixed. Idempotent.
    """
    why_text = why.replace("'", "''")
    return f"""
-- {why}
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass
                 AND conname = '{name}') THEN
    ALTER TABLE {table} ADD CONSTRAINT {name} {definition} NOT VALID;
  END IF;
  IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass
             AND conname = '{name}' AND NOT convalidated) THEN
    BEGIN
      ALTER TABLE {table} VALIDATE CONSTRAINT {name};
    EXCEPTION WHEN check_violation THEN
      RAISE WARNING '{table} has rows written before the rule {name} ({why_text}); '
        'new writes are checked. Fix those rows, then run: '
        'ALTER TABLE {table} VALIDATE CONSTRAINT {name};';
    END;
  END IF;
END $$;
"""
