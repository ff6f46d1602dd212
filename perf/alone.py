"""One benchmark module run alone: ``python -m perf.<module>``.

Contract
--------
:func:`run_alone` does for one module what ``python -m perf`` does for all:
it creates a scratch database ``everyskill_perf_<pid>`` on the server
(``DATABASE_URL``'s, or else the embedded PostgreSQL), migrates it, points
the owner's and the application's logins at it (``DATABASE_URL`` and
``EVERYSKILL_APP_DATABASE_URL``), runs the module's ``measure`` coroutine
(given the database URL and the scale's name), prints the figures with
their notes, details and checks, and drops the database whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

from perf.harness import Figure


def run_alone(
    prog: str, measure: Callable[[str, str], Coroutine[Any, Any, list[Figure]]], argv: list[str] | None
) -> int:
    """Run ``measure`` on a scratch database (see the module's contract)."""
    from everyskill import embedded_db
    from everyskill.database import (
        APP_URL_VARIABLE,
        app_database_url,
        create_database,
        database_url,
        drop_database,
        with_database,
    )
    from perf.__main__ import _migrate
    from perf.context import SCALES
    from perf.report import text_table

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    args = parser.parse_args(argv)
    server = database_url()
    embedded = not any(
        os.environ.get(variable, "").strip() for variable in ("DATABASE_URL", APP_URL_VARIABLE)
    )
    server_app = app_database_url()
    name = f"everyskill_perf_{os.getpid()}"
    asyncio.run(create_database(server, name))
    url = with_database(server, name)
    try:
        _migrate(url)
        if embedded:
            embedded_db.set_app_password()
        os.environ["DATABASE_URL"] = url
        os.environ[APP_URL_VARIABLE] = with_database(server_app, name)
        figures: list[Figure] = asyncio.run(measure(url, args.scale))
    finally:
        asyncio.run(drop_database(server, name))
    print(text_table(figures))
    for figure in figures:
        print(f"{figure.key}: {'; '.join(figure.notes)}")
        print(f"{figure.key} details: {figure.details}; checks: {figure.checks}")
    return 0
