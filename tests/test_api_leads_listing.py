from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update

from api_support import Client, make_client
from pipegraph.api.loaders import Loaders
from pipegraph.db.models import Lead, Role, Stage
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.services import activities, leads, pipelines
from pipegraph.services.templates import StageSpec

LEAD_COUNT = 120


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


async def _seed(store: Store, client: Client) -> tuple[int, list[int], datetime]:
    """120 leads over three stages and two owners, values 0..119, created one minute apart."""
    start = utcnow() - timedelta(days=30)
    rep, manager = client.user_ids[Role.REP], client.user_ids[Role.MANAGER]
    async with store.write() as session:
        pipeline = await pipelines.create_pipeline(
            session,
            name="Board",
            stages=[
                StageSpec("New", target_days=5),
                StageSpec("Talking"),
                StageSpec("Offer", target_days=100),
            ],
            actor=None,
        )
        stage_ids = [s.id for s in await pipelines.current_stages(session, pipeline.id)]
        for i in range(LEAD_COUNT):
            lead = await leads.create_lead(
                session,
                pipeline_id=pipeline.id,
                title=f"Deal {i:03d}",
                company="Acme Corp" if i % 10 == 0 else f"Company {i}",
                stage_id=stage_ids[i % 3],
                owner_id=rep if i % 2 else manager,
                source="referral" if i % 4 == 0 else "website",
                value=i,
                actor=None,
                at=start + timedelta(minutes=i),
            )
            for n in range(i % 4):
                await activities.log_activity(
                    session, lead_id=lead.id, kind="NOTE", subject=f"note {n}", actor=None
                )
    return pipeline.id, stage_ids, start


PAGE = """
query($first: Int, $after: String, $last: Int, $before: String, $filter: LeadFilter, $orderBy: LeadOrder) {
  leads(first: $first, after: $after, last: $last, before: $before, filter: $filter, orderBy: $orderBy) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { title value } }
  }
}
"""


def _titles(data: dict[str, Any]) -> list[str]:
    return [edge["node"]["title"] for edge in data["leads"]["edges"]]


async def test_keyset_pagination_forwards_and_backwards_visits_every_lead_once(
    client: Client, store: Store
) -> None:
    await _seed(store, client)
    order = {"field": "VALUE", "direction": "ASC"}
    seen: list[str] = []
    after = None
    while True:
        data = await client.run(PAGE, {"first": 25, "after": after, "orderBy": order})
        seen += _titles(data)
        info = data["leads"]["pageInfo"]
        assert info["hasPreviousPage"] == (after is not None)
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert seen == [f"Deal {i:03d}" for i in range(LEAD_COUNT)]
    backwards: list[str] = []
    before = None
    while True:
        data = await client.run(PAGE, {"last": 50, "before": before, "orderBy": order})
        backwards = _titles(data) + backwards
        info = data["leads"]["pageInfo"]
        if not info["hasPreviousPage"]:
            break
        before = info["startCursor"]
    assert backwards == seen
    assert data["leads"]["totalCount"] == LEAD_COUNT


async def test_default_order_is_newest_first_with_twenty_per_page(client: Client, store: Store) -> None:
    await _seed(store, client)
    data = await client.run(PAGE, {})
    assert _titles(data) == [f"Deal {i:03d}" for i in range(LEAD_COUNT - 1, LEAD_COUNT - 21, -1)]


async def test_cursor_from_another_ordering_is_rejected(client: Client, store: Store) -> None:
    await _seed(store, client)
    data = await client.run(PAGE, {"first": 5})
    response = await client.raw(
        PAGE, {"first": 5, "after": data["leads"]["pageInfo"]["endCursor"], "orderBy": {"field": "TITLE"}}
    )
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "INVALID", "field": "after"}


async def test_filters(client: Client, store: Store) -> None:
    _, stage_ids, start = await _seed(store, client)
    # The first stage's target is 5 days and every lead entered its stage about 30 days ago.
    async with store.read() as session:
        first_stage_gid = (await client.run("{ pipelines { stages { id } } }"))["pipelines"][0]["stages"][0][
            "id"
        ]
        assert (
            await session.execute(select(Stage.target_days).where(Stage.id == stage_ids[0]))
        ).scalar() == 5
    rep_gid = (await client.run("{ viewer { id } }", role=Role.REP))["viewer"]["id"]
    cases: list[tuple[dict[str, Any], int]] = [
        ({"stageIds": [first_stage_gid]}, 40),
        ({"ownerIds": [rep_gid]}, 60),
        ({"sources": ["Referral"]}, 30),
        ({"minValue": "100", "maxValue": "109.00"}, 10),
        ({"search": "acme"}, 12),  # "Acme Corp" on 12 leads
        ({"search": "deal 11"}, 10),  # Deal 110..119
        ({"stalledOnly": True}, 40),
        ({"statuses": ["WON"]}, 0),
        ({"createdAfter": (start + timedelta(minutes=100)).isoformat()}, 20),
        ({"createdBefore": (start + timedelta(minutes=7)).isoformat()}, 7),
    ]
    for lead_filter, expected in cases:
        data = await client.run(PAGE, {"first": 100, "filter": lead_filter})
        assert data["leads"]["totalCount"] == expected, lead_filter
        assert len(data["leads"]["edges"]) == min(expected, 100), lead_filter


