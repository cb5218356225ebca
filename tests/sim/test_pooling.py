"""Partial pooling of segment rates: recovery of the pool, exact posteriors, shrinkage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from pipesim.distributions import BetaProbability
from pipesim.pooling import MAX_CONCENTRATION, PRIOR, pool_rates


def test_the_pool_is_recovered_from_many_segments() -> None:
    rng = np.random.default_rng(21)
    true_mean, true_concentration, segments, leads = 0.3, 20.0, 300, 40
    rates = rng.beta(true_mean * true_concentration, (1 - true_mean) * true_concentration, segments)
    wins = rng.binomial(leads, rates)
    pooled = pool_rates({f"s{i}": (int(w), leads - int(w)) for i, w in enumerate(wins)})
    # SE of the pooled mean: binomial variance inflated by the between-segment spread.
    inflation = 1 + (leads - 1) / (true_concentration + 1)
    mean_se = math.sqrt(true_mean * (1 - true_mean) * inflation / (segments * leads))
    assert abs(pooled.prior.mean - true_mean) < 4 * mean_se
    concentration = pooled.prior.alpha + pooled.prior.beta
    assert 11 < concentration < 36  # log-concentration's SE is about 0.15 here: 4 SE either way


def test_each_segment_gets_the_exact_beta_binomial_posterior() -> None:
    counts = {"referral": (40, 20), "cold": (3, 57), "event": (10, 30), "new rep": (0, 5)}
    pooled = pool_rates(counts)
    a, b = pooled.prior.alpha, pooled.prior.beta
    for name, (won, lost) in counts.items():
        posterior = pooled.rate(name)
        assert posterior == BetaProbability(a + won, b + lost)

        # The same mean by integrating prior × likelihood numerically.
        def weight(p: float, won: int = won, lost: int = lost) -> float:
            return float(stats.beta.pdf(p, a, b) * p**won * (1 - p) ** lost)

        normaliser = integrate.quad(weight, 0, 1)[0]
        mean = integrate.quad(lambda p: p * weight(p), 0, 1)[0] / normaliser
        assert posterior.mean == pytest.approx(mean, rel=1e-6)


def test_small_segments_shrink_toward_the_pool_and_large_ones_keep_their_rate() -> None:
    counts = {"big": (300, 700), "other": (120, 380), "tiny-lost": (0, 5), "tiny-won": (2, 0)}
    pooled = pool_rates(counts)
    pool = pooled.prior.mean
    assert 0 < pooled.rate("tiny-lost").mean < pool < pooled.rate("tiny-won").mean < 1
    assert abs(pooled.rate("tiny-lost").mean - pool) < abs(0.0 - pool) / 2  # nearer the pool than 0 %
    assert abs(pooled.rate("tiny-won").mean - pool) < abs(1.0 - pool) / 2  # nearer the pool than 100 %
    assert pooled.rate("big").mean == pytest.approx(0.3, abs=0.01)
    assert pooled.rate("unseen") == pooled.prior


def test_alike_segments_are_pooled_almost_completely() -> None:
    rng = np.random.default_rng(4)
    wins = rng.binomial(50, 0.3, 20)  # one true rate for every segment
    pooled = pool_rates({f"s{i}": (int(w), 50 - int(w)) for i, w in enumerate(wins)})
    raw = wins / 50
    posterior = np.array([pooled.rate(f"s{i}").mean for i in range(20)])
    assert posterior.std() < 0.5 * raw.std()
    assert pooled.prior.alpha + pooled.prior.beta <= MAX_CONCENTRATION * (1 + 1e-9)


def test_no_history_is_the_uniform_prior_and_bad_counts_are_refused() -> None:
    assert pool_rates({"a": (0, 0)}).prior == PRIOR
    with pytest.raises(ValueError, match="'a'"):
        pool_rates({"a": (-1, 3)})
