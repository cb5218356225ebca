"""Which JSON media type an answer is sent as, from the request's ``Accept`` header.

The GraphQL-over-HTTP spec defines ``application/graphql-response+json``: with it, a request the server
could not execute (a document that does not parse or validate, variables that do not coerce, an HTTP
level refusal) answers 4xx without a ``data`` key, while ``application/json`` keeps answering such
requests 200 with ``"data": null`` as older clients expect. A client gets the new type only when it
asks for it, and prefers it (by q-value, then by order) to ``application/json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import Message, Send
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"


def _q_value(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def negotiate(accept: str | None) -> str:
    """``application/graphql-response+json`` when the client prefers it, else ``application/json``."""
    best: tuple[float, int, str] | None = None  # (q, -position, media type)
    for position, item in enumerate((accept or "").split(",")):
        media_type, *params = item.split(";")
        media_type = media_type.strip().lower()
        if media_type not in (GRAPHQL_RESPONSE_JSON, JSON):
            continue
        q = _q_value(params)
        if q > 0 and (best is None or (q, -position) > best[:2]):
            best = (q, -position, media_type)
    return best[2] if best is not None else JSON


def is_request_error(result: ExecutionResult) -> bool:
    """The operation never ran: parse, validation or variable errors (no error has a ``path``)."""
    if isinstance(result, PreExecutionError):
        return True
    errors = result.errors or []
    return result.data is None and bool(errors) and all(not error.path for error in errors)


def without_data(response: Mapping[str, Any]) -> dict[str, Any]:
    """A request error's body under ``application/graphql-response+json``: no ``data`` key."""
    return {key: value for key, value in response.items() if key != "data"}


def answering_as(media_type: str, send: Send) -> Send:
    """``send`` with a JSON answer's ``Content-Type`` set to ``media_type`` (``charset=utf-8``)."""
    if media_type == JSON:
        return send
    content_type = f"{media_type}; charset=utf-8".encode()

    async def relabelling_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (name, content_type if name == b"content-type" and value.startswith(JSON.encode()) else value)
                for name, value in message.get("headers", [])
            ]
            message = {**message, "headers": headers}
        await send(message)

    return relabelling_send
