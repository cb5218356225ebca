"""Texts the backends would mishandle: NUL characters refused everywhere, long searches refused, and
case-insensitive search over non-ASCII letters alike on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from api_support import CREATE_LEAD, Client, create_lead, create_pipeline, make_client
from pipegraph.api.text_inputs import nul_path
from pipegraph.db.models import Lead
from pipegraph.db.session import Store
from pipegraph.services.queries import MAX_SEARCH_LENGTH


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


SEARCH = """
query($p: ID!, $search: String) {
  leads(pipelineId: $p, first: 20, filter: {search: $search}) { totalCount nodes { title } }
}
"""


async def _lead_count(store: Store) -> int:
    async with store.read() as session:
        return int((await session.execute(select(func.count(Lead.id)))).scalar_one())


async def test_a_nul_in_any_text_is_refused_and_nothing_is_written(client: Client, store: Store) -> None:
    pipeline = await create_pipeline(client)
    before = await _lead_count(store)
    response = await client.raw(
        CREATE_LEAD, {"input": {"pipelineId": pipeline["id"], "title": "ok", "company": "A\x00B"}}
    )
    assert response.status_code == 200
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "INVALID"
    assert error["extensions"]["field"] == "$input.company"
    assert "U+0000" in error["message"]
    assert response.json()["data"] is None
    assert await _lead_count(store) == before
    # In a search, as a variable and as a literal in the document.
    for query, variables in (
        (SEARCH, {"p": pipeline["id"], "search": "x\x00"}),
        ('{ leads(filter: {search: "a\\u0000"}) { totalCount } }', {}),
        ("query($f: LeadFilter) { leads(filter: $f) { totalCount } }", {"f": {"sources": ["web", "\x00"]}}),
    ):
        body = (await client.raw(query, variables)).json()
        assert body["errors"][0]["extensions"]["code"] == "INVALID", body
        assert "internal" not in body["errors"][0]["message"].lower()


def test_nul_paths_name_the_value() -> None:
    assert nul_path({"a": [1, "x", {"b": "\x00"}]}, "$v") == "$v.a[2].b"
    assert nul_path({"a\x00": 1}, "$v") == "$v.a\x00"
    assert nul_path(["fine", 3, None, {"k": "v"}], "$v") is None


async def test_a_long_search_is_refused_with_its_field(client: Client) -> None:
    pipeline = await create_pipeline(client)
    await client.run(SEARCH, {"p": pipeline["id"], "search": "x" * MAX_SEARCH_LENGTH})
    body = (await client.raw(SEARCH, {"p": pipeline["id"], "search": "x" * 100_000})).json()
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INVALID"
    assert error["extensions"]["field"] == "filter.search"
    assert str(MAX_SEARCH_LENGTH) in error["message"]


async def test_search_folds_non_ascii_letters_on_both_backends(client: Client) -> None:
    pipeline = await create_pipeline(client)
    await create_lead(client, pipeline["id"], title="Ünïcödé Straße", company="ÉCOLE Ørsted")
    await create_lead(client, pipeline["id"], title="plain ascii")

    async def titles(search: str) -> list[str]:
        data: dict[str, Any] = await client.run(SEARCH, {"p": pipeline["id"], "search": search})
        return [node["title"] for node in data["leads"]["nodes"]]

    for search in ("Ünïcödé", "ünïcödé", "ÜNÏCÖDÉ", "straße", "école", "ØRSTED", "ünï"):
        assert await titles(search) == ["Ünïcödé Straße"], search
    assert await titles("PLAIN") == ["plain ascii"]
    assert await titles("unicode") == []  # folding case, not accents
