"""Where simulations run: never on the event loop.

One :class:`SimulationPool` per application (built in ``create_app``, closed by its lifespan). It owns
``concurrent.futures.ProcessPoolExecutor`` s with ``Settings.simulation_workers`` processes and, when
``Settings.dask_scheduler`` names a dask.distributed scheduler, that cluster's executor for jobs. All
are made on first use, so an app that never simulates never starts a process or connects to a cluster.

Interactive questions are coordinated on a thread of the server and their blocks run in the workers
(:meth:`SimulationPool.question`), block *b* always in worker *b* mod *n* (:class:`BlockExecutor`): a
question's blocks run side by side, and what a worker keeps of a block (``pipesim.engines.kept``: the
open leads' draws, the conversions) serves the same block of the next question of that model, which
lands in the same worker. Jobs spread their blocks over the executor through
:class:`CancellableExecutor`, which remembers its futures so a cancelled job withdraws the blocks that
have not started.

Local workers are *spawned*, not forked: a forked worker would inherit the server's listening socket
and keep the port after the server is killed with ``kill -9``. Each worker also watches its parent and
exits once the parent is gone, so no worker outlives the server however it ends.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Hashable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, TypeVar

from pipegraph.services.forecasting.cache import CalibrationCache
from pipegraph.settings import default_simulation_workers
from pipesim.parallel import one_blas_thread

T = TypeVar("T")
PARENT_CHECK_SECONDS = 0.5


def _exit_with(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)  # the parent is gone (its orphans are re-parented): nobody is left to answer


def _start_worker(parent_pid: int) -> None:
    """Worker initializer: one BLAS thread, and a daemon thread that ends the worker when its parent
    process ends.

    The workers are the parallelism (a question's blocks run side by side in them); a second BLAS
    thread in each would only contend for the same cores, and its spinning after every matrix product
    made a 100,000-lead forecast's blocks take 2.5 times as long (``docs/benchmarks.md``)."""
    one_blas_thread()
    threading.Thread(target=_exit_with, args=(parent_pid,), name="parent-watch", daemon=True).start()


def local_executor(workers: int) -> ProcessPoolExecutor:
    """Spawned worker processes that die with this process. Never forked: a forked worker inherits the
    server's sockets — the listening one (a restart after ``kill -9`` finds the port taken) and its
    keep-alive connections, which then stay open after the server has closed them, so a browser's next
    request on one waits forever (the dashboard stalled after its first forecast)."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )


SHARED_RESULTS = 32  # answers kept for repeats of the same question


class BlockExecutor(Executor):
    """One single-process executor per worker; a submitted block runs in worker ``block mod n``.

    ``pipesim.parallel.map_blocks`` submits ``function(model, seed, block, size, **options)``: the
    block is the third positional argument. Any other call runs in worker 0."""

    def __init__(self, workers: int) -> None:
        self.workers = [local_executor(1) for _ in range(max(workers, 1))]

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        block = args[2] if len(args) >= 4 and isinstance(args[2], int) else 0
        return self.workers[block % len(self.workers)].submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for worker in self.workers:
            worker.shutdown(wait=wait, cancel_futures=cancel_futures)


class SimulationPool:
    """Two executors, so a long job never queues an interactive question behind it: ``interactive``
    (local processes, blocks by number) and ``jobs`` (local processes, or the dask cluster when a
    scheduler is set)."""

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None) -> None:
        self.workers = max(default_simulation_workers() if workers is None else workers, 1)
        self.scheduler = scheduler
        self._interactive: BlockExecutor | None = None
        self._jobs: Executor | None = None
        self._client: Any = None
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        # The questions' calibrations as of now, shared while the history stands (``cache``).
        self.calibrations = CalibrationCache()
        self._shared_answers: OrderedDict[Hashable, asyncio.Future[Any]] = OrderedDict()
        self.submitted = 0  # interactive runs started, for tests

    @property
    def interactive(self) -> BlockExecutor:
        with self._lock:
            if self._interactive is None:
                self._interactive = BlockExecutor(self.workers)
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
                    self._jobs = local_executor(self.workers)
            return self._jobs

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in an interactive worker, awaited without blocking the loop."""
        self.submitted += 1
        future = self.interactive.submit(function, *args, **kwargs)
        return await asyncio.wrap_future(future)

    async def question(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """A pipesim question (a function taking ``executor``) coordinated on a thread, its blocks in the
        interactive workers by block number."""
        self.submitted += 1
        return await asyncio.to_thread(function, *args, executor=self.interactive, **kwargs)

    async def question_shared(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """:meth:`question` for a deterministic ``function`` of hashable arguments (a pipesim question: the
        model and the seed fix the answer): a call equal to one in flight or among the last
        ``SHARED_RESULTS`` gets that answer instead of running again (a double click, a repeat view)."""
        return await self._shared(self.question, function, args, kwargs)

    async def _shared(
        self,
        start: Callable[..., Coroutine[Any, Any, T]],
        function: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        key = (function.__module__, function.__qualname__, args, tuple(sorted(kwargs.items())))
        try:
            found = self._shared_answers.get(key)
        except TypeError:  # an argument that cannot be hashed: nothing to share
            return await start(function, *args, **kwargs)
        if found is None:
            found = asyncio.ensure_future(start(function, *args, **kwargs))
            self._shared_answers[key] = found
            found.add_done_callback(lambda done: self._settled(key, done))
        self._shared_answers.move_to_end(key)
        while len(self._shared_answers) > SHARED_RESULTS:
            self._shared_answers.popitem(last=False)
        result: T = await asyncio.shield(found)  # one caller going away leaves the run to the others
        return result

    def _settled(self, key: Hashable, done: asyncio.Future[Any]) -> None:
        if (done.cancelled() or done.exception() is not None) and self._shared_answers.get(key) is done:
            del self._shared_answers[key]  # failures are not kept: the next call runs again

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
