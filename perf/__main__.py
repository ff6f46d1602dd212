"""``python -m perf``: run the benchmarks, print the figures, write the results.

Usage: ``python -m perf [--scale full|quick] [--out DIRECTORY] [--keep]``
(``scripts/perf.sh`` installs what is needed and runs it).

It creates a scratch database ``everyskill_perf_<pid>`` on the server
(``DATABASE_URL``'s, or else the embedded PostgreSQL), migrates it, points
the owner's and the application's logins at it (``DATABASE_URL`` and
``EVERYSKILL_APP_DATABASE_URL``, which must name ``everyskill_api`` on the
same server when ``DATABASE_URL`` is set), builds the data, runs every
benchmark against baselines measured in the same run (the query API through
its own engine, logged in as ``everyskill_api``, as an application runs it),
prints the table, writes ``results.json``, ``results.md`` and ``chart.png``
into the output directory (``perf/results`` by default), and drops the
database. The exit status is 0 when every benchmark ran, whether or not
its target was met: a missed target is a result, reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from everyskill import embedded_db
from everyskill.database import (
    APP_URL_VARIABLE,
    SERVER_SETTINGS,
    app_database_url,
    app_engine,
    create_database,
    database_url,
    drop_database,
    prepare_app_login,
    with_database,
)
from perf.context import SCALES, Context, Scale
from perf.harness import Figure
from perf.report import text_table, write

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ORDER = (
    "single_feedback",
    "single_feedback_triggers",
    "single_feedback_function",
    "single_feedback_transaction_scope",
    "http_feedback",
    "http_measurement_batch",
    "http_concurrent",
    "measurement_batch",
    "aggregate_read",
    "concurrent_writers",
    "rate_limit_single",
    "rate_limit_concurrent",
    "admin_list_first_page",
    "admin_list_filtered",
    "run_completion",
    "admin_memory",
    "overview_read",
    "overview_write",
)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _migrate(url: str) -> None:
    piccolo = Path(sys.executable).parent / "piccolo"
    subprocess.run(
        [str(piccolo), "migrations", "forwards", "all"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": url, "PYTHONWARNINGS": "ignore"},
        check=True,
        capture_output=True,
    )


async def _run(url: str, scale: Scale) -> tuple[list[Figure], dict[str, Any]]:
    # Imported once DATABASE_URL names the benchmark database: the tables
    # bind to piccolo_conf's engine (the owner's) when they are imported.
    from perf import (
        admin_memory,
        admin_pages,
        aggregate_read,
        concurrent_writers,
        http_api,
        measurement_batch,
        overview,
        rate_limits,
        run_completion,
        single_feedback,
    )
    from perf.data import SPAN_SECONDS, add_measurements, make_catalogue
    from perf.served import RssWatch, served_main, staff_client

    # The query API's engine (everyskill_api), started as an application
    # starts it; the tables stay bound to the owner's (piccolo_conf's).
    await prepare_app_login()
    engine = app_engine()
    # Room for the most clients of one benchmark at once (writers, and the
    # rate limits' 16 clients).
    await engine.start_connection_pool(min_size=1, max_size=max(scale.writers, 16) + 4)
    # The owner's engine, which the admin (and the overview) reads through.
    owner_engine = await overview.start_owner_pool()
    # The owner connects with the application's settings (piccolo_conf's).
    owner = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    figures: list[Figure] = []
    # Other work on the machine slows every figure: its load is a fact of the run.
    load_at_start = os.getloadavg()[0]
    try:
        context = Context(url, owner, await make_catalogue(owner), scale)
        # Spread over the 90 days, as the overview's big size will be (see
        # perf.overview): its small size is the run's first data.
        await add_measurements(
            owner,
            context.catalogue,
            scale.small_measurements,
            step=SPAN_SECONDS / scale.small_measurements,
        )
        await owner.execute("VACUUM ANALYZE")
        _say(f"the overview at {scale.small_measurements:,} measurements")
        overview_now = overview.busiest_now()
        overview_small = await overview.reads(context, scale.overview_reads, overview_now)
        with served_main(url) as served:
            watch = RssWatch(served.process.pid)
            started_rss = watch.now()
            async with staff_client(served.base_url) as client:
                _say(f"admin pages at {scale.small_measurements:,} measurements")
                small = await admin_pages.page_loads(client, context, scale.page_loads)
                for name, benchmark in (
                    ("one feedback through the API", single_feedback),
                    ("measurement batches", measurement_batch),
                    ("aggregate reads", aggregate_read),
                    ("concurrent writers", concurrent_writers),
                    ("rate limits", rate_limits),
                    ("run completion", run_completion),
                ):
                    _say(name)
                    figures += await benchmark.measure(context)
                _say("the HTTP API")
                figures += await http_api.measure(context, served.base_url)
                _say("one measurement with and without the overview's rollup")
                figures.append(await overview.writes(context))
                present = await owner.fetchval("SELECT count(*) FROM token_measurements")
                _say(f"adding measurements up to {scale.big_measurements:,}")
                await add_measurements(
                    owner, context.catalogue, max(0, scale.big_measurements - present)
                )
                await owner.execute("VACUUM ANALYZE token_measurements")
                big_size = await owner.fetchval("SELECT count(*) FROM token_measurements")
                _say(f"admin pages at {big_size:,} measurements")
                big = await admin_pages.page_loads(client, context, scale.page_loads)
            figures += admin_pages.figures(small, big, (scale.small_measurements, big_size))
            _say("the admin under load")
            figures.append(await admin_memory.measure(served, context, watch, started_rss))
            watch.stop()
        _say(f"adding measurements up to {scale.overview_big:,}")
        seconds = await overview.grow_to(context, scale.overview_big)
        _say(f"the overview at {scale.overview_big:,} measurements")
        overview_big = await overview.reads(
            context, scale.overview_reads, overview_now, raw_rounds=3
        )
        figures.insert(0, overview.read_figure(overview_small, overview_big, seconds))
        facts = {
            "scale": scale.name,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "PostgreSQL": await owner.fetchval("SHOW server_version"),
            "Python": platform.python_version(),
            "CPUs": os.cpu_count(),
            "machine": platform.machine(),
            "load average (1 min) at start and end": f"{load_at_start:.1f}, {os.getloadavg()[0]:.1f}",
        }
    finally:
        await owner.close()
        await owner_engine.close_connection_pool()
        await engine.close_connection_pool()
    figures.sort(key=lambda figure: ORDER.index(figure.key))
    return figures, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "perf" / "results")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch database afterwards, to look into it (drop it by hand)",
    )
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]

    started = time.monotonic()
    server = database_url()
    # Read before DATABASE_URL names the scratch database: the application's
    # login on this server (the embedded server's, or the setting; a clear
    # error when DATABASE_URL is set without it).
    embedded = not any(
        os.environ.get(variable, "").strip() for variable in ("DATABASE_URL", APP_URL_VARIABLE)
    )
    server_app = app_database_url()
    name = f"everyskill_perf_{os.getpid()}"
    asyncio.run(create_database(server, name))
    url = with_database(server, name)
    try:
        _say(f"migrating the scratch database {name}")
        _migrate(url)
        if embedded:
            # The migrations create the login; the embedded server keeps its password.
            embedded_db.set_app_password()
        os.environ["DATABASE_URL"] = url
        os.environ[APP_URL_VARIABLE] = with_database(server_app, name)
        figures, facts = asyncio.run(_run(url, scale))
    finally:
        if args.keep:
            _say(f"kept the scratch database {name}: {url}")
        else:
            asyncio.run(drop_database(server, name))
    facts["minutes"] = round((time.monotonic() - started) / 60, 1)
    print(text_table(figures))
    write(figures, facts, args.out)
    _say(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
