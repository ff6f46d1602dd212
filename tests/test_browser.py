"""
The admin in a real browser: Playwright drives Debian's Chromium (headless,
``EVERYSKILL_CHROMIUM`` to use another binary) through what platform staff do
in the Piccolo Admin that ``main.py`` serves on a fresh database with the
sample data:

1. the admin sends an anonymous visitor to its login page; staff log in,
   land on the overview, go to the feedback list and see the menu groups
   (Catalogue, Feedback, Usage and cost, Benchmarks);
2. the filter sidebar narrows the feedback listing to pending thumbs-down,
   and the count shown is the database's;
3. staff open a listed item, read it, dismiss it with review notes that
   carry a GitHub token, and save;
4. the database holds the review: dismissed, stamped now by the admin login
   that made it, the token replaced by a redaction marker, and the skill's
   aggregates no longer counting the dismissed thumbs-down;
5. the admin refuses to edit a token measurement (a record of what
   happened): the form shows the refusal, the row is unchanged;
6. staff log out: back on the login page, and the API answers 401 to the
   browser's cookies.

Each step leaves a screenshot in ``artifacts/browser/`` (``NN-step.png``,
``admin.png`` of the pending-feedback listing at 1440x900 for docs/admin.md, and
``failure.png`` when the flow breaks). The expectations on what the admin
does (steps 3 to 5) are collected and reported together at the end, so one
run shows every one that does not hold; navigation fails at once.
"""

from __future__ import annotations

import re
import secrets
import string
from pathlib import Path

import asyncpg
from playwright.async_api import BrowserContext, Dialog, Locator, Page, expect

from everyskill.redaction import marker, redact
from tests.browser import VIEWPORT, Checks, Screenshots, column, launched_chromium, served_admin
from tests.support import connected

USERNAME = "staff"
PASSWORD = "a long browser test password, not a default"
MENU_GROUPS = ("Catalogue", "Feedback", "Usage and cost", "Benchmarks")
NOTES_PREFIX = "Spam; the poster pasted "
#: What reviewing a feedback item may change.
REVIEW_COLUMNS = frozenset({"status", "reviewed_at", "reviewed_by_admin", "review_notes"})

PENDING_THUMBS_DOWN = (
    "SELECT count(*) FROM skill_feedback"
    " WHERE status = 'pending' AND feedback_type = 'thumbs_down'"
)
SKILL_AGGREGATES = (
    "SELECT total_feedback, feedback_thumbs_up, feedback_thumbs_down, positive_feedback_pct"
    " FROM skills WHERE id = $1"
)
# What the aggregates should be, recounted from the feedback that counts.
RECOUNTED_AGGREGATES = """
    SELECT count(*) AS total_feedback,
           count(*) FILTER (WHERE feedback_type = 'thumbs_up') AS up,
           count(*) FILTER (WHERE feedback_type = 'thumbs_down') AS down,
           round(100.0 * count(*) FILTER (WHERE feedback_type = 'thumbs_up')
                 / NULLIF(count(*) FILTER (WHERE feedback_type IN ('thumbs_up', 'thumbs_down')), 0)
           )::int AS positive_feedback_pct
      FROM skill_feedback WHERE skill_id = $1 AND status <> 'dismissed'
"""


def github_token() -> str:
    """A token of GitHub's classic shape (``ghp_`` and 36 letters and digits)."""
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


async def test_staff_review_feedback_and_cannot_edit_measurements_in_the_admin(
    fresh_database: str, tmp_path: Path
) -> None:
    shots = Screenshots()
    checks = Checks()
    with served_admin(fresh_database, tmp_path, username=USERNAME, password=PASSWORD) as base:
        async with connected(fresh_database) as owner, launched_chromium() as browser:
            context = await browser.new_context(viewport=VIEWPORT, base_url=base)
            context.set_default_timeout(15_000)
            page = await context.new_page()
            try:
                await log_in(page, shots)
                listed = await filter_pending_thumbs_down(page, owner, shots)
                await review_one(page, owner, shots, checks, listed)
                await try_to_edit_a_measurement(page, owner, shots, checks)
                await log_out(page, context, shots)
            except BaseException:
                await shots.failure(page)
                raise
            finally:
                await context.close()
    checks.verify()


async def log_in(page: Page, shots: Screenshots) -> None:
    """Step 1: redirected to the login page; log in; the menu's groups."""
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"#/login/"))
    username = page.locator('input[name="username"]')
    await expect(username).to_be_visible()
    await shots.step(page, "login")

    await username.fill(USERNAME)
    await page.locator('input[name="password"]').fill(PASSWORD)
    await page.get_by_role("button", name="Login").click()
    # Staff land on the overview (tests/test_browser_overview.py looks at it);
    # its menu leads to the admin's lists.
    await expect(page).to_have_url(re.compile(r"/overview/$"), timeout=15_000)
    await page.get_by_role("link", name="Feedback", exact=True).click()
    await expect(page).to_have_url(re.compile(r"#/skill_feedback/$"))
    for group in MENU_GROUPS:
        await expect(page.get_by_role("link", name=group, exact=True)).to_be_visible()
    await shots.step(page, "menu")


