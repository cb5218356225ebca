"""The leads of delivered events, read once per process for every subscriber of a pipeline.

A ``leadEvents`` subscription that selects ``lead`` needs, for each event, the lead as it is once the
event has committed. Every subscriber of a pipeline receives the same events, so the first of this
process's subscribers to need an event's lead reads it (with the rest of its batch, in one statement)
and the others take that answer, also while the read is still under way. An answer is kept until every
subscriber sharing them has passed its event (:meth:`SnapshotReader.passed`), and for no more than
``capacity`` events of a pipeline: a subscriber further behind than that reads for itself. So the lead
delivered with an event was read after the event committed, at the event's version or a later one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

from pipegraph.db.lead_events import LeadEvent
from pipegraph.services.events import FEED_CAPACITY
from pipegraph.services.queries import LeadRow

# Reads the leads with these ids (those that still exist), in a session of its own.
ReadLeads = Callable[[set[int]], Awaitable[dict[int, LeadRow]]]


class _Pipeline:
    """One pipeline's answers, by event position, and the readers sharing them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # None: the event's lead no longer exists. Cancelled: the read failed; read it yourself.
        self.answers: dict[int, asyncio.Future[LeadRow | None]] = {}
        self.readers: set[SnapshotReader] = set()

    def release(self) -> None:
        """Forget the answers every reader has passed, and the oldest beyond the capacity."""
        floor = min((reader.position for reader in self.readers), default=None)
        while self.answers:
            oldest = next(iter(self.answers))
            if len(self.answers) <= self.capacity and floor is not None and oldest > floor:
                return
            del self.answers[oldest]


class SnapshotReader:
    """One subscription's access to its pipeline's shared answers."""

    def __init__(self, shared: _Pipeline) -> None:
        self._shared = shared
        # The position of the last event this subscription delivered (0: none yet).
        self.position = 0

    async def leads(self, events: Sequence[LeadEvent], read: ReadLeads) -> dict[int, LeadRow | None]:
        """Each event's lead by the event's position (None: the lead no longer exists)."""
        answers = self._shared.answers
        waiting = {event.position: answers.get(event.position) for event in events}
        unread = [event for event in events if waiting[event.position] is None]
        if unread:
            loop = asyncio.get_running_loop()
            for event in unread:
                waiting[event.position] = answers[event.position] = loop.create_future()
            self._shared.release()  # within the capacity
            await self._read(unread, waiting, read)
        pending = {future for future in waiting.values() if future is not None and not future.done()}
        if pending:
            # Not ``await future``: this subscription ending must not cancel another's read.
            await asyncio.wait(pending)
        failed = [event for event in events if _failed(waiting[event.position])]
        rows = await read({event.lead_id for event in failed}) if failed else {}
        found: dict[int, LeadRow | None] = {}
        for event in events:
            future = waiting[event.position]
            found[event.position] = rows.get(event.lead_id) if _failed(future) else _result(future)
        return found

    def passed(self, position: int) -> None:
        """This subscription has delivered every event up to ``position``."""
        self.position = max(self.position, position)
        self._shared.release()

    async def _read(
        self,
        events: list[LeadEvent],
        futures: dict[int, asyncio.Future[LeadRow | None] | None],
        read: ReadLeads,
    ) -> None:
        try:
            rows = await read({event.lead_id for event in events})
        except BaseException:
            for event in events:
                future = futures[event.position]
                if future is not None:
                    future.cancel()  # whoever waits for it reads for itself
                if self._shared.answers.get(event.position) is future:
                    del self._shared.answers[event.position]
            raise
        for event in events:
            future = futures[event.position]
            if future is not None:
                future.set_result(rows.get(event.lead_id))


def _failed(future: asyncio.Future[LeadRow | None] | None) -> bool:
    return future is None or future.cancelled()


def _result(future: asyncio.Future[LeadRow | None] | None) -> LeadRow | None:
    assert future is not None
    return future.result()


class LeadSnapshots:
    """This process's shared lead reads, per pipeline; one instance per application."""

    def __init__(self, capacity: int = FEED_CAPACITY) -> None:
        self._capacity = capacity
        self._pipelines: dict[int, _Pipeline] = {}

    @contextmanager
    def reader(self, pipeline_id: int) -> Iterator[SnapshotReader]:
        """A subscription's reader for as long as it delivers the pipeline's events."""
        shared = self._pipelines.setdefault(pipeline_id, _Pipeline(self._capacity))
        reader = SnapshotReader(shared)
        shared.readers.add(reader)
        try:
            yield reader
        finally:
            shared.readers.discard(reader)
            if shared.readers:
                shared.release()
            else:
                del self._pipelines[pipeline_id]

    def held(self, pipeline_id: int) -> int:
        """How many events' answers are kept for the pipeline (for tests)."""
        shared = self._pipelines.get(pipeline_id)
        return len(shared.answers) if shared is not None else 0
