"""Where planned reads run: one statement, outside any transaction.

On PostgreSQL a small pool of plain asyncpg connections of its own (:mod:`pipegraph.db.direct`, up to
the app's pool size): one round trip per statement, in autocommit. On SQLite, a connection from the
engine's pool, used without the explicit BEGIN its sessions emit (the statement alone reads one snapshot).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from pipegraph.db.direct import DirectConnections


class Reader(Protocol):
    dialect: str

    async def fetch_text(self, statement: str, params: list[Any]) -> str: ...

    async def close(self) -> None: ...


class PostgresReader:
    dialect = "postgresql"

    def __init__(self, connections: DirectConnections) -> None:
        self._connections = connections

    @classmethod
    def for_engine(cls, engine: AsyncEngine, *, size: int) -> PostgresReader:
        return cls(DirectConnections.for_engine(engine, size=size))

    async def fetch_text(self, statement: str, params: list[Any]) -> str:
        async with self._connections.connection() as connection:
            text: str = await connection.fetchval(statement, *params)
            return text

    async def close(self) -> None:
        await self._connections.close()


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
