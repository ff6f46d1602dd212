"""
EverySkill data layer: a multi-tenant catalogue of AI skills, with feedback,
token and cost measurements and model benchmarks, on PostgreSQL.

Modules, one per capability:

- ``everyskill.rows``: row types (the Piccolo tables) and validated new-row
  models, re-exported here;
- ``everyskill.tenancy``: acting for one tenant under row-level security;
- ``everyskill.database``: which server to use (``DATABASE_URL`` or embedded);
- ``everyskill.embedded_db``: the embedded PostgreSQL's life cycle;
- ``everyskill.migration_sql``: raw SQL steps of the migrations.
"""

from everyskill import rows
from everyskill.rows import *  # noqa: F403  (the row types and New* models)

__all__ = rows.__all__
