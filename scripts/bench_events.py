"""Live events: delivery lag and throughput per subscriber count, against the same writes unwatched.

For each subscriber count (``--subscribers 1,4,16``) and, first, a baseline with none, the script starts
a fresh ``pipegraph serve`` on one database (a SQLite file, or a fresh PostgreSQL database with
``--database-url``, served by ``--workers`` processes that hear each other's events through
LISTEN/NOTIFY), opens S graphql-transport-ws subscriptions to ``leadEvents`` of one pipeline, and has
``--writers`` concurrent HTTP clients (httpx) change leads as fast as the server answers: each writer
creates its own lead, then alternates ``updateLead`` (a new title) and ``moveLead`` (to the next
selling stage, with the version it last saw). Every acknowledged change is noted with the moment its
answer arrived (the ack); every subscriber notes the moment each event reached it.

The writes start once every subscriber has received the first writer's creation (so each is live), run
``--warm-up`` seconds unmeasured and ``--duration`` seconds measured; then the script waits until each
subscriber has every acknowledged change (or nothing more arrives for a while). Figures per run:

- writes/s acknowledged in the measured window, and its ratio to the baseline's (the cost of delivery);
- events/s that reached each subscriber in the window, and their total;
- lag = arrival − ack of the same (lead, version), over the window's changes and every subscriber, as
  measured: negative when the event came before the HTTP answer;
- missing, duplicated and unexpected events (each subscriber must get every acknowledged change once,
  warm-up included), events out of position order, and how often a feed fell behind and read the log;
- the server's memory (with workers, the sum of the worker processes) after the warm-up and after the
  drain, with the subscriptions still open: VmRSS, and RssAnon, which leaves out file pages (SQLite maps
  its file, so VmRSS grows with the pages it touches); the growth of RssAnon per 10,000 events written
  and delivered.

Writers and subscribers run in this process on one clock, on the same machine as the server (and
PostgreSQL), so they share its cores.

    python scripts/bench_events.py [--duration 15] [--warm-up 2] [--writers 8] [--subscribers 1,4,16]
                                   [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
                                   [--workers 1] [--lead] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench_api import postgres_database
from bench_load import Server, serve
from pipegraph.api import ids
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, pipelines, users

# Until every subscriber has the first event: the subscriptions are then live.
LIVE_TIMEOUT_S = 30.0
# After the writes: stop waiting for events once none has arrived for this long.
DRAIN_QUIET_S = 10.0
MEMORY_SAMPLE_S = 0.5
FELL_BEHIND = "events behind; it reads the log"

SUBSCRIBE = "subscription ($p: ID!) { leadEvents(pipelineId: $p) { kind leadId version position } }"
# With --lead: each event's lead too, read by the server for every batch it delivers.
SUBSCRIBE_LEAD = (
    "subscription ($p: ID!) { leadEvents(pipelineId: $p) "
    "{ kind leadId version position lead { title version stage { name } } } }"
)
CREATE = (
    "mutation ($p: ID!, $t: String!) { createLead(input: {pipelineId: $p, title: $t}) "
    "{ lead { id version } userErrors { code message } } }"
)
UPDATE = (
    "mutation ($l: ID!, $t: String!, $v: Int!) "
    "{ updateLead(input: {leadId: $l, title: $t, expectedVersion: $v}) "
    "{ lead { id version } userErrors { code message } } }"
)
MOVE = (
    "mutation ($l: ID!, $s: ID!, $v: Int!) "
    "{ moveLead(input: {leadId: $l, toStageId: $s, expectedVersion: $v}) "
    "{ lead { id version } userErrors { code message } } }"
)

Change = tuple[str, int]  # lead's global id, its version after the change


@dataclass(frozen=True)
class Setup:
    key: str
    pipeline_id: str
    stage_ids: list[str]  # the selling stages, in order (new leads start in the first)


@dataclass
class Ledger:
    """What the writers saw: each acknowledged change and when its answer arrived."""

    acked: dict[Change, float] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None


@dataclass
class Window:
    start: float
    end: float

    def __contains__(self, moment: float) -> bool:
        return self.start <= moment < self.end


# --- database and processes -----------------------------------------------------------------------


async def seed(database_url: str) -> Setup:
    """A migrated database with one pipeline and an admin's API key."""
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        async with store.write() as session:
            admin = await users.create_user(session, name="Bench", email="bench@example.com", role=Role.ADMIN)
            key = (await api_keys.create_api_key(session, user_id=admin.id))[1]
            pipeline = await pipelines.create_pipeline(session, name="Events", template="CLASSIC", actor=None)
            selling = [s for s in await pipelines.current_stages(session, pipeline.id) if not s.is_post_sale]
    finally:
        await store.dispose()
    return Setup(key, ids.encode("Pipeline", pipeline.id), [ids.encode("Stage", s.id) for s in selling])


