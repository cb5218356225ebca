"""A subscriber's stream of lead events, on each backend: every committed event once, in commit order,
whether it keeps up, falls behind or resumes from a position; nothing of a rolled-back write."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import pytest

from pipegraph.db.lead_events import LeadEvent, events_after
from pipegraph.db.session import Store
from pipegraph.errors import ValidationError
from pipegraph.services import leads, pipelines
from pipegraph.services.events import InProcessBroker, LeadEventBroker
from pipegraph.services.events_postgres import PostgresBroker
from pipegraph.services.lead_event_stream import CATCH_UP_PAGE, lead_event_batches

CAPACITY = 8  # small, so that a reader falls behind after a few events


@pytest.fixture
async def broker(store: Store) -> AsyncIterator[LeadEventBroker]:
    made: InProcessBroker | PostgresBroker = (
        InProcessBroker(CAPACITY) if store.is_sqlite else PostgresBroker(store.engine, capacity=CAPACITY)
    )
    try:
        yield made
    finally:
        await made.close()


async def _pipeline(store: Store, name: str = "Sales") -> int:
    async with store.write() as session:
        pipeline = await pipelines.create_pipeline(session, name=name, template="CLASSIC", actor=None)
        return pipeline.id


async def _create(store: Store, broker: LeadEventBroker, pipeline_id: int, title: str) -> LeadEvent:
    async with store.write() as session:
        await leads.create_lead(session, pipeline_id=pipeline_id, title=title, actor=None)
        (event,) = await broker.log(session)
    return event


async def _retitle(store: Store, broker: LeadEventBroker, lead_id: int, title: str) -> LeadEvent:
    async with store.write() as session:
        await leads.update_lead(session, lead_id=lead_id, title=title, actor=None)
        (event,) = await broker.log(session)
    return event


async def _collect(stream: AsyncGenerator[list[LeadEvent], None], count: int) -> list[LeadEvent]:
    received: list[LeadEvent] = []
    while len(received) < count:
        received.extend(await asyncio.wait_for(anext(stream), timeout=10))
    return received


async def _started(
    store: Store, broker: LeadEventBroker, pipeline_id: int, after: int | None = None
) -> AsyncGenerator[list[LeadEvent], None]:
    """A stream that has opened its feed and read its start (the first batch is then waited for)."""
    stream = lead_event_batches(store, broker, pipeline_id=pipeline_id, after=after)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    await broker.wait_live()
    for _ in range(20):  # let it read its starting position
        await asyncio.sleep(0.01)

    async def chain() -> AsyncGenerator[list[LeadEvent], None]:
        async with aclosing(stream):
            yield await asyncio.wait_for(first, timeout=10)
            async for batch in stream:
                yield batch

    return chain()


async def test_live_events_arrive_in_commit_order_and_only_the_pipelines_own(
    store: Store, broker: LeadEventBroker
) -> None:
    sales, other = await _pipeline(store), await _pipeline(store, "Other")
    stream = await _started(store, broker, sales)
    lead = await _create(store, broker, sales, "Deal")
    await _create(store, broker, other, "Elsewhere")
    written = [lead] + [await _retitle(store, broker, lead.lead_id, f"Deal {n}") for n in range(3)]
    async with aclosing(stream):
        received = await _collect(stream, 4)
    assert received == written
    assert [e.version for e in received] == [1, 2, 3, 4]
    assert broker.subscriber_count(sales) == 0


async def test_a_reader_that_falls_behind_catches_up_from_the_log(
    store: Store, broker: LeadEventBroker
) -> None:
    sales = await _pipeline(store)
    stream = await _started(store, broker, sales)
    first = await _create(store, broker, sales, "Deal")
    # Far more than the feed holds and more than a page of the log, while nobody reads.
    written = [first] + [
        await _retitle(store, broker, first.lead_id, f"Deal {n}") for n in range(CATCH_UP_PAGE + CAPACITY * 3)
    ]
    async with aclosing(stream):
        received = await _collect(stream, len(written))
        # Live again once caught up.
        written.append(await _retitle(store, broker, first.lead_id, "Last"))
        received += await _collect(stream, 1)
    assert [e.position for e in received] == [e.position for e in written]
    assert received == written


async def test_a_stream_resumes_after_a_position_without_gap_or_repeat(
    store: Store, broker: LeadEventBroker
) -> None:
    sales = await _pipeline(store)
    first = await _create(store, broker, sales, "Deal")
    written = [first] + [await _retitle(store, broker, first.lead_id, f"Deal {n}") for n in range(5)]
    stream = await _started(store, broker, sales, after=written[2].position)
    later = await _retitle(store, broker, first.lead_id, "Later")
    async with aclosing(stream):
        received = await _collect(stream, 4)
    assert received == [*written[3:], later]


async def test_a_rolled_back_write_is_never_heard(store: Store, broker: LeadEventBroker) -> None:
    sales = await _pipeline(store)
    stream = await _started(store, broker, sales)
    first = await _create(store, broker, sales, "Deal")

    async def abandoned() -> None:
        async with store.write() as session:
            await leads.update_lead(session, lead_id=first.lead_id, title="Changed", actor=None)
            await broker.log(session)
            raise ValidationError("changed our mind")

    with pytest.raises(ValidationError):
        await abandoned()
    kept = await _retitle(store, broker, first.lead_id, "Kept")
    async with aclosing(stream):
        received = await _collect(stream, 2)
    assert received == [first, kept]
    assert kept.version == 2
    async with store.read() as session:
        assert await events_after(session, pipeline_id=sales, after=0, limit=10) == [first, kept]


async def test_concurrent_writers_reach_a_subscriber_in_commit_order(
    store: Store, broker: LeadEventBroker
) -> None:
    sales = await _pipeline(store)
    stream = await _started(store, broker, sales)
    created = [await _create(store, broker, sales, f"Deal {n}") for n in range(6)]
    rng = random.Random(19)

    async def writer(lead_id: int) -> None:
        for n in range(15):
            async with store.write() as session:
                await leads.update_lead(session, lead_id=lead_id, title=f"Take {n}", actor=None)
                await asyncio.sleep(rng.random() / 200)  # interleave the transactions
                await broker.log(session)
                await asyncio.sleep(rng.random() / 200)  # commit later than the events got their ids

    await asyncio.gather(*(writer(event.lead_id) for event in created))
    async with aclosing(stream):
        received = await _collect(stream, 6 + 6 * 15)
    async with store.read() as session:
        logged = await events_after(session, pipeline_id=sales, after=0, limit=1000)
    assert received == logged
    positions = [e.position for e in received]
    assert positions == sorted(set(positions))
    for event in created:
        versions = [e.version for e in received if e.lead_id == event.lead_id]
        assert versions == list(range(1, 17))
