"""
The main job: ``python main.py``.

Starts the database (the embedded PostgreSQL, or the server ``DATABASE_URL``
names), applies every migration, creates the admin login when its user is
missing (and prints where its password is, never the password), loads the
sample data when the database has no tenant yet (``--no-sample-data``, or
``EVERYSKILL_SAMPLE_DATA=0``, skips it), and serves, on one port, the HTTP
API under ``/v1`` and the Piccolo Admin at ``/`` (:mod:`everyskill.server`)
with uvicorn on 127.0.0.1:8000 (``--host`` and ``--port``, or
``EVERYSKILL_HOST`` and ``EVERYSKILL_PORT``). ``--workers N`` (or
``EVERYSKILL_WORKERS``) runs N uvicorn worker processes; the migrations and
the sample data run once, in this process, before they start. Each line of
uvicorn's log names the process that wrote it (``[pid]``), so that an access
line says which worker answered. Behind HTTPS,
``--production`` makes the session cookie Secure and needs
``--allowed-host``. Ctrl-C or SIGTERM shuts it down cleanly, and the
embedded server with it.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import signal
from types import FrameType
from typing import Any

import uvicorn
from piccolo.apps.migrations.commands.forwards import run_forwards

from everyskill.admin import AdminLogin, ensure_admin_user
from everyskill.errors import ValidationError
from everyskill.database import DatabaseConfigurationError, app_engine, prepare_app_login
from everyskill.sample_data import load_sample_data
from everyskill.server import API_PREFIX, IMPORT_STRING, create_server_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--host", default=os.environ.get("EVERYSKILL_HOST", "127.0.0.1")
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("EVERYSKILL_PORT", "8000"))
    )
    parser.add_argument(
        "--production",
        action="store_true",
        default=os.environ.get("EVERYSKILL_PRODUCTION", "") == "1",
        help="secure cookies and production error pages, for serving over HTTPS"
        " (also EVERYSKILL_PRODUCTION=1); needs --allowed-host",
    )
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        default=[h.strip() for h in os.environ.get("EVERYSKILL_ALLOWED_HOSTS", "").split(",") if h.strip()],
        help="a host name the admin is served under, checked against the Referer"
        " of writes over HTTPS; repeatable (also EVERYSKILL_ALLOWED_HOSTS, comma-separated)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("EVERYSKILL_WORKERS", "1")),
        help="uvicorn worker processes serving the API and the admin (also EVERYSKILL_WORKERS)",
    )
    parser.add_argument(
        "--no-sample-data",
        dest="sample_data",
        action="store_false",
        default=os.environ.get("EVERYSKILL_SAMPLE_DATA", "1") != "0",
        help="do not load the sample data into an empty database (also EVERYSKILL_SAMPLE_DATA=0)",
    )
    return parser.parse_args(argv)


async def prepare(*, sample_data: bool = True) -> AdminLogin:
    """Apply the migrations of every app, make sure an admin can log in, and
    load the sample data if the database has no tenant yet."""
    result = await run_forwards(app_name="all")
    if not result.success:
        raise SystemExit(f"Migrations failed: {result.message}")
    try:
        await prepare_app_login()
    except DatabaseConfigurationError as problem:
        raise SystemExit(f"The application's database login: {problem}") from None
    try:
        login = await ensure_admin_user()
    except ValidationError as problem:
        raise SystemExit(f"The admin login: {problem}") from None
    if sample_data:
        from piccolo_conf import DB  # the owner's engine, on the server just migrated

        # The owner creates the tenants; the query API (the application's
        # login) writes the rest.
        await DB.start_connection_pool()
        await app_engine().start_connection_pool()
        try:
            loaded = await load_sample_data()
        finally:
            await app_engine().close_connection_pool()
            await DB.close_connection_pool()
        if loaded is not None:
            print(
                f"Loaded the sample data: {len(loaded.tenant_ids)} tenants,"
                f" {loaded.feedback} feedback items, {loaded.measurements} token"
                f" measurements, {loaded.benchmark_runs} benchmark runs.",
                flush=True,
            )
    return login


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, each line naming its process."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    formatters = config["formatters"]
    formatters["default"]["fmt"] = "%(levelprefix)s [%(process)d] %(message)s"
    formatters["access"]["fmt"] = (
        '%(levelprefix)s [%(process)d] %(client_addr)s - "%(request_line)s" %(status_code)s'
    )
    return config


def stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM is how this service is asked to stop: exit normally, so that
    the embedded server is stopped too. uvicorn handles SIGTERM itself while it
    serves, shuts down gracefully, then passes the signal on to this handler."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.workers < 1:
        raise SystemExit("--workers (EVERYSKILL_WORKERS) must be at least 1")
    try:
        # Checked here, once: each worker builds the same app from the environment.
        create_server_app(production=args.production, allowed_hosts=args.allowed_hosts)
    except ValueError as problem:
        raise SystemExit(str(problem)) from None
    # The workers read the options from the environment (server.app_from_environment).
    os.environ["EVERYSKILL_PRODUCTION"] = "1" if args.production else "0"
    os.environ["EVERYSKILL_ALLOWED_HOSTS"] = ",".join(args.allowed_hosts)
    signal.signal(signal.SIGTERM, stop)
    login = asyncio.run(prepare(sample_data=args.sample_data))
    print(f"\nEverySkill admin: http://{args.host}:{args.port}/", flush=True)
    for line in login.instructions():  # never the password: where it is
        print(f"  {line}", flush=True)
    print(
        f"EverySkill HTTP API: http://{args.host}:{args.port}{API_PREFIX}/"
        f" (documentation: {API_PREFIX}/docs)",
        flush=True,
    )
    uvicorn.run(
        IMPORT_STRING,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config(),
    )


if __name__ == "__main__":
    main()
