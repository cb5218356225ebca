"""GraphQL leads page vs. a plain Starlette JSON endpoint running the equivalent SQL, in one run.

Seeds 100,000 leads (``pipegraph.demo.load_synthetic``) into a SQLite file (and a fresh PostgreSQL
database with ``--postgres-url``), serves the real app and, from this same script, a plain endpoint
with uvicorn in two subprocesses, and loads each with wrk for the same duration and concurrency. Both
authenticate the same API key the same way (the app's cached ``Authenticator``) and return the same
50 leads (checked) with stage and owner names.

Also serves the app with compiled reads switched off (``PIPEGRAPH_COMPILED_READS=false``) and loads
both with the page and with one lead by id (``lead(id:)``), for the compiled / reference ratio.

Prints requests/s of both and their ratio, p50/p99 latency, SQL statements per request (counted
in-process with a ``before_cursor_execute`` listener) and Python function calls per request (cProfile,
in-process: a count that does not move with the machine's load). ``--profile`` adds where in-process time goes
per request, by package, for both endpoints.

    python scripts/bench_api.py [--leads 100000] [--duration 10] [--connections 16]
                                [--postgres-url postgresql://postgres@127.0.0.1/postgres] [--profile]

Needs wrk (Debian/Ubuntu: ``apt-get install wrk``; macOS: ``brew install wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipegraph.db import migrate
from pipegraph.db.session import Store

PAGE_SIZE = 50
# One key sends every request: a budget this large keeps the throttle's bookkeeping in the measured
# path without ever refusing.
UNTHROTTLED = {"cost_budget": 10**12, "cost_restore_rate": 10**12}
# The schema's default order is newest first; like the API, fetch one extra row to know if more follow.
GRAPHQL_QUERY = (
    f"query Page($pipelineId: ID!) {{ leads(pipelineId: $pipelineId, first: {PAGE_SIZE}) "
    "{ edges { node { id title value stage { name } owner { name } } } } }"
)
LEAD_QUERY = "query Lead($id: ID!) { lead(id: $id) { id title value stage { name } owner { name } } }"
PLAIN_SQL = text(
    "SELECT l.id, l.title, l.value_cents, s.name AS stage_name, u.name AS owner_name "
    "FROM leads l JOIN stages s ON s.id = l.stage_id LEFT JOIN users u ON u.id = l.owner_id "
    "WHERE l.pipeline_id = :pipeline_id ORDER BY l.created_at DESC, l.id DESC LIMIT :limit"
)
WRK_SCRIPT = """
wrk.method = "%(method)s"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
"""


# --- the plain endpoint ---------------------------------------------------------------------------


def _global_id(type_name: str, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode()


def plain_app(database_url: str, *, store: Store | None = None) -> Starlette:
    """The baseline: authenticate the key as the app does (cached), run one SELECT, return the page
    in the GraphQL response's shape."""
    from pipegraph.api.auth import Authenticator

    store = store or Store.from_url(database_url)
    authenticator = Authenticator(store)

    async def page(request: Request) -> Response:
        if await authenticator.user_for(request.headers.get("authorization")) is None:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        async with store.read() as session:
            rows = (
                await session.execute(
                    PLAIN_SQL, {"pipeline_id": int(request.query_params["pipeline"]), "limit": PAGE_SIZE + 1}
                )
            ).all()[:PAGE_SIZE]
        edges = [
            {
                "node": {
                    "id": _global_id("Lead", row.id),
                    "title": row.title,
                    "value": str((Decimal(row.value_cents) / 100).quantize(Decimal("0.01"))),
                    "stage": {"name": row.stage_name},
                    "owner": {"name": row.owner_name} if row.owner_name is not None else None,
                }
            }
            for row in rows
        ]
        return JSONResponse({"data": {"leads": {"edges": edges}}})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await store.dispose()

    return Starlette(routes=[Route("/leads", page), Route("/healthz", healthz)], lifespan=lifespan)


def plain_app_from_env() -> Starlette:
    return plain_app(os.environ["PIPEGRAPH_DATABASE_URL"])


# --- set-up -------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    method: str
    body: str | None


async def seed(database_url: str, leads: int, seed_value: int) -> tuple[str, int]:
    """Load the leads and return an admin's API key and the first pipeline's id."""
    from pipegraph import demo
    from pipegraph.services.api_keys import create_api_key
    from pipegraph.services.users import get_user_by_email

    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        started = time.perf_counter()
        summary = await demo.load_synthetic(store, leads=leads, seed=seed_value, activities_per_lead=0.5)
        print(f"  seeded {summary.describe()} in {time.perf_counter() - started:.1f} s")
        async with store.write() as session:
            admin = await get_user_by_email(session, "admin@example.com")
            assert admin is not None
            _, key = await create_api_key(session, user_id=admin.id)
            pipeline_id = int(await session.scalar(text("SELECT min(id) FROM pipelines")) or 0)
        return key, pipeline_id
    finally:
        await store.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(factory: str, env: dict[str, str], port: int) -> Iterator[str]:
    command = [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=Path(__file__).parent)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{factory} did not start")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(raw: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", raw).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(target: Target, key: str, seconds: float, connections: int, threads: int) -> Result:
    body = json.dumps(target.body) if target.body is not None else "nil"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"method": target.method, "body": body, "key": key})
    try:
        output = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
             "--latency", "-s", script.name, target.url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)$", output, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        print(f"  wrk socket errors ({target.name}): {socket_errors.group(1)}")
    return Result(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        errors=int(errors.group(1)) if errors else 0,
    )


