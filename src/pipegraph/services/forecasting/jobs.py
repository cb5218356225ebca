"""Simulation jobs: big forecasts and leads-needed searches that run in the background.

Lifecycle: :func:`create_job` stores a QUEUED row; the API process that created it runs
:func:`run_job` as an asyncio task. The job calibrates the model, then runs pipesim in a thread that
spreads blocks of trials over the pool's job executor (local processes, or dask); the task writes
``trials_done`` to the row every ``PROGRESS_INTERVAL`` seconds and reads the status back, so a
:func:`cancel_job` from any API process withdraws the blocks not yet started. The end state —
SUCCEEDED with the result as JSON, FAILED with the error, or CANCELLED — is written once.

A job whose process died stays RUNNING; its ``updated_at`` stops moving, which is how to tell (no
sweeper marks such jobs yet).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import threading
from concurrent.futures import CancelledError
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import pipesim
from pipegraph.db.models import JobStatus, Pipeline, SimulationJob
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.errors import ConflictError, NotFoundError
from pipegraph.services.forecasting.calibration import calibrate, describe
from pipegraph.services.forecasting.questions import (
    MAX_JOB_TRIALS,
    check_confidence,
    check_goal,
    check_sizes,
)
from pipegraph.services.simulation_pool import CancellableExecutor, SimulationPool
from pipegraph.services.webhooks.events import record_simulation_finished

logger = logging.getLogger("pipegraph.jobs")
PROGRESS_INTERVAL = 0.25  # seconds between progress writes (and cancellation checks)
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobKind(enum.StrEnum):
    FORECAST = "FORECAST"
    LEADS_NEEDED = "LEADS_NEEDED"


@dataclass(frozen=True)
class JobParameters:
    horizon_days: float
    trials: int
    seed: int = 0
    goal_cents: int | None = None
    confidence: float = 0.9
    as_of: datetime | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = dict(self.__dict__)
        data["as_of"] = None if self.as_of is None else self.as_of.isoformat()
        return json.dumps(data)

    @staticmethod
    def from_json(text: str) -> JobParameters:
        data = json.loads(text)
        as_of = data.pop("as_of")
        return JobParameters(**data, as_of=None if as_of is None else datetime.fromisoformat(as_of))


async def create_job(
    session: AsyncSession,
    *,
    pipeline_id: int,
    kind: JobKind,
    parameters: JobParameters,
    created_by: int | None,
) -> SimulationJob:
    """A QUEUED job, after the same checks as the interactive questions (trials up to ``MAX_JOB_TRIALS``)."""
    p = parameters
    check_sizes(horizon_days=p.horizon_days, trials=p.trials, seed=p.seed, limit=MAX_JOB_TRIALS)
    check_goal(p.goal_cents, required=kind is JobKind.LEADS_NEEDED)
    if kind is JobKind.LEADS_NEEDED:
        check_confidence(p.confidence)
    if await session.get(Pipeline, pipeline_id) is None:
        raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipelineId")
    now = utcnow()
    job = SimulationJob(
        pipeline_id=pipeline_id,
        kind=kind.value,
        status=JobStatus.QUEUED,
        parameters=p.to_json(),
        trials=p.trials,
        trials_done=0,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    await session.flush()
    return job


async def get_job(session: AsyncSession, job_id: int, *, for_update: bool = False) -> SimulationJob | None:
    return await session.get(SimulationJob, job_id, populate_existing=True, with_for_update=for_update)


async def cancel_job(session: AsyncSession, job_id: int) -> SimulationJob:
    job = await get_job(session, job_id, for_update=True)
    if job is None:
        raise NotFoundError(f"no simulation job with id {job_id}", field="id")
    if job.status in FINISHED:
        raise ConflictError(f"the job has already finished ({job.status.value})", field="id")
    now = utcnow()
    job.status, job.finished_at, job.updated_at = JobStatus.CANCELLED, now, now
    await session.flush()
    record_simulation_finished(session, job)
    return job


# --- running ----------------------------------------------------------------------------------------


class _Progress:
    """Trials finished, counted from the simulation thread and read by the writer task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = 0

    def __call__(self, trials: int) -> None:
        with self._lock:
            self.done += trials


def _simulate(
    kind: JobKind, model: pipesim.Model, p: JobParameters, executor: CancellableExecutor, progress: _Progress
) -> dict[str, Any]:
    goal = None if p.goal_cents is None else p.goal_cents / 100
    if kind is JobKind.FORECAST:
        return pipesim.forecast(
            model, p.trials, p.seed, goal=goal, executor=executor, progress=progress
        ).to_dict()
    assert goal is not None
    answer = pipesim.leads_needed(
        model.with_new_leads(0), goal, p.confidence, p.trials, p.seed, executor=executor, progress=progress
    )
    return {**answer.to_dict(), "leads_per_week": answer.leads * 7 / p.horizon_days}


async def _write(store: Store, job_id: int, **values: Any) -> JobStatus | None:
    """Update the job unless it has finished (a cancellation wins); the status found."""
    async with store.write() as session:
        # Locked (PostgreSQL; SQLite writers are serialised anyway): a cancellation committed between
        # reading the status and writing progress would otherwise get trials written after it.
        job = await get_job(session, job_id, for_update=True)
        if job is None:
            return None
        if job.status not in FINISHED:
            for name, value in values.items():
                setattr(job, name, value)
            job.updated_at = utcnow()
            if job.status in FINISHED:
                record_simulation_finished(session, job)
        return job.status


async def run_job(store: Store, pool: SimulationPool, job_id: int) -> None:
    """Run a QUEUED job to its end state. Never raises: failures are written to the job."""
    async with store.read() as session:
        job = await get_job(session, job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return
        kind, pipeline_id, parameters = (
            JobKind(job.kind),
            job.pipeline_id,
            JobParameters.from_json(job.parameters),
        )
    if await _write(store, job_id, status=JobStatus.RUNNING, started_at=utcnow()) is not JobStatus.RUNNING:
        return
    executor = CancellableExecutor(pool.jobs)
    progress = _Progress()
    try:
        async with store.read() as session:
            calibration = await calibrate(
                session, pipeline_id=pipeline_id, horizon_days=parameters.horizon_days, as_of=parameters.as_of
            )
        work = asyncio.ensure_future(
            asyncio.to_thread(_simulate, kind, calibration.model, parameters, executor, progress)
        )
        while not work.done():
            await asyncio.wait({work}, timeout=PROGRESS_INTERVAL)
            done = min(progress.done, parameters.trials)
            if await _write(store, job_id, trials_done=done) is JobStatus.CANCELLED:
                executor.cancel()
        result = await work
    except CancelledError:
        return  # the job row already says CANCELLED
    except Exception as error:  # any failure is the job's result, not the server's
        logger.exception("simulation job %s failed", job_id)
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        await _write(store, job_id, status=JobStatus.FAILED, error=message, finished_at=utcnow())
        return
    result["calibration"] = describe(calibration.report)
    await _write(
        store,
        job_id,
        status=JobStatus.SUCCEEDED,
        trials_done=parameters.trials,
        result=json.dumps(result),
        finished_at=utcnow(),
    )
