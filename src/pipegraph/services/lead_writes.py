"""Lead changes in few statements: one read of the facts, then the writes, without the ORM.

The general path (:mod:`pipegraph.services.leads`) locks the lead, reads its stage and owner, then
writes the lead, its history row, its stays, the daily totals and the event through the ORM: a dozen
round trips. Here one statement reads the lead, its open stay, the stage and the owner the change names;
the rules of :mod:`pipegraph.services.lead_rules` decide in Python, and a backend writes:

- PostgreSQL (:mod:`.lead_writes_postgres`): one prepared statement of data-modifying CTEs, in
  autocommit, with ``NOTIFY`` of the event inside it: two round trips in all;
- SQLite (:mod:`.lead_writes_sqlite`): a few Core statements in the store's write transaction, the
  daily totals in one batch, the event logged by the broker as the general path logs it.

The lead's ``UPDATE`` names the version read: every change bumps it, so a change that came in between
leaves it with no row, nothing is written, and the caller takes the general path. So does every change
a rule refuses, so that errors are the general path's own.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, cast

from pipegraph.db import flow_days
from pipegraph.db.lead_events import LeadEventKind
from pipegraph.db.models import Lead, LeadStatus, Stage, User
from pipegraph.db.types import utcnow
from pipegraph.errors import PipegraphError
from pipegraph.services import lead_rules as rules
from pipegraph.services.permissions import require_lead_change
from pipegraph.services.unset import UNSET, Unset
from pipegraph.services.validation import to_cents

# The lead's columns each kind of change writes (besides updated_at and version).
DETAIL_COLUMNS = (
    *("title", "owner_id", "company", "contact_name", "contact_email", "contact_phone", "source"),
    *("value_cents", "expected_close_date", "budget", "authority", "need", "timeline", "qualification_score"),
)
HISTORY_COLUMNS = ("stage_id", "status", "stage_entered_at", "closed_at", "lost_reason", "value_cents")


@dataclass(frozen=True, slots=True)
class Written:
    """A lead as the change left it, with the stage and owner its answer shows."""

    lead: Lead
    stage: Stage
    owner: User | None


@dataclass(frozen=True, slots=True)
class Facts:
    """What a change reads: the lead, the stage it names (or the lead's), the owner it names (or the
    lead's), and the lead's open stay."""

    lead: Lead
    stage: Stage | None
    owner: User | None
    open_stay: tuple[datetime, int, str] | None  # entered_at, stage, status


@dataclass(frozen=True, slots=True)
class Change:
    """The lead row's new ``values`` (``DETAIL_COLUMNS`` or ``HISTORY_COLUMNS``, and ``updated_at``),
    written only if the row is still at ``read_version``, and the change's event."""

    lead_id: int
    pipeline_id: int
    read_version: int
    kind: LeadEventKind
    now: datetime
    actor_id: int | None
    values: dict[str, object]


@dataclass(frozen=True, slots=True)
class Move:
    """What a change of stage or status writes besides the lead row: its history row, the end of the
    open stay and the start of the next, and the daily totals they change (in key order)."""

    from_stage_id: int
    from_status: str
    to_stage_id: int
    to_status: str
    ended_seconds: float | None
    totals: list[tuple[flow_days.Key, tuple[int, float]]]


class Transaction(Protocol):
    async def read(self, lead_id: int, stage_id: int | None, owner: int | Unset | None) -> Facts | None:
        """The facts (``stage_id`` None: the lead's stage; ``owner`` UNSET: the lead's owner), or None
        when they are not one lead with at most one open stay."""

    async def write(self, change: Change, move: Move | None) -> bool:
        """Write the change; False, with nothing written, when the lead is no longer at its version."""


class Backend(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """Where one change reads and writes."""

    async def close(self) -> None: ...


class LeadWrites:
    """``moveLead``, ``closeLead``, ``reopenLead`` and ``updateLead`` through a backend; each method
    answers None when the general path must make the change (a rule refuses it, or a change came in
    between)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def close(self) -> None:
        await self._backend.close()

    async def move(
        self, *, lead_id: int, to_stage_id: int, expected_version: int | None, actor: User | None
    ) -> Written | None:
        async with self._backend.transaction() as tx:
            facts = await _checked(tx, lead_id, to_stage_id, UNSET, actor, expected_version)
            if facts is None:
                return None
            lead = facts.lead
            try:
                stage = rules.stage_facts(facts.stage)
                pipeline_id = lead.pipeline_id
                target = rules.check_stage(stage, to_stage_id, pipeline_id=pipeline_id, field="to_stage_id")
                rules.check_move(lead, target)
            except PipegraphError:
                return None
            now = utcnow()
            values = {"stage_id": target.id, "stage_entered_at": now}
            return await _history(tx, facts, LeadEventKind.MOVED, actor, now, values)

    async def close_lead(
        self,
        *,
        lead_id: int,
        outcome: str,
        reason: str,
        value: Decimal | int | str | None,
        expected_version: int | None,
        actor: User | None,
    ) -> Written | None:
        async with self._backend.transaction() as tx:
            facts = await _checked(tx, lead_id, None, UNSET, actor, expected_version)
            if facts is None:
                return None
            lead = facts.lead
            try:
                status = rules.close_outcome(outcome)
                rules.check_close(lead)
                cents = lead.value_cents if value is None else to_cents(value, field="value")
                lost_reason = rules.lost_reason(status, reason)
            except PipegraphError:
                return None
            now = utcnow()
            values = {"status": status, "lost_reason": lost_reason, "closed_at": now, "value_cents": cents}
            return await _history(tx, facts, LeadEventKind.CLOSED, actor, now, values)

    async def reopen(
        self, *, lead_id: int, stage_id: int | None, expected_version: int | None, actor: User | None
    ) -> Written | None:
        async with self._backend.transaction() as tx:
            facts = await _checked(tx, lead_id, stage_id, UNSET, actor, expected_version)
            if facts is None:
                return None
            lead = facts.lead
            try:
                rules.check_reopen(lead)
                named = stage_id or lead.stage_id
                target = rules.check_stage(
                    rules.stage_facts(facts.stage), named, pipeline_id=lead.pipeline_id, field="stage_id"
                )
                rules.check_reopen_target(target)
            except PipegraphError:
                return None
            now = utcnow()
            values: dict[str, object] = {"status": LeadStatus.OPEN, "closed_at": None, "lost_reason": ""}
            if target.id != lead.stage_id:
                values |= {"stage_id": target.id, "stage_entered_at": now}
            return await _history(tx, facts, LeadEventKind.REOPENED, actor, now, values)

    async def update(
        self, *, lead_id: int, expected_version: int | None, change: rules.DetailChange, actor: User | None
    ) -> Written | None:
        async with self._backend.transaction() as tx:
            facts = await _checked(tx, lead_id, None, change.owner_id, actor, expected_version)
            if facts is None:
                return None
            lead, owner = facts.lead, facts.owner
            try:
                values = rules.cleaned_details(change)
                if not isinstance(change.owner_id, Unset):
                    named = None if owner is None else rules.OwnerFacts(owner.id, owner.active)
                    rules.check_owner(named, change.owner_id, actor)
            except PipegraphError:
                return None
            read_version, now = lead.version, utcnow()
            for name, value in values.items():
                setattr(lead, name, value)
            lead.qualification_score = rules.qualification_score(
                budget=lead.budget, authority=lead.authority, need=lead.need, timeline=lead.timeline
            )
            written = {name: getattr(lead, name) for name in DETAIL_COLUMNS} | {"updated_at": now}
            kind = LeadEventKind.UPDATED
            change_ = Change(lead.id, lead.pipeline_id, read_version, kind, now, _actor(actor), written)
            if not await tx.write(change_, None):
                return None
            lead.updated_at, lead.version = now, read_version + 1
            assert facts.stage is not None
            return Written(lead, facts.stage, owner if lead.owner_id is not None else None)


async def _checked(
    tx: Transaction,
    lead_id: int,
    stage_id: int | None,
    owner: int | Unset | None,
    actor: User | None,
    expected_version: int | None,
) -> Facts | None:
    """The facts of a change the actor may make from the lead's current version, or None. Which rule
    refuses first does not matter here: any refusal goes to the general path, which reports it."""
    facts = await tx.read(lead_id, stage_id, owner)
    if facts is None:
        return None
    try:
        require_lead_change(actor, facts.lead)
        rules.check_version(facts.lead, expected_version)
    except PipegraphError:
        return None
    return facts


async def _history(
    tx: Transaction,
    facts: Facts,
    kind: LeadEventKind,
    actor: User | None,
    now: datetime,
    values: dict[str, object],
) -> Written | None:
    """Write a change of stage or status (``values`` of the lead row): the lead, a history row, the stays
    it ends and starts, their daily totals, the event."""
    lead = facts.lead
    row = {name: getattr(lead, name) for name in HISTORY_COLUMNS} | values | {"updated_at": now}
    stage_id, status = cast(int, row["stage_id"]), LeadStatus(cast(str, row["status"]))
    ended: list[flow_days.EndedStay] = []
    seconds: float | None = None
    if facts.open_stay is not None:
        entered_at, stay_stage, stay_status = facts.open_stay
        # Exactly what the general path's SQL stores: the double nearest to the microseconds.
        seconds = (now - entered_at).total_seconds()
        ended.append(
            flow_days.EndedStay(
                *(lead.pipeline_id, stay_stage, stay_status, entered_at, now),
                *(stage_id, status.value, seconds),
            )
        )
    started = [flow_days.StartedStay(lead.pipeline_id, stage_id, status.value, now)]
    move = Move(
        from_stage_id=lead.stage_id,
        from_status=lead.status.value,
        to_stage_id=stage_id,
        to_status=status.value,
        ended_seconds=seconds,
        totals=sorted(flow_days.changes(ended, started).items()),
    )
    change = Change(lead.id, lead.pipeline_id, lead.version, kind, now, _actor(actor), row)
    if not await tx.write(change, move):
        return None
    for name, value in row.items():
        setattr(lead, name, value)
    lead.version += 1
    assert facts.stage is not None
    return Written(lead, facts.stage, facts.owner)


def _actor(actor: User | None) -> int | None:
    return actor.id if actor is not None else None
