"""The weekday profile and trend of arrivals, fitted from creation times (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from pipegraph.services.forecasting.arrivals import fit_shape

AS_OF = datetime(2024, 6, 5, 9, 30, tzinfo=UTC)  # a Wednesday
PROFILE = np.array([1.4, 1.2, 1.1, 1.0, 0.9, 0.25, 0.15])
PROFILE = PROFILE / PROFILE.mean()


def _creations(
    rng: np.random.Generator, rate: float, trend: float, profile: np.ndarray, days: int
) -> list[float]:
    found: list[float] = []
    for day in range(-days, 0):
        weekday = (AS_OF.weekday() + day) % 7
        mean = rate * profile[weekday] * np.exp(trend * (day + 0.5))
        found += list(day + rng.random(rng.poisson(mean)))
    return found


def test_profile_and_trend_recovered_within_4_se() -> None:
    trends: list[float] = []
    ses: list[float] = []
    weights: list[tuple[float, ...]] = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        shape = fit_shape(_creations(rng, 20.0, 0.004, PROFILE, 180), AS_OF, 180, 90)
        assert shape is not None
        assert shape.weekday is not None
        trends.append(shape.trend_per_day)
        assert shape.trend_se is not None
        ses.append(shape.trend_se)
        weights.append(shape.weekday)
    assert abs(np.mean(trends) - 0.004) < 4 * np.mean(ses) / np.sqrt(20)
    # Each weekday weight is a ratio of Poisson totals of ~500–2,500 leads: a few per cent per fit.
    assert np.allclose(np.mean(weights, axis=0), PROFILE, rtol=0.04)
    # The reported SE matches the spread of the repeated fits within the SE of an sd from 20 fits.
    assert abs(np.std(trends, ddof=1) - np.mean(ses)) < 4 * np.mean(ses) / np.sqrt(2 * 19)


def test_flat_arrivals_keep_a_flat_rate_in_most_histories() -> None:
    flat = 0
    for seed in range(20):
        shape = fit_shape(_creations(np.random.default_rng(seed), 5.0, 0.0, np.ones(7), 90), AS_OF, 90, 90)
        assert shape is not None
        flat += shape.weekday is None and shape.trend_per_day == 0.0
        if shape.weekday is None and shape.trend_per_day == 0.0:
            assert abs(shape.rate_per_day * 90 - shape.created) < 1e-6
    assert flat >= 15  # tests at 1 % and 2 SE: a few false alarms in 20 are expected


def test_too_little_history_fits_nothing() -> None:
    assert fit_shape([-1.5, -2.5], AS_OF, 90, 90) is None
    assert fit_shape(_creations(np.random.default_rng(1), 10.0, 0.0, np.ones(7), 20), AS_OF, 90, 90) is None


def test_trend_is_capped_so_the_rate_at_most_doubles_over_the_horizon() -> None:
    shape = fit_shape(_creations(np.random.default_rng(2), 5.0, 0.03, np.ones(7), 120), AS_OF, 120, 90)
    assert shape is not None
    assert 0 < shape.trend_per_day <= np.log(2) / 90 + 1e-12
