"""Writes of a pipeline sharing commits (``pipegraph.db.commit_groups``) on a real PostgreSQL server.

Concurrent changes through the app: every one answered as it would be alone, the rows afterwards exactly
what the answers say (versions, history, one open stay per lead, the event log, daily totals equal to a
rebuild), and fewer commits than changes. Then the group itself: a statement that fails in a group
reaches its own caller only, and the others are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from api_support import Client, create_lead, create_pipeline, make_client
from pipegraph.db import migrate
from pipegraph.db.commit_groups import CommitGroups
from pipegraph.db.direct import DirectConnections
from pipegraph.db.session import Store
from test_flow_days import _assert_same_totals as assert_same_totals
from test_flow_days import _rebuilt as rebuilt_totals
from test_flow_days import _totals as stored_totals

pytestmark = pytest.mark.postgres

MOVE = """mutation($i: MoveLeadInput!) { moveLead(input: $i) {
  lead { id version stage { id } } userErrors { code message } } }"""
LEADS = 16
MOVES_EACH = 8


@asynccontextmanager
async def _client(url: str) -> AsyncIterator[tuple[Client, Store]]:
    store = Store.from_url(url)
    await migrate.upgrade(store.engine)
    try:
        async for client in make_client(store, direct_writes=True):
            yield client, store
    finally:
        await store.dispose()


async def _moves(client: Client, lead: str, stages: list[str], first: int) -> list[dict[str, Any]]:
    """``MOVES_EACH`` moves of one lead, each naming the version the previous answer gave."""
    version, answers, at = 1, [], 0  # a new lead is in the first stage
    for _ in range(MOVES_EACH):
        at = (at + 1 + first % (len(stages) - 1)) % len(stages)  # never the stage it is in
        stage = stages[at]
        response = await client.raw(
            MOVE, {"i": {"leadId": lead, "toStageId": stage, "expectedVersion": version}}
        )
        payload = response.json()["data"]["moveLead"]
        answers.append(payload)
        if not payload["userErrors"]:
            version = payload["lead"]["version"]
    return answers


async def _scalar(store: Store, sql: str) -> Any:
    async with store.read() as session:
        return (await session.execute(text(sql))).scalar_one()


async def test_concurrent_moves_share_commits_and_write_what_they_answer(postgres_url: str) -> None:
    async with _client(postgres_url) as (client, store):
        pipeline = await create_pipeline(client, template="GENERAL_B2B")
        stages = [stage["id"] for stage in pipeline["stages"] if not stage["isPostSale"]]
        leads = [(await create_lead(client, pipeline["id"], value="100.00"))["id"] for _ in range(LEADS)]
        groups: CommitGroups = client.app.state.lead_writes._backend.groups
        before = (groups.commits, groups.statements)

        answers = await asyncio.gather(*(_moves(client, lead, stages, n) for n, lead in enumerate(leads)))

        # Every move answered as done, each lead's versions one after another.
        for lead_answers in answers:
            assert [payload["userErrors"] for payload in lead_answers] == [[]] * MOVES_EACH
            assert [payload["lead"]["version"] for payload in lead_answers] == list(range(2, 2 + MOVES_EACH))
        moves = LEADS * MOVES_EACH
        commits, statements = groups.commits - before[0], groups.statements - before[1]
        assert statements == moves
        assert commits < moves  # some commits carried several changes

        # The rows say what the answers said.
        assert await _scalar(store, "SELECT count(*) FROM leads WHERE version = 9") == LEADS
        assert (
            await _scalar(store, "SELECT count(*) FROM stage_history WHERE from_stage_id IS NOT NULL")
            == moves
        )
        one_open_stay = (
            "SELECT count(*) FROM (SELECT lead_id FROM stage_stays WHERE left_at IS NULL GROUP BY lead_id "
            "HAVING count(*) = 1) AS one"
        )
        assert await _scalar(store, one_open_stay) == LEADS
        events = await _scalar(
            store,
            "SELECT count(*) FROM lead_events e JOIN leads l ON l.id = e.lead_id WHERE e.version > 1",
        )
        assert events == moves
        # Each lead's events in the log in the order of its versions.
        assert (
            await _scalar(
                store,
                "SELECT count(*) FROM (SELECT lead_id, version, lag(version) OVER (PARTITION BY lead_id "
                "ORDER BY id) AS previous FROM lead_events) AS e WHERE previous IS NOT NULL "
                "AND version <> previous + 1",
            )
            == 0
        )
        # The daily totals kept by the grouped writes equal a rebuild from the stays.
        kept = await stored_totals(store)
        assert_same_totals(kept, await rebuilt_totals(store))


@pytest.fixture
async def scratch(postgres_url: str) -> str:
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute("CREATE TABLE numbers (n integer PRIMARY KEY CHECK (n >= 0))")
    finally:
        await connection.close()
    return postgres_url


async def test_a_statement_failing_in_a_group_fails_alone(scratch: str) -> None:
    connections = DirectConnections(scratch, size=4)
    groups = CommitGroups(connections)
    insert = "INSERT INTO numbers VALUES ($1) RETURNING n"
    try:
        # A slow statement of the key is committing while the others arrive: they form one group.
        first = asyncio.create_task(groups.fetch("key", "SELECT pg_sleep(0.3), 100 AS n", []))
        await asyncio.sleep(0.1)
        rest = [asyncio.create_task(groups.fetch("key", insert, [n])) for n in (1, 2, -3, 4, 5)]
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        assert isinstance(outcomes[3], asyncpg.CheckViolationError)
        assert [row[0]["n"] for row in outcomes if isinstance(row, list)] == [100, 1, 2, 4, 5]
        # The group was tried once together, then each of its statements alone.
        assert (groups.commits, groups.statements) == (1 + 4, 1 + 4)
        async with connections.connection() as connection:
            assert [row["n"] for row in await connection.fetch("SELECT n FROM numbers ORDER BY n")] == [
                1,
                2,
                4,
                5,
            ]

        # Without a failure the group commits once.
        first = asyncio.create_task(groups.fetch("key", "SELECT pg_sleep(0.3), 100 AS n", []))
        await asyncio.sleep(0.1)
        rest = [asyncio.create_task(groups.fetch("key", insert, [n])) for n in (6, 7, 8)]
        await asyncio.gather(first, *rest)
        assert (groups.commits, groups.statements) == (5 + 2, 5 + 4)
    finally:
        await groups.close()
        await connections.close()


async def test_keys_do_not_share_commits(scratch: str) -> None:
    connections = DirectConnections(scratch, size=4)
    groups = CommitGroups(connections)
    try:
        first = asyncio.create_task(groups.fetch("a", "SELECT pg_sleep(0.3), 1 AS n", []))
        await asyncio.sleep(0.1)
        # Key "b" has nothing committing: its statement goes at once, alone, before "a" ends.
        assert (await groups.fetch("b", "SELECT 2 AS n", []))[0]["n"] == 2
        assert not first.done()
        assert (await first)[0]["n"] == 1
        assert (groups.commits, groups.statements) == (2, 2)
    finally:
        await groups.close()
        await connections.close()
