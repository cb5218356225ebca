"""Uncertainty of times in stage and deal size reaching the forecast's spread.

The reference is exact: with ``n`` leads, one stage converting with probability ``p``, an exponential time
whose scale is ``f = exp(s·Z)`` times its mean and exponential deals scaled by ``g = exp(s_d·Z')``, the
wins given ``f`` are ``Bin(n, p·q(f))`` with ``q(f) = 1 − exp(−H / (m·f))``, and the law of total variance
gives the revenue's mean and variance from ``E q``, ``E q²`` (Gauss–Hermite, exact to rounding) and the
lognormal moments of ``g``. Tolerances are 4 Monte Carlo standard errors of the mean and the variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipesim import Arrivals, Exponential, FixedProbability, Model, Reps, Stage, simulate
from pipesim.distributions import Fixed, Weibull
from pipesim.engines.common import scaled_time
from pipesim.errors import EngineError, ModelError
from pipesim.questions import forecast
from pipesim.spec import from_mapping

LEADS, P, MEAN_DAYS, HORIZON, DEAL = 40, 0.5, 20.0, 15.0, 1000.0
TIME_SD, DEAL_SD = 0.6, 0.3


def _model(reps: Reps | None = None) -> Model:
    return Model(
        reps=reps,
        stages=(Stage("deal", FixedProbability(P), Exponential(MEAN_DAYS), time_uncertainty=TIME_SD),),
        deal_size=Exponential(DEAL),
        arrivals=Arrivals.batch(LEADS),
        horizon_days=HORIZON,
        deal_size_uncertainty=DEAL_SD,
    )


def _exact_mean_and_variance() -> tuple[float, float]:
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    f = np.exp(TIME_SD * math.sqrt(2) * nodes)
    q = 1 - np.exp(-HORIZON / (MEAN_DAYS * f))
    eq, eq2 = (weights @ q) / math.sqrt(math.pi), (weights @ q**2) / math.sqrt(math.pi)
    eg, eg2 = math.exp(DEAL_SD**2 / 2), math.exp(2 * DEAL_SD**2)
    n, p, mu = LEADS, P, DEAL
    mean = eg * mu * n * p * eq
    # E[Var(R | f, g)] + Var(E[R | f, g]); given f, g: Var = g²μ²·npq(2 − pq) for exponential deals.
    within = eg2 * mu**2 * n * p * (2 * eq - p * eq2)
    between = mu**2 * n**2 * p**2 * (eg2 * eq2 - eg**2 * eq**2)
    return mean, within + between


def _check(revenue: np.ndarray) -> None:
    mean, variance = _exact_mean_and_variance()
    trials = len(revenue)
    centred = revenue - revenue.mean()
    se_mean = revenue.std(ddof=1) / math.sqrt(trials)
    se_var = math.sqrt((np.mean(centred**4) - np.var(revenue) ** 2) / trials)
    assert abs(revenue.mean() - mean) < 4 * se_mean
    assert abs(revenue.var(ddof=1) - variance) < 4 * se_var


@pytest.mark.parametrize(
    ("engine", "trials", "reps"),
    [("vectorized", 40_000, None), ("des", 3_000, None), ("queue", 20_000, Reps(count=LEADS))],
)
def test_forecast_variance_is_the_law_of_total_variance(engine: str, trials: int, reps: Reps | None) -> None:
    # The queue engine needs [reps]: one slot per lead, so nobody waits and the exact answer holds.
    _, out = simulate(_model(reps), trials, seed=7, engine=engine)
    _check(out.revenue)


def test_uncertainty_widens_the_spread_beyond_the_point_estimate() -> None:
    model = _model()
    known = Model(
        stages=(Stage("deal", FixedProbability(P), Exponential(MEAN_DAYS)),),
        deal_size=Exponential(DEAL),
        arrivals=Arrivals.batch(LEADS),
        horizon_days=HORIZON,
    )
    wide, narrow = forecast(model, 4000, seed=1), forecast(known, 4000, seed=1)
    assert wide.revenue.p90 - wide.revenue.p10 > 1.2 * (narrow.revenue.p90 - narrow.revenue.p10)


def test_scale_one_is_the_plain_age_conditioned_draw() -> None:
    u = np.linspace(0.01, 0.99, 50)
    for duration in (Weibull(1.7, 12.0), Exponential(5.0), Fixed(9.0)):
        plain = duration.remaining(u, 4.0)
        assert np.allclose(scaled_time(duration, u, 4.0, np.ones(50)), plain)
        # A tiny perturbation of the scale goes through the general inversion and lands on the same times.
        assert np.allclose(scaled_time(duration, u, 4.0, np.full(50, 1 + 1e-12)), plain, rtol=1e-6)


def test_scaled_time_with_age_matches_conditioning_by_rejection() -> None:
    rng = np.random.default_rng(3)
    duration, age, scale = Weibull(2.0, 10.0), 6.0, 1.5
    total = duration.sample(rng, 400_000) * scale
    reference = total[total > age] - age
    drawn = scaled_time(duration, rng.random(200_000), age, np.full(200_000, scale))
    se = math.hypot(reference.std() / math.sqrt(len(reference)), drawn.std() / math.sqrt(len(drawn)))
    assert abs(drawn.mean() - reference.mean()) < 4 * se


BASE = {
    "horizon_days": 30,
    "arrivals": {"kind": "batch", "count": 10},
    "deal_size": 100,
    "stages": [{"name": "a", "conversion": 0.5, "time_in_stage": {"dist": "exponential", "mean": 5}}],
}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"stages": [{**BASE["stages"][0], "time_uncertainty": -0.1}]}, "stages[0].time_uncertainty"),  # type: ignore[index]
        ({"stages": [{**BASE["stages"][0], "time_uncertainty": "wide"}]}, "stages[0].time_uncertainty"),  # type: ignore[index]
        ({"stages": [{**BASE["stages"][0], "time_uncertainty": 9}]}, "stages[0].time_uncertainty"),  # type: ignore[index]
        ({"deal_size_uncertainty": math.inf}, "deal_size_uncertainty"),
        (
            {"arrivals": {"kind": "poisson", "rate_per_day": 1, "rate_uncertainty": -1}},
            "arrivals.rate_uncertainty",
        ),
    ],
)
def test_bad_uncertainty_is_refused_naming_the_field(change: dict[str, object], path: str) -> None:
    with pytest.raises(ModelError) as caught:
        from_mapping({**BASE, **change})
    assert [issue.path for issue in caught.value.issues] == [path]


def test_uncertainty_round_trips_through_the_model_file() -> None:
    model = _model()
    assert from_mapping(model.to_mapping()) == model


def test_engines_without_per_trial_parameters_refuse_or_step_aside() -> None:
    with pytest.raises(EngineError, match="uncertain"):
        forecast(_model(), engine="analytic")
    assert forecast(_model(), 200, seed=0).engine == "vectorized"
