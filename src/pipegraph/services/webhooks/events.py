"""What a webhook says: the event types and each one's ``data`` (documented in docs/webhooks.md).

Ids are the API's global ids, so a receiver can read more through GraphQL (``node(id:)``).
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db import webhook_outbox
from pipegraph.db.lead_events import LeadEventKind
from pipegraph.db.models import Activity, Lead, LeadStatus, SimulationJob
from pipegraph.global_ids import encode


class WebhookEventType(enum.StrEnum):
    LEAD_CREATED = "lead.created"
    LEAD_UPDATED = "lead.updated"
    LEAD_MOVED = "lead.moved"
    LEAD_WON = "lead.won"
    LEAD_LOST = "lead.lost"
    LEAD_REOPENED = "lead.reopened"
    ACTIVITY_LOGGED = "activity.logged"
    IMPORT_FINISHED = "import.finished"
    SIMULATION_JOB_FINISHED = "simulation_job.finished"


# Sent only by pingWebhookEndpoint, to that endpoint, whatever types it wants.
PING = "webhook.ping"
_LEAD_TYPES = {
    LeadEventKind.CREATED: WebhookEventType.LEAD_CREATED,
    LeadEventKind.UPDATED: WebhookEventType.LEAD_UPDATED,
    LeadEventKind.MOVED: WebhookEventType.LEAD_MOVED,
    LeadEventKind.REOPENED: WebhookEventType.LEAD_REOPENED,
}


def _optional(type_name: str, pk: int | None) -> str | None:
    return None if pk is None else encode(type_name, pk)


def lead_data(lead: Lead) -> dict[str, Any]:
    return {
        "id": encode("Lead", lead.id),
        "pipelineId": encode("Pipeline", lead.pipeline_id),
        "stageId": encode("Stage", lead.stage_id),
        "ownerId": _optional("User", lead.owner_id),
        "title": lead.title,
        "company": lead.company,
        "status": LeadStatus(lead.status).value,
        "lostReason": lead.lost_reason,
        "valueCents": lead.value_cents,
        "version": lead.version,
        "updatedAt": lead.updated_at.isoformat(),
    }


def record_lead_event(session: AsyncSession, kind: LeadEventKind, lead: Lead, actor_id: int | None) -> None:
    if kind is LeadEventKind.CLOSED:
        won = LeadStatus(lead.status) is LeadStatus.WON
        event_type = WebhookEventType.LEAD_WON if won else WebhookEventType.LEAD_LOST
    else:
        event_type = _LEAD_TYPES[kind]
    data = {"lead": lead_data(lead), "actorId": _optional("User", actor_id)}
    webhook_outbox.record(session, event_type.value, data, lead_id=lead.id)


def record_activity_logged(session: AsyncSession, activity: Activity) -> None:
    data = {
        "activity": {
            "id": encode("Activity", activity.id),
            "leadId": encode("Lead", activity.lead_id),
            "ownerId": _optional("User", activity.owner_id),
            "kind": activity.kind.value,
            "subject": activity.subject,
            "dueAt": None if activity.due_at is None else activity.due_at.isoformat(),
            "doneAt": None if activity.done_at is None else activity.done_at.isoformat(),
        }
    }
    webhook_outbox.record(session, WebhookEventType.ACTIVITY_LOGGED.value, data, lead_id=activity.lead_id)


def record_import_finished(
    session: AsyncSession, *, pipeline_id: int, leads: list[Lead], actor_id: int | None
) -> None:
    data = {
        "pipelineId": encode("Pipeline", pipeline_id),
        "imported": len(leads),
        "leadIds": [encode("Lead", lead.id) for lead in leads],
        "actorId": _optional("User", actor_id),
    }
    webhook_outbox.record(session, WebhookEventType.IMPORT_FINISHED.value, data)


def record_simulation_finished(session: AsyncSession, job: SimulationJob) -> None:
    data = {
        "job": {
            "id": encode("SimulationJob", job.id),
            "pipelineId": encode("Pipeline", job.pipeline_id),
            "kind": job.kind,
            "status": job.status.value,
            "error": job.error,
            "finishedAt": None if job.finished_at is None else job.finished_at.isoformat(),
        }
    }
    webhook_outbox.record(session, WebhookEventType.SIMULATION_JOB_FINISHED.value, data)
