"""
EverySkill data layer: a multi-tenant catalogue of AI skills, with feedback,
token and cost measurements and model benchmarks, on PostgreSQL.

The query API, one module per capability; every call runs inside
``async with tenant_scope(tenant_id):``

- ``everyskill.tenancy``: the tenant scope, acting for one tenant under
  row-level security;
- ``everyskill.catalogue``: skills (created, updated, archived, never
  deleted), their versions and the tenant's users; a skill's live aggregates;
- ``everyskill.feedback``: recording feedback, its review, listing, and the
  JSONL export of training examples;
- ``everyskill.usage``: token measurements, one or a batch, their costs,
  listing, and summaries by skill, model and day;
- ``everyskill.pricing``: what a model's tokens cost, from the tenant's own
  prices or the maintained genai-prices table;
- ``everyskill.benchmarks``: benchmark runs, their life cycle, results and
  per-model summaries; ``everyskill.benchmark_runner`` executes a run
  against a model client (a deterministic offline one included);
- ``everyskill.relations``: a skill's, run's, user's and tenant's rows, and
  forward relations loaded in batches;
- ``everyskill.pagination``: keyset pages, newest first;
- ``everyskill.client_ids``: client-supplied ids, which make a retried
  create safe (a replay returns the stored row);
- ``everyskill.redaction``: secrets replaced by markers before text is stored;
- ``everyskill.errors``: the typed errors the API raises;
- ``everyskill.rows``: row types (the Piccolo tables) and validated new-row
  models.

Running it: ``everyskill.database`` picks the server (``DATABASE_URL`` or the
embedded one, ``everyskill.embedded_db``); ``everyskill.migration_sql`` runs
the migrations' raw SQL; ``everyskill.sample_data`` loads the sample data;
``everyskill.admin`` is the admin (Piccolo Admin), its review workflow and
the staff overview (``everyskill.overview`` reads its rollups);
``everyskill.http_api`` is the HTTP API (FastAPI, under ``/v1``), whose keys
and rate limits are ``everyskill.api_keys`` and ``everyskill.rate_limits``;
``everyskill.server`` serves the admin and the API on one port.
"""

from everyskill import rows
from everyskill.errors import (
    AlreadyReviewedError,
    ConflictError,
    DatabaseUnavailableError,
    EverySkillError,
    InvalidTransitionError,
    NotFoundError,
    RunNotRunningError,
    TenantScopeError,
    ValidationError,
)
from everyskill.rows import *  # noqa: F403  (the row types and New* models)
from everyskill.tenancy import tenant_scope

__all__ = [
    *rows.__all__,
    "AlreadyReviewedError",
    "ConflictError",
    "DatabaseUnavailableError",
    "EverySkillError",
    "InvalidTransitionError",
    "NotFoundError",
    "RunNotRunningError",
    "TenantScopeError",
    "ValidationError",
    "tenant_scope",
]
