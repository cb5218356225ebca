"""Where simulations run: never on the event loop.

One :class:`SimulationPool` per application (built in ``create_app``, closed by its lifespan). It owns
``concurrent.futures.ProcessPoolExecutor`` s with ``Settings.simulation_workers`` processes and, when
``Settings.dask_scheduler`` names a dask.distributed scheduler, that cluster's executor for jobs. All
are made on first use, so an app that never simulates never starts a process or connects to a cluster.

Interactive questions run whole in one worker (:meth:`SimulationPool.run`). Jobs spread their blocks
over the executor through :class:`CancellableExecutor`, which remembers its futures so a cancelled job
withdraws the blocks that have not started.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Workers are started fresh, never forked: a forked worker inherits the server's sockets, keeps its
# keep-alive connections open after the server has closed them, and a browser's next request on such
# a connection then waits forever (the dashboard stalled after its first forecast).
_WORKER_START = multiprocessing.get_context("spawn")


class SimulationPool:
    """Two executors, so a long job never queues an interactive question behind it: ``interactive``
    (local processes) and ``jobs`` (local processes, or the dask cluster when a scheduler is set)."""

    def __init__(self, *, workers: int = 1, scheduler: str | None = None) -> None:
        self.workers = max(workers, 1)
        self.scheduler = scheduler
        self._interactive: Executor | None = None
        self._jobs: Executor | None = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def interactive(self) -> Executor:
        with self._lock:
            if self._interactive is None:
                self._interactive = ProcessPoolExecutor(max_workers=self.workers, mp_context=_WORKER_START)
            return self._interactive

    @property
    def jobs(self) -> Executor:
        with self._lock:
            if self._jobs is None:
                if self.scheduler is not None:
                    from distributed import Client

                    self._client = Client(self.scheduler)  # type: ignore[no-untyped-call]
                    self._jobs = self._client.get_executor()
                else:
                    self._jobs = ProcessPoolExecutor(max_workers=self.workers, mp_context=_WORKER_START)
            return self._jobs

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in an interactive worker, awaited without blocking the loop."""
        future = self.interactive.submit(function, *args, **kwargs)
        return await asyncio.wrap_future(future)

    def start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a background job on the current loop, keeping a reference until it ends."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with self._lock:
            for executor in (self._interactive, self._jobs):
                if executor is not None:
                    executor.shutdown(wait=False, cancel_futures=True)
            if self._client is not None:
                self._client.close()
            self._interactive, self._jobs, self._client = None, None, None


class CancellableExecutor(Executor):
    """Forwards to a shared executor; :meth:`cancel` withdraws every block of this job not yet started."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.futures: list[Future[Any]] = []
        self.cancelled = threading.Event()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future = self.inner.submit(fn, *args, **kwargs)
        self.futures.append(future)
        if self.cancelled.is_set():
            future.cancel()
        return future

    def cancel(self) -> None:
        self.cancelled.set()
        for future in self.futures:
            future.cancel()
