"""Where planned reads run: one statement, outside any transaction.

On PostgreSQL a small pool of plain asyncpg connections of its own (up to the app's pool size, opened
on first use): asyncpg prepares each statement once per connection and then runs it in one round
trip, in autocommit, where SQLAlchemy's pool would ping the connection on checkout and its session
would wrap the statement in BEGIN and COMMIT. On SQLite, a connection from the engine's pool, used
without the explicit BEGIN its sessions emit (the statement alone reads one snapshot).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine


class Reader(Protocol):
    dialect: str

    async def fetch_text(self, statement: str, params: list[Any]) -> str: ...

    async def close(self) -> None: ...


class PostgresReader:
    dialect = "postgresql"

    def __init__(self, url: str, *, size: int) -> None:
        self._url = url
        self._idle: list[asyncpg.Connection] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @classmethod
    def for_engine(cls, engine: AsyncEngine, *, size: int) -> PostgresReader:
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(url, size=size)

    async def fetch_text(self, statement: str, params: list[Any]) -> str:
        async with self._slots:
            connection = self._idle.pop() if self._idle else await asyncpg.connect(self._url)
            healthy = False
            try:
                text: str = await connection.fetchval(statement, *params)
                healthy = True
                return text
            finally:
                if healthy and not self._closed:
                    self._idle.append(connection)
                else:  # an error or a cancellation may leave the connection mid-statement
                    connection.terminate()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


class SqliteReader:
    dialect = "sqlite"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fetch_text(self, statement: str, params: list[Any]) -> str:
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            rows = await driver.execute_fetchall(statement, params)
        text: str = rows[0][0]
        return text

    async def close(self) -> None:
        return None


def reader_for(engine: AsyncEngine, *, pool_size: int) -> Reader:
    if engine.dialect.name == "sqlite":
        return SqliteReader(engine)
    return PostgresReader.for_engine(engine, size=pool_size)
