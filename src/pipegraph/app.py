"""The ASGI application: GraphQL over HTTP and WebSocket at ``/graphql``, and ``/healthz``.

Build it with ``create_app(settings)``; ``uvicorn pipegraph.app:app_from_env --factory`` reads the
settings from the environment. Migrations are the CLI's job, not the app's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.schema import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UnsetType

from pipegraph.api.auth import Authenticator
from pipegraph.api.context import Context
from pipegraph.api.loaders import Loaders
from pipegraph.api.schema import build_schema
from pipegraph.db.session import Store
from pipegraph.services.events import InProcessBroker, LeadEventBroker
from pipegraph.services.events_postgres import PostgresBroker
from pipegraph.services.simulation_pool import SimulationPool
from pipegraph.settings import Settings
from pipegraph.web import dashboard_files

logger = logging.getLogger("pipegraph.api")
_VIEWER = "pipegraph.viewer"
_REQUEST_ID = "pipegraph.request_id"


def _unauthorized(request_id: str) -> JSONResponse:
    body = {
        "errors": [
            {
                "message": "authentication required: send a valid API key as Authorization: Bearer <key>",
                "extensions": {"code": "UNAUTHENTICATED", "requestId": request_id},
            }
        ]
    }
    return JSONResponse(
        body, status_code=401, headers={"WWW-Authenticate": "Bearer", "X-Request-Id": request_id}
    )


class PipegraphGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with authentication in front and a pipegraph ``Context`` per request."""

    def __init__(
        self,
        schema: BaseSchema,
        *,
        store: Store,
        broker: LeadEventBroker,
        authenticator: Authenticator,
        graphiql: bool,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql" if graphiql else None)
        self.store = store
        self.broker = broker
        self.authenticator = authenticator
        self.graphiql = graphiql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = uuid.uuid4().hex[:16]
        scope[_REQUEST_ID] = request_id
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
                viewer = await self.authenticator.user_for(authorization)
                if viewer is None:
                    await WebSocket(scope, receive, send).close(code=4401, reason="Unauthorized")
                    return
                scope[_VIEWER] = viewer
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            # The client went away before sending its whole request: nobody is left to answer.
            logger.debug("request %s: client disconnected", request_id)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        request_id: str = request.scope.get(_REQUEST_ID, "")
        if isinstance(response, Response):
            response.headers["X-Request-Id"] = request_id
        return Context(
            store=self.store,
            broker=self.broker,
            loaders=Loaders(self.store),
            request_id=request_id,
            viewer=request.scope.get(_VIEWER),
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        if not await self.authenticator.authenticate_connection(context):
            raise ConnectionRejectionError({"message": "authentication required"})
        return await super().on_ws_connect(context)


def create_app(
    settings: Settings, *, store: Store | None = None, broker: LeadEventBroker | None = None
) -> Starlette:
    store = store or Store.from_url(
        settings.database_url, echo=settings.log_sql, pool_size=settings.pool_size
    )
    # Subscribers may sit on another process than the writer: PostgreSQL carries events between them.
    broker = broker or (InProcessBroker() if store.is_sqlite else PostgresBroker(store.engine))
    graphql = PipegraphGraphQL(
        build_schema(introspection=settings.introspection),
        store=store,
        broker=broker,
        authenticator=Authenticator(store, open_access=settings.open_access),
        graphiql=settings.graphiql,
    )

    async def healthz(_: Request) -> JSONResponse:
        try:
            async with store.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            logger.exception("health check: the database is unreachable")
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    # Simulations run in worker processes (or on a dask cluster), never on the event loop.
    simulations = SimulationPool(workers=settings.simulation_workers, scheduler=settings.dask_scheduler)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            simulations.close()
            await broker.close()
            await store.dispose()

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz, methods=["GET"]),
            Mount("/", app=dashboard_files(), name="dashboard"),
        ],
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.broker = broker
    app.state.simulations = simulations
    return app


def app_from_env() -> Starlette:
    """For ``uvicorn pipegraph.app:app_from_env --factory`` (settings from ``PIPEGRAPH_*``)."""
    return create_app(Settings.from_env())


__all__ = ["GRAPHQL_TRANSPORT_WS_PROTOCOL", "PipegraphGraphQL", "app_from_env", "create_app"]
