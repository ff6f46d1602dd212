"""
Helpers the tests share: scratch databases, the piccolo command line, a
catalogue snapshot, and sample rows for two tenants.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

# Scratch databases, re-exported for the tests.
from everyskill.database import environment_for
from everyskill.database import create_database as create_database
from everyskill.database import drop_database as drop_database
from everyskill.database import with_database as with_database

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE_PREFIX = "everyskill_test_"


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to ``url``, closed when the block ends."""
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


def run_piccolo(url: str, *args: str) -> str:
    """Run the ``piccolo`` command line against ``url``; return its output.

    Fails the test with the output when the command fails.
    """
    piccolo = Path(sys.executable).parent / "piccolo"
    env = {**os.environ, **environment_for(url), "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run(
        [str(piccolo), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise AssertionError(f"piccolo {' '.join(args)} failed:\n{output}")
    return output


@dataclass
class TenantRows:
    """One tenant's sample rows: a row of every table, ids by name."""

    tenant_id: str
    user_id: str
    skill_id: str
    version_id: str
    feedback_id: str
    model_price_id: str | None
    measurement_id: str
    run_id: str
    result_id: str


async def make_tenant(
    owner: asyncpg.Connection, label: str = "t", *, model_price: bool = True
) -> TenantRows:
    """Insert, as the owner, a tenant with one row in every table.

    ``model_price=False`` leaves out the tenant's model price, for a database
    migrated only as far as the tables the plan names.
    """
    tag = uuid.uuid4().hex[:10]
    async with owner.transaction():
        tenant_id = await owner.fetchval(
            "INSERT INTO tenants (name, slug) VALUES ($1, $2) RETURNING id",
            f"{label} {tag}",
            f"{label}-{tag}",
        )
        user_id = await owner.fetchval(
            "INSERT INTO users (tenant_id, email, name) VALUES ($1, $2, 'Ada')"
            " RETURNING id",
            tenant_id,
            f"ada-{tag}@example.com",
        )
        skill_id = await owner.fetchval(
            "INSERT INTO skills (tenant_id, slug, name, author_id)"
            " VALUES ($1, 'review-code', 'Review code', $2) RETURNING id",
            tenant_id,
            user_id,
        )
        version_id = await owner.fetchval(
            "INSERT INTO skill_versions (tenant_id, skill_id, version, content)"
            " VALUES ($1, $2, 1, 'Review the diff.') RETURNING id",
            tenant_id,
            skill_id,
        )
        feedback_id = await owner.fetchval(
            "INSERT INTO skill_feedback"
            " (tenant_id, skill_id, skill_version_id, user_id, feedback_type, sentiment)"
            " VALUES ($1, $2, $3, $4, 'thumbs_up', 1) RETURNING id",
            tenant_id,
            skill_id,
            version_id,
            user_id,
        )
        model_price_id = None
        if model_price:
            model_price_id = await owner.fetchval(
                "INSERT INTO model_prices (tenant_id, model_provider, model_name,"
                "  input_microcents_per_token, output_microcents_per_token)"
                " VALUES ($1, 'anthropic', 'claude-sonnet-4-5', 250, 1250) RETURNING id",
                tenant_id,
            )
        measurement_id = await owner.fetchval(
            "INSERT INTO token_measurements"
            " (tenant_id, skill_id, user_id, input_tokens, output_tokens,"
            "  total_tokens, model_name, estimated_cost_microcents, latency_ms)"
            " VALUES ($1, $2, $3, 1000, 200, 1200, 'claude-sonnet-4-5', 600000, 850)"
            " RETURNING id",
            tenant_id,
            skill_id,
            user_id,
        )
        run_id = await owner.fetchval(
            "INSERT INTO benchmark_runs (tenant_id, skill_id, triggered_by, models)"
            " VALUES ($1, $2, $3, ARRAY['claude-sonnet-4-5', 'gpt-4o']) RETURNING id",
            tenant_id,
            skill_id,
            user_id,
        )
        # Results are recorded while a run is running.
        await owner.execute(
            "UPDATE benchmark_runs SET status = 'running' WHERE id = $1", run_id
        )
        result_id = await owner.fetchval(
            "INSERT INTO benchmark_results"
            " (tenant_id, benchmark_run_id, model_name, model_provider,"
            "  test_case_index, quality_score)"
            " VALUES ($1, $2, 'gpt-4o', 'openai', 0, 80) RETURNING id",
            tenant_id,
            run_id,
        )
    return TenantRows(
        tenant_id,
        user_id,
        skill_id,
        version_id,
        feedback_id,
        model_price_id,
        measurement_id,
        run_id,
        result_id,
    )


# Objects of a database's public schema, read from pg_catalog, so that two
# states of a database can be compared.
SNAPSHOT_QUERIES = {
    "tables": """
        SELECT c.relname, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i')
         ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = 'public' AND c.relkind = 'r'
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY 1, 2""",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
          FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
         ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' ORDER BY 1, 2""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
          FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid)
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "triggers": """
        SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE NOT t.tgisinternal ORDER BY 1, 2""",
    "grants": """
        SELECT table_name, grantee, privilege_type
          FROM information_schema.role_table_grants
         WHERE table_schema = 'public' AND grantee = 'everyskill_app'
        UNION ALL
        SELECT table_name || '.' || column_name, grantee, privilege_type
          FROM information_schema.column_privileges
         WHERE table_schema = 'public' AND grantee = 'everyskill_app'
         ORDER BY 1, 2, 3""",
    "schema_privileges": """
        SELECT nspname, array_to_string(nspacl, ',') FROM pg_namespace
         WHERE nspname = 'public'""",
}


async def snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    """The database's schema objects, query by query, as sorted tuples."""
    async with connected(url) as connection:
        return {
            name: [tuple(row) for row in await connection.fetch(query)]
            for name, query in SNAPSHOT_QUERIES.items()
        }


async def wait_until_blocked(owner: asyncpg.Connection, timeout: float = 10.0) -> None:
    """Until some backend of the test database waits for a lock: how a test
    knows a concurrent writer has reached the point where it queues."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        waiting = await owner.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no backend blocked on a lock")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_served(url: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"main.py exited early:\n{process.communicate()[0]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"main.py did not serve {url} within {timeout} s")
