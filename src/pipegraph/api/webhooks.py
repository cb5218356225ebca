"""GraphQL view of webhooks (ADMIN only): endpoints, their delivery log, redelivery and a test ping.

The services (``pipegraph.services.webhooks``) check the role; this module maps ids and rows.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.api import ids
from pipegraph.api.context import Info
from pipegraph.api.errors import UserError
from pipegraph.api.resolvers.common import run_command
from pipegraph.db import models
from pipegraph.services.webhooks import endpoints, events, signing
from pipegraph.services.webhooks.endpoints import MAX_LOG


@strawberry.enum(description="What a webhook reports; docs/webhooks.md shows each one's payload.")
class WebhookEventType(enum.Enum):
    LEAD_CREATED = strawberry.enum_value("lead.created", description="A lead was created.")
    LEAD_UPDATED = strawberry.enum_value("lead.updated", description="A lead's details changed.")
    LEAD_MOVED = strawberry.enum_value("lead.moved", description="A lead moved to another stage.")
    LEAD_WON = strawberry.enum_value("lead.won", description="A lead was closed as won.")
    LEAD_LOST = strawberry.enum_value("lead.lost", description="A lead was closed as lost.")
    LEAD_REOPENED = strawberry.enum_value("lead.reopened", description="A closed lead was reopened.")
    ACTIVITY_LOGGED = strawberry.enum_value(
        "activity.logged", description="An activity was logged on a lead."
    )
    IMPORT_FINISHED = strawberry.enum_value("import.finished", description="A CSV import was committed.")
    SIMULATION_JOB_FINISHED = strawberry.enum_value(
        "simulation_job.finished", description="A simulation job ended (succeeded, failed or cancelled)."
    )


@strawberry.enum(description="Where a delivery stands.")
class WebhookDeliveryStatus(enum.Enum):
    PENDING = strawberry.enum_value(
        "PENDING", description="Not yet accepted; being sent or waiting to retry."
    )
    DELIVERED = strawberry.enum_value("DELIVERED", description="The receiver answered 2xx.")
    FAILED = strawberry.enum_value(
        "FAILED",
        description="Every attempt failed; the endpoint was disabled. redeliverWebhook sends it again.",
    )


@strawberry.type(description="One event sent (or to be sent) to one endpoint, and how its last attempt went.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="The delivery's ID, for redeliverWebhook.")
    message_id: str = strawberry.field(
        description="The webhook-id header: the same on every attempt, for receivers to de-duplicate on."
    )
    event_type: str = strawberry.field(description="The payload's type, e.g. lead.moved or webhook.ping.")
    status: WebhookDeliveryStatus = strawberry.field(description="Pending, delivered or failed.")
    attempts: int = strawberry.field(description="Attempts made so far.")
    response_code: int | None = strawberry.field(
        description="The HTTP status of the last attempt; null if no answer came."
    )
    latency_ms: int | None = strawberry.field(description="Milliseconds the last attempt took.")
    response_excerpt: str = strawberry.field(
        description="The first characters of the last answer's body (nothing more is stored)."
    )
    last_error: str = strawberry.field(description="Why the last attempt failed; empty if it did not.")
    next_attempt_at: datetime = strawberry.field(description="When a pending delivery is next due.")
    created_at: datetime = strawberry.field(description="When the change it reports was committed.")
    delivered_at: datetime | None = strawberry.field(description="When the receiver accepted it.")

    @classmethod
    def from_model(cls, delivery: models.WebhookDelivery, event_type: str) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(ids.encode("WebhookDelivery", delivery.id)),
            message_id=signing.message_id(delivery.event_id),
            event_type=event_type,
            status=WebhookDeliveryStatus[delivery.status],
            attempts=delivery.attempts,
            response_code=delivery.response_code,
            latency_ms=delivery.latency_ms,
            response_excerpt=delivery.response_excerpt,
            last_error=delivery.last_error,
            next_attempt_at=delivery.next_attempt_at,
            created_at=delivery.created_at,
            delivered_at=delivery.delivered_at,
        )


@strawberry.type(description="A receiver of webhooks, managed by admins.")
class WebhookEndpoint:
    pk: strawberry.Private[int]
    id: strawberry.ID = strawberry.field(description="The endpoint's ID.")
    url: str = strawberry.field(description="Where deliveries are POSTed.")
    description: str = strawberry.field(description="A note for people: what receives these.")
    events: list[WebhookEventType] = strawberry.field(description="The event types sent to this endpoint.")
    enabled: bool = strawberry.field(description="Whether deliveries are sent (pending ones wait while off).")
    disabled_reason: str = strawberry.field(
        description="Why it is disabled: by whom, or the failures that made delivery give up."
    )
    created_at: datetime = strawberry.field(description="When the endpoint was added.")
    updated_at: datetime = strawberry.field(description="When it last changed.")

    @classmethod
    def from_model(cls, endpoint: models.WebhookEndpoint) -> WebhookEndpoint:
        return cls(
            pk=endpoint.id,
            id=strawberry.ID(ids.encode("WebhookEndpoint", endpoint.id)),
            url=endpoint.url,
            description=endpoint.description,
            events=[WebhookEventType[t.name] for t in endpoints.event_types(endpoint)],
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )

    @strawberry.field(description="The delivery log, newest first.")
    async def deliveries(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=f"How many, 1 to {MAX_LOG}.")] = 20,
        status: Annotated[
            WebhookDeliveryStatus | None, strawberry.argument(description="Only deliveries in this state.")
        ] = None,
    ) -> list[WebhookDelivery]:
        async with info.context.store.read() as session:
            rows = await endpoints.deliveries(
                session, endpoint_id=self.pk, limit=first, status=None if status is None else status.name
            )
        return [WebhookDelivery.from_model(delivery, event_type) for delivery, event_type in rows]

    @strawberry.field(description="How many deliveries are pending, delivered and failed.")
    async def delivery_counts(self, info: Info) -> WebhookDeliveryCounts:
        async with info.context.store.read() as session:
            counts = await endpoints.delivery_counts(session, endpoint_id=self.pk)
        return WebhookDeliveryCounts(
            pending=counts["PENDING"], delivered=counts["DELIVERED"], failed=counts["FAILED"]
        )


@strawberry.type(description="An endpoint's deliveries by state.")
class WebhookDeliveryCounts:
    pending: int = strawberry.field(description="Not yet accepted.")
    delivered: int = strawberry.field(description="Accepted by the receiver.")
    failed: int = strawberry.field(description="Given up after every attempt failed.")


@strawberry.input(description="A new webhook endpoint.")
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="An http(s) URL on a public address (private ones need PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE)."
    )
    events: list[WebhookEventType] | None = strawberry.field(
        default=None, description="The event types wanted; null for all."
    )
    description: str = strawberry.field(default="", description="A note for people, up to 300 characters.")


@strawberry.input(description="Changes to a webhook endpoint; null leaves a field as it is.")
class UpdateWebhookEndpointInput:
    endpoint_id: strawberry.ID = strawberry.field(description="The endpoint to change.")
    url: str | None = strawberry.field(default=None, description="A new URL (checked like a new endpoint's).")
    events: list[WebhookEventType] | None = strawberry.field(
        default=None, description="The event types wanted."
    )
    description: str | None = strawberry.field(default=None, description="A new note.")
    enabled: bool | None = strawberry.field(
        default=None, description="Turn delivery on or off; turning it on resumes pending deliveries."
    )


@strawberry.type(description="The endpoint created, and its signing secret, shown this once.")
class CreateWebhookEndpointPayload:
    endpoint: WebhookEndpoint | None = strawberry.field(default=None, description="The new endpoint.")
    secret: str | None = strawberry.field(
        default=None,
        description="The whsec_ secret signing every delivery (Standard Webhooks); never shown again.",
    )
    user_errors: list[UserError] = strawberry.field(description="Why nothing was created, if so.")


@strawberry.type(description="The endpoint after the change.")
class WebhookEndpointPayload:
    endpoint: WebhookEndpoint | None = strawberry.field(default=None, description="The endpoint.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing changed, if so.")


@strawberry.type(description="The endpoint removed.")
class DeleteWebhookEndpointPayload:
    deleted_endpoint_id: strawberry.ID | None = strawberry.field(default=None, description="Its ID.")
    user_errors: list[UserError] = strawberry.field(description="Why nothing was removed, if so.")


@strawberry.type(description="The delivery, due again.")
class WebhookDeliveryPayload:
    delivery: WebhookDelivery | None = strawberry.field(default=None, description="The delivery.")
    user_errors: list[UserError] = strawberry.field(description="Why it was not queued, if so.")


def _endpoint_id(global_id: strawberry.ID) -> int:
    return ids.decode_as(global_id, "WebhookEndpoint", field="endpoint_id")


def _types(chosen: list[WebhookEventType] | None) -> list[events.WebhookEventType] | None:
    return None if chosen is None else [events.WebhookEventType[t.name] for t in chosen]


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(description="Add a webhook endpoint (ADMIN); the payload carries its secret once.")
    async def create_webhook_endpoint(
        self, info: Info, input: CreateWebhookEndpointInput
    ) -> CreateWebhookEndpointPayload:
        allow = info.context.allow_private_webhooks

        async def action(session: AsyncSession, viewer: models.User) -> endpoints.CreatedEndpoint:
            return await endpoints.create_endpoint(
                session,
                url=input.url,
                events=_types(input.events),
                description=input.description,
                allow_private=allow,
                actor=viewer,
            )

        created, errors = await run_command(info, action)
        if created is None:
            return CreateWebhookEndpointPayload(user_errors=errors)
        return CreateWebhookEndpointPayload(
            endpoint=WebhookEndpoint.from_model(created.endpoint), secret=created.secret, user_errors=[]
        )

    @strawberry.mutation(description="Change a webhook endpoint: URL, event types, note, enabled (ADMIN).")
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        allow = info.context.allow_private_webhooks

        async def action(session: AsyncSession, viewer: models.User) -> models.WebhookEndpoint:
            return await endpoints.update_endpoint(
                session,
                endpoint_id=_endpoint_id(input.endpoint_id),
                url=input.url,
                events=_types(input.events),
                description=input.description,
                enabled=input.enabled,
                allow_private=allow,
                actor=viewer,
            )

        endpoint, errors = await run_command(info, action)
        view = None if endpoint is None else WebhookEndpoint.from_model(endpoint)
        return WebhookEndpointPayload(endpoint=view, user_errors=errors)

    @strawberry.mutation(description="Remove a webhook endpoint and its delivery log (ADMIN).")
    async def delete_webhook_endpoint(
        self,
        info: Info,
        endpoint_id: Annotated[strawberry.ID, strawberry.argument(description="The endpoint to remove.")],
    ) -> DeleteWebhookEndpointPayload:
        async def action(session: AsyncSession, viewer: models.User) -> strawberry.ID:
            await endpoints.delete_endpoint(session, endpoint_id=_endpoint_id(endpoint_id), actor=viewer)
            return endpoint_id

        deleted, errors = await run_command(info, action)
        return DeleteWebhookEndpointPayload(deleted_endpoint_id=deleted, user_errors=_named(errors))

    @strawberry.mutation(description="Send a delivery again now, with the same webhook-id (ADMIN).")
    async def redeliver_webhook(
        self,
        info: Info,
        delivery_id: Annotated[strawberry.ID, strawberry.argument(description="The delivery to send again.")],
    ) -> WebhookDeliveryPayload:
        async def action(session: AsyncSession, viewer: models.User) -> WebhookDelivery:
            pk = ids.decode_as(delivery_id, "WebhookDelivery", field="id")
            delivery = await endpoints.redeliver(session, delivery_id=pk, actor=viewer)
            event = await session.get(models.WebhookEvent, delivery.event_id)
            return WebhookDelivery.from_model(delivery, event.type if event is not None else "")

        delivery, errors = await run_command(info, action)
        if delivery is not None:
            info.context.store.wake_outbox()
        return WebhookDeliveryPayload(delivery=delivery, user_errors=_named(errors, "deliveryId"))

    @strawberry.mutation(description="Queue a webhook.ping to an enabled endpoint, to test it (ADMIN).")
    async def ping_webhook_endpoint(
        self,
        info: Info,
        endpoint_id: Annotated[strawberry.ID, strawberry.argument(description="The endpoint to ping.")],
    ) -> WebhookEndpointPayload:
        async def action(session: AsyncSession, viewer: models.User) -> models.WebhookEndpoint:
            pk = _endpoint_id(endpoint_id)
            await endpoints.ping(session, endpoint_id=pk, actor=viewer)
            return await endpoints.get_endpoint(session, pk)

        endpoint, errors = await run_command(info, action)
        view = None if endpoint is None else WebhookEndpoint.from_model(endpoint)
        return WebhookEndpointPayload(endpoint=view, user_errors=_named(errors))


def _named(errors: list[UserError], name: str = "endpointId") -> list[UserError]:
    """Top-level arguments, not input fields: the error names the argument."""
    for error in errors:
        if error.field in ("input.id", "input.endpointId"):
            error.field = name
    return errors


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="Every webhook endpoint, with its delivery log (ADMIN).")
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        viewer = info.context.require_viewer()
        async with info.context.store.read() as session:
            rows = await endpoints.list_endpoints(session, actor=viewer)
        return [WebhookEndpoint.from_model(endpoint) for endpoint in rows]
