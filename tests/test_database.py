"""Which server is used: DATABASE_URL when set."""

from __future__ import annotations

import pytest

from everyskill.database import database_url


def test_database_url_wins_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", " postgresql://someone@db.example/everyskill ")
    assert database_url() == "postgresql://someone@db.example/everyskill"


def test_the_suite_runs_on_its_scratch_database(database_url_for_tests: str) -> None:
    """The fixtures point DATABASE_URL at the migrated scratch database."""
    assert database_url() == database_url_for_tests
    assert "/everyskill_test_" in database_url_for_tests
