"""
The overview and comparison pages in the admin: behind its login (staff
only), money in dollars with "unpriced" for unknown prices, charts drawn by
the plotly JavaScript the app serves itself, and the overview as the page
staff land on.
"""

from __future__ import annotations

import re

import asyncpg

from everyskill.admin.overview_pages import RUN_LINK_ID, SHELL_SCRIPT, feedback_list_link
from tests.admin_client import Staff, admin_client, make_staff
from tests.support import make_tenant


async def test_pages_need_a_staff_session(engine: object) -> None:
    async with admin_client() as anonymous:
        for path in ("/overview/", "/runs/x/", "/overview/plotly.min.js"):
            response = await anonymous.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/#/login/"
    # A user who is not an admin cannot log in, and an inactive admin neither.
    for flags in ({"admin": False}, {"active": False}):
        username = await make_staff(**flags)
        async with admin_client() as client:
            assert (await client.post("/public/login/", json={"username": username,
                    "password": "a long staff password"})).status_code != 200
            assert (await client.get("/overview/")).status_code == 303


async def test_the_overview_in_dollars(owner: asyncpg.Connection, staff: Staff) -> None:
    tenant = await make_tenant(owner, "pages")
    await owner.execute(
        "INSERT INTO token_measurements (tenant_id, skill_id, model_name, total_tokens,"
        " estimated_cost_microcents) VALUES ($1, $2, 'mystery-model', 10, NULL),"
        " ($1, $2, 'claude-sonnet-4-5', 10, 2439840)",
        tenant.tenant_id, tenant.skill_id,
    )
    response = await staff.client.get("/overview/", params={"tenant": tenant.tenant_id, "days": 7})
    assert response.status_code == 200
    page = response.text
    for title in ("Cost per day by model", "Tokens per day by kind", "Calls per day by model",
                  "Skills that cost the most", "Feedback per day by type",
                  "Positive share of thumbs"):
        assert title in page
    # make_tenant's measurement (600000) and the one above: $0.0304 in all.
    assert re.search(r'id="totals">Cost <strong>\$0\.0304</strong> over <strong>3</strong> calls \(1 unpriced\)', page)
    top = page[page.index('id="top-skills"'):]
    assert "$0.0304" in top and "2439840" not in page
    assert feedback_list_link(tenant.tenant_id, tenant.skill_id).replace("&", "&amp;") in page
    assert f'href="/runs/{tenant.run_id}/"' in page
    assert '<script src="/overview/plotly.min.js"></script>' in page
    assert "cdn" not in page.lower()
    script = await staff.client.get("/overview/plotly.min.js")
    assert script.status_code == 200 and "plotly" in script.text[:2000].lower()
    # A value the page does not offer: 400, naming the field.
    refused = await staff.client.get("/overview/", params={"zone": "Asia/Kolkata"})
    assert refused.status_code == 400 and "zone" in refused.text


async def test_an_all_unpriced_skill_reads_unpriced(owner: asyncpg.Connection, staff: Staff) -> None:
    tenant = await make_tenant(owner, "pages-unpriced")
    await owner.execute("DELETE FROM token_measurements WHERE tenant_id = $1", tenant.tenant_id)
    await owner.execute(
        "INSERT INTO token_measurements (tenant_id, skill_id, model_name) VALUES ($1, $2, 'mystery')",
        tenant.tenant_id, tenant.skill_id,
    )
    page = (await staff.client.get("/overview/", params={"tenant": tenant.tenant_id})).text
    assert "<strong>unpriced</strong> over <strong>1</strong> calls" in page
    top = page[page.index('id="top-skills"'):page.index("</table>", page.index('id="top-skills"'))]
    assert "unpriced" in top and "$0.0000" not in top


async def test_a_run_comparison_page(owner: asyncpg.Connection, staff: Staff) -> None:
    tenant = await make_tenant(owner, "pages-run")
    response = await staff.client.get(f"/runs/{tenant.run_id}/")
    assert response.status_code == 200
    assert "Average quality against average cost" in response.text
    assert 'id="per-model"' in response.text
    assert (await staff.client.get("/runs/no-such-run/")).status_code == 404


async def test_staff_land_on_the_overview_and_runs_link_to_their_comparison(engine: object) -> None:
    """The shell of the admin carries the script that sends its home route to
    the overview and adds the comparison link to a run's page. Fails when
    Piccolo Admin's shell, its routes or the way a login lands change
    underneath (the browser test follows both in Chromium)."""
    async with admin_client() as client:
        shell = (await client.get("/")).text
    assert SHELL_SCRIPT in shell
    assert shell.index(SHELL_SCRIPT) < shell.index("</head>")
    assert f'id = "{RUN_LINK_ID}"' in SHELL_SCRIPT and 'var target = "/runs/"' in SHELL_SCRIPT
    bundle = re.search(r'src="(\./)?(assets/index-[^"]+\.js)"', shell)
    assert bundle is not None
    async with admin_client() as client:
        script = (await client.get("/" + bundle.group(2))).text
    # Piccolo Admin's routes are hash routes: home is "/", a row's page is
    # "/<table>/<id>/" (the run's id in the list links there), and "add" is
    # the only other page under a table. A login goes home.
    assert '{path:"/",name:"home"' in script
    assert '{path:"/:tableName/:rowID/",name:"editRow"' in script
    assert re.findall(r'\{path:"/:tableName/[^"]*",name:"\w+"', script) == [
        '{path:"/:tableName/",name:"rowListing"',
        '{path:"/:tableName/add/",name:"addRow"',
        '{path:"/:tableName/:rowID/",name:"editRow"',
    ]
    assert 'push({name:"home"})' in script
    # The list links a row's primary key (the run's id) to its editRow page.
    assert 'linkColumnName(){return this.schema.extra.link_column_name}' in script


async def test_the_sidebar_links_to_the_overview(staff: Staff) -> None:
    links = (await staff.client.get("/api/links/")).json()
    assert links == {"Overview": "/overview/"}
