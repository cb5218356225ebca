"""One test per kind of hostile or malformed request: each gets its exact status and a structured
error (``errors[].extensions.code``), never a stack trace, and the server keeps answering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api_support import Client, create_pipeline, make_client
from pipegraph.db.models import Role
from pipegraph.db.session import Store


@pytest.fixture
async def client(sqlite_store: Store) -> AsyncIterator[Client]:
    async for client in make_client(sqlite_store):
        yield client


def auth(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.keys[Role.ADMIN]}"}


def only_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The single structured error of a refused request."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert body.get("data") is None
    [error] = body["errors"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return dict(error)


@pytest.fixture(autouse=True)
async def still_answering(client: Client) -> AsyncIterator[None]:
    yield
    assert (await client.run("{ viewer { name } }"))["viewer"]["name"] == "Admin"


async def test_deep_nesting_is_refused(client: Client) -> None:
    query = "{ pipelines { " + "stages { pipeline { " * 6 + "name" + " } }" * 6 + " } }"
    error = only_error(await client.raw(query), 200)
    assert error["extensions"]["code"] == "QUERY_TOO_DEEP"
    assert "exceeds maximum operation depth of 12" in error["message"]


async def test_nesting_deeper_than_the_parser_goes_is_refused(client: Client) -> None:
    query = "{ a " * 600 + "}" * 600
    error = only_error(await client.raw(query), 200)
    assert error["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert "nested too deeply" in error["message"]


async def test_circular_fragments_are_refused(client: Client) -> None:
    query = "{ viewer { ...A } } fragment A on User { name ...B } fragment B on User { email ...A }"
    error = only_error(await client.raw(query), 200)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["message"] == "Cannot spread fragment 'A' within itself via 'B'."


async def test_alias_overloading_is_refused(client: Client) -> None:
    query = "{ " + " ".join(f"a{i}: pipelines {{ id }}" for i in range(31)) + " }"
    error = only_error(await client.raw(query), 200)
    assert error == {"message": "31 aliases found. Allowed: 30", "extensions": {"code": "TOO_MANY_ALIASES"}}


@pytest.mark.parametrize(
    "query",
    [
        "{ viewer { " + "name " * 1000 + "} }",
        "{ " + "viewer { name } " * 500 + "}",
        "{ viewer { ...F } } fragment F on User { name } ".replace("...F", "...F " * 100),
    ],
    ids=["leaf", "object", "fragment-spread"],
)
async def test_field_duplication_is_refused_before_validation(client: Client, query: str) -> None:
    error = only_error(await client.raw(query), 200)
    assert error["extensions"] == {"code": "TOO_MANY_DUPLICATE_FIELDS"}
    assert "times in one selection set; at most 20" in error["message"]


async def test_too_many_tokens_are_refused(client: Client) -> None:
    query = "{ viewer { " + " ".join(f"a{i}: name" for i in range(2000)) + " } }"
    error = only_error(await client.raw(query), 200)
    assert error["extensions"]["code"] == "TOO_MANY_TOKENS"


async def test_batches_run_up_to_the_limit(client: Client) -> None:
    one = {"query": "{ viewer { name } }"}
    response = await client.http.post("/graphql", json=[one] * 10, headers=auth(client))
    assert response.status_code == 200
    assert [item["data"] for item in response.json()] == [{"viewer": {"name": "Admin"}}] * 10
    error = only_error(await client.http.post("/graphql", json=[one] * 11, headers=auth(client)), 400)
    assert error["extensions"]["code"] == "BATCH_REFUSED"
    assert error["message"] == "Too many operations"


async def test_a_batch_of_non_objects_is_refused(client: Client) -> None:
    response = await client.http.post(
        "/graphql", json=[{"query": "{ viewer { name } }"}, 7], headers=auth(client)
    )
    error = only_error(response, 400)
    assert error["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("first", [101, 1_000_000, -1])
async def test_oversized_or_negative_first_is_refused(client: Client, first: int) -> None:
    response = await client.raw("query($n: Int) { leads(first: $n) { totalCount } }", {"n": first})
    error = only_error(response, 200)
    assert error["extensions"] == {"code": "INVALID", "field": "first"}
    assert error["message"] == f"first must be between 0 and 100, got {first}"


async def test_first_beyond_32_bits_is_refused(client: Client) -> None:
    error = only_error(await client.raw("{ leads(first: 99999999999) { totalCount } }"), 200)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Int cannot represent non 32-bit signed integer value" in error["message"]


async def test_huge_strings_get_a_field_error(client: Client) -> None:
    pipeline = await create_pipeline(client)
    response = await client.raw(
        "mutation($input: CreateLeadInput!) "
        "{ createLead(input: $input) { lead { id } userErrors { field code message } } }",
        {"input": {"pipelineId": pipeline["id"], "title": "x" * 3_000_000}},
    )
    assert response.status_code == 200
    payload = response.json()["data"]["createLead"]
    assert payload["lead"] is None
    [user_error] = payload["userErrors"]
    assert (user_error["field"], user_error["code"]) == ("input.title", "INVALID")
    assert (await client.run("{ leads { totalCount } }"))["leads"]["totalCount"] == 0


async def test_bodies_over_the_size_limit_are_refused(client: Client) -> None:
    response = await client.raw(
        "query($s: String) { leads(filter: {search: $s}) { totalCount } }", {"s": "x" * 5_000_000}
    )
    error = only_error(response, 413)
    assert error["extensions"] == {"code": "PAYLOAD_TOO_LARGE"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ viewer { name } }"',
        b'{"query": "\xff\xfe"}',
        b"\xc3\x28",
        b"[" * 100_000,
        b"42",
        b'"query"',
        b"",
    ],
    ids=["truncated", "invalid-utf8-in-string", "invalid-utf8", "deep-json", "number", "string", "empty"],
)
async def test_invalid_json_or_utf8_is_refused(client: Client, body: bytes) -> None:
    response = await client.http.post(
        "/graphql", content=body, headers={**auth(client), "Content-Type": "application/json"}
    )
    error = only_error(response, 400)
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_wrong_content_types_are_refused(client: Client, content_type: str) -> None:
    response = await client.http.post(
        "/graphql", content=b"query={viewer{name}}", headers={**auth(client), "Content-Type": content_type}
    )
    error = only_error(response, 400)
    assert error["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize(
    ("field", "value"),
    [("query", 42), ("variables", "not an object"), ("extensions", [1])],
)
async def test_wrongly_typed_request_members_are_refused(client: Client, field: str, value: object) -> None:
    body: dict[str, object] = {"query": "{ viewer { name } }", field: value}
    error = only_error(await client.http.post("/graphql", json=body, headers=auth(client)), 400)
    assert error["extensions"]["code"] == "BAD_REQUEST"


async def test_get_mutations_are_refused(client: Client) -> None:
    response = await client.http.get(
        "/graphql",
        params={"query": 'mutation { createPipeline(input: {name: "x"}) { pipeline { id } } }'},
        headers=auth(client),
    )
    error = only_error(response, 405)
    assert response.headers["allow"] == "POST"
    assert error["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    assert error["message"] == "mutations are not allowed when using GET"
    assert (await client.run("{ pipelines { id } }"))["pipelines"] == []


async def test_get_queries_still_work(client: Client) -> None:
    response = await client.http.get(
        "/graphql", params={"query": "{ viewer { name } }"}, headers=auth(client)
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"viewer": {"name": "Admin"}}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_are_refused_naming_the_allowed_ones(client: Client, method: str) -> None:
    response = await client.http.request(
        method, "/graphql", json={"query": "{ viewer { name } }"}, headers=auth(client)
    )
    error = only_error(response, 405)
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert error["extensions"]["code"] == "METHOD_NOT_ALLOWED"


async def test_head_is_answered_as_get(client: Client) -> None:
    response = await client.http.head(
        "/graphql", params={"query": "{ viewer { name } }"}, headers=auth(client)
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ('{ leadsNeeded(input: {goal: "", pipelineId: "x", confidence: 0.5}) { naiveLeadsPerWeek } }', None),
        (
            'query($goal: Money!) { leadsNeeded(input: {goal: $goal, pipelineId: "x", confidence: 0.5}) '
            "{ naiveLeadsPerWeek } }",
            {"goal": "lots"},
        ),
    ],
    ids=["literal", "variable"],
)
async def test_a_malformed_money_amount_is_the_clients_error(
    client: Client, query: str, variables: dict[str, Any] | None
) -> None:
    # Found by the fuzzer: the scalar's ValueError counted as a server bug (INTERNAL).
    error = only_error(await client.raw(query, variables), 200)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "is not a decimal amount" in error["message"]


async def test_an_empty_selection_set_is_refused(client: Client) -> None:
    # graphql-core parses it; Strawberry's depth rule used to fail on it with an unmasked ValueError.
    error = only_error(await client.raw("{ viewer { } }"), 200)
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert error["message"] == "empty selection set: select at least one field"
