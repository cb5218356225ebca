"""SIGTERM on a real server: the request in flight is answered, subscriptions get a close frame, the log
stays free of tracebacks."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import websockets

from server_support import ServerProcess, running_server, seed_database, wait_for_exit

SUBSCRIBE = "subscription ($p: ID!) { leadEvents(pipelineId: $p) { kind } }"
# uvicorn closes open WebSockets with 1012, "service restart": clients know to reconnect elsewhere.
SERVICE_RESTART = 1012


async def _subscribe(server: ServerProcess, key: str, pipeline_id: str) -> websockets.ClientConnection:
    ws = await websockets.connect(server.websocket_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    payload = {"query": SUBSCRIBE, "variables": {"p": pipeline_id}}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    return ws


async def _start_request(
    server: ServerProcess, key: str, body: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Headers only, asking to continue: once the server says so, the app is waiting for the body."""
    host, port = server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20) == b"HTTP/1.1 100 Continue\r\n\r\n"
    return reader, writer


async def test_sigterm_finishes_requests_in_flight_and_closes_subscriptions(
    database_url: str, tmp_path: Path
) -> None:
    url = database_url
    seed = await seed_database(url)
    with running_server(url, tmp_path) as server:
        ws = await _subscribe(server, seed.key, seed.pipeline_id)
        body = json.dumps({"query": "{ viewer { email } }"}).encode()
        reader, writer = await _start_request(server, seed.key, body)

        server.process.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 20)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == SERVICE_RESTART

        writer.write(body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        status, _, rest = response.partition(b"\r\n")
        assert status == b"HTTP/1.1 200 OK", response
        _, _, payload = rest.partition(b"\r\n\r\n")
        assert json.loads(payload)["data"] == {"viewer": {"email": "ada@example.com"}}
        output = wait_for_exit(server, signal.SIGTERM)
    assert "ERROR" not in output, output
    assert "Shutting down" in output
    assert "Application shutdown complete" in output
