"""A pipeline's lead events for one subscriber: every committed event, once, in commit order.

The stream opens its live feed first and only then reads where it starts, so nothing commits in
between unseen. It serves live events while the feed keeps up; when the feed falls behind (a slow
reader, a lost listening connection) it reads the log from the last position it delivered, a page at
a time, and then serves live events again, skipping those the log already gave. Memory stays bounded
by the feed's capacity and one page, however far behind a reader is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipegraph.db import lead_events
from pipegraph.db.lead_events import LeadEvent
from pipegraph.db.session import Store
from pipegraph.errors import StreamBrokenError
from pipegraph.services.events import LeadEventBroker

# Events read from the log at a time while catching up.
CATCH_UP_PAGE = 500


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
                try:
                    async with store.read() as session:
                        batch = await lead_events.events_after(
                            session, pipeline_id=pipeline_id, after=position, limit=CATCH_UP_PAGE
                        )
                except Exception as error:
                    raise StreamBrokenError(position, "the log could not be read") from error
                if len(batch) == CATCH_UP_PAGE:
                    feed.fall_behind()  # more in the log than one page
            fresh = [event for event in batch if event.position > position]
            if fresh:
                position = fresh[-1].position
                yield fresh
    finally:
        broker.close_feed(feed)
