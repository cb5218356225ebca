"""Which leads convert: core outcome figures broken down by owner, source or qualification score,
and a weekly or monthly time series for charts.

Same definitions as ``pipegraph.services.metrics``: created counts leads created in ``[start, end)``;
won and lost count leads whose current status is WON or LOST and whose last ``closed_at`` falls in
the window; open counts leads open now. One statement per call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, case, cast, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from pipegraph.db.models import Lead, LeadStatus, User
from pipegraph.services.metrics import check_window
from pipegraph.services.metrics_sql import Interval, at, bucket_start, days_between

_DAY_DIGITS = 6


class Dimension(enum.StrEnum):
    OWNER = "OWNER"
    SOURCE = "SOURCE"
    SCORE = "SCORE"


@dataclass(frozen=True, slots=True)
class Breakdown:
    key: str | None
    label: str
    created: int
    won_count: int
    won_value_cents: int
    lost_count: int
    lost_value_cents: int
    win_rate: float | None
    avg_won_deal_cents: int | None
    avg_sales_cycle_days: float | None
    open_count: int
    open_value_cents: int


@dataclass(frozen=True, slots=True)
class TimeBucket:
    start: str
    created: int
    won_count: int
    won_value_cents: int
    lost_count: int
    # Of the leads created in this bucket, the share won by now.
    cohort_won: int
    cohort_conversion: float | None


def _sum_if(condition: ColumnElement[bool], value: Any = 1) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, value), else_=0)), 0)


def _dimension(dimension: Dimension) -> tuple[Any, Any]:
    if dimension is Dimension.OWNER:
        return cast(Lead.owner_id, String), func.coalesce(User.name, "Unassigned")
    if dimension is Dimension.SOURCE:
        return Lead.source, case((Lead.source == "", "(no source)"), else_=Lead.source)
    score = cast(Lead.qualification_score, String)
    return score, score


async def breakdown(
    session: AsyncSession,
    *,
    pipeline_id: int,
    start: datetime,
    end: datetime,
    by: Dimension,
) -> list[Breakdown]:
    """Core figures per owner, source or qualification score, largest ``created`` first."""
    check_window(start, end, None)
    dialect = session.get_bind().dialect.name
    key, label = _dimension(by)
    created = and_(Lead.created_at >= at(start), Lead.created_at < at(end))
    closed = and_(Lead.closed_at >= at(start), Lead.closed_at < at(end))
    won = and_(closed, Lead.status == LeadStatus.WON)
    lost = and_(closed, Lead.status == LeadStatus.LOST)
    is_open = Lead.status == LeadStatus.OPEN
    statement = (
        select(
            key.label("key"),
            label.label("label"),
            _sum_if(created).label("created"),
            _sum_if(won).label("won"),
            _sum_if(won, Lead.value_cents).label("won_value"),
            _sum_if(lost).label("lost"),
            _sum_if(lost, Lead.value_cents).label("lost_value"),
            func.sum(case((won, days_between(dialect, Lead.created_at, Lead.closed_at)))).label("cycle"),
            _sum_if(is_open).label("open"),
            _sum_if(is_open, Lead.value_cents).label("open_value"),
        )
        .where(Lead.pipeline_id == pipeline_id, or_(created, closed, is_open))
        .group_by(key, label)
        .order_by(_sum_if(created).desc(), key)
    )
    if by is Dimension.OWNER:
        statement = statement.outerjoin(User, User.id == Lead.owner_id)
    rows = (await session.execute(statement)).all()
    return [
        Breakdown(
            key=row.key,
            label=row.label,
            created=row.created,
            won_count=row.won,
            won_value_cents=int(row.won_value),
            lost_count=row.lost,
            lost_value_cents=int(row.lost_value),
            win_rate=row.won / (row.won + row.lost) if row.won + row.lost else None,
            avg_won_deal_cents=round(row.won_value / row.won) if row.won else None,
            avg_sales_cycle_days=round(row.cycle / row.won, _DAY_DIGITS) if row.won else None,
            open_count=row.open,
            open_value_cents=int(row.open_value),
        )
        for row in rows
    ]


async def time_series(
    session: AsyncSession,
    *,
    pipeline_id: int,
    start: datetime,
    end: datetime,
    interval: Interval,
) -> list[TimeBucket]:
    """Created, won and lost per week (Monday-based, UTC) or month, oldest first; empty buckets omitted."""
    check_window(start, end, None)
    dialect = session.get_bind().dialect.name
    created_bucket = bucket_start(dialect, Lead.created_at, interval)
    closed_bucket = bucket_start(dialect, Lead.closed_at, interval)
    in_pipeline = Lead.pipeline_id == pipeline_id
    by_creation = (
        select(
            created_bucket.label("bucket"),
            func.count().label("created"),
            _sum_if(Lead.status == LeadStatus.WON).label("cohort_won"),
            literal(0).label("won"),
            literal(0).label("won_value"),
            literal(0).label("lost"),
        )
        .where(in_pipeline, Lead.created_at >= at(start), Lead.created_at < at(end))
        .group_by(created_bucket)
    )
    by_closing = (
        select(
            closed_bucket.label("bucket"),
            literal(0).label("created"),
            literal(0).label("cohort_won"),
            _sum_if(Lead.status == LeadStatus.WON).label("won"),
            _sum_if(Lead.status == LeadStatus.WON, Lead.value_cents).label("won_value"),
            _sum_if(Lead.status == LeadStatus.LOST).label("lost"),
        )
        .where(
            in_pipeline,
            Lead.status.in_([LeadStatus.WON, LeadStatus.LOST]),
            Lead.closed_at >= at(start),
            Lead.closed_at < at(end),
        )
        .group_by(closed_bucket)
    )
    both = union_all(by_creation, by_closing).subquery("both")
    statement = (
        select(
            both.c.bucket,
            func.sum(both.c.created).label("created"),
            func.sum(both.c.cohort_won).label("cohort_won"),
            func.sum(both.c.won).label("won"),
            func.sum(both.c.won_value).label("won_value"),
            func.sum(both.c.lost).label("lost"),
        )
        .group_by(both.c.bucket)
        .order_by(both.c.bucket)
    )
    rows = (await session.execute(statement)).all()
    return [
        TimeBucket(
            start=str(row.bucket),
            created=int(row.created),
            won_count=int(row.won),
            won_value_cents=int(row.won_value),
            lost_count=int(row.lost),
            cohort_won=int(row.cohort_won),
            cohort_conversion=int(row.cohort_won) / int(row.created) if row.created else None,
        )
        for row in rows
    ]
