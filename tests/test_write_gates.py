"""``WriteGates``: at most ``limit`` write statements of one pipeline in flight, the others waiting in
order; other pipelines not held up; nothing kept once a pipeline's writes are done; a failure releases."""

from __future__ import annotations

import asyncio

import pytest

from pipegraph.db.write_gates import WriteGates


async def test_at_most_the_limit_of_one_pipeline_in_flight_and_the_others_free() -> None:
    gates = WriteGates(limit=3)
    running: dict[int, int] = {1: 0, 2: 0}
    peaks: dict[int, int] = {1: 0, 2: 0}
    order: list[int] = []

    async def write(pipeline: int, number: int) -> None:
        async with gates.passage(pipeline):
            running[pipeline] += 1
            peaks[pipeline] = max(peaks[pipeline], running[pipeline])
            if pipeline == 1:
                order.append(number)
            await asyncio.sleep(0.001)
            running[pipeline] -= 1

    await asyncio.gather(*(write(1, n) for n in range(20)), *(write(2, n) for n in range(2)))
    assert peaks == {1: 3, 2: 2}
    assert gates.peak == 3
    assert order == list(range(20))  # asyncio's semaphore wakes waiters in arrival order
    assert len(gates) == 0


async def test_a_failed_write_releases_its_place() -> None:
    gates = WriteGates(limit=1)
    with pytest.raises(RuntimeError):
        async with gates.passage(7):
            raise RuntimeError("statement failed")
    async with asyncio.timeout(1):
        async with gates.passage(7):
            pass
    assert len(gates) == 0


async def test_a_cancelled_waiter_leaves_no_gate_behind() -> None:
    gates = WriteGates(limit=1)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with gates.passage(5):
            held.set()
            await release.wait()

    first = asyncio.create_task(holder())
    await held.wait()
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await first
    assert len(gates) == 0
