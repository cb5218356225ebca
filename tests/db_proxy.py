"""A TCP proxy between a server under test and PostgreSQL, to take one test's database away.

Stopping the PostgreSQL server would take every other database on it away too. Through the proxy a
test can refuse new connections (the port stops listening: real ``ECONNREFUSED``), cut the open ones,
and let them through again. With ``hold_server_eof`` the proxy forwards what PostgreSQL sends but not
its closing of the connection, so the client sees a session's last message (a FATAL) on a socket that
stays open: the window in which a driver may take a dead connection for a live one, held open.

The proxy runs its own event loop in a thread, so it keeps forwarding while the test blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, hold_server_eof: bool = False) -> None:
        self.target = (target_host, target_port)
        self.hold_server_eof = hold_server_eof
        self.port = 0
        self.server_eofs = 0  # connections PostgreSQL has closed
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="db-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @classmethod
    @contextlib.contextmanager
    def to(cls, database_url: str, *, hold_server_eof: bool = False) -> Iterator[tuple[TcpProxy, str]]:
        """A running proxy to the server of ``database_url``, and that URL through the proxy."""
        parts = urlsplit(database_url)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or 5432, hold_server_eof=hold_server_eof)
        proxy.start()
        netloc = f"{parts.username}@" if parts.username else ""
        try:
            yield proxy, urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{proxy.port}"))
        finally:
            proxy.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        self._thread.start()
        self.resume()

    def resume(self) -> None:
        """Listen (again, on the same port) and forward new connections."""

        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._forward, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

        self._run(listen())

    def refuse(self) -> None:
        """Stop listening: new connections are refused by the operating system."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None

        self._run(stop())

    def cut(self) -> None:
        """Drop every open connection at once (a reset, not a polite close)."""

        async def abort() -> None:
            for writer in list(self._open):
                writer.transport.abort()
            self._open.clear()

        self._run(abort())

    def close(self) -> None:
        self.refuse()
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._open |= {client_writer, server_writer}
        await asyncio.gather(
            self._pipe(client_reader, server_writer, from_server=False),
            self._pipe(server_reader, client_writer, from_server=True),
        )
        self._open -= {client_writer, server_writer}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_server: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        if from_server:
            self.server_eofs += 1
            if self.hold_server_eof:
                return  # the client's socket stays open, as if the closing had not arrived yet
        writer.close()
