"""Kaplan–Meier against a hand computation and against the exact survival of a known law."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipesim.survival import kaplan_meier, survival_at


def test_a_small_sample_by_hand() -> None:
    points = kaplan_meier([1, 2, 2, 4], [2, 3])
    assert [(p.days, p.at_risk, p.exits) for p in points] == [(1, 6, 1), (2, 5, 2), (4, 1, 1)]
    assert [p.survival for p in points] == pytest.approx([5 / 6, 0.5, 0.0])
    assert points[0].standard_error == pytest.approx(5 / 6 * math.sqrt(1 / 30))
    assert points[1].standard_error == pytest.approx(0.5 * math.sqrt(1 / 30 + 2 / 15))
    assert survival_at(points, 0.5) == 1.0
    assert survival_at(points, 3.0) == 0.5


def test_the_estimate_follows_the_true_survival_within_four_standard_errors() -> None:
    rng = np.random.default_rng(8)
    truth = stats.weibull_min(0.7, scale=10.0)
    days = truth.rvs(size=4_000, random_state=rng)
    follow_up = rng.exponential(25.0, size=4_000)
    ended = days <= follow_up
    observed = np.minimum(days, follow_up)
    points = kaplan_meier(observed[ended], observed[~ended])
    for t in (1.0, 5.0, 10.0, 20.0, 40.0):
        point = max((p for p in points if p.days <= t), key=lambda p: p.days)
        assert 0 < point.standard_error < 0.02
        assert abs(point.survival - float(truth.sf(t))) < 4 * point.standard_error, t
