"""Latency of the interactive forecast queries at their default sizes, beside ``/healthz`` in the same run.

Loads the demo data set (``--leads`` per pipeline) into a fresh SQLite file, builds the app and asks each
question ``--repeat`` times in-process (httpx over ASGI), after one warm-up call that starts the worker
process. Reports the median wall time of each and its ratio to the health check.

    python scripts/bench_forecast.py [--leads 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from pipegraph import demo
from pipegraph.api import ids
from pipegraph.app import create_app
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, users
from pipegraph.services.calibration import calibrate, pipeline_id_for_name
from pipegraph.settings import Settings

PIPELINE = "B2B Sales"
QUERIES = {
    "forecast": 'query($p: ID!) { forecast(input: {pipelineId: $p, goal: "500000"}) { revenue { p50 } } }',
    "leadsNeeded": 'query($p: ID!) { leadsNeeded(input: {pipelineId: $p, goal: "2000000"}) { leads } }',
    "whatIf": """query($p: ID!, $s: ID!) {
      whatIf(input: {pipelineId: $p, changes: [{stageId: $s, daysFactor: 0.8}]}) { difference { mean } }
    }""",
}


async def _timed(call: Callable[[], Awaitable[httpx.Response]]) -> float:
    started = time.perf_counter()
    response = await call()
    if response.status_code != 200 or "errors" in response.json():
        raise RuntimeError(response.text)
    return time.perf_counter() - started


async def main(leads: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.sqlite3'}"
        store = Store.from_url(url)
        await migrate.upgrade(store.engine)
        await demo.load_demo(store, leads_per_pipeline=leads)
        async with store.write() as session:
            admin = await users.create_user(session, name="Bench", email="bench@example.com", role=Role.ADMIN)
            _, key = await api_keys.create_api_key(session, user_id=admin.id)
        async with store.read() as session:
            pk = await pipeline_id_for_name(session, PIPELINE)
            report = (await calibrate(session, pipeline_id=pk, horizon_days=90)).report
        variables = {"p": ids.encode("Pipeline", pk), "s": ids.encode("Stage", report.stages[1].stage_id)}
        app = create_app(Settings.from_env({}, database_url=url), store=store)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:

            def ask(query: str) -> Callable[[], Awaitable[httpx.Response]]:
                return lambda: http.post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers
                )

            calls: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
                "/healthz": lambda: http.get("/healthz")
            }
            calls.update({name: ask(query) for name, query in QUERIES.items()})
            warm_up = {name: await _timed(call) for name, call in calls.items()}
            medians = {
                name: statistics.median([await _timed(call) for _ in range(repeat)])
                for name, call in calls.items()
            }
        app.state.simulations.close()
        await store.dispose()
    print(
        f"{PIPELINE}: {report.open_leads} open leads in {report.open_cohorts} cohorts, "
        f"{leads} leads a pipeline"
    )
    print("| call | first call (s) | median (s) | × /healthz |")
    print("|---|---|---|---|")
    for name in calls:
        ratio = medians[name] / medians["/healthz"]
        print(f"| {name} | {warm_up[name]:.3f} | {medians[name]:.3f} | {ratio:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000, help="demo leads per pipeline (default 5000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per question (default 5)")
    args = parser.parse_args()
    asyncio.run(main(args.leads, args.repeat))
