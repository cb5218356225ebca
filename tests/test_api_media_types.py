"""``application/graphql-response+json`` when the client prefers it; ``application/json`` as before
otherwise; subscriptions over plain HTTP refused with a code. Both backends: the compiled read path
answers some of these on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api_support import Client, create_pipeline, make_client
from pipegraph.api.media_types import GRAPHQL_RESPONSE_JSON, JSON, negotiate
from pipegraph.db.models import Role
from pipegraph.db.session import Store

NEW = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for client in make_client(store):
        yield client


async def post(client: Client, query: str, accept: str | None, **variables: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {client.keys[Role.ADMIN]}"}
    if accept is not None:
        headers["Accept"] = accept
    return await client.http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("application/json", JSON),
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (f"{GRAPHQL_RESPONSE_JSON}, application/json", GRAPHQL_RESPONSE_JSON),
        (f"application/json, {GRAPHQL_RESPONSE_JSON}", JSON),
        (f"application/json;q=0.5, {GRAPHQL_RESPONSE_JSON}", GRAPHQL_RESPONSE_JSON),
        (f"{GRAPHQL_RESPONSE_JSON};q=0, application/json", JSON),
        ("text/html", JSON),
    ],
)
def test_negotiation_follows_preference(accept: str | None, expected: str) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize(
    "query",
    [
        "{ pipelines { id name } }",  # the compiled read path
        "{ viewer { name } }",  # the reference path
    ],
    ids=["compiled", "reference"],
)
async def test_a_result_is_labelled_as_accepted(client: Client, query: str) -> None:
    await create_pipeline(client)
    new, old = await post(client, query, GRAPHQL_RESPONSE_JSON), await post(client, query, None)
    assert (new.status_code, old.status_code) == (200, 200)
    assert new.headers["content-type"] == NEW
    assert old.headers["content-type"] == JSON
    assert new.json()["data"] == old.json()["data"]


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        ("{ pipelines { id ", {}, "GRAPHQL_PARSE_FAILED"),
        ("{ pipelines { nope } }", {}, "GRAPHQL_VALIDATION_FAILED"),
        ("query($n: Int!) { pipelines(first: $n) { id } }", {"n": "x"}, None),
    ],
    ids=["parse", "validation", "variables"],
)
async def test_request_errors_are_4xx_without_data_under_graphql_response_json(
    client: Client, query: str, variables: dict[str, object], code: str | None
) -> None:
    new = await post(client, query, GRAPHQL_RESPONSE_JSON, **variables)
    assert new.status_code == 400, new.text
    assert new.headers["content-type"] == NEW
    assert "data" not in new.json()
    assert new.json()["errors"]
    old = await post(client, query, "application/json", **variables)
    assert old.status_code == 200
    assert old.json()["data"] is None
    if code is not None:
        assert new.json()["errors"][0]["extensions"]["code"] == code


async def test_a_field_error_keeps_200_and_data(client: Client) -> None:
    response = await post(client, '{ node(id: "bm9wZTox") { id } }', GRAPHQL_RESPONSE_JSON)
    assert response.status_code == 200
    assert "data" in response.json()


async def test_http_level_refusals_carry_the_accepted_type(client: Client) -> None:
    response = await client.http.post(
        "/graphql",
        content=b"{",
        headers={"Accept": GRAPHQL_RESPONSE_JSON, "Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == NEW


@pytest.mark.parametrize("accept", [None, GRAPHQL_RESPONSE_JSON])
async def test_a_subscription_over_plain_http_says_to_stream(client: Client, accept: str | None) -> None:
    query = 'subscription { leadEvents(pipelineId: "UGlwZWxpbmU6MQ==") { __typename } }'
    response = await post(client, query, accept)
    assert response.status_code == 400, response.text
    body = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert error["extensions"]["code"] == "STREAMING_REQUIRED"
    assert "WebSocket" in error["message"]
