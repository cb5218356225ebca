"""Errors over WebSocket carry ``extensions.code`` on both protocols, and the client's mistakes (a
document that does not parse, a query over the legacy ``graphql-ws`` protocol) are not logged as the
server's: no traceback, no "unexpected error"."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.testclient import WebSocketTestSession as WebSocket

from pipegraph.api import ids
from pipegraph.app import create_app
from pipegraph.settings import Settings
from server_support import seed_database

UNKNOWN_PIPELINE = ids.encode("Pipeline", 999)
LEAD_EVENTS = f'subscription {{ leadEvents(pipelineId: "{UNKNOWN_PIPELINE}") {{ kind }} }}'
PROTOCOLS = {"graphql-transport-ws": "subscribe", "graphql-ws": "start"}


def _first_error(ws: WebSocket, protocol: str, query: str, key: str) -> dict[str, Any]:
    ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
    assert ws.receive_json()["type"] == "connection_ack"
    ws.send_json({"id": "1", "type": PROTOCOLS[protocol], "payload": {"query": query}})
    message = ws.receive_json()
    payload = message["payload"]
    if message["type"] == "error":  # refused before execution: the errors themselves
        errors = payload if isinstance(payload, list) else [payload]
    else:  # "next" or "data": an execution result
        errors = payload["errors"]
    error: dict[str, Any] = errors[0]
    return error


def _server_trouble(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """The server's own warnings and tracebacks (another test's connections, collected meanwhile, may
    log through asyncio: not this server's doing)."""
    return [
        r
        for r in records
        if r.name.startswith(("pipegraph", "strawberry", "uvicorn"))
        and (r.levelno >= logging.WARNING or r.exc_info)
    ]


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize(
    ("query", "code"),
    [
        (LEAD_EVENTS, "NOT_FOUND"),
        ('subscription { leadEvents(pipelineId: "x") { kind } }', "INVALID"),
        ("subscription { nope }", "GRAPHQL_VALIDATION_FAILED"),
        (LEAD_EVENTS.removesuffix(" }"), "GRAPHQL_PARSE_FAILED"),
    ],
    ids=["unknown pipeline", "malformed id", "validation", "parse"],
)
def test_websocket_errors_carry_a_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: str, query: str, code: str
) -> None:
    url = f"sqlite:///{tmp_path / 'ws.sqlite3'}"
    seed = asyncio.run(seed_database(url))
    with (
        TestClient(create_app(Settings.from_env({}, database_url=url))) as client,
        client.websocket_connect("/graphql", subprotocols=[protocol]) as ws,
        caplog.at_level(logging.DEBUG),
    ):
        error = _first_error(ws, protocol, query, seed.key)
    assert error["extensions"]["code"] == code
    assert not _server_trouble(caplog.records)


def test_a_query_over_legacy_graphql_ws_is_refused_as_the_clients_mistake(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'ws.sqlite3'}"
    seed = asyncio.run(seed_database(url))
    with (
        TestClient(create_app(Settings.from_env({}, database_url=url))) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as ws,
        caplog.at_level(logging.DEBUG),
    ):
        error = _first_error(ws, "graphql-ws", "{ viewer { name } }", seed.key)
    assert error["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    assert "HTTP" in error["message"]
    assert not _server_trouble(caplog.records)
