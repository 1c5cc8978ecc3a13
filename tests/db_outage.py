"""A real database outage for tests: a TCP proxy in front of Postgres that can be cut.

The shared Postgres server must never be stopped; the proxy gives a worker the
same view of an outage (every open connection reset, new ones refused) while
the server itself keeps running for the other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from tests.smtp_servers import free_port


class PostgresProxy:
    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self.dsn = urlunsplit(parts._replace(netloc=self._netloc(parts.username)))
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def _netloc(self, user: str | None) -> str:
        return f"{user + '@' if user else ''}127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Accept connections and pass them through to Postgres."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """The outage: reset every open connection and refuse new ones."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        """Cut for good, waiting for the listening socket to close."""
        server = self.server
        await self.cut()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self.writers.difference_update((writer, up_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
