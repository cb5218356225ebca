"""Lead events across server processes through PostgreSQL ``LISTEN/NOTIFY``: no other infrastructure.

Publishing sends one ``pg_notify`` per event on a pooled connection, after the write has committed.
Each process holds one dedicated asyncpg connection that ``LISTEN``s on the channel and fans every
notification out to that process's subscribers, including those of events it published itself, so
all processes see the same order. The connection is opened by the first subscriber and re-opened with
backoff when it is lost; events committed while it is down are not replayed (a subscription is a live
feed, and clients reload after a reconnect anyway).

NOTIFY is scoped to one database, so two pipegraph databases on one server do not hear each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pipegraph.services.events import SUBSCRIBER_BUFFER, InProcessBroker, LeadEvent, LeadEventKind

logger = logging.getLogger("pipegraph.events")

CHANNEL = "pipegraph_lead_events"
# The listening connection is pinged this often, so a silently dropped TCP connection is noticed.
PING_INTERVAL_S = 10.0
PING_TIMEOUT_S = 5.0
RECONNECT_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_NOTIFY = text("SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) AS payload")


def encode_event(event: LeadEvent) -> str:
    """A few hundred bytes of JSON, far below NOTIFY's 8,000-byte payload limit."""
    return json.dumps(
        {
            "kind": event.kind.value,
            "leadId": event.lead_id,
            "pipelineId": event.pipeline_id,
            "version": event.version,
            "occurredAt": event.occurred_at.isoformat(),
            "actorId": event.actor_id,
        },
        separators=(",", ":"),
    )


def decode_event(payload: str) -> LeadEvent:
    data: dict[str, Any] = json.loads(payload)
    return LeadEvent(
        kind=LeadEventKind(data["kind"]),
        lead_id=int(data["leadId"]),
        pipeline_id=int(data["pipelineId"]),
        version=int(data["version"]),
        occurred_at=datetime.fromisoformat(data["occurredAt"]),
        actor_id=None if data["actorId"] is None else int(data["actorId"]),
    )


def asyncpg_dsn(engine: AsyncEngine) -> str:
    """The engine's URL as asyncpg expects it (no SQLAlchemy driver suffix)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBroker:
    """Publishes with NOTIFY on the store's engine; delivers what its LISTEN connection hears."""

    def __init__(
        self, engine: AsyncEngine, *, channel: str = CHANNEL, buffer: int = SUBSCRIBER_BUFFER
    ) -> None:
        self._engine = engine
        self._dsn = asyncpg_dsn(engine)
        self._channel = channel
        self._local = InProcessBroker(buffer)
        self._listening = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, events: Sequence[LeadEvent]) -> None:
        """Never raises: the write has committed, and its caller must hear so even if NOTIFY fails."""
        if not events:
            return
        try:
            async with self._engine.begin() as connection:
                await connection.execute(
                    _NOTIFY, {"channel": self._channel, "payloads": [encode_event(e) for e in events]}
                )
        except (OSError, DBAPIError) as error:
            logger.warning("lost %d lead event(s): NOTIFY failed: %s", len(events), error)

    async def subscribe(self, pipeline_id: int) -> AsyncGenerator[LeadEvent, None]:
        # Take a local queue first, then wait for LISTEN: nothing heard from then on is missed.
        queue = self._local.add_queue(pipeline_id)
        try:
            await self.wait_listening()
            while True:
                yield await queue.get()
        finally:
            self._local.remove_queue(pipeline_id, queue)

    async def wait_listening(self) -> None:
        """Start the listening connection if needed and wait until it listens."""
        if self._closed:
            raise RuntimeError("the event broker is closed")
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._listen_forever(), name="pipegraph-listen")
        await self._listening.wait()

    def subscriber_count(self, pipeline_id: int) -> int:
        return self._local.subscriber_count(pipeline_id)

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    def _on_notification(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        # asyncpg calls this on the event loop; the local fan-out never blocks.
        try:
            event = decode_event(payload)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed notification on %s: %.200s", self._channel, payload)
            return
        self._local.publish_nowait([event])

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                connection = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "pipegraph-listen"}
                )
                try:
                    await connection.add_listener(self._channel, self._on_notification)
                    self._listening.set()
                    failures = 0
                    logger.info("event listener: listening on %s", self._channel)
                    await self._watch(connection)
                finally:
                    self._listening.clear()
                    connection.terminate()
                logger.warning("event listener: connection closed; reconnecting")
            except Exception as error:  # whatever broke it, the live feed must come back
                logger.warning("event listener: %s: %s; reconnecting", type(error).__name__, error)
            delay = RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)]
            failures += 1
            await asyncio.sleep(delay)

    async def _watch(self, connection: asyncpg.Connection) -> None:
        """Return once the connection is gone; a ping that fails or hangs raises."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), PING_INTERVAL_S)
                return
            async with asyncio.timeout(PING_TIMEOUT_S):
                await connection.execute("SELECT 1")
