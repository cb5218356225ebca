"""Plain asyncpg connections beside SQLAlchemy's pool, for statements that must cost one round trip.

asyncpg prepares each statement once per connection and then runs it in one round trip, in autocommit
(a single statement is its own transaction), where SQLAlchemy's pool pings the connection on checkout
and its session wraps the statement in ``BEGIN`` and ``COMMIT``. Connections open on first use, up to
``size`` at once; one that saw an error or a cancellation is closed rather than reused, since it may be
mid-statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine


def asyncpg_url(engine: AsyncEngine) -> str:
    """The engine's URL as asyncpg expects it (no SQLAlchemy driver suffix)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class DirectConnections:
    def __init__(self, url: str, *, size: int, settings: dict[str, str] | None = None) -> None:
        self._url = url
        self._settings = dict(settings or {})  # server settings of every connection opened
        self._idle: list[asyncpg.Connection] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @classmethod
    def for_engine(
        cls, engine: AsyncEngine, *, size: int, settings: dict[str, str] | None = None
    ) -> DirectConnections:
        return cls(asyncpg_url(engine), size=size, settings=settings)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._slots:
            connection = self._idle.pop() if self._idle else await self._connect()
            healthy = False
            try:
                yield connection
                healthy = True
            finally:
                if healthy and not self._closed:
                    self._idle.append(connection)
                else:
                    connection.terminate()

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._url, server_settings=self._settings or None)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()
