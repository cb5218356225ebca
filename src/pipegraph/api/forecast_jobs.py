"""GraphQL view of simulation jobs: ``startSimulation``, ``simulationJob``, ``cancelSimulation`` and the
``simulationProgress`` subscription.

A job's state lives in the database, so any API process can report or cancel any job; the process
that started it runs it (see ``services.forecasting.jobs``). The subscription reads the row every
``PROGRESS_INTERVAL`` seconds and sends a snapshot whenever the status or progress moved, ending with
the final state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from pipegraph.api import ids
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError
from pipegraph.api.forecast import goal_cents, simulation_pool
from pipegraph.api.resolvers.common import run_command
from pipegraph.api.scalars import Money
from pipegraph.api.types import Node
from pipegraph.db import models
from pipegraph.db.models import JobStatus, Role
from pipegraph.errors import NotFoundError, PermissionDeniedError, PipegraphError
from pipegraph.services.forecasting import jobs

strawberry.enum(JobStatus, name="SimulationJobStatus")
strawberry.enum(jobs.JobKind, name="SimulationKind")


@strawberry.type(description="A forecast or leads-needed simulation run in the background.")
class SimulationJob(Node):
    pipeline_id: strawberry.ID
    kind: jobs.JobKind
    status: JobStatus
    trials: int
    trials_done: int
    progress: float = strawberry.field(description="trialsDone ÷ trials, 0 to 1.")
    parameters: JSON
    result: JSON | None = strawberry.field(
        description="Once SUCCEEDED: the pipesim answer (forecast or leads needed) and the calibration."
    )
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_model(cls, job: models.SimulationJob) -> SimulationJob:
        return cls(
            id=strawberry.ID(ids.encode("SimulationJob", job.id)),
            pipeline_id=strawberry.ID(ids.encode("Pipeline", job.pipeline_id)),
            kind=jobs.JobKind(job.kind),
            status=job.status,
            trials=job.trials,
            trials_done=job.trials_done,
            progress=job.trials_done / job.trials if job.trials else 0.0,
            parameters=json.loads(job.parameters),
            result=None if job.result is None else json.loads(job.result),
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
        )


@strawberry.input
class StartSimulationInput:
    pipeline_id: strawberry.ID
    kind: jobs.JobKind = jobs.JobKind.FORECAST
    horizon_days: int = 90
    goal: Money | None = strawberry.field(default=None, description="Required for LEADS_NEEDED.")
    confidence: float = 0.9
    trials: int = 100_000
    seed: int = 0


@strawberry.type
class SimulationJobPayload:
    job: SimulationJob | None = None
    user_errors: list[UserError]


def _job_id(global_id: strawberry.ID, field: str) -> int:
    return ids.decode_as(global_id, "SimulationJob", field=field)


@strawberry.type
class SimulationJobMutations:
    @strawberry.mutation(
        description="Queue a big simulation (REP and above); follow it with simulationProgress."
    )
    async def start_simulation(self, info: Info, input: StartSimulationInput) -> SimulationJobPayload:
        async def action(session: AsyncSession, viewer: models.User) -> models.SimulationJob:
            if viewer.role is Role.VIEWER:
                raise PermissionDeniedError("viewers may not start simulations", field="")
            parameters = jobs.JobParameters(
                horizon_days=input.horizon_days,
                trials=input.trials,
                seed=input.seed,
                goal_cents=goal_cents(input.goal),
                confidence=input.confidence,
            )
            return await jobs.create_job(
                session,
                pipeline_id=ids.decode_as(input.pipeline_id, "Pipeline", field="pipelineId"),
                kind=input.kind,
                parameters=parameters,
                created_by=viewer.id,
            )

        job, errors = await run_command(info, action)
        if job is None:
            return SimulationJobPayload(job=None, user_errors=errors)
        pool = simulation_pool(info)
        pool.start(jobs.run_job(info.context.store, pool, job.id))
        return SimulationJobPayload(job=SimulationJob.from_model(job), user_errors=[])

    @strawberry.mutation(description="Stop a queued or running job; blocks already running finish first.")
    async def cancel_simulation(self, info: Info, id: strawberry.ID) -> SimulationJobPayload:
        async def action(session: AsyncSession, viewer: models.User) -> models.SimulationJob:
            if viewer.role is Role.VIEWER:
                raise PermissionDeniedError("viewers may not cancel simulations", field="")
            return await jobs.cancel_job(session, _job_id(id, "id"))

        job, errors = await run_command(info, action)
        for error in errors:
            error.field = "id" if error.field == "input.id" else error.field
        return SimulationJobPayload(
            job=None if job is None else SimulationJob.from_model(job), user_errors=errors
        )


@strawberry.type
class SimulationJobQuery:
    @strawberry.field(description="A simulation job by id, from any API process.")
    async def simulation_job(self, info: Info, id: strawberry.ID) -> SimulationJob | None:
        info.context.require_viewer()
        try:
            pk = _job_id(id, "id")
        except PipegraphError:
            return None
        async with info.context.store.read() as session:
            job = await jobs.get_job(session, pk)
        return None if job is None else SimulationJob.from_model(job)


@strawberry.type
class SimulationJobSubscription:
    @strawberry.subscription(description="Snapshots of a job as it moves, ending with its final state.")
    async def simulation_progress(
        self, info: Info, job_id: strawberry.ID
    ) -> AsyncGenerator[SimulationJob, None]:
        context = info.context
        context.require_viewer()
        pk = _job_id(job_id, "jobId")
        last: tuple[Any, ...] | None = None
        while True:
            async with context.store.read() as session:
                job = await jobs.get_job(session, pk)
            if job is None:
                raise NotFoundError(f"no simulation job with id {job_id}", field="jobId")
            seen = (job.status, job.trials_done)
            if seen != last:
                last = seen
                yield SimulationJob.from_model(job)
            if job.status in jobs.FINISHED:
                return
            await asyncio.sleep(jobs.PROGRESS_INTERVAL)
