"""``db.availability``: which real failures mean "the database is unavailable", and that a connection
left broken by a server-side termination is discarded, never used again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import InternalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db_proxy import TcpProxy
from pipegraph.api.auth import Authenticator
from pipegraph.db.availability import describe, is_unavailable
from pipegraph.db.session import Store, create_engine
from pipegraph.services.api_keys import KEY_PREFIX
from pipegraph.settings import normalise_database_url
from server_support import free_port

BROKEN_PROTOCOL = "another operation (2) is in progress"


async def failure_of(action: Callable[[], Awaitable[Any]]) -> BaseException:
    try:
        await action()
    except Exception as error:
        return error
    raise AssertionError("expected a failure")


async def select_one(store: Store) -> None:
    async with store.read() as session:
        await session.execute(text("SELECT 1"))


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_url.rpartition("/")[0] + "/postgres")
    try:
        yield connection
    finally:
        await connection.close()


async def terminate_backends(admin: asyncpg.Connection, database: str) -> int:
    terminated: int = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    return terminated


# Unavailable -------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_connection_refused_is_unavailable(postgres_url: str) -> None:
    store = Store.from_url(postgres_url.replace(":5432/", f":{free_port()}/"))
    try:
        error = await failure_of(lambda: select_one(store))
    finally:
        await store.dispose()
    assert is_unavailable(error), repr(error)
    assert "ConnectionRefusedError" in describe(error)


@pytest.mark.postgres
async def test_a_key_lookup_shared_by_concurrent_requests_is_unavailable_for_each(postgres_url: str) -> None:
    """Requests arriving together with one key share one lookup and so one error object; each must
    still see it as the database being away (a 503), not as a bug."""
    store = Store.from_url(postgres_url.replace(":5432/", f":{free_port()}/"))
    authenticator = Authenticator(store)
    try:
        outcomes = await asyncio.gather(
            *(authenticator.user_for(f"Bearer {KEY_PREFIX}0123456789abcdef") for _ in range(6)),
            return_exceptions=True,
        )
    finally:
        await store.dispose()
    errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(errors) == len(outcomes), outcomes
    for error in errors:
        assert is_unavailable(error), repr(error)
        assert describe(error).startswith("ConnectionRefusedError: "), describe(error)


@pytest.mark.postgres
async def test_database_not_accepting_connections_is_unavailable(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    database = postgres_url.rpartition("/")[2]
    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    store = Store.from_url(postgres_url)
    try:
        error = await failure_of(lambda: select_one(store))
    finally:
        await store.dispose()
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    assert is_unavailable(error), repr(error)


@pytest.mark.postgres
async def test_session_terminated_by_an_administrator_is_unavailable(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    store = Store.from_url(postgres_url)

    async def long_query() -> None:
        async with store.read() as session:
            await session.execute(text("SELECT pg_sleep(30)"))

    try:
        query = asyncio.create_task(failure_of(long_query))
        while not await terminate_backends(admin, postgres_url.rpartition("/")[2]):
            await asyncio.sleep(0.05)
        error = await asyncio.wait_for(query, 10)
    finally:
        await store.dispose()
    assert is_unavailable(error), repr(error)
    assert "terminating connection due to administrator command" in str(error)


@pytest.mark.postgres
async def test_pool_timeout_is_unavailable(postgres_url: str) -> None:
    engine = create_async_engine(
        normalise_database_url(postgres_url), pool_size=1, max_overflow=0, pool_timeout=0.1
    )
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            error = await failure_of(engine.connect)
    finally:
        await engine.dispose()
    assert is_unavailable(error), repr(error)


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'missing-directory' / 'db.sqlite3'}")
    try:
        error = await failure_of(lambda: select_one(store))
    finally:
        await store.dispose()
    assert is_unavailable(error), repr(error)


# Not unavailable: the database answered, and the fault is ours ----------------------------------


_ADD_USER = (
    "INSERT INTO users (name, email, role, active, created_at) "
    "VALUES ('A', 'a@example.com', 'ADMIN', true, CURRENT_TIMESTAMP)"
)


@pytest.mark.parametrize(
    "statements",
    [
        pytest.param(["SELECT * FROM no_such_table"], id="missing-table"),
        pytest.param(["SELEKT 1"], id="syntax"),
        pytest.param([_ADD_USER, _ADD_USER], id="unique-violation"),
    ],
)
async def test_database_errors_that_are_bugs_are_not_unavailable(store: Store, statements: list[str]) -> None:
    async def run() -> None:
        async with store.write() as session:
            for statement in statements:
                await session.execute(text(statement))

    error = await failure_of(run)
    assert not is_unavailable(error), repr(error)


async def test_errors_raised_by_the_application_are_not_unavailable(tmp_path: Path) -> None:
    async def too_slow() -> None:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    async def missing_file() -> None:
        (tmp_path / "missing").read_text()

    for action in (too_slow, missing_file):
        error = await failure_of(action)
        assert isinstance(error, OSError)
        assert not is_unavailable(error), repr(error)
    assert not is_unavailable(ValueError("bad input"))


# The cause of "another operation is in progress" --------------------------------------------------


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        pid: int = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        return pid


async def _transaction_ended_by_the_server(
    engine: AsyncEngine, proxy: TcpProxy, admin: asyncpg.Connection
) -> tuple[int, BaseException]:
    """A write transaction whose session PostgreSQL terminates between two statements (as a shutdown
    does); the FATAL reaches the client, the closing of its socket does not. The session's backend pid
    and the error of the second statement."""
    pids: list[int] = []

    async def write() -> None:
        async with engine.begin() as connection:
            pids.append((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await admin.execute("SELECT pg_terminate_backend($1)", pids[0])
            for _ in range(500):
                if proxy.server_eofs:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # let the client's protocol read the FATAL message
            await connection.execute(text("SELECT 2"))

    error = await failure_of(write)
    return pids[0], error


@pytest.mark.postgres
async def test_a_session_ended_mid_transaction_fails_with_another_operation_in_progress(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    """The reproduction, on an engine configured as before (no ``handle_error`` hook): asyncpg reads the
    FATAL while idle and is left "consuming an error" (protocol state 2), so the next statement fails
    with the message seen in production although nothing else uses the connection. SQLAlchemy does
    discard the connection; what was wrong is that the failure read as a bug (INTERNAL)."""
    with TcpProxy.to(postgres_url, hold_server_eof=True) as (proxy, url):
        engine = create_async_engine(normalise_database_url(url), pool_size=1, pool_pre_ping=True)
        try:
            _, error = await _transaction_ended_by_the_server(engine, proxy, admin)
        finally:
            proxy.cut()  # a held connection would keep the engine's polite close waiting
            await engine.dispose()
    assert isinstance(error, InternalError)
    assert BROKEN_PROTOCOL in str(error)
    assert error.connection_invalidated
    assert is_unavailable(error)


@pytest.mark.postgres
async def test_a_session_ended_mid_transaction_is_unavailable_and_its_connection_discarded(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    """The moveLead case, on the application's engine: the same failure is a disconnect, so the
    connection is discarded at once and the next operation runs on a fresh session."""
    with TcpProxy.to(postgres_url, hold_server_eof=True) as (proxy, url):
        engine = create_engine(url, pool_size=1)
        try:
            pid, error = await _transaction_ended_by_the_server(engine, proxy, admin)
            assert isinstance(error, InternalError)
            assert error.connection_invalidated
            assert is_unavailable(error)
            assert await _backend_pid(engine) != pid
        finally:
            proxy.cut()
            await engine.dispose()
