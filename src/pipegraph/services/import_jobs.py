"""Imports as jobs: a CSV spooled to disk, imported in bulk in the background, its progress readable.

A job row is written QUEUED before the import starts; the import (``imports_bulk``) runs in one write
transaction that also writes SUCCEEDED and the count, so a job reads SUCCEEDED exactly when its leads
are there. A refused import writes FAILED with its problems (capped, with the total) afterwards; a
cancelled one CANCELLED. A server killed mid-import leaves the job RUNNING and no lead (its transaction
never committed); :func:`fail_interrupted`, run when a server starts, marks such jobs FAILED.

Progress (rows read, rows loaded) lives in this process while the job runs — on SQLite the import holds
the only write lock, so it cannot be written to the row as it goes — and in the row once it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import ImportJob, JobStatus, Role, User
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.errors import NotFoundError, PipegraphError
from pipegraph.services.import_rows import ImportRejectedError, load_target
from pipegraph.services.imports_bulk import import_leads_bulk
from pipegraph.services.permissions import require_role

logger = logging.getLogger("pipegraph.imports")
INTERRUPTED = "the server stopped during the import; nothing was imported"


class ImportCancelledError(Exception):
    """Raised inside the import when its job is cancelled; the import's transaction rolls back."""


@dataclass
class Running:
    """What this process knows of a job while it runs."""

    rows_read: int = 0
    rows_loaded: int = 0
    cancelled: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def problem_dicts(errors: list[PipegraphError]) -> list[dict[str, Any]]:
    """Problems as userErrors show them (``field`` with the input's prefix, as ``importLeads`` does)."""
    return [
        {"field": f"input.{e.field}" if e.field else None, "message": e.message, "code": e.code}
        for e in errors
    ]


class ImportJobs:
    """This process's running import jobs."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.running: dict[int, Running] = {}

    async def create(
        self, *, pipeline_id: int, actor: User | None, header_map: Mapping[str, str] | None = None
    ) -> ImportJob:
        """A QUEUED job, after checking the actor may import into the pipeline."""
        async with self.store.write() as session:
            require_role(actor, Role.REP, "importing leads")
            await load_target(session, pipeline_id=pipeline_id, actor=actor)
            job = ImportJob(
                pipeline_id=pipeline_id,
                status=JobStatus.QUEUED,
                header_map=json.dumps(dict(header_map or {})),
                rows_read=0,
                rows_loaded=0,
                imported_count=0,
                problem_count=0,
                problems="[]",
                created_by=actor.id if actor is not None else None,
                created_at=utcnow(),
            )
            session.add(job)
            await session.flush()
        return job

    def start(self, job: ImportJob, path: Path, actor: User | None) -> Running:
        """Import the CSV at ``path`` (deleted afterwards) in the background."""
        running = Running()
        self.running[job.id] = running
        running.task = asyncio.create_task(self._run(job, path, actor, running), name=f"import-{job.id}")
        return running

    async def run(self, job: ImportJob, path: Path, actor: User | None) -> None:
        """Import and wait for the outcome."""
        running = self.start(job, path, actor)
        assert running.task is not None
        await asyncio.shield(running.task)

    def cancel(self, job_id: int) -> bool:
        running = self.running.get(job_id)
        if running is None:
            return False
        running.cancelled = True
        return True

    async def _run(self, job: ImportJob, path: Path, actor: User | None, running: Running) -> None:
        async def progress(rows_read: int, rows_loaded: int) -> None:
            running.rows_read, running.rows_loaded = rows_read, rows_loaded
            if running.cancelled:
                raise ImportCancelledError
            await asyncio.sleep(0)  # let requests (progress, cancel) in between batches

        outcome: dict[str, Any]
        try:
            with path.open(encoding="utf-8", newline="") as lines:
                async with self.store.write() as session:
                    await _set(session, job.id, status=JobStatus.RUNNING)
                    result = await import_leads_bulk(
                        session,
                        pipeline_id=job.pipeline_id,
                        lines=lines,
                        actor=actor,
                        header_map=json.loads(job.header_map),
                        progress=progress,
                    )
                    await _set(
                        session,
                        job.id,
                        status=JobStatus.SUCCEEDED,
                        rows_read=running.rows_read,
                        rows_loaded=result.rows,
                        imported_count=result.rows,
                        finished_at=utcnow(),
                    )
            return
        except ImportCancelledError:
            outcome = {"status": JobStatus.CANCELLED, "error": "cancelled; nothing was imported"}
        except ImportRejectedError as rejected:
            outcome = {
                "status": JobStatus.FAILED,
                "problem_count": rejected.total,
                "problems": json.dumps(problem_dicts(rejected.errors)),
                "error": rejected.message,
            }
        except PipegraphError as error:
            outcome = {
                "status": JobStatus.FAILED,
                "problem_count": 1,
                "problems": json.dumps(problem_dicts([error])),
                "error": error.message,
            }
        except UnicodeDecodeError:
            outcome = {"status": JobStatus.FAILED, "error": "the CSV is not UTF-8 text"}
        except Exception:
            logger.exception("import job %s failed", job.id)
            outcome = {"status": JobStatus.FAILED, "error": "internal error; nothing was imported"}
        finally:
            self.running.pop(job.id, None)
            with contextlib.suppress(OSError):
                os.unlink(path)
        async with self.store.write() as session:
            await _set(
                session,
                job.id,
                rows_read=running.rows_read,
                rows_loaded=0,
                finished_at=utcnow(),
                **outcome,
            )


async def _set(session: AsyncSession, job_id: int, **values: Any) -> None:
    await session.execute(update(ImportJob).where(ImportJob.id == job_id).values(**values))


async def get_job(session: AsyncSession, job_id: int) -> ImportJob:
    job = await session.get(ImportJob, job_id)
    if job is None:
        raise NotFoundError(f"no import job with id {job_id}", field="id")
    return job


async def fail_interrupted(store: Store) -> int:
    """Mark FAILED the jobs a stopped server left QUEUED or RUNNING (their imports never committed);
    how many. Run once when a server starts, before it takes requests."""
    async with store.write() as session:
        result = await session.execute(
            update(ImportJob)
            .where(ImportJob.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
            .values(status=JobStatus.FAILED, error=INTERRUPTED, finished_at=utcnow())
        )
    return int(getattr(result, "rowcount", 0) or 0)
