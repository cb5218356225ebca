"""A shortened soak of live events through a real server, on each backend, with a client-side ledger.

Writers change leads concurrently over HTTP and note every change the server acknowledged (lead and
version). Three subscribers follow the pipeline over graphql-transport-ws: one reads as fast as it can,
one stops reading until the writers are done, so that the server cannot send to it and its feed (two
events here) overflows and it reads the log, and one drops its connection halfway and resumes with
``after:`` its last position. Each must end with exactly the
acknowledged changes: none missing, none twice, each lead's versions in order, positions increasing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from pipegraph.api import ids
from server_support import CREATE_LEAD, ServerProcess, graphql, running_server, seed_database

pytestmark = pytest.mark.slow

WRITERS = 8
CHANGES_PER_WRITER = 50
# Each event's message is made about 20 KB long (a long title, the lead forty times over), so that the
# server's send buffers (the kernel lets one grow to 4 MB) fill long before the writers are done, for a
# reader that stops reading.
_LEAD = "{ title company contactName contactEmail source value stage { name } owner { name email } }"
SUBSCRIBE = f"""
subscription ($pipelineId: ID!, $after: String) {{
  leadEvents(pipelineId: $pipelineId, after: $after) {{
    kind leadId version position
    {" ".join(f"copy{n}: lead {_LEAD}" for n in range(40))}
  }}
}}
"""
# Room for the subscription's large selection; no throttling of the writers.
LIMITS = {"PIPEGRAPH_COST_BUDGET": "0", "PIPEGRAPH_MAX_ALIASES": "50", "PIPEGRAPH_MAX_QUERY_COST": "100000"}
UPDATE = """
mutation ($leadId: ID!, $title: String!, $version: Int!) {
  updateLead(input: {leadId: $leadId, title: $title, expectedVersion: $version}) {
    lead { id version } userErrors { code }
  }
}"""

Change = tuple[str, int]  # lead id, version


class Subscriber:
    """A graphql-transport-ws client whose reading is fully in the test's hands (websockets' sans-I/O
    protocol over a plain socket with small buffers): when it stops reading, the server soon cannot
    send to it. ``received`` holds every event in arrival order."""

    def __init__(self, server: ServerProcess, key: str, pipeline_id: str) -> None:
        self.server, self.key, self.pipeline_id = server, key, pipeline_id
        self.received: list[dict[str, Any]] = []
        self.protocol = ClientProtocol(parse_uri(server.websocket_url))
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: list[dict[str, Any]] = []

    async def connect(self, after: str | None = None) -> None:
        self.protocol = ClientProtocol(
            parse_uri(self.server.websocket_url), subprotocols=[Subprotocol("graphql-transport-ws")]
        )
        self.pending = []
        sock = socket.socket()
        # Before connecting, so the window stays small instead of the kernel taking megabytes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.server.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=4096)
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while self.protocol.state is not State.OPEN:
            await self._receive()
        await self._send({"type": "connection_init", "payload": {"Authorization": f"Bearer {self.key}"}})
        assert (await self._next())["type"] == "connection_ack"
        payload = {"query": SUBSCRIBE, "variables": {"pipelineId": self.pipeline_id, "after": after}}
        await self._send({"id": "1", "type": "subscribe", "payload": payload})

    async def read(self, count: int) -> None:
        target = len(self.received) + count
        while len(self.received) < target:
            message = await self._next()
            assert message["type"] == "next", message
            self.received.append(message["payload"]["data"]["leadEvents"])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def _send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        await self._flush()

    async def _flush(self) -> None:
        assert self.writer is not None
        self.writer.write(b"".join(self.protocol.data_to_send()))  # pongs too
        await self.writer.drain()

    async def _next(self) -> dict[str, Any]:
        while not self.pending:
            await self._receive()
        return self.pending.pop(0)

    async def _receive(self) -> None:
        assert self.reader is not None
        data = await asyncio.wait_for(self.reader.read(4096), 30)
        assert data, "the server closed the connection"
        self.protocol.receive_data(data)
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.pending.append(json.loads(bytes(event.data)))
        await self._flush()


async def _write(
    http: httpx.AsyncClient, server: ServerProcess, key: str, lead_id: str, seed: int
) -> list[Change]:
    rng = random.Random(seed)
    acknowledged = []
    version = 1
    for n in range(CHANGES_PER_WRITER):
        title = f"Take {n} ".ljust(300, "-")
        data = await graphql(http, server, key, UPDATE, leadId=lead_id, title=title, version=version)
        assert data["updateLead"]["userErrors"] == []
        lead = data["updateLead"]["lead"]
        version = lead["version"]
        acknowledged.append((lead["id"], lead["version"]))
        await asyncio.sleep(rng.random() / 100)
    return acknowledged


def _check(received: list[dict[str, Any]], ledger: set[Change]) -> None:
    changes = [(event["leadId"], event["version"]) for event in received]
    assert len(changes) == len(set(changes)), "an event arrived twice"
    assert set(changes) == ledger
    positions = [int(event["position"]) for event in received]
    assert positions == sorted(positions)
    for lead_id in {lead for lead, _ in ledger}:
        versions = [version for lead, version in changes if lead == lead_id]
        assert versions == list(range(1, len(versions) + 1))


async def test_every_acknowledged_change_reaches_every_subscriber(database_url: str, tmp_path: Path) -> None:
    seed = await seed_database(database_url)
    env = {**LIMITS, "PIPEGRAPH_EVENT_FEED_CAPACITY": "2"}
    with running_server(database_url, tmp_path, env=env, name="soak") as server:
        subscribers = [Subscriber(server, seed.key, seed.pipeline_id) for _ in range(3)]
        fast, slow, resuming = subscribers
        for subscriber in subscribers:
            await subscriber.connect()
        async with httpx.AsyncClient(timeout=30) as http:
            created = [
                await graphql(http, server, seed.key, CREATE_LEAD, pipelineId=seed.pipeline_id, title=f"D{n}")
                for n in range(WRITERS)
            ]
            ledger: set[Change] = {(c["createLead"]["lead"]["id"], 1) for c in created}
            lead_ids = [c["createLead"]["lead"]["id"] for c in created]
            total = WRITERS * (CHANGES_PER_WRITER + 1)
            half = total // 2

            async def resume_halfway() -> None:
                await resuming.read(half)
                await resuming.close()
                await asyncio.sleep(0.5)  # changes commit while it is away
                await resuming.connect(after=resuming.received[-1]["position"])
                await resuming.read(total - half)

            writes = asyncio.gather(
                *(_write(http, server, seed.key, lead_id, n) for n, lead_id in enumerate(lead_ids))
            )

            async def stall_until_written() -> None:
                await slow.read(WRITERS)
                await writes
                await slow.read(total - WRITERS)

            results = await asyncio.gather(writes, fast.read(total), stall_until_written(), resume_halfway())
        for acknowledged in results[0]:
            ledger.update(acknowledged)
        assert len(ledger) == total
        for subscriber in subscribers:
            _check(subscriber.received, ledger)
            await subscriber.close()
        output = server.output()
    assert "Traceback" not in output, output
    # The slow reader's feed overflowed, and it caught up from the log.
    assert "events behind; it reads the log" in output, output


async def _write_through_failures(
    http: httpx.AsyncClient, server: ServerProcess, key: str, lead_id: str, stop: asyncio.Event
) -> list[Change]:
    """Changes until ``stop``; those answered with anything but success are not acknowledged."""
    acknowledged = []
    n, version = 0, 1
    while not stop.is_set():
        n += 1
        variables = {"leadId": lead_id, "title": f"Take {n}", "version": version}
        try:
            response = await http.post(
                server.graphql_url,
                json={"query": UPDATE, "variables": variables},
                headers={"Authorization": f"Bearer {key}"},
            )
            payload = response.json()["data"]["updateLead"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            await asyncio.sleep(0.05)
            continue
        lead = payload["lead"]
        if lead is None:
            continue
        # A change whose answer was lost leaves the version unknown: the CONFLICT's lead tells it.
        version = lead["version"]
        if not payload["userErrors"]:
            acknowledged.append((lead["id"], lead["version"]))
    return acknowledged


async def _follow(subscriber: Subscriber, wanted: set[Change]) -> int:
    """Read until every wanted change has arrived, subscribing again from the last position whenever
    the stream ends; how many times it had to."""
    resumed = 0
    while not wanted <= {(e["leadId"], e["version"]) for e in subscriber.received}:
        try:
            message = await subscriber._next()
        except (AssertionError, OSError, TimeoutError):
            message = {"type": "closed"}
        if message["type"] == "next" and message["payload"].get("data") is not None:
            subscriber.received.append(message["payload"]["data"]["leadEvents"])
            continue
        if message["type"] in ("next", "error"):  # the stream broke: it must say where
            errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
            assert errors[0].get("extensions", {}).get("code") == "RESUME_FROM", message
        resumed += 1
        await subscriber.close()
        await subscriber.connect(after=subscriber.received[-1]["position"] if subscriber.received else "0")
    return resumed


@pytest.mark.postgres
async def test_no_acknowledged_change_is_lost_across_lost_database_connections(
    postgres_url: str, tmp_path: Path
) -> None:
    seed = await seed_database(postgres_url)
    with running_server(postgres_url, tmp_path, env=LIMITS, name="outage") as server:
        subscribers = [Subscriber(server, seed.key, seed.pipeline_id) for _ in range(2)]
        async with httpx.AsyncClient(timeout=30) as http:
            created = [
                await graphql(http, server, seed.key, CREATE_LEAD, pipelineId=seed.pipeline_id, title=f"D{n}")
                for n in range(4)
            ]
            for subscriber in subscribers:
                await subscriber.connect(after="0")
            stop = asyncio.Event()
            lead_ids = [c["createLead"]["lead"]["id"] for c in created]
            writes = asyncio.gather(
                *(_write_through_failures(http, server, seed.key, lead_id, stop) for lead_id in lead_ids)
            )
            admin = await asyncpg.connect(postgres_url)
            try:
                for _ in range(3):  # every connection of the server dropped, the listener's too
                    await asyncio.sleep(1.0)
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                await asyncio.sleep(1.0)
                stop.set()
                acknowledged = {change for changes in await writes for change in changes}
                logged = {
                    (ids.encode("Lead", row["lead_id"]), row["version"])
                    for row in await admin.fetch("SELECT lead_id, version FROM lead_events")
                }
            finally:
                await admin.close()
        ledger = {(lead_id, 1) for lead_id in lead_ids} | acknowledged
        assert len(acknowledged) > 20
        assert ledger <= logged  # a change may commit and still lose its answer with its connection
        for subscriber in subscribers:
            await asyncio.wait_for(_follow(subscriber, logged), 60)
            _check(subscriber.received, logged)
            await subscriber.close()
