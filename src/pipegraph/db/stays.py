"""Keeping ``stage_stays`` in step with ``stage_history``.

A stay is what one history row opens and the lead's next row (by ``changed_at``, then ``id``) closes.
Services append history through ``append_history``, which ends each lead's current stay and opens the
next in the same transaction, and updates the daily totals (``pipegraph.db.flow_days``).
``STAYS_FROM_HISTORY`` derives every stay from history alone, with window
functions that SQLite and PostgreSQL both run; ``stays_sql`` adds each ended stay's length in seconds,
which needs each backend's own date arithmetic. Loaders that write history rows directly call
``derive_stays``, and tests compare what the services and loaders wrote with the derivation.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import Double, bindparam, delete, literal_column, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnClause, TextClause

from pipegraph.db import flow_days
from pipegraph.db.models import StageHistory, StageStay

# What the history rows delimit, portable SQL on both backends.
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
# Every column of the table: the above and the length of the stay.
ALL_STAY_COLUMNS = (*STAY_COLUMNS, "duration_seconds")

# ``{where}`` narrows the history rows (whole leads only, or the window functions would see a partial
# history); ``{duration}`` is empty or the duration column.
_SELECT_STAYS = """
SELECT h.id, h.lead_id, h.pipeline_id, h.to_stage_id, h.to_status, h.changed_at,
       LEAD(h.changed_at) OVER w, LEAD(h.to_stage_id) OVER w, LEAD(h.to_status) OVER w{duration}
FROM stage_history h {where}
WINDOW w AS (PARTITION BY h.lead_id ORDER BY h.changed_at, h.id)
"""

STAYS_FROM_HISTORY = _SELECT_STAYS.format(where="", duration="")


def seconds_between(dialect: str, start: str, end: str) -> str:
    """SQL for ``end - start`` in seconds, exactly the double nearest to the microsecond count, as
    Python's ``timedelta.total_seconds()`` and NumPy give it, so every writer stores the same value.

    SQLite's date functions round to milliseconds, so its whole seconds come from ``strftime('%s')``
    and the microseconds from the stored text (``YYYY-MM-DD HH:MM:SS.ffffff``, SQLAlchemy's format).
    """
    if dialect == "sqlite":
        whole = f"(CAST(strftime('%s', {end}) AS INTEGER) - CAST(strftime('%s', {start}) AS INTEGER))"
        micros = f"(CAST(substr({end}, 21) AS INTEGER) - CAST(substr({start}, 21) AS INTEGER))"
        return f"(({whole} * 1000000 + {micros}) / 1000000.0)"
    # EXTRACT gives an exact numeric; converting that once rounds correctly.
    return f"CAST(EXTRACT(EPOCH FROM ({end}) - ({start})) AS DOUBLE PRECISION)"


def stays_sql(dialect: str, *, where: str = "") -> str:
    """Every column of ``ALL_STAY_COLUMNS``, derived from the history rows ``where`` selects."""
    duration = seconds_between(dialect, "h.changed_at", "LEAD(h.changed_at) OVER w")
    return _SELECT_STAYS.format(where=where, duration=f",\n       {duration}")


def _for_leads(statement: str) -> TextClause:
    return text(statement).bindparams(bindparam("lead_ids", expanding=True))


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def derive_stays(session: AsyncSession, *, lead_ids: Collection[int]) -> None:
    """Replace the stays of ``lead_ids`` with the ones their history delimits, and their daily totals."""
    if not lead_ids:
        return
    ids = sorted(lead_ids)
    await flow_days.add_stays(session, lead_ids=ids, sign=-1)
    await session.execute(delete(StageStay).where(StageStay.lead_id.in_(ids)))
    select_stays = stays_sql(_dialect(session), where="WHERE h.lead_id IN :lead_ids")
    insert = f"INSERT INTO stage_stays ({', '.join(ALL_STAY_COLUMNS)}){select_stays}"
    await session.execute(_for_leads(insert), {"lead_ids": ids})
    await flow_days.add_stays(session, lead_ids=ids, sign=1)


async def stays_from_history(session: AsyncSession, *, lead_ids: Collection[int]) -> list[tuple[object, ...]]:
    """The stays of ``lead_ids`` as history delimits them, ordered by history id (columns as in
    ``ALL_STAY_COLUMNS``)."""
    if not lead_ids:
        return []
    statement = stays_sql(_dialect(session), where="WHERE h.lead_id IN :lead_ids") + " ORDER BY 1"
    rows = await session.execute(_for_leads(statement), {"lead_ids": sorted(lead_ids)})
    return [tuple(row) for row in rows.all()]


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
    # The stays just ended, measured by the expression the derivation uses.
    seconds: ColumnClause[float] = literal_column(
        seconds_between(_dialect(session), "entered_at", "left_at"), Double()
    )
    s = StageStay
    ended = await session.execute(
        update(s)
        .where(
            s.lead_id.in_(sorted({row.lead_id for row in rows})),
            s.left_at.is_not(None),
            s.duration_seconds.is_(None),
        )
        .values(duration_seconds=seconds)
        .returning(
            *(s.pipeline_id, s.stage_id, s.status, s.entered_at, s.left_at),
            *(s.next_stage_id, s.next_status, s.duration_seconds),
        )
        .execution_options(synchronize_session=False)
    )
    # The columns returned are the fields of ``EndedStay``, by name.
    ended_stays = [flow_days.EndedStay(**row._mapping) for row in ended.all()]
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
    started = [
        flow_days.StartedStay(
            pipeline_id=row.pipeline_id,
            stage_id=row.to_stage_id,
            status=str(row.to_status),
            entered_at=row.changed_at,
        )
        for row in rows
    ]
    await flow_days.apply(session, flow_days.changes(ended_stays, started))
