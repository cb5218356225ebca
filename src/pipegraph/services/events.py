"""Lead events for subscribers: written to the log with the change, heard live once it commits.

Services record events on the session (``record_event``). The command runner hands the session to a
:class:`LeadEventBroker` before committing; the broker writes the events to the log
(``pipegraph.db.lead_events``), which gives each its position, and arranges for them to reach this
process's :class:`Feed`\\ s once the transaction commits: :class:`InProcessBroker` right after the
commit (one process, SQLite); ``events_postgres.PostgresBroker`` through ``NOTIFY`` sent inside the
transaction, so every process hears every committed event and none of a rolled-back one.

A feed never drops an event silently. When its reader falls too far behind, or the live source may
have missed events (PostgreSQL's listening connection was lost), the feed tells its reader to read
the log from the last position it saw (:mod:`pipegraph.services.lead_event_stream`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db import lead_events
from pipegraph.db.lead_events import LeadEvent, LeadEventKind, take_events, write_events
from pipegraph.db.models import Lead
from pipegraph.db.session import call_after_commit
from pipegraph.services.webhooks.events import record_lead_event

logger = logging.getLogger("pipegraph.events")
# Live events a feed holds for a reader that has not taken them yet; beyond this it reads the log.
FEED_CAPACITY = 1000


def record_event(session: AsyncSession, kind: LeadEventKind, lead: Lead, actor_id: int | None) -> None:
    """Record a lead event on the session: for subscribers (the lead event log) and for webhooks (the
    outbox); both are written with the transaction, if it commits."""
    lead_events.record_event(session, kind, lead, actor_id)
    record_lead_event(session, kind, lead, actor_id)


class Feed:
    """One subscriber's live events of one pipeline: a bounded queue that, rather than drop an event,
    tells its reader to catch up from the log."""

    def __init__(self, pipeline_id: int, capacity: int = FEED_CAPACITY) -> None:
        self.pipeline_id = pipeline_id
        self._capacity = capacity
        self._events: deque[LeadEvent] = deque()
        self._behind = False
        self._wakeup = asyncio.Event()

    def offer(self, event: LeadEvent) -> None:
        """Never blocks; a full feed falls behind instead of growing."""
        if self._behind:
            return
        if len(self._events) >= self._capacity:
            logger.warning(
                "a subscriber of pipeline %d is %d events behind; it reads the log until it catches up",
                self.pipeline_id,
                len(self._events) + 1,
            )
            self.fall_behind()
            return
        self._events.append(event)
        self._wakeup.set()

    def fall_behind(self) -> None:
        """Live events may be missing: the reader must read the log (what is queued is dropped, since
        the log has it too)."""
        self._behind = True
        self._events.clear()
        self._wakeup.set()

    async def take(self) -> list[LeadEvent] | None:
        """Every queued event (waiting for at least one), or None: read the log first. Taking the None
        resets the feed, so live events offered from then on are kept again."""
        while not self._events and not self._behind:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._behind:
            self._behind = False
            return None
        events = list(self._events)
        self._events.clear()
        return events

    @property
    def queued(self) -> int:
        return len(self._events)


class Feeds:
    """The open feeds of this process, by pipeline."""

    def __init__(self, capacity: int = FEED_CAPACITY) -> None:
        self._capacity = capacity
        self._by_pipeline: dict[int, set[Feed]] = {}

    def open(self, pipeline_id: int) -> Feed:
        feed = Feed(pipeline_id, self._capacity)
        self._by_pipeline.setdefault(pipeline_id, set()).add(feed)
        return feed

    def close(self, feed: Feed) -> None:
        feeds = self._by_pipeline.get(feed.pipeline_id, set())
        feeds.discard(feed)
        if not feeds:
            self._by_pipeline.pop(feed.pipeline_id, None)

    def deliver(self, events: Iterable[LeadEvent]) -> None:
        for event in events:
            for feed in self._by_pipeline.get(event.pipeline_id, ()):
                feed.offer(event)

    def all_fall_behind(self) -> None:
        for feeds in self._by_pipeline.values():
            for feed in feeds:
                feed.fall_behind()

    def count(self, pipeline_id: int) -> int:
        return len(self._by_pipeline.get(pipeline_id, ()))


class LeadEventBroker(Protocol):
    async def log(self, session: AsyncSession) -> list[LeadEvent]:
        """Write the session's recorded events to the log in its transaction (call it last, just before
        the commit) and have them delivered once it commits; the events with their positions."""

    def open_feed(self, pipeline_id: int) -> Feed:
        """A feed of the pipeline's events committed from now on; close it with :meth:`close_feed`."""

    def close_feed(self, feed: Feed) -> None: ...

    async def wait_live(self) -> None:
        """Return once events committed from now on will reach open feeds."""

    def subscriber_count(self, pipeline_id: int) -> int: ...

    async def close(self) -> None:
        """Release what the broker holds (connections, tasks); called once at shutdown."""


class FeedsOfThisProcess:
    """What both brokers do alike: hand out and count this process's feeds."""

    def __init__(self, capacity: int = FEED_CAPACITY) -> None:
        self._feeds = Feeds(capacity)

    def open_feed(self, pipeline_id: int) -> Feed:
        return self._feeds.open(pipeline_id)

    def close_feed(self, feed: Feed) -> None:
        self._feeds.close(feed)

    def subscriber_count(self, pipeline_id: int) -> int:
        return self._feeds.count(pipeline_id)


class InProcessBroker(FeedsOfThisProcess):
    """Delivery to feeds in this process (one server process on SQLite, or tests)."""

    async def log(self, session: AsyncSession) -> list[LeadEvent]:
        events = await write_events(session, take_events(session))
        if events:
            # Still inside the store's write lock: feeds hear transactions in commit order.
            call_after_commit(session, lambda: self._feeds.deliver(events))
        return events

    async def wait_live(self) -> None:
        """Always live: delivery needs nothing but this process."""

    async def close(self) -> None:
        """Nothing to release: subscriptions end when their connections close."""


__all__ = [
    "FEED_CAPACITY",
    "Feed",
    "Feeds",
    "FeedsOfThisProcess",
    "InProcessBroker",
    "LeadEvent",
    "LeadEventBroker",
    "LeadEventKind",
    "record_event",
]
