"""
Helpers of the HTTP API's tests: the served app (uvicorn in a process of
its own, on a free port, on the tests' scratch database) and API keys of
real tenants; proxies that cut a client's connection after its request
reached the server, and that count database round trips.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from everyskill.api_keys import SCOPES, create_api_key
from everyskill.server import IMPORT_STRING
from tests.support import PROJECT_ROOT, TenantRows, free_port, make_tenant

ALL_SCOPES = ",".join(SCOPES)
PROBLEM = "application/problem+json"


@dataclass
class Served:
    """A running server: its base URL and its log file."""

    base: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def served(log: Path, env: Mapping[str, str] | None = None, *args: str) -> Iterator[Served]:
    """uvicorn serving the server app (API and admin) in a process of its own."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", IMPORT_STRING, "--factory",
             "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Served(f"http://127.0.0.1:{port}", log, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited:\n{server.log_text()}")
            try:
                if httpx.get(f"{server.base}/v1/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{server.log_text()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Tenant:
    """A tenant's rows and a key with every scope."""

    rows: TenantRows
    slug: str
    key: str

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


async def tenant_with_key(owner: asyncpg.Connection, label: str) -> Tenant:
    rows = await make_tenant(owner, label)
    slug = await owner.fetchval("SELECT slug FROM tenants WHERE id = $1", rows.tenant_id)
    created = await create_api_key(rows.tenant_id, f"{label} tests", ALL_SCOPES)
    return Tenant(rows, slug, created.key)


async def add_skill(
    owner: asyncpg.Connection, tenant: Tenant, slug: str, *, archived: bool = False
) -> str:
    """A skill of ``tenant`` with ``slug`` (archived when asked); its id."""
    skill_id: str = await owner.fetchval(
        "INSERT INTO skills (tenant_id, slug, name, archived_at)"
        " VALUES ($1, $2, $2, CASE WHEN $3 THEN now() END) RETURNING id",
        tenant.rows.tenant_id,
        slug,
        archived,
    )
    return skill_id


def problem(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    """The problem of ``response``, checked to be of status and type ``name``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:everyskill:problem:{name}", body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def replayed(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The body of a create answered as a replay (nothing written)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("idempotent-replayed") == "true", response.headers
    body: dict[str, Any] = response.json()
    return body


class CuttingProxy:
    """A TCP proxy in front of the served app that forwards each request
    whole, waits until the server has begun to answer (so the write is
    committed: 2xx means committed), keeps that answer's first bytes in
    ``withheld``, and closes the client's connection without relaying it:
    a connection cut after the request reached the server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.withheld: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
            body = await reader.readexactly(int(length[1])) if length else b""
            up_writer.write(head + body)
            await up_writer.drain()
            self.withheld.append(await up_reader.read(65536))
        finally:
            up_writer.close()
            writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve on a free port; yield the proxy's base URL."""
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()
            await server.wait_closed()


class CountingProxy:
    """A Unix-socket proxy between a client and PostgreSQL that counts round
    trips: each time the client sends after the server has answered."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.round_trips = 0
        self._server_spoke = True
        #: When set, the server's next answer is not passed on: the proxy
        #: closes both sides instead (the server did the work; the client
        #: never hears of it).
        self.lose_answers = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.target)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, client: bool) -> None:
            try:
                while data := await source.read(65536):
                    if not client and self.lose_answers:
                        writer.close()
                        up_writer.close()
                        return
                    if client and self._server_spoke:
                        self.round_trips += 1
                    self._server_spoke = not client
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(
            pump(reader, up_writer, True), pump(up_reader, writer, False), return_exceptions=True
        )


@contextmanager
def forwarding(listen: str, target: str) -> Iterator[None]:
    """A TCP forwarder from ``listen``'s port to ``target``'s, in threads.

    Lets a client keep one address while the server behind it is down
    (outside the ``with``) and up (inside).
    """
    import socket
    import threading
    from urllib.parse import urlsplit

    source, destination = urlsplit(listen), urlsplit(target)
    listener = socket.create_server((source.hostname or "127.0.0.1", source.port or 80))
    listener.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for end in (a, b):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(
                (destination.hostname or "127.0.0.1", destination.port or 80)
            )
            for a, b in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=pipe, args=(a, b), daemon=True)
                thread.start()
                threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield
    finally:
        stop.set()
        acceptor.join()
        listener.close()
        for thread in threads:
            thread.join(timeout=5)
