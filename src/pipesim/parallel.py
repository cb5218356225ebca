"""Splitting trials over any ``concurrent.futures.Executor``.

Trials are cut into fixed-size blocks and each block is one task. Streams are keyed by block (see
``engines.common``), so the concatenated result is identical whether the blocks run inline, on local
processes or on a dask.distributed cluster, with any number of workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from pipesim.errors import MissingExtraError
from pipesim.spec import Model

T = TypeVar("T")
BlockFunction = Callable[[Model, int, int, int], T]  # (model, seed, block, trials) -> result
Progress = Callable[[int], None]  # called with the number of trials just finished


def map_blocks(
    function: Callable[..., T],
    model: Model,
    *,
    trials: int,
    seed: int,
    block_trials: int,
    executor: Executor | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> list[T]:
    """``function(model, seed, block, n, **options)`` for every block, results in block order."""
    blocks = [
        (block, min(block_trials, trials - start))
        for block, start in enumerate(range(0, trials, block_trials))
    ]
    if executor is None:
        results = []
        for block, size in blocks:
            results.append(function(model, seed, block, size, **options))
            if progress is not None:
                progress(size)
        return results
    futures: dict[Future[T], int] = {
        executor.submit(function, model, seed, block, size, **options): index
        for index, (block, size) in enumerate(blocks)
    }
    ordered: list[T | None] = [None] * len(blocks)
    for future in as_completed(futures):
        index = futures[future]
        ordered[index] = future.result()
        if progress is not None:
            progress(blocks[index][1])
    return [result for result in ordered if result is not None]


@contextlib.contextmanager
def executor_for(workers: int = 1, scheduler: str | None = None) -> Iterator[Executor | None]:
    """``None`` (run inline) for one worker, local processes for more, a dask cluster for a scheduler."""
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise MissingExtraError("--scheduler (a dask.distributed cluster)", "distributed") from exc
        with Client(scheduler) as client:  # type: ignore[no-untyped-call]
            yield client.get_executor()
        return
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=one_blas_thread) as pool:
        yield pool


def one_blas_thread() -> None:
    """Worker initializer: the processes are the parallelism; a BLAS thread pool in each would contend
    for the same cores (and its idle threads spin after every matrix product)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
