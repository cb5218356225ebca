"""The SQLite backend of :mod:`pipegraph.services.lead_writes`: Core statements in one write transaction.

The store's write transaction (its lock, ``BEGIN IMMEDIATE``) holds the read and the writes together;
each table gets one statement, the daily totals one batch, and the event goes through the broker as
the general path's does (written before the commit, delivered after it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

from sqlalchemy import Table, insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db import flow_days
from pipegraph.db.lead_events import record_event
from pipegraph.db.models import Lead, Stage, StageHistory, StageStay, User
from pipegraph.db.session import Store
from pipegraph.services.events import LeadEventBroker
from pipegraph.services.lead_writes import Change, Facts, Move
from pipegraph.services.lead_writes_postgres import READ_COLUMNS, facts_of
from pipegraph.services.unset import Unset

_READ = text(
    f"""
SELECT {READ_COLUMNS},
       EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled) AS webhooks_enabled
FROM leads l
LEFT JOIN stage_stays s ON s.lead_id = l.id AND s.left_at IS NULL
LEFT JOIN stages t ON t.id = COALESCE(:stage_id, l.stage_id)
LEFT JOIN users o ON o.id = CASE WHEN :named THEN :owner ELSE l.owner_id END
WHERE l.id = :lead_id
"""
).columns(
    # Typed so that times, statuses and roles come back as the ORM gives them.
    **{f"l_{column.name}": column.type for column in Lead.__table__.columns},
    **{f"t_{column.name}": column.type for column in Stage.__table__.columns},
    **{f"o_{column.name}": column.type for column in User.__table__.columns},
    s_entered_at=StageStay.__table__.c.entered_at.type,
    s_stage_id=StageStay.__table__.c.stage_id.type,
    s_status=StageStay.__table__.c.status.type,
)
_LEADS, _HISTORY, _STAYS = (cast(Table, model.__table__) for model in (Lead, StageHistory, StageStay))


class SqliteBackend:
    def __init__(self, store: Store, broker: LeadEventBroker) -> None:
        self._store = store
        self._broker = broker

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Statements]:
        async with self._store.write() as session:
            yield _Statements(session)
            await self._broker.log(session)

    async def close(self) -> None:
        """The store's connections are the store's to close."""


class _Statements:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def read(self, lead_id: int, stage_id: int | None, owner: int | Unset | None) -> Facts | None:
        named = not isinstance(owner, Unset)
        parameters = {
            "lead_id": lead_id,
            "stage_id": stage_id,
            "named": named,
            "owner": owner if named else None,
        }
        rows = (await self._session.execute(_READ, parameters)).mappings().all()
        if rows and rows[0]["webhooks_enabled"]:
            # The general path writes it: its session records the webhook event in the outbox too.
            return None
        return facts_of(cast(Mapping[str, Any], rows[0])) if len(rows) == 1 else None

    async def write(self, change: Change, move: Move | None) -> bool:
        session, now = self._session, change.now
        lead = _LEADS.c
        changed = await session.execute(
            update(_LEADS)
            .where(lead.id == change.lead_id, lead.version == change.read_version)
            .values(**change.values, version=lead.version + 1)
        )
        if getattr(changed, "rowcount", 0) != 1:
            return False
        if move is not None:
            history: dict[str, Any] = {
                "lead_id": change.lead_id,
                "pipeline_id": change.pipeline_id,
                "from_stage_id": move.from_stage_id,
                "to_stage_id": move.to_stage_id,
                "from_status": move.from_status,
                "to_status": move.to_status,
                "changed_at": now,
                "actor_id": change.actor_id,
            }
            history_id = (
                await session.execute(insert(_HISTORY).values(**history).returning(_HISTORY.c.id))
            ).scalar_one()
            stay = _STAYS.c
            await session.execute(
                update(_STAYS)
                .where(stay.lead_id == change.lead_id, stay.left_at.is_(None))
                .values(
                    left_at=now,
                    next_stage_id=move.to_stage_id,
                    next_status=move.to_status,
                    duration_seconds=move.ended_seconds,
                )
            )
            await session.execute(
                insert(_STAYS).values(
                    history_id=history_id,
                    lead_id=change.lead_id,
                    pipeline_id=change.pipeline_id,
                    stage_id=move.to_stage_id,
                    status=move.to_status,
                    entered_at=now,
                )
            )
            await flow_days.apply(session, dict(move.totals))
        # What the event needs of the lead: the broker writes it before the commit.
        written = Lead(id=change.lead_id, pipeline_id=change.pipeline_id, version=change.read_version + 1)
        record_event(session, change.kind, written, change.actor_id)
        return True
