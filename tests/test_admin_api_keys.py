"""
Creating and revoking API keys in the admin
(``everyskill.admin.api_key_forms``), through the admin's HTTP endpoints as
a logged-in member of staff, on the scratch database:

- the Create API key form answers with a key, shown in that answer only: it
  resolves (as the application's login) to the tenant and scopes asked
  for, with the expiry and rate limit asked for; the database holds its hash
  and display prefix, never the key; no log line and no later page of the
  admin carries it; the answer is ``Cache-Control: no-store``;
- bad input is a 422 whose message names the field, and writes nothing;
- the Revoke API key form revokes by display prefix: the key stops
  resolving at once; a revoked key keeps its first revocation time; a prefix
  that names nothing, or is not a prefix, is a 422 naming ``prefix``;
- the forms stay behind the admin's login and CSRF check;
- the forms are listed in the menu group "API access", and the key table
  itself stays read-only;
- in Chromium (Playwright, as ``tests/test_browser.py``), against
  ``main.py`` served on a fresh database: staff fill the form, see a
  mistake named, see the key once, the key works for the application's
  login, the list shows its prefix only, revoking it stops it, and
  ``main.py``'s output (its access log among it) never held it. Screenshots go to ``artifacts/browser-api-keys/``.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, expect

from everyskill.api_keys import resolve
from everyskill.rate_limits import DEFAULT_KEY_LIMIT_PER_MINUTE
from everyskill.database import APP_URL_VARIABLE, environment_for
from everyskill.errors import AuthenticationError
from tests.admin_client import Staff, admin_client, save
from tests.browser import ARTIFACTS, VIEWPORT, Checks, Screenshots, launched_chromium, served_admin
from tests.support import TenantRows, connected

KEY = re.compile(r"esk_[0-9A-Za-z]{38}")
CREATE = "/api/forms/create-api-key/"
REVOKE = "/api/forms/revoke-api-key/"


async def slug_of(owner: asyncpg.Connection, tenant: TenantRows) -> str:
    slug = await owner.fetchval("SELECT slug FROM tenants WHERE id = $1", tenant.tenant_id)
    assert isinstance(slug, str)
    return slug


async def key_count(owner: asyncpg.Connection) -> int:
    count = await owner.fetchval("SELECT count(*) FROM api_keys")
    assert isinstance(count, int)
    return count


def shown_key(response: httpx.Response) -> str:
    """The one key in a successful Create API key answer."""
    assert response.status_code == 200, response.text
    message = response.json()["custom_form_success"]
    keys = KEY.findall(message)
    assert len(keys) == 1, message
    return keys[0]


async def create(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    return await client.post(CREATE, json=fields)


async def test_a_created_key_is_shown_once_and_resolves_to_its_tenant_and_scopes(
    staff: Staff,
    owner: asyncpg.Connection,
    tenant: TenantRows,
    other_tenant: TenantRows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slug = await slug_of(owner, tenant)
    with caplog.at_level(logging.DEBUG):
        response = await create(
            staff.client,
            tenant=slug,
            name="CI benchmarks",
            scopes="read, benchmarks:write",
            expires_in_days=30,
            rate_limit_per_minute=120,
        )
        key = shown_key(response)
        resolved = await resolve(key)
    assert response.headers["cache-control"] == "no-store"
    message = response.json()["custom_form_success"]
    assert "shown only this once" in message
    assert "benchmarks:write, read" in message and slug in message

    assert resolved.tenant_id == tenant.tenant_id
    assert resolved.scopes == {"read", "benchmarks:write"}
    assert resolved.rate_limit_per_minute == 120

    stored = await owner.fetchrow(
        "SELECT id, name, key_prefix, key_hash, scopes, expires_at,"
        " expires_at - created_at AS lifetime FROM api_keys WHERE id = $1",
        resolved.key_id,
    )
    assert stored["name"] == "CI benchmarks"
    assert stored["key_hash"] == hashlib.sha256(key.encode()).digest()
    assert stored["key_prefix"] == key[4:12]
    assert f"esk_{stored['key_prefix']}" in message
    assert stored["lifetime"] == datetime.timedelta(days=30)
    # The key is nowhere in the database: no column of any row holds it.
    assert not await owner.fetchval(
        "SELECT count(*) FROM api_keys k WHERE k::text LIKE '%' || $1 || '%'", key[4:]
    )
    # Nor in any log line of the request, at any level.
    assert caplog.records and key not in caplog.text and key[12:] not in caplog.text

    # The admin's pages after it do not show it again.
    for path in (
        "/api/tables/api_keys/?__readable=true",
        f"/api/tables/api_keys/{stored['id']}/",
        CREATE,
        "/api/forms/",
    ):
        page = await staff.client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert key[12:] not in page.text, path

    # A tenant's id works as well as its slug; a key of one scope is all it says.
    by_id = shown_key(
        await create(staff.client, tenant=other_tenant.tenant_id, name="hook", scopes="feedback:write")
    )
    other = await resolve(by_id)
    assert other.tenant_id == other_tenant.tenant_id
    assert other.scopes == {"feedback:write"} and other.rate_limit_per_minute == DEFAULT_KEY_LIMIT_PER_MINUTE
    assert await owner.fetchval(
        "SELECT expires_at FROM api_keys WHERE id = $1", other.key_id
    ) is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"scopes": "write"}, "scopes"),
        ({"scopes": "read, admin"}, "scopes"),
        ({"scopes": " , "}, "scopes"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"tenant": "no-such-tenant"}, "tenant"),
        ({"tenant": ""}, "tenant"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": 3651}, "expires_in_days"),
        ({"expires_in_days": "soon"}, "expires_in_days"),
        ({"rate_limit_per_minute": -5}, "rate_limit_per_minute"),
        ({"rate_limit_per_minute": 2**31}, "rate_limit_per_minute"),
        ({"rate_limit_per_minute": "lots"}, "rate_limit_per_minute"),
        ({"tenant": None}, "tenant"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    staff: Staff,
    owner: asyncpg.Connection,
    tenant: TenantRows,
    fields: dict[str, Any],
    named: str,
) -> None:
    form = {"tenant": await slug_of(owner, tenant), "name": "ok", "scopes": "read", **fields}
    if form["tenant"] is None:
        del form["tenant"]
    before = await key_count(owner)
    response = await create(staff.client, **form)
    assert response.status_code == 422, response.text
    body = response.json()
    if "custom_form_error" in body:
        # What the key's rules refuse: the form shows the message as it is.
        assert f"{named}: " in body["custom_form_error"], body
    else:
        # A value of the wrong type: the form shows "<field> field - <reason>".
        assert [error["loc"][-1] for error in body["detail"]] == [named], body
    assert not KEY.search(response.text)
    assert await key_count(owner) == before


async def test_revoking_by_prefix_makes_the_key_stop_resolving(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    key = shown_key(
        await create(staff.client, tenant=tenant.tenant_id, name="laptop hook", scopes="feedback:write")
    )
    kept = shown_key(
        await create(staff.client, tenant=tenant.tenant_id, name="rotated in", scopes="feedback:write")
    )
    assert (await resolve(key)).tenant_id == tenant.tenant_id
    display = key[:12]

    revoked = await staff.client.post(REVOKE, json={"prefix": display})
    assert revoked.status_code == 200, revoked.text
    assert revoked.headers["cache-control"] == "no-store"
    message = revoked.json()["custom_form_success"]
    assert display in message and "revoked" in message and "laptop hook" in message
    with pytest.raises(AuthenticationError) as refused:
        await resolve(key)
    assert refused.value.reason == "invalid"
    # The tenant's other key still works: rotation without downtime.
    assert (await resolve(kept)).tenant_id == tenant.tenant_id

    first = await owner.fetchval("SELECT revoked_at FROM api_keys WHERE key_prefix = $1", key[4:12])
    assert first is not None
    # Again, without esk_: still revoked, at the first time.
    again = await staff.client.post(REVOKE, json={"prefix": key[4:12]})
    assert again.status_code == 200, again.text
    assert await owner.fetchval(
        "SELECT revoked_at FROM api_keys WHERE key_prefix = $1", key[4:12]
    ) == first


@pytest.mark.parametrize("prefix", ["esk_", "esk_abc", "not a prefix", "esk_zzzzzzzz"])
async def test_a_prefix_that_names_no_key_is_refused_on_prefix(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows, prefix: str
) -> None:
    before = await owner.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL")
    response = await staff.client.post(REVOKE, json={"prefix": prefix})
    assert response.status_code == 422, response.text
    assert "prefix: " in response.json()["custom_form_error"]
    assert await owner.fetchval(
        "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL"
    ) == before


async def test_the_forms_need_a_login_and_the_csrf_token(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    form = {"tenant": tenant.tenant_id, "name": "forged", "scopes": "read"}
    before = await key_count(owner)
    async with admin_client() as anonymous:
        assert (await anonymous.post(CREATE, json=form)).status_code == 401
    token = staff.client.headers.pop("X-CSRFToken")
    try:
        refused = await staff.client.post(CREATE, json=form)
        assert refused.status_code == 403, refused.text
        assert not KEY.search(refused.text)
    finally:
        staff.client.headers["X-CSRFToken"] = token
    assert await key_count(owner) == before

    key = shown_key(await create(staff.client, **form))
    async with admin_client() as anonymous:
        assert (await anonymous.post(REVOKE, json={"prefix": key[:12]})).status_code == 401
    assert (await resolve(key)).tenant_id == tenant.tenant_id


async def test_the_forms_are_in_the_api_access_group_and_the_table_stays_read_only(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    grouped = (await staff.client.get("/api/forms/grouped/")).json()
    assert [form["name"] for form in grouped["grouped"]["API access"]] == [
        "Create API key",
        "Revoke API key",
    ]
    key = shown_key(await create(staff.client, tenant=tenant.tenant_id, name="ci", scopes="read"))
    key_id = (await resolve(key)).key_id
    edited = await save(staff.client, "api_keys", key_id, name="renamed", revoked_at=None)
    assert edited.status_code == 405
    assert "Revoke API key" in edited.json()["detail"]
    assert await owner.fetchval("SELECT name FROM api_keys WHERE id = $1", key_id) == "ci"


# -- in a real browser ----------------------------------------------------------------

BROWSER_USERNAME = "keys-staff"
BROWSER_PASSWORD = "a long browser test password for the key forms"
#: Where this flow's screenshots go (apart from the review flow's folder).
KEY_SHOTS = ARTIFACTS.parent / "browser-api-keys"
LOOKUP = "SELECT tenant_id, scopes, key_limit FROM api_key_resolve($1::bytea)"


async def test_staff_create_a_key_see_it_once_and_revoke_it_in_the_browser(
    fresh_database: str, tmp_path: Path
) -> None:
    """Staff log in, open Create API key under API access, make a mistake
    (the form names the field), fill the form right and see the key once; the
    key works for the application's login; the key's list shows its prefix,
    never the key; Revoke API key stops it."""
    shots = Screenshots(KEY_SHOTS)
    checks = Checks()
    key = ""
    with served_admin(
        fresh_database, tmp_path, username=BROWSER_USERNAME, password=BROWSER_PASSWORD
    ) as base:
        app_url = environment_for(fresh_database)[APP_URL_VARIABLE]
        async with connected(fresh_database) as owner, connected(app_url) as app, launched_chromium() as browser:
            tenant = await owner.fetchrow("SELECT id, slug FROM tenants ORDER BY slug LIMIT 1")
            assert tenant is not None, "the sample data has no tenant"
            context = await browser.new_context(viewport=VIEWPORT, base_url=base)
            context.set_default_timeout(15_000)
            page = await context.new_page()
            try:
                await browser_log_in(page, shots)
                key = await create_in_the_form(page, shots, checks, tenant["slug"])
                works = await app.fetchrow(LOOKUP, hashlib.sha256(key.encode()).digest())
                checks.that(works is not None, "the key shown resolves for the application's login")
                if works is not None:
                    checks.equal(works["tenant_id"], tenant["id"], "the key's tenant")
                    checks.equal(set(works["scopes"]), {"feedback:write", "read"}, "the key's scopes")
                    checks.equal(works["key_limit"], 90, "the key's rate limit")
                await see_it_listed_without_the_key(page, shots, checks, key)
                await revoke_in_the_form(page, shots, checks, key)
                checks.that(
                    await app.fetchrow(LOOKUP, hashlib.sha256(key.encode()).digest()) is None,
                    "the revoked key no longer resolves",
                )
            except BaseException:
                await shots.failure(page)
                raise
            finally:
                await context.close()
    # main.py's whole output (its log, uvicorn's access log) never had the key.
    output = (tmp_path / "main.log").read_text()
    checks.that("POST /api/forms/create-api-key/" in output, "main.py logged the form's requests")
    checks.that(key[12:] not in output, "main.py's output does not hold the key")
    checks.verify()


async def browser_log_in(page: Page, shots: Screenshots) -> None:
    await page.goto("/")
    await page.locator('input[name="username"]').fill(BROWSER_USERNAME)
    await page.locator('input[name="password"]').fill(BROWSER_PASSWORD)
    await page.get_by_role("button", name="Login").click()
    # Staff land on the overview (everyskill.admin.overview_pages).
    await expect(page).to_have_url(re.compile(r"/overview/$"), timeout=15_000)
    await shots.step(page, "logged-in")


# A page of the admin with its sidebar (its home route goes to the overview).
ADMIN_PAGE = "/#/skills/"


async def open_form(page: Page, name: str) -> None:
    await page.goto(ADMIN_PAGE)
    await page.get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()


async def create_in_the_form(page: Page, shots: Screenshots, checks: Checks, slug: str) -> str:
    """Fill Create API key: first with a scope that does not exist (refused,
    naming scopes), then right; returns the key the page shows."""
    await open_form(page, "Create API key")
    await page.locator('input[name="tenant"]').fill(slug)
    await page.locator('input[name="name"]').fill("Support laptop hook")
    await page.locator('input[name="scopes"]').fill("feedback:write, write")
    await page.locator('input[name="expires_in_days"]').fill("30")
    await page.locator('input[name="rate_limit_per_minute"]').fill("90")
    await shots.step(page, "create-form")
    submit = page.locator('[data-uitest="submit_custom_form_button"]')
    await submit.click()
    await checks.expect(
        expect(page.locator(".errors")).to_contain_text("scopes: 'write' is not a scope"),
        "a scope that does not exist is refused, naming the field",
    )
    await shots.step(page, "create-refused")

    # The page's "The form has errors." notice goes after 3 s.
    await expect(page.locator("#message_popup")).to_be_hidden()
    await page.locator('input[name="scopes"]').fill("feedback:write, read")
    await submit.click()
    await expect(page.get_by_role("heading", name="Form submitted")).to_be_visible()
    shown = await page.locator("#success_message").text_content() or ""
    keys = KEY.findall(shown)
    assert len(keys) == 1, f"the page shows one key: {shown!r}"
    checks.that("shown only this once" in shown, f"the page says the key is shown once: {shown!r}")
    await shots.step(page, "key-shown")
    return keys[0]


async def see_it_listed_without_the_key(
    page: Page, shots: Screenshots, checks: Checks, key: str
) -> None:
    """Leaving the page, the key is gone: the key's row in the list shows its
    prefix only, and coming back to the form shows an empty form."""
    await page.goto(ADMIN_PAGE)
    await page.get_by_role("link", name="api keys", exact=True).click()
    await expect(page.get_by_role("heading", name="api keys", exact=True)).to_be_visible()
    await checks.expect(
        expect(page.locator(".table_wrapper tbody")).to_contain_text(key[4:12]),
        "the list shows the new key's prefix",
    )
    checks.that(key[12:] not in await page.content(), "the list does not show the key")
    await shots.step(page, "key-listed")
    await open_form(page, "Create API key")
    checks.that(key[12:] not in await page.content(), "the form, opened again, does not show the key")


async def revoke_in_the_form(page: Page, shots: Screenshots, checks: Checks, key: str) -> None:
    await open_form(page, "Revoke API key")
    await page.locator('input[name="prefix"]').fill(key[:12])
    await shots.step(page, "revoke-form")
    await page.locator('[data-uitest="submit_custom_form_button"]').click()
    await expect(page.get_by_role("heading", name="Form submitted")).to_be_visible()
    await checks.expect(
        expect(page.locator("#success_message")).to_contain_text(f"{key[:12]} is revoked"),
        "the page confirms the revocation by the key's prefix",
    )
    await shots.step(page, "key-revoked")
