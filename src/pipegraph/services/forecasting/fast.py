"""Calibration as of now, read from what the writers keep up to date instead of from paired history.

:func:`calibration.read_history` pairs every history row of the pipeline with the lead's next row by a
window function: seconds at 100,000 leads, growing with the history. As of *now* (no history after the
cut-off), the same sums are kept already:

- ended stays: the exit totals to date per stage and where the stays went (``stage_exit_totals``, the
  daily exit rows of ``stage_flow_days`` summed over all days by that table's triggers; a few rows per
  stage, not one per stage and day, nor one per stay);
- stays still running: the open leads (``ix_leads_pipeline_status_stage_entered``), each with the start
  of its current stay, the latest ``entered_at`` of its stays (one index probe a lead; the lead's
  ``stage_entered_at`` would not do: a reopen into the same stage starts a stay but keeps it);
- arrivals: the leads created in the window (``ix_leads_pipeline_created``, on PostgreSQL
  ``ix_leads_pipeline_created_dimensions``), one per creation row;
- wins: while no win was undone, the won leads, newest first (``ix_leads_pipeline_status_closed``);
  otherwise per stage and where they were won, one index range of the stays ending in a win, newest
  first (``ix_stage_stays_pipeline_exit_duration``), merged by the database.

The rule: :func:`read_now` serves a cut-off at or after the pipeline's last history row, which is what
``calibrate_now`` asks; any other cut-off (a backtest) goes through the reference. The test
``test_calibration_fast`` holds the two readings equal on both backends: counts exactly, sums of days to
rounding (a sum of per-stay seconds ÷ 86,400 against per-stay day differences), and the deal-size sample
the same set unless two wins share a timestamp at the sample's edge.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Float, Select, Subquery, cast, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.flow_days import EXIT
from pipegraph.db.models import Lead, LeadStatus, Stage, StageExitTotal, StageFlowDay, StageStay
from pipegraph.db.types import utcnow
from pipegraph.services.forecasting.calibration import (
    DEFAULT_WINDOW_DAYS,
    MAX_DEAL_SAMPLE,
    WON_POSITION,
    Calibration,
    HistoryReads,
    age_band,
    arrival_fit,
    calibrate,
    value_band,
)
from pipegraph.services.metrics_sql import SECONDS_PER_DAY, at, days_between

_OPEN, _WON, _LOST = LeadStatus.OPEN.value, LeadStatus.WON.value, LeadStatus.LOST.value


class Outcome(NamedTuple):
    """A row as ``calibration._tally`` reads it: stays of a stage that ended one way, and their days."""

    stage_id: int
    kind: str
    target: int | None
    n: int
    days: float


async def exits_to_date(session: AsyncSession, pipeline_id: int) -> list[Any]:
    """Ended stays by stage, status and where they went: count and seconds, as kept to date
    (``stage_exit_totals``, a few rows a stage)."""
    t = StageExitTotal
    statement = select(
        t.status, t.stage_id, t.next_stage_id, t.next_status, t.n, cast(t.seconds_sum, Float).label("seconds")
    ).where(t.pipeline_id == pipeline_id, t.n != 0)  # rows whose count fell back to zero stay
    return list((await session.execute(statement)).all())


async def exits_from_days(session: AsyncSession, pipeline_id: int) -> list[Any]:
    """The reference for :func:`exits_to_date`: the daily exit rows of every day, summed in the database."""
    f = StageFlowDay
    statement = (
        select(
            f.status,
            f.stage_id,
            f.next_stage_id,
            f.next_status,
            func.sum(f.n).label("n"),
            cast(func.sum(f.seconds_sum), Float).label("seconds"),
        )
        .where(f.pipeline_id == pipeline_id, f.kind == EXIT)
        .group_by(f.status, f.stage_id, f.next_stage_id, f.next_status)
        .having(func.sum(f.n) != 0)  # rows whose count fell back to zero stay in the table
    )
    return list((await session.execute(statement)).all())


async def _positions(session: AsyncSession, pipeline_id: int) -> tuple[dict[int, int], set[int]]:
    """Every stage's position (removed and post-sale too: a stay may have gone there), and the ids of
    the current sales stages, whose stays are counted."""
    statement = select(Stage.id, Stage.position, Stage.removed_at, Stage.is_post_sale).where(
        Stage.pipeline_id == pipeline_id
    )
    rows = (await session.execute(statement)).all()
    counted = {row.id for row in rows if row.removed_at is None and not row.is_post_sale}
    return {row.id: row.position for row in rows}, counted


def _outcome(row: Any, position: dict[int, int]) -> Outcome:
    """Classified as ``calibration._stay_outcomes`` does, by the stages' current order."""
    days = float(row.seconds) / SECONDS_PER_DAY
    if row.next_status == _LOST:
        return Outcome(row.stage_id, "lost", None, int(row.n), days)
    if row.next_status == _WON:
        return Outcome(row.stage_id, "won", WON_POSITION, int(row.n), days)
    target = position[row.next_stage_id]
    kind = "advanced" if target > position[row.stage_id] else "back"
    return Outcome(row.stage_id, kind, target, int(row.n), days)


