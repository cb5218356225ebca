"""Lead commands: create, update, move, close, reopen.

Each stage or status change appends one ``StageHistory`` row and its stay in the same transaction, bumps
``version`` and records a lead event for subscribers. The lead row is locked (``FOR UPDATE`` on
PostgreSQL; SQLite serialises writers anyway) before ``expected_version`` is compared, so two
concurrent moves cannot both pass the check.

Rules: only open leads move between pre-sale stages; won leads may move on into post-sale stages;
lost leads must be reopened first. ``at`` lets a loader replay history; it defaults to now.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead, LeadStatus, Pipeline, Role, Stage, StageHistory, User
from pipegraph.db.stays import append_history
from pipegraph.db.types import utcnow
from pipegraph.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from pipegraph.services.events import LeadEventKind, record_event
from pipegraph.services.permissions import has_role, require_lead_change, require_role
from pipegraph.services.unset import UNSET, Unset
from pipegraph.services.validation import clean_email, clean_text, to_cents

BANT_POINTS = 25


def qualification_score(*, budget: bool, authority: bool, need: bool, timeline: bool) -> int:
    return BANT_POINTS * sum((budget, authority, need, timeline))


async def get_lead(
    session: AsyncSession, lead_id: int, *, field: str = "lead_id", lock: bool = False
) -> Lead:
    lead = await session.get(Lead, lead_id, with_for_update=lock)
    if lead is None:
        raise NotFoundError(f"no lead with id {lead_id}", field=field)
    return lead


async def _stage(session: AsyncSession, stage_id: int, *, pipeline_id: int, field: str) -> Stage:
    stage = await session.get(Stage, stage_id)
    if stage is None or stage.removed_at is not None:
        raise NotFoundError(f"no stage with id {stage_id}", field=field)
    if stage.pipeline_id != pipeline_id:
        raise ValidationError(f"stage {stage_id} belongs to another pipeline", field=field)
    return stage


def _check_version(lead: Lead, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != lead.version:
        raise ConflictError(
            f"lead {lead.id} is at version {lead.version}, not {expected_version}; "
            "reload it and apply the change again",
            field="expected_version",
        )


async def _check_owner(session: AsyncSession, owner_id: int | None, actor: User | None) -> None:
    if owner_id is None:
        return
    owner = await session.get(User, owner_id)
    if owner is None:
        raise NotFoundError(f"no user with id {owner_id}", field="owner_id")
    if not owner.active:
        raise ValidationError(f"user {owner_id} is inactive and cannot own leads", field="owner_id")
    if actor is not None and owner_id != actor.id and not has_role(actor, Role.MANAGER):
        raise PermissionDeniedError("a REP may assign leads only to themselves", field="owner_id")


def _history(
    lead: Lead, *, from_stage_id: int | None, from_status: LeadStatus | None, at: datetime, actor: User | None
) -> StageHistory:
    return StageHistory(
        lead_id=lead.id,
        pipeline_id=lead.pipeline_id,
        from_stage_id=from_stage_id,
        to_stage_id=lead.stage_id,
        from_status=from_status,
        to_status=lead.status,
        changed_at=at,
        actor_id=actor.id if actor is not None else None,
    )


def _actor_id(actor: User | None) -> int | None:
    return actor.id if actor is not None else None


async def create_lead(
    session: AsyncSession,
    *,
    pipeline_id: int,
    title: str,
    stage_id: int | None = None,
    owner_id: int | Unset | None = UNSET,
    company: str = "",
    contact_name: str = "",
    contact_email: str = "",
    contact_phone: str = "",
    source: str = "",
    value: Decimal | int | str = 0,
    expected_close_date: date | None = None,
    budget: bool = False,
    authority: bool = False,
    need: bool = False,
    timeline: bool = False,
    actor: User | None,
    at: datetime | None = None,
) -> Lead:
    """A new open lead in ``stage_id`` (default: the first stage), owned by the actor by default."""
    require_role(actor, Role.REP, "creating leads")
    pipeline = await session.get(Pipeline, pipeline_id)
    if pipeline is None:
        raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipeline_id")
    if pipeline.archived:
        raise ValidationError(f"pipeline {pipeline.name!r} is archived", field="pipeline_id")
    if stage_id is None:
        statement = (
            select(Stage)
            .where(
                Stage.pipeline_id == pipeline_id, Stage.removed_at.is_(None), Stage.is_post_sale.is_(False)
            )
            .order_by(Stage.position)
            .limit(1)
        )
        first = (await session.execute(statement)).scalar_one_or_none()
        if first is None:
            raise ValidationError("the pipeline has no stage before the sale", field="stage_id")
        stage = first
    else:
        stage = await _stage(session, stage_id, pipeline_id=pipeline_id, field="stage_id")
        if stage.is_post_sale:
            raise ValidationError(
                f"{stage.name!r} is a post-sale stage; only won leads enter it", field="stage_id"
            )
    owner = _actor_id(actor) if isinstance(owner_id, Unset) else owner_id
    await _check_owner(session, owner, actor)
    now = at or utcnow()
    lead = Lead(
        pipeline_id=pipeline_id,
        stage_id=stage.id,
        owner_id=owner,
        title=clean_text(title, field="title", max_length=300, required=True),
        company=clean_text(company, field="company", max_length=300),
        contact_name=clean_text(contact_name, field="contact_name", max_length=200),
        contact_email=clean_email(contact_email, field="contact_email"),
        contact_phone=clean_text(contact_phone, field="contact_phone", max_length=64),
        source=clean_text(source, field="source", max_length=100),
        value_cents=to_cents(value, field="value"),
        status=LeadStatus.OPEN,
        lost_reason="",
        expected_close_date=expected_close_date,
        budget=budget,
        authority=authority,
        need=need,
        timeline=timeline,
        qualification_score=qualification_score(
            budget=budget, authority=authority, need=need, timeline=timeline
        ),
        created_at=now,
        updated_at=now,
        stage_entered_at=now,
        version=1,
    )
    session.add(lead)
    await session.flush()
    await append_history(session, [_history(lead, from_stage_id=None, from_status=None, at=now, actor=actor)])
    record_event(session, LeadEventKind.CREATED, lead, _actor_id(actor))
    return lead


async def update_lead(
    session: AsyncSession,
    *,
    lead_id: int,
    expected_version: int | None = None,
    title: str | None = None,
    owner_id: int | Unset | None = UNSET,
    company: str | None = None,
    contact_name: str | None = None,
    contact_email: str | None = None,
    contact_phone: str | None = None,
    source: str | None = None,
    value: Decimal | int | str | None = None,
    expected_close_date: date | Unset | None = UNSET,
    budget: bool | None = None,
    authority: bool | None = None,
    need: bool | None = None,
    timeline: bool | None = None,
    actor: User | None,
) -> Lead:
    """Change a lead's details (not its stage or status). ``None``/``UNSET`` leave a field as it is,
    except ``owner_id=None`` and ``expected_close_date=None``, which clear them."""
    lead = await get_lead(session, lead_id, lock=True)
    require_lead_change(actor, lead)
    _check_version(lead, expected_version)
    if title is not None:
        lead.title = clean_text(title, field="title", max_length=300, required=True)
    if not isinstance(owner_id, Unset):
        await _check_owner(session, owner_id, actor)
        lead.owner_id = owner_id
    if company is not None:
        lead.company = clean_text(company, field="company", max_length=300)
    if contact_name is not None:
        lead.contact_name = clean_text(contact_name, field="contact_name", max_length=200)
    if contact_email is not None:
        lead.contact_email = clean_email(contact_email, field="contact_email")
    if contact_phone is not None:
        lead.contact_phone = clean_text(contact_phone, field="contact_phone", max_length=64)
    if source is not None:
        lead.source = clean_text(source, field="source", max_length=100)
    if value is not None:
        lead.value_cents = to_cents(value, field="value")
    if not isinstance(expected_close_date, Unset):
        lead.expected_close_date = expected_close_date
    for name, flag in (("budget", budget), ("authority", authority), ("need", need), ("timeline", timeline)):
        if flag is not None:
            setattr(lead, name, flag)
    lead.qualification_score = qualification_score(
        budget=lead.budget, authority=lead.authority, need=lead.need, timeline=lead.timeline
    )
    lead.updated_at = utcnow()
    lead.version += 1
    await session.flush()
    record_event(session, LeadEventKind.UPDATED, lead, _actor_id(actor))
    return lead


async def move_lead(
    session: AsyncSession,
    *,
    lead_id: int,
    to_stage_id: int,
    expected_version: int | None,
    actor: User | None,
    at: datetime | None = None,
) -> Lead:
    lead = await get_lead(session, lead_id, lock=True)
    require_lead_change(actor, lead)
    target = await _stage(session, to_stage_id, pipeline_id=lead.pipeline_id, field="to_stage_id")
    _check_version(lead, expected_version)
    if lead.status == LeadStatus.LOST:
        raise ValidationError(
            f"lead {lead.id} is closed as lost; reopen it before moving it", field="lead_id"
        )
    if lead.status == LeadStatus.WON and not target.is_post_sale:
        raise ValidationError(
            f"lead {lead.id} is won; it can move only into post-sale stages", field="to_stage_id"
        )
    if lead.status == LeadStatus.OPEN and target.is_post_sale:
        raise ValidationError(
            f"{target.name!r} is a post-sale stage; only won leads enter it", field="to_stage_id"
        )
    if target.id == lead.stage_id:
        raise ValidationError(f"lead {lead.id} is already in {target.name!r}", field="to_stage_id")
    now = at or utcnow()
    from_stage_id = lead.stage_id
    lead.stage_id = target.id
    lead.stage_entered_at = now
    lead.updated_at = now
    lead.version += 1
    history = _history(lead, from_stage_id=from_stage_id, from_status=lead.status, at=now, actor=actor)
    await append_history(session, [history])
    record_event(session, LeadEventKind.MOVED, lead, _actor_id(actor))
    return lead


async def close_lead(
    session: AsyncSession,
    *,
    lead_id: int,
    outcome: LeadStatus | str,
    reason: str = "",
    value: Decimal | int | str | None = None,
    expected_version: int | None = None,
    actor: User | None,
    at: datetime | None = None,
) -> Lead:
    """Close an open lead as WON or LOST, optionally with its final value."""
    try:
        status = LeadStatus(outcome)
    except ValueError:
        status = LeadStatus.OPEN
    if status == LeadStatus.OPEN:
        raise ValidationError(f"outcome must be WON or LOST, got {outcome!r}", field="outcome")
    lead = await get_lead(session, lead_id, lock=True)
    require_lead_change(actor, lead)
    _check_version(lead, expected_version)
    if lead.status != LeadStatus.OPEN:
        raise ValidationError(f"lead {lead.id} is already closed as {lead.status.value}", field="lead_id")
    if value is not None:
        lead.value_cents = to_cents(value, field="value")
    now = at or utcnow()
    lead.status = status
    lead.lost_reason = (
        clean_text(reason, field="reason", max_length=2000) if status == LeadStatus.LOST else ""
    )
    lead.closed_at = now
    lead.updated_at = now
    lead.version += 1
    history = _history(lead, from_stage_id=lead.stage_id, from_status=LeadStatus.OPEN, at=now, actor=actor)
    await append_history(session, [history])
    record_event(session, LeadEventKind.CLOSED, lead, _actor_id(actor))
    return lead


async def reopen_lead(
    session: AsyncSession,
    *,
    lead_id: int,
    stage_id: int | None = None,
    expected_version: int | None = None,
    actor: User | None,
    at: datetime | None = None,
) -> Lead:
    """Reopen a closed lead, in ``stage_id`` or (if that is not given) the stage it closed in.

    A won lead already moved into a post-sale stage needs ``stage_id``: open leads stay before the sale.
    """
    lead = await get_lead(session, lead_id, lock=True)
    require_lead_change(actor, lead)
    _check_version(lead, expected_version)
    if lead.status == LeadStatus.OPEN:
        raise ValidationError(f"lead {lead.id} is open already", field="lead_id")
    from_stage_id, from_status = lead.stage_id, lead.status
    target = await _stage(session, stage_id or lead.stage_id, pipeline_id=lead.pipeline_id, field="stage_id")
    if target.is_post_sale:
        raise ValidationError(
            f"{target.name!r} is a post-sale stage; name a stage before the sale to reopen into",
            field="stage_id",
        )
    now = at or utcnow()
    if target.id != lead.stage_id:
        lead.stage_id = target.id
        lead.stage_entered_at = now
    lead.status = LeadStatus.OPEN
    lead.closed_at = None
    lead.lost_reason = ""
    lead.updated_at = now
    lead.version += 1
    history = _history(lead, from_stage_id=from_stage_id, from_status=from_status, at=now, actor=actor)
    await append_history(session, [history])
    record_event(session, LeadEventKind.REOPENED, lead, _actor_id(actor))
    return lead
