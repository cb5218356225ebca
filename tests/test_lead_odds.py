"""Per-lead odds of winning within a horizon, against closed forms."""

from __future__ import annotations

import math

from scipy import stats

from pipegraph.services.forecasting.lead_odds import SAMPLES, win_probability
from pipesim import Arrivals, BetaProbability, Exponential, Fixed, Model, Stage, Weibull


def _model(*stages: Stage) -> Model:
    return Model(stages=stages, deal_size=Fixed(1000.0), arrivals=Arrivals.batch(0), horizon_days=90)


def _tolerance(p: float) -> float:
    return 4 * math.sqrt(max(p * (1 - p), 1e-4) / SAMPLES)


def test_two_exponential_stages_match_the_hypoexponential_cdf() -> None:
    model = _model(
        Stage("Qualify", BetaProbability(6, 4), Exponential(10.0)),
        Stage("Close", BetaProbability(3, 1), Exponential(20.0)),
    )
    for horizon in (10.0, 30.0, 90.0):
        a, b = 1 / 10, 1 / 20
        in_time = 1 - (b * math.exp(-a * horizon) - a * math.exp(-b * horizon)) / (b - a)
        expected_time = in_time
        got = win_probability(model, "Qualify", 5.0, horizon)  # memoryless: the age changes nothing
        assert got is not None
        assert abs(got / (0.6 * 0.75) - expected_time) < _tolerance(expected_time)
    # From the last stage only its own conversion and time remain.
    got = win_probability(model, "Close", 0.0, 20.0)
    assert got is not None
    assert abs(got / 0.75 - (1 - math.exp(-1))) < _tolerance(1 - math.exp(-1))


def test_age_counts_where_the_hazard_is_not_constant() -> None:
    """Weibull shape 0.5: a lead that has waited long is less likely to move soon."""
    weibull = Weibull(0.5, 10.0)
    model = _model(Stage("Only", BetaProbability(1, 1), weibull))
    horizon, age = 30.0, 40.0
    truth = stats.weibull_min(0.5, scale=10.0)
    expected = (truth.cdf(age + horizon) - truth.cdf(age)) / truth.sf(age)
    got = win_probability(model, "Only", age, horizon)
    assert got is not None
    assert abs(got / 0.5 - expected) < _tolerance(expected)
    fresh = win_probability(model, "Only", 0.0, horizon)
    assert fresh is not None
    assert fresh > got


def test_stages_outside_the_model_have_no_odds() -> None:
    model = _model(Stage("Only", BetaProbability(1, 1), Exponential(3.0)))
    assert win_probability(model, "Post-sale", 1.0, 90.0) is None
