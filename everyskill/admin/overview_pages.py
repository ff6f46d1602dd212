"""The staff overview and a benchmark run's comparison: pages with charts, in the admin.

Contract
--------
- :func:`overview_routes` returns the routes the admin app serves beside
  Piccolo Admin: ``/overview/`` (the overview), ``/runs/<id>/`` (a run's
  comparison) and ``/overview/plotly.min.js`` (the charting library's
  JavaScript, from the pinned ``plotly`` package: no CDN, no network).
- They are behind the admin's login, with its rules: Piccolo API's session
  middleware against the same ``piccolo_user`` and sessions tables, active
  admins only, checked on every request, the session extended as the
  admin's is. Without a valid session a page answers a redirect to the
  admin's login (``/#/login/``); the pages only read (GET), so the CSRF rule
  of writes does not arise.
- The overview's form chooses the period (:data:`everyskill.overview.PERIODS`
  days, default 30), the tenant (default all) and the time zone (default
  UTC); a value the page does not offer answers 400 with the field and
  what to choose. Charts are plotly figures, interactive (hover shows the
  values), each with a title and axis units; money is in dollars, and a
  group whose calls all lacked a price reads "unpriced", never $0.
- The review queue links each (tenant, skill) to the admin's feedback list
  filtered to that tenant, skill and ``pending``; recent runs link to their
  comparison page, which has a chart of average quality against average
  cost per model with the run's best and cheapest picks marked.
- :func:`extend_shell` makes the overview the page staff see first and adds
  to each benchmark run's page in the admin a link to its comparison: see
  its docstring for how and why.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import plotly.graph_objects as go
from piccolo_api.session_auth.middleware import SessionsAuthBackend
from piccolo_api.session_auth.tables import SessionsBase
from plotly.offline import get_plotlyjs
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, Router

from everyskill.admin.login import StaffUser
from everyskill.errors import NotFoundError, ValidationError
from everyskill.overview import (
    MICROCENTS_PER_DOLLAR,
    PERIODS,
    TIME_ZONES,
    Overview,
    dollars,
    overview,
    overview_query,
    run_comparison,
)

__all__ = [
    "OVERVIEW_PATH",
    "RUN_LINK_ID",
    "SHELL_SCRIPT",
    "extend_shell",
    "feedback_list_link",
    "overview_routes",
    "run_path",
]

OVERVIEW_PATH = "/overview/"
#: Decimal places of a benchmark case's cost: a case costs fractions of a
#: cent, which four places would round to the same $0.0001.
CASE_PLACES = 6
PLOTLY_PATH = "/overview/plotly.min.js"
LOGIN_PATH = "/#/login/"


def run_path(run_id: str) -> str:
    """Where a benchmark run's comparison page is."""
    return f"/runs/{run_id}/"


def feedback_list_link(tenant_id: str, skill_id: str) -> str:
    """The admin's feedback list filtered to a tenant's skill's pending items."""
    query = urlencode({"tenant_id": tenant_id, "skill_id": skill_id, "status": "pending"})
    return f"/#/skill_feedback/?{query}"


