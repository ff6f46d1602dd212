"""Raw migration SQL runs only inside a migration's transaction."""

from __future__ import annotations

import pytest
from piccolo.engine import engine_finder

from everyskill.migration_sql import MigrationSQLError, run_sql


async def test_refused_outside_a_transaction() -> None:
    with pytest.raises(MigrationSQLError, match="inside a migration's transaction"):
        await run_sql("SELECT 1")


async def test_runs_several_statements_in_the_current_transaction() -> None:
    engine = engine_finder()
    assert engine is not None

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with engine.transaction() as transaction:
            await run_sql("CREATE TEMP TABLE probe (x int); INSERT INTO probe VALUES (1), (2);")
            assert await transaction.connection.fetchval("SELECT sum(x) FROM probe") == 3
            raise Rollback
