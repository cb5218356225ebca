"""Engine and sessions: one ``Store`` per application, built from settings (no module globals).

``store.read()`` gives a session for queries; ``store.write()`` gives a session inside a transaction
that commits on success and rolls back on any exception, so a failed mutation leaves nothing behind;
just before committing it writes the webhook events recorded on the session (the outbox).

SQLite needs care to let concurrent requests write without "database is locked": the connection
runs in WAL mode with a busy timeout, pysqlite's own transaction handling is switched off so we
emit ``BEGIN`` ourselves, write transactions start with ``BEGIN IMMEDIATE`` (taking the write lock
up front instead of failing when a reader upgrades), and writers in one process queue on an
asyncio lock rather than spinning on the database lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from pipegraph.db.availability import invalidate_broken_connections
from pipegraph.db.webhook_outbox import write_outbox
from pipegraph.settings import normalise_database_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Reads through a memory map instead of a read() call and a copy into SQLite's page cache per page:
# the metrics' index range scans take about a tenth less CPU. Address space, not memory: the mapped
# pages are the operating system's file cache (touched ones count in RSS as shared file pages). SQLite
# clamps the size to its compile-time limit (2 GiB in common builds); beyond it, pages are read as
# before. The price: an I/O error on a mapped page is a signal rather than an error code.
SQLITE_MMAP_SIZE = 1 << 34
_IMMEDIATE = "pipegraph_sqlite_immediate"
_AFTER_COMMIT = "pipegraph_after_commit"


def call_after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the ``store.write()`` transaction of ``session`` has committed (never if it
    rolls back). On SQLite it runs before the next writer of this process may start, so callbacks run
    in commit order."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def _run_after_commit(session: AsyncSession) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, ()):
        callback()


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event below decide how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_SIZE}")
    cursor.close()
    # SQLite's own lower() folds ASCII only; PostgreSQL's folds every letter: searches and source
    # filters find "Ünïcödé" alike on both.
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _sqlite_on_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(database_url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    url = normalise_database_url(database_url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    else:
        engine = create_async_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    invalidate_broken_connections(engine)
    return engine


class Store:
    """Owns the engine and hands out sessions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._read_sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        write_engine = engine.execution_options(**{_IMMEDIATE: True}) if self.is_sqlite else engine
        self._write_sessions = async_sessionmaker(write_engine, expire_on_commit=False, autoflush=False)
        # SQLite admits one writer at a time anyway; queueing here keeps waiting cheap and fair.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # Called after a commit that queued webhook deliveries (the dispatcher wakes at once).
        self.outbox_listeners: list[Callable[[], None]] = []

    @classmethod
    def from_url(cls, database_url: str, *, echo: bool = False, pool_size: int = 10) -> Store:
        return cls(create_engine(database_url, echo=echo, pool_size=pool_size))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        async with self._write_lock or contextlib.nullcontext(), self._write_sessions() as session:
            async with session.begin():
                yield session
                # Last, so the outbox holds every event the transaction recorded.
                outboxed = await write_outbox(session)
            _run_after_commit(session)
            if outboxed:
                self.wake_outbox()

    def wake_outbox(self) -> None:
        """Tell this process's dispatcher that deliveries are due now."""
        for listener in self.outbox_listeners:
            listener()

    async def dispose(self) -> None:
        await self.engine.dispose()
