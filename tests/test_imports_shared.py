"""Import jobs shared by two real ``pipegraph serve`` processes on one PostgreSQL database.

To hold a job mid-import without relying on timing, the test takes ``LOCK TABLE leads IN SHARE MODE``:
the import stages every row, then waits to insert the leads, with its heartbeat still renewed beside it.
A job started on A and cancelled through B ends CANCELLED with nothing written; B restarting while A
imports leaves A's job running (it succeeds); A killed mid-import reads FAILED from B once its lease has
run out, and nothing of it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from pipegraph.api import ids
from server_support import Seed, ServerProcess, graphql, running_server, seed_database, stop
from test_imports_server import _lead_count, job, upload, write_csv

pytestmark = pytest.mark.postgres

LEASE_S = 2.0
ENV = {"PIPEGRAPH_IMPORT_LEASE": str(LEASE_S)}
ROWS = 20_000
JOB = "query ($id: ID!) { importJob(id: $id) { status importedCount error } }"
PROGRESS = """
subscription ($jobId: ID!) { importProgress(jobId: $jobId) { status rowsRead rowsLoaded importedCount } }
"""


@asynccontextmanager
async def leads_held(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Inserts into ``leads`` wait until the block ends (reads go on)."""
    connection = await asyncpg.connect(database_url)
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("LOCK TABLE leads IN SHARE MODE")
        try:
            yield connection
        finally:
            await transaction.rollback()
    finally:
        await connection.close()


async def _waiting_for_leads(admin: asyncpg.Connection) -> bool:
    """Whether a session waits for the lock on ``leads`` (the import, once it has staged its rows)."""
    waiting = await admin.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'leads'::regclass"
    )
    return bool(waiting)


async def _until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def _heartbeat(admin: asyncpg.Connection, job_id: str) -> datetime:
    pk = ids.decode_as(job_id, "ImportJob", field="id")
    beat: datetime = await admin.fetchval("SELECT heartbeat_at FROM import_jobs WHERE id = $1", pk)
    return beat


def _start(server: ServerProcess, seed: Seed, path: Path) -> str:
    response = upload(server, seed, path, wait=False)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def _ended(server: ServerProcess, seed: Seed, job_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        state = job(server, seed, job_id)
        return None if state["status"] in ("QUEUED", "RUNNING") else state

    ended: dict[str, Any] = await _until(check, "the job to end")
    return ended


async def _follow(server: ServerProcess, seed: Seed, job_id: str, snapshots: list[dict[str, Any]]) -> None:
    """Every snapshot ``importProgress`` sends, into ``snapshots``, until it completes."""
    async with websockets.connect(server.websocket_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {seed.key}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": PROGRESS, "variables": {"jobId": job_id}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 120)))["type"] == "next":
            assert "errors" not in message["payload"], message
            snapshots.append(message["payload"]["data"]["importProgress"])
        assert message["type"] == "complete", message


async def test_a_job_started_on_one_server_is_cancelled_through_another(
    postgres_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(postgres_url)
    path = write_csv(tmp_path / "leads.csv", ROWS)
    auth = {"Authorization": f"Bearer {seed.key}"}
    with (
        running_server(postgres_url, tmp_path, name="a", env=ENV) as a,
        running_server(postgres_url, tmp_path, name="b", env=ENV) as b,
    ):
        async with leads_held(postgres_url) as admin:
            job_id = await asyncio.to_thread(_start, a, seed, path)
            snapshots: list[dict[str, Any]] = []
            following = asyncio.create_task(_follow(b, seed, job_id, snapshots))
            await _until(lambda: _waiting_for_leads(admin), "the import to stage its rows")

            # B knows the job only by its row: the progress A writes there after its last batch.
            async def staged_on_b() -> bool:
                seen = job(b, seed, job_id)
                assert seen["status"] == "RUNNING", seen
                return (seen["rowsRead"], seen["rowsLoaded"]) == (ROWS, ROWS)

            await _until(staged_on_b, "B to read every row staged")
            staged = {"status": "RUNNING", "rowsRead": ROWS, "rowsLoaded": ROWS, "importedCount": 0}

            async def followed() -> bool:
                return staged in snapshots

            await _until(followed, "the subscription on B to follow the row")
            cancelled = httpx.delete(f"{b.base_url}/imports/{job_id}", headers=auth)
            assert cancelled.status_code == 202, cancelled.text
        ended = await _ended(b, seed, job_id)
        await asyncio.wait_for(following, 120)
        again = httpx.delete(f"{b.base_url}/imports/{job_id}", headers=auth)
        assert again.status_code == 409
        stop(a, signal.SIGTERM)
        stop(b, signal.SIGTERM)
    assert (ended["status"], ended["importedCount"], ended["rowsLoaded"]) == ("CANCELLED", 0, 0)
    assert snapshots[-1]["status"] == "CANCELLED"
    assert await _lead_count(postgres_url) == 0


async def test_restarting_one_server_leaves_anothers_running_job_alone(
    postgres_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(postgres_url)
    path = write_csv(tmp_path / "leads.csv", ROWS)
    with running_server(postgres_url, tmp_path, name="a", env=ENV) as a, contextlib.ExitStack() as servers:
        b = servers.enter_context(running_server(postgres_url, tmp_path, name="b", env=ENV))
        async with leads_held(postgres_url) as admin:
            job_id = await asyncio.to_thread(_start, a, seed, path)
            await _until(lambda: _waiting_for_leads(admin), "the import to stage its rows")
            stop(b, signal.SIGTERM)
            blocked = await _heartbeat(admin, job_id)
            b = servers.enter_context(running_server(postgres_url, tmp_path, name="b2", env=ENV, port=b.port))

            # A renews its lease while it waits: past one whole lease the job is still RUNNING.
            async def renewed() -> bool:
                return (await _heartbeat(admin, job_id) - blocked).total_seconds() > LEASE_S

            await _until(renewed, "a heartbeat one lease later")
            assert job(b, seed, job_id)["status"] == "RUNNING"
        ended = await _ended(b, seed, job_id)
        assert "marked FAILED" not in b.output()
        stop(b, signal.SIGTERM)
        stop(a, signal.SIGTERM)
    assert (ended["status"], ended["importedCount"]) == ("SUCCEEDED", ROWS)
    assert await _lead_count(postgres_url) == ROWS


async def test_a_killed_servers_job_reads_failed_from_another_once_its_lease_ran_out(
    postgres_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(postgres_url)
    path = write_csv(tmp_path / "leads.csv", ROWS)
    with (
        running_server(postgres_url, tmp_path, name="a", env=ENV) as a,
        running_server(postgres_url, tmp_path, name="b", env=ENV) as b,
    ):
        async with leads_held(postgres_url) as admin:
            job_id = await asyncio.to_thread(_start, a, seed, path)
            await _until(lambda: _waiting_for_leads(admin), "the import to stage its rows")
            a.process.send_signal(signal.SIGKILL)
            a.process.wait()
            ended = await _ended(b, seed, job_id)
        async with httpx.AsyncClient() as client:
            read = await graphql(client, b, seed.key, JOB, id=job_id)
        stop(b, signal.SIGTERM)
    assert read["importJob"] == {"status": "FAILED", "importedCount": 0, "error": ended["error"]}
    assert (ended["status"], ended["importedCount"], ended["rowsLoaded"]) == ("FAILED", 0, 0)
    assert "stopped" in ended["error"]
    assert await _lead_count(postgres_url) == 0
