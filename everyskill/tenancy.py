"""Tenant isolation: how the application acts for one tenant.

Contract
--------
- The application connects as the owner (the role in ``DATABASE_URL``, see
  :mod:`everyskill.database`). Each tenant operation is one transaction that
  first switches to :data:`APP_ROLE` and sets :data:`TENANT_SETTING` to the
  tenant's id, both with transaction scope (``SET LOCAL`` semantics). Nothing
  survives the transaction, so pooled connections and PgBouncer in
  transaction mode are safe.
- :data:`APP_ROLE` (created by the migrations) is not a superuser, cannot log
  in, has NOBYPASSRLS and owns nothing: PostgreSQL's row-level security confines
  it to the rows whose ``tenant_id`` equals the setting. With the setting unset
  or empty it reads and writes nothing.
- :func:`tenant_transaction` refuses an empty or non-string tenant id with
  :class:`TenantScopeError` before touching the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

#: The role row-level security applies to; created by the migrations.
APP_ROLE = "everyskill_app"
#: The setting the policies compare ``tenant_id`` with.
TENANT_SETTING = "app.current_tenant_id"


class TenantScopeError(ValueError):
    """A tenant operation was attempted without a valid tenant."""


@asynccontextmanager
async def tenant_transaction(
    connection: asyncpg.Connection, tenant_id: str
) -> AsyncIterator[asyncpg.Connection]:
    """Run the block in one transaction, as :data:`APP_ROLE`, for ``tenant_id``.

    Commits when the block ends normally and rolls back when it raises. The
    role and the tenant revert when the transaction ends.
    """
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise TenantScopeError(
            f"tenant_id must be a non-empty string, got {tenant_id!r}"
        )
    async with connection.transaction():
        # set_config(..., true) is SET LOCAL: it lasts until the transaction ends.
        await connection.execute(
            "SELECT set_config('role', $1, true), set_config($2, $3, true)",
            APP_ROLE,
            TENANT_SETTING,
            tenant_id,
        )
        yield connection
