"""Pipeline metrics at one million leads, on SQLite and PostgreSQL, against a baseline in the same run.

For each backend and each size (``--small`` leads, then ``--leads``) the script loads seeded synthetic
data into one pipeline (``pipegraph.demo.load_synthetic``: about five history rows per lead over 24
months), runs ANALYZE, and then measures in a fresh subprocess, so its peak resident memory
(``ru_maxrss``) belongs to the metrics calls alone:

- baseline: ``SELECT count(*) FROM stage_history`` (a full pass over the history table's smallest index);
- ``pipeline_metrics`` (the ``pipelineMetrics`` query's fixed statements) for windows of
  ``--window-days`` days ending on the data's last morning (as "the last N days" asked then), with
  the daily totals and, for comparison,
  from the stays alone (``daily_totals=False``, how every window was read before the totals);
- ``breakdown`` by source and the weekly ``time_series`` over 90 days (fields a client selects
  separately).

Each figure is the median of ``--repeat`` runs after one warm-up; the two ways of reading a window
take turns, call by call. Memory flat in the number of leads
shows no rows are pulled into Python: compare the two sizes' peak RSS.

    python scripts/bench_metrics.py [--leads 1000000] [--small 100000] [--window-days 30 90 365]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--no-postgres] [--no-sqlite]
        [--keep-data DIR]

A scratch PostgreSQL database is created and dropped; SQLite files live in a temporary directory.
Loading a million leads takes minutes, so ``--keep-data DIR`` keeps the loaded data instead (SQLite
files in DIR, PostgreSQL databases ``metrics_bench_<leads>``) and reuses it on the next run after
migrating it to the current schema; ``--drop-data`` removes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from pipegraph.db import migrate
from pipegraph.db.session import SQLITE_MMAP_SIZE, Store
from pipegraph.demo import DEMO_PIPELINES, load_synthetic
from pipegraph.services.metrics import pipeline_metrics
from pipegraph.services.metrics_patterns import Dimension, breakdown, time_series
from pipegraph.services.metrics_sql import Interval

SEED = 20240101
NOW = datetime(2026, 1, 1, tzinfo=UTC)
# The metrics' clock and windows' end: mid-morning of the data's last day, as "the last N days" asked
# during a working day, so both a window's partial first and last days are read from the stays.
ASKED_AT = NOW - timedelta(hours=14, minutes=30)
PATTERN_DAYS = 90
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _timed(repeat: int, call: Callable[[], Awaitable[Any]]) -> float:
    return (await _alternated(repeat, call))[0]


async def _alternated(repeat: int, *calls: Callable[[], Awaitable[Any]]) -> list[float]:
    """The median time of each call, the calls taking turns, so a slow spell of a shared machine
    falls on all of them alike."""
    for call in calls:
        await call()  # warm-up: caches, prepared plans
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeat):
        for call, taken in zip(calls, times, strict=True):
            start = time.perf_counter()
            await call()
            taken.append(time.perf_counter() - start)
    return [statistics.median(taken) for taken in times]


async def measure(url: str, window_days: list[float], repeat: int) -> dict[str, Any]:
    """Runs in the measuring subprocess; returns seconds per call and the peak RSS in MiB."""
    store = Store.from_url(url)
    result: dict[str, Any] = {"metrics_s": {}}
    async with store.read() as session:
        pipeline_id = (await session.execute(text("SELECT min(id) FROM pipelines"))).scalar_one()
        result["history_rows"] = (await session.execute(text("SELECT count(*) FROM stage_history"))).scalar()

        async def baseline() -> None:
            await session.execute(text("SELECT count(*) FROM stage_history"))

        # The baseline keeps the definition of earlier runs, a plain read on SQLite: the memory map
        # the connections use now would shorten it several times and so inflate every ratio.
        if store.is_sqlite:
            await session.execute(text("PRAGMA mmap_size=0"))
        result["baseline_s"] = await _timed(repeat, baseline)
        if store.is_sqlite:
            await session.execute(text(f"PRAGMA mmap_size={SQLITE_MMAP_SIZE}"))
        result["stays_only_s"] = {}
        for days in window_days:
            start = ASKED_AT - timedelta(days=days)

            def metrics(daily_totals: bool, start: datetime = start) -> Callable[[], Awaitable[Any]]:
                async def call() -> None:
                    await pipeline_metrics(
                        session,
                        pipeline_id=pipeline_id,
                        start=start,
                        end=ASKED_AT,
                        now=ASKED_AT,
                        daily_totals=daily_totals,
                    )

                return call

            timed = await _alternated(repeat, metrics(True), metrics(False))
            result["metrics_s"][str(days)], result["stays_only_s"][str(days)] = timed
        # Over 90 days, the window of the figures earlier runs recorded.
        start = NOW - timedelta(days=PATTERN_DAYS)

        async def by_source() -> None:
            await breakdown(session, pipeline_id=pipeline_id, start=start, end=NOW, by=Dimension.SOURCE)

        async def weekly() -> None:
            await time_series(session, pipeline_id=pipeline_id, start=start, end=NOW, interval=Interval.WEEK)

        result["breakdown_s"] = await _timed(repeat, by_source)
        result["series_s"] = await _timed(repeat, weekly)
    await store.dispose()
    result["peak_rss_mib"] = _peak_rss_mib()
    result["anon_rss_mib"] = _status_mib("RssAnon")
    return result


def _peak_rss_mib() -> float:
    """This process's peak resident set. Linux keeps ``ru_maxrss`` across exec, so a child started by a
    large parent would report the parent's peak; ``VmHWM`` is this program's own."""
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    # ru_maxrss is KiB on Linux, bytes on macOS; this branch is for systems without /proc.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024)


def _status_mib(field: str) -> float | None:
    """A size from ``/proc/self/status`` in MiB (None without /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _load(url: str, leads: int) -> str:
    store = Store.from_url(url)
    try:
        await migrate.upgrade(store.engine)
        started = time.perf_counter()
        summary = await load_synthetic(
            store, leads=leads, seed=SEED, activities_per_lead=0, pipelines=DEMO_PIPELINES[:1], now=NOW
        )
        loaded = time.perf_counter() - started
    finally:
        await store.dispose()
    return f"{summary.describe()} (loaded in {loaded:.0f} s)"


def _run_measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", url, "--repeat", str(args.repeat), "--window-days"]
    command += [str(d) for d in args.window_days]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output)
    return result


