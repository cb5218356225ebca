"""Arrivals that vary in time: a weekday profile and a trend, fitted from the creations before ``as_of``.

Day ``k`` of the window is the 24 hours starting ``k`` days after its start; the forecast's day ``t`` the
24 hours starting ``t`` days after ``as_of`` — so a day's weekday is the weekday of ``as_of`` shifted by
whole days, both in history and in the model (``Arrivals.start_weekday``).

Counts per day are Poisson with mean ``r · w[weekday] · exp(b · t)`` (``t`` in days from ``as_of``,
negative in the window). Weekday weights are the mean count per weekday relative to the mean (the
maximum-likelihood answer given the trend); the trend ``b`` is the maximum-likelihood growth rate given the
weights (Newton steps on one parameter), with its standard error from the observed information. The shape
is read over a long window (calibration passes ``TREND_WINDOW_DAYS``: a trend is invisible in the 90 days
the rate comes from) and the level ``r`` over the recent ``level_days``. Each is kept only when the
history supports it: the weekday profile when a chi-square test of the weekday totals against a flat week
gives p < ``PROFILE_P``, the trend when AIC prefers it (the likelihood-ratio statistic, ``z²`` for one
parameter, above 2), shrunk by ``1 − 1/z²``; otherwise the rate stays flat. A kept trend is capped so
the rate at most doubles or halves over the horizon: extrapolating a trend is the riskiest part of the
forecast. Kept or not, the trend's standard error reaches the spread: ``log_rate_sd`` is the sd of the
log of the horizon's mean rate it implies (the level is read at the recent window's middle and used at
the horizon's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy import stats
from sqlalchemy import Integer, column, func, select, values
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead
from pipegraph.db.types import UTCDateTime
from pipegraph.services.metrics_sql import at

MIN_DAYS = 28  # whole days of history the profile and trend need
MIN_CREATED = 50  # creations in the window they need
PROFILE_P = 0.01
TREND_Z = math.sqrt(2.0)  # AIC: one more parameter is worth it when the log-likelihood gains > 1
TREND_WINDOW_DAYS = 365.0  # history the shape is read from (calibration's choice; the level's is shorter)
MAX_GROWTH = math.log(2.0)  # |b| × horizon at most: the rate at most doubles or halves


@dataclass(frozen=True)
class ArrivalShape:
    """The fitted shape of arrivals: ``None``/0 where the history does not support one."""

    days: int  # whole days of the window used
    created: int  # creations in those days
    weekday: tuple[float, ...] | None  # Monday first, mean 1
    start_weekday: int  # weekday of ``as_of`` (0 = Monday)
    trend_per_day: float
    trend_se: float | None
    rate_per_day: float  # mean rate at ``as_of`` (weekday mean 1)
    log_rate_sd: float = 0.0  # sd of the log of the horizon's mean rate from the trend's uncertainty


async def creation_days(
    session: AsyncSession, pipeline_id: int, as_of: datetime, window_days: float
) -> list[float]:
    """Days from ``as_of`` (negative) of the pipeline's creations in the window."""
    start = as_of - timedelta(days=window_days)
    statement = select(Lead.created_at).where(
        Lead.pipeline_id == pipeline_id, Lead.created_at >= at(start), Lead.created_at <= at(as_of)
    )
    return [(created - as_of).total_seconds() / 86_400 for created in (await session.scalars(statement))]


async def creation_counts(
    session: AsyncSession, dialect: str, pipeline_id: int, as_of: datetime, window_days: float
) -> tuple[dict[int, int], float | None]:
    """What :func:`fit_shape` reads of :func:`creation_days`, counted in the database: the creations per
    day slot (``floor`` of the days from ``as_of``, negative; slots without one left out) and the
    earliest one's days from ``as_of``.

    Each slot is a range of ``ix_leads_pipeline_created`` (on PostgreSQL
    ``ix_leads_pipeline_created_dimensions``) between two timestamps computed here, counted by the
    index alone: no expression is evaluated per creation (585,000 of them at a million leads), and the
    bounds are exact to the microsecond, where a day count computed per row rounds."""
    start = as_of - timedelta(days=window_days)
    slots = range(math.floor(-window_days), 1)
    # Creations at ``as_of`` count (slot 0), later ones not: the last bound is a microsecond after it,
    # the stored precision. Two bounds a slot and no third, or SQLite may range the index by the third.
    end = as_of + timedelta(microseconds=1)
    ranges = [
        (slot, max(as_of + timedelta(days=slot), start), min(as_of + timedelta(days=slot + 1), end))
        for slot in slots
    ]
    columns = (column("slot", Integer), column("low", UTCDateTime()), column("high", UTCDateTime()))
    bounds = values(*columns, name="bounds").data(ranges).cte("bounds")
    count = (
        select(func.count())
        .where(
            Lead.pipeline_id == pipeline_id, Lead.created_at >= bounds.c.low, Lead.created_at < bounds.c.high
        )
        .scalar_subquery()
    )
    # The earliest creation in the same statement: uncorrelated, computed once (one index entry).
    first_created = (
        select(func.min(Lead.created_at))
        .where(Lead.pipeline_id == pipeline_id, Lead.created_at >= at(start), Lead.created_at <= at(as_of))
        .scalar_subquery()
    )
    statement = select(bounds.c.slot, count.label("n"), first_created.label("first"))
    rows = (await session.execute(statement)).all()
    first = rows[0].first  # every row carries it; there is always a slot (0)
    per_slot = {int(row.slot): int(row.n) for row in rows if row.n}
    return per_slot, None if first is None else (first - as_of).total_seconds() / 86_400


