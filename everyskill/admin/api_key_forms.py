"""Creating and revoking the HTTP API's keys in the admin.

Two Piccolo Admin custom forms (:class:`piccolo_admin.endpoints.FormConfig`)
in the menu group "API access", beside the read-only list of keys
(:mod:`everyskill.admin.table_configs`). They call
:func:`everyskill.api_keys.create_api_key` and
:func:`everyskill.api_keys.revoke_api_key`, which run as the owner, each one
statement.

Contract
--------
- **Create API key** (:data:`CREATE_FORM`, posted to
  ``/api/forms/create-api-key/``): a tenant (its slug or id), a name, scopes
  (comma-separated, among :data:`everyskill.api_keys.SCOPES`), an optional
  expiry in days and an optional rate limit per minute. On success the form's
  message is the new key, with its tenant, scopes, expiry, rate limit and
  display prefix: that response is the only place the key ever appears. It
  is not logged, not stored (only its SHA-256 is, by
  :func:`~everyskill.api_keys.create_api_key`), and the response carries
  ``Cache-Control: no-store`` (:mod:`everyskill.admin.app`). Submitting
  again creates another key.
- **Revoke API key** (:data:`REVOKE_FORM`, ``/api/forms/revoke-api-key/``):
  a key's display prefix (``esk_XXXXXXXX`` as listed, with or without
  ``esk_``). The key stops working at once; revoking a revoked key keeps its
  first revocation time.
- Bad input writes nothing and answers HTTP 422 with a message the form
  shows, naming the field: a value of the wrong type (``expires_in_days
  field - Input should be a valid integer``), or what the key's rules refuse
  (``invalid input: scopes: 'write' is not a scope: use ...``; a tenant or a
  prefix that names nothing is refused on ``tenant`` and ``prefix``).
- The forms are behind the admin's login and its CSRF check, like every
  write in the admin; any member of staff who can log in may use them.
"""

from __future__ import annotations

import datetime
from piccolo_admin.endpoints import FormConfig
from pydantic import BaseModel, Field
from starlette.requests import Request

from everyskill.api_keys import SCOPES, ApiKeyInfo, create_api_key, revoke_api_key
from everyskill.admin.table_configs import ACCESS
from everyskill.rate_limits import DEFAULT_KEY_LIMIT_PER_MINUTE
from everyskill.errors import check_id
from tables import Tenant

__all__ = [
    "API_KEY_FORMS",
    "CREATE_FORM",
    "REVOKE_FORM",
    "CreateApiKey",
    "RevokeApiKey",
    "create_key",
    "revoke_key",
]


class CreateApiKey(BaseModel):
    """The fields of the Create API key form."""

    tenant: str = Field(description="The tenant's slug (or id).")
    name: str = Field(description="What the key is for, e.g. 'CI benchmarks'.")
    scopes: str = Field(
        default="feedback:write",
        description=f"Comma-separated, among: {', '.join(SCOPES)}.",
    )
    expires_in_days: int | None = Field(
        default=None, description="Days until the key stops working; empty: never."
    )
    rate_limit_per_minute: int | None = Field(
        default=None, description=(
            "Requests per minute for this key; empty: the default"
            f" ({DEFAULT_KEY_LIMIT_PER_MINUTE})."
        ),
    )


class RevokeApiKey(BaseModel):
    """The field of the Revoke API key form."""

    prefix: str = Field(description="The key's prefix as listed: esk_ and 8 letters or digits.")


async def _tenant_label(tenant: str) -> str:
    """The tenant named by slug or id, as staff read it (the input as it is
    when no tenant has it: the call that follows refuses it)."""
    row = (
        await Tenant.select(Tenant.name, Tenant.slug)
        .where((Tenant.id == tenant) | (Tenant.slug == tenant))
        .first()
        .run()
    )
    return f"{row['name']} ({row['slug']})" if row else tenant


def _when(moment: datetime.datetime | None, otherwise: str) -> str:
    if moment is None:
        return otherwise
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _summary(info: ApiKeyInfo, tenant: str) -> str:
    limit = (
        f"{info.rate_limit_per_minute} requests per minute"
        if info.rate_limit_per_minute is not None
        else f"the default, {DEFAULT_KEY_LIMIT_PER_MINUTE} requests per minute"
    )
    return (
        f"Tenant: {tenant}. Name: {info.name}. Scopes: {', '.join(info.scopes)}."
        f" Expires: {_when(info.expires_at, 'never')}. Rate limit: {limit}."
    )


async def create_key(request: Request, data: CreateApiKey) -> str:
    """Create the key; the form's message shows it, once. Whatever the
    message needs is read before the key is made: once it exists, nothing
    may stop it from being shown."""
    check_id("tenant", data.tenant)  # before the query below uses it
    label = await _tenant_label(data.tenant)
    created = await create_api_key(
        data.tenant,
        data.name,
        data.scopes,
        expires_in_days=data.expires_in_days,
        rate_limit_per_minute=data.rate_limit_per_minute,
    )
    info = created.info
    return (
        f"New API key: {created.key} — copy it now: it is shown only this once and"
        " cannot be read back (only its hash is stored). "
        + _summary(info, label)
        + f" Listed and revoked as {info.display}."
    )


async def revoke_key(request: Request, data: RevokeApiKey) -> str:
    """Revoke the key named by its display prefix."""
    info = await revoke_api_key(data.prefix)
    return (
        f"API key {info.display} is revoked since {_when(info.revoked_at, '')}:"
        " requests with it are refused. "
        + _summary(info, await _tenant_label(info.tenant_id))
    )


CREATE_FORM = FormConfig(
    name="Create API key",
    pydantic_model=CreateApiKey,
    endpoint=create_key,
    description=(
        "A key for a tenant's programs to call the HTTP API (Authorization: Bearer"
        f" esk_...). Scopes, comma-separated: {', '.join(SCOPES)}. Expiry in days and"
        " rate limit per minute are optional. The key is shown once, on the next page:"
        " copy it then."
    ),
    form_group=ACCESS,
)
REVOKE_FORM = FormConfig(
    name="Revoke API key",
    pydantic_model=RevokeApiKey,
    endpoint=revoke_key,
    description=(
        "Revoke a key by its prefix (esk_ and 8 letters or digits, as listed under"
        " api keys). It stops working at once; this cannot be undone."
    ),
    form_group=ACCESS,
)

#: The forms of the API access group, as the admin registers them.
API_KEY_FORMS = [CREATE_FORM, REVOKE_FORM]