async def test_total_value_sums_every_matching_lead_not_just_the_page(client: Client, store: Store) -> None:
    await _seed(store, client)  # lead i is worth i
    stage_gid = (await client.run("{ pipelines { stages { id } } }"))["pipelines"][0]["stages"][0]["id"]
    rep_gid = (await client.run("{ viewer { id } }", role=Role.REP))["viewer"]["id"]
    cases: list[tuple[dict[str, Any] | None, int]] = [
        (None, sum(range(LEAD_COUNT))),
        ({"ownerIds": [rep_gid]}, sum(range(1, LEAD_COUNT, 2))),  # the rep owns the odd ones
        ({"stageIds": [stage_gid], "search": "deal 1"}, sum(i for i in range(100, LEAD_COUNT) if i % 3 == 0)),
        ({"statuses": ["WON"]}, 0),
    ]
    for lead_filter, expected in cases:
        data = await client.run(
            "query($f: LeadFilter) { leads(first: 5, filter: $f) { totalCount totalValue nodes { id } } }",
            {"f": lead_filter},
        )
        assert data["leads"]["totalValue"] == f"{expected}.00", lead_filter
        assert len(data["leads"]["nodes"]) <= 5


async def test_search_treats_like_wildcards_literally(client: Client, store: Store) -> None:
    await _seed(store, client)
    data = await client.run(PAGE, {"filter": {"search": "%"}})
    assert data["leads"]["totalCount"] == 0


BOARD = """
query($first: Int!) {
  leads(first: $first, orderBy: {field: VALUE, direction: ASC}) {
    edges { node { id title value isStalled stage { id name targetDays } owner { id name email }
                   activities(first: 3) { id subject kind } } }
  }
}
"""


@contextmanager
def _count_statements(store: Store) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)


async def test_a_page_costs_the_same_number_of_statements_whatever_its_size(
    client: Client, store: Store
) -> None:
    await _seed(store, client)
    await client.run(BOARD, {"first": 1})  # authenticates (then cached)
    counts = {}
    for size in (10, 100):
        with _count_statements(store) as statements:
            data = await client.run(BOARD, {"first": size})
        assert len(data["leads"]["edges"]) == size
        counts[size] = [s for s in statements if s.strip().upper().startswith("SELECT")]
    assert len(counts[10]) == len(counts[100]) == 2  # the page (stage and owner joined) + activities
    notes = [len(edge["node"]["activities"]) for edge in data["leads"]["edges"]]
    assert notes == [min(i % 4, 3) for i in range(100)]


async def test_loader_batches_every_key_into_one_statement(client: Client, store: Store) -> None:
    await _seed(store, client)
    async with store.read() as session:
        lead_ids = list((await session.execute(select(Lead.id).order_by(Lead.id).limit(30))).scalars())
    loaders = Loaders(store)
    with _count_statements(store) as statements:
        histories = await asyncio.gather(*(loaders.history.load(i) for i in lead_ids))
    selects = [s for s in statements if "stage_history" in s]
    assert len(selects) == 1
    assert [len(h) for h in histories] == [1] * 30
    assert [h[0].lead_id for h in histories] == lead_ids


async def test_stage_counts_and_totals(client: Client, store: Store) -> None:
    await _seed(store, client)
    async with store.write() as session:
        await session.execute(update(Lead).where(Lead.value_cents >= 11800).values(status="LOST"))
    data = await client.run(
        "{ pipelines { stages { name leadCount totalValue open: leadCount(status: OPEN)"
        " openValue: totalValue(status: OPEN) leads(first: 2) { totalCount edges { node { title } } } } } }"
    )
    stages = data["pipelines"][0]["stages"]
    assert [s["leadCount"] for s in stages] == [40, 40, 40]
    # Values are i for i ≡ stage (mod 3): 0+3+...+117 = 2340, 1+4+...+118 = 2380, 2+5+...+119 = 2420.
    assert [s["totalValue"] for s in stages] == ["2340.00", "2380.00", "2420.00"]
    assert [s["open"] for s in stages] == [40, 39, 39]
    assert [s["openValue"] for s in stages] == ["2340.00", "2262.00", "2301.00"]
    assert [s["leads"]["totalCount"] for s in stages] == [40, 40, 40]