async def filter_pending_thumbs_down(
    page: Page, owner: asyncpg.Connection, shots: Screenshots
) -> list[str]:
    """Step 2: the filter sidebar narrows skill_feedback to pending thumbs-down;
    returns the ids listed on the first page."""
    expected = await owner.fetchval(PENDING_THUMBS_DOWN)
    assert expected > 0, "the sample data has no pending thumbs-down"

    await page.get_by_role("link", name="skill feedback", exact=True).click()
    await expect(page.get_by_role("heading", name="skill feedback", exact=True)).to_be_visible()
    await page.locator('[data-uitest="filter_button"]').click()
    filters = page.locator('[data-uitest="right_sidebar"]')
    await filters.locator('select[name="status"]').select_option("pending")
    await filters.locator('select[name="feedback_type"]').select_option("thumbs_down")
    await filters.get_by_role("button", name="Apply").click()
    popup = page.locator("#message_popup")
    await expect(popup).to_have_text("Successfully applied filter")
    await expect(page.locator("#result_count")).to_have_text(
        re.compile(rf"Showing \d+ of {expected} result", re.IGNORECASE)
    )

    rows = page.locator(".table_wrapper tbody tr")
    count = await rows.count()
    assert 0 < count <= expected
    await expect(column(page, "Status")).to_have_text(["Pending"] * count)
    await expect(column(page, "Feedback Type")).to_have_text(["Thumbs Down"] * count)
    listed = await column(page, "id").all_text_contents()

    # The listing alone, at the top, for docs/admin.md and this step.
    await filters.get_by_text("Close", exact=True).click()
    await expect(page.locator('select[name="status"]')).to_be_hidden()
    await expect(popup).to_be_hidden()  # it goes after 3 s
    await page.evaluate("window.scrollTo(0, 0)")
    await shots.named(page, "admin")
    await shots.step(page, "pending-feedback")
    return [row_id.strip() for row_id in listed]


async def review_one(
    page: Page,
    owner: asyncpg.Connection,
    shots: Screenshots,
    checks: Checks,
    listed: list[str],
) -> None:
    """Steps 3 and 4: open a listed item, dismiss it with notes carrying a
    secret, save; then the database's view of the review."""
    rows = await owner.fetch(
        "SELECT id, skill_id, comment FROM skill_feedback WHERE id = ANY($1::text[])", listed
    )
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == set(listed)
    # One whose comment the edit page can show, if the first page has one.
    chosen = next((by_id[i] for i in listed if by_id[i]["comment"]), by_id[listed[0]])
    feedback_id, skill_id, comment = chosen["id"], chosen["skill_id"], chosen["comment"]
    before = await owner.fetchrow(SKILL_AGGREGATES, skill_id)
    unreviewed = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", feedback_id)

    await page.get_by_role("link", name=feedback_id, exact=True).click()
    await expect(page).to_have_url(re.compile(rf"#/skill_feedback/{feedback_id}/$"))
    await expect(page.get_by_role("heading", name="Edit skill feedback")).to_be_visible()
    await expect(page.locator('input[name="skill_id"]')).to_have_value(skill_id)
    if comment:
        await expect(text_area(page, "comment")).to_have_value(comment)
    status = page.locator('select[name="status"]')
    await expect(status).to_have_value("pending")
    await shots.step(page, "feedback-item")

    token = github_token()
    notes = NOTES_PREFIX + token
    assert redact(notes).found == {"github_token": 1}, "the project does not redact this token"
    await status.select_option("dismissed")
    await text_area(page, "review_notes").fill(notes)
    await shots.step(page, "feedback-review")
    await page.locator('[data-uitest="save_button"]').click()
    await checks.expect(
        expect(page.locator("#message_popup")).to_have_text("Successfully saved row"),
        "saving the review shows the admin's success message",
    )
    await shots.step(page, "feedback-saved")

    # Step 4: the database, as the owner.
    row = await owner.fetchrow("SELECT * FROM skill_feedback WHERE id = $1", feedback_id)
    checks.equal(row["status"], "dismissed", "status of the reviewed feedback")
    stamped = await owner.fetchval(
        "SELECT reviewed_at BETWEEN now() - interval '1 minute' AND now()"
        " FROM skill_feedback WHERE id = $1",
        feedback_id,
    )
    checks.that(bool(stamped), f"reviewed_at set within the last minute, got {row['reviewed_at']!r}")
    checks.equal(row["reviewed_by_admin"], USERNAME, "reviewed_by_admin")
    # Nothing else: the form sends every field back (created_at among them,
    # which an admin that cut it to whole seconds would rewrite).
    changed = {
        key: (unreviewed[key], row[key])
        for key in unreviewed.keys()
        if key not in REVIEW_COLUMNS and unreviewed[key] != row[key]
    }
    checks.that(not changed, f"the review changes only {sorted(REVIEW_COLUMNS)}; changed: {changed!r}")
    stored = row["review_notes"] or ""
    checks.that(token not in stored, f"the token is not stored in review_notes: {stored!r}")
    checks.that(
        stored.startswith(NOTES_PREFIX) and marker("github_token") in stored,
        f"review_notes keep the text and mark the token {marker('github_token')}: {stored!r}",
    )

    after = await owner.fetchrow(SKILL_AGGREGATES, skill_id)
    recounted = await owner.fetchrow(RECOUNTED_AGGREGATES, skill_id)
    checks.equal(after["total_feedback"], before["total_feedback"] - 1, "skills.total_feedback after dismissing")
    checks.equal(
        after["feedback_thumbs_down"], before["feedback_thumbs_down"] - 1, "skills.feedback_thumbs_down after dismissing"
    )
    checks.equal(after["feedback_thumbs_up"], before["feedback_thumbs_up"], "skills.feedback_thumbs_up after dismissing")
    checks.equal(
        after["total_feedback"], recounted["total_feedback"], "skills.total_feedback = feedback not dismissed"
    )
    checks.equal(
        (after["feedback_thumbs_up"], after["feedback_thumbs_down"]),
        (recounted["up"], recounted["down"]),
        "skills' thumbs counters = thumbs not dismissed",
    )
    checks.equal(
        after["positive_feedback_pct"],
        recounted["positive_feedback_pct"],
        "skills.positive_feedback_pct recounted without dismissed feedback",
    )


