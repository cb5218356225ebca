"""Mixed read/write load on PostgreSQL through ``pipegraph serve --workers N``, then a count of every write.

For each phase (the measured one with ``--workers 2`` and, in the same run, the baseline with one worker)
the script creates a fresh PostgreSQL database, seeds it (``pipegraph.demo.load_synthetic``), starts
``pipegraph serve`` and keeps ``--connections`` keep-alive HTTP connections busy for ``--duration``
seconds after a short warm-up. Each connection has its own API key (a MANAGER) and draws, from a seeded
generator, one of:

- a leads page (``leads(pipelineId, first: 50)`` with stage and owner names),
- ``pipelineMetrics`` over the last 90 days (stages, overall),
- ``createLead`` with a title unique to the run,
- ``moveLead`` of one of the leads this connection created, with the version it last saw.

A request counts as an error unless it answers HTTP 200 without GraphQL errors or ``userErrors``, so a
CONFLICT or a dropped connection is an error. Afterwards the script counts in the database: every
acknowledged creation is a lead with its title exactly once, every acknowledged move raised its lead's
version by one and added one history row; nothing else was written.

Prints requests/s, p50/p99 latency per operation and overall, the error count and the verification for
both phases, and the ratio of the two throughputs. The client is a small asyncio HTTP/1.1 client in this
process (much lighter than a general-purpose one), so on a small machine it shares the cores with the
server and PostgreSQL.

    python scripts/bench_load.py [--duration 60] [--connections 32] [--workers 2] [--baseline-workers 1]
                                 [--leads 4000] [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench_api import free_port, postgres_database
from pipegraph import demo
from pipegraph.api import ids
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, pipelines, users

WARM_UP_S = 3.0
# Share of each operation in the mix: reads dominate, as with people working a board.
MIX = {"leadsPage": 0.45, "pipelineMetrics": 0.05, "createLead": 0.25, "moveLead": 0.25}
LEADS_PAGE = (
    "query ($p: ID!) { leads(pipelineId: $p, first: 50) "
    "{ edges { node { id title value stage { name } owner { name } } } } }"
)
METRICS = (
    "query ($p: ID!, $from: DateTime!, $to: DateTime!) "
    "{ pipelineMetrics(pipelineId: $p, from: $from, to: $to) "
    "{ stages { name entered conversionRate } overall { winRate weightedPipeline } } }"
)
CREATE = (
    'mutation ($p: ID!, $t: String!) { createLead(input: {pipelineId: $p, title: $t, value: "1000"}) '
    "{ lead { id version } userErrors { code message } } }"
)
MOVE = (
    "mutation ($l: ID!, $s: ID!, $v: Int!) "
    "{ moveLead(input: {leadId: $l, toStageId: $s, expectedVersion: $v}) "
    "{ lead { version } userErrors { code message } } }"
)


@dataclass(frozen=True)
class Setup:
    keys: list[str]
    pipeline_id: str
    stage_ids: list[str]


@dataclass
class Tally:
    """What one phase did, as the clients saw it."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    created: dict[str, int] = field(default_factory=dict)  # title → lead pk
    versions: dict[int, int] = field(default_factory=dict)  # lead pk → last acknowledged version
    moves: int = 0
    first_error: str | None = None


# --- database and server --------------------------------------------------------------------------


async def seed(database_url: str, leads: int, connections: int) -> Setup:
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        await demo.load_synthetic(store, leads=leads, activities_per_lead=0.2)
        async with store.write() as session:
            keys = []
            for number in range(connections):
                user = await users.create_user(
                    session, name=f"Load {number}", email=f"load{number}@example.com", role=Role.MANAGER
                )
                keys.append((await api_keys.create_api_key(session, user_id=user.id))[1])
            pipeline = min(await pipelines.list_pipelines(session), key=lambda p: p.id)
            stages = [s for s in await pipelines.current_stages(session, pipeline.id) if not s.is_post_sale]
        return Setup(keys, ids.encode("Pipeline", pipeline.id), [ids.encode("Stage", s.id) for s in stages])
    finally:
        await store.dispose()


@dataclass(frozen=True)
class Server:
    """A running ``pipegraph serve``: its port and the process started (with workers, their parent)."""

    port: int
    pid: int


