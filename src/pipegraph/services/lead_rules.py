"""The rules of a lead change, apart from any I/O: what is refused, with which error, and what changes.

Both write paths use them: the general one (:mod:`pipegraph.services.leads`, ORM objects in a session)
and the direct one (:mod:`pipegraph.services.lead_writes`, one statement on PostgreSQL). Each rule
takes plain facts the caller has read and raises the :class:`~pipegraph.errors.PipegraphError` a client
sees; the order in which a command applies them decides which error wins, so both paths call them in
the order the functions of ``leads`` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol

from pipegraph.db.models import LeadStatus, Role, Stage, User
from pipegraph.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from pipegraph.services.permissions import has_role
from pipegraph.services.unset import UNSET, Unset
from pipegraph.services.validation import clean_email, clean_text, to_cents

BANT_POINTS = 25


class LeadFacts(Protocol):
    """What the rules read of a lead: an ORM ``Lead`` or a row read directly."""

    @property
    def id(self) -> int: ...
    @property
    def stage_id(self) -> int: ...
    @property
    def status(self) -> LeadStatus: ...
    @property
    def version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class StageFacts:
    id: int
    pipeline_id: int
    name: str
    is_post_sale: bool
    removed: bool


def stage_facts(stage: Stage | None) -> StageFacts | None:
    if stage is None:
        return None
    removed = stage.removed_at is not None
    return StageFacts(stage.id, stage.pipeline_id, stage.name, stage.is_post_sale, removed)


@dataclass(frozen=True, slots=True)
class OwnerFacts:
    id: int
    active: bool


def qualification_score(*, budget: bool, authority: bool, need: bool, timeline: bool) -> int:
    return BANT_POINTS * sum((budget, authority, need, timeline))


def check_version(lead: LeadFacts, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != lead.version:
        raise ConflictError(
            f"lead {lead.id} is at version {lead.version}, not {expected_version}; "
            "reload it and apply the change again",
            field="expected_version",
        )


def check_stage(stage: StageFacts | None, stage_id: int, *, pipeline_id: int, field: str) -> StageFacts:
    """``stage`` as read for ``stage_id`` (None: no such row), refused unless it is a live stage of the
    lead's pipeline."""
    if stage is None or stage.removed:
        raise NotFoundError(f"no stage with id {stage_id}", field=field)
    if stage.pipeline_id != pipeline_id:
        raise ValidationError(f"stage {stage_id} belongs to another pipeline", field=field)
    return stage


def check_owner(owner: OwnerFacts | None, owner_id: int | None, actor: User | None) -> None:
    """``owner`` as read for ``owner_id`` (None: no such user); nothing to check when ``owner_id`` is None."""
    if owner_id is None:
        return
    if owner is None:
        raise NotFoundError(f"no user with id {owner_id}", field="owner_id")
    if not owner.active:
        raise ValidationError(f"user {owner_id} is inactive and cannot own leads", field="owner_id")
    if actor is not None and owner_id != actor.id and not has_role(actor, Role.MANAGER):
        raise PermissionDeniedError("a REP may assign leads only to themselves", field="owner_id")


def check_move(lead: LeadFacts, target: StageFacts) -> None:
    """Only open leads move between pre-sale stages; won leads on into post-sale ones; lost ones not."""
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


def close_outcome(outcome: LeadStatus | str) -> LeadStatus:
    try:
        status = LeadStatus(outcome)
    except ValueError:
        status = LeadStatus.OPEN
    if status == LeadStatus.OPEN:
        raise ValidationError(f"outcome must be WON or LOST, got {outcome!r}", field="outcome")
    return status


def check_close(lead: LeadFacts) -> None:
    if lead.status != LeadStatus.OPEN:
        raise ValidationError(f"lead {lead.id} is already closed as {lead.status.value}", field="lead_id")


def lost_reason(status: LeadStatus, reason: str) -> str:
    return clean_text(reason, field="reason", max_length=2000) if status == LeadStatus.LOST else ""


def check_reopen(lead: LeadFacts) -> None:
    if lead.status == LeadStatus.OPEN:
        raise ValidationError(f"lead {lead.id} is open already", field="lead_id")


def check_reopen_target(target: StageFacts) -> None:
    if target.is_post_sale:
        raise ValidationError(
            f"{target.name!r} is a post-sale stage; name a stage before the sale to reopen into",
            field="stage_id",
        )


@dataclass(frozen=True, slots=True)
class DetailChange:
    """The fields ``updateLead`` was given; ``None``/``UNSET`` leave a field as it is, except
    ``owner_id=None`` and ``expected_close_date=None``, which clear them."""

    title: str | None = None
    owner_id: int | Unset | None = UNSET
    company: str | None = None
    contact_name: str | None = None
    contact_email: str | None = None
    contact_phone: str | None = None
    source: str | None = None
    value: Decimal | int | str | None = None
    expected_close_date: date | Unset | None = UNSET
    budget: bool | None = None
    authority: bool | None = None
    need: bool | None = None
    timeline: bool | None = None


def cleaned_details(change: DetailChange) -> dict[str, object]:
    """The columns ``change`` sets, cleaned (validation errors name their field), in the order the
    fields are checked; ``owner_id`` is included unchecked (see :func:`check_owner`)."""
    values: dict[str, object] = {}
    if change.title is not None:
        values["title"] = clean_text(change.title, field="title", max_length=300, required=True)
    if not isinstance(change.owner_id, Unset):
        values["owner_id"] = change.owner_id
    if change.company is not None:
        values["company"] = clean_text(change.company, field="company", max_length=300)
    if change.contact_name is not None:
        values["contact_name"] = clean_text(change.contact_name, field="contact_name", max_length=200)
    if change.contact_email is not None:
        values["contact_email"] = clean_email(change.contact_email, field="contact_email")
    if change.contact_phone is not None:
        values["contact_phone"] = clean_text(change.contact_phone, field="contact_phone", max_length=64)
    if change.source is not None:
        values["source"] = clean_text(change.source, field="source", max_length=100)
    if change.value is not None:
        values["value_cents"] = to_cents(change.value, field="value")
    if not isinstance(change.expected_close_date, Unset):
        values["expected_close_date"] = change.expected_close_date
    for name in ("budget", "authority", "need", "timeline"):
        flag = getattr(change, name)
        if flag is not None:
            values[name] = flag
    return values
