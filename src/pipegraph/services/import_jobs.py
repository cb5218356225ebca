"""Imports as jobs: a CSV spooled to disk, imported in bulk in the background, its progress readable.

A job row is written QUEUED, then claimed RUNNING by the server instance that runs it; the import
(``imports_bulk``) runs in one write transaction that also writes SUCCEEDED and the count, so a job
reads SUCCEEDED exactly when its leads are there. A refused import writes FAILED with its problems
(capped, with the total) afterwards; a cancelled one CANCELLED.

Several servers may share one PostgreSQL database, so a job is kept in its row, not in the process:

- *lease*: the running server renews ``heartbeat_at`` (with rows read and loaded) after every batch
  and every ``lease / 3`` seconds, each in a short transaction of its own beside the import's, written
  by a task of its own so the import never waits for it (and committed without waiting for the disk:
  a heartbeat lost in a crash only ends the lease sooner). A
  server killed mid-import leaves the job RUNNING and no lead (its transaction never committed); once
  the lease has run out, any server reading the job marks it FAILED (:meth:`ImportJobs.read`), and a
  server starting marks FAILED those and its own instance's earlier jobs (:func:`fail_interrupted`).
- *cancel*: any server sets ``cancel_requested``; the running one reads it between batches and rolls
  the import back. Just before committing, the import locks its job row and looks once more, so a
  cancel either wins (CANCELLED, nothing written) or finds the job already ended.
- *progress*: any server reads the row; the running one answers from memory, which is fresher.

On SQLite the import holds the only write lock, so nothing can be written beside it: progress and
cancel stay in the running process, and the heartbeat is written when the job is claimed. Sharing
jobs between processes, like ``serve --workers``, needs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, false, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import ImportJob, JobStatus, Role, User
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.errors import PipegraphError
from pipegraph.services.import_rows import ImportRejectedError, load_target
from pipegraph.services.imports_bulk import import_leads_bulk
from pipegraph.services.permissions import require_role

logger = logging.getLogger("pipegraph.imports")
INTERRUPTED = "the server stopped during the import; nothing was imported"
CANCELLED = "cancelled; nothing was imported"
DEFAULT_LEASE_S = 30.0
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


class ImportCancelledError(Exception):
    """Raised inside the import when its job is cancelled; the import's transaction rolls back."""


class ImportLostError(Exception):
    """Raised inside the import when its job is no longer this instance's (another server failed it
    after its lease ran out); the import rolls back and leaves the row as that server wrote it."""


@dataclass
class Running:
    """What this process knows of a job while it runs."""

    rows_read: int = 0
    rows_loaded: int = 0
    cancelled: bool = False
    lost: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def problem_dicts(errors: list[PipegraphError]) -> list[dict[str, Any]]:
    """Problems as userErrors show them (``field`` with the input's prefix, as ``importLeads`` does)."""
    return [
        {"field": f"input.{e.field}" if e.field else None, "message": e.message, "code": e.code}
        for e in errors
    ]


def _expired(lease: float) -> ColumnElement[bool]:
    """An active job whose server has not shown it alive within ``lease`` seconds."""
    cutoff = utcnow() - timedelta(seconds=lease)
    return or_(ImportJob.heartbeat_at.is_(None), ImportJob.heartbeat_at < cutoff)


