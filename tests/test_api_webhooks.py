"""Webhook endpoints through GraphQL on a real server: ADMIN only, the secret once, a signed ping, the
delivery log, disable/enable, redelivery with the same webhook-id, removal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, users
from server_support import ServerProcess, running_server, seed_database
from webhook_receiver import running_receiver
from webhook_support import WEBHOOK_ENV

CREATE = """
mutation ($url: String!, $events: [WebhookEventType!]) {
  createWebhookEndpoint(input: {url: $url, events: $events, description: "billing"}) {
    endpoint { id url events enabled }
    secret
    userErrors { field code message }
  }
}"""
PING = """mutation ($id: ID!) { pingWebhookEndpoint(endpointId: $id) { userErrors { field code } } }"""
UPDATE = """
mutation ($id: ID!, $enabled: Boolean) {
  updateWebhookEndpoint(input: {endpointId: $id, enabled: $enabled}) {
    endpoint { enabled disabledReason } userErrors { field code }
  }
}"""
ENDPOINTS = """
{ webhookEndpoints { id enabled deliveryCounts { pending delivered failed }
    deliveries(first: 10) {
      id messageId eventType status attempts responseCode latencyMs responseExcerpt
    } } }"""
REDELIVER = """
mutation ($id: ID!) { redeliverWebhook(deliveryId: $id) { delivery { status } userErrors { field } } }"""
DELETE = """
mutation ($id: ID!) { deleteWebhookEndpoint(endpointId: $id) { deletedEndpointId userErrors { field } } }"""


async def _rep_key(database_url: str) -> str:
    store = Store.from_url(database_url)
    try:
        async with store.write() as session:
            rep = await users.create_user(session, name="Rex", email="rex@example.com", role=Role.REP)
            _, key = await api_keys.create_api_key(session, user_id=rep.id)
        return key
    finally:
        await store.dispose()


def _call(server: ServerProcess, key: str, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        server.graphql_url,
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _data(server: ServerProcess, key: str, query: str, **variables: Any) -> Any:
    body = _call(server, key, query, **variables)
    assert "errors" not in body, body
    return next(iter(body["data"].values()))


def test_private_url_is_refused_without_the_setting(sqlite_url: str, tmp_path: Path) -> None:
    seed = asyncio.run(seed_database(sqlite_url))
    with running_server(sqlite_url, tmp_path) as server:
        refused = _data(server, seed.key, CREATE, url="http://127.0.0.1:9/hook")
        assert refused["endpoint"] is None
        assert refused["secret"] is None
        assert refused["userErrors"][0]["field"] == "input.url"
        assert refused["userErrors"][0]["code"] == "INVALID"


def test_endpoint_lifecycle_through_graphql(database_url: str, tmp_path: Path) -> None:
    seed = asyncio.run(seed_database(database_url))
    rep_key = asyncio.run(_rep_key(database_url))
    with running_receiver() as receiver, running_server(database_url, tmp_path, env=WEBHOOK_ENV) as server:
        forbidden = _data(server, rep_key, CREATE, url=receiver.url)
        assert forbidden["userErrors"][0]["code"] == "FORBIDDEN"
        assert _call(server, rep_key, ENDPOINTS)["errors"][0]["extensions"]["code"] == "FORBIDDEN"

        created = _data(server, seed.key, CREATE, url=receiver.url, events=["LEAD_WON", "LEAD_LOST"])
        assert created["userErrors"] == []
        assert created["secret"].startswith("whsec_")
        assert created["endpoint"]["events"] == ["LEAD_LOST", "LEAD_WON"]
        receiver.secret = created["secret"]
        endpoint_id = created["endpoint"]["id"]

        assert _data(server, seed.key, PING, id=endpoint_id)["userErrors"] == []
        receiver.wait_for(lambda r: len(r.unique()) == 1)
        assert receiver.snapshot()[0].type == "webhook.ping"
        assert receiver.bad_signatures == 0

        [endpoint] = _data(server, seed.key, ENDPOINTS)
        [delivery] = endpoint["deliveries"]
        assert endpoint["deliveryCounts"] == {"pending": 0, "delivered": 1, "failed": 0}
        assert delivery["status"] == "DELIVERED"
        assert (delivery["attempts"], delivery["responseCode"], delivery["responseExcerpt"]) == (1, 200, "ok")
        assert delivery["latencyMs"] >= 0
        assert delivery["messageId"] == receiver.snapshot()[0].msg_id

        disabled = _data(server, seed.key, UPDATE, id=endpoint_id, enabled=False)
        assert disabled["endpoint"] == {
            "enabled": False,
            "disabledReason": disabled["endpoint"]["disabledReason"],
        }
        assert disabled["endpoint"]["disabledReason"].startswith("disabled by user")
        assert _data(server, seed.key, PING, id=endpoint_id)["userErrors"][0]["field"] == "endpointId"
        assert _data(server, seed.key, UPDATE, id=endpoint_id, enabled=True)["endpoint"]["enabled"] is True

        assert _data(server, seed.key, REDELIVER, id=delivery["id"])["delivery"]["status"] == "PENDING"
        receiver.wait_for(lambda r: len(r.snapshot()) == 2)
        first, again = receiver.snapshot()
        assert again.msg_id == first.msg_id  # the same message: receivers de-duplicate it

        unknown = _data(server, seed.key, REDELIVER, id="V2ViaG9va0RlbGl2ZXJ5Ojk5OQ==")
        assert unknown["userErrors"][0]["field"] == "deliveryId"
        assert _data(server, seed.key, DELETE, id=endpoint_id)["deletedEndpointId"] == endpoint_id
        assert _data(server, seed.key, ENDPOINTS) == []
