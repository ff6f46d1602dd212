"""Which server is used: DATABASE_URL when set."""

from __future__ import annotations

import pytest

from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from everyskill.database import database_url


def test_database_url_wins_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", " postgresql://someone@db.example/everyskill ")
    assert database_url() == "postgresql://someone@db.example/everyskill"


def test_the_suite_runs_on_its_scratch_database(database_url_for_tests: str) -> None:
    """The fixtures point DATABASE_URL at the migrated scratch database."""
    assert database_url() == database_url_for_tests
    assert "/everyskill_test_" in database_url_for_tests


async def test_the_engines_connections_carry_the_server_settings(engine: PostgresEngine) -> None:
    """piccolo_conf's engine (the application's, the admin's) sets
    SERVER_SETTINGS on every connection, pooled or not."""
    from everyskill.database import SERVER_SETTINGS

    async with engine.pool.acquire() as connection:
        for name, value in SERVER_SETTINGS.items():
            assert await connection.fetchval(f"SHOW {name}") == value
    rows = await engine.run_querystring(QueryString("SHOW random_page_cost"), in_pool=False)
    assert rows[0]["random_page_cost"] == SERVER_SETTINGS["random_page_cost"]


def test_the_pool_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from everyskill.database import (
        DEFAULT_POOL_SIZE,
        DEFAULT_POOL_TIMEOUT,
        DatabaseConfigurationError,
        pool_size,
        pool_timeout,
    )

    monkeypatch.delenv("EVERYSKILL_POOL_SIZE", raising=False)
    monkeypatch.delenv("EVERYSKILL_POOL_TIMEOUT", raising=False)
    assert (pool_size(), pool_timeout()) == (DEFAULT_POOL_SIZE, DEFAULT_POOL_TIMEOUT)
    monkeypatch.setenv("EVERYSKILL_POOL_SIZE", "25")
    monkeypatch.setenv("EVERYSKILL_POOL_TIMEOUT", "2.5")
    assert (pool_size(), pool_timeout()) == (25, 2.5)
    for value in ("0", "-3", "ten", "1.5"):
        monkeypatch.setenv("EVERYSKILL_POOL_SIZE", value)
        with pytest.raises(DatabaseConfigurationError, match="EVERYSKILL_POOL_SIZE"):
            pool_size()
    for value in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv("EVERYSKILL_POOL_TIMEOUT", value)
        with pytest.raises(DatabaseConfigurationError, match="EVERYSKILL_POOL_TIMEOUT"):
            pool_timeout()
