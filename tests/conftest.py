"""Shared fixtures: a fresh, migrated database per test, on SQLite always and on PostgreSQL when
``PIPEGRAPH_TEST_POSTGRES_URL`` names a server (under ``CI=true`` it must) or, without it, on a
throwaway cluster the session starts when PostgreSQL's server binaries are installed."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# The dashboard modules' fixtures (module-scoped: each browser test module gets its own server).
from dashboard_support import browser, dashboard, page, seeded  # noqa: F401
from pipegraph.db import migrate
from pipegraph.db.session import Store
from postgres_cluster import ThrowawayCluster, server_binaries

POSTGRES_URL_VARIABLE = "PIPEGRAPH_TEST_POSTGRES_URL"
_cluster: list[ThrowawayCluster] = []  # started on first use, stopped when the session ends


def _postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {POSTGRES_URL_VARIABLE} is not set: PostgreSQL tests must run in CI")
    if not _cluster:
        binaries = server_binaries()
        if binaries is None:
            pytest.skip(
                f"PostgreSQL tests need {POSTGRES_URL_VARIABLE}=postgresql://user@host:port/db, or "
                "PostgreSQL's server binaries (initdb, pg_ctl) to start a throwaway cluster"
            )
        _cluster.append(ThrowawayCluster.start(binaries))
    return _cluster[0].url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _cluster:
        _cluster.pop().stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new empty PostgreSQL database for this test, dropped afterwards."""
    import asyncio

    import asyncpg

    admin_url = _postgres_admin_url()
    assert admin_url is not None
    plain = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"pipegraph_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(plain)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = plain.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pipegraph.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


async def _migrated_store(url: str) -> AsyncIterator[Store]:
    store = Store.from_url(url)
    await migrate.upgrade(store.engine)
    try:
        yield store
    finally:
        await store.dispose()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated, empty store on each backend."""
    async for store in _migrated_store(database_url):
        yield store


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[Store]:
    """A migrated, empty SQLite store, for tests that do not depend on the backend."""
    async for store in _migrated_store(sqlite_url):
        yield store
