"""
The admin's security settings (``everyskill.admin.app``), over real HTTP
requests to the app in process, on the scratch database:

- login is required for the API (reads and writes answer 401 and write
  nothing without a session), while the admin's page and its public meta
  are reachable;
- only active admin users have access, checked at login and again on every
  request: a non-admin or inactive user gets no session, and an admin
  deactivated or stripped of the admin flag loses access at once;
- every write needs the double-submit CSRF token (403 and nothing written
  without it or with a wrong one), and over HTTPS a Referer or Origin of an
  allowed host;
- login attempts are rate limited per client address (429, even with the
  right password, while other addresses can still log in), a block ends
  after its duration, and a block shorter than the window is refused;
- in production the session cookie is ``Secure`` and ``HttpOnly``, and
  production without allowed hosts is refused;
- logging out ends the session on the server, not only in the browser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import pytest
from piccolo.apps.user.tables import BaseUser
from piccolo.engine.postgres import PostgresEngine

from everyskill.admin.app import LOGIN_ATTEMPTS, create_app, login_limit
from tests.admin_client import PASSWORD, Staff, admin_client, log_in, make_staff, save
from tests.support import TenantRows

HTTPS_HOST = "admin.example"
HTTPS_BASE = f"https://{HTTPS_HOST}"
# A failed login refused before any password hashing (an over-long password),
# so that many attempts stay fast.
UNKNOWN = "nobody-here"
GUESS = "x" * 500


async def feedback_rows(owner: asyncpg.Connection, tenant: TenantRows) -> list[asyncpg.Record]:
    """Every feedback row of the tenant's skill, whole: what a write would change."""
    return await owner.fetch(
        "SELECT * FROM skill_feedback WHERE skill_id = $1 ORDER BY id", tenant.skill_id
    )


def new_feedback(tenant: TenantRows) -> dict[str, Any]:
    """A feedback row the add form would save."""
    return {
        "tenant_id": tenant.tenant_id,
        "skill_id": tenant.skill_id,
        "feedback_type": "bug_report",
        "comment": "Added by a forged request.",
        "source": "web",
    }


def writes(tenant: TenantRows) -> list[tuple[str, str, dict[str, Any]]]:
    """A POST, a PATCH and a DELETE of feedback, as (method, url, httpx kwargs)."""
    item = f"/api/tables/skill_feedback/{tenant.feedback_id}/"
    return [
        ("POST", "/api/tables/skill_feedback/", {"json": new_feedback(tenant)}),
        ("PATCH", item, {"json": {"status": "dismissed", "review_notes": "forged"}}),
        ("DELETE", item, {}),
    ]


