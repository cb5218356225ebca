"""The ASGI application: GraphQL over HTTP and WebSocket at ``/graphql``, and ``/healthz``.

Build it with ``create_app(settings)``; ``uvicorn pipegraph.app:app_from_env --factory`` reads the
settings from the environment. Migrations are the CLI's job, not the app's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cross_web import HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.schema import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from pipegraph.api.auth import Authenticator
from pipegraph.api.bulk_http import BulkEndpoints
from pipegraph.api.context import Context
from pipegraph.api.errors import database_unavailable, log_unavailable
from pipegraph.api.failures import (
    REQUEST_ID,
    WS_TRY_AGAIN_LATER,
    WS_UNAVAILABLE_REASON,
    ClosableWebSocketAdapter,
    ErrorsAsJSON,
    request_id_of,
)
from pipegraph.api.http_limits import BodySizeLimit, error_response, http_error_code, within_time_limit
from pipegraph.api.limits import LimitPolicy, QueryLimits
from pipegraph.api.loaders import Loaders
from pipegraph.api.plans import PlannedReads
from pipegraph.api.plans.connections import reader_for
from pipegraph.api.schema import build_schema
from pipegraph.db import availability
from pipegraph.db.session import Store
from pipegraph.services import import_jobs
from pipegraph.services.events import InProcessBroker, LeadEventBroker
from pipegraph.services.events_postgres import PostgresBroker
from pipegraph.services.lead_snapshots import LeadSnapshots
from pipegraph.services.simulation_pool import SimulationPool
from pipegraph.settings import Settings
from pipegraph.web import dashboard_files

logger = logging.getLogger("pipegraph.api")
_VIEWER = "pipegraph.viewer"
# Per HTTP request: for each GraphQL result, whether the database being away left it without data.
_UNAVAILABLE = "pipegraph.unavailable"


def _unauthorized(request_id: str) -> JSONResponse:
    return error_response(
        401,
        "authentication required: send a valid API key as Authorization: Bearer <key>",
        code="UNAUTHENTICATED",
        request_id=request_id,
        headers={"WWW-Authenticate": "Bearer"},
    )


class PipegraphGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with authentication in front and a pipegraph ``Context`` per request."""

    websocket_adapter_class = ClosableWebSocketAdapter

    def __init__(
        self,
        schema: BaseSchema,
        *,
        store: Store,
        broker: LeadEventBroker,
        lead_snapshots: LeadSnapshots,
        authenticator: Authenticator,
        graphiql: bool,
        time_limit: float | None = None,
        plans: PlannedReads | None = None,
        imports: import_jobs.ImportJobs | None = None,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql else None)
        self.plans = plans
        self.store = store
        self.broker = broker
        self.lead_snapshots = lead_snapshots
        self.authenticator = authenticator
        self.graphiql = graphiql
        self.time_limit = time_limit
        self.imports = imports

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        if scope["type"] == "http":
            request = Request(scope, receive)
            wants_ide = request.method == "GET" and "text/html" in request.headers.get("accept", "")
            if not (wants_ide and self.graphiql):
                viewer = await self.authenticator.user_for(request.headers.get("authorization"))
                if viewer is None:
                    await _unauthorized(request_id)(scope, receive, send)
                    return
                scope[_VIEWER] = viewer
        elif scope["type"] == "websocket":
            authorization = WebSocket(scope, receive, send).headers.get("authorization")
            if authorization is not None:
                try:
                    viewer = await self.authenticator.user_for(authorization)
                except Exception as error:
                    if not availability.is_unavailable(error):
                        raise
                    log_unavailable(request_id, error, "websocket")
                    await WebSocket(scope, receive, send).close(WS_TRY_AGAIN_LATER, WS_UNAVAILABLE_REASON)
                    return
                if viewer is None:
                    await WebSocket(scope, receive, send).close(code=4401, reason="Unauthorized")
                    return
                scope[_VIEWER] = viewer
        try:
            if scope["type"] != "http":
                await super().__call__(scope, receive, send)
            elif self.time_limit is None or _is_streaming(scope):
                await self._serve_http(scope, receive, send)
            else:
                await within_time_limit(self.time_limit, scope, receive, send, self._serve_http, request_id)
        except ClientDisconnect:
            # The client went away before sending its whole request: nobody is left to answer.
            logger.debug("request %s: client disconnected", request_id)

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry's HTTP handling, with its refusals in the GraphQL error shape."""
        request = Request(scope, receive)
        if self.plans is not None:  # a plannable read is answered here, anything else by Strawberry
            planned = await self.plans.serve(request, scope.get(_VIEWER), scope.get(REQUEST_ID, ""))
            if planned is not None:
                await planned(scope, receive, send)
                return
        try:
            response: Response = await self.run(request)
        except HTTPException as error:
            response = error_response(
                error.status_code,
                error.reason,
                code=http_error_code(error.status_code, error.reason),
                request_id=scope.get(REQUEST_ID),
            )
        outcomes = scope.get(_UNAVAILABLE)
        if outcomes and all(outcomes):  # a batch only when the database left every operation empty
            response.status_code = 503
            response.headers["Retry-After"] = str(availability.RETRY_AFTER_S)
        await response(scope, receive, send)

    async def process_result(self, request: Request, result: ExecutionResult) -> Any:
        request.scope.setdefault(_UNAVAILABLE, []).append(database_unavailable(result))
        return await super().process_result(request, result)

    def parse_json(self, data: str | bytes) -> Any:
        """A JSON object (a batch: an array of them), or a 400 saying what is wrong with the body."""
        try:
            value = self.decode_json(data)
        except (ValueError, RecursionError):  # invalid UTF-8 too; nesting deeper than the parser goes
            raise HTTPException(400, "Unable to parse request body as JSON (UTF-8)") from None
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            raise HTTPException(400, "Expected a JSON object (or an array of them for a batch)")
        return value

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        request_id: str = request.scope.get(REQUEST_ID, "")
        if isinstance(response, Response):
            response.headers["X-Request-Id"] = request_id
        return Context(
            store=self.store,
            broker=self.broker,
            lead_snapshots=self.lead_snapshots,
            loaders=Loaders(self.store),
            request_id=request_id,
            viewer=request.scope.get(_VIEWER),
            request=request,
            response=response,
            imports=self.imports,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        try:
            authenticated = await self.authenticator.authenticate_connection(context)
        except Exception as error:
            if not availability.is_unavailable(error):
                raise
            log_unavailable(context.request_id, error, "connection_init")
            await context.request.close(WS_TRY_AGAIN_LATER, WS_UNAVAILABLE_REASON)
            return UnsetType()  # the acknowledgement goes nowhere: the socket is closed
        if not authenticated:
            raise ConnectionRejectionError({"message": "authentication required"})
        return await super().on_ws_connect(context)


def create_app(
    settings: Settings, *, store: Store | None = None, broker: LeadEventBroker | None = None
) -> Starlette:
    store = store or Store.from_url(
        settings.database_url, echo=settings.log_sql, pool_size=settings.pool_size
    )
    # Subscribers may sit on another process than the writer: PostgreSQL carries events between them.
    capacity = settings.event_feed_capacity
    broker = broker or (
        InProcessBroker(capacity) if store.is_sqlite else PostgresBroker(store.engine, capacity=capacity)
    )
    limits = LimitPolicy.from_settings(settings)
    schema = build_schema(
        introspection=settings.introspection,
        extensions=[lambda: QueryLimits(limits)],
        max_batch=settings.max_batch,
    )
    plans = (
        PlannedReads(schema._schema, limits, reader_for(store.engine, pool_size=settings.pool_size))
        if settings.compiled_reads
        else None
    )
    imports = import_jobs.ImportJobs(store)
    graphql = PipegraphGraphQL(
        schema,
        store=store,
        broker=broker,
        lead_snapshots=LeadSnapshots(capacity),
        authenticator=Authenticator(store, open_access=settings.open_access),
        graphiql=settings.graphiql,
        time_limit=settings.request_timeout,
        plans=plans,
        imports=imports,
    )

    async def healthz(_: Request) -> JSONResponse:
        try:
            async with store.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception as error:
            if availability.is_unavailable(error):
                logger.warning("health check: database unreachable: %s", availability.describe(error))
            else:
                logger.exception("health check: the database is unreachable")
            return JSONResponse(
                {"status": "unavailable", "database": "unreachable"},
                status_code=503,
                headers={"Retry-After": str(availability.RETRY_AFTER_S)},
            )
        return JSONResponse({"status": "ok", "database": "ok"})

    # Simulations run in worker processes (or on a dask cluster), never on the event loop.
    simulations = SimulationPool(workers=settings.simulation_workers, scheduler=settings.dask_scheduler)

    bulk = BulkEndpoints(store, graphql.authenticator, imports)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            # Jobs a stopped server left running never committed: say so before taking requests.
            interrupted = await import_jobs.fail_interrupted(store)
        except Exception as error:
            if not availability.is_unavailable(error):
                raise
            logger.warning("could not mark interrupted imports: %s", availability.describe(error))
        else:
            if interrupted:
                logger.warning("%d import job(s) interrupted by a stop marked FAILED", interrupted)
        try:
            yield
        finally:
            simulations.close()
            if plans is not None:
                await plans.close()
            await broker.close()
            await store.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz, methods=["GET"]),
            *bulk.routes(),
            Mount("/", app=dashboard_files(), name="dashboard"),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(ErrorsAsJSON),
            # Uploads stream to disk as they come, so their size is not limited.
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, exempt=("/imports",)),
        ],
    )
    app.state.store = store
    app.state.broker = broker
    app.state.lead_snapshots = graphql.lead_snapshots
    app.state.simulations = simulations
    app.state.limits = limits
    app.state.plans = plans
    app.state.imports = imports
    return app


def _is_streaming(scope: Scope) -> bool:
    """Subscriptions over HTTP (multipart) last as long as the client wants: no time limit."""
    return any(name == b"accept" and b"multipart/mixed" in value for name, value in scope["headers"])


def app_from_env() -> Starlette:
    """For ``uvicorn pipegraph.app:app_from_env --factory`` (settings from ``PIPEGRAPH_*``)."""
    return create_app(Settings.from_env())


__all__ = ["GRAPHQL_TRANSPORT_WS_PROTOCOL", "PipegraphGraphQL", "app_from_env", "create_app"]