async def _prepare(url: str, leads: int, reuse: bool) -> str:
    """Load ``leads`` leads into ``url``, or when ``reuse`` migrate what an earlier run loaded there."""
    if not reuse:
        return await _load(url, leads)
    store = Store.from_url(url)
    try:
        started = time.perf_counter()
        await migrate.upgrade(store.engine)
        async with store.read() as session:
            loaded = (await session.execute(text("SELECT count(*) FROM leads"))).scalar_one()
        if loaded != leads:
            raise SystemExit(f"{url} holds {loaded:,} leads, not {leads:,}: run with --drop-data first")
        return f"{leads:,} leads from an earlier run (migrated in {time.perf_counter() - started:.0f} s)"
    finally:
        await store.dispose()


async def _sqlite(leads: int, args: argparse.Namespace, workdir: Path) -> tuple[str, dict[str, Any]]:
    path = workdir / f"metrics_{leads}.sqlite3"
    url = f"sqlite:///{path}"
    described = await _prepare(url, leads, reuse=args.keep_data is not None and path.exists())
    store = Store.from_url(url)
    async with store.engine.connect() as connection:
        await connection.exec_driver_sql("ANALYZE")
    await store.dispose()
    try:
        return described, _run_measure(url, args)
    finally:
        if args.keep_data is None:
            _remove_sqlite(path)


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _database_exists(admin: str, name: str) -> bool:
    import asyncpg

    connection = await asyncpg.connect(admin)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()


