from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api_support import Client, create_lead, create_pipeline, make_client
from pipegraph.api.auth import Authenticator
from pipegraph.app import create_app
from pipegraph.db import models
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, users
from pipegraph.settings import Settings


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


@pytest.mark.parametrize("header", [None, "Bearer pgk_wrong", "Basic abc", "Bearer "])
async def test_missing_or_invalid_key_is_401_with_a_json_error(client: Client, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = await client.http.post("/graphql", json={"query": "{ viewer { id } }"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_viewer_is_the_key_owner(client: Client) -> None:
    for role in Role:
        data = await client.run("{ viewer { email role } }", role=role)
        assert data["viewer"] == {"email": f"{role.value.lower()}@example.com", "role": role.value}


async def test_deactivated_user_loses_access(store: Store) -> None:
    async for client in make_client(store):
        async with store.write() as session:
            await users.update_user(session, user_id=client.user_ids[Role.REP], active=False)
        # A new client has an empty authentication cache.
        app = create_app(Settings.from_env({}, database_url="sqlite://"), store=store)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            response = await http.post(
                "/graphql",
                json={"query": "{ viewer { id } }"},
                headers={"Authorization": f"Bearer {client.keys[Role.REP]}"},
            )
        assert response.status_code == 401


@pytest.mark.parametrize(
    ("role", "allowed"), [(Role.VIEWER, False), (Role.REP, False), (Role.MANAGER, False), (Role.ADMIN, True)]
)
async def test_only_admins_change_pipelines_and_users(client: Client, role: Role, allowed: bool) -> None:
    data = await client.run(
        """mutation { createPipeline(input: {name: "P", template: "CLASSIC"}) { pipeline { id }
             userErrors { code } }
           createUser(input: {name: "N", email: "n@example.com"}) { user { id } userErrors { code } } }""",
        role=role,
    )
    if allowed:
        assert data["createPipeline"]["userErrors"] == data["createUser"]["userErrors"] == []
    else:
        assert data["createPipeline"] == {"pipeline": None, "userErrors": [{"code": "FORBIDDEN"}]}
        assert data["createUser"] == {"user": None, "userErrors": [{"code": "FORBIDDEN"}]}
    listed = await client.run("{ pipelines { name } users { email } }", role=Role.VIEWER)
    assert len(listed["pipelines"]) == (1 if allowed else 0)
    assert len(listed["users"]) == len(Role) + (1 if allowed else 0)


async def test_open_access_acts_as_a_local_admin_created_on_first_use(store: Store) -> None:
    settings = Settings.from_env({}, database_url="sqlite://", open_access=True)
    app = create_app(settings, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        first = await http.post("/graphql", json={"query": "{ viewer { name email role } }"})
        second = await http.post("/graphql", json={"query": "{ users { email } }"})
    assert first.json()["data"]["viewer"] == {
        "name": "Local admin",
        "email": "admin@localhost",
        "role": "ADMIN",
    }
    assert second.json()["data"]["users"] == [{"email": "admin@localhost"}]


async def test_mutations_over_get_are_refused(client: Client) -> None:
    response = await client.http.get(
        "/graphql",
        params={
            "query": 'mutation { createUser(input: {name: "x", email: "x@example.com"}) { user { id } } }'
        },
        headers={"Authorization": f"Bearer {client.keys[Role.ADMIN]}"},
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "mutations are not allowed" in response.text.lower()
    assert (await client.run("{ users { email } }"))["users"].__len__() == len(Role)


async def test_unexpected_errors_are_masked_and_logged_with_the_request_id(
    client: Client, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = await create_pipeline(client)
    lead = await create_lead(client, pipeline["id"])
    async with store.write() as session:
        # A real failure below the API: the table a resolver reads is gone.
        await session.execute(text("DROP TABLE activities"))
    with caplog.at_level(logging.ERROR, logger="pipegraph.api"):
        response = await client.raw(
            "query($id: ID!) { lead(id: $id) { title activities { id } } }", {"id": lead["id"]}
        )
    body = response.json()
    [error] = body["errors"]
    assert error["message"] == "Internal server error"
    request_id = error["extensions"]["requestId"]
    assert error["extensions"]["code"] == "INTERNAL"
    assert response.headers["x-request-id"] == request_id
    assert "activities" not in error["message"]
    [record] = [r for r in caplog.records if request_id in r.getMessage()]
    assert record.exc_info is not None


async def test_query_errors_carry_code_and_field(client: Client) -> None:
    response = await client.raw("{ leads(first: 500) { totalCount } }")
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "INVALID", "field": "first"}
    response = await client.raw('{ lead(id: "garbage") { id } }')
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "INVALID"


async def test_healthz_checks_the_database(client: Client) -> None:
    response = await client.http.get("/healthz")
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_node_resolves_every_type(client: Client) -> None:
    pipeline = await create_pipeline(client)
    lead = await create_lead(client, pipeline["id"])
    for node_id, typename in (
        (pipeline["id"], "Pipeline"),
        (pipeline["stages"][0]["id"], "Stage"),
        (lead["id"], "Lead"),
    ):
        data = await client.run("query($id: ID!) { node(id: $id) { __typename id } }", {"id": node_id})
        assert data["node"] == {"__typename": typename, "id": node_id}


async def test_requests_arriving_together_ask_for_their_key_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired answer is asked for once, however many requests arrive while it is being asked."""
    asked: list[str] = []
    original = api_keys.authenticate

    async def counted(session: AsyncSession, key: str) -> models.User | None:
        asked.append(key)
        return await original(session, key)

    async for client in make_client(store):
        monkeypatch.setattr(api_keys, "authenticate", counted)
        authenticator = Authenticator(store, clock=lambda: 0.0)
        header = f"Bearer {client.keys[Role.REP]}"
        viewers = await asyncio.gather(*(authenticator.user_for(header) for _ in range(8)))
        assert {viewer.id if viewer else None for viewer in viewers} == {client.user_ids[Role.REP]}
        assert len(asked) == 1
        await authenticator.user_for(header)  # cached
        assert len(asked) == 1