# -- pages ------------------------------------------------------------------------


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · EverySkill admin</title>
<script src="{PLOTLY_PATH}"></script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 2rem 2rem; color: #1f2933; }}
nav {{ padding: .8rem 0; border-bottom: 1px solid #ddd; margin-bottom: 1rem; }}
nav a {{ margin-right: 1.2rem; }}
form label {{ margin-right: 1rem; }}
/* auto-fill, not auto-fit: the columns exist before the charts after the
   first are parsed, so each chart is drawn at its column's width. */
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1rem; }}
.grid > * {{ min-width: 0; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ border-bottom: 1px solid #e4e7eb; padding: .3rem .7rem; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.note {{ color: #52606d; font-size: .9rem; }}
</style></head>
<body><nav><a href="{OVERVIEW_PATH}">Overview</a><a href="/#/skill_feedback/">Feedback</a>
<a href="/#/token_measurements/">Token measurements</a><a href="/#/benchmark_runs/">Benchmark runs</a>
<a href="/#/skills/">Skills</a></nav>
<h1>{html.escape(title)}</h1>
{body}
</body></html>"""
    )


def _chart(figure: go.Figure, element_id: str) -> str:
    figure.update_layout(margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=380)
    return str(
        figure.to_html(
            full_html=False, include_plotlyjs=False, div_id=element_id,
            config={"responsive": True, "displaylogo": False},
        )
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if index in numeric else f"<td>{cell}</td>"
            for index, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _select(name: str, options: Sequence[tuple[str, str]], chosen: str, label: str) -> str:
    items = "".join(
        f'<option value="{html.escape(value)}"{" selected" if value == chosen else ""}>'
        f"{html.escape(text)}</option>"
        for value, text in options
    )
    return f'<label>{label} <select name="{name}" id="{name}">{items}</select></label>'


def _usd(microcents: Any) -> float:
    return float(Decimal(microcents) / MICROCENTS_PER_DOLLAR)


def render_overview(data: Overview) -> str:
    """The overview's HTML body (see the contract)."""
    query = data.query
    days = query.day_list()
    e = html.escape
    form = (
        f'<form method="get" action="{OVERVIEW_PATH}" id="choices">'
        + _select("days", [(str(d), f"last {d} days") for d in PERIODS], str(query.days), "Period")
        + _select(
            "tenant",
            [("", "all tenants")] + [(t["id"], t["name"]) for t in data.tenants],
            query.tenant_id or "",
            "Tenant",
        )
        + _select("zone", [(z, z) for z in TIME_ZONES], query.zone, "Time zone")
        + '<button type="submit">Show</button></form>'
        + f'<p class="note">{e(query.first_day.isoformat())} to {e(query.today.isoformat())}'
        f" ({e(query.zone)} days). Money in US dollars; calls of models without a price"
        " count as calls and tokens but not as cost.</p>"
    )

    # Cost per day, stacked by model (models with a priced call in the period).
    by_model: dict[str, dict[date, dict[str, Any]]] = defaultdict(dict)
    for row in data.usage:
        by_model[row["model_name"]][row["day"]] = row
    cost = go.Figure()
    unpriced_calls = 0
    for model in sorted(by_model):
        rows = by_model[model]
        unpriced_calls += sum(r["calls"] - r["costed_calls"] for r in rows.values())
        if not any(r["cost_microcents"] is not None for r in rows.values()):
            continue
        values = [_usd(rows[d]["cost_microcents"] or 0) if d in rows else 0.0 for d in days]
        labels = [dollars(rows[d]["cost_microcents"]) if d in rows else "$0.0000" for d in days]
        cost.add_bar(
            x=days, y=values, name=model, customdata=labels,
            hovertemplate="%{x}<br>" + e(model) + ": %{customdata}<extra></extra>",
        )
    cost.update_layout(
        barmode="stack",
        title="Cost per day by model",
        xaxis_title=f"Day ({query.zone})",
        yaxis_title="Cost (US dollars)",
        yaxis_tickprefix="$",
    )

    tokens = go.Figure()
    for kind, label in [
        ("input_tokens", "input"),
        ("cache_read_tokens", "cache read"),
        ("cache_write_tokens", "cache write"),
        ("output_tokens", "output"),
    ]:
        per_day: dict[date, int] = defaultdict(int)
        for row in data.usage:
            per_day[row["day"]] += row[kind]
        tokens.add_bar(x=days, y=[per_day.get(d, 0) for d in days], name=label)
    tokens.update_layout(
        barmode="stack", title="Tokens per day by kind",
        xaxis_title=f"Day ({query.zone})", yaxis_title="Tokens",
    )

    calls = go.Figure()
    for model in sorted(by_model):
        rows = by_model[model]
        calls.add_bar(x=days, y=[rows[d]["calls"] if d in rows else 0 for d in days], name=model)
    calls.update_layout(
        barmode="stack", title="Calls per day by model",
        xaxis_title=f"Day ({query.zone})", yaxis_title="Calls",
    )

    top = go.Figure()
    priced_top = [row for row in data.top_skills if row["cost_microcents"] is not None]
    top.add_bar(
        y=[f"{row['skill_name']} ({row['tenant_name']})" for row in reversed(priced_top)],
        x=[_usd(row["cost_microcents"]) for row in reversed(priced_top)],
        customdata=[dollars(row["cost_microcents"]) for row in reversed(priced_top)],
        orientation="h",
        hovertemplate="%{y}: %{customdata}<extra></extra>",
    )
    top.update_layout(
        title="Skills that cost the most", xaxis_title="Cost in the period (US dollars)",
        xaxis_tickprefix="$", yaxis_title="Skill (tenant)", yaxis_automargin=True,
    )
    top_table = _table(
        ["Skill", "Tenant", "Cost", "Calls", "Unpriced calls"],
        [
            [
                e(row["skill_name"]), e(row["tenant_name"]), dollars(row["cost_microcents"]),
                f"{row['calls']:,}", f"{row['calls'] - row['costed_calls']:,}",
            ]
            for row in data.top_skills
        ],
        {2, 3, 4},
        "top-skills",
    )

    feedback = go.Figure()
    by_type: dict[str, dict[date, int]] = defaultdict(dict)
    for row in data.feedback:
        by_type[row["feedback_type"]][row["day"]] = row["items"]
    for kind in sorted(by_type):
        feedback.add_bar(x=days, y=[by_type[kind].get(d, 0) for d in days], name=kind)
    feedback.update_layout(
        barmode="stack", title="Feedback per day by type (dismissed left out)",
        xaxis_title=f"Day ({query.zone})", yaxis_title="Feedback items",
    )

    share = go.Figure()
    by_skill: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in data.positive_share:
        by_skill[(row["skill_name"], row["skill_id"])].append(row)
    for (name, _skill_id), skill_rows in sorted(by_skill.items()):
        rows_ = skill_rows
        share.add_scatter(
            x=[r["day"] for r in rows_],
            y=[round(100 * r["up"] / r["thumbs"], 1) for r in rows_],
            customdata=[f"{r['up']} of {r['thumbs']}" for r in rows_],
            mode="lines+markers", name=name,
            hovertemplate="%{x}<br>" + e(name) + ": %{y}% (%{customdata} thumbs up)<extra></extra>",
        )
    share.update_layout(
        title="Positive share of thumbs per skill and day", xaxis_title=f"Day ({query.zone})",
        yaxis_title="Thumbs up (% of thumbs)", yaxis_range=[0, 105], yaxis_ticksuffix="%",
    )

    queue = _table(
        ["Tenant", "Skill", "Pending"],
        [
            [
                e(row["tenant_name"]),
                f'<a href="{e(feedback_list_link(row["tenant_id"], row["skill_id"]))}">'
                f"{e(row['skill_name'])}</a>",
                f"{row['pending']:,}",
            ]
            for row in data.review_queue
        ],
        {2},
        "review-queue",
    )
    runs = _table(
        ["Run", "Tenant", "Skill", "Status", "Best model", "Cheapest model", "Created"],
        [
            [
                f'<a href="{e(run_path(row["id"]))}">compare</a>',
                e(row["tenant_name"]),
                e(row["skill_name"]),
                e(row["status"]),
                e(f"{row['best_model']} (quality {row['best_quality_score']})")
                if row["best_model"] else "",
                e(f"{row['cheapest_model']} ({dollars(row['cheapest_cost_microcents'], places=CASE_PLACES)} a case)")
                if row["cheapest_model"] else "",
                e(row["created_at"].strftime("%Y-%m-%d %H:%M UTC")),
            ]
            for row in data.recent_runs
        ],
        set(),
        "recent-runs",
    )
    total_cost = sum(
        (row["cost_microcents"] for row in data.usage if row["cost_microcents"] is not None), 0
    )
    total_calls = sum(row["calls"] for row in data.usage)
    summary = (
        f'<p id="totals">Cost <strong>{dollars(total_cost) if total_calls > unpriced_calls else "unpriced"}'
        f"</strong> over <strong>{total_calls:,}</strong> calls"
        f" ({unpriced_calls:,} unpriced).</p>"
    )
    return (
        form
        + summary
        + '<div class="grid">'
        + _chart(cost, "cost-chart")
        + _chart(tokens, "tokens-chart")
        + _chart(calls, "calls-chart")
        + _chart(top, "top-skills-chart")
        + _chart(feedback, "feedback-chart")
        + _chart(share, "share-chart")
        + "</div><h2>Skills that cost the most</h2>"
        + top_table
        + "<h2>Review queue (pending feedback)</h2>"
        + (queue if data.review_queue else "<p>Nothing waits for review.</p>")
        + "<h2>Recent benchmark runs</h2>"
        + runs
    )


async def overview_page(request: Request) -> Response:
    params = request.query_params
    try:
        query = overview_query(
            days=params.get("days"), tenant=params.get("tenant"), zone=params.get("zone")
        )
        data = await overview(query)
    except ValidationError as error:
        return HTMLResponse(
            f"<p>{html.escape(error.field)}: {html.escape(error.reason)}</p>"
            f'<p><a href="{OVERVIEW_PATH}">Back to the overview</a></p>',
            status_code=400,
        )
    return _page("Overview", render_overview(data))


async def comparison_page(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    try:
        comparison = await run_comparison(run_id)
    except NotFoundError:
        return HTMLResponse(
            f"<p>No benchmark run has the id {html.escape(run_id)}.</p>", status_code=404
        )
    run = comparison.run
    e = html.escape

    def number(value: Any, places: int = 1, suffix: str = "") -> str:
        return "" if value is None else f"{float(value):,.{places}f}{suffix}"

    table = _table(
        ["Model", "Results", "Errors", "Avg quality", "Matches expected", "Latency p50",
         "Latency p95", "Avg cost"],
        [
            [
                e(m.model_name), str(m.results), str(m.errors), number(m.avg_quality),
                number(None if m.match_share is None else 100 * m.match_share, 0, "%"),
                number(m.latency_p50_ms, 0, " ms"), number(m.latency_p95_ms, 0, " ms"),
                dollars(m.avg_cost_microcents, places=CASE_PLACES),
            ]
            for m in comparison.models
        ],
        {1, 2, 3, 4, 5, 6, 7},
        "per-model",
    )
    chart = go.Figure()
    for m in comparison.models:
        picks = [
            label
            for label, model in [("best", run["best_model"]), ("cheapest", run["cheapest_model"])]
            if model == m.model_name
        ]
        if m.avg_cost_microcents is None or m.avg_quality is None:
            continue
        chart.add_scatter(
            x=[_usd(m.avg_cost_microcents)],
            y=[float(m.avg_quality)],
            name=m.model_name + (f" ({' and '.join(picks)})" if picks else ""),
            mode="markers+text", cliponaxis=False,
            text=[m.model_name + (f" ★ {' and '.join(picks)}" if picks else "")],
            textposition="top center",
            marker={"size": 18 if picks else 11, "symbol": "star" if picks else "circle"},
            customdata=[dollars(m.avg_cost_microcents, places=CASE_PLACES)],
            hovertemplate=e(m.model_name) + "<br>quality %{y:.1f}<br>%{customdata} a case<extra></extra>",
        )
    chart.update_layout(
        title="Average quality against average cost per model (picks starred)",
        xaxis_title="Average cost of a case (US dollars)", xaxis_tickprefix="$",
        xaxis_tickformat=f".{CASE_PLACES}f", xaxis_automargin=True,
        yaxis_title="Average quality (0-100)",
    )
    unpriced = [m.model_name for m in comparison.models if m.avg_cost_microcents is None]
    body = (
        f"<p>{e(run['skill_name'])} ({e(run['tenant_name'])}), {e(run['status'])};"
        f" created {e(run['created_at'].strftime('%Y-%m-%d %H:%M UTC'))}."
        f" Best: <strong>{e(run['best_model'] or '-')}</strong>; cheapest: <strong>"
        f"{e(run['cheapest_model'] or '-')}</strong>"
        f" ({dollars(run['cheapest_cost_microcents'], places=CASE_PLACES) if run['cheapest_model'] else '-'} a case).</p>"
        + table
        + (
            f'<p class="note">Unpriced (not on the chart): {e(", ".join(unpriced))}.</p>'
            if unpriced else ""
        )
        + _chart(chart, "quality-cost-chart")
        + f'<p><a href="/#/benchmark_runs/{e(run["id"])}/">The run in the admin</a></p>'
    )
    return _page("Benchmark run comparison", body)


@lru_cache(maxsize=1)
def _plotly_js() -> bytes:
    script: str = get_plotlyjs()
    return script.encode()


async def plotly_js(request: Request) -> Response:
    return Response(
        _plotly_js(),
        media_type="text/javascript",
        headers={"Cache-Control": "private, max-age=86400"},
    )


def _to_login(connection: HTTPConnection, error: Exception) -> Response:
    return RedirectResponse(LOGIN_PATH, status_code=303)


def overview_routes(*, increase_expiry: timedelta | None = timedelta(minutes=20)) -> list[BaseRoute]:
    """The pages' routes, behind the admin's session (see the contract)."""
    pages = Router(
        routes=[
            Route(PLOTLY_PATH, plotly_js, methods=["GET"]),
            Route(OVERVIEW_PATH, overview_page, methods=["GET"]),
            Route("/runs/{run_id}/", comparison_page, methods=["GET"]),
        ]
    )
    guarded = AuthenticationMiddleware(
        pages,
        backend=SessionsAuthBackend(
            auth_table=StaffUser,
            session_table=SessionsBase,
            admin_only=True,
            active_only=True,
            increase_expiry=increase_expiry,
        ),
        on_error=_to_login,
    )
    return [
        Route(path, guarded, methods=["GET"])
        for path in (PLOTLY_PATH, OVERVIEW_PATH, "/runs/{run_id}/")
    ]


#: The id of the link to a run's comparison that the shell script adds to a
#: benchmark run's page in the admin.
RUN_LINK_ID = "run-comparison-link"

#: Sent with the admin's single-page shell (see :func:`extend_shell`). The
#: admin's router moves with ``history.pushState``, which fires no event, so
#: the script looks at the route again whenever the page changes (a
#: ``MutationObserver`` on the document), on ``hashchange`` and on
#: ``popstate``.
SHELL_SCRIPT = f"""<script>
(function () {{
  var OVERVIEW = "{OVERVIEW_PATH}";
  var RUN = /^#\\/benchmark_runs\\/([^\\/?#]+)\\/?(?:[?].*)?$/;
  function follow() {{
    var hash = location.hash;
    if (hash === "" || hash === "#" || hash === "#/") {{
      location.replace(OVERVIEW);
      return;
    }}
    var match = RUN.exec(hash);
    var link = document.getElementById("{RUN_LINK_ID}");
    if (!match || match[1] === "add") {{
      if (link) link.remove();
      return;
    }}
    var target = "/runs/" + match[1] + "/";
    if (!document.body) return;
    if (!link) {{
      link = document.createElement("a");
      link.id = "{RUN_LINK_ID}";
      link.textContent = "Compare this run's models";
      link.title = "The run's results per model, in dollars, with a chart of quality against cost";
      link.style.cssText = "position:fixed;right:1.5rem;bottom:1.5rem;z-index:1000;" +
        "padding:.6rem 1rem;border-radius:4px;background:#2d6cdf;color:#fff;" +
        "font:600 14px system-ui,sans-serif;text-decoration:none;" +
        "box-shadow:0 2px 6px rgba(0,0,0,.25)";
      document.body.appendChild(link);
    }}
    if (link.getAttribute("href") !== target) link.setAttribute("href", target);
  }}
  follow();
  window.addEventListener("hashchange", follow);
  window.addEventListener("popstate", follow);
  function watch() {{
    follow();
    new MutationObserver(follow).observe(document.body, {{ childList: true, subtree: true }});
  }}
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
  else watch();
}})();
</script>"""


def extend_shell(admin: Any) -> None:
    """Staff land on the overview, and each benchmark run's page in the admin
    links to the run's comparison.

    Piccolo Admin 1.14 has no setting for either: its single-page app opens
    on its home route (and goes there after a login), and its lists and row
    pages have no per-row link hook (``TableConfig``'s ``link_column`` only
    chooses which column links to the row's own page; a foreign key links
    to the row it points at; ``sidebar_links`` are fixed; a custom form
    cannot be pre-filled). Its shell is the ``template`` attribute of the
    ``AdminRouter`` (a public attribute, the text of its ``index.html``);
    this adds :data:`SHELL_SCRIPT` to it, which

    - sends the home route (``#/``, where Piccolo Admin says "Select a table
      in the sidebar") to the overview;
    - on a run's page (``#/benchmark_runs/<id>/``, Piccolo Admin's
      ``editRow`` route, which the run's id in the list links to) shows a
      link, ``#run-comparison-link``, to ``/runs/<id>/``. It is a fixed
      element of the document, outside the admin's own markup, so no change
      of that markup can break it.

    The admin's other pages are untouched. ``tests/test_overview_pages.py``
    fails if the shell or the routes change underneath, and the browser test
    follows both in Chromium.
    """
    template = admin.template
    if "</head>" not in template:
        raise RuntimeError("Piccolo Admin's shell has no </head>: its index.html changed")
    admin.template = template.replace("</head>", SHELL_SCRIPT + "</head>", 1)