class ImportJobs:
    """Import jobs run by this server instance, and any instance's jobs read."""

    def __init__(
        self, store: Store, *, instance_id: str = "pipegraph", lease: float = DEFAULT_LEASE_S
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.lease = lease
        self.running: dict[int, Running] = {}

    @property
    def shared(self) -> bool:
        """Whether the job row can be written beside a running import (not on SQLite)."""
        return not self.store.is_sqlite

    async def create(
        self, *, pipeline_id: int, actor: User | None, header_map: Mapping[str, str] | None = None
    ) -> ImportJob:
        """A QUEUED job, after checking the actor may import into the pipeline."""
        async with self.store.write() as session:
            require_role(actor, Role.REP, "importing leads")
            await load_target(session, pipeline_id=pipeline_id, actor=actor)
            now = utcnow()
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
                created_at=now,
                instance_id=self.instance_id,
                heartbeat_at=now,
                cancel_requested=False,
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

    async def read(self, job_id: int) -> tuple[ImportJob | None, Running | None]:
        """The job's row (failed first if its lease ran out) and, when it runs here, its live progress."""
        async with self.store.read() as session:
            job = await session.get(ImportJob, job_id)
        running = self.running.get(job_id)
        if job is None or running is not None or job.status not in _ACTIVE or not self.shared:
            return job, running
        if await self._fail_expired(job_id):
            async with self.store.read() as session:
                job = await session.get(ImportJob, job_id)
        return job, None

    async def _fail_expired(self, job_id: int) -> bool:
        async with self.store.write() as session:
            result = await session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id, ImportJob.status.in_(_ACTIVE), _expired(self.lease))
                .values(status=JobStatus.FAILED, error=INTERRUPTED, rows_loaded=0, finished_at=utcnow())
            )
        return bool(getattr(result, "rowcount", 0))

    async def cancel(self, job_id: int) -> bool:
        """Ask for the job to be cancelled, wherever it runs; false when it is not running."""
        running = self.running.get(job_id)
        if not self.shared:
            if running is not None:
                running.cancelled = True
            return running is not None
        async with self.store.write() as session:
            result = await session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id, ImportJob.status.in_(_ACTIVE))
                .values(cancel_requested=True)
            )
        accepted = bool(getattr(result, "rowcount", 0))
        if accepted and running is not None:
            running.cancelled = True  # no need to wait for the next look at the row
        return accepted

    async def _claim(self, job_id: int) -> bool:
        """QUEUED → RUNNING by this instance, unless it was cancelled (then CANCELLED) or ended."""
        async with self.store.write() as session:
            claimed = await session.execute(
                update(ImportJob)
                .where(
                    ImportJob.id == job_id,
                    ImportJob.status == JobStatus.QUEUED,
                    ImportJob.cancel_requested.is_(false()),
                )
                .values(status=JobStatus.RUNNING, instance_id=self.instance_id, heartbeat_at=utcnow())
            )
            if getattr(claimed, "rowcount", 0):
                return True
            await _set(
                session,
                job_id,
                JobStatus.QUEUED,
                status=JobStatus.CANCELLED,
                error=CANCELLED,
                finished_at=utcnow(),
            )
        return False

    async def _beat(self, job_id: int, running: Running) -> None:
        """Renew the lease with the progress so far; note a cancel request or a job lost to expiry."""
        async with self.store.write() as session:
            await session.execute(text("SET LOCAL synchronous_commit = off"))
            found = await session.execute(
                update(ImportJob)
                .where(
                    ImportJob.id == job_id,
                    ImportJob.status == JobStatus.RUNNING,
                    ImportJob.instance_id == self.instance_id,
                )
                .values(rows_read=running.rows_read, rows_loaded=running.rows_loaded, heartbeat_at=utcnow())
                .returning(ImportJob.cancel_requested)
            )
            row = found.first()
        if row is None:
            running.lost = True
        elif row[0]:
            running.cancelled = True

    async def _heartbeat(
        self, job_id: int, running: Running, moved: asyncio.Event, stop: asyncio.Event
    ) -> None:
        """Renew the lease with the latest progress when the import has ``moved`` (after a batch), and
        every ``lease / 3`` seconds while it works (as when it applies the rows), until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(moved.wait(), self.lease / 3)
            moved.clear()
            if stop.is_set():
                return
            try:
                await self._beat(job_id, running)
            except Exception:  # a missed beat is retried; the lease allows for two
                logger.warning("import job %s: could not renew its lease", job_id, exc_info=True)

    async def _finish(self, session: AsyncSession, job_id: int, running: Running, rows: int) -> None:
        """In the import's transaction: lock the job row, give way to a cancel or a takeover, write
        SUCCEEDED. A cancel arriving after the lock waits for the commit and then finds the job ended."""
        state = (
            await session.execute(
                select(ImportJob.status, ImportJob.instance_id, ImportJob.cancel_requested)
                .where(ImportJob.id == job_id)
                .with_for_update()
            )
        ).one()
        if state.cancel_requested or running.cancelled:
            raise ImportCancelledError
        if state.status != JobStatus.RUNNING or state.instance_id != self.instance_id:
            raise ImportLostError
        await _set(
            session,
            job_id,
            JobStatus.RUNNING,
            status=JobStatus.SUCCEEDED,
            rows_read=running.rows_read,
            rows_loaded=rows,
            imported_count=rows,
            heartbeat_at=utcnow(),
            finished_at=utcnow(),
        )

    async def _run(self, job: ImportJob, path: Path, actor: User | None, running: Running) -> None:
        async def progress(rows_read: int, rows_loaded: int) -> None:
            running.rows_read, running.rows_loaded = rows_read, rows_loaded
            moved.set()  # the heartbeat writes it (and reads a cancel request) beside the import
            if running.cancelled:
                raise ImportCancelledError
            if running.lost:
                raise ImportLostError
            await asyncio.sleep(0)  # let requests (progress, cancel) in between batches

        moved, stop = asyncio.Event(), asyncio.Event()
        beating: asyncio.Task[None] | None = None
        outcome: dict[str, Any]
        try:
            if not await self._claim(job.id):
                return
            if self.shared:
                beating = asyncio.create_task(self._heartbeat(job.id, running, moved, stop))
            with path.open(encoding="utf-8", newline="") as lines:
                async with self.store.write() as session:
                    result = await import_leads_bulk(
                        session,
                        pipeline_id=job.pipeline_id,
                        lines=lines,
                        actor=actor,
                        header_map=json.loads(job.header_map),
                        progress=progress,
                    )
                    await self._finish(session, job.id, running, result.rows)
            return
        except ImportLostError:
            logger.warning("import job %s was failed by another server; rolled back", job.id)
            return
        except Exception as error:  # every way an import ends without its leads, kept in the row
            outcome = _outcome(job.id, error)
        finally:
            stop.set()
            moved.set()
            if beating is not None:
                await beating
            self.running.pop(job.id, None)
            with contextlib.suppress(OSError):
                os.unlink(path)
        async with self.store.write() as session:
            await _set(
                session,
                job.id,
                JobStatus.RUNNING,
                instance_id=self.instance_id,
                rows_read=running.rows_read,
                rows_loaded=0,
                heartbeat_at=utcnow(),
                finished_at=utcnow(),
                **outcome,
            )


def _outcome(job_id: int, error: Exception) -> dict[str, Any]:
    """The row's outcome of an import that ended with ``error`` (rolled back: nothing written)."""
    if isinstance(error, ImportCancelledError):
        return {"status": JobStatus.CANCELLED, "error": CANCELLED}
    if isinstance(error, ImportRejectedError):
        return {
            "status": JobStatus.FAILED,
            "problem_count": error.total,
            "problems": json.dumps(problem_dicts(error.errors)),
            "error": error.message,
        }
    if isinstance(error, PipegraphError):
        return {
            "status": JobStatus.FAILED,
            "problem_count": 1,
            "problems": json.dumps(problem_dicts([error])),
            "error": error.message,
        }
    if isinstance(error, UnicodeDecodeError):
        return {"status": JobStatus.FAILED, "error": "the CSV is not UTF-8 text"}
    logger.error("import job %s failed", job_id, exc_info=error)
    return {"status": JobStatus.FAILED, "error": "internal error; nothing was imported"}


