"""Subscribers of one pipeline share its events' lead reads: one read per event batch per process."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from starlette.testclient import TestClient, WebSocketTestSession

from pipegraph.api import ids
from pipegraph.app import create_app
from pipegraph.db.lead_events import LeadEvent, LeadEventKind
from pipegraph.services.lead_snapshots import LeadSnapshots
from pipegraph.services.queries import LeadRow
from pipegraph.settings import Settings
from server_support import create_lead_in_app, seed_database

SUBSCRIBERS = 4
UPDATES = 6
SUBSCRIBE = "subscription($p: ID!) { leadEvents(pipelineId: $p) { version lead { title version } } }"
SUBSCRIBE_BARE = "subscription($p: ID!) { leadEvents(pipelineId: $p) { version } }"
UPDATE = "mutation($i: UpdateLeadInput!) { updateLead(input: $i) { userErrors { code } } }"


def _subscribe(stack: ExitStack, client: TestClient, key: str, query: str, pipeline_id: str) -> Any:
    ws: WebSocketTestSession = stack.enter_context(
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"])
    )
    ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
    assert ws.receive_json()["type"] == "connection_ack"
    payload = {"query": query, "variables": {"p": pipeline_id}}
    ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
    return ws


def test_subscribers_of_a_pipeline_read_each_batch_of_leads_once(database_url: str, tmp_path: Path) -> None:
    seed = asyncio.run(seed_database(database_url))
    headers = {"Authorization": f"Bearer {seed.key}"}
    app = create_app(Settings.from_env({}, database_url=database_url))
    lead_reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # queries.leads_by_ids: the leads' columns for a list of ids (the writes read one lead by id).
        if "FROM leads" in statement and "leads.id IN" in statement:
            lead_reads.append(statement)

    event.listen(app.state.store.engine.sync_engine, "before_cursor_execute", count)
    with TestClient(app) as client, ExitStack() as stack:
        watching = [
            _subscribe(stack, client, seed.key, SUBSCRIBE, seed.pipeline_id) for _ in range(SUBSCRIBERS)
        ]
        bare = _subscribe(stack, client, seed.key, SUBSCRIBE_BARE, seed.pipeline_id)
        lead_id = create_lead_in_app(client, seed, "Deal")
        for version in range(1, UPDATES + 2):
            if version > 1:  # each change is its own batch: every subscriber has the last one
                variables = {
                    "i": {"leadId": lead_id, "title": f"Deal {version}", "expectedVersion": version - 1}
                }
                client.post("/graphql", json={"query": UPDATE, "variables": variables}, headers=headers)
            for ws in watching:
                message = ws.receive_json()
                assert message["type"] == "next", message
                event_ = message["payload"]["data"]["leadEvents"]
                assert event_["version"] == version
                assert event_["lead"]["version"] >= version
            assert bare.receive_json()["payload"]["data"]["leadEvents"] == {"version": version}
        held = app.state.lead_snapshots.held(ids.decode_as(seed.pipeline_id, "Pipeline", field="id"))
        for ws in [*watching, bare]:
            ws.send_json({"id": "1", "type": "complete"})
    assert held == 0
    # Not SUBSCRIBERS reads per change, and none for the subscription that does not select lead.
    assert len(lead_reads) == UPDATES + 1


def _event(position: int, lead_id: int) -> LeadEvent:
    return LeadEvent(LeadEventKind.UPDATED, lead_id, 1, position, datetime.now(UTC), None, position)


async def test_answers_are_kept_until_every_reader_has_passed_them() -> None:
    snapshots = LeadSnapshots()
    reads: list[set[int]] = []

    async def read(ids: set[int]) -> dict[int, LeadRow]:
        reads.append(ids)
        await asyncio.sleep(0)
        return {}

    batch = [_event(1, 10), _event(2, 11)]
    with snapshots.reader(1) as first, snapshots.reader(1) as second:
        answers = await asyncio.gather(first.leads(batch, read), second.leads(batch, read))
        assert list(answers) == [{1: None, 2: None}] * 2
        assert reads == [{10, 11}]  # the second waited for the first's read
        first.passed(2)
        assert snapshots.held(1) == 2
        second.passed(2)
        assert snapshots.held(1) == 0
    assert snapshots.held(1) == 0


async def test_a_reader_far_behind_holds_no_more_than_the_capacity() -> None:
    snapshots = LeadSnapshots(capacity=3)

    async def read(ids: set[int]) -> dict[int, LeadRow]:
        return {}

    with snapshots.reader(1) as ahead, snapshots.reader(1):
        for position in range(1, 11):
            await ahead.leads([_event(position, position)], read)
            ahead.passed(position)
        assert snapshots.held(1) == 3


async def test_when_a_shared_read_fails_the_others_read_for_themselves() -> None:
    snapshots = LeadSnapshots()
    started = asyncio.Event()
    reads: list[str] = []

    async def failing(ids: set[int]) -> dict[int, LeadRow]:
        reads.append("failing")
        started.set()
        await asyncio.sleep(0.01)
        raise OSError("the database went away")

    async def working(ids: set[int]) -> dict[int, LeadRow]:
        reads.append("working")
        return {}

    batch = [_event(1, 10)]
    with snapshots.reader(1) as first, snapshots.reader(1) as second:
        failed = asyncio.create_task(first.leads(batch, failing))
        await started.wait()
        assert await second.leads(batch, working) == {1: None}
        with pytest.raises(OSError, match="went away"):
            await failed
    assert reads == ["failing", "working"]