async def _postgres(leads: int, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    admin = _admin_url(args)
    keep = args.keep_data is not None
    name = f"metrics_bench_{leads}" if keep else f"pipegraph_bench_metrics_{uuid.uuid4().hex[:8]}"
    reuse = keep and await _database_exists(admin, name)
    if not reuse:
        await _admin(admin, f'CREATE DATABASE "{name}"')
    url = f"{admin.rpartition('/')[0]}/{name}"
    try:
        described = await _prepare(url, leads, reuse=reuse)
        # VACUUM sets the visibility map, so covering indexes give index-only scans, as in a live database.
        await _admin(url, "VACUUM ANALYZE")
        return described, _run_measure(url, args)
    finally:
        if not keep:
            await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_url(args: argparse.Namespace) -> str:
    url: str = args.postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    return url


async def _drop_data(args: argparse.Namespace) -> None:
    for leads in (args.small, args.leads):
        if args.keep_data is not None:
            _remove_sqlite(Path(args.keep_data) / f"metrics_{leads}.sqlite3")
        if not args.no_postgres:
            await _admin(_admin_url(args), f'DROP DATABASE IF EXISTS "metrics_bench_{leads}" WITH (FORCE)')


def _report(backend: str, leads: int, described: str, result: dict[str, Any]) -> None:
    baseline = result["baseline_s"]
    print(f"\n{backend}, {leads:,} leads: {described}")
    print(f"  baseline count(*) over {result['history_rows']:,} history rows: {baseline * 1000:.1f} ms")
    for days, seconds in result["metrics_s"].items():
        stays_only = result["stays_only_s"][days]
        print(
            f"  pipeline_metrics, {float(days):g}-day window: {seconds * 1000:.0f} ms "
            f"({seconds / baseline:.1f}× baseline); from the stays alone {stays_only * 1000:.0f} ms "
            f"({stays_only / baseline:.1f}×, {stays_only / seconds:.1f}× as long)"
        )
    for key, label in (("breakdown_s", "breakdown by source"), ("series_s", "weekly time series")):
        seconds = result[key]
        print(f"  {label}: {seconds * 1000:.0f} ms ({seconds / baseline:.1f}× baseline)")
    print(f"  peak RSS of the measuring process: {result['peak_rss_mib']:.0f} MiB")
    # SQLite reads through a memory map: the pages it touched count in RSS as file cache. The
    # process's own memory is the anonymous part.
    anon = result.get("anon_rss_mib")
    if anon is not None:
        print(f"  of which anonymous (not file cache) at the end: {anon:.0f} MiB")


async def main(args: argparse.Namespace) -> None:
    if args.drop_data:
        await _drop_data(args)
        return
    with tempfile.TemporaryDirectory(prefix="pipegraph-bench-metrics-") as scratch:
        workdir = Path(args.keep_data or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for leads in (args.small, args.leads):
            if not args.no_sqlite:
                _report("SQLite", leads, *await _sqlite(leads, args, workdir))
            if not args.no_postgres:
                _report("PostgreSQL", leads, *await _postgres(leads, args))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=1_000_000, help="leads in the large run")
    parser.add_argument(
        "--small", type=int, default=100_000, help="leads in the small run (memory reference)"
    )
    parser.add_argument(
        "--window-days", type=float, nargs="+", default=[30, 90, 365], help="window lengths, ending at now"
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per figure (median reported)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES, help="server for a scratch database")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    parser.add_argument(
        "--keep-data", metavar="DIR", help="keep the loaded data (SQLite files here) and reuse it next time"
    )
    parser.add_argument("--drop-data", action="store_true", help="remove data kept by --keep-data, then exit")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.measure:
        print(json.dumps(asyncio.run(measure(arguments.measure, arguments.window_days, arguments.repeat))))
    else:
        asyncio.run(main(arguments))
