"""Where the database is: ``DATABASE_URL``, or else the embedded server.

Contract
--------
- :func:`database_url` returns ``DATABASE_URL`` when it is set (any
  ``postgresql://`` URL that asyncpg accepts). Otherwise it starts (or joins)
  the project's embedded PostgreSQL (:mod:`everyskill.embedded_db`) and returns
  its URL.
- The role in that URL owns the schema: it runs the migrations and serves the
  admin, and sees every tenant. The application's tenant operations switch, per
  transaction, to the application role (:mod:`everyskill.tenancy`), which row-level
  security confines to one tenant.
"""

from __future__ import annotations

import os

from everyskill import embedded_db


def database_url() -> str:
    """The owner's connection URL: ``DATABASE_URL``, or the embedded server's."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        return configured
    return embedded_db.start()