async def in_process(database_url: str, key: str, pipeline_id: int, profile_requests: int) -> dict[str, Any]:
    """Per request, in-process: SQL statements, the 50 ids returned, and a profile by package."""
    from pipegraph.app import create_app
    from pipegraph.settings import Settings

    store = Store.from_url(database_url)
    statements: list[str] = []
    event.listen(store.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    apps = {
        "graphql": (
            create_app(
                Settings(
                    database_url=database_url,
                    cost_budget=UNTHROTTLED["cost_budget"],
                    cost_restore_rate=UNTHROTTLED["cost_restore_rate"],
                ),
                store=store,
            ),
            "POST",
            "/graphql",
        ),
        "plain": (plain_app(database_url, store=store), "GET", f"/leads?pipeline={pipeline_id}"),
    }
    body = {"query": GRAPHQL_QUERY, "variables": {"pipelineId": _global_id("Pipeline", pipeline_id)}}
    report: dict[str, Any] = {}
    try:
        for name, (app, method, path) in apps.items():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def call(method: str = method, path: str = path) -> dict[str, Any]:
                    response = await client.request(
                        method,
                        path,
                        json=body if method == "POST" else None,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    response.raise_for_status()
                    payload: dict[str, Any] = response.json()
                    if payload.get("errors"):
                        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
                    return payload

                await call()  # warm caches and connections
                statements.clear()
                payload = await call()
                count = len(statements)
                profile = cProfile.Profile()
                started = time.perf_counter()
                profile.enable()
                for _ in range(profile_requests):
                    await call()
                profile.disable()
                elapsed = (time.perf_counter() - started) / max(profile_requests, 1)
            report[name] = {
                "statements": count,
                "ids": [edge["node"]["id"] for edge in payload["data"]["leads"]["edges"]],
                "payload": payload,
                "ms_per_request": elapsed * 1000,
                # Deterministic, unlike times on a shared machine (includes the in-process client's calls).
                "calls_per_request": pstats.Stats(profile).total_calls / max(profile_requests, 1),  # type: ignore[attr-defined]
                "by_package": _by_package(profile, profile_requests),
                "top_functions": _top_functions(profile, profile_requests),
            }
    finally:
        await store.dispose()
    return report


def _by_package(profile: cProfile.Profile, requests: int) -> dict[str, float]:
    """Own (exclusive) time per request in ms, grouped by the top-level package of each function."""
    totals: dict[str, float] = defaultdict(float)
    stats = pstats.Stats(profile)
    for (filename, _, _), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        match = re.search(r"site-packages/([A-Za-z_][\w]*)", filename) or re.search(r"src/(\w+)/", filename)
        if match:
            package = match.group(1)
        elif filename.startswith(("<", "~")) or "python3" in filename:
            package = "python stdlib/builtins"
        else:
            package = Path(filename).stem
        totals[package] += own * 1000 / max(requests, 1)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _top_functions(
    profile: cProfile.Profile, requests: int, limit: int = 15
) -> list[tuple[str, float, float]]:
    """The functions with the most own time: (where, own ms per request, calls per request)."""
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, name), (_, calls, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = re.sub(r".*/(site-packages|src|lib/python3\.\d+)/", "", filename)
        rows.append((f"{where}:{line}({name})", own * 1000 / max(requests, 1), calls / max(requests, 1)))
    return sorted(rows, key=lambda row: -row[1])[:limit]


# --- one backend --------------------------------------------------------------------------------


def bench_backend(label: str, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== {label} ==")
    key, pipeline_id = asyncio.run(seed(database_url, args.leads, args.seed))
    checks = asyncio.run(
        in_process(database_url, key, pipeline_id, args.profile_requests if args.profile else 3)
    )
    graphql, plain = checks["graphql"], checks["plain"]
    # The GraphQL answer also carries extensions.cost (the query limits); the data must be the same.
    if graphql["payload"]["data"] != plain["payload"]["data"]:
        raise RuntimeError("the two endpoints returned different pages; the comparison would be unfair")
    env = {
        "PIPEGRAPH_DATABASE_URL": database_url,
        "PIPEGRAPH_POOL_SIZE": str(args.pool_size or args.connections),
        **{f"PIPEGRAPH_{name.upper()}": str(value) for name, value in UNTHROTTLED.items()},
    }
    body = json.dumps(
        {"query": GRAPHQL_QUERY, "variables": {"pipelineId": _global_id("Pipeline", pipeline_id)}}
    )
    lead_id = graphql["payload"]["data"]["leads"]["edges"][0]["node"]["id"]
    lead_body = json.dumps({"query": LEAD_QUERY, "variables": {"id": lead_id}})
    results: dict[str, Result] = {}
    with (
        serve("pipegraph.app:app_from_env", env, free_port()) as api_base,
        serve("pipegraph.app:app_from_env", {**env, "PIPEGRAPH_COMPILED_READS": "false"}, free_port()) as ref,
        serve("bench_api:plain_app_from_env", env, free_port()) as plain_base,
    ):
        # graphql: compiled reads (the default); reference: the same app with them switched off.
        targets = [
            Target("plain", f"{plain_base}/leads?pipeline={pipeline_id}", "GET", None),
            Target("graphql", f"{api_base}/graphql", "POST", body),
            Target("reference", f"{ref}/graphql", "POST", body),
            Target("lead", f"{api_base}/graphql", "POST", lead_body),
            Target("lead-ref", f"{ref}/graphql", "POST", lead_body),
        ]
        for target in targets:  # warm-up
            run_wrk(target, key, args.warmup, args.connections, args.threads)
        for target in targets:
            results[target.name] = run_wrk(target, key, args.duration, args.connections, args.threads)
    for name in ("reference", "lead", "lead-ref"):
        result = results[name]
        print(f"  {name:<10}{result.requests_per_second:>10.0f}{result.p50_ms:>10.1f}{result.p99_ms:>10.1f}")
    print(
        "  compiled / reference: board page "
        f"{results['graphql'].requests_per_second / results['reference'].requests_per_second:.2f}, "
        f"lead by id {results['lead'].requests_per_second / results['lead-ref'].requests_per_second:.2f}"
    )
    ratio = results["graphql"].requests_per_second / results["plain"].requests_per_second
    print(f"  {'endpoint':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'SQL/req':>10}{'errors':>8}")
    for name in ("plain", "graphql"):
        result = results[name]
        print(
            f"  {name:<10}{result.requests_per_second:>10.0f}{result.p50_ms:>10.1f}{result.p99_ms:>10.1f}"
            f"{checks[name]['statements']:>10}{result.errors:>8}"
        )
    print(f"  ratio graphql/plain: {ratio:.2f}  (target >= 0.5)")
    print(
        "  in-process Python function calls per request (cProfile): "
        + ", ".join(f"{name} {checks[name]['calls_per_request']:.0f}" for name in ("plain", "graphql"))
    )
    if args.profile or ratio < 0.5:
        for name in ("plain", "graphql"):
            print(f"  in-process profile, {name}: {checks[name]['ms_per_request']:.2f} ms/request (profiled)")
            for package, ms in list(checks[name]["by_package"].items())[:10]:
                print(f"    {package:<28}{ms:>8.3f} ms")
        print("  graphql: functions with the most own time (ms and calls per request)")
        for where, ms, calls in checks["graphql"]["top_functions"]:
            print(f"    {ms:>7.3f} ms {calls:>7.0f}  {where}")
    return {"results": results, "ratio": ratio, "checks": checks}


@contextmanager
def postgres_database(admin_url: str, prefix: str = "pipegraph_bench") -> Iterator[str]:
    import asyncpg

    plain = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(plain)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{plain.rpartition('/')[0]}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=100_000, help="leads to seed (default 100000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the data (default 7)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per endpoint (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per endpoint (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument(
        "--pool-size", type=int, help="PIPEGRAPH_POOL_SIZE of the servers (default: --connections)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--postgres-url", help="also run on a fresh database of this PostgreSQL server")
    parser.add_argument("--profile", action="store_true", help="print where in-process time goes")
    parser.add_argument("--profile-requests", type=int, default=200, help="requests profiled (default 200)")
    parser.add_argument("--skip-sqlite", action="store_true", help="run only on PostgreSQL")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print(
            "bench_api.py needs wrk, an HTTP load generator: apt-get install wrk (Debian/Ubuntu), "
            "brew install wrk (macOS), or build it from https://github.com/wg/wrk",
            file=sys.stderr,
        )
        return 2
    print(
        f"leads={args.leads} duration={args.duration}s connections={args.connections} "
        f"wrk threads={args.threads} cores={os.cpu_count()}"
    )
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as directory:
            bench_backend("SQLite", f"sqlite:///{Path(directory) / 'bench.sqlite3'}", args)
    if args.postgres_url:
        with postgres_database(args.postgres_url) as url:
            bench_backend("PostgreSQL", url, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
