"""The lead event log: what changed, written in the same transaction as the change.

Services record events on the session (:func:`record_event`); before the transaction commits, the
broker writes them with :func:`write_events`, and each gets its **position**, the row's id. A
subscriber that missed events (a slow reader, a lost connection, a server restart) reads them back
with :func:`events_after` from the last position it saw, so nothing acknowledged is ever lost to it.

Within one pipeline, positions follow commit order. SQLite admits one writer at a time. On PostgreSQL
a writer takes a transaction-scoped advisory lock per pipeline before its events get their ids (and
before it changes the pipeline's daily totals, which every writer of the pipeline shares) and holds it
until it commits, so an event never commits after one of a higher position of its pipeline: "the
pipeline's events after position p" is complete once p has been seen.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead, LeadEventRow
from pipegraph.db.types import utcnow

_SESSION_KEY = "pipegraph_lead_events"
# The first key of the advisory locks that order each pipeline's events ("pl" in ASCII); the second
# is the pipeline's id.
LOCK_SPACE = 0x706C


class LeadEventKind(enum.StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    MOVED = "MOVED"
    CLOSED = "CLOSED"
    REOPENED = "REOPENED"


@dataclasses.dataclass(frozen=True, slots=True)
class LeadEvent:
    kind: LeadEventKind
    lead_id: int
    pipeline_id: int
    version: int
    occurred_at: datetime
    actor_id: int | None
    # The event's place in the log; 0 until it is written.
    position: int = 0


def record_event(session: AsyncSession, kind: LeadEventKind, lead: Lead, actor_id: int | None) -> None:
    event = LeadEvent(kind, lead.id, lead.pipeline_id, lead.version, utcnow(), actor_id)
    session.info.setdefault(_SESSION_KEY, []).append(event)


def take_events(session: AsyncSession) -> list[LeadEvent]:
    """The events recorded on the session and not yet taken."""
    events: list[LeadEvent] = session.info.pop(_SESSION_KEY, [])
    return events


def encode_event(event: LeadEvent) -> str:
    """A few hundred bytes of JSON, far below NOTIFY's 8,000-byte payload limit."""
    return json.dumps(
        {
            "kind": event.kind.value,
            "leadId": event.lead_id,
            "pipelineId": event.pipeline_id,
            "version": event.version,
            "occurredAt": event.occurred_at.isoformat(),
            "actorId": event.actor_id,
            "position": event.position,
        },
        separators=(",", ":"),
    )


def decode_event(payload: str) -> LeadEvent:
    data: dict[str, Any] = json.loads(payload)
    return LeadEvent(
        kind=LeadEventKind(data["kind"]),
        lead_id=int(data["leadId"]),
        pipeline_id=int(data["pipelineId"]),
        version=int(data["version"]),
        occurred_at=_utc(datetime.fromisoformat(data["occurredAt"])),
        actor_id=None if data["actorId"] is None else int(data["actorId"]),
        position=int(data["position"]),
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# PostgreSQL, in one round trip: lock the pipelines (in id order, so two writers cannot deadlock),
# then give the events their ids and write them, then NOTIFY each one (delivered at commit, in commit
# order, and never for a transaction that rolls back). The insert reads the lock's row, so no id is
# drawn before every lock is held.
_POSTGRES_WRITE = """
WITH locked AS MATERIALIZED (
    SELECT count(*) AS pipelines FROM (
        SELECT pg_advisory_xact_lock({lock_space}, p)
        FROM (SELECT DISTINCT p FROM unnest(CAST(:pipeline_ids AS integer[])) AS p ORDER BY p) AS ps
    ) AS l
), written AS (
    INSERT INTO lead_events (pipeline_id, lead_id, kind, version, occurred_at, actor_id)
    SELECT e.pipeline_id, e.lead_id, e.kind, e.version, e.occurred_at, e.actor_id
    FROM locked, unnest(
        CAST(:pipeline_ids AS integer[]), CAST(:lead_ids AS integer[]), CAST(:kinds AS text[]),
        CAST(:versions AS integer[]), CAST(:occurred AS timestamptz[]), CAST(:actors AS integer[])
    ) AS e(pipeline_id, lead_id, kind, version, occurred_at, actor_id)
    RETURNING id, pipeline_id, lead_id, kind, version, occurred_at, actor_id
)
SELECT {returned} FROM written ORDER BY id
"""


def notify_each(channel: str) -> str:
    """The select list that NOTIFYs each written event on ``channel`` (a parameter) and returns its id:
    the payload as encode_event writes it, the time in UTC without an offset (decode_event adds it)."""
    return f"""id, pg_notify({channel}, CAST(json_build_object(
    'kind', kind, 'leadId', lead_id, 'pipelineId', pipeline_id, 'version', version,
    'occurredAt', timezone('UTC', occurred_at), 'actorId', actor_id, 'position', id) AS text))"""


async def write_events(
    session: AsyncSession, events: Sequence[LeadEvent], *, notify_channel: str | None = None
) -> list[LeadEvent]:
    """Write ``events`` to the log in the session's transaction; the same events with positions.

    On PostgreSQL, ``notify_channel`` also NOTIFYs each event's position on that channel at commit.
    """
    if not events:
        return []
    if session.get_bind().dialect.name == "postgresql":
        statement = _POSTGRES_WRITE.format(
            lock_space=LOCK_SPACE, returned=notify_each(":channel") if notify_channel else "id"
        )
        parameters: dict[str, Any] = {
            "pipeline_ids": [e.pipeline_id for e in events],
            "lead_ids": [e.lead_id for e in events],
            "kinds": [e.kind.value for e in events],
            "versions": [e.version for e in events],
            "occurred": [e.occurred_at for e in events],
            "actors": [e.actor_id for e in events],
            "channel": notify_channel,
        }
        positions = list((await session.execute(text(statement), parameters)).scalars())
    else:
        rows = [
            {
                "pipeline_id": e.pipeline_id,
                "lead_id": e.lead_id,
                "kind": e.kind.value,
                "version": e.version,
                "occurred_at": e.occurred_at,
                "actor_id": e.actor_id,
            }
            for e in events
        ]
        returning = insert(LeadEventRow).returning(LeadEventRow.id, sort_by_parameter_order=True)
        positions = list((await session.execute(returning, rows)).scalars())
    return [dataclasses.replace(e, position=p) for e, p in zip(events, positions, strict=True)]


async def latest_position(session: AsyncSession, *, pipeline_id: int) -> int:
    """The position of the pipeline's last committed event (0 if it has none)."""
    statement = select(func.max(LeadEventRow.id)).where(LeadEventRow.pipeline_id == pipeline_id)
    return int((await session.execute(statement)).scalar_one() or 0)


async def events_after(session: AsyncSession, *, pipeline_id: int, after: int, limit: int) -> list[LeadEvent]:
    """The pipeline's committed events after position ``after``, oldest first, at most ``limit``."""
    statement = (
        select(
            LeadEventRow.kind,
            LeadEventRow.lead_id,
            LeadEventRow.pipeline_id,
            LeadEventRow.version,
            LeadEventRow.occurred_at,
            LeadEventRow.actor_id,
            LeadEventRow.id,
        )
        .where(LeadEventRow.pipeline_id == pipeline_id, LeadEventRow.id > after)
        .order_by(LeadEventRow.id)
        .limit(limit)
    )
    return [
        LeadEvent(LeadEventKind(kind), lead_id, pipeline, version, occurred_at, actor_id, position)
        for kind, lead_id, pipeline, version, occurred_at, actor_id, position in await session.execute(
            statement
        )
    ]
