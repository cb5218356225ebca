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
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services import lead_rules as rules
from pipegraph.services.events import LeadEventKind, record_event
from pipegraph.services.lead_rules import OwnerFacts, StageFacts, qualification_score
from pipegraph.services.permissions import require_lead_change, require_role
from pipegraph.services.unset import UNSET, Unset
from pipegraph.services.validation import clean_email, clean_text, to_cents


async def get_lead(
    session: AsyncSession, lead_id: int, *, field: str = "lead_id", lock: bool = False
) -> Lead:
    lead = await session.get(Lead, lead_id, with_for_update=lock)
    if lead is None:
        raise NotFoundError(f"no lead with id {lead_id}", field=field)
    return lead


async def _stage(session: AsyncSession, stage_id: int, *, pipeline_id: int, field: str) -> Stage:
    stage = await session.get(Stage, stage_id)
    rules.check_stage(rules.stage_facts(stage), stage_id, pipeline_id=pipeline_id, field=field)
    assert stage is not None
    return stage


def _facts(stage: Stage) -> StageFacts:
    facts = rules.stage_facts(stage)
    assert facts is not None
    return facts


async def _check_owner(session: AsyncSession, owner_id: int | None, actor: User | None) -> None:
    if owner_id is None:
        return
    owner = await session.get(User, owner_id)
    rules.check_owner(None if owner is None else OwnerFacts(owner.id, owner.active), owner_id, actor)


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
    change = rules.DetailChange(
        title=title,
        owner_id=owner_id,
        company=company,
        contact_name=contact_name,
        contact_email=contact_email,
        contact_phone=contact_phone,
        source=source,
        value=value,
        expected_close_date=expected_close_date,
        budget=budget,
        authority=authority,
        need=need,
        timeline=timeline,
    )
    return await apply_details(
        session, lead_id=lead_id, expected_version=expected_version, change=change, actor=actor
    )


async def apply_details(
    session: AsyncSession,
    *,
    lead_id: int,
    expected_version: int | None,
    change: rules.DetailChange,
    actor: User | None,
    at: datetime | None = None,
) -> Lead:
    """:func:`update_lead` with its fields as one :class:`~pipegraph.services.lead_rules.DetailChange`."""
    lead = await get_lead(session, lead_id, lock=True)
    require_lead_change(actor, lead)
    rules.check_version(lead, expected_version)
    values = rules.cleaned_details(change)
    if not isinstance(change.owner_id, Unset):
        await _check_owner(session, change.owner_id, actor)
    for name, value in values.items():
        setattr(lead, name, value)
    lead.qualification_score = rules.qualification_score(
        budget=lead.budget, authority=lead.authority, need=lead.need, timeline=lead.timeline
    )
    lead.updated_at = at or utcnow()
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
    rules.check_version(lead, expected_version)
    rules.check_move(lead, _facts(target))
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
    status = rules.close_outcome(outcome)
    lead = await get_lead(session, lead_id, lock=True)
    require_lead_change(actor, lead)
    rules.check_version(lead, expected_version)
    rules.check_close(lead)
    if value is not None:
        lead.value_cents = to_cents(value, field="value")
    now = at or utcnow()
    lead.status = status
    lead.lost_reason = rules.lost_reason(status, reason)
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
    rules.check_version(lead, expected_version)
    rules.check_reopen(lead)
    from_stage_id, from_status = lead.stage_id, lead.status
    target = await _stage(session, stage_id or lead.stage_id, pipeline_id=lead.pipeline_id, field="stage_id")
    rules.check_reopen_target(_facts(target))
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
