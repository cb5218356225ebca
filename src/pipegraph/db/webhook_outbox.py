"""The webhook outbox: events written in the same transaction as the change they report.

Services record an event on the session (:func:`record`); ``Store.write`` calls :func:`write_outbox`
just before it commits, which writes each event once and one delivery per enabled endpoint that
wants its type. A committed change therefore always has its deliveries, and a rolled-back one never
has any. With no endpoint wanting an event, nothing is written (the write costs one small read).

Per lead, events get ids in commit order: a change to a lead holds the lead's row lock (PostgreSQL;
SQLite has one writer) until it commits, and its outbox rows are written just before that.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from pipegraph.db.types import utcnow

_SESSION_KEY = "pipegraph_webhook_events"


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxEvent:
    type: str
    data: dict[str, Any]
    lead_id: int | None = None
    # Only this endpoint, whatever types it wants (a test ping).
    endpoint_id: int | None = None


def record(
    session: AsyncSession,
    event_type: str,
    data: dict[str, Any],
    *,
    lead_id: int | None = None,
    endpoint_id: int | None = None,
) -> None:
    """Queue an event on the session; it is written with the transaction, if that commits."""
    session.info.setdefault(_SESSION_KEY, []).append(OutboxEvent(event_type, data, lead_id, endpoint_id))


def endpoint_events(raw: str) -> frozenset[str]:
    return frozenset(name for name in raw.split(",") if name)


def body(event_type: str, data: dict[str, Any], timestamp: str) -> str:
    """The JSON body a receiver gets (the Standard Webhooks shape: type, timestamp, data)."""
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":"))


async def write_outbox(session: AsyncSession) -> int:
    """Write the session's recorded events and their deliveries; how many deliveries were written."""
    events: list[OutboxEvent] = session.info.pop(_SESSION_KEY, [])
    if not events:
        return 0
    rows = await session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events).where(WebhookEndpoint.enabled.is_(True))
    )
    wanted = {endpoint_id: endpoint_events(types) for endpoint_id, types in rows}
    targets = [
        [e.endpoint_id] if e.endpoint_id is not None else [i for i, t in wanted.items() if e.type in t]
        for e in events
    ]
    kept = [(event, to) for event, to in zip(events, targets, strict=True) if to]
    if not kept:
        return 0
    now = utcnow()
    stamp = now.isoformat().replace("+00:00", "Z")
    statement = insert(WebhookEvent).returning(WebhookEvent.id, sort_by_parameter_order=True)
    event_rows = [
        {"type": e.type, "lead_id": e.lead_id, "payload": body(e.type, e.data, stamp), "created_at": now}
        for e, _ in kept
    ]
    event_ids = list((await session.execute(statement, event_rows)).scalars())
    deliveries = [
        {
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "lead_id": event.lead_id,
            "status": "PENDING",
            "attempts": 0,
            "next_attempt_at": now,
            "response_excerpt": "",
            "last_error": "",
            "created_at": now,
        }
        for event_id, (event, to) in zip(event_ids, kept, strict=True)
        for endpoint_id in to
    ]
    await session.execute(insert(WebhookDelivery), deliveries)
    return len(deliveries)
