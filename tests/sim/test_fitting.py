"""Duration fits with running (right-censored) stays: recovery, standard errors, family choice."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from pipesim.fitting import MIN_DAYS, Family, fit_durations, fit_family

TRUTHS: dict[Family, tuple[stats.rv_continuous, dict[str, float]]] = {
    Family.EXPONENTIAL: (stats.expon(scale=8.0), {"mean": 8.0}),
    Family.WEIBULL: (stats.weibull_min(0.7, scale=10.0), {"shape": 0.7, "scale": 10.0}),
    Family.LOGNORMAL: (stats.lognorm(0.8, scale=math.exp(1.8)), {"mu": 1.8, "sigma": 0.8}),
    Family.GAMMA: (stats.gamma(2.5, scale=3.0), {"shape": 2.5, "scale": 3.0}),
}
SCIPY = {
    Family.EXPONENTIAL: stats.expon,
    Family.WEIBULL: stats.weibull_min,
    Family.LOGNORMAL: stats.lognorm,
    Family.GAMMA: stats.gamma,
}


def censored_sample(
    truth: stats.rv_continuous, n: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Stays of ``truth`` cut off by an independent exponential follow-up (about a third still running)."""
    rng = np.random.default_rng(seed)
    days = truth.rvs(size=n, random_state=rng)
    follow_up = rng.exponential(2.0 * truth.mean(), size=n)
    ended = days <= follow_up
    observed = np.maximum(np.minimum(days, follow_up), MIN_DAYS)
    return observed[ended], observed[~ended]


@pytest.mark.parametrize("family", list(Family), ids=str)
def test_each_family_is_recovered_within_four_standard_errors(family: Family) -> None:
    truth, parameters = TRUTHS[family]
    exits, running = censored_sample(truth, 4_000, seed=11)
    assert len(running) > 500  # censoring is real, not vacuous
    fit = fit_family(family, exits, running)
    for name, true_value in parameters.items():
        error = fit.standard_errors[name]
        assert 0 < error < 0.1 * abs(true_value)
        assert abs(fit.parameters[name] - true_value) < 4 * error, name
    assert fit.mean_se is not None
    assert abs(fit.distribution.mean - truth.mean()) < 4 * fit.mean_se


@pytest.mark.parametrize("family", list(Family), ids=str)
def test_the_optimum_is_scipys_censored_fit(family: Family) -> None:
    """Same maximum as ``rv_continuous.fit`` on ``CensoredData`` (location fixed at 0)."""
    exits, running = censored_sample(TRUTHS[Family.WEIBULL][0], 1_500, seed=5)
    ours = fit_family(family, exits, running)
    reference = SCIPY[family]
    parameters = reference.fit(stats.CensoredData(uncensored=exits, right=running), floc=0)
    theirs = float(reference.logpdf(exits, *parameters).sum() + reference.logsf(running, *parameters).sum())
    # Ours is the maximum: never below scipy's, and scipy's search ends within a hair of it.
    assert ours.log_likelihood >= theirs - 1e-6
    assert ours.log_likelihood - theirs < 1e-3


def test_exponential_is_the_closed_form_days_over_exits() -> None:
    exits, running = np.array([1.0, 2.0, 6.0]), np.array([3.0, 8.0])
    fit = fit_family(Family.EXPONENTIAL, exits, running)
    assert fit.parameters["mean"] == pytest.approx(20.0 / 3, rel=1e-12)
    assert fit.standard_errors["mean"] == pytest.approx((20.0 / 3) / math.sqrt(3), rel=1e-3)


def test_standard_errors_match_the_spread_of_repeated_fits() -> None:
    truth, _ = TRUTHS[Family.WEIBULL]
    fits = [fit_family(Family.WEIBULL, *censored_sample(truth, 800, seed=100 + i)) for i in range(60)]
    shapes = np.array([fit.parameters["shape"] for fit in fits])
    reported = np.median([fit.standard_errors["shape"] for fit in fits])
    # The spread of 60 estimates has a relative SE of about 1/sqrt(2*59) ≈ 9 %: allow 3 of those.
    assert abs(shapes.std(ddof=1) / reported - 1) < 0.28


@pytest.mark.parametrize("family", list(Family), ids=str)
def test_aic_picks_the_true_family_in_a_seeded_majority(family: Family) -> None:
    truth, _ = TRUTHS[family]
    samples = (censored_sample(truth, 1_000, seed=200 + i) for i in range(15))
    picks = Counter(fit_durations(*sample).best.family for sample in samples)
    assert picks.most_common(1)[0][0] is family, picks
    assert picks[family] >= 8, picks


def test_fits_report_their_counts_and_order() -> None:
    exits, running = censored_sample(TRUTHS[Family.GAMMA][0], 500, seed=3)
    fit = fit_durations(exits, running)
    assert (fit.exits, fit.running) == (len(exits), len(running))
    assert [f.aic for f in fit.fits] == sorted(f.aic for f in fit.fits)
    assert {f.family for f in fit.fits} == set(Family)


def test_a_fit_needs_an_exit() -> None:
    with pytest.raises(ValueError, match="at least one exit"):
        fit_family(Family.WEIBULL, np.array([]), np.array([4.0]))