def fit_shape(
    days_from_as_of: list[float],
    as_of: datetime,
    window_days: float,
    horizon_days: float,
    *,
    level_days: float | None = None,
) -> ArrivalShape | None:
    """The weekday profile and trend of creations at ``days_from_as_of`` over ``window_days``, the rate
    at ``as_of`` from the last ``level_days`` (default: the whole window); ``None`` with too little
    history. The reference for :func:`fit_counts` of :func:`creation_counts`."""
    slots, counts = np.unique(np.floor(np.asarray(days_from_as_of, dtype=np.float64)), return_counts=True)
    return fit_counts(
        {int(slot): int(n) for slot, n in zip(slots, counts, strict=True)},
        min(days_from_as_of, default=None),
        as_of,
        window_days,
        horizon_days,
        level_days=level_days,
    )


def fit_counts(
    per_slot: Mapping[int, int],
    first: float | None,
    as_of: datetime,
    window_days: float,
    horizon_days: float,
    *,
    level_days: float | None = None,
) -> ArrivalShape | None:
    """:func:`fit_shape` from the creations per day slot (``floor`` of the days from ``as_of``) and the
    earliest creation's days from ``as_of`` (``None``: none)."""
    span = min(int(window_days), int(-(first if first is not None else 0.0)) + 1)
    counts = np.zeros(span)
    for slot, n in per_slot.items():
        if -span <= slot < 0:  # -span .. -1 (0: exactly at as_of)
            counts[slot + span] += n
    if span < MIN_DAYS or counts.sum() < MIN_CREATED:
        return None
    t = np.arange(-span, 0, dtype=np.float64) + 0.5  # each day's middle
    start_weekday = as_of.weekday()
    weekday_of = (start_weekday + np.arange(-span, 0)) % 7
    weights, trend, trend_se = np.ones(7), 0.0, None
    for _ in range(3):  # alternate: weights given the trend, trend given the weights
        exposure = np.bincount(weekday_of, weights=np.exp(trend * t), minlength=7)
        totals = np.bincount(weekday_of, weights=counts, minlength=7)
        weights = np.where(exposure > 0, totals / np.maximum(exposure, 1e-300), 0.0)
        weights = weights / weights.mean() if weights.mean() > 0 else np.ones(7)
        trend, trend_se = _trend(counts, t, weights[weekday_of])
    days_per_weekday = np.bincount(weekday_of, minlength=7).astype(np.float64)
    totals = np.bincount(weekday_of, weights=counts, minlength=7)
    expected = totals.sum() * days_per_weekday / days_per_weekday.sum()
    profile_p = float(stats.chisquare(totals, expected).pvalue)
    keep_profile = profile_p < PROFILE_P
    keep_trend = trend_se is not None and abs(trend) >= TREND_Z * trend_se
    weights = weights if keep_profile else np.ones(7)
    if keep_trend and trend_se is not None:
        # Shrunk by the positive-part James–Stein factor: a kept trend just past the AIC line is mostly
        # noise, and extrapolating noise over the horizon costs more than it gains.
        trend *= 1.0 - (trend_se / trend) ** 2
        trend = float(np.clip(trend, -MAX_GROWTH / horizon_days, MAX_GROWTH / horizon_days))
    else:
        trend = 0.0
    # The rate at as_of: the recent count rescaled by the shape's exposure over those days.
    level = min(span, int(level_days)) if level_days is not None else span
    recent = t > -level
    window_exposure = float(np.sum((weights[weekday_of] * np.exp(trend * t))[recent]))
    lever = level / 2 + horizon_days / 2
    return ArrivalShape(
        days=span,
        created=int(counts.sum()),
        weekday=tuple(float(w) for w in weights) if keep_profile else None,
        start_weekday=start_weekday,
        trend_per_day=trend,
        trend_se=trend_se,
        rate_per_day=float(counts[recent].sum()) / window_exposure,
        log_rate_sd=trend_se * lever if trend_se is not None else 0.0,
    )


def _trend(counts: np.ndarray, t: np.ndarray, weights: np.ndarray) -> tuple[float, float | None]:
    """Maximum-likelihood b of counts ~ Poisson(a · weights · exp(b t)), ``a`` profiled out."""
    b = 0.0
    for _ in range(30):
        mass = weights * np.exp(b * t)
        if mass.sum() <= 0:
            return 0.0, None
        share = mass / mass.sum()
        mean_t = float(share @ t)
        score = float(counts @ t) - counts.sum() * mean_t
        information = counts.sum() * float(share @ (t - mean_t) ** 2)
        if information <= 0:
            return 0.0, None
        step = score / information
        b += step
        if abs(step) < 1e-10:
            break
    return b, 1.0 / math.sqrt(information)
