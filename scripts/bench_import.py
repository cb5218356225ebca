"""CSV import throughput and memory, end to end through ``pipegraph serve``, on SQLite and PostgreSQL.

For each backend and each size: a fresh database, a fresh server, a generated file of that many rows
uploaded to ``POST /imports?wait=true`` (the bulk path). Reported: rows/s over the whole request
(upload, checks, staging, apply, commit) and the server's peak resident memory (VmHWM) after it. The old
path, ``importLeads`` (one ``create_lead`` per row), runs on ``--baseline-rows`` rows in the same run,
so the ratio compares like with like on this machine.

    python scripts/bench_import.py --rows 100000 --rows 1000000 \
        --postgres-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx

from pipegraph.api import ids
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, pipelines, users

STAGES = ("Prospecting", "qualifying", "NEGOTIATION", "")
IMPORT_LEADS = """mutation ($i: ImportLeadsInput!) {
  importLeads(input: $i) { importedCount userErrors { field message } }
}"""


def write_csv(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("title,value,stage,expected_close_date,budget\n")
        for n in range(rows):
            flag = "yes" if n % 3 else "no"
            out.write(f"Deal {n},{n % 1000}.50,{STAGES[n % 4]},2027-03-{n % 28 + 1:02d},{flag}\n")
    return path


async def seed(url: str) -> tuple[str, str]:
    store = Store.from_url(url)
    try:
        await migrate.upgrade(store.engine)
        async with store.write() as session:
            admin = await users.create_user(session, name="Ada", email="ada@example.com", role=Role.ADMIN)
            _, key = await api_keys.create_api_key(session, user_id=admin.id)
            pipeline = await pipelines.create_pipeline(session, name="Sales", template="CLASSIC", actor=None)
    finally:
        await store.dispose()
    return key, ids.encode("Pipeline", pipeline.id)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, url: str, log: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEGRAPH_")}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pipegraph.cli",
                    "serve",
                    "--port",
                    str(self.port),
                    "--database-url",
                    url,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)

    def peak_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(1 << 16):
            yield chunk


def bulk(url: str, rows: int, work: Path) -> tuple[float, float]:
    key, pipeline = asyncio.run(seed(url))
    path = write_csv(work / f"bulk-{rows}.csv", rows)
    server = Server(url, work / f"server-{rows}.log")
    try:
        started = time.perf_counter()
        response = httpx.post(
            f"{server.base}/imports",
            params={"pipelineId": pipeline, "wait": "true"},
            content=_chunks(path),
            headers={"Authorization": f"Bearer {key}"},
            timeout=3600,
        )
        elapsed = time.perf_counter() - started
        outcome = response.json()
        assert (outcome["status"], outcome["importedCount"]) == ("SUCCEEDED", rows), outcome
        return rows / elapsed, server.peak_mib()
    finally:
        server.stop()
        path.unlink()


def old_path(url: str, rows: int, work: Path) -> float:
    key, pipeline = asyncio.run(seed(url))
    text = write_csv(work / "old.csv", rows).read_text()
    server = Server(url, work / "server-old.log")
    try:
        started = time.perf_counter()
        response = httpx.post(
            f"{server.base}/graphql",
            json={"query": IMPORT_LEADS, "variables": {"i": {"pipelineId": pipeline, "csv": text}}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=600,
        )
        elapsed = time.perf_counter() - started
        body = response.json()
        # A loaded machine can push the old path past the request limit: say so rather than guess.
        assert "data" in body, f"the old path failed on {rows} rows (try fewer): {response.text[:300]}"
        assert body["data"]["importLeads"]["importedCount"] == rows, response.text[:300]
        return rows / elapsed
    finally:
        server.stop()


class Databases:
    """A fresh database per measurement: SQLite files, or PostgreSQL databases dropped afterwards."""

    def __init__(self, backend: str, work: Path, postgres_url: str | None) -> None:
        self.backend, self.work, self.admin = backend, work, postgres_url
        self.made: list[str] = []

    def new(self, name: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.work / f'{name}.sqlite3'}"
        assert self.admin is not None
        database = f"bench_import_{name}_{os.getpid()}"
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{database}"'))
        asyncio.run(self._admin(f'CREATE DATABASE "{database}"'))
        self.made.append(database)
        return f"{self.admin.rpartition('/')[0]}/{database}"

    async def _admin(self, sql: str) -> None:
        assert self.admin is not None
        connection = await asyncpg.connect(self.admin)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def drop(self) -> None:
        for database in self.made:
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="file sizes (default 100000)")
    parser.add_argument(
        "--baseline-rows", type=int, default=1000, help="rows for the old path (default 1000)"
    )
    parser.add_argument("--postgres-url", help="admin URL of a PostgreSQL server (omit: SQLite only)")
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"], help="default: both")
    args = parser.parse_args()
    sizes = args.rows or [100_000]
    backends = args.backend or (["sqlite", "postgresql"] if args.postgres_url else ["sqlite"])
    print("| backend | rows | bulk rows/s | peak server RSS MiB | old path rows/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
            work = Path(tmp)
            databases = Databases(backend, work, args.postgres_url)
            try:
                old = old_path(databases.new("old"), args.baseline_rows, work)
                for rows in sizes:
                    rate, peak = bulk(databases.new(f"bulk{rows}"), rows, work)
                    figures = f"{rate:,.0f} | {peak:,.0f} | {old:,.0f} | {rate / old:.1f}x"
                    print(f"| {backend} | {rows:,} | {figures} |")
                    sys.stdout.flush()
            finally:
                databases.drop()


if __name__ == "__main__":
    main()
