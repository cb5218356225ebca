"""API keys record when they were last used, without a write on every request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event, select

from api_support import Client, make_client
from pipegraph.api.auth import LAST_USED_INTERVAL, Authenticator
from pipegraph.db.models import ApiKey, Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_updates(store: Store) -> Iterator[list[str]]:
    """The UPDATE statements on api_keys run while the test runs."""
    updates: list[str] = []
    engine = store.engine.sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            updates.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield updates
    event.remove(engine, "before_cursor_execute", record)


async def _last_used(store: Store, key: str) -> datetime | None:
    async with store.read() as session:
        statement = select(ApiKey.last_used_at).where(ApiKey.key_hash == api_keys.hash_key(key))
        return (await session.execute(statement)).scalar_one()


async def test_a_request_records_when_its_key_was_used(client: Client, store: Store) -> None:
    key, other = client.keys[Role.REP], client.keys[Role.VIEWER]
    assert await _last_used(store, key) is None
    await client.run("{ viewer { id } }", role=Role.REP)
    assert await _last_used(store, key) is not None
    assert await _last_used(store, other) is None


async def test_use_is_written_at_most_once_per_interval_per_key(
    client: Client, store: Store, key_updates: list[str]
) -> None:
    updates, clock = key_updates, Clock()
    authenticator = Authenticator(store, clock=clock)
    key, other = client.keys[Role.REP], client.keys[Role.MANAGER]
    assert await authenticator.user_for(f"Bearer {key}") is not None
    first = await _last_used(store, key)
    assert first is not None
    assert len(updates) == 1

    clock.now += LAST_USED_INTERVAL - 1  # the answer has expired meanwhile, the interval not
    for _ in range(3):
        assert await authenticator.user_for(f"Bearer {key}") is not None
    assert len(updates) == 1
    assert await _last_used(store, key) == first

    assert await authenticator.user_for(f"Bearer {other}") is not None  # each key has its own
    assert len(updates) == 2

    clock.now += 1
    assert await authenticator.user_for(f"Bearer {key}") is not None
    assert len(updates) == 3
    later = await _last_used(store, key)
    assert later is not None
    assert later > first


async def test_invalid_keys_record_nothing(client: Client, store: Store, key_updates: list[str]) -> None:
    authenticator = Authenticator(store)
    assert await authenticator.user_for("Bearer pgk_unknown") is None
    assert key_updates == []
