"""
The staff overview in a real browser: Playwright drives Debian's Chromium
through the pages of :mod:`everyskill.admin.overview_pages`, served by
``main.py`` on a fresh database with the sample data:

1. staff log in and land on the overview; its plotly charts are drawn (an
   SVG plot in each of the six) and hovering a bar of the cost chart shows
   its value in dollars;
2. they choose the last 7 days and one tenant: the page shows them chosen,
   and its calls and cost are the database's for that tenant and period;
3. they follow the review queue's first link to the admin's feedback list,
   filtered to that tenant's skill and ``pending``: as many items as the
   queue said, all pending, as many as the database holds;
4. they open a completed benchmark run from the admin's list of runs: its
   page links to its comparison, which they follow; the comparison lists
   every model of the run and draws its quality/cost chart, whose points
   show their cost in dollars on hover.

Each step leaves a screenshot in ``artifacts/overview/`` (``NN-step.png``,
``failure.png`` when the flow breaks); the overview's is also kept as
``overview.png`` (1440x900), of which ``docs/overview.png``, shown in the
README, is a copy (copied by hand, so that a test run leaves the tree clean).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import asyncpg
from playwright.async_api import Locator, Page, expect

from everyskill.admin.overview_pages import RUN_LINK_ID
from everyskill.overview import dollars
from tests.browser import VIEWPORT, Checks, Screenshots, column, launched_chromium, served_admin
from tests.support import PROJECT_ROOT, connected

USERNAME = "staff"
PASSWORD = "a long overview test password, not a default"
ARTIFACTS = PROJECT_ROOT / "artifacts" / "overview"
CHARTS = (
    "cost-chart", "tokens-chart", "calls-chart", "top-skills-chart", "feedback-chart",
    "share-chart",
)

# A tenant's calls and cost over its last `days` UTC days, from the raw rows.
PERIOD_USAGE = """
SELECT count(*) AS calls, sum(estimated_cost_microcents) AS cost,
       count(*) - count(estimated_cost_microcents) AS unpriced
  FROM token_measurements
 WHERE tenant_id = $1 AND created_at >= $2
