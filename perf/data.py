"""The benchmarks' data, built at scale by PostgreSQL itself.

Contract
--------
- Everything here runs as the owner and writes with ``INSERT ... SELECT``
  over ``generate_series``: a million rows take seconds, not the minutes a
  loop in Python would. The tables' triggers stay on (they are statement
  triggers: one aggregate update per statement), so the skills' aggregates
  are exact from the start, as if the rows had come through the API.
- :func:`make_catalogue` creates tenants, each with users and skills.
- :func:`add_feedback` adds feedback to one skill; :func:`add_measurements`
  spreads measurements over every skill, model and the last 90 days;
  :func:`add_running_run` creates a running benchmark run with its results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

#: The models the measurements and runs use, all priced by genai-prices.
MODELS = (
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "gpt-4o",
    "gpt-4o-mini",
    "gemini-2.5-pro",
)
#: Each model's provider.
PROVIDERS = {
    "claude-sonnet-4-5": "anthropic",
    "claude-haiku-4-5": "anthropic",
    "claude-opus-4-1": "anthropic",
    "gpt-4o": "openai",
    "gpt-4o-mini": "openai",
    "gemini-2.5-pro": "google",
}


@dataclass
class TenantData:
    tenant_id: str
    user_ids: list[str] = field(default_factory=list)
    skill_ids: list[str] = field(default_factory=list)


@dataclass
class Catalogue:
    tenants: list[TenantData]

    @property
    def skills(self) -> list[tuple[str, str]]:
        """(tenant id, skill id) of every skill."""
        return [(t.tenant_id, s) for t in self.tenants for s in t.skill_ids]


async def make_catalogue(
    owner: asyncpg.Connection, tenants: int = 4, skills_per_tenant: int = 25, users: int = 5
) -> Catalogue:
    """``tenants`` tenants, each with ``users`` users and ``skills_per_tenant`` skills."""
    made = []
    async with owner.transaction():
        for number in range(tenants):
            tenant_id = await owner.fetchval(
                "INSERT INTO tenants (name, slug) VALUES ($1, $2) RETURNING id",
                f"Benchmark tenant {number}",
                f"bench-{number}",
            )
            data = TenantData(tenant_id)
            data.user_ids = [
                row["id"]
                for row in await owner.fetch(
                    """
                    INSERT INTO users (tenant_id, email, name)
                    SELECT $1, 'user' || g || '@bench' || $2::int || '.example', 'User ' || g
                      FROM generate_series(1, $3) AS g
                    RETURNING id
                    """,
                    tenant_id,
                    number,
                    users,
                )
            ]
            data.skill_ids = [
                row["id"]
                for row in await owner.fetch(
                    """
                    INSERT INTO skills (tenant_id, slug, name, author_id)
                    SELECT $1, 'skill-' || g, 'Skill ' || g, $2
                      FROM generate_series(1, $3) AS g
                    RETURNING id
                    """,
                    tenant_id,
                    data.user_ids[0],
                    skills_per_tenant,
                )
            ]
            made.append(data)
    return Catalogue(made)


async def add_feedback(owner: asyncpg.Connection, tenant_id: str, skill_id: str, count: int) -> None:
    """``count`` feedback items on one skill: thumbs up and down, suggestions,
    some dismissed, one a second apart going back from now."""
    await owner.execute(
        """
        INSERT INTO skill_feedback (tenant_id, skill_id, feedback_type, sentiment,
                                    comment, suggested_content, status, reviewed_at,
                                    created_at)
        SELECT $1, $2, kind, CASE kind WHEN 'thumbs_up' THEN 1
                                       WHEN 'thumbs_down' THEN -1 END,
               'Feedback number ' || g,
               CASE WHEN kind = 'suggestion' THEN 'Say what the output looks like.' END,
               CASE WHEN g % 17 = 0 THEN 'dismissed' ELSE 'pending' END,
               CASE WHEN g % 17 = 0 THEN now() END,
               now() - g * interval '1 second'
          FROM generate_series(1, $3) AS g,
               LATERAL (SELECT (ARRAY['thumbs_up', 'thumbs_up', 'thumbs_down',
                                      'suggestion'])[1 + g % 4] AS kind) AS k
        """,
        tenant_id,
        skill_id,
        count,
    )


#: The span the measurements cover, in seconds: 90 days.
SPAN_SECONDS = 90 * 24 * 3600


async def add_measurements(
    owner: asyncpg.Connection,
    catalogue: Catalogue,
    count: int,
    *,
    offset: int = 0,
    step: float = 1.0,
) -> None:
    """``count`` measurements over every skill and model, in the last 90 days.

    The rows are numbers ``offset + 1`` to ``offset + count`` of one series
    (row ``g`` is ``g * step`` seconds old, modulo 90 days): calls with the
    offsets 0, n, 2n, ... write what one call of all the rows would. With
    the default step (a second) a thousand rows fall in the last 17 minutes;
    ``step = SPAN_SECONDS / count`` spreads ``count`` rows over the 90 days.
    """
    skills = catalogue.skills
    await owner.execute(
        """
        INSERT INTO token_measurements (
            tenant_id, skill_id, user_id, model_name, model_provider,
            input_tokens, output_tokens, total_tokens, estimated_cost_microcents,
            latency_ms, source, created_at)
        SELECT tenants[s], skills[s], NULL, models[1 + g % cardinality(models)],
               'anthropic', 1000 + g % 5000, 200 + g % 800,
               1200 + g % 5000 + g % 800, (1000 + g % 5000) * 3 + (200 + g % 800) * 15,
               300 + g % 4000, 'hook',
               now() - mod((g * $6::float8)::numeric, 7776000)::float8 * interval '1 second'
          FROM generate_series($5::int + 1, $5::int + $4) AS g,
               LATERAL (SELECT (1 + (g::bigint * 7919) % cardinality($2::text[]))::int AS s) AS pick,
               LATERAL (SELECT $1::text[] AS tenants, $2::text[] AS skills,
                               $3::text[] AS models) AS given
        """,
        [tenant for tenant, _skill in skills],
        [skill for _tenant, skill in skills],
        list(MODELS),
        count,
        offset,
        step,
    )


async def add_running_run(
    owner: asyncpg.Connection, tenant: TenantData, models: int, cases: int
) -> str:
    """A running benchmark run of ``models`` models with ``cases`` results each."""
    names = list(MODELS[:models])
    async with owner.transaction():
        run_id = await owner.fetchval(
            "INSERT INTO benchmark_runs (tenant_id, skill_id, triggered_by, models)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            tenant.tenant_id,
            tenant.skill_ids[0],
            tenant.user_ids[0],
            names,
        )
        await owner.execute("UPDATE benchmark_runs SET status = 'running' WHERE id = $1", run_id)
        await owner.execute(
            """
            INSERT INTO benchmark_results (
                tenant_id, benchmark_run_id, model_name, model_provider, test_case_index,
                input_tokens, output_tokens, total_tokens, estimated_cost_microcents,
                latency_ms, quality_score, output_produced)
            SELECT $1, $2, m.name, 'anthropic', c, 500 + c % 300, 100 + c % 200,
                   600 + c % 300 + c % 200, (500 + c % 300) * (3 + m.n) + 7 * m.n,
                   200 + c % 900, (c * 31 + m.n * 17) % 101, 'output ' || c
              FROM unnest($3::text[]) WITH ORDINALITY AS m(name, n),
                   generate_series(0, $4 - 1) AS c
            """,
            tenant.tenant_id,
            run_id,
            names,
            cases,
        )
    return str(run_id)
