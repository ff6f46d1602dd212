"""
A stand-in for a PostgreSQL server that is starting, shutting down or full:
it speaks the start of the wire protocol (it declines SSL and GSS
encryption) and answers every connection's start-up message with a FATAL
error of the given SQLSTATE, as the real server does in those states
(57P03 starting up, 57P01 shutting down, 53300 too many clients). No
query ever reaches it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104


def _fatal(code: str, message: str) -> bytes:
    fields = b"SFATAL\0VFATAL\0C" + code.encode() + b"\0M" + message.encode() + b"\0\0"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


@asynccontextmanager
async def refusing_server(code: str, message: str) -> AsyncIterator[str]:
    """Serve on a free local port; yield a connection URL of the application's login."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = struct.unpack("!I", await reader.readexactly(4))[0]
                body = await reader.readexactly(length - 4)
                if struct.unpack("!I", body[:4])[0] in (_SSL_REQUEST, _GSS_REQUEST):
                    writer.write(b"N")
                    await writer.drain()
                    continue
                writer.write(_fatal(code, message))
                await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"postgresql://everyskill_api:x@127.0.0.1:{port}/everyskill"
    finally:
        server.close()
        await server.wait_closed()
