"""Webhooks: what an endpoint costs the writes, and how fast deliveries go out.

For each backend, two runs on fresh databases, one after the other in the same invocation: a baseline
with no webhook endpoint, then the same load with one endpoint wanting every event type. Each run
starts ``pipegraph serve`` (one worker), a receiver on loopback (a bare Starlette app under uvicorn, in
a thread of this process, answering 200 and counting unique ``webhook-id`` values), and ``--writers``
concurrent HTTP clients, each owning one lead and moving it back and forth between two stages
(``moveLead`` with the version it last saw) as fast as the server answers: ``--warm-up`` seconds
unmeasured, ``--duration`` seconds measured. Then it waits until the receiver has every event written
(or nothing arrives for 15 s).

Figures per backend:

- moveLead requests/s without and with the endpoint, and their ratio (the added cost per write: the
  outbox rows written in each transaction, and the dispatcher sharing the server's process and cores);
- events delivered per second while writing (window), and after the writes stopped (the backlog
  drained with nothing else running), the backlog at the end of the window and the drain time;
- events written, delivered, and missing (must be 0);
- the dispatcher's own pace: once more, the same writes with sending turned off
  (``PIPEGRAPH_WEBHOOK_DISPATCH=false``), then a server that only sends: events/s to deliver that
  backlog (one lead per writer, so at most that many in flight: a lead's events go one at a time).

Writers, receiver and server share the machine's cores.

    python scripts/bench_webhooks.py [--duration 10] [--warm-up 2] [--writers 8]
                                     [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench_api import free_port, postgres_database
from bench_events import MOVE, Setup, seed
from bench_load import Server, serve
from pipegraph.db.session import Store
from pipegraph.services.webhooks import endpoints

CREATE = (
    "mutation ($p: ID!, $t: String!) { createLead(input: {pipelineId: $p, title: $t}) "
    "{ lead { id version } userErrors { code message } } }"
)
QUIET_S = 15.0
SERVER_ENV = {"PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE": "true"}


@dataclass
class Receiver:
    ids: set[str] = field(default_factory=set)
    requests: int = 0
    last_at: float = 0.0

    async def handle(self, request: Request) -> Response:
        await request.body()
        self.requests += 1
        self.ids.add(request.headers["webhook-id"])
        self.last_at = time.monotonic()
        return Response("ok")


@contextlib.contextmanager
def receiving() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield receiver, f"http://127.0.0.1:{port}/hook"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def add_endpoint(database_url: str, url: str) -> None:
    store = Store.from_url(database_url)
    try:
        async with store.write() as session:
            await endpoints.create_endpoint(session, url=url, allow_private=True, actor=None)
    finally:
        await store.dispose()


async def _post(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    response.raise_for_status()
    data: dict[str, Any] = next(iter(response.json()["data"].values()))
    assert not data["userErrors"], data
    return data


async def write(
    server: Server, setup: Setup, writers: int, warm_up: float, duration: float
) -> tuple[int, int]:
    """Moves acknowledged in the measured window, and events written in all (creations included)."""
    written = 0
    measured = 0
    start = time.monotonic()
    window = (start + warm_up, start + warm_up + duration)

    async def writer(n: int) -> None:
        nonlocal written, measured
        headers = {"Authorization": f"Bearer {setup.key}"}
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
            lead = (await _post(client, CREATE, p=setup.pipeline_id, t=f"Bench {n}"))["lead"]
            written += 1
            version, step = lead["version"], 1
            while (now := time.monotonic()) < window[1]:
                stage = setup.stage_ids[step % 2]
                moved = await _post(client, MOVE, l=lead["id"], s=stage, v=version)
                version, step = moved["lead"]["version"], step + 1
                written += 1
                if window[0] <= now:
                    measured += 1

    await asyncio.gather(*(writer(n) for n in range(writers)))
    return measured, written


def run(database_url: str, with_endpoint: bool, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    setup = asyncio.run(seed(database_url))
    with receiving() as (receiver, url):
        if with_endpoint:
            asyncio.run(add_endpoint(database_url, url))
        label = "endpoint" if with_endpoint else "baseline"
        with serve(database_url, 1, 10, log_dir / f"{label}.log", SERVER_ENV) as server:
            started = time.monotonic()
            moves, written = asyncio.run(write(server, setup, args.writers, args.warm_up, args.duration))
            writes_done = time.monotonic()
            delivered_by_then = len(receiver.ids)
            if with_endpoint:
                while (
                    len(receiver.ids) < written
                    and time.monotonic() - max(receiver.last_at, writes_done) < QUIET_S
                ):
                    time.sleep(0.05)
    result: dict[str, Any] = {"moves_per_s": moves / args.duration, "written": written}
    if with_endpoint:
        drained = max(receiver.last_at, writes_done)
        backlog = written - delivered_by_then
        result |= {
            "delivered": len(receiver.ids),
            "requests": receiver.requests,
            "missing": written - len(receiver.ids),
            "delivered_per_s_while_writing": delivered_by_then / (writes_done - started),
            "backlog_at_end": backlog,
            "drain_s": drained - writes_done,
            "delivered_per_s_draining": backlog / (drained - writes_done) if backlog > 0 else None,
        }
    return result


def backlog_run(database_url: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """The dispatcher's own pace: the same writes with sending off, then a server that only sends."""
    setup = asyncio.run(seed(database_url))
    with receiving() as (receiver, url):
        asyncio.run(add_endpoint(database_url, url))
        quiet = SERVER_ENV | {"PIPEGRAPH_WEBHOOK_DISPATCH": "false"}
        with serve(database_url, 1, 10, log_dir / "backlog-write.log", quiet) as server:
            _, written = asyncio.run(write(server, setup, args.writers, args.warm_up, args.duration))
        with serve(database_url, 1, 10, log_dir / "backlog-send.log", SERVER_ENV):
            ready = time.monotonic()
            while len(receiver.ids) < written and time.monotonic() - max(receiver.last_at, ready) < QUIET_S:
                time.sleep(0.05)
    elapsed = max(receiver.last_at, ready) - ready
    return {
        "backlog": written,
        "delivered": len(receiver.ids),
        "missing": written - len(receiver.ids),
        "seconds": elapsed,
        "delivered_per_s": len(receiver.ids) / elapsed if elapsed > 0 else None,
    }


