"""The forecast view's latency at the demo size, 100,000 and 1,000,000 leads: before and after, same run.

The dashboard's forecast view asks ``forecast`` and ``leadsNeeded`` of one pipeline at once. Per size
and backend this script loads the data (or reuses it, ``--keep-data``), then measures, each figure the
median of ``--repeat`` runs after a warm-up:

- calibration alone: the reference reading of the paired history (``calibrate`` with a cut-off, how
  every question calibrated before), the reading of the kept totals (``calibrate_now``), and a hit of
  the shared calibration (``CalibrationCache``: the stamp's statements only);
- the view, over HTTP in-process (httpx over ASGI, the app from ``create_app``), both questions at
  once: "before" with each question calibrating by the reference reading, "after a write" with the
  shared calibration emptied before each view (every view calibrates once, from the totals), and
  "repeat" with it kept (a second click, nothing written meanwhile);
- the two simulations alone in the pool's worker (``pool.run``), which the view's times include;
- with ``--per-winner-baseline``, the forecast's engine alone in this process, once each:
  ``vectorized.simulate`` (which picks the cheaper exact path: group draws for many winners a trial)
  against the per-winner reference (``vectorized.simulate_per_winner``) on the same calibrated model
  and trials — the models carry parameter uncertainty, which the group draws cover since
  ``engines.cohort_scales``.

Data: the demo data set (``demo.load_demo``, 300 leads in each of four pipelines, history ending now)
and seeded synthetic data of one pipeline (``demo.load_synthetic``, about 5.6 history rows a lead over
24 months ending when it is loaded), the questions asked of "B2B Sales" at its default sizes. The
synthetic loader writes in bulk (``COPY`` on PostgreSQL, batched inserts on SQLite with the bulk
import's larger page cache, ``pipegraph.db.page_cache``), the same rows ``seed-demo`` writes: history,
stays and daily totals exact. Its time and rate are reported.

    python scripts/bench_forecast.py [--sizes demo 100000 1000000] [--repeat 5] [--no-sqlite]
        [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres] [--keep-data DIR] [--no-reference]
        [--simulation-workers N] [--per-winner-baseline]

``--keep-data DIR`` keeps the loaded SQLite files in DIR and the PostgreSQL databases
(``forecast_bench_<leads>``) and reuses them on the next run (loading a million leads takes many
minutes); without it everything loaded is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

import pipesim
from pipegraph import demo
from pipegraph.api import ids
from pipegraph.app import create_app
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, users
from pipegraph.services.forecasting.cache import CalibrationCache
from pipegraph.services.forecasting.calibration import Calibration, calibrate, pipeline_id_for_name
from pipegraph.services.forecasting.fast import calibrate_now
from pipegraph.services.simulation_pool import SimulationPool
from pipegraph.settings import Settings
from pipesim.engines import vectorized

PIPELINE = "B2B Sales"
SEED = 20240101
FORECAST = 'query($p: ID!) { forecast(input: {pipelineId: $p, goal: "500000"}) { revenue { p50 } } }'
LEADS_NEEDED = 'query($p: ID!) { leadsNeeded(input: {pipelineId: $p, goal: "2000000"}) { leads } }'


class ReferenceCalibrations(CalibrationCache):
    """How every question calibrated before: alone, by the reference reading of the paired history."""

    async def calibration(
        self,
        session: AsyncSession,
        *,
        pipeline_id: int,
        horizon_days: float,
        window_days: float = 90.0,
        with_capacity: bool = False,
        segments: bool = False,
    ) -> Calibration:
        return await calibrate(
            session,
            pipeline_id=pipeline_id,
            horizon_days=horizon_days,
            window_days=window_days,
            with_capacity=with_capacity,
            segments=segments,
        )


async def _median(repeat: int, call: Callable[[], Awaitable[Any]]) -> float:
    await call()  # warm-up: caches, the worker process
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _load(url: str, size: str) -> str:
    store = Store.from_url(url)
    try:
        await migrate.upgrade(store.engine)
        started = time.perf_counter()
        if size == "demo":
            summary = await demo.load_demo(store)
        else:
            summary = await demo.load_synthetic(
                store,
                leads=int(size),
                seed=SEED,
                activities_per_lead=0,
                pipelines=demo.DEMO_PIPELINES[:1],
                # Ending now: the questions calibrate as of the clock, and data that ended months ago
                # would show every open lead stuck for months.
                now=datetime.now(UTC),
            )
        seconds = time.perf_counter() - started
        rows = summary.leads + summary.history
        return (
            f"{summary.describe()} (loaded in {seconds:.0f} s, {rows / seconds:,.0f} lead and history rows/s)"
        )
    finally:
        await store.dispose()


def _engine_alone(model: pipesim.Model, figures: dict[str, float]) -> None:
    """The forecast's two blocks of 1,000 trials in this process, once each way."""
    for name, simulate in (
        ("engine alone, vectorized.simulate (in process, once)", vectorized.simulate),
        ("engine alone, per-winner reference (in process, once)", vectorized.simulate_per_winner),
    ):
        started = time.perf_counter()
        for block in range(2):
            simulate(model, SEED, block, 1000)
        figures[name] = time.perf_counter() - started