async def without_csrf_header(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """A request of ``client`` (its cookies, the CSRF cookie among them) with
    the ``X-CSRFToken`` header taken out."""
    request = client.build_request(method, url, **kwargs)
    del request.headers["X-CSRFToken"]
    assert "csrftoken=" in request.headers["cookie"]
    return await client.send(request)


def session_cookie(response: httpx.Response) -> dict[str, str]:
    """The attributes of the session cookie (``id``) a response sets, lower
    case names; the cookie's value under ``"id"``."""
    (header,) = [
        value for value in response.headers.get_list("set-cookie") if value.startswith("id=")
    ]
    attributes: dict[str, str] = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


async def sessions_of(owner: asyncpg.Connection, username: str) -> list[str]:
    """The tokens of the user's sessions in the session table."""
    records = await owner.fetch(
        "SELECT s.token FROM sessions s JOIN piccolo_user u ON u.id = s.user_id"
        " WHERE u.username = $1",
        username,
    )
    return [record["token"] for record in records]


# -- Login required ----------------------------------------------------------


async def test_without_a_session_the_api_answers_401_and_writes_nothing(
    owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await feedback_rows(owner, tenant)
    async with admin_client() as client:
        assert "X-CSRFToken" in client.headers and "id" not in client.cookies
        for url in ("/api/tables/", "/api/tables/skill_feedback/", "/api/user/"):
            response = await client.get(url)
            assert response.status_code == 401, (url, response.text)
            assert response.json() == {"error": "Auth failed"}
        for method, url, kwargs in writes(tenant):
            # The CSRF token is right: it is the missing session that refuses.
            response = await client.request(method, url, **kwargs)
            assert response.status_code == 401, (method, response.text)
        # A made-up session token is no session either.
        response = await client.get("/api/tables/", headers={"Cookie": "id=made-up-token"})
        assert response.status_code == 401
    assert await feedback_rows(owner, tenant) == before


async def test_the_admin_page_and_its_public_meta_are_reachable_without_a_session(
    engine: PostgresEngine,
) -> None:
    async with admin_client() as client:
        page = await client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        meta = await client.get("/public/meta/")
        assert meta.status_code == 200
        assert meta.json()["site_name"] == "EverySkill admin"
        login_page = await client.get("/public/login/")
        assert login_page.status_code == 200


# -- Only active admin users -------------------------------------------------


async def test_a_non_admin_user_gets_no_access_to_the_api(
    engine: PostgresEngine, owner: asyncpg.Connection
) -> None:
    username = await make_staff(admin=False)
    async with admin_client() as client:
        response = await log_in(client, username)
        # The right password, but not an admin: no session at all, so that
        # none starts working if the user is made an admin later.
        assert response.status_code == 401, response.text
        assert "id" not in client.cookies
        for url in ("/api/tables/", "/api/tables/skill_feedback/", "/api/user/"):
            assert (await client.get(url)).status_code == 401, url
    assert await sessions_of(owner, username) == []
    await BaseUser.update({BaseUser.admin: True}).where(BaseUser.username == username)
    async with admin_client() as client:
        assert (await log_in(client, username)).status_code == 200


async def test_an_inactive_admin_gets_no_access_to_the_api(
    engine: PostgresEngine, owner: asyncpg.Connection
) -> None:
    username = await make_staff(active=False)
    last_login = await owner.fetchval("SELECT last_login FROM piccolo_user WHERE username = $1", username)
    async with admin_client() as client:
        response = await log_in(client, username)
        # As for a non-admin: refused at login, no session, no login recorded.
        assert response.status_code == 401, response.text
        assert "id" not in client.cookies
        for url in ("/api/tables/", "/api/tables/skill_feedback/", "/api/user/"):
            assert (await client.get(url)).status_code == 401, url
    assert await sessions_of(owner, username) == []
    assert await owner.fetchval(
        "SELECT last_login FROM piccolo_user WHERE username = $1", username
    ) == last_login


async def test_an_over_long_password_is_refused_alike_for_every_username(
    engine: PostgresEngine,
) -> None:
    """Refused with 401 before any hashing, whether the user exists or not:
    the answer tells nothing about which usernames are staff."""
    username = await make_staff()
    async with admin_client() as client:
        for name in (username, "nobody-here"):
            response = await log_in(client, name, "x" * 500)
            assert response.status_code == 401, (name, response.text)


async def test_a_wrong_password_gives_no_session(
    engine: PostgresEngine, owner: asyncpg.Connection
) -> None:
    username = await make_staff()
    async with admin_client() as client:
        response = await log_in(client, username, "not the password")
        assert response.status_code == 401
        assert "id" not in client.cookies
        assert (await client.get("/api/tables/")).status_code == 401
    assert await sessions_of(owner, username) == []


async def test_deactivating_an_admin_ends_their_access_at_once(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    assert (await staff.client.get("/api/tables/")).status_code == 200
    await BaseUser.update({BaseUser.active: False}).where(BaseUser.username == staff.username)
    before = await feedback_rows(owner, tenant)

    assert (await staff.client.get("/api/tables/")).status_code == 401
    for method, url, kwargs in writes(tenant):
        response = await staff.client.request(method, url, **kwargs)
        assert response.status_code == 401, (method, response.text)
    assert await feedback_rows(owner, tenant) == before


async def test_removing_the_admin_flag_ends_access_at_once(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    assert (await staff.client.get("/api/tables/skill_feedback/")).status_code == 200
    await owner.execute("UPDATE piccolo_user SET admin = false WHERE username = $1", staff.username)
    before = await feedback_rows(owner, tenant)

    assert (await staff.client.get("/api/tables/skill_feedback/")).status_code == 401
    for method, url, kwargs in writes(tenant):
        response = await staff.client.request(method, url, **kwargs)
        assert response.status_code == 401, (method, response.text)
    assert await feedback_rows(owner, tenant) == before


# -- CSRF --------------------------------------------------------------------


async def test_writes_without_the_csrf_header_are_refused(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    before = await feedback_rows(owner, tenant)
    for method, url, kwargs in writes(tenant):
        response = await without_csrf_header(staff.client, method, url, **kwargs)
        assert response.status_code == 403, (method, response.text)
        assert "CSRF token wasn't found" in response.text
    assert await feedback_rows(owner, tenant) == before

    # The same client, with its header, may write: the 403s were the header's.
    response = await save(staff.client, "skill_feedback", tenant.feedback_id, review_notes="Seen.")
    assert response.status_code == 200, response.text
    assert await owner.fetchval(
        "SELECT review_notes FROM skill_feedback WHERE id = $1", tenant.feedback_id
    ) == "Seen."


async def test_writes_with_a_wrong_csrf_token_are_refused(
    staff: Staff, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    async with admin_client() as other:
        # A real token, but another browser's: it is not this client's cookie.
        someone_elses = other.cookies["csrftoken"]
    assert someone_elses != staff.client.cookies["csrftoken"]
    before = await feedback_rows(owner, tenant)
    for token in ("wrong", someone_elses):
        for method, url, kwargs in writes(tenant):
            response = await staff.client.request(
                method, url, headers={"X-CSRFToken": token}, **kwargs
            )
            assert response.status_code == 403, (method, response.text)
            assert "doesn't match the cookie" in response.text
    assert await feedback_rows(owner, tenant) == before


async def test_the_login_and_logout_need_the_csrf_header_too(
    staff: Staff, owner: asyncpg.Connection
) -> None:
    async with admin_client() as client:
        response = await without_csrf_header(
            client, "POST", "/public/login/", json={"username": staff.username, "password": "x"}
        )
        assert response.status_code == 403
    # A forged logout does not end the session.
    response = await without_csrf_header(staff.client, "POST", "/public/logout/")
    assert response.status_code == 403
    assert (await staff.client.get("/api/tables/")).status_code == 200
    assert len(await sessions_of(owner, staff.username)) == 1


async def test_over_https_writes_need_a_referer_or_origin_of_an_allowed_host(
    engine: PostgresEngine, owner: asyncpg.Connection, tenant: TenantRows
) -> None:
    app = create_app(production=True, allowed_hosts=[HTTPS_HOST])
    username = await make_staff()
    async with admin_client(app, base_url=HTTPS_BASE) as client:
        # The login is a write too: without Referer or Origin it is refused.
        response = await log_in(client, username)
        assert response.status_code == 403 and "Referer or origin" in response.text
        response = await client.post(
            "/public/login/",
            json={"username": username, "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
        )
        assert response.status_code == 403
        assert "id" not in client.cookies

        client.headers["Referer"] = f"{HTTPS_BASE}/"
        response = await log_in(client, username)
        assert response.status_code == 200, response.text
        assert (await client.get("/api/tables/")).status_code == 200

        before = await feedback_rows(owner, tenant)
        for foreign in (
            {"Origin": "https://evil.example"},  # Origin is looked at before Referer
            {"Referer": "https://evil.example/admin.example/"},
            {"Referer": f"https://{HTTPS_HOST}.evil.example/"},
            {"Referer": ""},
        ):
            for method, url, kwargs in writes(tenant):
                response = await client.request(method, url, headers=foreign, **kwargs)
                assert response.status_code == 403, (foreign, method, response.text)
                assert "Referer or origin is incorrect" in response.text
        assert await feedback_rows(owner, tenant) == before

        # From the admin's own pages the write passes the CSRF check.
        response = await save(client, "skill_feedback", tenant.feedback_id, review_notes="Over HTTPS.")
        assert response.status_code == 200, response.text
        response = await client.patch(
            f"/api/tables/skill_feedback/{tenant.feedback_id}/",
            json={"review_notes": "From the origin."},
            headers={"Origin": HTTPS_BASE},
        )
        assert response.status_code == 200, response.text
    assert await owner.fetchval(
        "SELECT review_notes FROM skill_feedback WHERE id = $1", tenant.feedback_id
    ) == "From the origin."


# -- Login rate limit --------------------------------------------------------


async def test_logins_over_the_limit_answer_429_even_with_the_right_password(
    engine: PostgresEngine, owner: asyncpg.Connection
) -> None:
    username = await make_staff()
    app = create_app()  # its own limiter, in memory
    async with admin_client(app) as client:
        for attempt in range(LOGIN_ATTEMPTS):
            response = await log_in(client, UNKNOWN, GUESS)
            assert response.status_code == 401, (attempt, response.text)
        for _ in range(2):
            response = await log_in(client, username)
            assert response.status_code == 429, response.text
        assert "id" not in client.cookies
    assert await sessions_of(owner, username) == []

    # Another address is not blocked by this one.
    async with admin_client(app, client_address="10.0.0.2", username=username) as elsewhere:
        assert (await elsewhere.get("/api/tables/")).status_code == 200
    # Nor is the same address on another app (the limiter is per app).
    async with admin_client(username=username) as other_app:
        assert (await other_app.get("/api/tables/")).status_code == 200


async def test_a_login_block_ends_after_its_duration(engine: PostgresEngine) -> None:
    username = await make_staff()
    # A window no longer than the block: see the next test for a longer one.
    app = create_app(login_rate_limit=login_limit(attempts=2, window=2, block=2))
    async with admin_client(app) as client:
        for _ in range(2):
            assert (await log_in(client, UNKNOWN, GUESS)).status_code == 401
        assert (await log_in(client, username)).status_code == 429
        assert (await log_in(client, username)).status_code == 429
        await asyncio.sleep(2.1)
        response = await log_in(client, username)
        assert response.status_code == 200, response.text
        assert (await client.get("/api/tables/")).status_code == 200


def test_a_login_block_shorter_than_the_window_is_refused() -> None:
    """Piccolo API's limiter keeps an address's count for its whole window: a
    shorter block would end only to block the next attempt again."""
    with pytest.raises(ValueError, match="must last at least the window"):
        login_limit(attempts=2, window=60, block=1)


# -- Production ----------------------------------------------------------------


async def test_in_production_the_session_cookie_is_secure_and_http_only(
    engine: PostgresEngine,
) -> None:
    app = create_app(production=True, allowed_hosts=["testserver"])
    username = await make_staff()
    # httpx sends a Secure cookie over HTTPS only, as a browser does.
    async with admin_client(app, base_url="https://testserver") as client:
        client.headers["Origin"] = "https://testserver"
        response = await log_in(client, username)
        assert response.status_code == 200, response.text
        cookie = session_cookie(response)
        assert cookie["id"] and "secure" in cookie and "httponly" in cookie
        assert cookie["samesite"].lower() == "lax"
        assert (await client.get("/api/tables/")).status_code == 200


async def test_without_production_the_session_cookie_is_http_only_but_not_secure(
    engine: PostgresEngine,
) -> None:
    username = await make_staff()
    async with admin_client() as client:
        response = await log_in(client, username)
        assert response.status_code == 200, response.text
        cookie = session_cookie(response)
        assert cookie["id"] and "httponly" in cookie
        assert "secure" not in cookie


def test_production_without_allowed_hosts_is_refused() -> None:
    no_hosts: tuple[Sequence[str], ...] = ((), [])
    for hosts in no_hosts:
        with pytest.raises(ValueError) as refused:
            create_app(production=True, allowed_hosts=hosts)
        message = str(refused.value)
        assert "--allowed-host" in message and "EVERYSKILL_ALLOWED_HOSTS" in message
    # Without production no host is needed, and with one production is fine.
    create_app()
    create_app(production=True, allowed_hosts=[HTTPS_HOST])


# -- Logging out -----------------------------------------------------------------


async def test_logging_out_ends_the_session(staff: Staff, owner: asyncpg.Connection) -> None:
    token = staff.client.cookies["id"]
    assert await sessions_of(owner, staff.username) == [token]
    assert (await staff.client.get("/api/tables/")).status_code == 200

    response = await staff.client.post("/public/logout/")
    assert response.status_code == 200, response.text
    assert "id" not in staff.client.cookies
    assert (await staff.client.get("/api/tables/")).status_code == 401

    # Ended on the server: the old token, sent again, opens nothing.
    assert await sessions_of(owner, staff.username) == []
    response = await staff.client.get("/api/tables/", headers={"Cookie": f"id={token}"})
    assert response.status_code == 401


