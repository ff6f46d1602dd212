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
- :data:`SERVER_SETTINGS` are the settings of every connection Piccolo's
  engine makes (``piccolo_conf``): the application's, the admin's, the
  migrations'.
- :func:`with_database`, :func:`create_database` and :func:`drop_database`
  manage scratch databases on the same server (the test suite's and the
  performance benchmarks'). The role in the URL needs CREATEDB.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from everyskill import embedded_db


#: Sent when a connection starts (asyncpg's ``server_settings``).
#:
#: ``random_page_cost`` 1.1 instead of PostgreSQL's default 4, as usually
#: advised for SSDs and for data that fits in memory. With 4, the planner
#: prices reading a tenant's rows newest first through the ``(tenant_id,
#: created_at DESC, id DESC)`` index (rows spread over the table) so high
#: that it scans every tenant's newest rows through ``created_at`` instead,
#: hoping to meet the tenant's soon: when another tenant wrote the newest
#: hundred thousand rows, the admin's first page of one tenant's token
#: measurements took 80 ms instead of 0.6 ms.
SERVER_SETTINGS = {"random_page_cost": "1.1"}


def database_url() -> str:
    """The owner's connection URL: ``DATABASE_URL``, or the embedded server's."""
    configured = os.environ.get("DATABASE_URL", "").strip()
    if configured:
        return configured
    return embedded_db.start()


def with_database(url: str, database: str) -> str:
    """``url`` with its database replaced by ``database``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def create_database(server_url: str, name: str) -> None:
    """Create the empty database ``name`` on the server of ``server_url``."""
    connection = await asyncpg.connect(server_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def drop_database(server_url: str, name: str) -> None:
    """Drop the database ``name``, whoever is still connected to it.

    FORCE cannot end a background worker of the server (autovacuum, after a
    large write) for a role that is not a superuser: that worker ends on its
    own within seconds, so the drop is tried again meanwhile.
    """
    connection = await asyncpg.connect(server_url)
    try:
        for _attempt in range(60):
            try:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                await asyncio.sleep(0.5)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