async def measure(
    url: str, repeat: int, with_reference: bool = True, workers: int | None = None, per_winner: bool = False
) -> tuple[str, dict[str, float]]:
    store = Store.from_url(url)
    async with store.write() as session:
        admin = await users.create_user(
            session, name="Bench", email=f"bench-{uuid.uuid4().hex[:8]}@example.com", role=Role.ADMIN
        )
        _, key = await api_keys.create_api_key(session, user_id=admin.id)
    async with store.read() as session:
        pk = await pipeline_id_for_name(session, PIPELINE)
    figures: dict[str, float] = {}

    async def reference() -> Calibration:
        async with store.read() as session:
            return await calibrate(session, pipeline_id=pk, horizon_days=90)

    async def totals() -> Calibration:
        async with store.read() as session:
            return await calibrate_now(session, pipeline_id=pk, horizon_days=90)

    shared = CalibrationCache()

    async def hit() -> Calibration:
        async with store.read() as session:
            return await shared.calibration(session, pipeline_id=pk, horizon_days=90)

    if with_reference:
        figures["calibration, reference"] = await _median(repeat, reference)
    figures["calibration, kept totals"] = await _median(repeat, totals)
    figures["calibration, shared (hit)"] = await _median(repeat, hit)
    report = (await totals()).report

    # "Before" can outlast the default 30 s request limit at 100,000 leads on a busy machine.
    environ = {"PIPEGRAPH_REQUEST_TIMEOUT": "600"}
    if workers is not None:
        environ["PIPEGRAPH_SIMULATION_WORKERS"] = str(workers)
    settings = Settings.from_env(environ, database_url=url)
    app = create_app(settings, store=store)
    pool: SimulationPool = app.state.simulations
    try:
        variables = {"p": ids.encode("Pipeline", pk)}
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:

            async def ask(query: str) -> None:
                response = await http.post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers
                )
                if response.status_code != 200 or "errors" in response.json():
                    raise RuntimeError(response.text)

            async def view() -> None:
                await asyncio.gather(ask(FORECAST), ask(LEADS_NEEDED))

            async def view_after_write() -> None:
                pool.calibrations.clear()
                await view()

            if with_reference:
                fast = pool.calibrations
                pool.calibrations = ReferenceCalibrations()
                figures["view, before (reference, each question)"] = await _median(repeat, view)
                pool.calibrations = fast
            figures["view, after a write (shared, from totals)"] = await _median(repeat, view_after_write)
            figures["view, repeat (shared, kept)"] = await _median(repeat, view)

            model = (await totals()).model

            async def simulate_forecast() -> None:
                await pool.question(pipesim.forecast, model, 2000, 0, goal=500_000.0)

            async def simulate_leads_needed() -> None:
                await pool.question(pipesim.leads_needed, model.with_new_leads(0), 2_000_000.0, 0.9, 2000, 0)

            figures["simulation, forecast"] = await _median(repeat, simulate_forecast)
            figures["simulation, leadsNeeded"] = await _median(repeat, simulate_leads_needed)
            if per_winner:
                _engine_alone(model, figures)
    finally:
        pool.close()
        await store.dispose()
    return f"{report.open_leads:,} open leads in {report.open_cohorts} cohorts", figures


