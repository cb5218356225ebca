"""Concurrent clients against a real server: optimistic locking on PostgreSQL (two worker processes) and
queued writers on SQLite."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from pipegraph.api import ids
from pipegraph.db.session import Store
from server_support import CREATE_LEAD, MOVE_LEAD, ServerProcess, graphql, running_server, seed_database, stop

RACERS = 50
SQLITE_WRITERS = 20
WRITES_EACH = 5


async def _scalar(database_url: str, sql: str, **params: object) -> Any:
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            return (await session.execute(text(sql), params)).scalar_one()
    finally:
        await store.dispose()


def _client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=60, limits=limits)


@pytest.mark.postgres
async def test_same_version_moves_from_many_clients_let_exactly_one_win(
    postgres_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(postgres_url)
    with running_server(postgres_url, tmp_path, args=["--workers", "2"]) as server:
        async with _client(RACERS) as http:
            created = await graphql(
                http, server, seed.key, CREATE_LEAD, pipelineId=seed.pipeline_id, title="Hot"
            )
            lead_id = created["createLead"]["lead"]["id"]
            # Stages a move may enter (the template's last, post-sale stage is refused on its own
            # merits, before or after the winner, so it would not show who waited for whom).
            targets = seed.stage_ids[1:-1]

            async def move(number: int) -> dict[str, Any]:
                data = await graphql(
                    http,
                    server,
                    seed.key,
                    MOVE_LEAD,
                    leadId=lead_id,
                    stageId=targets[number % len(targets)],
                    version=1,
                )
                result: dict[str, Any] = data["moveLead"]
                return result

            results = await asyncio.gather(*(move(n) for n in range(RACERS)))
        output = stop(server, signal.SIGTERM)
    assert output.count("Started server process") == 2, output

    winners = [r for r in results if not r["userErrors"]]
    losers = [r for r in results if r["userErrors"]]
    assert len(winners) == 1
    assert winners[0]["userErrors"] == []
    assert winners[0]["lead"]["version"] == 2
    assert len(losers) == RACERS - 1
    for loser in losers:
        [error] = loser["userErrors"]
        assert error["code"] == "CONFLICT"
        assert error["field"] == "input.expectedVersion"
        # Every loser waited for the winner's row lock, so it is told the version the winner wrote.
        assert "is at version 2, not 1" in error["message"]
        # With the lead as the winner left it, to retry from.
        assert loser["lead"] == winners[0]["lead"]

    pk = ids.decode_as(lead_id, "Lead", field="lead_id")
    assert await _scalar(postgres_url, "SELECT version FROM leads WHERE id = :pk", pk=pk) == 2
    history = "SELECT count(*) FROM stage_history WHERE lead_id = :pk"
    assert await _scalar(postgres_url, history, pk=pk) == 2  # creation and the one move
    stays = "SELECT count(*) FROM stage_stays WHERE lead_id = :pk"
    assert await _scalar(postgres_url, stays, pk=pk) == 2
    open_stays = "SELECT count(*) FROM stage_stays WHERE lead_id = :pk AND left_at IS NULL"
    assert await _scalar(postgres_url, open_stays, pk=pk) == 1


async def _write_load(server: ServerProcess, key: str, pipeline_id: str) -> None:
    async with _client(SQLITE_WRITERS) as http:

        async def writer(number: int) -> None:
            for index in range(WRITES_EACH):
                title = f"writer {number} lead {index}"
                data = await graphql(http, server, key, CREATE_LEAD, pipelineId=pipeline_id, title=title)
                assert data["createLead"]["userErrors"] == []

        await asyncio.gather(*(writer(n) for n in range(SQLITE_WRITERS)))


async def test_twenty_concurrent_sqlite_writers_queue_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.sqlite3'}"
    seed = await seed_database(url)
    with running_server(url, tmp_path) as server:
        await _write_load(server, seed.key, seed.pipeline_id)
        output = stop(server, signal.SIGTERM)
    assert "database is locked" not in output
    assert await _scalar(url, "SELECT count(*) FROM leads") == SQLITE_WRITERS * WRITES_EACH
    assert await _scalar(url, "SELECT count(DISTINCT title) FROM leads") == SQLITE_WRITERS * WRITES_EACH
    assert await _scalar(url, "SELECT count(*) FROM stage_history") == SQLITE_WRITERS * WRITES_EACH
