"""The ASGI application: GraphQL over HTTP and WebSocket at ``/graphql``, and ``/healthz``.

Build it with ``create_app(settings)``; ``uvicorn pipegraph.app:app_from_env --factory`` reads the
settings from the environment. Migrations are the CLI's job, not the app's.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UnsetType

from pipegraph.api import media_types
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
from pipegraph.db.direct import DirectConnections
from pipegraph.db.session import Store
from pipegraph.services import import_jobs
from pipegraph.services.events import InProcessBroker, LeadEventBroker
from pipegraph.services.events_postgres import PostgresBroker
from pipegraph.services.lead_snapshots import LeadSnapshots
from pipegraph.services.lead_writes import LeadWrites
from pipegraph.services.lead_writes_postgres import PostgresBackend
from pipegraph.services.lead_writes_sqlite import SqliteBackend
from pipegraph.services.simulation_pool import SimulationPool
from pipegraph.services.webhooks.dispatcher import Dispatcher, DispatchPolicy
from pipegraph.settings import Settings
from pipegraph.web import dashboard_files, local_graphiql

logger = logging.getLogger("pipegraph.api")
_VIEWER = "pipegraph.viewer"
# Per HTTP request: for each GraphQL result, whether the database being away left it without data.
_UNAVAILABLE = "pipegraph.unavailable"
# Per HTTP request: the negotiated media type, and for each result whether it was a request error.
_MEDIA_TYPE = "pipegraph.media_type"
_REQUEST_ERRORS = "pipegraph.request_errors"
_METHODS = ("GET", "HEAD", "POST")
_GET_REFUSALS = ("mutations are not allowed when using GET", "subscriptions are not allowed when using GET")
STREAMING_REQUIRED = (
    "subscriptions need a streaming transport: a WebSocket at /graphql (graphql-transport-ws), "
    "or Accept: multipart/mixed"
)


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
        allow_private_webhooks: bool = False,
        lead_writes: LeadWrites | None = None,
        imports: import_jobs.ImportJobs | None = None,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql else None)
        self.graphiql_page = local_graphiql(self.graphql_ide_html) if graphiql else ""
        self.plans = plans
        self.lead_writes = lead_writes
        self.store = store
        self.broker = broker
        self.lead_snapshots = lead_snapshots
        self.authenticator = authenticator
        self.graphiql = graphiql
        self.time_limit = time_limit
        self.allow_private_webhooks = allow_private_webhooks
        self.imports = imports

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = request_id_of(scope)
        if scope["type"] == "http":
            media_type = media_types.negotiate(Headers(scope=scope).get("accept"))
            scope[_MEDIA_TYPE] = media_type
            send = media_types.answering_as(media_type, send)
            if scope["method"] not in _METHODS:
                await _refused_method(scope, receive, send, request_id, allow=", ".join(_METHODS))
                return
            if scope["method"] == "HEAD":  # a GET without its body (the server drops it for HEAD)
                scope = {**scope, "method": "GET"}
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
                    reason = await self.authenticator.refusal(authorization)
                    await WebSocket(scope, receive, send).close(code=4401, reason=reason)
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
            if error.reason in _GET_REFUSALS:  # the spec's answer: 405, and the method that would do
                await _refused_method(scope, receive, send, scope.get(REQUEST_ID, ""), "POST", error.reason)
                return
            code = "STREAMING_REQUIRED" if error.reason == STREAMING_REQUIRED else None
            response = error_response(
                error.status_code,
                error.reason,
                code=code or http_error_code(error.status_code, error.reason),
                request_id=scope.get(REQUEST_ID),
            )
        outcomes = scope.get(_UNAVAILABLE)
        if outcomes and all(outcomes):  # a batch only when the database left every operation empty
            response.status_code = 503
            response.headers["Retry-After"] = str(availability.RETRY_AFTER_S)
        elif (refused := scope.get(_REQUEST_ERRORS)) and all(refused):
            response.status_code = 400
        await response(scope, receive, send)

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(self.graphiql_page)

    async def process_result(self, request: Request, result: ExecutionResult) -> Any:
        request.scope.setdefault(_UNAVAILABLE, []).append(database_unavailable(result))
        processed = await super().process_result(request, result)
        # Under graphql-response+json an operation that never ran is a 4xx without `data`.
        refused = (
            request.scope.get(_MEDIA_TYPE) == media_types.GRAPHQL_RESPONSE_JSON
            and media_types.is_request_error(result)
            and not _is_streaming(request.scope)
        )
        request.scope.setdefault(_REQUEST_ERRORS, []).append(refused)
        return media_types.without_data(processed) if refused else processed

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's, except that a subscription without a streaming transport is refused with a
        code (it would otherwise run as a query and fail on its own root field)."""
        allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as error:
            raise HTTPException(400, error.as_http_error_reason()) from error
        except InvalidOperationTypeError as error:
            if error.operation_type is OperationType.SUBSCRIPTION and request_adapter.method == "POST":
                raise HTTPException(400, STREAMING_REQUIRED) from error
            raise HTTPException(400, error.as_http_error_reason(request_adapter.method)) from error
        except MissingQueryError as error:
            raise HTTPException(400, "No GraphQL query found in the request") from error

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
            lead_writes=self.lead_writes,
            viewer=request.scope.get(_VIEWER),
            request=request,
            response=response,
            allow_private_webhooks=self.allow_private_webhooks,
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
            # Closed here rather than by ConnectionRejectionError, whose close reason is always "Forbidden".
            reason = await self.authenticator.refusal(self.authenticator.connection_authorization(context))
            await context.request.close(4403, reason)
            return UnsetType()
        return await super().on_ws_connect(context)


