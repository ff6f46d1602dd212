"""
everyskill.sample_data: the command fills an empty database with a product
worth looking at, and leaves a database with tenants alone; what it loads
went through the API (redaction, prices, aggregates) and spans the weeks.
"""

from __future__ import annotations

import asyncpg
import pytest

from everyskill.sample_data import HISTORY, load_sample_data
from tables import BenchmarkStatus, FeedbackStatus, FeedbackType
from tests.support import TenantRows, connected, run_piccolo


async def test_the_command_fills_an_empty_database_once(fresh_database: str) -> None:
    run_piccolo(fresh_database, "migrations", "forwards", "all")
    output = run_piccolo(fresh_database, "everyskill", "sample_data")
    assert "Loaded 2 tenants" in output
    again = run_piccolo(fresh_database, "everyskill", "sample_data")
    assert "nothing loaded" in again
    async with connected(fresh_database) as owner:
        assert await owner.fetchval("SELECT count(*) FROM tenants") == 2
        assert await owner.fetchval("SELECT count(*) FROM skills") == 10


@pytest.fixture
async def sample(tenant: TenantRows) -> tuple[str, ...]:
    # A database with a tenant is left alone; force adds two more tenants.
    assert await load_sample_data() is None
    loaded = await load_sample_data(force=True)
    assert loaded is not None and len(loaded.tenant_ids) == 2
    return loaded.tenant_ids


async def test_every_feedback_type_and_status_is_there(
    owner: asyncpg.Connection, sample: tuple[str, ...]
) -> None:
    for tenant_id in sample:
        rows = await owner.fetch(
            "SELECT feedback_type, status, count(*) FROM skill_feedback"
            " WHERE tenant_id = $1 GROUP BY 1, 2",
            tenant_id,
        )
        assert {row["feedback_type"] for row in rows} == {kind.value for kind in FeedbackType}
        assert {row["status"] for row in rows} == {status.value for status in FeedbackStatus}
        assert 100 <= sum(row["count"] for row in rows) <= 300
    redacted = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE tenant_id = ANY($1::text[])"
        " AND comment LIKE '%[REDACTED:%'",
        list(sample),
    )
    leaked = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback WHERE tenant_id = ANY($1::text[])"
        " AND (comment LIKE '%AKIA%' OR comment LIKE '%S3cr3t%' OR comment LIKE '%ghp_%')",
        list(sample),
    )
    assert redacted >= 6 and leaked == 0


async def test_measurements_span_models_weeks_and_prices(
    owner: asyncpg.Connection, sample: tuple[str, ...]
) -> None:
    stats = await owner.fetchrow(
        "SELECT count(*) AS rows, count(DISTINCT model_name) AS models,"
        "       count(DISTINCT date_trunc('week', created_at)) AS weeks,"
        "       max(created_at) - min(created_at) AS span,"
        "       count(*) FILTER (WHERE estimated_cost_microcents IS NULL) AS uncosted,"
        "       count(*) FILTER (WHERE model_name = 'acme-internal-7b') AS unknown_model"
        "  FROM token_measurements WHERE tenant_id = ANY($1::text[])",
        list(sample),
    )
    assert stats is not None
    assert stats["rows"] >= 4000 and stats["models"] >= 5 and stats["weeks"] >= 6
    assert HISTORY * 0.9 < stats["span"] <= HISTORY
    # Only the model no table knows has no cost.
    assert stats["uncosted"] == stats["unknown_model"] > 0
    assert await owner.fetchval(
        "SELECT count(*) FROM model_prices WHERE tenant_id = ANY($1::text[])", list(sample)
    ) == 1


async def test_runs_show_their_picks_and_the_aggregates_are_exact(
    owner: asyncpg.Connection, sample: tuple[str, ...]
) -> None:
    runs = await owner.fetch(
        "SELECT status, best_model, cheapest_model,"
        " (SELECT count(*) FROM benchmark_results r WHERE r.benchmark_run_id = b.id) AS results"
        " FROM benchmark_runs b WHERE tenant_id = ANY($1::text[])",
        list(sample),
    )
    statuses = [run["status"] for run in runs]
    assert statuses.count(BenchmarkStatus.completed.value) == 4
    assert {BenchmarkStatus.failed.value, BenchmarkStatus.pending.value} <= set(statuses)
    for run in runs:
        if run["status"] == BenchmarkStatus.completed.value:
            assert run["best_model"] and run["cheapest_model"] and run["results"] == 18
    mismatched = await owner.fetchval(
        """
        SELECT count(*) FROM skills s
         WHERE s.tenant_id = ANY($1::text[])
           AND (s.total_feedback, s.avg_token_cost_microcents) IS DISTINCT FROM (
               (SELECT count(*) FROM skill_feedback f
                 WHERE f.skill_id = s.id AND f.status <> 'dismissed'),
               (SELECT round(avg(estimated_cost_microcents)) FROM token_measurements m
                 WHERE m.skill_id = s.id))
        """,
        list(sample),
    )
    assert mismatched == 0
