"""
The main job: ``python main.py``.

Starts the database (the embedded PostgreSQL, or the server ``DATABASE_URL``
names), applies every migration, makes sure an admin login exists, and serves
the Piccolo Admin with uvicorn on 127.0.0.1:8000 (``--host`` and ``--port``, or
``EVERYSKILL_HOST`` and ``EVERYSKILL_PORT``). Ctrl-C or SIGTERM shuts it down
cleanly, and the embedded server with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from types import FrameType

import uvicorn
from piccolo.apps.migrations.commands.forwards import run_forwards

from everyskill.admin import AdminLogin, create_app, ensure_admin_user


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
        help="secure cookies and production error pages (also EVERYSKILL_PRODUCTION=1)",
    )
    return parser.parse_args(argv)


async def prepare() -> AdminLogin:
    """Apply the migrations of every app, then make sure an admin can log in."""
    result = await run_forwards(app_name="all")
    if not result.success:
        raise SystemExit(f"Migrations failed: {result.message}")
    return await ensure_admin_user()


def stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM is how this service is asked to stop: exit normally, so that
    the embedded server is stopped too. uvicorn handles SIGTERM itself while it
    serves, shuts down gracefully, then passes the signal on to this handler."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop)
    login = asyncio.run(prepare())
    print(f"\nEverySkill admin: http://{args.host}:{args.port}/", flush=True)
    if login.password is not None:
        print(f"  log in as {login.username!r} with password {login.password!r}")
        print(f"  (kept in {login.source})", flush=True)
    else:
        print(f"  log in as {login.username!r} with the password in {login.source}")
    uvicorn.run(create_app(production=args.production), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
