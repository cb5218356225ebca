from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from pipesim import (
    Arrivals,
    BetaProbability,
    EngineError,
    Exponential,
    FixedProbability,
    LogNormal,
    Model,
    OpenLeads,
    Reps,
    Stage,
    simulate,
)
from pipesim.engines import analytic

TRIALS = 20_000


def variance_se(samples: NDArray[np.float64]) -> float:
    """Standard error of the sample variance: sqrt((m4 - s^4) / n)."""
    centred = samples - samples.mean()
    return math.sqrt((np.mean(centred**4) - np.var(samples) ** 2) / len(samples))


def assert_moments(samples: NDArray[np.float64], mean: float, variance: float) -> None:
    assert abs(samples.mean() - mean) < 5 * math.sqrt(variance / len(samples))
    assert abs(samples.var(ddof=1) - variance) < 5 * variance_se(samples)


def test_wins_are_binomial_with_the_product_of_conversions(issue_funnel: Model) -> None:
    _, out = simulate(issue_funnel, TRIALS, seed=11, engine="vectorized")
    assert_moments(out.wins, 30.0, 1000 * 0.03 * 0.97)
    assert math.isclose(math.sqrt(1000 * 0.03 * 0.97), 5.394, abs_tol=5e-4)
    assert np.array_equal(out.revenue, out.wins * 25_000)


def test_revenue_is_compound_over_wins_and_deal_sizes(make_funnel: Callable[..., Model]) -> None:
    model = make_funnel(deal_size=LogNormal(25_000, 10_000))
    _, out = simulate(model, TRIALS, seed=12, engine="vectorized")
    mean_w, var_w, mean_x, var_x = 30.0, 29.1, 25_000.0, 10_000.0**2
    assert_moments(out.revenue, mean_w * mean_x, mean_w * var_x + var_w * mean_x**2)


def rich_model() -> Model:
    """Beta conversions, Poisson arrivals, a horizon that cuts and open leads: analytic still applies."""
    return Model(
        stages=(
            Stage("qualify", BetaProbability(30, 20), Exponential(5)),
            Stage("propose", FixedProbability(0.4), Exponential(5)),
            Stage("close", BetaProbability(10, 10), Exponential(5)),
        ),
        deal_size=LogNormal(20_000, 8_000),
        arrivals=Arrivals.poisson(8),
        horizon_days=30,
        open_leads=(OpenLeads("propose", 40, age_days=6), OpenLeads("close", 15, age_days=2, value=30_000)),
    )


def test_engine_matches_analytic_moments_with_every_feature() -> None:
    model = rich_model()
    exact = analytic.moments(model)
    _, out = simulate(model, TRIALS, seed=13, engine="vectorized")
    assert_moments(out.wins, exact.wins_mean, exact.wins_var)
    assert_moments(out.revenue, exact.revenue_mean, exact.revenue_var)
    existing_se = out.revenue_existing.std() / math.sqrt(TRIALS)
    assert abs(out.revenue_existing.mean() - exact.revenue_existing_mean) < 5 * existing_se


def test_same_seed_same_outcomes_and_trials_are_a_prefix() -> None:
    model = rich_model()
    _, first = simulate(model, 2500, seed=5)
    _, again = simulate(model, 2500, seed=5)
    _, longer = simulate(model, 3000, seed=5)
    _, other = simulate(model, 2500, seed=6)
    assert np.array_equal(first.revenue, again.revenue)
    assert np.array_equal(first.revenue, longer.revenue[:2500])
    assert not np.array_equal(first.revenue, other.revenue)


def test_common_random_numbers_make_a_better_stage_never_worse_per_trial() -> None:
    base = rich_model()
    better = base.replace_stage(1, conversion=FixedProbability(0.5))
    faster = base.replace_stage(0, time_in_stage=Exponential(3))
    _, out_base = simulate(base, 5000, seed=3)
    _, out_better = simulate(better, 5000, seed=3)
    _, out_faster = simulate(faster, 5000, seed=3)
    assert np.all(out_better.wins >= out_base.wins)
    assert np.all(out_faster.wins >= out_base.wins)
    assert np.all(out_better.revenue_existing >= out_base.revenue_existing)


def test_vectorized_refuses_rep_capacity() -> None:
    model = Model(
        stages=rich_model().stages,
        deal_size=LogNormal(1, 1),
        arrivals=Arrivals.batch(5),
        horizon_days=10,
        reps=Reps(2, 3),
    )
    with pytest.raises(EngineError, match="use engine 'des'"):
        simulate(model, 10, engine="vectorized")
