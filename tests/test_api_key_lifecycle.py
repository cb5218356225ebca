"""API keys: listed without secrets, created with an optional expiry, revoked by an admin or their own
user; a revoked or expired key gets 401 within a second on every process, and a WebSocket refused for
its key is closed with a reason naming the problem."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api_support import Client, make_client
from pipegraph.api import ids
from pipegraph.api.auth import CACHE_SECONDS
from pipegraph.app import create_app
from pipegraph.cli import main
from pipegraph.db.models import ApiKey, Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys
from pipegraph.settings import Settings
from server_support import seed_database

CREATE = """
mutation($i: CreateApiKeyInput!) {
  createApiKey(input: $i) { apiKey { id prefix expiresAt revoked } secret userErrors { field code } }
}"""
REVOKE = """
mutation($id: ID!) {
  revokeApiKey(input: {apiKeyId: $id}) { apiKey { revoked revokedAt } userErrors { field code } }
}"""
LIST = "query($u: ID) { apiKeys(userId: $u) { id userId prefix createdAt lastUsedAt expiresAt revoked } }"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for client in make_client(store):
        yield client


def user_id(client: Client, role: Role) -> str:
    return ids.encode("User", client.user_ids[role])


async def create_key(client: Client, role: Role, **fields: Any) -> dict[str, Any]:
    data = await client.run(CREATE, {"i": {"userId": user_id(client, role), **fields}})
    payload: dict[str, Any] = data["createApiKey"]
    assert payload["userErrors"] == [], payload
    return payload


async def test_admin_creates_lists_and_revokes_keys(client: Client) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    made = await create_key(client, Role.REP, expiresAt=expires.isoformat())
    assert made["secret"].startswith(made["apiKey"]["prefix"])
    assert datetime.fromisoformat(made["apiKey"]["expiresAt"]) == expires
    assert (await client.raw("{ viewer { role } }", key=made["secret"])).json()["data"]["viewer"][
        "role"
    ] == "REP"
    everyone = (await client.run(LIST))["apiKeys"]
    assert len(everyone) == len(Role) + 1  # one per role from the fixture, and the new one
    assert all("secret" not in key for key in everyone)
    own = (await client.run(LIST, role=Role.REP))["apiKeys"]
    assert {key["userId"] for key in own} == {user_id(client, Role.REP)}
    assert len(own) == 2
    [used] = [key for key in own if key["prefix"] == made["apiKey"]["prefix"]]
    assert used["lastUsedAt"] is not None
    revoked = await client.run(REVOKE, {"id": made["apiKey"]["id"]})
    assert revoked["revokeApiKey"]["apiKey"]["revoked"] is True
    assert revoked["revokeApiKey"]["apiKey"]["revokedAt"] is not None


async def test_a_user_revokes_their_own_keys_only_and_creates_none(client: Client) -> None:
    admins = (await client.run(LIST, {"u": user_id(client, Role.ADMIN)}))["apiKeys"]
    denied = await client.run(REVOKE, {"id": admins[0]["id"]}, role=Role.REP)
    assert denied["revokeApiKey"]["userErrors"] == [{"field": "input", "code": "FORBIDDEN"}]
    listing = await client.raw(LIST, {"u": user_id(client, Role.ADMIN)}, role=Role.REP)
    assert listing.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    created = await client.run(CREATE, {"i": {"userId": user_id(client, Role.REP)}}, role=Role.REP)
    assert created["createApiKey"]["userErrors"] == [{"field": "input", "code": "FORBIDDEN"}]
    [own] = (await client.run(LIST, role=Role.REP))["apiKeys"]
    revoked = await client.run(REVOKE, {"id": own["id"]}, role=Role.REP)
    assert revoked["revokeApiKey"]["userErrors"] == []


async def test_an_expiry_in_the_past_is_refused(client: Client) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    data = await client.run(CREATE, {"i": {"userId": user_id(client, Role.REP), "expiresAt": past}})
    assert data["createApiKey"]["userErrors"] == [{"field": "input.expiresAt", "code": "INVALID"}]
    assert data["createApiKey"]["secret"] is None


async def test_revoked_and_expired_keys_get_401_within_a_second_on_another_process(
    client: Client, store: Store
) -> None:
    revoked, expired = (
        (await create_key(client, Role.REP))["secret"],
        (await create_key(client, Role.REP))["secret"],
    )
    # A second app on the same database: another process, with its own cache of answers.
    other = create_app(
        Settings.from_env({}, database_url=store.engine.url.render_as_string(False)), store=store
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://other") as http:

        async def status(key: str) -> int:
            response = await http.post(
                "/graphql", json={"query": "{ viewer { id } }"}, headers={"Authorization": f"Bearer {key}"}
            )
            return response.status_code

        assert (await status(revoked), await status(expired)) == (200, 200)  # now cached there
        [row] = [
            k for k in (await client.run(LIST, role=Role.REP))["apiKeys"] if revoked.startswith(k["prefix"])
        ]
        assert (await client.run(REVOKE, {"id": row["id"]}))["revokeApiKey"]["userErrors"] == []
        async with store.write() as session:
            past = datetime.now(UTC) - timedelta(seconds=1)
            await session.execute(
                update(ApiKey).where(ApiKey.key_hash == api_keys.hash_key(expired)).values(expires_at=past)
            )
        await asyncio.sleep(CACHE_SECONDS + 0.1)
        assert (await status(revoked), await status(expired)) == (401, 401)
        if other.state.plans is not None:
            await other.state.plans.close()


def _close_reason(client: TestClient, payload: dict[str, str]) -> tuple[int, str]:
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": payload})
        message = ws.receive()
    assert message["type"] == "websocket.close"
    return message["code"], message["reason"]


def test_websocket_close_reason_names_the_problem(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    seed = asyncio.run(seed_database(url))

    async def spoil() -> tuple[str, str]:
        store = Store.from_url(url)
        try:
            async with store.write() as session:
                users = {row.user_id for row in await api_keys.list_api_keys(session)}
                [owner] = users
                revoked_row, revoked = await api_keys.create_api_key(session, user_id=owner)
                await api_keys.revoke_api_key(session, key_id=revoked_row.id)
                expired_row, expired = await api_keys.create_api_key(session, user_id=owner)
                expired_row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        finally:
            await store.dispose()
        return revoked, expired

    revoked, expired = asyncio.run(spoil())
    with TestClient(create_app(Settings.from_env({}, database_url=url))) as client:
        assert _close_reason(client, {}) == (4403, "API key missing: send Authorization: Bearer <key>")
        assert _close_reason(client, {"Authorization": "Basic abc"})[1].startswith("API key malformed")
        assert _close_reason(client, {"Authorization": "Bearer nope"})[1].startswith("API key malformed")
        assert _close_reason(client, {"Authorization": "Bearer pgk_nope"}) == (4403, "API key unknown")
        assert _close_reason(client, {"Authorization": f"Bearer {revoked}"}) == (4403, "API key revoked")
        assert _close_reason(client, {"Authorization": f"Bearer {expired}"}) == (4403, "API key expired")
        headers = {"Authorization": f"Bearer {revoked}"}
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"], headers=headers),
        ):
            pass
        assert (refused.value.code, refused.value.reason) == (4401, "API key revoked")
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {seed.key}"}})
            assert ws.receive_json()["type"] == "connection_ack"


def test_cli_lists_creates_with_expiry_and_revokes(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", sqlite_url]) == 0
    assert (
        main(
            [
                "create-user",
                "--database-url",
                sqlite_url,
                "--name",
                "Ada",
                "--email",
                "ada@example.com",
                "--role",
                "ADMIN",
            ]
        )
        == 0
    )
    capsys.readouterr()
    command = ["create-api-key", "--database-url", sqlite_url, "--email", "ada@example.com"]
    assert main([*command, "--expires-in-days", "7"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["list-api-keys", "--database-url", sqlite_url]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split("\t") == ["prefix", "owner", "created", "last used", "expires", "state"]
    prefix, owner, _, last_used, expires, state = row.split("\t")
    assert key.startswith(prefix)
    assert (owner, last_used, state) == ("ada@example.com", "-", "active")
    assert timedelta(days=6) < datetime.fromisoformat(expires) - datetime.now(UTC) <= timedelta(days=7)
    assert main(["revoke-api-key", "--database-url", sqlite_url, prefix]) == 0
    assert main(["list-api-keys", "--database-url", sqlite_url, "--email", "ada@example.com"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1].endswith("\trevoked")
    assert main(["revoke-api-key", "--database-url", sqlite_url, "pgk_none"]) == 2
    assert "no API key with prefix 'pgk_none'" in capsys.readouterr().err
