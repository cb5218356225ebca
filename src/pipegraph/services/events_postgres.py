"""Lead events across server processes through PostgreSQL ``LISTEN/NOTIFY``: no other infrastructure.

A write NOTIFYs its events inside its own transaction (``pipegraph.db.lead_events.write_events``), so
PostgreSQL delivers them when, and only if, it commits, in commit order. Each process holds one
dedicated asyncpg connection that ``LISTEN``s on the channel and hands what it hears to that process's
feeds. The connection is opened by the first subscriber and re-opened with backoff when it is lost;
once it listens again, every feed reads the log from its last position, so the events committed
while nobody listened still arrive, in order.

NOTIFY is scoped to one database, so two pipegraph databases on one server do not hear each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pipegraph.db.lead_events import LeadEvent, decode_event, take_events, write_events
from pipegraph.services.events import FEED_CAPACITY, FeedsOfThisProcess

logger = logging.getLogger("pipegraph.events")

CHANNEL = "pipegraph_lead_events"
# The listening connection is pinged this often, so a silently dropped TCP connection is noticed.
PING_INTERVAL_S = 10.0
PING_TIMEOUT_S = 5.0
# Short: events committed meanwhile wait in the log for the listener to come back.
RECONNECT_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0)


def asyncpg_dsn(engine: AsyncEngine) -> str:
    """The engine's URL as asyncpg expects it (no SQLAlchemy driver suffix)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBroker(FeedsOfThisProcess):
    """Writes events with NOTIFY on the store's engine; delivers what its LISTEN connection hears."""

    def __init__(self, engine: AsyncEngine, *, channel: str = CHANNEL, capacity: int = FEED_CAPACITY) -> None:
        super().__init__(capacity)
        self._dsn = asyncpg_dsn(engine)
        self._channel = channel
        self._listening = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def channel(self) -> str:
        return self._channel

    async def log(self, session: AsyncSession) -> list[LeadEvent]:
        return await write_events(session, take_events(session), notify_channel=self._channel)

    async def wait_live(self) -> None:
        """Start the listening connection if needed and wait until it listens."""
        if self._closed:
            raise RuntimeError("the event broker is closed")
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._listen_forever(), name="pipegraph-listen")
        await self._listening.wait()

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
        self._feeds.deliver([event])

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
                    # Whatever committed while nobody listened is in the log: every feed reads it.
                    self._feeds.all_fall_behind()
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
