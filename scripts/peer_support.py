"""Set-up and instruments for ``bench_peer.py``: one PostgreSQL database with synthetic leads,
pipegraph and PostGraphile 5 serving it (each a subprocess), wrk, and CPU time from ``/proc``.

- ``prepare_database``: create the database if missing, migrate it (``pipegraph db upgrade``), load
  ``load_synthetic`` leads and ``VACUUM ANALYZE``; a database already loaded with the same size and seed
  (recorded in its comment) is reused.
- ``install_postgraphile``: ``npm install postgraphile@5 node@22`` into a cache directory, once. Node 20's
  runtime lacks ``Promise.withResolvers``, which PostGraphile 5 needs; the npm ``node@22`` package brings
  a Node 22 binary.
- ``pipegraph_server`` / ``postgraphile_server``: context managers that start a server on a free loopback
  port, wait until it answers and stop it on exit (Ctrl-C included).
- ``parse_wrk``: requests, requests/s, p50/p99 and errors of a ``wrk --latency`` run.
- ``cpu_seconds`` / ``backends_cpu``: CPU time of a process, and of each backend connected to a
  database (PostgreSQL on this machine), so a run can be charged per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import asyncpg
import httpx

from bench_api import UNTHROTTLED, free_port
from pipegraph import demo
from pipegraph.db.session import Store
from pipegraph.services.api_keys import create_api_key
from pipegraph.services.users import get_user_by_email

SEED = 7
ACTIVITIES_PER_LEAD = 0.5  # as bench_api.py: 100,000 leads give 485,331 history rows
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/pipegraph_bench_peer"
NPM_PACKAGES = ("postgraphile@5", "node@22")
STARTUP_S = 90.0  # PostGraphile introspects the database and builds its schema before it listens

PRESET = """\
// Written by pipegraph's scripts/bench_peer.py; rewritten on every run.
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { makePgService } from "postgraphile/adaptors/pg";

export default {
  extends: [PostGraphileAmberPreset],
  pgServices: [
    makePgService({
      connectionString: process.env.BENCH_PEER_DATABASE_URL,
      schemas: ["public"],
      poolConfig: { max: Number(process.env.BENCH_PEER_POOL_SIZE) },
    }),
  ],
  grafserv: { host: "127.0.0.1", port: Number(process.env.BENCH_PEER_PORT), graphiql: false },
  grafast: { explain: false },
};
"""


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    headers: dict[str, str]
    pid: int


def plain_url(url: str) -> str:
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def _loaded_mark(leads: int) -> str:
    return f"pipegraph bench_peer: {leads} leads, seed {SEED}, activities {ACTIVITIES_PER_LEAD}"


async def _admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url.rpartition("/")[0] + "/postgres")
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _mark_and_pipelines(url: str) -> tuple[str | None, int] | None:
    """The database's comment and its number of pipelines; None if it does not exist."""
    try:
        connection = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        mark = await connection.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
        )
        has_pipelines = await connection.fetchval("SELECT to_regclass('pipelines') IS NOT NULL")
        pipelines = await connection.fetchval("SELECT count(*) FROM pipelines") if has_pipelines else 0
        return mark, int(pipelines)
    finally:
        await connection.close()


def prepare_database(url: str, leads: int, *, owned: bool) -> None:
    """Create, migrate and load the database unless it already holds this data set. Only a database
    the script owns (its default) is dropped and loaded again when it holds another."""
    name = url.rpartition("/")[2]
    state = asyncio.run(_mark_and_pipelines(url))
    if state is not None and state[0] == _loaded_mark(leads):
        print(f"database {name}: reusing {leads} leads loaded earlier")
        migrate(url)
        return
    if state is not None and state[1] > 0:
        if not owned:
            raise SystemExit(
                f"database {name} holds other data ({state[0] or 'no bench_peer mark'}); "
                "pass an empty database or leave --database-url out"
            )
        asyncio.run(_admin(url, f'DROP DATABASE "{name}" WITH (FORCE)'))
        state = None
    if state is None:
        asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    migrate(url)
    started = time.perf_counter()
    summary = asyncio.run(_load(url, leads))
    print(f"database {name}: loaded {summary} in {time.perf_counter() - started:.0f} s; VACUUM ANALYZE")
    asyncio.run(_vacuum_and_mark(url, leads))


