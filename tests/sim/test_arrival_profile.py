"""Arrivals with a weekday profile and a trend: exact expected counts, on both engines.

Every lead converts at once (fixed zero time, certain conversion, deal 1), so cumulative revenue by week
is the number of arrivals so far; its mean must equal the integral of the rate up to each week's end,
computed here day by day with ``scipy.integrate.quad`` (independent of the engine's closed form), within
4 standard errors. The count up to day ``t`` is Poisson, so its SE is ``sqrt(Λ(t) / trials)``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate

from pipesim import Fixed, FixedProbability, Model, Reps, Stage
from pipesim.arrival_profile import arrival_times, expected_count
from pipesim.errors import ModelError
from pipesim.questions import forecast
from pipesim.spec import Arrivals, from_mapping

WEEKDAY = (1.4, 1.2, 1.1, 1.0, 0.9, 0.2, 0.1)  # Monday first
RATE, TREND, START, HORIZON = 3.0, 0.02, 3, 45.5


def _arrivals() -> Arrivals:
    return Arrivals("poisson", rate_per_day=RATE, weekday=WEEKDAY, start_weekday=START, trend_per_day=TREND)


def _rate(t: float) -> float:
    return RATE * WEEKDAY[(START + math.floor(t)) % 7] * math.exp(TREND * t)


def _expected_by(day: float) -> float:
    edges = [*range(0, math.ceil(day)), day]
    return sum(float(integrate.quad(_rate, a, min(b, day))[0]) for a, b in itertools.pairwise(edges))


def test_expected_count_is_the_integral_of_the_rate() -> None:
    assert expected_count(_arrivals(), HORIZON) == pytest.approx(_expected_by(HORIZON), rel=1e-10)


def test_arrival_times_invert_the_cumulative_rate() -> None:
    u = np.linspace(0.001, 0.999, 400)
    times = arrival_times(_arrivals(), HORIZON, u)
    total = _expected_by(HORIZON)
    for t, level in zip(times[::37], u[::37], strict=False):
        assert _expected_by(float(t)) == pytest.approx(level * total, rel=1e-8)


@pytest.mark.parametrize(
    ("engine", "trials", "reps"),
    [("vectorized", 20_000, None), ("des", 1_500, None), ("queue", 5_000, Reps(count=1))],
)
def test_weekly_counts_match_the_exact_expectation(engine: str, trials: int, reps: Reps | None) -> None:
    # With [reps] (queue engine) a lead holds its slot for no time at all: nobody waits.
    model = Model(
        stages=(Stage("signed", FixedProbability(1.0), Fixed(0.0)),),
        deal_size=Fixed(1.0),
        arrivals=_arrivals(),
        horizon_days=HORIZON,
        reps=reps,
    )
    result = forecast(model, trials, seed=11, engine=engine)
    assert result.revenue.mean == pytest.approx(
        _expected_by(HORIZON), abs=4 * math.sqrt(_expected_by(HORIZON) / trials)
    )
    days = [band.day for band in result.revenue_by_week]
    assert days == [7.0, 14.0, 21.0, 28.0, 35.0, 42.0, HORIZON]
    # The fan's median must track the exact expected count (Poisson medians sit within 1 of the mean).
    for band in result.revenue_by_week:
        assert abs(band.p50 - _expected_by(band.day)) <= 1.0
        assert band.p10 <= band.p50 <= band.p90


def test_weekly_mean_counts_match_on_the_vectorized_engine() -> None:
    from pipesim import simulate

    model = Model(
        stages=(Stage("signed", FixedProbability(1.0), Fixed(0.0)),),
        deal_size=Fixed(1.0),
        arrivals=_arrivals(),
        horizon_days=HORIZON,
    )
    _, out = simulate(model, 20_000, seed=5)
    assert out.revenue_by_day is not None
    for column, day in enumerate([7.0, 14.0, 21.0, 28.0, 35.0, 42.0, HORIZON]):
        expected = _expected_by(day)
        assert abs(out.revenue_by_day[:, column].mean() - expected) < 4 * math.sqrt(expected / 20_000)


@pytest.mark.parametrize(
    ("arrivals", "path"),
    [
        ({"kind": "poisson", "rate_per_day": 1, "weekday": [1, 1, 1]}, "arrivals.weekday"),
        ({"kind": "poisson", "rate_per_day": 1, "weekday": [1, 1, 1, 1, 1, 1, -2]}, "arrivals.weekday[6]"),
        ({"kind": "poisson", "rate_per_day": 1, "start_weekday": 7}, "arrivals.start_weekday"),
        ({"kind": "poisson", "rate_per_day": 1, "trend_per_day": 5}, "arrivals.trend_per_day"),
        ({"kind": "batch", "count": 3, "trend_per_day": 0.1}, "arrivals.trend_per_day"),
    ],
)
def test_bad_arrivals_are_refused_naming_the_field(arrivals: dict[str, object], path: str) -> None:
    data = {
        "horizon_days": 30,
        "arrivals": arrivals,
        "deal_size": 1,
        "stages": [{"name": "a", "conversion": 1}],
    }
    with pytest.raises(ModelError) as caught:
        from_mapping(data)
    assert path in [issue.path for issue in caught.value.issues]


def test_profile_round_trips_through_the_model_file() -> None:
    model = Model(
        stages=(Stage("signed", FixedProbability(1.0), Fixed(0.0)),),
        deal_size=Fixed(1.0),
        arrivals=_arrivals(),
        horizon_days=HORIZON,
    )
    assert from_mapping(model.to_mapping()) == model
