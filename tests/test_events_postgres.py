"""Lead events through PostgreSQL LISTEN/NOTIFY: between brokers, after a lost connection, and between two
real server processes on one database."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets

from pipegraph.db.session import Store
from pipegraph.services.events import LeadEvent, LeadEventKind
from pipegraph.services.events_postgres import PostgresBroker, decode_event, encode_event
from server_support import CREATE_LEAD, MOVE_LEAD, graphql, running_server, seed_database, stop

pytestmark = pytest.mark.postgres


def _event(lead_id: int, *, pipeline_id: int = 1, version: int = 1) -> LeadEvent:
    occurred = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    return LeadEvent(LeadEventKind.MOVED, lead_id, pipeline_id, version, occurred, actor_id=7)


def test_event_survives_the_notification_payload() -> None:
    event = _event(42, version=3)
    payload = encode_event(event)
    assert decode_event(payload) == event
    assert len(payload.encode()) < 8000


@pytest.fixture
async def brokers(postgres_url: str) -> AsyncIterator[tuple[PostgresBroker, PostgresBroker]]:
    """Two brokers on their own engines, as two server processes would have."""
    stores = [Store.from_url(postgres_url), Store.from_url(postgres_url)]
    pair = (PostgresBroker(stores[0].engine), PostgresBroker(stores[1].engine))
    try:
        yield pair
    finally:
        for broker in pair:
            await broker.close()
        for store in stores:
            await store.dispose()


async def _next(events: AsyncIterator[LeadEvent]) -> LeadEvent:
    return await asyncio.wait_for(anext(events), timeout=10)


async def test_subscriber_receives_events_published_by_another_broker(
    brokers: tuple[PostgresBroker, PostgresBroker],
) -> None:
    publisher, listener = brokers
    events = listener.subscribe(pipeline_id=1)
    first = asyncio.ensure_future(_next(events))
    await listener.wait_listening()
    # Another pipeline's event is not delivered; both of this pipeline's arrive in commit order.
    await publisher.publish([_event(10, pipeline_id=2), _event(11), _event(12)])
    assert (await first).lead_id == 11
    assert (await _next(events)).lead_id == 12
    assert listener.subscriber_count(1) == 1
    await events.aclose()
    assert listener.subscriber_count(1) == 0


async def test_listener_reconnects_after_its_connection_is_killed(
    brokers: tuple[PostgresBroker, PostgresBroker], postgres_url: str
) -> None:
    publisher, listener = brokers
    events = listener.subscribe(pipeline_id=1)
    first = asyncio.ensure_future(_next(events))
    await listener.wait_listening()
    admin = await asyncpg.connect(postgres_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'pipegraph-listen' AND datname = current_database()"
        )
        assert killed == 1
        # Until the listener is back, events are not replayed: publish once it listens again.
        deadline = asyncio.get_running_loop().time() + 10
        while not await _listener_count(admin):
            assert asyncio.get_running_loop().time() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    await listener.wait_listening()
    await publisher.publish([_event(20)])
    assert (await first).lead_id == 20
    await events.aclose()


async def _listener_count(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pipegraph-listen' "
        "AND datname = current_database() AND state = 'idle' AND query LIKE 'LISTEN%'"
    )
    return count


SUBSCRIBE = """
subscription ($pipelineId: ID!) {
  leadEvents(pipelineId: $pipelineId) { kind version lead { stage { name } } }
}
"""


async def test_a_move_through_one_server_reaches_a_subscriber_of_another(
    postgres_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(postgres_url)
    with (
        running_server(postgres_url, tmp_path, name="first") as first,
        running_server(postgres_url, tmp_path, name="second") as second,
    ):
        async with (
            websockets.connect(first.websocket_url, subprotocols=["graphql-transport-ws"]) as ws,  # type: ignore[list-item]
            httpx.AsyncClient(timeout=10) as http,
        ):
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {seed.key}"}})
            )
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            subscribe = {"query": SUBSCRIBE, "variables": {"pipelineId": seed.pipeline_id}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
            admin = await asyncpg.connect(postgres_url)
            try:
                # The first server listens once its subscriber has registered; nothing else listens.
                deadline = asyncio.get_running_loop().time() + 20
                while not await _listener_count(admin):
                    assert asyncio.get_running_loop().time() < deadline, "the first server never listened"
                    await asyncio.sleep(0.05)
                assert await _listener_count(admin) == 1
            finally:
                await admin.close()

            created = await graphql(
                http, second, seed.key, CREATE_LEAD, pipelineId=seed.pipeline_id, title="Cross"
            )
            lead_id = created["createLead"]["lead"]["id"]
            moved = await graphql(
                http, second, seed.key, MOVE_LEAD, leadId=lead_id, stageId=seed.stage_ids[1], version=1
            )
            assert moved["moveLead"]["userErrors"] == []

            messages = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
            events = [m["payload"]["data"]["leadEvents"] for m in messages]
            assert [e["kind"] for e in events] == ["CREATED", "MOVED"]
            assert events[1]["version"] == 2
            assert events[1]["lead"]["stage"]["name"] == moved["moveLead"]["lead"]["stage"]["name"]
            await ws.send(json.dumps({"id": "1", "type": "complete"}))
        stop(first, signal.SIGTERM)
        stop(second, signal.SIGTERM)


async def test_a_failed_notify_is_logged_not_raised(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The write behind these events has committed: its mutation must still report success.
    store = Store.from_url(postgres_url)
    broker = PostgresBroker(store.engine, channel="")  # PostgreSQL rejects an empty channel name
    try:
        with caplog.at_level(logging.WARNING, logger="pipegraph.events"):
            await broker.publish([_event(1), _event(2)])
    finally:
        await broker.close()
        await store.dispose()
    assert "lost 2 lead event(s): NOTIFY failed" in caplog.text