MEMORY_FIELDS = ("VmRSS", "RssAnon")


def _memory_kib(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    # A process that is exiting has no memory lines.
    return {name: int(fields.get(name, "0 kB").split()[0]) for name in MEMORY_FIELDS}


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def _serving(server: Server, workers: int) -> list[int]:
    """The server itself, or with workers the processes it started."""
    return _descendants(server.pid) if workers > 1 else [server.pid]


def server_memory_kib(server: Server, workers: int) -> dict[str, int]:
    each = [_memory_kib(pid) for pid in _serving(server, workers)]
    return {name: sum(memory[name] for memory in each) for name in MEMORY_FIELDS}


def cpu_seconds(server: Server, workers: int) -> tuple[float, float]:
    """CPU time (user + system) used so far by the serving processes and by this one."""
    ticks = 0
    for pid in _serving(server, workers):
        with contextlib.suppress(OSError):
            # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK"), time.process_time()


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM ends the script like Ctrl-C does, through every ``finally`` (servers, databases)."""

    def stop(_signal: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- writers --------------------------------------------------------------------------------------


class Writer:
    """One HTTP client that owns one lead and changes it as fast as the server answers."""

    def __init__(self, number: int, base_url: str, setup: Setup, ledger: Ledger) -> None:
        self.number, self.setup, self.ledger = number, setup, ledger
        headers = {"Authorization": f"Bearer {setup.key}"}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)
        self.lead: Change | None = None
        self.stage = 0  # new leads start in the first selling stage

    async def create(self) -> None:
        self.lead = await self._change(CREATE, {"p": self.setup.pipeline_id, "t": f"Writer {self.number}"})

    async def churn(self, until: float) -> None:
        """Alternate ``updateLead`` and ``moveLead`` until ``until``; stop at the first failure (the
        lead's version would be unknown)."""
        while self.lead is not None and time.perf_counter() < until:
            lead_id, version = self.lead
            if version % 2:
                self.lead = await self._change(UPDATE, {"l": lead_id, "t": f"Take {version}", "v": version})
            else:
                self.stage = (self.stage + 1) % len(self.setup.stage_ids)
                variables = {"l": lead_id, "s": self.setup.stage_ids[self.stage], "v": version}
                self.lead = await self._change(MOVE, variables)

    async def close(self) -> None:
        await self.http.aclose()

    async def _change(self, query: str, variables: dict[str, Any]) -> Change | None:
        """Send one mutation; the change it made once acknowledged (noted in the ledger), or None."""
        try:
            response = await self.http.post("/graphql", json={"query": query, "variables": variables})
            acked = time.perf_counter()
            body = response.json()
            failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as error:
            failure, body = f"{type(error).__name__}: {error}", {}
        result = next(iter((body.get("data") or {}).values()), None)
        if failure is None and (body.get("errors") or not result or result["userErrors"]):
            failure = json.dumps(body)[:300]
        if failure is not None or result is None:
            self.ledger.errors += 1
            self.ledger.first_error = self.ledger.first_error or failure
            return None
        change = (result["lead"]["id"], result["lead"]["version"])
        self.ledger.acked[change] = acked
        return change


# --- subscribers ----------------------------------------------------------------------------------


@dataclass
class Subscriber:
    """One graphql-transport-ws subscription to ``leadEvents``, noting each event's arrival."""

    arrivals: list[tuple[Change, int, float]] = field(default_factory=list)  # change, position, time
    failure: str | None = None
    first_event: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    websocket: ClientConnection | None = None

    async def open(self, websocket_url: str, setup: Setup, query: str = SUBSCRIBE) -> None:
        self.websocket = await connect(
            websocket_url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
        )
        await self._send({"type": "connection_init", "payload": {"Authorization": f"Bearer {setup.key}"}})
        answer = json.loads(await self.websocket.recv())
        if answer.get("type") != "connection_ack":
            raise RuntimeError(f"no connection_ack: {answer}")
        await self._send(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": query, "variables": {"p": setup.pipeline_id}},
            }
        )

    async def listen(self) -> None:
        """Until the socket closes (the script closes it after the drain)."""
        assert self.websocket is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.websocket:
                arrived = time.perf_counter()
                message = json.loads(raw)
                if message["type"] == "next" and "errors" not in message["payload"]:
                    event = message["payload"]["data"]["leadEvents"]
                    change = (event["leadId"], event["version"])
                    self.arrivals.append((change, int(event["position"]), arrived))
                    if not self.first_event.done():
                        self.first_event.set_result(None)
                elif message["type"] == "ping":
                    await self._send({"type": "pong"})
                else:  # an error, or the server completed the subscription
                    self.failure = self.failure or json.dumps(message)[:300]
                    return

    async def close(self) -> None:
        if self.websocket is not None:
            await self.websocket.close()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.websocket is not None
        await self.websocket.send(json.dumps(message))


# --- one run --------------------------------------------------------------------------------------


@dataclass
class Observed:
    """A run's raw material: the ledger, what each subscriber received, the window and the RSS."""

    ledger: Ledger
    subscribers: list[Subscriber]
    window: Window
    memory_kib: tuple[dict[str, int], dict[str, int]]  # after the warm-up, after the drain
    anon_samples: list[tuple[int, int]]  # changes acknowledged so far, RssAnon KiB, while writing
    cpu_seconds: tuple[float, float]  # the server's and this process's, over the measured window


async def observe(
    server: Server, workers: int, setup: Setup, count: int, args: argparse.Namespace
) -> Observed:
    base_url = f"http://127.0.0.1:{server.port}"
    ledger = Ledger()
    writers = [Writer(n, base_url, setup, ledger) for n in range(args.writers)]
    subscribers = [Subscriber() for _ in range(count)]
    listening: list[asyncio.Task[None]] = []
    samples: list[tuple[int, int]] = []
    try:
        for subscriber in subscribers:
            query = SUBSCRIBE_LEAD if args.lead else SUBSCRIBE
            await subscriber.open(f"ws://127.0.0.1:{server.port}/graphql", setup, query)
            listening.append(asyncio.create_task(subscriber.listen()))
        await writers[0].create()
        async with asyncio.timeout(LIVE_TIMEOUT_S):
            await asyncio.gather(*(subscriber.first_event for subscriber in subscribers))
        await asyncio.gather(*(writer.create() for writer in writers[1:]))
        measured_from = time.perf_counter() + args.warm_up
        window = Window(measured_from, measured_from + args.duration)
        writing = asyncio.gather(*(writer.churn(window.end) for writer in writers))
        await asyncio.sleep(measured_from - time.perf_counter())
        memory_start, cpu_start = server_memory_kib(server, workers), cpu_seconds(server, workers)
        sampling = asyncio.create_task(sample_memory(server, workers, ledger, samples))
        await writing
        sampling.cancel()
        cpu_end = cpu_seconds(server, workers)
        await drain(subscribers, ledger)
        memory_end = server_memory_kib(server, workers)
    finally:
        for subscriber in subscribers:
            await subscriber.close()
        for task in listening:
            task.cancel()
        await asyncio.gather(*listening, return_exceptions=True)
        for writer in writers:
            await writer.close()
    cpu = (cpu_end[0] - cpu_start[0], cpu_end[1] - cpu_start[1])
    return Observed(ledger, subscribers, window, (memory_start, memory_end), samples, cpu)


async def sample_memory(server: Server, workers: int, ledger: Ledger, samples: list[tuple[int, int]]) -> None:
    """Note RssAnon against the changes acknowledged so far, every ``MEMORY_SAMPLE_S``, until cancelled."""
    while True:
        samples.append((len(ledger.acked), server_memory_kib(server, workers)["RssAnon"]))
        await asyncio.sleep(MEMORY_SAMPLE_S)


async def drain(subscribers: list[Subscriber], ledger: Ledger) -> None:
    """Wait until every subscriber holds every acknowledged change, or none has had an event lately."""
    expected = len(ledger.acked)
    last_progress, received = time.perf_counter(), -1
    while time.perf_counter() - last_progress < DRAIN_QUIET_S:
        now_received = sum(len(subscriber.arrivals) for subscriber in subscribers)
        if all(len(subscriber.arrivals) >= expected for subscriber in subscribers):
            return
        if now_received != received:
            last_progress, received = time.perf_counter(), now_received
        await asyncio.sleep(0.05)


# --- figures --------------------------------------------------------------------------------------


def _percentile_ms(ordered: list[float], share: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 1)


def _slope_per_10k(samples: list[tuple[int, int]]) -> float | None:
    """Least-squares growth of RssAnon, MiB per 10,000 changes written, over the samples."""
    if len(samples) < 3 or samples[0][0] == samples[-1][0]:
        return None
    written, anon_kib = zip(*samples, strict=True)
    return round(statistics.linear_regression(written, anon_kib).slope * 10_000 / 1024, 2)


def summarise(observed: Observed, duration: float, server_log: str) -> dict[str, Any]:
    ledger, window = observed.ledger, observed.window
    measured = {change for change, acked in ledger.acked.items() if acked in window}
    lags: list[float] = []
    missing = duplicates = unexpected = out_of_order = 0
    per_subscriber = []
    for subscriber in observed.subscribers:
        changes = [change for change, _, _ in subscriber.arrivals]
        received = set(changes)
        missing += len(ledger.acked.keys() - received)
        duplicates += len(changes) - len(received)
        unexpected += len(received - ledger.acked.keys())
        positions = [position for _, position, _ in subscriber.arrivals]
        out_of_order += sum(1 for a, b in itertools.pairwise(positions) if b <= a)
        lags += [
            arrived - ledger.acked[change] for change, _, arrived in subscriber.arrivals if change in measured
        ]
        per_subscriber.append(sum(1 for *_, arrived in subscriber.arrivals if arrived in window) / duration)
    lags.sort()
    delivered = sum(1 for change in measured for _ in observed.subscribers)
    start, end = observed.memory_kib
    growth_mib = (end["RssAnon"] - start["RssAnon"]) / 1024

    def per_10k(events: int) -> float | None:
        return round(growth_mib * 10_000 / events, 2) if events else None

    return {
        "subscribers": len(observed.subscribers),
        "writes_per_second": round(len(measured) / duration, 1),
        "writes_acknowledged": len(ledger.acked),
        "write_errors": ledger.errors,
        "cpu_share": {
            "server": round(observed.cpu_seconds[0] / duration, 2),
            "clients": round(observed.cpu_seconds[1] / duration, 2),
        },
        "first_write_error": ledger.first_error,
        "events_per_second_per_subscriber": round(sum(per_subscriber) / len(per_subscriber), 1)
        if per_subscriber
        else None,
        "events_per_second_total": round(sum(per_subscriber), 1),
        "lag_ms": {
            "p50": _percentile_ms(lags, 0.5),
            "p95": _percentile_ms(lags, 0.95),
            "p99": _percentile_ms(lags, 0.99),
            "max": _percentile_ms(lags, 1.0),
            "min": _percentile_ms(lags, 0.0),
            "negative": sum(1 for lag in lags if lag < 0),
            "events": len(lags),
        },
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "out_of_order": out_of_order,
        "subscription_failures": [s.failure for s in observed.subscribers if s.failure],
        "feeds_fell_behind": server_log.count(FELL_BEHIND),
        "server_tracebacks": server_log.count("Traceback"),
        "memory_mib": {
            f"{name}_{moment}": round(memory[name] / 1024, 1)
            for name in MEMORY_FIELDS
            for moment, memory in (("start", start), ("end", end))
        },
        "anon_growth_mib_per_10k_written": per_10k(len(measured)),
        "anon_growth_mib_per_10k_delivered": per_10k(delivered),
        "anon_slope_mib_per_10k_written": _slope_per_10k(observed.anon_samples),
        # One-off growth (caches, buffers, allocator arenas) comes early; a leak keeps its slope.
        "anon_slope_second_half": _slope_per_10k(observed.anon_samples[len(observed.anon_samples) // 2 :]),
        "anon_samples": [[written, round(kib / 1024, 2)] for written, kib in observed.anon_samples],
    }


def clean(summary: dict[str, Any]) -> bool:
    problems = ("write_errors", "missing", "duplicates", "unexpected", "out_of_order", "server_tracebacks")
    return not any(summary[name] for name in problems) and not summary["subscription_failures"]


def _print(summary: dict[str, Any]) -> None:
    lag, memory = summary["lag_ms"], summary["memory_mib"]
    line = f"{summary['subscribers']:3} subscribers: {summary['writes_per_second']} writes/s"
    if summary["subscribers"]:
        line += (
            f" ({summary['writes_ratio_to_baseline']:.2f} × baseline), "
            f"{summary['events_per_second_per_subscriber']} events/s per subscriber "
            f"({summary['events_per_second_total']} in all)"
        )
    cpu = summary["cpu_share"]
    print(
        f"{line}; CPU: server {cpu['server']}, clients {cpu['clients']}; "
        f"load average {summary['load_average']}"
    )
    if summary["subscribers"]:
        print(
            f"    lag ms p50 {lag['p50']} p95 {lag['p95']} p99 {lag['p99']} max {lag['max']} "
            f"(min {lag['min']}, {lag['negative']} of {lag['events']} negative); "
            f"missing {summary['missing']}, duplicates {summary['duplicates']}, "
            f"unexpected {summary['unexpected']}, out of order {summary['out_of_order']}, "
            f"feeds fell behind {summary['feeds_fell_behind']}"
        )
    print(
        f"    server MiB: VmRSS {memory['VmRSS_start']} → {memory['VmRSS_end']}, RssAnon "
        f"{memory['RssAnon_start']} → {memory['RssAnon_end']}, that is "
        f"{summary['anon_growth_mib_per_10k_written']} per 10k events written and "
        f"{summary['anon_growth_mib_per_10k_delivered']} per 10k delivered (slope while writing "
        f"{summary['anon_slope_mib_per_10k_written']} per 10k written, "
        f"{summary['anon_slope_second_half']} in its second half); "
        f"write errors {summary['write_errors']}"
    )
    for name in ("first_write_error", "subscription_failures"):
        if summary[name]:
            print(f"    {name.replace('_', ' ')}: {summary[name]}")


def bench(database_url: str, args: argparse.Namespace, log_dir: Path) -> list[dict[str, Any]]:
    setup = asyncio.run(seed(database_url))
    summaries: list[dict[str, Any]] = []
    for count in [0, *args.subscribers]:
        log = log_dir / f"server-{count}.log"
        with serve(database_url, args.workers, args.pool_size, log) as server:
            observed = asyncio.run(observe(server, args.workers, setup, count, args))
        summary = summarise(observed, args.duration, log.read_text(errors="replace"))
        summary["load_average"] = round(os.getloadavg()[0], 1)  # of the last minute, this run's
        if summaries:
            ratio = summary["writes_per_second"] / summaries[0]["writes_per_second"]
            summary["writes_ratio_to_baseline"] = round(ratio, 2)
        _print(summary)
        summaries.append(summary)
    return summaries


def _counts(raw: str) -> list[int]:
    counts = [int(part) for part in raw.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive counts, e.g. 1,4,16")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per run (default 15)")
    parser.add_argument(
        "--warm-up", type=float, default=2, help="unmeasured seconds of writes first (default 2)"
    )
    parser.add_argument("--writers", type=int, default=8, help="concurrent HTTP writers (default 8)")
    parser.add_argument(
        "--subscribers",
        type=_counts,
        default=[1, 4, 16],
        help="subscriber counts, one run each after a baseline with none (default 1,4,16)",
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server where the script may create and drop a database "
        "(default: a SQLite file in a temporary directory)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (default 1; more need PostgreSQL)"
    )
    parser.add_argument(
        "--pool-size", type=int, default=8, help="PIPEGRAPH_POOL_SIZE per server process (default 8)"
    )
    parser.add_argument(
        "--lead",
        action="store_true",
        help="subscribers select each event's lead (title, version, stage name) too",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    if args.workers > 1 and not args.database_url:
        parser.error("--workers above 1 needs --database-url (PostgreSQL)")

    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"{backend}, {args.workers} worker(s), {args.writers} writers, {args.warm_up:g} s warm-up + "
        f"{args.duration:g} s measured per run" + (", subscribers select lead" if args.lead else "")
    )
    try:
        with sigterm_unwinds(), tempfile.TemporaryDirectory() as directory:
            if args.database_url:
                with postgres_database(args.database_url, "pipegraph_bench_events") as url:
                    summaries = bench(url, args, Path(directory))
            else:
                summaries = bench(f"sqlite:///{Path(directory) / 'events.sqlite3'}", args, Path(directory))
    except KeyboardInterrupt:
        print("interrupted: the server is stopped and the database removed", file=sys.stderr)
        return 130
    if args.json:
        figures = {"backend": backend, "workers": args.workers, "writers": args.writers, "runs": summaries}
        print(json.dumps(figures, indent=2))
    return 0 if all(clean(summary) for summary in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