def open_cohorts_statement(dialect: str, pipeline_id: int, as_of: datetime) -> Select[Any]:
    """Open leads by stage, value band and age band, each aged from the start of its current stay."""
    entered = select(func.max(StageStay.entered_at)).where(StageStay.lead_id == Lead.id).scalar_subquery()
    stage = Stage
    # Each lead's current stay read once, in a CTE kept apart (MATERIALIZED): a subquery the planner
    # folds into the outer one repeats the probe in the age and in every branch of the age band's CASE
    # (up to 13 probes a lead).
    current = (
        select(
            Lead.stage_id.label("stage_id"),
            Lead.value_cents.label("value_cents"),
            entered.label("entered"),
        )
        .join(stage, stage.id == Lead.stage_id)
        .where(
            Lead.pipeline_id == pipeline_id,
            Lead.status == LeadStatus.OPEN,
            stage.is_post_sale.is_(False),
            stage.removed_at.is_(None),
        )
        .cte("current_stays")
        .prefix_with("MATERIALIZED")
    )
    age = days_between(dialect, current.c.entered, at(as_of))
    open_leads = select(
        current.c.stage_id,
        value_band(current.c.value_cents).label("band"),
        current.c.value_cents,
        age.label("age"),
        age_band(age).label("age_band"),
    ).subquery("open_leads")
    return cohorts_of(open_leads)


def cohorts_of(open_leads: Subquery) -> Select[Any]:
    """The cohorts of ``open_leads`` (stage_id, band, value_cents, age, age_band a lead): count, mean
    value and age, and the days summed, by stage, value band and age band."""
    return (
        select(
            open_leads.c.stage_id,
            open_leads.c.band,
            func.count().label("n"),
            cast(func.avg(open_leads.c.value_cents), Float).label("value_cents"),
            cast(func.avg(open_leads.c.age), Float).label("age"),
            cast(func.coalesce(func.sum(open_leads.c.age), 0.0), Float).label("days"),
        )
        .group_by(open_leads.c.stage_id, open_leads.c.band, open_leads.c.age_band)
        .order_by(open_leads.c.stage_id, open_leads.c.band, open_leads.c.age_band)
    )


async def _open_cohorts(session: AsyncSession, dialect: str, pipeline_id: int, as_of: datetime) -> list[Any]:
    return list((await session.execute(open_cohorts_statement(dialect, pipeline_id, as_of))).all())


async def _arrivals_count(
    session: AsyncSession, pipeline_id: int, as_of: datetime, window_days: float
) -> tuple[int, datetime | None]:
    """Leads created in the window, and the first creation: two index ranges of
    ``ix_leads_pipeline_created`` (the window's, and one entry for the minimum), not every lead."""
    start = as_of - timedelta(days=window_days)
    created = (Lead.pipeline_id == pipeline_id, Lead.created_at <= at(as_of))
    statement = select(
        select(func.count()).where(*created, Lead.created_at >= at(start)).scalar_subquery().label("n"),
        select(func.min(Lead.created_at)).where(*created).scalar_subquery().label("first"),
    )
    row = (await session.execute(statement)).one()
    return int(row.n), row.first


async def _won_leads(session: AsyncSession, pipeline_id: int) -> tuple[int, list[int]]:
    """The number of won leads, and the values of the latest ``MAX_DEAL_SAMPLE`` of them: one index
    range (``ix_leads_pipeline_status_closed``), newest first."""
    won = (Lead.pipeline_id == pipeline_id, Lead.status == LeadStatus.WON)
    count = (await session.execute(select(func.count()).where(*won))).scalar_one()
    statement = (
        select(Lead.value_cents)
        .where(*won, Lead.value_cents > 0)
        .order_by(Lead.closed_at.desc(), Lead.id.desc())
        .limit(MAX_DEAL_SAMPLE)
    )
    return int(count), [int(value) for value in (await session.execute(statement)).scalars()]


