"""Import jobs in GraphQL: ``importJob(id)`` and the ``importProgress`` subscription.

Jobs are started by ``POST /imports`` (``pipegraph.api.bulk_http``); here they are read, on any server
sharing the database. Rows read and loaded come from memory on the server running the job, and from
the job's row elsewhere (renewed after every batch on PostgreSQL); the subscription follows the row.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry

from pipegraph.api import ids
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError, UserErrorCode
from pipegraph.db import models
from pipegraph.db.models import JobStatus
from pipegraph.errors import PipegraphError
from pipegraph.services import import_jobs

POLL_S = 0.5


@strawberry.type(description="A CSV import run as a job (POST /imports).")
class ImportJob:
    id: strawberry.ID
    pipeline_id: strawberry.ID
    status: JobStatus
    rows_read: int
    rows_loaded: int
    imported_count: int
    problem_count: int = strawberry.field(description="Every problem found; `problems` lists the first 100.")
    problems: list[UserError]
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_model(cls, job: models.ImportJob, running: import_jobs.Running | None) -> ImportJob:
        return cls(
            id=strawberry.ID(ids.encode("ImportJob", job.id)),
            pipeline_id=strawberry.ID(ids.encode("Pipeline", job.pipeline_id)),
            status=job.status,
            rows_read=running.rows_read if running else job.rows_read,
            rows_loaded=running.rows_loaded if running else job.rows_loaded,
            imported_count=job.imported_count,
            problem_count=job.problem_count,
            problems=[
                UserError(
                    field=p["field"],
                    message=p["message"],
                    code=UserErrorCode.__members__.get(p["code"], UserErrorCode.ERROR),
                )
                for p in json.loads(job.problems)
            ],
            error=job.error,
            created_at=job.created_at,
            finished_at=job.finished_at,
        )


async def _read(info: Info, pk: int) -> ImportJob | None:
    context = info.context
    if context.imports is not None:
        job, running = await context.imports.read(pk)
    else:
        async with context.store.read() as session:
            job, running = await session.get(models.ImportJob, pk), None
    return ImportJob.from_model(job, running) if job is not None else None


@strawberry.type
class ImportJobQuery:
    @strawberry.field(description="An import job by id, with its progress, outcome and problems.")
    async def import_job(self, info: Info, id: strawberry.ID) -> ImportJob | None:
        info.context.require_viewer()
        try:
            pk = ids.decode_as(id, "ImportJob", field="id")
        except PipegraphError:
            return None
        return await _read(info, pk)


@strawberry.type
class ImportJobSubscription:
    @strawberry.subscription(description="Snapshots of an import job as it moves, ending with its outcome.")
    async def import_progress(self, info: Info, job_id: strawberry.ID) -> AsyncGenerator[ImportJob, None]:
        info.context.require_viewer()
        pk = ids.decode_as(job_id, "ImportJob", field="jobId")
        last: tuple[object, ...] | None = None
        while True:
            job = await _read(info, pk)
            if job is None:
                return
            seen = (job.status, job.rows_read, job.rows_loaded)
            if seen != last:
                last = seen
                yield job
            if job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                return
            await asyncio.sleep(POLL_S)