@contextmanager
def serve(
    database_url: str, workers: int, pool_size: int, log: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """``pipegraph serve --workers N`` with the per-key budget off, until every worker has started;
    stopped with SIGTERM (killed after 30 s) on the way out, whatever the way out is."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEGRAPH_")} | dict(extra_env or {})
    env["PIPEGRAPH_POOL_SIZE"] = str(pool_size)
    # Throughput is measured here, not the per-key budget: 32 clients at full speed would be throttled.
    env["PIPEGRAPH_COST_BUDGET"] = "0"
    command = [sys.executable, "-m", "pipegraph.cli", "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--database-url", database_url], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while log.read_text(errors="replace").count("Application startup complete") < workers:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).raise_for_status()
        yield Server(port, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


# --- the load ------------------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read a Content-Length response."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.head = (
            f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(payload).encode()
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        try:
            header = await self.reader.readuntil(b"\r\n\r\n")
            status = int(header.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in header.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return status, json.loads(await self.reader.readexactly(length))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _failure(status: int, body: dict[str, Any], operation: str) -> str | None:
    if status != 200:
        return f"HTTP {status}: {json.dumps(body)[:300]}"
    if body.get("errors"):
        return json.dumps(body["errors"])[:300]
    result = (body.get("data") or {}).get(operation)
    if isinstance(result, dict) and result.get("userErrors"):
        return json.dumps(result["userErrors"])[:300]
    return None


async def client(
    number: int, port: int, setup: Setup, run: str, until: float, measure_from: float, tally: Tally
) -> None:
    rng = random.Random(number)
    connection = HttpConnection(port, setup.keys[number])
    # Leads this connection created, with their stages: only it moves them, so it knows their versions.
    mine: list[int] = []
    stage_of: dict[int, str] = {}
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(days=90)).isoformat(), "to": now.isoformat()}
    operations, weights = list(MIX), list(MIX.values())
    sequence = 0
    try:
        while (started := time.perf_counter()) < until:
            operation = rng.choices(operations, weights)[0]
            if operation == "moveLead" and not mine:
                operation = "createLead"
            if operation == "leadsPage":
                payload: dict[str, Any] = {"query": LEADS_PAGE, "variables": {"p": setup.pipeline_id}}
            elif operation == "pipelineMetrics":
                payload = {"query": METRICS, "variables": {"p": setup.pipeline_id, **window}}
            elif operation == "createLead":
                sequence += 1
                title = f"{run}-{number}-{sequence}"
                payload = {"query": CREATE, "variables": {"p": setup.pipeline_id, "t": title}}
            else:
                lead = rng.choice(mine)
                stage = rng.choice([s for s in setup.stage_ids if s != stage_of[lead]])
                variables = {"l": ids.encode("Lead", lead), "s": stage, "v": tally.versions[lead]}
                payload = {"query": MOVE, "variables": variables}
            try:
                status, body = await connection.post(payload)
                failure = _failure(status, body, operation)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                failure, body = f"{type(error).__name__}: {error}", {}
            elapsed = time.perf_counter() - started
            if failure is None and operation == "createLead":
                lead = ids.decode_as(body["data"]["createLead"]["lead"]["id"], "Lead", field="id")
                tally.created[title] = lead
                tally.versions[lead] = 1
                stage_of[lead] = setup.stage_ids[0]  # new leads start in the first stage
                mine.append(lead)
            elif failure is None and operation == "moveLead":
                tally.versions[lead] = body["data"]["moveLead"]["lead"]["version"]
                stage_of[lead] = stage
                tally.moves += 1
            if failure is not None:
                # Writes made during the warm-up are verified like the others; only timing skips them.
                tally.errors[operation] += 1
                tally.first_error = tally.first_error or f"{operation}: {failure}"
            elif started >= measure_from:
                tally.latencies[operation].append(elapsed)
    finally:
        connection.close()


async def load(port: int, setup: Setup, run: str, duration: float, connections: int) -> Tally:
    tally = Tally()
    start = time.perf_counter()
    measure_from = start + WARM_UP_S
    until = measure_from + duration
    await asyncio.gather(
        *(client(n, port, setup, run, until, measure_from, tally) for n in range(connections))
    )
    return tally


async def verify(database_url: str, run: str, tally: Tally) -> dict[str, Any]:
    """Count in the database what the acknowledged writes should have left there."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT l.id, l.title, l.version, (SELECT count(*) FROM stage_history h WHERE h.lead_id = l.id) "
            "AS history FROM leads l WHERE l.title LIKE $1",
            f"{run}-%",
        )
    finally:
        await connection.close()
    titles = [row["title"] for row in rows]
    lost = sorted(set(tally.created) - set(titles))
    unexpected = sorted(set(titles) - set(tally.created))
    duplicated = len(titles) - len(set(titles))
    wrong_version = [row["id"] for row in rows if tally.versions.get(row["id"]) != row["version"]]
    # One history row for the creation and one per acknowledged move.
    history = sum(row["history"] for row in rows)
    expected_history = len(tally.created) + tally.moves
    return {
        "created": len(tally.created),
        "moves": tally.moves,
        "leads found": len(rows),
        "lost": len(lost),
        "unexpected": len(unexpected),
        "duplicated": duplicated,
        "wrong version": len(wrong_version),
        "history rows": f"{history} (expected {expected_history})",
        "ok": not (lost or unexpected or duplicated or wrong_version) and history == expected_history,
    }


