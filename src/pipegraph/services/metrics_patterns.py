"""Which leads convert: core outcome figures broken down by owner, source or qualification score,
and a weekly or monthly time series for charts.

Same definitions as ``pipegraph.services.metrics``: created counts leads created in ``[start, end)``;
won and lost count leads whose current status is WON or LOST and whose last ``closed_at`` falls in
the window; open counts leads open now. One statement per call (a breakdown on PostgreSQL issues
``analytic_settings`` first).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, case, cast, func, literal, null, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from pipegraph.db.models import Lead, LeadStatus, User
from pipegraph.services.metrics import check_window
from pipegraph.services.metrics_sql import Interval, analytic_settings, at, bucket_start, days_between

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


def _closed_in(pipeline_id: int, start: datetime, end: datetime) -> tuple[ColumnElement[bool], ...]:
    """Leads won or lost with their last ``closed_at`` in ``[start, end)``: index ranges, one per status."""
    return (
        Lead.pipeline_id == pipeline_id,
        Lead.status.in_([LeadStatus.WON, LeadStatus.LOST]),
        Lead.closed_at >= at(start),
        Lead.closed_at < at(end),
    )


def _group_key(dimension: Dimension) -> Any:
    if dimension is Dimension.OWNER:
        return Lead.owner_id
    if dimension is Dimension.SOURCE:
        return Lead.source
    return Lead.qualification_score


def _labelled(dimension: Dimension, key: Any) -> tuple[Any, Any]:
    """The grouped column as the text ``key`` and its ``label``."""
    if dimension is Dimension.OWNER:
        return cast(key, String), func.coalesce(User.name, "Unassigned")
    if dimension is Dimension.SOURCE:
        return key, case((key == "", "(no source)"), else_=key)
    return cast(key, String), cast(key, String)


async def breakdown(
    session: AsyncSession,
    *,
    pipeline_id: int,
    start: datetime,
    end: datetime,
    by: Dimension,
) -> list[Breakdown]:
    """Core figures per owner, source or qualification score, largest ``created`` first.

    Three index ranges stacked with UNION ALL, each giving only its own figures (created; won and
    lost; open), so a lead in two of them counts once in each figure. The two indexes the ranges
    read hold every dimension, so no lead row is read; one ``created OR closed OR open`` filter
    instead read or looked up each lead. The statuses are OPEN, WON and LOST only, so a lead closed
    in the window and open now is in the open range.
    """
    check_window(start, end, None)
    dialect = session.get_bind().dialect.name
    settings = analytic_settings(dialect)
    if settings is not None:
        # At a few million leads the estimated cost starts JIT compilation, which alone takes longer
        # than the statement.
        await session.execute(text(settings))
    key = _group_key(by)
    in_pipeline = Lead.pipeline_id == pipeline_id
    won = Lead.status == LeadStatus.WON
    zero = literal(0, BigInteger)
    created = (
        select(
            key.label("key"),
            func.count().label("created"),
            *(zero.label(name) for name in ("won", "won_value", "lost", "lost_value")),
            null().label("cycle"),
            *(zero.label(name) for name in ("open", "open_value")),
        )
        .where(in_pipeline, Lead.created_at >= at(start), Lead.created_at < at(end))
        .group_by(key)
    )
    closed = (
        select(
            key.label("key"),
            zero.label("created"),
            _sum_if(won).label("won"),
            _sum_if(won, Lead.value_cents).label("won_value"),
            _sum_if(~won).label("lost"),
            _sum_if(~won, Lead.value_cents).label("lost_value"),
            func.sum(case((won, days_between(dialect, Lead.created_at, Lead.closed_at)))).label("cycle"),
            *(zero.label(name) for name in ("open", "open_value")),
        )
        .where(*_closed_in(pipeline_id, start, end))
        .group_by(key)
    )
    # Not grouped on its own: with ANALYZE statistics, SQLite would rather read the whole table in
    # ix_leads_owner order, to skip sorting, than this range of the open leads.
    is_open = select(
        key.label("key"),
        *(zero.label(name) for name in ("created", "won", "won_value", "lost", "lost_value")),
        null().label("cycle"),
        literal(1, BigInteger).label("open"),
        Lead.value_cents.label("open_value"),
    ).where(in_pipeline, Lead.status == LeadStatus.OPEN)
    # The closed part first: its column types (a float cycle) fix the union's on PostgreSQL.
    parts = union_all(closed, created, is_open).subquery("parts")
    figures = ("created", "won", "won_value", "lost", "lost_value", "cycle", "open", "open_value")
    totals = (
        select(parts.c.key, *(func.sum(parts.c[name]).label(name) for name in figures))
        .group_by(parts.c.key)
        .subquery("totals")
    )
    text_key, label = _labelled(by, totals.c.key)
    statement = select(
        text_key.label("key"), label.label("label"), *(totals.c[name] for name in figures)
    ).order_by(totals.c.created.desc(), text_key)
    if by is Dimension.OWNER:
        # Joined after grouping: one user lookup per owner, not per lead.
        statement = statement.select_from(totals.outerjoin(User, User.id == totals.c.key))
    rows = (await session.execute(statement)).all()
    breakdowns = []
    for row in rows:
        # PostgreSQL sums bigints as numeric: counts back to int, values kept as the division reads them.
        won_count, lost_count = int(row.won), int(row.lost)
        breakdowns.append(
            Breakdown(
                key=row.key,
                label=row.label,
                created=int(row.created),
                won_count=won_count,
                won_value_cents=int(row.won_value),
                lost_count=lost_count,
                lost_value_cents=int(row.lost_value),
                win_rate=won_count / (won_count + lost_count) if won_count + lost_count else None,
                avg_won_deal_cents=round(row.won_value / won_count) if won_count else None,
                avg_sales_cycle_days=round(row.cycle / won_count, _DAY_DIGITS) if won_count else None,
                open_count=int(row.open),
                open_value_cents=int(row.open_value),
            )
        )
    return breakdowns


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
        .where(*_closed_in(pipeline_id, start, end))
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
