"""A real dask.distributed cluster, started as a user would: ``dask scheduler`` and two ``dask worker``
processes on loopback. The capacity curve and a forecast give the same answer there as in one process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipesim import capacity, load_model, simulate
from pipesim.parallel import executor_for

ROOT = Path(__file__).resolve().parents[2]
DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    if DASK is None:
        pytest.skip("the dask command is not installed (pip install 'pipegraph[distributed]')")
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--dashboard-address", ":0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [DASK, "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(address, timeout=60) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_capacity_curve_and_forecast_on_a_real_cluster_match_one_process(scheduler: str) -> None:
    model = load_model(ROOT / "examples/readme_team.toml").with_new_leads(300)
    inline_plan = capacity(model, range(3), 1200, seed=11, goal=1_000_000)
    _, inline = simulate(model, 2600, seed=12)
    with executor_for(scheduler=scheduler) as executor:
        assert executor is not None
        spread_plan = capacity(model, range(3), 1200, seed=11, goal=1_000_000, executor=executor)
        _, spread = simulate(model, 2600, seed=12, executor=executor)
    assert spread_plan.to_dict() == inline_plan.to_dict()
    assert np.array_equal(spread.revenue, inline.revenue)
    assert inline.flow is not None
    assert spread.flow is not None
    assert np.array_equal(spread.flow.waits, inline.flow.waits)
