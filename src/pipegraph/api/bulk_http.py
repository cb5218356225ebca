"""Bulk data over plain HTTP, beside GraphQL: CSV imports as jobs, CSV exports streamed.

``POST /imports?pipelineId=<Pipeline ID>[&map=Deal Name=title,Amount=value][&wait=true]`` with the CSV
as the request body (any content type; UTF-8, a byte-order mark allowed). The body is streamed to a
temporary file, never held in memory, then imported in bulk as a job: ``202`` with the job (``wait=true``:
``200`` once it has ended). ``GET /imports/<job ID>`` reads a job: ``status`` (QUEUED, RUNNING,
SUCCEEDED, FAILED, CANCELLED), ``rowsRead`` and ``rowsLoaded`` while it runs, ``importedCount``, and for
a refused file ``problemCount`` and ``problems`` (the first 100, as ``importLeads`` gives its
``userErrors``). ``DELETE /imports/<job ID>`` cancels a running job; nothing of it is written. Any
server sharing the database answers for any job: the job lives in its row (``import_jobs``). Every
request needs an API key (``Authorization: Bearer <key>``), as GraphQL does; errors have GraphQL's
error shape.

``GET /exports/leads.csv?pipelineId=<Pipeline ID>`` streams the leads ``leads`` lists, oldest first, in
the columns an import reads (``pipegraph.services.exports``), narrowed by the filter of ``leads`` given as
query parameters in its GraphQL names: ``stageIds``, ``ownerIds``, ``statuses``, ``sources``
(comma-separated), ``minValue``, ``maxValue``, ``createdAfter``, ``createdBefore`` (ISO 8601),
``stalledOnly``, ``search``. Without ``pipelineId``, every pipeline's leads.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipegraph.api import ids
from pipegraph.api.auth import Authenticator
from pipegraph.api.http_limits import error_response
from pipegraph.api.inputs import LeadFilter
from pipegraph.db.models import ImportJob, LeadStatus, User
from pipegraph.db.session import Store
from pipegraph.errors import NotFoundError, PipegraphError, ValidationError
from pipegraph.services import exports, import_jobs
from pipegraph.services.import_rows import parse_header_map

_STATUS = {"NOT_FOUND": 404, "FORBIDDEN": 403}


def job_json(job: ImportJob, running: import_jobs.Running | None) -> dict[str, Any]:
    """The job as ``GET /imports/{id}`` answers it."""
    return {
        "id": ids.encode("ImportJob", job.id),
        "pipelineId": ids.encode("Pipeline", job.pipeline_id),
        "status": str(job.status),
        "rowsRead": running.rows_read if running else job.rows_read,
        "rowsLoaded": running.rows_loaded if running else job.rows_loaded,
        "importedCount": job.imported_count,
        "problemCount": job.problem_count,
        "problems": json.loads(job.problems),
        "error": job.error,
        "createdAt": job.created_at.isoformat(),
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
    }


def _refusal(error: PipegraphError) -> JSONResponse:
    response = error_response(_STATUS.get(error.code, 400), error.message, code=error.code)
    if error.field:
        body = json.loads(bytes(response.body))
        field = "pipelineId" if error.field == "pipeline_id" else error.field
        body["errors"][0]["extensions"]["field"] = field
        response = JSONResponse(body, status_code=response.status_code)
    return response


class BulkEndpoints:
    def __init__(self, store: Store, authenticator: Authenticator, jobs: import_jobs.ImportJobs) -> None:
        self.store = store
        self.authenticator = authenticator
        self.jobs = jobs

    def routes(self) -> list[Route]:
        return [
            Route("/imports", self.upload, methods=["POST"]),
            Route("/imports/{job_id}", self.read, methods=["GET"]),
            Route("/imports/{job_id}", self.cancel, methods=["DELETE"]),
            Route("/exports/leads.csv", self.export_leads, methods=["GET"]),
        ]

    async def _viewer(self, request: Request) -> User | None:
        return await self.authenticator.user_for(request.headers.get("authorization"))

    async def upload(self, request: Request) -> Response:
        viewer = await self._viewer(request)
        if viewer is None:
            return error_response(401, "authentication required", code="UNAUTHENTICATED")
        try:
            pipeline_id = ids.decode_as(
                request.query_params.get("pipelineId", ""), "Pipeline", field="pipelineId"
            )
            header_map = parse_header_map(request.query_params.get("map", ""))
            job = await self.jobs.create(pipeline_id=pipeline_id, actor=viewer, header_map=header_map)
        except PipegraphError as error:
            return _refusal(error)
        path = await _spool(request)
        if request.query_params.get("wait", "").lower() in ("1", "true", "yes"):
            await self.jobs.run(job, path, viewer)
            return await self._answer(job.id, 200)
        self.jobs.start(job, path, viewer)
        return await self._answer(job.id, 202)

    async def _answer(self, job_id: int, status: int) -> Response:
        job, running = await self.jobs.read(job_id)
        if job is None:
            raise NotFoundError(f"no import job with id {job_id}", field="id")
        return JSONResponse(job_json(job, running), status_code=status)

    async def read(self, request: Request) -> Response:
        if await self._viewer(request) is None:
            return error_response(401, "authentication required", code="UNAUTHENTICATED")
        try:
            job_id = ids.decode_as(request.path_params["job_id"], "ImportJob", field="id")
            return await self._answer(job_id, 200)
        except PipegraphError as error:
            return _refusal(error)

    async def cancel(self, request: Request) -> Response:
        if await self._viewer(request) is None:
            return error_response(401, "authentication required", code="UNAUTHENTICATED")
        try:
            job_id = ids.decode_as(request.path_params["job_id"], "ImportJob", field="id")
        except PipegraphError as error:
            return _refusal(error)
        if not await self.jobs.cancel(job_id):
            job, _ = await self.jobs.read(job_id)
            if job is None:
                return _refusal(NotFoundError(f"no import job with id {job_id}", field="id"))
            return error_response(409, f"the job is not running (it is {job.status})", code="CONFLICT")
        return await self._answer(job_id, 202)

    async def export_leads(self, request: Request) -> Response:
        if await self._viewer(request) is None:
            return error_response(401, "authentication required", code="UNAUTHENTICATED")
        try:
            params = request.query_params
            pipeline_id = ids.decode_optional(params.get("pipelineId"), "Pipeline", field="pipelineId")
            lead_filter = _filter(params).to_service()
            # Read the first chunk here, so a refused filter is a 400 rather than a broken stream.
            chunks = exports.lead_csv(self.store, pipeline_id=pipeline_id, lead_filter=lead_filter)
            header = await anext(chunks)
        except PipegraphError as error:
            return _refusal(error)

        async def body() -> AsyncIterator[str]:
            yield header
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="leads.csv"'},
        )


def _filter(params: Mapping[str, str]) -> LeadFilter:
    """``leads``' filter from query parameters named as in GraphQL."""

    def many(name: str) -> list[str] | None:
        raw = params.get(name)
        return [part.strip() for part in raw.split(",") if part.strip()] if raw else None

    def moment(name: str) -> datetime | None:
        raw = params.get(name)
        if raw is None:
            return None
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise ValidationError(f"{raw!r} is not an ISO 8601 date-time", field=name) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    statuses = many("statuses")
    try:
        status_values = [LeadStatus(s.upper()) for s in statuses] if statuses else None
    except ValueError:
        raise ValidationError(f"statuses: one of {', '.join(LeadStatus)}", field="statuses") from None
    return LeadFilter(
        stage_ids=cast(Any, many("stageIds")),
        statuses=cast(Any, status_values),
        owner_ids=cast(Any, many("ownerIds")),
        sources=many("sources"),
        min_value=cast(Any, params.get("minValue")),
        max_value=cast(Any, params.get("maxValue")),
        created_after=moment("createdAfter"),
        created_before=moment("createdBefore"),
        stalled_only=params.get("stalledOnly", "").lower() in ("1", "true", "yes"),
        search=params.get("search"),
    )


async def _spool(request: Request) -> Path:
    """The request body, streamed to a temporary file."""
    handle, name = tempfile.mkstemp(prefix="pipegraph-import-", suffix=".csv")
    with os.fdopen(handle, "wb") as spool:
        async for chunk in request.stream():
            spool.write(chunk)
    return Path(name)
