"""Webhook endpoints (ADMIN): add, change, remove, ping; the delivery log; redelivery.

The secret is generated here and returned once by :func:`create_endpoint`; nothing reads it back out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db import webhook_outbox
from pipegraph.db.models import (
    Role,
    User,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEvent,
)
from pipegraph.db.types import utcnow
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.global_ids import encode
from pipegraph.services.permissions import require_role
from pipegraph.services.validation import clean_text
from pipegraph.services.webhooks import addresses, signing
from pipegraph.services.webhooks.events import PING, WebhookEventType

MAX_LOG = 200


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    # The signing secret, given to the caller this once.
    secret: str


def event_types(endpoint: WebhookEndpoint) -> list[WebhookEventType]:
    return [WebhookEventType(name) for name in sorted(webhook_outbox.endpoint_events(endpoint.events))]


def _events(types: Sequence[WebhookEventType | str] | None, field: str) -> str:
    if types is None:
        return ",".join(t.value for t in WebhookEventType)
    chosen: set[str] = set()
    for i, raw in enumerate(types):
        try:
            chosen.add(WebhookEventType(raw).value)
        except ValueError:
            known = ", ".join(t.value for t in WebhookEventType)
            raise ValidationError(
                f"unknown event type {raw!r}; choose from {known}", field=f"{field}[{i}]"
            ) from None
    if not chosen:
        raise ValidationError("choose at least one event type", field=field)
    return ",".join(sorted(chosen))


async def _checked_url(url: str, allow_private: bool) -> str:
    url = addresses.check_url_shape(url, field="url")
    await addresses.check_address(url, allow_private=allow_private, field="url")
    return url


async def get_endpoint(session: AsyncSession, endpoint_id: int, *, field: str = "id") -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id, populate_existing=True)
    if endpoint is None:
        raise NotFoundError(f"no webhook endpoint with id {endpoint_id}", field=field)
    return endpoint


async def create_endpoint(
    session: AsyncSession,
    *,
    url: str,
    events: Sequence[WebhookEventType | str] | None = None,
    description: str = "",
    allow_private: bool,
    actor: User | None,
) -> CreatedEndpoint:
    """A new, enabled endpoint wanting ``events`` (all types if None), with a fresh secret."""
    require_role(actor, Role.ADMIN, "managing webhooks")
    now = utcnow()
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        url=await _checked_url(url, allow_private),
        events=_events(events, "events"),
        description=clean_text(description, field="description", max_length=300),
        secret=secret,
        enabled=True,
        disabled_reason="",
        created_by=actor.id if actor is not None else None,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    await session.flush()
    return CreatedEndpoint(endpoint, secret)


async def update_endpoint(
    session: AsyncSession,
    *,
    endpoint_id: int,
    url: str | None = None,
    events: Sequence[WebhookEventType | str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    allow_private: bool,
    actor: User | None,
) -> WebhookEndpoint:
    """Change what is given; enabling clears the reason it was disabled (pending deliveries resume)."""
    require_role(actor, Role.ADMIN, "managing webhooks")
    endpoint = await get_endpoint(session, endpoint_id, field="endpoint_id")
    if url is not None:
        endpoint.url = await _checked_url(url, allow_private)
    if events is not None:
        endpoint.events = _events(events, "events")
    if description is not None:
        endpoint.description = clean_text(description, field="description", max_length=300)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        who = f"user {actor.id}" if actor is not None else "the command line"
        endpoint.disabled_reason = "" if enabled else f"disabled by {who} at {utcnow().isoformat()}"
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, *, endpoint_id: int, actor: User | None) -> None:
    """Remove the endpoint and its delivery log (pending deliveries are dropped with it)."""
    require_role(actor, Role.ADMIN, "managing webhooks")
    endpoint = await get_endpoint(session, endpoint_id, field="endpoint_id")
    await session.delete(endpoint)
    await session.flush()


async def list_endpoints(session: AsyncSession, *, actor: User | None) -> list[WebhookEndpoint]:
    require_role(actor, Role.ADMIN, "reading webhooks")
    return list((await session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))).all())


async def deliveries(
    session: AsyncSession, *, endpoint_id: int, limit: int = 50, status: str | None = None
) -> list[tuple[WebhookDelivery, str]]:
    """The endpoint's deliveries with their event types, newest first (at most ``MAX_LOG``)."""
    if not 1 <= limit <= MAX_LOG:
        raise ValidationError(f"between 1 and {MAX_LOG}", field="first")
    statement = (
        select(WebhookDelivery, WebhookEvent.type)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
    )
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    statement = statement.order_by(WebhookDelivery.id.desc()).limit(limit)
    return [(delivery, event_type) for delivery, event_type in await session.execute(statement)]


async def delivery_counts(session: AsyncSession, *, endpoint_id: int) -> dict[str, int]:
    rows = await session.execute(
        select(WebhookDelivery.status, func.count())
        .where(WebhookDelivery.endpoint_id == endpoint_id)
        .group_by(WebhookDelivery.status)
    )
    counts = {status.value: 0 for status in WebhookDeliveryStatus}
    counts.update({str(status): int(n) for status, n in rows})
    return counts


async def redeliver(session: AsyncSession, *, delivery_id: int, actor: User | None) -> WebhookDelivery:
    """Send a delivery again (same ``webhook-id``), now; a FAILED one gets a fresh set of attempts."""
    require_role(actor, Role.ADMIN, "managing webhooks")
    delivery = await session.get(WebhookDelivery, delivery_id, populate_existing=True, with_for_update=True)
    if delivery is None:
        raise NotFoundError(f"no webhook delivery with id {delivery_id}", field="id")
    if delivery.status == WebhookDeliveryStatus.PENDING.value and delivery.claimed_by is not None:
        raise ValidationError("the delivery is being sent right now; look again in a moment", field="id")
    delivery.status = WebhookDeliveryStatus.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    await session.flush()
    return delivery


async def ping(session: AsyncSession, *, endpoint_id: int, actor: User | None) -> None:
    """Queue a ``webhook.ping`` to this endpoint alone (sent even if it wants no other event)."""
    require_role(actor, Role.ADMIN, "managing webhooks")
    endpoint = await get_endpoint(session, endpoint_id, field="endpoint_id")
    if not endpoint.enabled:
        raise ValidationError("the endpoint is disabled; enable it first", field="endpoint_id")
    data = {"endpointId": encode("WebhookEndpoint", endpoint.id), "sentAt": utcnow().isoformat()}
    webhook_outbox.record(session, PING, data, endpoint_id=endpoint.id)