def text_area(page: Page, name: str) -> Locator:
    """The visible textarea of a text field (the form also holds a hidden
    rich-text twin, ``#editor``, with the same name)."""
    return page.locator(f'textarea[name="{name}"]:not(#editor)')


async def try_to_edit_a_measurement(
    page: Page, owner: asyncpg.Connection, shots: Screenshots, checks: Checks
) -> None:
    """Step 5: a token measurement cannot be edited in the admin."""
    # The admin's title goes home, which is the overview; its menu has the list.
    await page.get_by_role("link", name="EverySkill admin").click()
    await expect(page).to_have_url(re.compile(r"/overview/$"), timeout=15_000)
    await page.get_by_role("link", name="Token measurements", exact=True).click()
    await page.get_by_role("link", name="token measurements", exact=True).click()
    await expect(page.get_by_role("heading", name="token measurements", exact=True)).to_be_visible()
    first = column(page, "id").first.get_by_role("link")
    measurement_id = (await first.text_content() or "").strip()
    before = await owner.fetchrow("SELECT * FROM token_measurements WHERE id = $1", measurement_id)
    assert before is not None and before["latency_ms"] is not None

    await first.click()
    await expect(page).to_have_url(re.compile(rf"#/token_measurements/{measurement_id}/$"))
    latency = page.locator('input[name="latency_ms"]')
    await expect(latency).to_have_value(str(before["latency_ms"]))
    await shots.step(page, "measurement")
    await latency.fill(str(before["latency_ms"] + 1000))
    await page.locator('[data-uitest="save_button"]').click()

    errors = page.locator(".errors")
    refused = await checks.expect(
        expect(errors).to_contain_text("token measurements", ignore_case=True),
        "the edit form shows the refusal naming token measurements",
    )
    if refused:
        await checks.expect(
            expect(errors).to_contain_text("cannot be edited", ignore_case=True),
            "the refusal says the row cannot be edited",
        )
    await shots.step(page, "measurement-refused")

    after = await owner.fetchrow("SELECT * FROM token_measurements WHERE id = $1", measurement_id)
    checks.equal(after["latency_ms"], before["latency_ms"], "token_measurements.latency_ms after the refused edit")
    changed = {key: (before[key], after[key]) for key in before.keys() if before[key] != after[key]}
    checks.that(not changed, f"the token measurement is unchanged; changed: {changed!r}")


async def log_out(page: Page, context: BrowserContext, shots: Screenshots) -> None:
    """Step 6: log out from the top bar's user menu; the session is gone."""
    assert (await context.request.get("/api/tables/")).status == 200  # logged in so far
    asked: list[str] = []

    async def confirm(dialog: Dialog) -> None:  # "Are you sure you want to logout?"
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", confirm)
    await page.locator('[data-uitest="nav_dropdown_button"]').click()
    await page.get_by_role("link", name="Log Out", exact=True).click()
    await expect(page).to_have_url(re.compile(r"#/login/"))
    await expect(page.get_by_role("button", name="Login")).to_be_visible()
    assert any("logout" in message.lower() for message in asked), asked
    await shots.step(page, "logged-out")
    assert (await context.request.get("/api/tables/")).status == 401
