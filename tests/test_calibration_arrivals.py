"""The weekday profile and trend of arrivals fitted from creation times, and the calibrated model stating
its parameter uncertainty and the arrivals' shape."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pipegraph.db.session import Store
from pipegraph.services.forecasting.arrivals import creation_counts, creation_days, fit_counts, fit_shape
from pipegraph.services.forecasting.calibration import calibrate
from pipegraph.services.forecasting.synthetic import TruePipeline, generate, write_history
from pipesim.arrival_profile import expected_count

AS_OF = datetime(2024, 6, 5, 9, 30, tzinfo=UTC)  # a Wednesday
ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday, as in the synthetic generator
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
    # AIC keeps a trend that is not there in ~16 % of histories (|z| > √2), the profile test at 1 %:
    # 16.7 flat ones expected of 20, sd 1.7.
    assert flat >= 12


def test_too_little_history_fits_nothing() -> None:
    assert fit_shape([-1.5, -2.5], AS_OF, 90, 90) is None
    assert fit_shape(_creations(np.random.default_rng(1), 10.0, 0.0, np.ones(7), 20), AS_OF, 90, 90) is None


def test_trend_is_capped_so_the_rate_at_most_doubles_over_the_horizon() -> None:
    shape = fit_shape(_creations(np.random.default_rng(2), 5.0, 0.03, np.ones(7), 120), AS_OF, 120, 90)
    assert shape is not None
    assert 0 < shape.trend_per_day <= np.log(2) / 90 + 1e-12


# A weekday-shaped stream (Monday-first profile; the origin is a Monday).
WEEKLY = TruePipeline(
    conversions=(0.6, 0.5),
    mean_days=(6.0, 9.0),
    arrivals_per_day=8.0,
    deal_mean=2_000.0,
    deal_sd=800.0,
    weekday_profile=(1.3, 1.2, 1.1, 1.0, 0.9, 0.3, 0.2),
)


async def test_calibration_states_its_uncertainty_and_the_arrival_shape_in_the_model(store: Store) -> None:
    # A weekday-shaped, growing stream (Monday-first profile; the origin is a Monday) over 240 days.
    truth = WEEKLY
    lives = generate(truth, np.random.default_rng(9), 240.0)
    pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=240.0)
    as_of = ORIGIN + timedelta(days=240)
    async with store.read() as session:
        result = await calibrate(session, pipeline_id=pipeline_id, horizon_days=90, as_of=as_of)
        flat = await calibrate(
            session,
            pipeline_id=pipeline_id,
            horizon_days=90,
            as_of=as_of,
            parameter_uncertainty=False,
            arrival_shape=False,
        )
    model, report = result.model, result.report
    for stage, fit in zip(model.stages, report.stages, strict=True):
        assert fit.mean_days_se is not None
        assert stage.time_uncertainty == pytest.approx(fit.mean_days_se / fit.mean_days)
    assert report.deal_size.mean_se is not None
    assert model.deal_size_uncertainty == pytest.approx(report.deal_size.mean_se / report.deal_size.mean)
    # The count's Poisson error and the trend's: the horizon's rate is read from the window's level.
    assert report.arrivals.shape is not None
    expected = math.hypot(1 / math.sqrt(report.arrivals.created), report.arrivals.shape.log_rate_sd)
    assert model.arrivals.rate_uncertainty == pytest.approx(expected)
    assert model.arrivals.weekday is not None
    assert model.arrivals.start_weekday == as_of.weekday()
    profile = np.array(truth.weekday_profile) / np.mean(truth.weekday_profile)
    # ~700 leads in 90 days, ~100 per weekday: each weight within ~4 Poisson SEs (about 40 %).
    assert np.allclose(model.arrivals.weekday, profile, rtol=0.4)
    # The old model: no uncertainty beyond conversion and a flat rate.
    assert not flat.model.has_parameter_uncertainty
    assert not flat.model.arrivals.varies
    # Without the trend, both models expect about the same number of new leads over 13 whole weeks.
    shaped = replace(model.arrivals, trend_per_day=0.0)
    assert expected_count(shaped, 91) == pytest.approx(flat.model.arrivals.rate_per_day * 91, rel=0.1)


async def test_creations_counted_per_day_in_the_database_give_the_shape_of_the_rows(store: Store) -> None:
    """``creation_counts`` (index ranges between bounds computed once) against ``creation_days`` (a row
    a creation) slotted in Python: the same slots and earliest creation, so the same fitted shape, at
    several cut-offs (whole and fractional days, a window longer than the history)."""
    truth = WEEKLY
    lives = generate(truth, np.random.default_rng(13), 120.0)
    pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=120.0)
    dialect = store.engine.dialect.name
    async with store.read() as session:
        for as_of, window in (
            (ORIGIN + timedelta(days=120), 365.0),
            (ORIGIN + timedelta(days=100, hours=7, microseconds=123), 90.0),
            (ORIGIN + timedelta(days=60.25), 45.5),
        ):
            days = await creation_days(session, pipeline_id, as_of, window)
            per_slot, first = await creation_counts(session, dialect, pipeline_id, as_of, window)
            slots, counts = np.unique(np.floor(days), return_counts=True)
            assert per_slot == {int(s): int(n) for s, n in zip(slots, counts, strict=True)}
            assert first == min(days)
            reference = fit_shape(days, as_of, window, 90, level_days=30)
            assert reference is not None
            assert fit_counts(per_slot, first, as_of, window, 90, level_days=30) == reference
        empty = await creation_counts(session, dialect, pipeline_id, ORIGIN - timedelta(days=1), 30)
        assert empty == ({}, None)
        assert fit_counts(*empty, ORIGIN, 30, 90) is None
