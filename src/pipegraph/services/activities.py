"""Activities on a lead: calls, emails, meetings, notes and tasks. Whoever may change the lead may log
and complete its activities."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Activity, ActivityKind, User
from pipegraph.db.types import utcnow
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.leads import get_lead
from pipegraph.services.permissions import require_lead_change
from pipegraph.services.validation import clean_text
from pipegraph.services.webhooks.events import record_activity_logged


def _kind(kind: ActivityKind | str) -> ActivityKind:
    try:
        return ActivityKind(kind.upper() if isinstance(kind, str) else kind)
    except ValueError:
        choices = ", ".join(k.value for k in ActivityKind)
        raise ValidationError(
            f"unknown activity kind {kind!r}; choose one of {choices}", field="kind"
        ) from None


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationError("give a time zone (e.g. 2026-01-31T09:00:00Z)", field=field)
    return value


async def log_activity(
    session: AsyncSession,
    *,
    lead_id: int,
    kind: ActivityKind | str,
    subject: str,
    body: str = "",
    due_at: datetime | None = None,
    done_at: datetime | None = None,
    actor: User | None,
) -> Activity:
    lead = await get_lead(session, lead_id)
    require_lead_change(actor, lead)
    activity = Activity(
        lead_id=lead.id,
        owner_id=actor.id if actor is not None else lead.owner_id,
        kind=_kind(kind),
        subject=clean_text(subject, field="subject", max_length=300, required=True),
        body=body.strip(),
        due_at=_aware(due_at, "due_at"),
        done_at=_aware(done_at, "done_at"),
        created_at=utcnow(),
    )
    session.add(activity)
    await session.flush()
    record_activity_logged(session, activity)
    return activity


async def complete_activity(
    session: AsyncSession, *, activity_id: int, done_at: datetime | None = None, actor: User | None
) -> Activity:
    activity = await session.get(Activity, activity_id)
    if activity is None:
        raise NotFoundError(f"no activity with id {activity_id}", field="activity_id")
    lead = await get_lead(session, activity.lead_id)
    require_lead_change(actor, lead, field="activity_id")
    if activity.done_at is not None:
        raise ValidationError(f"activity {activity_id} is already done", field="activity_id")
    activity.done_at = _aware(done_at, "done_at") or utcnow()
    await session.flush()
    return activity
