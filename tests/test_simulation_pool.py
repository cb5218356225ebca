"""``SimulationPool``: equal questions asked at once or again run once (``question_shared``); other
arguments, unhashable ones and failures run again, counted by the pool's submissions. A question's
blocks run in the workers by block number, with the answer of a run whole."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor
from pathlib import Path

import pytest

import pipesim
from pipegraph.services.simulation_pool import SimulationPool
from pipesim.parallel import map_blocks

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "saas_inbound.toml"


def _square(value: int, *, offset: int = 0, executor: Executor | None = None) -> int:
    return value * value + offset


def _fail(value: int, *, executor: Executor | None = None) -> int:
    raise ValueError(f"no {value}")


def _length(values: list[int], *, executor: Executor | None = None) -> int:
    return len(values)


async def test_equal_questions_run_once() -> None:
    pool = SimulationPool()
    try:
        first, second = await asyncio.gather(
            pool.question_shared(_square, 3), pool.question_shared(_square, 3)
        )
        assert (first, second, pool.submitted) == (9, 9, 1)
        assert await pool.question_shared(_square, 3) == 9
        assert pool.submitted == 1
        assert await pool.question_shared(_square, 3, offset=1) == 10
        assert await pool.question_shared(_square, 4) == 16
        assert pool.submitted == 3
        assert await pool.question_shared(_length, [1, 2]) == 2  # unhashable: runs, nothing kept
        assert await pool.question_shared(_length, [1, 2]) == 2
        assert pool.submitted == 5
        for _ in range(2):
            with pytest.raises(ValueError, match="no 1"):
                await pool.question_shared(_fail, 1)
        assert pool.submitted == 7
    finally:
        pool.close()


def _block_worker(model: object, seed: int, block: int, size: int) -> tuple[int, int]:
    return block, os.getpid()


def _blocks_question(trials: int, *, executor: Executor | None = None) -> list[tuple[int, int]]:
    return map_blocks(_block_worker, None, trials=trials, seed=0, block_trials=10, executor=executor)  # type: ignore[arg-type]


async def test_a_questions_blocks_run_side_by_side_each_in_the_worker_of_its_number() -> None:
    """Block b runs in worker b mod n, so the same block of the next question finds what its worker
    kept; the blocks of one question use every worker."""
    pool = SimulationPool(workers=2)
    try:
        first = await pool.question(_blocks_question, 40)
        again = await pool.question(_blocks_question, 40)
        assert [block for block, _ in first] == [0, 1, 2, 3]
        assert first == again
        pids = [pid for _, pid in first]
        assert pids[0] == pids[2] != pids[1] == pids[3]
        assert os.getpid() not in pids
        assert await pool.run(os.getpid) == pids[0]  # other calls: worker 0
    finally:
        pool.close()


async def test_a_forecast_over_the_workers_equals_the_forecast_run_whole() -> None:
    model = pipesim.load_model(EXAMPLE)
    pool = SimulationPool(workers=2)
    try:
        spread = await pool.question_shared(pipesim.forecast, model, 2_000, 3, goal=100_000.0)
        assert pool.submitted == 1
    finally:
        pool.close()
    assert spread == pipesim.forecast(model, 2_000, 3, goal=100_000.0)


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


async def test_each_worker_runs_one_blas_thread() -> None:
    """The workers are the parallelism: a BLAS thread pool in each would contend for the same cores."""
    pool = SimulationPool(workers=2)
    try:
        assert set(await pool.run(_blas_threads)) == {1}
    finally:
        pool.close()