async def _set(
    session: AsyncSession,
    job_id: int,
    from_status: JobStatus,
    *,
    instance_id: str | None = None,
    **values: Any,
) -> None:
    """Move a job on from ``from_status`` (and, given, this instance's): a job another server has
    already ended keeps the outcome it wrote."""
    statement = update(ImportJob).where(ImportJob.id == job_id, ImportJob.status == from_status)
    if instance_id is not None:
        statement = statement.where(ImportJob.instance_id == instance_id)
    await session.execute(statement.values(**values))


async def fail_interrupted(store: Store, *, instance_id: str, lease: float = DEFAULT_LEASE_S) -> int:
    """Mark FAILED the active jobs whose server is gone: this instance's own (it is starting, so they
    are not running) and any whose lease ran out; how many. Jobs other live servers run are left alone.
    Run once when a server starts, before it takes requests."""
    async with store.write() as session:
        result = await session.execute(
            update(ImportJob)
            .where(
                ImportJob.status.in_(_ACTIVE),
                or_(ImportJob.instance_id == instance_id, ImportJob.instance_id.is_(None), _expired(lease)),
            )
            .values(status=JobStatus.FAILED, error=INTERRUPTED, rows_loaded=0, finished_at=utcnow())
        )
    return int(getattr(result, "rowcount", 0) or 0)
