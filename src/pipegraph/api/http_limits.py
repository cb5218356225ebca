"""Limits and errors at the HTTP level, before GraphQL sees a request: body size, time, and answers in
the GraphQL error shape (``{"errors": [{"message", "extensions": {"code", ...}}]}``) for requests that
never reach execution (bad JSON, wrong content type, batches too large, GET mutations...).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The messages Strawberry gives its HTTP errors, mapped to a code a client can test.
_HTTP_ERROR_CODES = {
    405: "METHOD_NOT_ALLOWED",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    extensions: dict[str, Any] = {"code": code}
    if request_id:
        extensions["requestId"] = request_id
        headers = {**(headers or {}), "X-Request-Id": request_id}
    return JSONResponse(
        {"errors": [{"message": message, "extensions": extensions}]}, status_code=status, headers=headers
    )


def http_error_code(status: int, reason: str) -> str:
    if reason == "Unsupported content type":
        return "UNSUPPORTED_MEDIA_TYPE"
    if reason.startswith(("Batching", "Too many operations")):
        return "BATCH_REFUSED"
    if "not allowed when using GET" in reason:  # mutations (and subscriptions) must be POSTed
        return "OPERATION_NOT_ALLOWED"
    return _HTTP_ERROR_CODES.get(status, "BAD_REQUEST")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by their Content-Length or, when it is absent
    or lies, by counting the bytes as they arrive (a chunked upload is never read past the limit)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            f"request body too large: at most {self.max_bytes} bytes",
            code="PAYLOAD_TOO_LARGE",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


async def within_time_limit(
    seconds: float, scope: Scope, receive: Receive, send: Send, app: ASGIApp, request_id: str
) -> None:
    """Run ``app``; if no answer has started after ``seconds``, cancel it and answer 503 TIMEOUT."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            await app(scope, receive, tracking_send)
    except TimeoutError:
        if started or not limit.expired():  # not ours: a timeout inside the app is an error like any
            raise
        response = error_response(
            503,
            f"the request took longer than the limit of {seconds:g} s and was stopped; "
            "ask for less (smaller pages, fewer fields) or use a simulation job for long work",
            code="TIMEOUT",
            request_id=request_id,
        )
        await response(scope, receive, send)
