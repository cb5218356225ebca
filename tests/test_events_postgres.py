"""Lead events through PostgreSQL LISTEN/NOTIFY: between brokers, after a lost connection, and between two
real server processes on one database."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
import websockets

from pipegraph.db import migrate
from pipegraph.db.lead_events import LeadEvent, LeadEventKind, decode_event, encode_event
from pipegraph.db.session import Store
from pipegraph.services import leads, pipelines
from pipegraph.services.events import Feed
from pipegraph.services.events_postgres import PostgresBroker
from server_support import CREATE_LEAD, MOVE_LEAD, graphql, running_server, seed_database, stop

pytestmark = pytest.mark.postgres


def test_event_survives_the_notification_payload() -> None:
    occurred = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    event = LeadEvent(LeadEventKind.MOVED, 42, 1, 3, occurred, actor_id=7, position=9_000_000_000)
    payload = encode_event(event)
    assert decode_event(payload) == event
    assert len(payload.encode()) < 8000


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one migrated database, as two server processes would have."""
    pair = (Store.from_url(postgres_url), Store.from_url(postgres_url))
    await migrate.upgrade(pair[0].engine)
    try:
        yield pair
    finally:
        for store in pair:
            await store.dispose()


@pytest.fixture
async def brokers(stores: tuple[Store, Store]) -> AsyncIterator[tuple[PostgresBroker, PostgresBroker]]:
    pair = (PostgresBroker(stores[0].engine), PostgresBroker(stores[1].engine))
    try:
        yield pair
    finally:
        for broker in pair:
            await broker.close()


async def _create_leads(
    store: Store, broker: PostgresBroker, pipeline_id: int, count: int
) -> list[LeadEvent]:
    async with store.write() as session:
        for n in range(count):
            await leads.create_lead(session, pipeline_id=pipeline_id, title=f"Deal {n}", actor=None)
        return await broker.log(session)


async def _taken(feed: Feed) -> list[LeadEvent] | None:
    return await asyncio.wait_for(feed.take(), timeout=10)


async def test_a_feed_hears_events_written_through_another_process(
    stores: tuple[Store, Store], brokers: tuple[PostgresBroker, PostgresBroker]
) -> None:
    writer, listener = brokers
    async with stores[0].write() as session:
        sales = (await pipelines.create_pipeline(session, name="Sales", template="CLASSIC", actor=None)).id
        other = (await pipelines.create_pipeline(session, name="Other", template="CLASSIC", actor=None)).id
    feed = listener.open_feed(sales)
    await listener.wait_live()
    assert await _taken(feed) is None  # listening began: read the log once
    await _create_leads(stores[0], writer, other, 1)
    written = await _create_leads(stores[0], writer, sales, 2)
    # Another pipeline's event is not delivered; both of this pipeline's arrive in commit order.
    received = await _taken(feed) or []
    if len(received) < 2:
        received += await _taken(feed) or []
    assert received == written
    assert listener.subscriber_count(sales) == 1
    listener.close_feed(feed)
    assert listener.subscriber_count(sales) == 0


async def test_after_the_listener_is_lost_every_feed_reads_the_log(
    stores: tuple[Store, Store], brokers: tuple[PostgresBroker, PostgresBroker], postgres_url: str
) -> None:
    writer, listener = brokers
    async with stores[0].write() as session:
        sales = (await pipelines.create_pipeline(session, name="Sales", template="CLASSIC", actor=None)).id
    feed = listener.open_feed(sales)
    await listener.wait_live()
    assert await _taken(feed) is None
    admin = await asyncpg.connect(postgres_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'pipegraph-listen' AND datname = current_database()"
        )
        assert killed == 1
        # Written while nobody listens: no notification reaches this process.
        await _create_leads(stores[0], writer, sales, 3)
        deadline = asyncio.get_running_loop().time() + 10
        while not await _listener_count(admin):
            assert asyncio.get_running_loop().time() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    # Listening again: the feed says "read the log", where those three events are.
    assert await _taken(feed) is None
    listener.close_feed(feed)


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
