"""``leadEvents``: changes to a pipeline's leads as they commit (graphql-transport-ws).

Every event carries its ``position``. A client whose subscription ends for any reason (the server
restarts and closes the socket with 1012, the network drops, an error with code ``RESUME_FROM``)
subscribes again with ``after:`` the last position it received and gets every event since, in order,
none twice.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime

import strawberry
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from pipegraph.api import ids, types
from pipegraph.api.context import Info
from pipegraph.api.enums import LeadEventKind
from pipegraph.db.session import Store
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services import queries
from pipegraph.services.lead_event_stream import lead_event_batches, read_retrying


@strawberry.type
class LeadEvent:
    kind: LeadEventKind
    lead_id: strawberry.ID
    version: int = strawberry.field(description="The lead's version right after this change.")
    occurred_at: datetime
    position: str = strawberry.field(
        description="This event's place in the pipeline's stream; pass it as leadEvents(after:) to "
        "continue from here."
    )
    lead: types.Lead | None = strawberry.field(
        description="The lead as read once this change had committed: at this event's version or a "
        "later one (it may have changed since)."
    )


def _selects(selections: list[Selection], name: str) -> bool:
    """Whether ``name`` is selected here, directly or through a fragment."""
    for selection in selections:
        if isinstance(selection, SelectedField) and selection.name == name:
            return True
        if isinstance(selection, InlineFragment | FragmentSpread) and _selects(selection.selections, name):
            return True
    return False


async def _read_leads(store: Store, lead_ids: set[int], *, position: int) -> dict[int, queries.LeadRow]:
    return await read_retrying(
        store, lambda session: queries.leads_by_ids(session, list(lead_ids)), position=position
    )


def _position(after: str | None) -> int | None:
    if after is None:
        return None
    if not after.isascii() or not after.isdigit() or len(after) > 19:
        raise ValidationError("after must be a position received with an event", field="after")
    return int(after)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The pipeline's lead changes as they commit, in commit order. With after: the "
        "changes since that position first (none lost, none twice), then live ones."
    )
    async def lead_events(
        self, info: Info, pipeline_id: strawberry.ID, after: str | None = None
    ) -> AsyncGenerator[LeadEvent, None]:
        context = info.context
        context.require_viewer()
        pk = ids.decode_as(pipeline_id, "Pipeline", field="pipeline_id")
        start = _position(after)
        async with context.store.read() as session:
            if not await queries.pipelines_by_ids(session, [pk]):
                raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipeline_id")
        # Reading the leads is most of an event's cost: only for subscriptions that ask for them.
        wants_lead = _selects(info.selected_fields[0].selections, "lead")
        batches = lead_event_batches(context.store, context.broker, pipeline_id=pk, after=start)
        delivered = start
        with context.lead_snapshots.reader(pk) as snapshots:
            async with aclosing(batches):
                async for batch in batches:
                    # Read fresh (not through the connection-long loaders, whose caches would go
                    # stale), once per batch for all of this process's subscribers of the pipeline.
                    leads: dict[int, queries.LeadRow | None] = {}
                    if wants_lead:
                        resume_at = batch[0].position - 1 if delivered is None else delivered
                        read = functools.partial(_read_leads, context.store, position=resume_at)
                        leads = await snapshots.leads(batch, read)
                    for event in batch:
                        lead = leads.get(event.position)
                        yield LeadEvent(
                            kind=LeadEventKind(event.kind.value),
                            lead_id=strawberry.ID(ids.encode("Lead", event.lead_id)),
                            version=event.version,
                            occurred_at=event.occurred_at,
                            position=str(event.position),
                            lead=types.Lead.from_row(lead) if lead is not None else None,
                        )
                        delivered = event.position
                    snapshots.passed(batch[-1].position)
