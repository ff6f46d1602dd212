"""``main.py`` serving the admin and the API on the benchmark database, the HTTP
baseline app, and a client of the admin.

Contract
--------
- :func:`served_main` runs ``main.py`` (no sample data) on a free port of
  127.0.0.1, on the given database (both its logins), with a staff login
  made for the benchmarks, waits until it answers, and yields the
  :class:`Served` process; SIGTERM stops it at the end. Its output goes to
  a file, shown if it fails to start.
- :func:`served_baseline` runs the HTTP benchmarks' baseline app
  (:mod:`perf.raw_http`) the same way: uvicorn with ``main.py``'s settings,
  on a free port, on the given database, writing for the given tenant.
- :class:`RssWatch` samples the resident memory of the process every few
  milliseconds in a thread, and keeps the peak.
- :func:`staff_client` is an httpx client logged in to the admin, holding
  the CSRF token, as the admin's front end is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from everyskill.database import environment_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
USERNAME = "benchmarks"
PASSWORD = "a long benchmark password"


@dataclass
class Served:
    base_url: str
    process: subprocess.Popen[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served_main(database_url: str) -> Iterator[Served]:
    with tempfile.TemporaryDirectory(prefix="everyskill-perf-") as scratch:
        with _serve(
            ["main.py", "--no-sample-data"],
            {
                "EVERYSKILL_ADMIN_USERNAME": USERNAME,
                "EVERYSKILL_ADMIN_PASSWORD": PASSWORD,
                "EVERYSKILL_ADMIN_CREDENTIALS": str(Path(scratch) / "credentials.json"),
            },
            database_url,
            "/",
            Path(scratch),
        ) as served:
            yield served


@contextmanager
def served_baseline(database_url: str, tenant_id: str) -> Iterator[Served]:
    from perf.raw_http import TENANT_VARIABLE

    with tempfile.TemporaryDirectory(prefix="everyskill-perf-") as scratch:
        with _serve(
            ["-m", "perf.raw_http"],
            {TENANT_VARIABLE: tenant_id},
            database_url,
            "/openapi.json",
            Path(scratch),
        ) as served:
            yield served


@contextmanager
def _serve(
    arguments: list[str], extra: dict[str, str], database_url: str, ready: str, scratch: Path
) -> Iterator[Served]:
    """``python ARGUMENTS --port N`` on a free port, until ``ready`` answers 200."""
    port = _free_port()
    env = {
        **os.environ,
        # Both logins (the owner's and everyskill_api) on that database.
        **environment_for(database_url),
        **extra,
        "PYTHONUNBUFFERED": "1",
    }
    log_path = scratch / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, *arguments, "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_served(base, ready, process, log_path)
        yield Served(base, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_served(
    base: str, ready: str, process: subprocess.Popen[str], log_path: Path
) -> None:
    command = " ".join(str(part) for part in process.args)  # type: ignore[union-attr]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}{ready}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{command} did not serve {base} in time:\n{log_path.read_text()}")


class RssWatch:
    """The peak resident memory of a process, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self.now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def now(self) -> int:
        """Resident memory in bytes, now."""
        return int(self._process.memory_info().rss)

    def reset_peak(self) -> None:
        self.peak = self.now()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak = max(self.peak, self.now())
            except psutil.Error:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@asynccontextmanager
async def staff_client(base_url: str, connections: int = 1) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        await client.get("/")
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        response = await client.post(
            "/public/login/", json={"username": USERNAME, "password": PASSWORD}
        )
        response.raise_for_status()
        yield client