def migrate(url: str) -> None:
    command = [sys.executable, "-m", "pipegraph.cli", "db", "upgrade", "--database-url", url]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


async def _load(url: str, leads: int) -> str:
    store = Store.from_url(url)
    try:
        summary = await demo.load_synthetic(
            store, leads=leads, seed=SEED, activities_per_lead=ACTIVITIES_PER_LEAD
        )
        return summary.describe()
    finally:
        await store.dispose()


async def _vacuum_and_mark(url: str, leads: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE")
        name = await connection.fetchval("SELECT current_database()")
        # A comment cannot take a parameter; the mark is the script's own text.
        await connection.execute(f"COMMENT ON DATABASE \"{name}\" IS '{_loaded_mark(leads)}'")
    finally:
        await connection.close()


def install_postgraphile(cache: Path) -> tuple[Path, str]:
    """npm-install PostGraphile 5 and Node 22 into the cache once; returns Node 22's binary and the
    versions installed."""
    node = cache / "node_modules" / ".bin" / "node"
    cli = cache / "node_modules" / "postgraphile" / "dist" / "cli-run.js"
    if not (node.exists() and cli.exists()):
        if shutil.which("npm") is None:
            raise SystemExit("bench_peer.py needs npm to install PostGraphile")
        cache.mkdir(parents=True, exist_ok=True)
        package = cache / "package.json"
        if not package.exists():
            package.write_text('{"private": true, "description": "PostGraphile for pipegraph bench_peer"}\n')
        print(f"installing {' '.join(NPM_PACKAGES)} into {cache} ...")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", *NPM_PACKAGES], cwd=cache, check=True)
    # node@22 fetches its platform's binary in an install script; a blocked script leaves a stub.
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        version = ""
    if not version.startswith("v22."):
        raise SystemExit(f"{node} is not Node 22 ({version or 'no version'}); remove {cache} and run again")
    postgraphile = json.loads((cli.parents[1] / "package.json").read_text())["version"]
    return node, f"PostGraphile {postgraphile} on Node {version[1:]}"


def wait_until_ready(
    process: subprocess.Popen[bytes], check: Callable[[], bool], log: Path, name: str
) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


@contextmanager
def running(
    command: Sequence[str | Path], env: Mapping[str, str], log: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(part) for part in command], env=dict(env), cwd=cwd, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def pipegraph_server(url: str, key: str, pool_size: int, logs: Path) -> Iterator[Server]:
    port = free_port()
    # PIPEGRAPH_DIRECT_WRITES=false passes through, to measure the general write path.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PIPEGRAPH_") or key == "PIPEGRAPH_DIRECT_WRITES"
    }
    env |= {
        "PIPEGRAPH_DATABASE_URL": url,
        "PIPEGRAPH_POOL_SIZE": str(pool_size),
        **{f"PIPEGRAPH_{name.upper()}": str(value) for name, value in UNTHROTTLED.items()},
    }
    command = [
        sys.executable, "-m", "uvicorn", "pipegraph.app:app_from_env", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = logs / "pipegraph.log"
    with running(command, env, log, logs) as process:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(
            process, lambda: httpx.get(f"{base}/healthz", timeout=1).is_success, log, "pipegraph"
        )
        yield Server("pipegraph", f"{base}/graphql", {"Authorization": f"Bearer {key}"}, process.pid)


@contextmanager
def postgraphile_server(url: str, node: Path, cache: Path, pool_size: int, logs: Path) -> Iterator[Server]:
    port = free_port()
    preset = cache / "bench_peer.config.mjs"
    preset.write_text(PRESET)
    env = {
        **os.environ,
        "BENCH_PEER_DATABASE_URL": url,
        "BENCH_PEER_POOL_SIZE": str(pool_size),
        "BENCH_PEER_PORT": str(port),
        "GRAPHILE_ENV": "production",
        "NODE_ENV": "production",
    }
    cli = cache / "node_modules" / "postgraphile" / "dist" / "cli-run.js"
    log = logs / "postgraphile.log"
    endpoint = f"http://127.0.0.1:{port}/graphql"
    with running([node, cli, "-C", preset], env, log, cache) as process:

        def ready() -> bool:
            return httpx.post(endpoint, json={"query": "{ __typename }"}, timeout=1).is_success

        wait_until_ready(process, ready, log, "PostGraphile")
        yield Server("postgraphile", endpoint, {}, process.pid)


async def create_key(url: str) -> str:
    """A new API key of the data set's admin."""
    store = Store.from_url(url)
    try:
        async with store.write() as session:
            admin = await get_user_by_email(session, "admin@example.com")
            if admin is None:
                raise SystemExit("no admin@example.com in the database: was it loaded by load_synthetic?")
            return (await create_api_key(session, user_id=admin.id))[1]
    finally:
        await store.dispose()


# --- instruments ----------------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk") is not None:
        return
    if os.geteuid() == 0 and shutil.which("apt-get") is not None:
        print("installing wrk with apt-get ...")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        return
    raise SystemExit(
        "bench_peer.py needs wrk: apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)"
    )


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (all its threads), from /proc; None if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


async def _backend_pids(url: str) -> list[int]:
    connection = await asyncpg.connect(url)
    try:
        records = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [record[0] for record in records]
    finally:
        await connection.close()


def backends_cpu(url: str) -> dict[int, float]:
    """CPU seconds of each backend connected to the database (PostgreSQL on this machine)."""
    times = {pid: cpu_seconds(pid) for pid in asyncio.run(_backend_pids(url))}
    return {pid: seconds for pid, seconds in times.items() if seconds is not None}


def _ms(raw: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", raw)
    if match is None:
        raise ValueError(f"unexpected wrk latency {raw!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


class WrkResult(NamedTuple):
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors (timeouts included)
    error_kinds: str  # wrk's own words for them, "" when there are none


def parse_wrk(output: str) -> WrkResult:
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", output, re.MULTILINE))
    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if requests is None or rate is None or set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    kinds = re.findall(r"^\s*((?:Non-2xx or 3xx responses|Socket errors): .*?)\s*$", output, re.MULTILINE)
    errors = sum(int(count) for kind in kinds for count in re.findall(r"\d+", kind.partition(":")[2]))
    return WrkResult(
        int(requests.group(1)),
        float(rate.group(1)),
        _ms(percentiles["50"]),
        _ms(percentiles["99"]),
        errors,
        "; ".join(kinds) if errors else "",
    )


@contextmanager
def statement_log(url: str) -> Iterator[None]:
    """``log_statement = 'all'`` for the database's new sessions alone, reset on exit."""
    name = url.rpartition("/")[2]
    asyncio.run(_admin(url, f"ALTER DATABASE \"{name}\" SET log_statement = 'all'"))
    try:
        yield
    finally:
        asyncio.run(_admin(url, f'ALTER DATABASE "{name}" RESET log_statement'))


def logged_statements(log: Path, database: str, send: Callable[[], object]) -> list[str]:
    """The statements of this database that the server log gains while ``send`` runs (the log's line
    prefix must name the database, as Debian's ``%m [%p] %q%u@%d`` does)."""
    start = log.stat().st_size
    send()
    time.sleep(0.3)  # the backends write their lines after answering
    with log.open(errors="replace") as lines:
        lines.seek(start)
        found = [
            line
            for line in lines
            if f"@{database} " in line and re.search(r"LOG:\s+(statement|execute)", line)
        ]
    return [re.sub(r"^.*?LOG:\s+", "", line).strip() for line in found]


@contextmanager
def both_servers(
    url: str, key: str, node: Path, cache: Path, pool_size: int, logs: Path
) -> Iterator[dict[str, Server]]:
    """pipegraph and PostGraphile on the database, by name."""
    with (
        pipegraph_server(url, key, pool_size, logs) as ours,
        postgraphile_server(url, node, cache, pool_size, logs) as theirs,
    ):
        yield {ours.name: ours, theirs.name: theirs}