def lead_writes_for(store: Store, broker: LeadEventBroker, *, pool_size: int) -> LeadWrites | None:
    """Lead changes in few statements: on PostgreSQL when events go out by NOTIFY, on SQLite always."""
    if store.is_sqlite:
        return LeadWrites(SqliteBackend(store, broker))
    if isinstance(broker, PostgresBroker):
        # The change's statements look rows up by key whatever the values: their generic plan is the
        # custom one, so planning each execution again only costs (0.55-0.60 ms of PostgreSQL CPU a move
        # against 0.61-0.69, docs/benchmarks.md).
        settings = {"plan_cache_mode": "force_generic_plan"}
        connections = DirectConnections.for_engine(store.engine, size=pool_size, settings=settings)
        return LeadWrites(PostgresBackend(connections, channel=broker.channel))
    return None


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
    lead_writes = (
        lead_writes_for(store, broker, pool_size=settings.pool_size) if settings.direct_writes else None
    )
    plans = (
        PlannedReads(
            schema._schema,
            limits,
            reader_for(store.engine, pool_size=settings.pool_size),
            writes=lead_writes,
        )
        if settings.compiled_reads
        else None
    )
    imports = import_jobs.ImportJobs(store, instance_id=settings.import_instance, lease=settings.import_lease)
    graphql = PipegraphGraphQL(
        schema,
        store=store,
        broker=broker,
        lead_snapshots=LeadSnapshots(capacity),
        authenticator=Authenticator(store, open_access=settings.open_access),
        graphiql=settings.graphiql,
        time_limit=settings.request_timeout,
        plans=plans,
        allow_private_webhooks=settings.webhooks_allow_private,
        lead_writes=lead_writes,
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

    dispatcher = Dispatcher(store, dispatch_policy(settings)) if settings.webhook_dispatch else None
    bulk = BulkEndpoints(store, graphql.authenticator, imports)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if dispatcher is not None:
            dispatcher.start()
        try:
            # Jobs a stopped server left running never committed: say so before taking requests.
            interrupted = await import_jobs.fail_interrupted(
                store, instance_id=imports.instance_id, lease=imports.lease
            )
        except Exception as error:
            if not availability.is_unavailable(error):
                raise
            logger.warning("could not mark interrupted imports: %s", availability.describe(error))
        else:
            if interrupted:
                logger.warning(
                    "%d import job(s) of a stopped server (this one, or past their lease) marked FAILED",
                    interrupted,
                )
        try:
            yield
        finally:
            if dispatcher is not None:
                await dispatcher.stop()
            simulations.close()
            if plans is not None:
                await plans.close()
            if lead_writes is not None:
                await lead_writes.close()
            await broker.close()
            await store.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql),  # every method: the view answers 405 with the ones it takes
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
    app.state.webhooks = dispatcher
    app.state.lead_writes = lead_writes
    app.state.imports = imports
    return app


def dispatch_policy(settings: Settings) -> DispatchPolicy:
    return DispatchPolicy(
        retry_base=settings.webhook_retry_base,
        max_attempts=settings.webhook_max_attempts,
        lease=settings.webhook_lease,
        poll_interval=settings.webhook_poll_interval,
        connect_timeout=settings.webhook_connect_timeout,
        read_timeout=settings.webhook_read_timeout,
        allow_private=settings.webhooks_allow_private,
    )


async def _refused_method(
    scope: Scope, receive: Receive, send: Send, request_id: str, allow: str, message: str | None = None
) -> None:
    response = error_response(
        405,
        message or f"{scope['method']} is not supported here; use {allow}",
        code="OPERATION_NOT_ALLOWED" if message else "METHOD_NOT_ALLOWED",
        request_id=request_id,
        headers={"Allow": allow},
    )
    await response(scope, receive, send)


def _is_streaming(scope: Scope) -> bool:
    """Subscriptions over HTTP (multipart) last as long as the client wants: no time limit."""
    return any(name == b"accept" and b"multipart/mixed" in value for name, value in scope["headers"])


# A server allocates many short-lived objects per request and keeps few. With the default thresholds
# (a young collection every 700 net allocations) collections that free little took about a tenth of a
# request's CPU, and full collections of the warm heap stalled every connection at once (p99). Serving
# processes collect less often and keep what start-up built out of the collector's sight.
SERVING_GC_THRESHOLDS = (100_000, 50, 1_000)


def tune_gc_for_serving() -> None:
    """For a process that will only serve: freeze the start-up heap, collect the young less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def app_from_env() -> Starlette:
    """For ``uvicorn pipegraph.app:app_from_env --factory`` (settings from ``PIPEGRAPH_*``)."""
    app = create_app(Settings.from_env())
    tune_gc_for_serving()
    return app


__all__ = ["GRAPHQL_TRANSPORT_WS_PROTOCOL", "PipegraphGraphQL", "app_from_env", "create_app"]
