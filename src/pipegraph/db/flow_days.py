"""Daily flow totals (``stage_flow_days``), kept in step with ``stage_stays``.

Per pipeline, UTC day, stage and status of a stay, two kinds of row:

- entries (``E``), by the day the stay started and where it went (next stage and status, or
  ``NO_STAGE``/``NO_STATUS`` while it lasts): how many;
- exits (``X``), by the day it ended, where it went and its length in whole days: how many and their
  seconds summed.

A metrics window of many days then reads a few rows per stage and day instead of every stay (only its
partial first and last days read stays), and the whole-day lengths form a histogram that locates each
stage's median, so finding it sorts one day's worth of lengths instead of half the window's.

Writers: ``pipegraph.db.stays.append_history`` applies the few rows a history row changes
(``apply``); ``add_stays`` adds or removes the totals of whole leads' stays in SQL, and ``rebuild``
recomputes them all (after a bulk load). Rows whose count falls to zero stay; readers sum them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Date, Integer, bindparam, delete, literal_column, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement, TextClause

from pipegraph.db.lead_events import LOCK_SPACE
from pipegraph.db.models import StageFlowDay, whole_days_text

ENTRY, EXIT = "E", "X"
# Where a stay still running "went": the key columns are NOT NULL, so upserts can match them.
NO_STAGE, NO_STATUS = 0, ""
SECONDS_PER_DAY = 86_400.0

Executor = AsyncSession | AsyncConnection

_KEY = ("pipeline_id", "day", "kind", "stage_id", "status", "next_stage_id", "next_status", "days_in_stage")


def whole_days(seconds: float) -> int:
    """A stay's length in whole days, as ``whole_days_sql`` computes it (the same double division, then
    truncation, which is the floor for lengths that are never negative)."""
    return int(seconds / SECONDS_PER_DAY)


def whole_days_sql(dialect: str) -> ColumnElement[int]:
    """``whole_days_text`` of ``stage_stays.duration_seconds`` as a column expression, written as text:
    the expression index ``ix_stage_stays_pipeline_stage_days`` serves only the same expression, and
    SQLAlchemy would write a division on SQLite as ``a / (b + 0.0)``."""
    return literal_column(whole_days_text(dialect, "stage_stays.duration_seconds"), Integer)


def _day_text(dialect: str, column: str) -> str:
    """The UTC date of a stored timestamp (SQLite stores UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    if dialect == "sqlite":
        return f"substr({column}, 1, 10)"
    return f"CAST(timezone('UTC', {column}) AS DATE)"


# Totals are added to the stored row of the same key, whether the rows come from stays or from Python.
ADD_TO_STORED = (
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET n = stage_flow_days.n + excluded.n, "
    "seconds_sum = stage_flow_days.seconds_sum + excluded.seconds_sum"
)
_INSERT_ROW = text(
    f"INSERT INTO stage_flow_days ({', '.join(_KEY)}, n, seconds_sum) "
    f"VALUES ({', '.join(f':{column}' for column in (*_KEY, 'n', 'seconds_sum'))}) {ADD_TO_STORED}"
).bindparams(bindparam("day", type_=Date))
_TYPES = ("integer", "date", "text", "integer", "text", "integer", "text", "integer", "bigint", "float8")
_CAST_ROW = ", ".join(f"CAST(:{c} AS {t})" for c, t in zip((*_KEY, "n", "seconds_sum"), _TYPES, strict=True))
# On PostgreSQL each row first takes its pipeline's event lock (pipegraph.db.lead_events; taking it
# again in the same transaction is free). Today's rows of a pipeline are shared by all its writers, and
# every writer takes that lock before its events anyway: a writer that locked the rows first would hold
# them while it queued for the lock, so waits for the rows would chain behind waits for the lock.
_INSERT_ROW_LOCKED = text(
    f"INSERT INTO stage_flow_days ({', '.join(_KEY)}, n, seconds_sum) "
    f"SELECT {_CAST_ROW} "
    # Not EXISTS (SELECT lock): PostgreSQL drops the select list of an EXISTS subquery, the lock with it.
    "WHERE (SELECT count(*) FROM (SELECT "
    f"pg_advisory_xact_lock({LOCK_SPACE}, CAST(:pipeline_id AS integer))) AS locked) = 1 {ADD_TO_STORED}"
).bindparams(bindparam("day", type_=Date))


def totals_sql(dialect: str, where: str) -> str:
    """INSERT of the totals of the stays ``where`` selects, times ``:sign``, added to existing rows."""
    entered, left = _day_text(dialect, "entered_at"), _day_text(dialect, "left_at")
    days = whole_days_text(dialect, "duration_seconds")
    next_stage = f"COALESCE(next_stage_id, {NO_STAGE})"
    next_status = f"COALESCE(next_status, '{NO_STATUS}')"
    entries = f"""
        SELECT pipeline_id, {entered} AS day, '{ENTRY}' AS kind, stage_id, status,
               {next_stage} AS next_stage_id, {next_status} AS next_status, 0 AS days_in_stage,
               :sign * count(*) AS n, 0.0 AS seconds_sum
        FROM stage_stays WHERE {where}
        GROUP BY pipeline_id, {entered}, stage_id, status, {next_stage}, {next_status}"""
    exits = f"""
        SELECT pipeline_id, {left}, '{EXIT}', stage_id, status, next_stage_id, next_status, {days},
               :sign * count(*), :sign * sum(duration_seconds)
        FROM stage_stays WHERE left_at IS NOT NULL AND {where}
        GROUP BY pipeline_id, {left}, stage_id, status, next_stage_id, next_status, {days}"""
    # The outer WHERE settles SQLite's parsing ambiguity between a join's ON and the upsert's ON.
    return (
        f"INSERT INTO stage_flow_days ({', '.join(_KEY)}, n, seconds_sum) "
        f"SELECT * FROM ({entries} UNION ALL {exits}) AS totals WHERE true {ADD_TO_STORED}"
    )


def _dialect(executor: Executor) -> str:
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    return bind.dialect.name


def _totals(executor: Executor, where: str, expanding: str | None = None) -> TextClause:
    statement = text(totals_sql(_dialect(executor), where))
    return statement.bindparams(bindparam(expanding, expanding=True)) if expanding else statement


async def add_stays(executor: Executor, *, lead_ids: Collection[int], sign: int) -> None:
    """Add (``sign`` 1) or remove (-1) the totals of the stays of ``lead_ids`` as they are now."""
    if lead_ids:
        statement = _totals(executor, "lead_id IN :lead_ids", "lead_ids")
        await executor.execute(statement, {"lead_ids": sorted(lead_ids), "sign": sign})


async def rebuild(executor: Executor) -> None:
    """Recompute every total from the stays."""
    await executor.execute(delete(StageFlowDay))
    await executor.execute(_totals(executor, "true"), {"sign": 1})


@dataclass(frozen=True, slots=True)
class EndedStay:
    """What ``apply`` needs of a stay that has just ended."""

    pipeline_id: int
    stage_id: int
    status: str
    entered_at: datetime
    left_at: datetime
    next_stage_id: int
    next_status: str
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class StartedStay:
    pipeline_id: int
    stage_id: int
    status: str
    entered_at: datetime


Key = tuple[int, date, str, int, str, int, str, int]


def changes(ended: Iterable[EndedStay], started: Iterable[StartedStay]) -> dict[Key, tuple[int, float]]:
    """The rows to add for stays that ended and started: (count, seconds) by key."""
    totals: dict[Key, tuple[int, float]] = {}

    def add(key: Key, n: int, seconds: float = 0.0) -> None:
        before_n, before_seconds = totals.get(key, (0, 0.0))
        totals[key] = (before_n + n, before_seconds + seconds)

    for stay in ended:
        day = stay.entered_at.date()
        head = (stay.pipeline_id, day, ENTRY, stay.stage_id, stay.status)
        add((*head, NO_STAGE, NO_STATUS, 0), -1)
        add((*head, stay.next_stage_id, stay.next_status, 0), 1)
        exit_key = (stay.pipeline_id, stay.left_at.date(), EXIT, stay.stage_id, stay.status)
        days = whole_days(stay.duration_seconds)
        add((*exit_key, stay.next_stage_id, stay.next_status, days), 1, stay.duration_seconds)
    for new in started:
        add(
            (new.pipeline_id, new.entered_at.date(), ENTRY, new.stage_id, new.status, NO_STAGE, NO_STATUS, 0),
            1,
        )
    return totals


async def apply(executor: Executor, totals: Mapping[Key, tuple[int, float]]) -> None:
    """Add ``totals`` to the stored rows, in one statement.

    Rows go in key order: concurrent writers then lock shared rows (today's entries into a stage) in
    the same order and cannot deadlock on them. On PostgreSQL a pipeline's rows are locked only once
    its event lock is held (``_INSERT_ROW_LOCKED``).
    """
    if not totals:
        return
    rows = [
        dict(zip(_KEY, key, strict=True)) | {"n": n, "seconds_sum": seconds}
        for key, (n, seconds) in sorted(totals.items())
    ]
    locked = _dialect(executor) == "postgresql"
    await executor.execute(_INSERT_ROW_LOCKED if locked else _INSERT_ROW, rows)
