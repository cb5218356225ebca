"""Lead changes on PostgreSQL in two round trips: one read of the facts, one statement for every write.

The general path (:mod:`pipegraph.services.leads`) locks the lead, reads its stage and owner, then
writes the lead, its history row, its stays, the daily totals and the event through the ORM: a dozen
round trips. Here one prepared statement reads the lead, its open stay, the stage and the owner the
change names; the rules of :mod:`pipegraph.services.lead_rules` decide in Python; and one prepared
statement of data-modifying CTEs writes everything, in autocommit (a single statement is its own
transaction, so no ``BEGIN`` or ``COMMIT``), with ``NOTIFY`` of the event inside it.

Instead of a row lock held across round trips, the lead's ``UPDATE`` names the version read: every
change bumps it, so a change that came in between leaves the statement with no lead row, it writes
nothing, and the caller takes the general path. So does every change a rule refuses, so that errors
are the general path's own. The statement's parts run in the general path's order (lead row, history,
stays, totals, then the pipeline's event lock, held until the commit): the two paths cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import inspect

from pipegraph.db import flow_days
from pipegraph.db.base import Base
from pipegraph.db.direct import DirectConnections
from pipegraph.db.lead_events import LOCK_SPACE, LeadEventKind, notify_each
from pipegraph.db.models import Lead, LeadStatus, Role, Stage, User
from pipegraph.db.types import utcnow
from pipegraph.errors import PipegraphError
from pipegraph.services import lead_rules as rules
from pipegraph.services.permissions import require_lead_change
from pipegraph.services.unset import UNSET, Unset
from pipegraph.services.validation import to_cents

M = TypeVar("M", bound=Base)


def _attributes(model: type[Base]) -> list[tuple[str, str]]:
    """(attribute, column) of a model's columns."""
    return [(attr.key, attr.columns[0].name) for attr in inspect(model).column_attrs]


_LEAD, _STAGE, _USER = _attributes(Lead), _attributes(Stage), _attributes(User)


