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

The names below are imported on first use (PEP 562), not with the
package: a short-lived client of the HTTP API (``everyskill.hook``) imports
no database layer (``python -m perf.hook`` measures its start against an
import of the database layer too).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_ERRORS = (
    "AlreadyReviewedError",
    "ConflictError",
    "DatabaseUnavailableError",
    "EverySkillError",
    "InvalidTransitionError",
    "NotFoundError",
    "RunNotRunningError",
    "TenantScopeError",
    "ValidationError",
)


def __getattr__(name: str) -> Any:
    """The package's names, imported when first used."""
    if name == "tenant_scope":
        return importlib.import_module("everyskill.tenancy").tenant_scope
    if name in _ERRORS:
        return getattr(importlib.import_module("everyskill.errors"), name)
    if not name.startswith("_") and importlib.util.find_spec(f"everyskill.{name}") is not None:
        # A submodule not imported yet (``everyskill.tenancy``, or ``from
        # everyskill import hook``): that module alone.
        return importlib.import_module(f"everyskill.{name}")
    row_types = importlib.import_module("everyskill.rows")
    if name == "__all__":
        return [*row_types.__all__, *_ERRORS, "tenant_scope"]
    if name in row_types.__all__:
        return getattr(row_types, name)
    raise AttributeError(f"module 'everyskill' has no attribute {name!r}")
