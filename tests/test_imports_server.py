"""Imports as jobs through a real ``pipegraph serve``, on both backends: a large file imported with
stays and daily totals exact, a bad last row refusing the whole file, and a server killed mid-import
leaving nothing behind and the job FAILED."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from pipegraph.api import ids
from pipegraph.db import flow_days, stays
from pipegraph.db.models import Lead, Stage, StageFlowDay
from pipegraph.db.session import Store
from pipegraph.services import pipelines
from server_support import Seed, ServerProcess, graphql, running_server, seed_database

STAGES = ("Prospecting", "qualifying", "NEGOTIATION", "")
TOTALS = (
    "SELECT pipeline_id, day, kind, stage_id, status, next_stage_id, next_status, days_in_stage, n, "
    "seconds_sum FROM stage_flow_days WHERE n <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
)


def write_csv(path: Path, rows: int, *, last: str | None = None) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("Deal Name,Amount,Stage,Close\n")
        for n in range(rows):
            out.write(f"Deal {n},{n % 1000}.50,{STAGES[n % 4]},03/{n % 28 + 1:02d}/2027\n")
        if last is not None:
            out.write(last)
    return path


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(1 << 16):
            yield chunk


def upload(server: ServerProcess, seed: Seed, path: Path, *, wait: bool) -> httpx.Response:
    params = {"pipelineId": seed.pipeline_id, "map": "Deal Name=title,Amount=value,Close=expected_close_date"}
    if wait:
        params["wait"] = "true"
    return httpx.post(
        f"{server.base_url}/imports",
        params=params,
        content=_chunks(path),
        headers={"Authorization": f"Bearer {seed.key}", "Content-Type": "text/csv"},
        timeout=600,
    )


def job(server: ServerProcess, seed: Seed, job_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/imports/{job_id}", headers={"Authorization": f"Bearer {seed.key}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _lead_count(database_url: str) -> int:
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            return int((await session.execute(select(func.count()).select_from(Lead))).scalar_one())
    finally:
        await store.dispose()


@pytest.mark.slow
async def test_a_large_file_imports_with_exact_stays_and_totals(database_url: str, tmp_path: Path) -> None:
    seed = await seed_database(database_url)
    path = write_csv(tmp_path / "leads.csv", 100_000)
    with running_server(database_url, tmp_path) as server:
        response = upload(server, seed, path, wait=True)
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert (outcome["status"], outcome["importedCount"], outcome["rowsRead"]) == (
        "SUCCEEDED",
        100_000,
        100_000,
    )
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            assert (await session.execute(select(func.count()).select_from(Lead))).scalar_one() == 100_000
            stored = [tuple(r) for r in await session.execute(text("SELECT * FROM stage_stays ORDER BY 1"))]
            derived = stays.stays_sql(session.get_bind().dialect.name) + " ORDER BY 1"
            assert stored == [tuple(r) for r in await session.execute(text(derived))]
            totals = [tuple(r) for r in await session.execute(text(TOTALS))]
        async with store.write() as session:
            await flow_days.rebuild(session)
        async with store.read() as session:
            assert [tuple(r) for r in await session.execute(text(TOTALS))] == totals
            assert (await session.execute(select(func.count()).select_from(StageFlowDay))).scalar_one() > 0
    finally:
        await store.dispose()


async def test_one_bad_row_at_the_end_refuses_the_file(database_url: str, tmp_path: Path) -> None:
    seed = await seed_database(database_url)
    path = write_csv(tmp_path / "leads.csv", 20_000, last=",-1,Nowhere,31.02.2027\n")
    with running_server(database_url, tmp_path) as server:
        response = upload(server, seed, path, wait=True)
        async with httpx.AsyncClient() as client:
            query = (
                "query ($id: ID!) { importJob(id: $id) { status rowsRead problemCount problems { field } } }"
            )
            read = await graphql(client, server, seed.key, query, id=response.json()["id"])
    outcome = response.json()
    assert (outcome["status"], outcome["importedCount"], outcome["problemCount"]) == ("FAILED", 0, 4)
    assert read["importJob"] == {
        "status": "FAILED",
        "rowsRead": 20_001,
        "problemCount": 4,
        "problems": [{"field": p["field"]} for p in outcome["problems"]],
    }
    assert [p["field"] for p in outcome["problems"]] == [
        "input.csv[row 20001].title",
        "input.csv[row 20001].value",
        "input.csv[row 20001].stage",
        "input.csv[row 20001].expected_close_date",
    ]
    assert await _lead_count(database_url) == 0


async def test_a_server_killed_mid_import_leaves_nothing_and_the_job_failed(
    database_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(database_url)
    path = write_csv(tmp_path / "leads.csv", 400_000)
    with running_server(database_url, tmp_path, name="first") as server:
        response = upload(server, seed, path, wait=False)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + 120
        while job(server, seed, job_id)["rowsLoaded"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    # The same instance (host and port) starting again fails its own unfinished jobs at once.
    with running_server(database_url, tmp_path, name="second", port=server.port) as server:
        after = job(server, seed, job_id)
    assert after["status"] == "FAILED"
    assert "stopped" in after["error"]
    assert await _lead_count(database_url) == 0


async def test_export_then_import_into_an_empty_pipeline_gives_the_same_leads(
    database_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(database_url)
    store = Store.from_url(database_url)
    try:
        async with store.write() as session:
            copy = await pipelines.create_pipeline(session, name="Copy", template="CLASSIC", actor=None)
    finally:
        await store.dispose()
    path = write_csv(tmp_path / "leads.csv", 700)
    auth = {"Authorization": f"Bearer {seed.key}"}
    with running_server(database_url, tmp_path) as server:
        assert upload(server, seed, path, wait=True).json()["status"] == "SUCCEEDED"
        exported = httpx.get(
            f"{server.base_url}/exports/leads.csv", params={"pipelineId": seed.pipeline_id}, headers=auth
        )
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/csv")
        again = httpx.post(
            f"{server.base_url}/imports",
            params={"pipelineId": ids.encode("Pipeline", copy.id), "wait": "true"},
            content=exported.content,
            headers=auth,
        )
        assert (again.json()["status"], again.json()["importedCount"]) == ("SUCCEEDED", 700)
        narrowed = httpx.get(
            f"{server.base_url}/exports/leads.csv",
            params={"pipelineId": seed.pipeline_id, "minValue": "690", "search": "Deal 69"},
            headers=auth,
        )
        names = ("Prospecting", "Qualifying", "Negotiation", "Prospecting")
        assert narrowed.text.splitlines()[1:] == [
            f"Deal {n},,,,,,{n}.50,{names[n % 4]},ada@example.com,2027-03-{n % 28 + 1:02d},no,no,no,no"
            for n in range(690, 700)
        ]
        refused = httpx.get(
            f"{server.base_url}/exports/leads.csv", params={"statuses": "MAYBE"}, headers=auth
        )
        assert refused.status_code == 400
        assert httpx.get(f"{server.base_url}/exports/leads.csv").status_code == 401
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            columns = (Lead.title, Lead.value_cents, Lead.stage_id, Lead.expected_close_date, Lead.owner_id)
            rows = (await session.execute(select(Lead.pipeline_id, *columns).order_by(Lead.id))).all()
            stage_names = dict((await session.execute(select(Stage.id, Stage.name))).all())
    finally:
        await store.dispose()

    def leads_of(pipeline_id: int) -> list[tuple[object, ...]]:
        return [(r[1], r[2], stage_names[r[3]], r[4], r[5]) for r in rows if r[0] == pipeline_id]

    assert leads_of(copy.id) == leads_of(ids.decode_as(seed.pipeline_id, "Pipeline", field="id"))


async def test_a_cancelled_import_writes_nothing(database_url: str, tmp_path: Path) -> None:
    seed = await seed_database(database_url)
    path = write_csv(tmp_path / "leads.csv", 400_000)
    auth = {"Authorization": f"Bearer {seed.key}"}
    with running_server(database_url, tmp_path) as server:
        job_id = upload(server, seed, path, wait=False).json()["id"]
        deadline = time.monotonic() + 120
        while job(server, seed, job_id)["rowsLoaded"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancelled = httpx.delete(f"{server.base_url}/imports/{job_id}", headers=auth)
        assert cancelled.status_code == 202, cancelled.text
        while (state := job(server, seed, job_id))["status"] in ("QUEUED", "RUNNING"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (state["status"], state["importedCount"]) == ("CANCELLED", 0)
        again = httpx.delete(f"{server.base_url}/imports/{job_id}", headers=auth)
        assert again.status_code == 409
    assert await _lead_count(database_url) == 0