async def _measure(url: str, args: argparse.Namespace) -> tuple[str, dict[str, float]]:
    return await measure(
        url, args.repeat, not args.no_reference, args.simulation_workers, args.per_winner_baseline
    )


async def _database_exists(admin: str, name: str) -> bool:
    import asyncpg

    connection = await asyncpg.connect(admin)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await connection.close()


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _sqlite(size: str, args: argparse.Namespace, workdir: Path) -> tuple[str, str, dict[str, float]]:
    path = workdir / f"forecast_{size}.sqlite3"
    url = f"sqlite:///{path}"
    described = f"{size} from an earlier run" if path.exists() else await _load(url, size)
    store = Store.from_url(url)
    await migrate.upgrade(store.engine)
    async with store.engine.connect() as connection:
        await connection.exec_driver_sql("ANALYZE")
    await store.dispose()
    try:
        return (
            described,
            *await measure(
                url, args.repeat, not args.no_reference, args.simulation_workers, args.per_winner_baseline
            ),
        )
    finally:
        if args.keep_data is None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _postgres(size: str, args: argparse.Namespace) -> tuple[str, str, dict[str, float]]:
    admin = args.postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    keep = args.keep_data is not None
    name = f"forecast_bench_{size}" if keep else f"pipegraph_bench_forecast_{uuid.uuid4().hex[:8]}"
    url = f"{admin.rpartition('/')[0]}/{name}"
    reuse = keep and await _database_exists(admin, name)
    if not reuse:
        await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        described = f"{size} from an earlier run" if reuse else await _load(url, size)
        store = Store.from_url(url)
        await migrate.upgrade(store.engine)
        await store.dispose()
        await _admin(url, "VACUUM ANALYZE")
        return (
            described,
            *await measure(
                url, args.repeat, not args.no_reference, args.simulation_workers, args.per_winner_baseline
            ),
        )
    finally:
        if not keep:
            await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _report(backend: str, size: str, described: str, opened: str, figures: dict[str, float]) -> None:
    print(f"\n### {backend}, {size} ({described}; {PIPELINE}: {opened})\n")
    print("| measure | median (s) | × after |")
    print("|---|---|---|")
    after = figures["view, after a write (shared, from totals)"]
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.3f} | {seconds / after:.2f} |")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.keep_data) if args.keep_data else Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            if not args.no_sqlite:
                _report("SQLite", size, *await _sqlite(size, args, workdir))
            if args.postgres_url:
                _report("PostgreSQL", size, *await _postgres(size, args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["demo", "100000", "1000000"], help="'demo' and/or numbers of leads"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each measure (default 5)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    parser.add_argument(
        "--simulation-workers",
        type=int,
        default=None,
        help="interactive simulation processes (default: the server's, two where there are two cores)",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference calibration (minutes at 1,000,000)"
    )
    parser.add_argument(
        "--per-winner-baseline",
        action="store_true",
        help="also time the forecast's engine alone, cohort path against the per-winner reference",
    )
    parser.add_argument("--postgres-url", help="PostgreSQL server to create the databases on (none: skip)")
    parser.add_argument("--keep-data", help="directory for the SQLite files; keep and reuse all data")
    asyncio.run(main(parser.parse_args()))
