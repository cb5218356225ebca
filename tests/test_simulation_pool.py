"""``SimulationPool.run_shared``: equal questions asked at once or again run once in the worker; other
arguments, unhashable ones and failures run again. Counted by the pool's submissions."""

from __future__ import annotations

import asyncio

import pytest

from pipegraph.services.simulation_pool import SimulationPool


def _square(value: int, *, offset: int = 0) -> int:
    return value * value + offset


def _fail(value: int) -> int:
    raise ValueError(f"no {value}")


def _length(values: list[int]) -> int:
    return len(values)


async def test_equal_questions_run_once() -> None:
    pool = SimulationPool()
    try:
        first, second = await asyncio.gather(pool.run_shared(_square, 3), pool.run_shared(_square, 3))
        assert (first, second, pool.submitted) == (9, 9, 1)
        assert await pool.run_shared(_square, 3) == 9
        assert pool.submitted == 1
        assert await pool.run_shared(_square, 3, offset=1) == 10
        assert await pool.run_shared(_square, 4) == 16
        assert pool.submitted == 3
        assert await pool.run_shared(_length, [1, 2]) == 2  # unhashable: runs, nothing kept
        assert await pool.run_shared(_length, [1, 2]) == 2
        assert pool.submitted == 5
        for _ in range(2):
            with pytest.raises(ValueError, match="no 1"):
                await pool.run_shared(_fail, 1)
        assert pool.submitted == 7
    finally:
        pool.close()
