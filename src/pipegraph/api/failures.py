"""Failures answered with a code, over HTTP in the GraphQL error shape with a request id to quote.

:class:`ErrorsAsJSON` sits outermost around the application: an exception that escapes it on an HTTP
request becomes a 503 ``DATABASE_UNAVAILABLE`` with ``Retry-After`` when the database is away (one warning
line in the log) and a 500 ``INTERNAL`` otherwise (the traceback in the log), instead of a plain-text
500. The exception is not re-raised, so the server keeps the connection open for the next request;
only when part of an answer was already sent is it re-raised, for the server to close the connection,
the one way left to tell the client the answer is broken.

Over WebSocket, a connection whose key cannot be checked because the database is away is closed with
1013 "Try Again Later" (:data:`WS_TRY_AGAIN_LATER`), not refused as if the key were wrong.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter

from pipegraph.api.errors import INTERNAL_MESSAGE, log_unavailable
from pipegraph.api.http_limits import error_response
from pipegraph.db import availability

logger = logging.getLogger("pipegraph.api")
REQUEST_ID = "pipegraph.request_id"
WS_TRY_AGAIN_LATER = 1013
WS_UNAVAILABLE_REASON = "database unavailable; reconnect later"


def request_id_of(scope: Scope) -> str:
    """The request's id, made on first use: the same in the response, the errors and the log."""
    request_id: str = scope.setdefault(REQUEST_ID, uuid.uuid4().hex[:16])
    return request_id


def unavailable_response(request_id: str | None) -> JSONResponse:
    return error_response(
        503,
        availability.MESSAGE,
        code=availability.CODE,
        request_id=request_id,
        headers={"Retry-After": str(availability.RETRY_AFTER_S)},
    )


class ErrorsAsJSON:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        started = finished = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            unavailable = availability.is_unavailable(error)
            if unavailable:
                log_unavailable(request_id, error)
            else:
                logger.error("request %s: unexpected error: %s", request_id, error, exc_info=error)
            if finished:
                return  # the client has its whole answer
            if started:
                raise
            response = (
                unavailable_response(request_id)
                if unavailable
                else error_response(500, INTERNAL_MESSAGE, code="INTERNAL", request_id=request_id)
            )
            await response(scope, receive, send)


class ClosableWebSocketAdapter(ASGIWebSocketAdapter):
    """Strawberry's adapter, letting ``on_ws_connect`` close the socket itself: the acknowledgement
    Strawberry then sends is dropped rather than written to a closed socket."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        await super().send_json(message)