def _database(args: argparse.Namespace, log_dir: Path, name: str) -> contextlib.AbstractContextManager[str]:
    if args.database_url:
        return postgres_database(args.database_url, "pipegraph_bench_webhooks")
    return contextlib.nullcontext(f"sqlite:///{log_dir / f'{name}.sqlite3'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    parser.add_argument("--warm-up", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writing clients (default 8)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="baseline/endpoint pairs, alternated (default 2)"
    )
    parser.add_argument("--database-url", help="a PostgreSQL server to use (default: SQLite files)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "endpoint": []}
    with tempfile.TemporaryDirectory() as directory:
        log_dir = Path(directory)
        for round_number in range(args.rounds):
            for label in runs:
                with _database(args, log_dir, f"{label}-{round_number}") as url:
                    runs[label].append(run(url, label == "endpoint", args, log_dir))
        with _database(args, log_dir, "backlog") as url:
            backlog = backlog_run(url, args, log_dir)
    baseline = statistics.median(r["moves_per_s"] for r in runs["baseline"])
    with_endpoint = statistics.median(r["moves_per_s"] for r in runs["endpoint"])
    missing = sum(r["missing"] for r in runs["endpoint"]) + backlog["missing"]
    if args.json:
        print(json.dumps({"runs": runs, "ratio": with_endpoint / baseline, "backlog": backlog}, indent=2))
        return 0 if missing == 0 else 1
    print(
        f"moveLead/s (median of {args.rounds}): {baseline:.1f} without an endpoint, {with_endpoint:.1f} "
        f"with one (ratio {with_endpoint / baseline:.2f})"
    )
    for e in runs["endpoint"]:
        draining = e["delivered_per_s_draining"]
        print(
            f"  endpoint run: events written {e['written']}, delivered {e['delivered']} (missing "
            f"{e['missing']}, requests {e['requests']}); delivered/s while writing "
            f"{e['delivered_per_s_while_writing']:.1f}; backlog at the end {e['backlog_at_end']}, drained in "
            f"{e['drain_s']:.1f} s" + (f" ({draining:.1f}/s)" if draining else "")
        )
    print(
        f"a backlog of {backlog['backlog']} events ({args.writers} leads) "
        f"sent in {backlog['seconds']:.1f} s: "
        f"{backlog['delivered_per_s']:.1f} events/s delivered (missing {backlog['missing']})"
    )
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
