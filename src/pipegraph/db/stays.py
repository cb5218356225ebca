"""Keeping ``stage_stays`` in step with ``stage_history``.

A stay is what one history row opens and the lead's next row (by ``changed_at``, then ``id``) closes.
Services append history through ``append_history``, which ends each lead's current stay and opens the
next in the same transaction. ``STAYS_FROM_HISTORY`` derives every stay from history alone, with window
functions that SQLite and PostgreSQL both run: the migration backfills the table with it, loaders that
write history rows directly call ``derive_stays``, and tests compare it with what the services wrote.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import bindparam, delete, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from pipegraph.db.models import StageHistory, StageStay

STAY_COLUMNS = (
    "history_id",
    "lead_id",
    "pipeline_id",
    "stage_id",
    "status",
    "entered_at",
    "left_at",
    "next_stage_id",
    "next_status",
)

# ``{where}`` narrows the history rows (whole leads only, or the window functions would see a partial
# history); empty for all of them.
_SELECT_STAYS = """
SELECT h.id, h.lead_id, h.pipeline_id, h.to_stage_id, h.to_status, h.changed_at,
       LEAD(h.changed_at) OVER w, LEAD(h.to_stage_id) OVER w, LEAD(h.to_status) OVER w
FROM stage_history h {where}
WINDOW w AS (PARTITION BY h.lead_id ORDER BY h.changed_at, h.id)
"""

STAYS_FROM_HISTORY = _SELECT_STAYS.format(where="")
INSERT_STAYS_FROM_HISTORY = f"INSERT INTO stage_stays ({', '.join(STAY_COLUMNS)}){STAYS_FROM_HISTORY}"


def _for_leads(statement: str) -> TextClause:
    return text(statement.format(where="WHERE h.lead_id IN :lead_ids")).bindparams(
        bindparam("lead_ids", expanding=True)
    )


async def derive_stays(session: AsyncSession, *, lead_ids: Collection[int]) -> None:
    """Replace the stays of ``lead_ids`` with the ones their history delimits."""
    if not lead_ids:
        return
    ids = sorted(lead_ids)
    await session.execute(delete(StageStay).where(StageStay.lead_id.in_(ids)))
    insert = f"INSERT INTO stage_stays ({', '.join(STAY_COLUMNS)}){_SELECT_STAYS}"
    await session.execute(_for_leads(insert), {"lead_ids": ids})


async def stays_from_history(session: AsyncSession, *, lead_ids: Collection[int]) -> list[tuple[object, ...]]:
    """The stays of ``lead_ids`` as history delimits them, ordered by history id (columns as in
    ``STAY_COLUMNS``)."""
    if not lead_ids:
        return []
    statement = _for_leads(_SELECT_STAYS + " ORDER BY 1")
    return [tuple(row) for row in (await session.execute(statement, {"lead_ids": sorted(lead_ids)})).all()]


async def append_history(session: AsyncSession, rows: Sequence[StageHistory]) -> None:
    """Add history rows (at most one per lead, each later than the lead's last) and their stays."""
    session.add_all(rows)
    await session.flush()
    for row in rows:
        await session.execute(
            update(StageStay)
            .where(StageStay.lead_id == row.lead_id, StageStay.left_at.is_(None))
            .values(left_at=row.changed_at, next_stage_id=row.to_stage_id, next_status=row.to_status)
            .execution_options(synchronize_session=False)
        )
    session.add_all(
        StageStay(
            history_id=row.id,
            lead_id=row.lead_id,
            pipeline_id=row.pipeline_id,
            stage_id=row.to_stage_id,
            status=row.to_status,
            entered_at=row.changed_at,
        )
        for row in rows
    )
    await session.flush()