"""


async def test_staff_look_at_the_overview_and_a_run_comparison(
    fresh_database: str, tmp_path: Path
) -> None:
    shots = Screenshots(ARTIFACTS)
    checks = Checks()
    with served_admin(fresh_database, tmp_path, username=USERNAME, password=PASSWORD) as base:
        async with connected(fresh_database) as owner, launched_chromium() as browser:
            context = await browser.new_context(viewport=VIEWPORT, base_url=base)
            context.set_default_timeout(15_000)
            page = await context.new_page()
            try:
                await land_on_the_overview(page, shots, checks)
                tenant_id = await choose_period_and_tenant(page, owner, shots, checks)
                await follow_the_review_queue(page, owner, shots, checks, tenant_id)
                await compare_a_run(page, owner, shots, checks)
            except BaseException:
                await shots.failure(page)
                raise
            finally:
                await context.close()
    checks.verify()


async def hover_label(page: Page, chart: Locator, points: Locator) -> Locator:
    """Move the mouse over the tallest of a chart's plotted ``points``
    (plotly listens on a layer above them, so the mouse moves to the
    point's position) and return the chart's hover label."""
    await chart.scroll_into_view_if_needed()
    boxes = [box for box in [await point.bounding_box() for point in await points.all()] if box]
    assert boxes, "no point is drawn"
    box = max(boxes, key=lambda box: box["height"])
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    return chart.locator(".hoverlayer .hovertext").first


async def land_on_the_overview(page: Page, shots: Screenshots, checks: Checks) -> None:
    """Step 1: the login lands on the overview; charts drawn; hover works."""
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"#/login/"))
    await page.locator('input[name="username"]').fill(USERNAME)
    await page.locator('input[name="password"]').fill(PASSWORD)
    await page.get_by_role("button", name="Login").click()
    await expect(page).to_have_url(re.compile(r"/overview/$"), timeout=15_000)
    await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    for chart in CHARTS:
        # plotly drew it: its container and SVG plot exist (not just the div).
        await checks.expect(
            expect(page.locator(f"#{chart} .plot-container .main-svg").first).to_be_attached(),
            f"the chart {chart} is drawn by plotly",
        )
    await expect(page.locator("#totals")).to_contain_text("$")
    await page.evaluate("window.scrollTo(0, 0)")
    await shots.named(page, "overview")
    await shots.step(page, "overview")

    cost = page.locator("#cost-chart")
    await expect(cost.locator(".bars .point path").first).to_be_attached()
    label = await hover_label(page, cost, cost.locator(".bars .point path"))
    await checks.expect(expect(label).to_be_visible(), "hovering a cost bar shows a label")
    await checks.expect(
        expect(label).to_contain_text(re.compile(r"\$\d+\.\d{4}")),
        "the cost bar's label shows dollars",
    )
    await shots.step(page, "overview-hover")


async def choose_period_and_tenant(
    page: Page, owner: asyncpg.Connection, shots: Screenshots, checks: Checks
) -> str:
    """Step 2: the last 7 days of one tenant; the page's totals are the
    database's. Returns the tenant's id."""
    tenant = await owner.fetchrow("SELECT id, name FROM tenants ORDER BY name LIMIT 1")
    await page.locator("select#days").select_option("7")
    await page.locator("select#tenant").select_option(tenant["id"])
    await page.get_by_role("button", name="Show").click()
    await expect(page).to_have_url(re.compile(rf"days=7&tenant={tenant['id']}"))
    await expect(page.locator("select#days")).to_have_value("7")
    await expect(page.locator("select#tenant")).to_have_value(tenant["id"])
    await expect(page.locator("#cost-chart .main-svg").first).to_be_attached()

    today = datetime.now(timezone.utc).date()
    start = datetime.combine(today - timedelta(days=6), time.min, timezone.utc)
    usage = await owner.fetchrow(PERIOD_USAGE, tenant["id"], start)
    assert usage["calls"] > 0, "the sample data has no measurement in the last 7 days"
    await checks.expect(
        expect(page.locator("#totals")).to_have_text(
            f"Cost {dollars(usage['cost'])} over {usage['calls']:,} calls"
            f" ({usage['unpriced']:,} unpriced)."
        ),
        f"the totals of {tenant['name']}'s last 7 days are the database's",
    )
    await shots.step(page, "overview-7-days-one-tenant")
    return str(tenant["id"])


async def follow_the_review_queue(
    page: Page, owner: asyncpg.Connection, shots: Screenshots, checks: Checks, tenant_id: str
) -> None:
    """Step 3: the review queue's first link opens the filtered feedback list."""
    first = page.locator("#review-queue tbody tr").first
    pending = int((await first.locator("td").nth(2).inner_text()).replace(",", ""))
    link = first.get_by_role("link")
    href = await link.get_attribute("href") or ""
    skill_id = re.search(r"skill_id=([^&]+)", href)
    assert skill_id is not None, href
    expected = await owner.fetchval(
        "SELECT count(*) FROM skill_feedback"
        " WHERE tenant_id = $1 AND skill_id = $2 AND status = 'pending'",
        tenant_id, skill_id[1],
    )
    checks.equal(pending, expected, "the review queue's pending count")

    await link.click()
    await expect(page).to_have_url(re.compile(r"#/skill_feedback/\?"))
    await expect(page.get_by_role("heading", name="skill feedback", exact=True)).to_be_visible()
    await checks.expect(
        expect(page.locator("#result_count")).to_have_text(
            re.compile(rf"of {expected} result", re.IGNORECASE)
        ),
        "the filtered list counts the skill's pending feedback",
    )
    rows = page.locator(".table_wrapper tbody tr")
    count = await rows.count()
    checks.that(0 < count <= expected, f"the list shows 1 to {expected} rows, shows {count}")
    await checks.expect(
        expect(column(page, "Status")).to_have_text(["Pending"] * count),
        "every listed item is pending",
    )
    await shots.step(page, "review-queue-list")


async def compare_a_run(
    page: Page, owner: asyncpg.Connection, shots: Screenshots, checks: Checks
) -> None:
    """Step 4: a completed run's page in the admin links to its comparison."""
    await page.get_by_role("link", name="benchmark runs", exact=True).click()
    await expect(page.get_by_role("heading", name="benchmark runs", exact=True)).to_be_visible()
    listed = [text.strip() for text in await column(page, "id").all_text_contents()]
    run = await owner.fetchrow(
        "SELECT id, models FROM benchmark_runs WHERE status = 'completed' AND id = ANY($1::text[])"
        " AND EXISTS (SELECT FROM benchmark_results r WHERE r.benchmark_run_id = benchmark_runs.id)"
        " ORDER BY created_at DESC LIMIT 1",
        listed,
    )
    assert run is not None, "no completed run with results on the list's first page"
    await page.get_by_role("link", name=run["id"], exact=True).click()
    await expect(page).to_have_url(re.compile(rf"#/benchmark_runs/{run['id']}/$"))
    compare = page.locator(f"#{RUN_LINK_ID}")
    await expect(compare).to_be_visible()
    await expect(compare).to_have_attribute("href", f"/runs/{run['id']}/")
    await shots.step(page, "run-in-admin")

    await compare.click()
    await expect(page).to_have_url(re.compile(rf"/runs/{run['id']}/$"))
    await expect(page.get_by_role("heading", name="Benchmark run comparison")).to_be_visible()
    models = await owner.fetch(
        "SELECT DISTINCT model_name FROM benchmark_results WHERE benchmark_run_id = $1"
        " ORDER BY model_name",
        run["id"],
    )
    await checks.expect(
        expect(page.locator("#per-model tbody tr td:first-child")).to_have_text(
            [row["model_name"] for row in models]
        ),
        "the comparison lists every model of the run",
    )
    chart = page.locator("#quality-cost-chart")
    await expect(chart.locator(".main-svg").first).to_be_attached()
    await expect(chart.locator(".scatterlayer .point").first).to_be_attached()
    label = await hover_label(page, chart, chart.locator(".scatterlayer .point"))
    await checks.expect(
        expect(label).to_contain_text(re.compile(r"quality .*\$\d+\.\d{6} a case", re.DOTALL)),
        "hovering a model's point shows its quality and cost in dollars",
    )
    await shots.step(page, "run-comparison")

    # Leaving the run's page in the admin removes the link.
    await page.go_back()
    await expect(page).to_have_url(re.compile(rf"#/benchmark_runs/{run['id']}/$"))
    await expect(compare).to_be_visible()
    await page.get_by_role("link", name="Back", exact=True).click()
    await expect(page).to_have_url(re.compile(r"#/benchmark_runs/$"))
    await checks.expect(expect(compare).to_have_count(0), "no comparison link on the list")
