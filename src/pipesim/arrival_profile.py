"""Poisson arrivals whose rate varies in time: a weekday profile and an exponential trend.

The rate at day ``t`` is ``r · w[(s + ⌊t⌋) mod 7] · exp(b·t)``. Its integral over each day has a closed
form, so the expected count is exact and arrival times are drawn by inverting the cumulative rate:
given ``N`` arrivals in the horizon, each is independent with density ``λ(t) / Λ(H)``, so a uniform ``u``
maps to ``Λ⁻¹(u · Λ(H))`` — one uniform per arrival, as with a constant rate (where this is ``u · H``).
"""

from __future__ import annotations

import math

import numpy as np

from pipesim.distributions import Array
from pipesim.spec import Arrivals


def _day_bounds(horizon_days: float) -> Array:
    days = math.ceil(horizon_days)
    bounds = np.arange(days + 1, dtype=np.float64)
    bounds[-1] = horizon_days
    return bounds


def _day_weights(arrivals: Arrivals, days: int) -> Array:
    if arrivals.weekday is None:
        return np.ones(days)
    profile = np.asarray(arrivals.weekday, dtype=np.float64)
    return profile[(arrivals.start_weekday + np.arange(days)) % 7]


def _growth(b: float, low: Array, high: Array) -> Array:
    """∫ exp(b·t) dt from ``low`` to ``high``."""
    if b == 0.0:
        return high - low
    return (np.exp(b * high) - np.exp(b * low)) / b


def cumulative(arrivals: Arrivals, horizon_days: float) -> Array:
    """Λ at the start of each day and at the horizon (length ⌈H⌉ + 1), rate factor 1."""
    bounds = _day_bounds(horizon_days)
    weights = _day_weights(arrivals, len(bounds) - 1)
    per_day = arrivals.rate_per_day * weights * _growth(arrivals.trend_per_day, bounds[:-1], bounds[1:])
    return np.concatenate([[0.0], np.cumsum(per_day)])


def expected_count(arrivals: Arrivals, horizon_days: float) -> float:
    """Expected arrivals within the horizon at the stated rate (before any rate uncertainty)."""
    if arrivals.kind == "batch":
        return float(arrivals.count)
    if not arrivals.varies:
        return arrivals.rate_per_day * horizon_days
    return float(cumulative(arrivals, horizon_days)[-1])


def arrival_times(arrivals: Arrivals, horizon_days: float, u: Array) -> Array:
    """Arrival times for uniforms ``u``, by inversion of the cumulative rate."""
    if not arrivals.varies:
        return u * horizon_days
    total = cumulative(arrivals, horizon_days)
    if total[-1] <= 0:
        return np.zeros_like(u)
    target = u * total[-1]
    day = np.clip(np.searchsorted(total, target, side="right") - 1, 0, len(total) - 2)
    left = target - total[day]
    weight = _day_weights(arrivals, len(total) - 1)[day] * arrivals.rate_per_day
    b = arrivals.trend_per_day
    start = day.astype(np.float64)
    safe = np.where(weight > 0, weight, 1.0)
    times = start + left / safe if b == 0.0 else np.log(np.exp(b * start) + left * b / safe) / b
    return np.asarray(np.clip(np.where(weight > 0, times, start), 0.0, horizon_days), dtype=np.float64)
