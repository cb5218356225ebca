"""A pipeline's lead events for one subscriber: every committed event, once, in commit order.

The stream opens its live feed first and only then reads where it starts, so nothing commits in
between unseen. It serves live events while the feed keeps up; when the feed falls behind (a slow
reader, a lost listening connection) it reads the log from the last position it delivered, a page at
a time, and then serves live events again, skipping those the log already gave. Memory stays bounded
by the feed's capacity and one page, however far behind a reader is.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db import lead_events
from pipegraph.db.lead_events import LeadEvent
from pipegraph.db.session import Store
from pipegraph.errors import StreamBrokenError
from pipegraph.services.events import LeadEventBroker

# Events read from the log at a time while catching up.
CATCH_UP_PAGE = 500
# A read that fails is tried again after these pauses (a connection lost with a database restart)
# before the stream gives up and names the position to resume from.
RETRY_DELAYS_S = (0.1, 0.3, 1.0, 2.0)
T = TypeVar("T")


async def read_retrying(store: Store, read: Callable[[AsyncSession], Awaitable[T]], *, position: int) -> T:
    """``read`` in a session of its own, tried again on database errors; then ``StreamBrokenError``."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            async with store.read() as session:
                return await read(session)
        except (SQLAlchemyError, OSError) as error:
            if delay is None:
                raise StreamBrokenError(position, "the database could not be read") from error
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def lead_event_batches(
    store: Store, broker: LeadEventBroker, *, pipeline_id: int, after: int | None
) -> AsyncGenerator[list[LeadEvent], None]:
    """Batches of the pipeline's events after position ``after`` (None: from now on), oldest first."""
    feed = broker.open_feed(pipeline_id)
    try:
        await broker.wait_live()
        if after is None:
            async with store.read() as session:
                position = await lead_events.latest_position(session, pipeline_id=pipeline_id)
        else:
            position = after
            feed.fall_behind()
        while True:
            batch = await feed.take()
            if batch is None:
                read_page = functools.partial(
                    lead_events.events_after, pipeline_id=pipeline_id, after=position, limit=CATCH_UP_PAGE
                )
                batch = await read_retrying(store, read_page, position=position)
                if len(batch) == CATCH_UP_PAGE:
                    feed.fall_behind()  # more in the log than one page
            fresh = [event for event in batch if event.position > position]
            if fresh:
                position = fresh[-1].position
                yield fresh
    finally:
        broker.close_feed(feed)
