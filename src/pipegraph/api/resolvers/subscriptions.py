"""``leadEvents``: changes to a pipeline's leads as they commit (graphql-transport-ws)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime

import strawberry

from pipegraph.api import ids, types
from pipegraph.api.context import Info
from pipegraph.api.enums import LeadEventKind
from pipegraph.errors import NotFoundError
from pipegraph.services import queries


@strawberry.type
class LeadEvent:
    kind: LeadEventKind
    lead_id: strawberry.ID
    version: int = strawberry.field(description="The lead's version right after this change.")
    occurred_at: datetime
    lead: types.Lead | None = strawberry.field(
        description="The lead as it is now (it may have changed since)."
    )


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def lead_events(self, info: Info, pipeline_id: strawberry.ID) -> AsyncGenerator[LeadEvent, None]:
        context = info.context
        context.require_viewer()
        pk = ids.decode_as(pipeline_id, "Pipeline", field="pipeline_id")
        async with context.store.read() as session:
            if not await queries.pipelines_by_ids(session, [pk]):
                raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipeline_id")
        async with aclosing(context.broker.subscribe(pk)) as events:
            async for event in events:
                # Read fresh, not through the connection-long loaders, whose caches would go stale.
                async with context.store.read() as session:
                    lead = (await queries.leads_by_ids(session, [event.lead_id])).get(event.lead_id)
                yield LeadEvent(
                    kind=LeadEventKind(event.kind.value),
                    lead_id=strawberry.ID(ids.encode("Lead", event.lead_id)),
                    version=event.version,
                    occurred_at=event.occurred_at,
                    lead=types.Lead.from_row(lead) if lead is not None else None,
                )
