"""
PgBouncer in front of the test server: Debian's ``pgbouncer`` (1.18), run by
the tests as a process of their own, with their own configuration in a
temporary directory. The system's service of the package is neither used nor
touched.

Contract
--------
- :func:`pgbouncer_binary` is the ``pgbouncer`` on ``PATH``, or Debian's
  ``/usr/sbin/pgbouncer``. When there is none it raises ``AssertionError``
  saying how to install it (``scripts/test.sh`` installs it).
- :func:`running_pgbouncer` starts one for the application's login URL (the
  ``everyskill_api`` login of the scratch database), yields a
  :class:`PgBouncer`, and stops it when the block ends, however it ends.
  - It listens on 127.0.0.1, on a free port, and on no Unix socket.
  - ``pool_mode = transaction``: a client holds a server connection for one
    transaction (or one statement outside a transaction), then any other
    client may get it.
  - Two databases, both the scratch database: :attr:`PgBouncer.database`
    (its own name) with a server pool of ``pool_size`` connections, and
    :attr:`PgBouncer.single` with one server connection, so that a test
    knows which server connection the next client gets.
  - Clients log in with the login's password (``auth_type =
    scram-sha-256``; the password is in an ``auth_file`` of mode 0600).
    PgBouncer logs into PostgreSQL as the same user and, when the server
    asks for a password (the embedded server trusts local connections and
    does not), with that password.
  - No start-up parameter other than the four PgBouncer tracks is accepted
    (``ignore_startup_parameters`` is empty), as in PgBouncer's default.
  - PgBouncer's default for transaction pooling: no reset between clients
    (``server_reset_query`` is not run). With ``reset_always=True`` it runs
    ``DISCARD ALL`` each time a client gives a server connection back
    (``server_reset_query_always = 1``).
  - PgBouncer refuses to run as root: as root it is started with ``-u`` as
    the user that owns the server's socket directory (who can reach the
    socket), or ``nobody`` for a server on TCP.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.support import free_port

DEBIAN_BINARY = "/usr/sbin/pgbouncer"


def pgbouncer_binary() -> str:
    """The pgbouncer executable; see the module's contract."""
    found = shutil.which("pgbouncer") or (DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None)
    if found is None:
        raise AssertionError(
            "The PgBouncer tests need pgbouncer: install Debian's package"
            " (apt-get install pgbouncer); scripts/test.sh installs it when it runs as root"
            " or with password-less sudo."
        )
    return found


@dataclass(frozen=True)
class ServerAddress:
    """Where a PostgreSQL URL points, and as whom: what PgBouncer needs."""

    host: str
    port: int
    database: str
    user: str
    password: str

    @classmethod
    def of(cls, url: str) -> ServerAddress:
        parts = urlsplit(url)
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        host = query.get("host") or parts.hostname or "/var/run/postgresql"
        port = int(query.get("port") or parts.port or 5432)
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        database = unquote(parts.path.lstrip("/")) or user
        if not user or not password:
            raise AssertionError(
                f"the application's URL must name its user and password for PgBouncer's"
                f" auth_file, got {parts._replace(netloc=parts.hostname or '').geturl()!r}"
            )
        return cls(host, port, database, user, password)

    @property
    def on_unix_socket(self) -> bool:
        return self.host.startswith("/")


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer; see the module's contract."""

    port: int
    user: str
    password: str
    #: The database with a pool of ``pool_size`` server connections.
    database: str
    #: The same database with a single server connection.
    single: str
    #: When it was started (``time.time()``).
    started_at: float

    def url(self, database: str | None = None) -> str:
        """The URL of ``database`` (by default :attr:`database`) through PgBouncer."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(database or self.database, safe='')}"
        )


def _libpq_value(value: str) -> str:
    """``value`` quoted for a libpq connection string (PgBouncer's [databases])."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _userlist_value(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _run_as(server: ServerAddress) -> str | None:
    """The user PgBouncer switches to (``-u``), when started as root."""
    if os.geteuid() != 0:
        return None
    if server.on_unix_socket:
        owner = pwd.getpwuid(os.stat(server.host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


def _configuration(
    server: ServerAddress, port: int, pool_size: int, single: str, directory: Path, reset_always: bool
) -> str:
    target = (
        f"host={_libpq_value(server.host)} port={server.port} dbname={_libpq_value(server.database)}"
    )
    return f"""\
[databases]
{server.database} = {target} pool_size={pool_size}
{single} = {target} pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
ignore_startup_parameters =
query_wait_timeout = 60
server_reset_query = DISCARD ALL
server_reset_query_always = {int(reset_always)}
"""


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"pgbouncer exited with {process.returncode}:\n{log.read_text(errors='replace')}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"pgbouncer did not listen on port {port} within {timeout} s")


@contextmanager
def running_pgbouncer(
    app_url: str, *, pool_size: int = 3, reset_always: bool = False
) -> Iterator[PgBouncer]:
    """Run PgBouncer in front of ``app_url``'s server; see the module's contract."""
    binary = pgbouncer_binary()
    server = ServerAddress.of(app_url)
    single = f"{server.database}_single"
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="everyskill-pgbouncer-"))
    try:
        userlist = directory / "userlist.txt"
        userlist.write_text(f"{_userlist_value(server.user)} {_userlist_value(server.password)}\n")
        userlist.chmod(0o600)
        ini = directory / "pgbouncer.ini"
        ini.write_text(_configuration(server, port, pool_size, single, directory, reset_always))
        command = [binary]
        user = _run_as(server)
        if user is not None:
            command += ["-u", user]
            for path in (directory, userlist, ini):
                shutil.chown(path, user)
        log = directory / "pgbouncer.log"
        started_at = time.time()
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*command, str(ini)], stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            _wait_until_listening(port, process, log)
            yield PgBouncer(port, server.user, server.password, server.database, single, started_at)
        finally:
            # SIGTERM is PgBouncer's immediate shutdown: it does not wait for
            # clients a failed test left in a transaction.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
