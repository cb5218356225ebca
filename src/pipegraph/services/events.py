"""Lead events for subscriptions, published only after the write transaction commits.

Services record events on the session (:func:`record_event`); whoever commits the transaction takes
them with :func:`take_events` and hands them to a :class:`LeadEventBroker`. The broker is a protocol:
:class:`InProcessBroker` serves one process (SQLite), ``events_postgres.PostgresBroker`` carries events
between server processes through ``LISTEN/NOTIFY``; services and resolvers do not know which one runs.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead
from pipegraph.db.types import utcnow

_SESSION_KEY = "pipegraph_lead_events"
# Per subscriber: a consumer this far behind loses its oldest events rather than growing memory.
SUBSCRIBER_BUFFER = 1000


class LeadEventKind(enum.StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    MOVED = "MOVED"
    CLOSED = "CLOSED"
    REOPENED = "REOPENED"


@dataclass(frozen=True, slots=True)
class LeadEvent:
    kind: LeadEventKind
    lead_id: int
    pipeline_id: int
    version: int
    occurred_at: datetime
    actor_id: int | None


def record_event(session: AsyncSession, kind: LeadEventKind, lead: Lead, actor_id: int | None) -> None:
    event = LeadEvent(kind, lead.id, lead.pipeline_id, lead.version, utcnow(), actor_id)
    session.info.setdefault(_SESSION_KEY, []).append(event)


def take_events(session: AsyncSession) -> list[LeadEvent]:
    events: list[LeadEvent] = session.info.pop(_SESSION_KEY, [])
    return events


class LeadEventBroker(Protocol):
    async def publish(self, events: Sequence[LeadEvent]) -> None:
        """Deliver committed events to current subscribers of their pipelines."""

    def subscribe(self, pipeline_id: int) -> AsyncGenerator[LeadEvent, None]:
        """Events of one pipeline from now on; closing the iterator ends the subscription."""

    async def close(self) -> None:
        """Release what the broker holds (connections, tasks); called once at shutdown."""


class InProcessBroker:
    """Fan-out to subscribers in this process (one server process, or tests)."""

    def __init__(self, buffer: int = SUBSCRIBER_BUFFER) -> None:
        self._buffer = buffer
        self._subscribers: dict[int, set[asyncio.Queue[LeadEvent]]] = {}

    async def publish(self, events: Sequence[LeadEvent]) -> None:
        self.publish_nowait(events)

    def publish_nowait(self, events: Sequence[LeadEvent]) -> None:
        """Never blocks: a full queue drops its oldest event."""
        for event in events:
            for queue in self._subscribers.get(event.pipeline_id, ()):
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(event)

    async def subscribe(self, pipeline_id: int) -> AsyncGenerator[LeadEvent, None]:
        queue = self.add_queue(pipeline_id)
        try:
            while True:
                yield await queue.get()
        finally:
            self.remove_queue(pipeline_id, queue)

    def add_queue(self, pipeline_id: int) -> asyncio.Queue[LeadEvent]:
        """A queue that receives the pipeline's events from now on, until :meth:`remove_queue`."""
        queue: asyncio.Queue[LeadEvent] = asyncio.Queue(self._buffer)
        self._subscribers.setdefault(pipeline_id, set()).add(queue)
        return queue

    def remove_queue(self, pipeline_id: int, queue: asyncio.Queue[LeadEvent]) -> None:
        subscribers = self._subscribers.get(pipeline_id, set())
        subscribers.discard(queue)
        if not subscribers:
            self._subscribers.pop(pipeline_id, None)

    def subscriber_count(self, pipeline_id: int) -> int:
        return len(self._subscribers.get(pipeline_id, ()))

    async def close(self) -> None:
        """Nothing to release: subscriptions end when their connections close."""
