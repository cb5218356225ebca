"""Kaplan–Meier: the share of stays still running after t days, read straight from the data.

Where :mod:`pipesim.fitting` assumes a family, this assumes none, so the dashboard can draw both and a
planner can see whether the fitted curve follows the observed one. Running stays (right-censored)
leave the risk set at their length without counting as exits; ties put exits before censorings, the
usual convention. Greenwood's formula gives each point's standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SurvivalPoint:
    days: float  # an exit time
    at_risk: int  # stays that had lasted at least this long
    exits: int  # stays that ended at exactly this length
    survival: float  # share of stays lasting longer than ``days``
    standard_error: float  # Greenwood


def kaplan_meier(
    exits: Sequence[float] | np.ndarray, running: Sequence[float] | np.ndarray
) -> list[SurvivalPoint]:
    """The product-limit estimate, one point per distinct exit time."""
    ended = np.asarray(exits, dtype=np.float64)
    censored = np.asarray(running, dtype=np.float64)
    times, exit_counts = np.unique(ended, return_counts=True)
    lengths = np.sort(np.concatenate([ended, censored]))
    # Stays of at least ``t`` days: everything from the first length >= t on.
    at_risk = len(lengths) - np.searchsorted(lengths, times, side="left")
    points: list[SurvivalPoint] = []
    survival, greenwood = 1.0, 0.0
    for t, n, d in zip(times, at_risk, exit_counts, strict=True):
        survival *= 1.0 - d / n
        greenwood += d / (n * (n - d)) if n > d else math.inf
        error = survival * math.sqrt(greenwood) if math.isfinite(greenwood) else 0.0
        points.append(SurvivalPoint(float(t), int(n), int(d), survival, error))
    return points


def survival_at(points: Sequence[SurvivalPoint], days: float) -> float:
    """The step function's value at ``days`` (1 before the first exit)."""
    value = 1.0
    for point in points:
        if point.days > days:
            break
        value = point.survival
    return value
