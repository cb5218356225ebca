from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from pipegraph.app import create_app
from pipegraph.settings import Settings
from server_support import seed_database

SUBSCRIBE = """
subscription($pipelineId: ID!) {
  leadEvents(pipelineId: $pipelineId) { kind version lead { title status stage { name } } }
}
"""


def _prepare(url: str) -> tuple[str, str]:
    """A migrated database with a pipeline and an admin key (set up on its own loop)."""
    seed = asyncio.run(seed_database(url))
    return seed.key, seed.pipeline_id


def _post(client: TestClient, key: str, query: str, variables: dict[str, Any]) -> Any:
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_lead_events_arrive_after_commit_over_graphql_transport_ws(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ws.sqlite3'}"
    key, pipeline_id = _prepare(url)
    app = create_app(Settings.from_env({}, database_url=url))
    with (
        TestClient(app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": SUBSCRIBE, "variables": {"pipelineId": pipeline_id}},
            }
        )
        created = _post(
            client,
            key,
            "mutation($i: CreateLeadInput!) { createLead(input: $i) { lead { id } userErrors { code } } }",
            {"i": {"pipelineId": pipeline_id, "title": "Live deal"}},
        )
        lead_id = created["createLead"]["lead"]["id"]
        # A failed write publishes nothing: the next event must be the close, not this.
        failed = _post(
            client,
            key,
            "mutation($i: CloseLeadInput!) { closeLead(input: $i) { userErrors { code } } }",
            {"i": {"leadId": lead_id, "outcome": "WON", "value": "-1", "expectedVersion": 1}},
        )
        assert failed["closeLead"]["userErrors"] == [{"code": "INVALID"}]
        _post(
            client,
            key,
            "mutation($i: CloseLeadInput!) { closeLead(input: $i) { userErrors { code } } }",
            {"i": {"leadId": lead_id, "outcome": "LOST", "reason": "budget", "expectedVersion": 1}},
        )
        first = ws.receive_json()
        second = ws.receive_json()
        assert first["type"] == second["type"] == "next"
        assert first["payload"]["data"]["leadEvents"]["kind"] == "CREATED"
        assert first["payload"]["data"]["leadEvents"]["version"] == 1
        assert second["payload"]["data"]["leadEvents"]["kind"] == "CLOSED"
        assert second["payload"]["data"]["leadEvents"]["version"] == 2
        assert second["payload"]["data"]["leadEvents"]["lead"]["status"] == "LOST"
        ws.send_json({"id": "1", "type": "complete"})


def test_websocket_without_a_valid_key_is_rejected(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ws.sqlite3'}"
    _prepare(url)
    app = create_app(Settings.from_env({}, database_url=url))
    with (
        TestClient(app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_json({"type": "connection_init", "payload": {"Authorization": "Bearer pgk_nope"}})
        message = ws.receive()
        assert message["type"] == "websocket.close"
        assert message["code"] == 4403