async def _won_stays(session: AsyncSession, pipeline_id: int, pairs: list[tuple[int, int]]) -> list[int]:
    """The latest wins' values from the stays: per (stage, stage won in), the newest wins from one index
    range, and of those the newest ``MAX_DEAL_SAMPLE``."""
    if not pairs:
        return []
    s = StageStay
    ranges = [
        select(s.left_at, s.history_id, Lead.value_cents)
        .join(Lead, Lead.id == s.lead_id)
        .where(
            s.pipeline_id == pipeline_id,
            s.stage_id == stage_id,
            s.status == LeadStatus.OPEN,
            s.next_stage_id == next_stage_id,
            s.next_status == LeadStatus.WON,
            Lead.value_cents > 0,
        )
        .order_by(s.left_at.desc(), s.history_id.desc())
        .limit(MAX_DEAL_SAMPLE)
        .subquery()
        for stage_id, next_stage_id in sorted(pairs)
    ]
    # Each range as a subquery: SQLite refuses ORDER BY and LIMIT on a compound's own members.
    wins = union_all(*(select(r.c.left_at, r.c.history_id, r.c.value_cents) for r in ranges)).subquery()
    newest = (wins.c.left_at.desc(), wins.c.history_id.desc())
    statement = select(wins.c.value_cents).order_by(*newest).limit(MAX_DEAL_SAMPLE)
    return [int(value) for value in (await session.execute(statement)).scalars()]


async def _won_values(session: AsyncSession, pipeline_id: int, exits: list[Any]) -> list[int]:
    """The deal-size sample. While no win was ever undone (no stay that began with a win ended other
    than won) and every won lead came through a win from OPEN, the wins are the won leads, each closed
    when it was won: read those. Otherwise read the stays that ended in a win."""
    won = [row for row in exits if row.status == _OPEN and row.next_status == _WON]
    undone = any(row.status == _WON and row.next_status != _WON for row in exits)
    if not undone:
        count, values = await _won_leads(session, pipeline_id)
        if count == sum(int(row.n) for row in won):
            return values
    return await _won_stays(session, pipeline_id, [(row.stage_id, row.next_stage_id) for row in won])


async def read_now(
    session: AsyncSession, dialect: str, pipeline_id: int, as_of: datetime, window_days: float
) -> HistoryReads:
    """What ``calibration.read_history`` reads, for an ``as_of`` at or after the last history row."""
    position, counted = await _positions(session, pipeline_id)
    exits = await exits_to_date(session, pipeline_id)
    outcomes = [_outcome(row, position) for row in exits if row.status == _OPEN and row.stage_id in counted]
    cohorts = await _open_cohorts(session, dialect, pipeline_id, as_of)
    open_by_stage: dict[int, tuple[int, float]] = defaultdict(lambda: (0, 0.0))
    for row in cohorts:
        n, days = open_by_stage[row.stage_id]
        open_by_stage[row.stage_id] = (n + int(row.n), days + float(row.days))
    outcomes += [Outcome(stage_id, "open", None, n, days) for stage_id, (n, days) in open_by_stage.items()]
    count, first = await _arrivals_count(session, pipeline_id, as_of, window_days)
    return HistoryReads(
        outcomes=outcomes,
        won_cents=await _won_values(session, pipeline_id, exits),
        arrivals=arrival_fit(count, first, as_of, window_days),
        cohorts=cohorts,
    )


async def calibrate_now(
    session: AsyncSession,
    *,
    pipeline_id: int,
    horizon_days: float,
    window_days: float = DEFAULT_WINDOW_DAYS,
    with_capacity: bool = False,
    segments: bool = False,
) -> Calibration:
    """``calibration.calibrate`` as of now, from the kept totals (:func:`read_now`)."""
    return await calibrate(
        session,
        pipeline_id=pipeline_id,
        horizon_days=horizon_days,
        as_of=utcnow(),
        window_days=window_days,
        with_capacity=with_capacity,
        reader=read_now,
        segments=segments,
    )