def _select(alias: str, attributes: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{alias}.{column} AS {alias}_{column}" for _, column in attributes)


# $1 the lead; $2 the stage the change names (NULL: the lead's); $3 whether it names an owner, $4 which.
_READ = f"""
SELECT {_select("l", _LEAD)},
       s.entered_at AS s_entered_at, s.stage_id AS s_stage_id, s.status AS s_status,
       {_select("t", _STAGE)}, {_select("o", _USER)}
FROM leads l
LEFT JOIN stage_stays s ON s.lead_id = l.id AND s.left_at IS NULL
LEFT JOIN stages t ON t.id = COALESCE($2::integer, l.stage_id)
LEFT JOIN users o ON o.id = CASE WHEN $3::boolean THEN $4::integer ELSE l.owner_id END
WHERE l.id = $1
"""

# The event, once the pipeline's event lock is held; ``{after}`` names the CTEs that must run first.
_EVENT = f"""
locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({LOCK_SPACE}, lead.pipeline_id) FROM lead {{after}}
), event AS (
    INSERT INTO lead_events (pipeline_id, lead_id, kind, version, occurred_at, actor_id)
    SELECT lead.pipeline_id, lead.id, $3::text, lead.version, $4::timestamptz, $5::integer FROM lead, locked
    RETURNING id, pipeline_id, lead_id, kind, version, occurred_at, actor_id
)
SELECT {notify_each("$6::text")} FROM event
"""

# $1 lead, $2 version read, $3 event kind, $4 now, $5 actor, $6 channel; then the lead's new details.
_DETAILS = """
WITH lead AS (
    UPDATE leads SET title = $7::text, owner_id = $8::integer, company = $9::text, contact_name = $10::text,
        contact_email = $11::text, contact_phone = $12::text, source = $13::text, value_cents = $14::bigint,
        expected_close_date = $15::date, budget = $16::boolean, authority = $17::boolean,
        need = $18::boolean, timeline = $19::boolean, qualification_score = $20::integer,
        updated_at = $4::timestamptz, version = version + 1
    WHERE id = $1 AND version = $2
    RETURNING id, pipeline_id, version
),""" + _EVENT.format(after="")
_DETAIL_COLUMNS = (
    *("title", "owner_id", "company", "contact_name", "contact_email", "contact_phone", "source"),
    *("value_cents", "expected_close_date", "budget", "authority", "need", "timeline", "qualification_score"),
)

_KEY_ARRAYS = (
    "$15::date[], $16::text[], $17::integer[], $18::text[], $19::integer[], $20::text[], $21::integer[]"
)
# $1–$6 as above; the lead's new stage and status ($7, $8), stage_entered_at, closed_at, lost_reason,
# value_cents ($9–$12), the history row's from-stage and from-status ($13, $14), the ended stay's length
# ($23), and the daily totals as arrays ($15–$22: key columns, days in stage, n, seconds).
_HISTORY = f"""
WITH lead AS (
    UPDATE leads SET stage_id = $7::integer, status = $8::text, stage_entered_at = $9::timestamptz,
        closed_at = $10::timestamptz, lost_reason = $11::text, value_cents = $12::bigint,
        updated_at = $4::timestamptz, version = version + 1
    WHERE id = $1 AND version = $2
    RETURNING id, pipeline_id, version
), history AS (
    INSERT INTO stage_history
        (lead_id, pipeline_id, from_stage_id, to_stage_id, from_status, to_status, changed_at, actor_id)
    SELECT id, pipeline_id, $13::integer, $7::integer, $14::text, $8::text, $4::timestamptz, $5::integer
    FROM lead
    RETURNING id, lead_id, pipeline_id
), ended AS (
    UPDATE stage_stays SET left_at = $4::timestamptz, next_stage_id = $7::integer, next_status = $8::text,
        duration_seconds = $23::double precision
    WHERE lead_id = $1 AND left_at IS NULL AND EXISTS (SELECT FROM lead)
    RETURNING 1
), started AS (
    INSERT INTO stage_stays (history_id, lead_id, pipeline_id, stage_id, status, entered_at)
    SELECT id, lead_id, pipeline_id, $7::integer, $8::text, $4::timestamptz FROM history
    RETURNING 1
), totals AS (
    INSERT INTO stage_flow_days
        (pipeline_id, day, kind, stage_id, status, next_stage_id, next_status, days_in_stage, n, seconds_sum)
    SELECT (SELECT pipeline_id FROM lead), t.*
    FROM unnest({_KEY_ARRAYS}, $22::bigint[], $24::double precision[]) AS t
    WHERE EXISTS (SELECT FROM lead)
    ORDER BY 2, 3, 4, 5, 6, 7, 8
    {flow_days.ADD_TO_STORED}
    RETURNING 1
),""" + _EVENT.format(
    after="WHERE (SELECT count(*) FROM ended) + (SELECT count(*) FROM started) "
    "+ (SELECT count(*) FROM totals) >= 0"
)


@dataclass(frozen=True, slots=True)
class Written:
    """A lead as the change left it, with the stage and owner its answer shows."""

    lead: Lead
    stage: Stage
    owner: User | None


def _model(model: type[M], row: asyncpg.Record, alias: str, attributes: Sequence[tuple[str, str]]) -> M:
    return model(**{key: row[f"{alias}_{column}"] for key, column in attributes})


@dataclass(frozen=True, slots=True)
class _Facts:
    lead: Lead
    stage: Stage | None
    owner: User | None
    open_stay: tuple[datetime, int, str] | None  # entered_at, stage, status


def _facts(row: asyncpg.Record) -> _Facts:
    lead = _model(Lead, row, "l", _LEAD)
    lead.status = LeadStatus(lead.status)
    stage = None if row["t_id"] is None else _model(Stage, row, "t", _STAGE)
    owner = None if row["o_id"] is None else _model(User, row, "o", _USER)
    if owner is not None:
        owner.role = Role(owner.role)
    stay = row["s_entered_at"]
    open_stay = None if stay is None else (stay, row["s_stage_id"], row["s_status"])
    return _Facts(lead, stage, owner, open_stay)


class LeadWrites:
    """``moveLead``, ``closeLead``, ``reopenLead`` and ``updateLead`` in two round trips; each method
    answers None when the general path must make the change (a rule refuses it, or a change came in
    between)."""

    def __init__(self, connections: DirectConnections, *, channel: str) -> None:
        self._connections = connections
        self._channel = channel

    async def close(self) -> None:
        await self._connections.close()

    async def _read(self, lead_id: int, stage_id: int | None, owner: int | Unset | None) -> _Facts | None:
        named = not isinstance(owner, Unset)
        async with self._connections.connection() as connection:
            rows = await connection.fetch(_READ, lead_id, stage_id, named, owner if named else None)
        # Not one lead with one open stay: the general path decides (and reports a missing lead).
        return _facts(rows[0]) if len(rows) == 1 else None

    async def move(
        self, *, lead_id: int, to_stage_id: int, expected_version: int | None, actor: User | None
    ) -> Written | None:
        facts = await self._read(lead_id, to_stage_id, UNSET)
        if facts is None:
            return None
        lead = facts.lead
        try:
            require_lead_change(actor, lead)
            target = rules.check_stage(
                rules.stage_facts(facts.stage), to_stage_id, pipeline_id=lead.pipeline_id, field="to_stage_id"
            )
            rules.check_version(lead, expected_version)
            rules.check_move(lead, target)
        except PipegraphError:
            return None
        now = utcnow()
        return await self._history(
            facts,
            LeadEventKind.MOVED,
            actor,
            now,
            stage_id=target.id,
            status=lead.status,
            entered=now,
            closed_at=lead.closed_at,
            lost_reason=lead.lost_reason,
        )

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
        facts = await self._read(lead_id, None, UNSET)
        if facts is None:
            return None
        lead = facts.lead
        try:
            status = rules.close_outcome(outcome)
            require_lead_change(actor, lead)
            rules.check_version(lead, expected_version)
            rules.check_close(lead)
            cents = lead.value_cents if value is None else to_cents(value, field="value")
            lost_reason = rules.lost_reason(status, reason)
        except PipegraphError:
            return None
        now = utcnow()
        return await self._history(
            facts,
            LeadEventKind.CLOSED,
            actor,
            now,
            stage_id=lead.stage_id,
            status=status,
            entered=lead.stage_entered_at,
            closed_at=now,
            lost_reason=lost_reason,
            value_cents=cents,
        )

    async def reopen(
        self, *, lead_id: int, stage_id: int | None, expected_version: int | None, actor: User | None
    ) -> Written | None:
        facts = await self._read(lead_id, stage_id, UNSET)
        if facts is None:
            return None
        lead = facts.lead
        try:
            require_lead_change(actor, lead)
            rules.check_version(lead, expected_version)
            rules.check_reopen(lead)
            named = stage_id or lead.stage_id
            target = rules.check_stage(
                rules.stage_facts(facts.stage), named, pipeline_id=lead.pipeline_id, field="stage_id"
            )
            rules.check_reopen_target(target)
        except PipegraphError:
            return None
        now = utcnow()
        entered = now if target.id != lead.stage_id else lead.stage_entered_at
        return await self._history(
            facts,
            LeadEventKind.REOPENED,
            actor,
            now,
            stage_id=target.id,
            status=LeadStatus.OPEN,
            entered=entered,
            closed_at=None,
            lost_reason="",
        )

    async def update(
        self, *, lead_id: int, expected_version: int | None, change: rules.DetailChange, actor: User | None
    ) -> Written | None:
        facts = await self._read(lead_id, None, change.owner_id)
        if facts is None:
            return None
        lead, owner = facts.lead, facts.owner
        try:
            require_lead_change(actor, lead)
            rules.check_version(lead, expected_version)
            values = rules.cleaned_details(change)
            if not isinstance(change.owner_id, Unset):
                named = None if owner is None else rules.OwnerFacts(owner.id, owner.active)
                rules.check_owner(named, change.owner_id, actor)
        except PipegraphError:
            return None
        read_version = lead.version
        for name, value in values.items():
            setattr(lead, name, value)
        lead.qualification_score = rules.qualification_score(
            budget=lead.budget, authority=lead.authority, need=lead.need, timeline=lead.timeline
        )
        now = utcnow()
        lead.updated_at = now
        details = [getattr(lead, name) for name in _DETAIL_COLUMNS]
        head = [lead.id, read_version, LeadEventKind.UPDATED.value, now, _actor(actor), self._channel]
        if not await self._write(_DETAILS, [*head, *details]):
            return None
        lead.version = read_version + 1
        assert facts.stage is not None
        return Written(lead, facts.stage, owner if lead.owner_id is not None else None)

    async def _history(
        self,
        facts: _Facts,
        kind: LeadEventKind,
        actor: User | None,
        now: datetime,
        *,
        stage_id: int,
        status: LeadStatus,
        entered: datetime,
        closed_at: datetime | None,
        lost_reason: str,
        value_cents: int | None = None,
    ) -> Written | None:
        """Write a change of stage or status: the lead, a history row, its stays and totals, the event."""
        lead = facts.lead
        ended: list[flow_days.EndedStay] = []
        seconds: float | None = None
        if facts.open_stay is not None:
            entered_at, stay_stage, stay_status = facts.open_stay
            # Exactly what the general path's SQL stores: the double nearest to the microseconds.
            seconds = (now - entered_at).total_seconds()
            ended.append(
                flow_days.EndedStay(
                    lead.pipeline_id,
                    stay_stage,
                    stay_status,
                    entered_at,
                    now,
                    stage_id,
                    status.value,
                    seconds,
                )
            )
        started = [flow_days.StartedStay(lead.pipeline_id, stage_id, status.value, now)]
        totals = sorted(flow_days.changes(ended, started).items())
        columns: list[list[Any]] = [[key[i] for key, _ in totals] for i in range(1, 8)]
        cents = lead.value_cents if value_cents is None else value_cents
        parameters = [
            *(lead.id, lead.version, kind.value, now, _actor(actor), self._channel),
            *(stage_id, status.value, entered, closed_at, lost_reason, cents),
            *(lead.stage_id, lead.status.value),
            *columns,
            [n for _, (n, _s) in totals],
            seconds,
            [s for _, (_n, s) in totals],
        ]
        if not await self._write(_HISTORY, parameters):
            return None
        lead.stage_id, lead.status, lead.stage_entered_at = stage_id, status, entered
        lead.closed_at, lead.lost_reason, lead.value_cents = closed_at, lost_reason, cents
        lead.updated_at, lead.version = now, lead.version + 1
        assert facts.stage is not None
        return Written(lead, facts.stage, facts.owner)

    async def _write(self, statement: str, parameters: list[Any]) -> bool:
        """Run a write statement; False when the lead had moved on (nothing was written)."""
        async with self._connections.connection() as connection:
            rows = await connection.fetch(statement, *parameters)
        return len(rows) == 1


def _actor(actor: User | None) -> int | None:
    return actor.id if actor is not None else None