# --- reporting -----------------------------------------------------------------------------------


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else float("nan")


def summarise(tally: Tally, duration: float) -> dict[str, Any]:
    every = [value for values in tally.latencies.values() for value in values]
    per_operation = {
        name: {
            "requests": len(values),
            "p50_ms": round(_percentile(values, 0.5), 1),
            "p99_ms": round(_percentile(values, 0.99), 1),
        }
        for name, values in sorted(tally.latencies.items())
    }
    return {
        "requests_per_second": round(len(every) / duration, 1),
        "p50_ms": round(_percentile(every, 0.5), 1),
        "p99_ms": round(_percentile(every, 0.99), 1),
        "errors": sum(tally.errors.values()),
        "errors_by_operation": dict(tally.errors),
        "first_error": tally.first_error,
        "operations": per_operation,
    }


def phase(args: argparse.Namespace, workers: int, log_dir: Path) -> dict[str, Any]:
    with postgres_database(args.postgres_url, args.database_prefix) as url:
        setup = asyncio.run(seed(url, args.leads, args.connections))
        run = f"load-{uuid.uuid4().hex[:8]}"
        with serve(url, workers, args.pool_size, log_dir / f"server-{workers}.log") as server:
            tally = asyncio.run(load(server.port, setup, run, args.duration, args.connections))
        summary = summarise(tally, args.duration)
        summary["verification"] = asyncio.run(verify(url, run, tally))
    summary["workers"] = workers
    return summary


def _print(label: str, summary: dict[str, Any]) -> None:
    print(
        f"{label}: {summary['requests_per_second']} requests/s, p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms, errors {summary['errors']}"
    )
    for name, figures in summary["operations"].items():
        latency = f"p50 {figures['p50_ms']:7} ms  p99 {figures['p99_ms']:7} ms"
        print(f"  {name:16} {figures['requests']:7} requests  {latency}")
    if summary["first_error"]:
        print(f"  first error: {summary['first_error']}")
    print(f"  verification: {summary['verification']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=60, help="measured seconds per phase (default 60)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="server processes measured (default 2)")
    parser.add_argument(
        "--baseline-workers", type=int, default=1, help="server processes of the baseline phase (default 1)"
    )
    parser.add_argument(
        "--leads", type=int, default=4000, help="leads seeded before each phase (default 4000)"
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=8,
        help="PIPEGRAPH_POOL_SIZE per server process (default 8, as many again in overflow)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "PIPEGRAPH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server where the script may create and drop databases",
    )
    parser.add_argument(
        "--database-prefix", default="pipegraph_bench_load", help="name prefix of the databases it creates"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        baseline = phase(args, args.baseline_workers, Path(directory))
        _print(f"baseline, {args.baseline_workers} worker(s)", baseline)
        measured = phase(args, args.workers, Path(directory))
        _print(f"measured, {args.workers} worker(s)", measured)
    ratio = measured["requests_per_second"] / baseline["requests_per_second"]
    print(f"throughput ratio {args.workers} / {args.baseline_workers} workers: {ratio:.2f}")
    if args.json:
        print(json.dumps({"baseline": baseline, "measured": measured, "ratio": round(ratio, 2)}, indent=2))
    clean = all(s["errors"] == 0 and s["verification"]["ok"] for s in (baseline, measured))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
