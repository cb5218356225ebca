"""``pipegraph db backup``: a consistent SQLite copy taken while a real server writes."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from pipegraph.cli import main
from server_support import CREATE_LEAD, graphql, running_server, seed_database, stop

WRITERS = 4
LEADS_EACH = 15


def _count(path: Path, sql: str) -> int:
    connection = sqlite3.connect(path)
    try:
        (value,) = connection.execute(sql).fetchone()
    finally:
        connection.close()
    return int(value)


async def test_backup_while_the_server_writes_is_a_consistent_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "live.sqlite3"
    url = f"sqlite:///{database}"
    seed = await seed_database(url)
    copies = [tmp_path / f"copy-{n}.sqlite3" for n in range(3)]
    with running_server(url, tmp_path) as server:
        async with httpx.AsyncClient(timeout=30) as http:

            async def writer(number: int) -> None:
                for index in range(LEADS_EACH):
                    title = f"w{number}-{index}"
                    created = await graphql(
                        http, server, seed.key, CREATE_LEAD, pipelineId=seed.pipeline_id, title=title
                    )
                    assert created["createLead"]["userErrors"] == []

            async def back_up() -> None:
                for copy in copies:
                    await asyncio.sleep(0.2)
                    # In a thread, as another process would: the server keeps writing meanwhile.
                    code = await asyncio.to_thread(
                        main, ["db", "backup", "--database-url", url, "--output", str(copy)]
                    )
                    assert code == 0

            await asyncio.gather(back_up(), *(writer(n) for n in range(WRITERS)))
        stop(server, signal.SIGTERM)

    assert f"backed up the database to {copies[0]}" in capsys.readouterr().out
    final = _count(database, "SELECT count(*) FROM leads")
    assert final == WRITERS * LEADS_EACH
    previous = 0
    for copy in copies:
        assert _count(copy, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check != 'ok'") == 0
        leads = _count(copy, "SELECT count(*) FROM leads")
        # Each copy is one commit's state: every lead with its creation row and its open stay.
        assert _count(copy, "SELECT count(*) FROM stage_history") == leads
        assert _count(copy, "SELECT count(*) FROM stage_stays") == leads
        assert previous <= leads <= final
        previous = leads


def test_backup_refuses_to_overwrite_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "db.sqlite3"
    sqlite3.connect(database).close()
    existing = tmp_path / "exists.sqlite3"
    existing.write_bytes(b"keep me")
    assert main(["db", "backup", "--database-url", f"sqlite:///{database}", "--output", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"


def test_backup_of_a_missing_database_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.sqlite3"
    output = tmp_path / "copy.sqlite3"
    assert main(["db", "backup", "--database-url", f"sqlite:///{missing}", "--output", str(output)]) == 2
    assert "no database file" in capsys.readouterr().err
    assert not missing.exists()
    assert not output.exists()


def test_backup_of_postgresql_points_to_pg_dump(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    assert main(["db", "backup", "--database-url", url]) == 2
    assert "pg_dump" in capsys.readouterr().err
