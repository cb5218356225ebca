"""The few SQL expressions that differ between SQLite and PostgreSQL, for the metrics queries.

Everything else in the metrics is portable SQLAlchemy Core; keeping the differences here means the
two backends are compared in one place: durations in days, session settings and calendar buckets.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Text, cast, func, literal
from sqlalchemy.sql.elements import ColumnElement

from pipegraph.db.types import UTCDateTime

SECONDS_PER_DAY = 86_400


class Interval(enum.StrEnum):
    WEEK = "WEEK"
    MONTH = "MONTH"


def at(value: datetime) -> ColumnElement[datetime]:
    """A bound timestamp typed like the columns, so SQLite compares stored text with stored text."""
    return literal(value, UTCDateTime())


def compared(dialect: str, column: Any) -> ColumnElement[Any]:
    """A timestamp column as a row-by-row comparison should read it.

    SQLite gives a DATETIME column NUMERIC affinity, so each comparison with a bound value first tries
    to parse the stored text as a number; as TEXT it compares the stored text directly (its format
    sorts like the time, and bound values are written in the same format). Index range bounds are
    not affected: use the bare column there, or the index is not used.
    """
    return cast(column, Text) if dialect == "sqlite" else column


def days_between(dialect: str, start: Any, end: Any) -> ColumnElement[float]:
    """``end - start`` in fractional days."""
    if dialect == "sqlite":
        return cast(func.julianday(end) - func.julianday(start), Float)
    # date_part returns double precision; EXTRACT would return numeric (PostgreSQL 14+), several times
    # slower per row.
    return cast(func.date_part("epoch", end - start) / SECONDS_PER_DAY, Float)


def analytic_settings(dialect: str) -> str | None:
    """A statement that tunes this transaction for the metrics' large sorts, or None.

    On PostgreSQL: JIT compilation costs more than it saves on these statements (its cost estimate is
    inflated by the per-row index lookups), and the window sort spills to disk at the default 4 MB
    work_mem. The statements are prepared and run again and again with other windows: after five runs
    PostgreSQL may switch to a generic plan, made without the bounds' values, which reads the wrong
    index for a range of a few hours (seen: a call 5 times as long); a custom plan costs a millisecond.
    ``set_config(..., true)`` applies to the current transaction only.
    """
    if dialect == "sqlite":
        return None
    return (
        "SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true), "
        "set_config('plan_cache_mode', 'force_custom_plan', true)"
    )


def bucket_start(dialect: str, column: Any, interval: Interval) -> ColumnElement[str]:
    """The first day of the UTC week (Monday) or month holding ``column``, as ``YYYY-MM-DD`` text."""
    if dialect == "sqlite":
        if interval is Interval.MONTH:
            return func.strftime("%Y-%m-01", column)
        # 'weekday 1' moves forward to the next Monday (or stays), so step back six days first.
        return func.date(column, "-6 days", "weekday 1")
    unit = "month" if interval is Interval.MONTH else "week"
    return func.to_char(func.date_trunc(unit, func.timezone("UTC", column)), "YYYY-MM-DD")
