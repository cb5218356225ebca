"""``whatIf`` with ``repsDelta`` end to end: a real ``pipegraph serve`` over the SQLite demo data.

    python scripts/bench_whatif.py [--repeat 7] [--reps-delta 1] [--pipeline "B2B Sales"] [--keep DIR]

What a planner's "what does one more rep buy?" costs, as a user would run it: ``pipegraph seed-demo``
into a fresh SQLite file, ``pipegraph serve --open`` in its own process, then per round a write
(``createLead``, which moves the pipeline's event log, so no calibration is reused) followed by the
``whatIf`` request, timed as the client sees it (HTTP wall latency); and the same request again with
nothing written meanwhile (the calibration is then shared). Each figure is the median of ``--repeat``
rounds after a warm-up round.

Same-run baseline: the model the server simulates (the pipeline calibrated with rep capacity, read
in this process as the server reads it, timed too) compared in this process with ``pipesim.compare``
at the trials the server reported, wall and CPU seconds — the simulation's share of the request.
Target: the request within 1 s at the default trials.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

import pipesim
from bench_api import free_port
from peer_support import running, wait_until_ready
from pipegraph.db.session import Store
from pipegraph.services.forecasting.calibration import pipeline_id_for_name
from pipegraph.services.forecasting.fast import calibrate_now

WHAT_IF = """
query WhatIf($id: ID!, $delta: Int!) {
  whatIf(input: {pipelineId: $id, changes: [{repsDelta: $delta}]}) {
    trials engine changes pVariantBetter
  }
}
"""
WRITE = """
mutation Write($id: ID!, $title: String!) {
  createLead(input: {pipelineId: $id, title: $title}) { userErrors { message } }
}
"""


def command(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else (shutil.which(name) or name)


@contextmanager
def server(database_url: str, log: Path) -> Iterator[str]:
    """``pipegraph serve --open`` on a free loopback port, stopped (only this process) on exit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [command("pipegraph"), "serve", "--open", "--port", str(port), "--database-url", database_url]
    env = {**os.environ, "PIPEGRAPH_SIMULATION_WORKERS": "1"}

    def healthy() -> bool:
        return httpx.get(f"{base}/healthz", timeout=1).is_success

    with running(serve, env, log, log.parent) as process:
        wait_until_ready(process, healthy, log, "pipegraph")
        yield base


def ask(client: httpx.Client, query: str, variables: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    response = client.post("/graphql", json={"query": query, "variables": variables})
    elapsed = time.perf_counter() - start
    body: dict[str, Any] = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise SystemExit(f"request failed: {response.status_code} {body}")
    return elapsed, body["data"]


def pipeline_id(client: httpx.Client, name: str) -> str:
    _, data = ask(client, "{ pipelines { id name } }", {})
    for pipeline in data["pipelines"]:
        if pipeline["name"] == name:
            return str(pipeline["id"])
    raise SystemExit(f"no pipeline named {name!r}")


async def calibrated(url: str, name: str) -> tuple[float, pipesim.Model]:
    """The model the server simulates: the calibration with rep capacity as of now, read in this
    process the way the server's shared calibration reads it; and how long the reading took."""
    store = Store.from_url(url)
    try:
        async with store.read() as session:
            pk = await pipeline_id_for_name(session, name)
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            async with store.read() as session:
                calibration = await calibrate_now(
                    session, pipeline_id=pk, horizon_days=90, with_capacity=True
                )
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds), calibration.model
    finally:
        await store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--reps-delta", type=int, default=1, help="reps added (default 1)")
    parser.add_argument("--pipeline", default="B2B Sales", help="demo pipeline (default B2B Sales)")
    parser.add_argument("--keep", type=Path, help="keep the SQLite file in this directory")
    args = parser.parse_args()

    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-whatif-"))
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "demo.sqlite3"
    url = f"sqlite:///{database}"
    if not database.exists():
        subprocess.run(
            [command("pipegraph"), "seed-demo", "--database-url", url], check=True, capture_output=True
        )

    after_write: list[float] = []
    repeat: list[float] = []
    with server(url, directory / "server.log") as base, httpx.Client(base_url=base, timeout=120) as client:
        pid = pipeline_id(client, args.pipeline)
        variables = {"id": pid, "delta": args.reps_delta}
        for round_ in range(args.repeat + 1):
            ask(client, WRITE, {"id": pid, "title": f"bench write {round_}"})
            first, data = ask(client, WHAT_IF, variables)
            second, _ = ask(client, WHAT_IF, variables)
            if round_ > 0:  # the first round warms imports and the worker
                after_write.append(first)
                repeat.append(second)
        answer = data["whatIf"]
    calibration_seconds, model = asyncio.run(calibrated(url, args.pipeline))
    if args.keep is None:
        shutil.rmtree(directory)

    assert model.reps is not None, "the demo pipeline has reps with capacity"
    variant = replace(model, reps=replace(model.reps, count=model.reps.count + args.reps_delta))
    trials = int(answer["trials"])
    pipesim.compare(model, variant, 500, seed=1)  # warm
    walls, cpus = [], []
    for _ in range(args.repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        pipesim.compare(model, variant, trials, seed=0)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"whatIf repsDelta={args.reps_delta} on {args.pipeline!r}: {answer['engine']} engine, {trials} trials"
    )
    print(f"  {answer['changes']}; P(variant better) {answer['pVariantBetter']:.3f}")
    written, again = statistics.median(after_write), statistics.median(repeat)
    print(f"HTTP whatIf after a write (median of {args.repeat})  {written:7.3f} s   (target <= 1 s)")
    print(f"HTTP whatIf repeated, nothing written         {again:7.3f} s")
    print(
        f"in-process compare, same model and trials      {statistics.median(walls):7.3f} s wall "
        f"{statistics.median(cpus):7.3f} s CPU   (baseline)"
    )
    print(f"in-process calibration with capacity (read)    {calibration_seconds:7.3f} s wall")
    print(f"load average {load}")


if __name__ == "__main__":
    main()
