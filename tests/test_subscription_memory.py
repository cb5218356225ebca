"""An open subscription holds no memory per event it has delivered."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from graphql.execution.collect_fields import FieldDetails
from starlette.testclient import TestClient

from pipegraph.app import create_app
from pipegraph.settings import Settings
from server_support import create_lead_in_app, seed_database

SUBSCRIBE = """
subscription($pipelineId: ID!) {
  leadEvents(pipelineId: $pipelineId) { kind version lead { title stage { name } owner { name } } }
}
"""
UPDATE = "mutation($i: UpdateLeadInput!) { updateLead(input: $i) { userErrors { code } } }"


def _alive(kind: type) -> int:
    gc.collect()
    return sum(1 for value in gc.get_objects() if type(value) is kind)


def test_delivered_events_leave_nothing_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite3'}"
    seed = asyncio.run(seed_database(url))
    headers = {"Authorization": f"Bearer {seed.key}"}
    app = create_app(Settings.from_env({}, database_url=url))
    with (
        TestClient(app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_json({"type": "connection_init", "payload": headers})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIBE, "variables": {"pipelineId": seed.pipeline_id}},
            }
        )
        lead_id = create_lead_in_app(client, seed, "Deal")
        assert ws.receive_json()["type"] == "next"

        versions = [1]  # the lead's version: every change names it

        def deliver(count: int) -> None:
            for n in range(count):
                variables = {"i": {"leadId": lead_id, "title": f"Deal {n}", "expectedVersion": versions[0]}}
                versions[0] += 1
                client.post("/graphql", json={"query": UPDATE, "variables": variables}, headers=headers)
                message = ws.receive_json()
                assert message["type"] == "next", message
                assert message["payload"]["data"]["leadEvents"]["lead"]["title"] == f"Deal {n}"

        deliver(20)  # warm: whatever is built once per subscription is built now
        before = _alive(FieldDetails)
        deliver(200)
        after = _alive(FieldDetails)
        ws.send_json({"id": "1", "type": "complete"})
    # Each event collects a dozen fields; before the fix all of them stayed for the subscription's life.
    assert after - before < 20, f"{after - before} field records retained by 200 delivered events"
