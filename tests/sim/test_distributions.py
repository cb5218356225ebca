from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipesim.distributions import (
    Empirical,
    Exponential,
    Fixed,
    Gamma,
    LogNormal,
    Triangular,
    Weibull,
    _Inversion,
)

N = 200_000


@pytest.mark.parametrize(
    "distribution",
    [
        Exponential(4.0),
        Gamma(2.5, 3.0),
        Weibull(0.7, 10.0),
        LogNormal(25_000, 10_000),
        Triangular(2, 5, 14),
        Empirical((1, 2, 2, 9)),
    ],
    ids=lambda d: type(d).__name__,
)
def test_sample_mean_matches_the_exact_mean(distribution: Exponential) -> None:
    samples = distribution.sample(np.random.default_rng(7), N)
    tolerance = 5 * math.sqrt(distribution.variance / N)
    assert abs(samples.mean() - distribution.mean) < tolerance
    assert np.all(samples >= 0)


@pytest.mark.parametrize(
    "distribution",
    [Gamma(2.5, 3.0), Weibull(0.7, 10.0), Weibull(2.0, 5.0), LogNormal(10, 4), Triangular(2, 5, 14)],
    ids=lambda d: type(d).__name__,
)
def test_remaining_time_is_the_tail_beyond_the_age(distribution: Gamma) -> None:
    age = distribution.mean
    u = np.random.default_rng(3).random(N)
    remaining = distribution.remaining(u, age)
    tail = distribution.sample(np.random.default_rng(4), 4 * N)
    tail = tail[tail > age] - age
    tolerance = 5 * math.sqrt(tail.var() / len(tail) + remaining.var() / N)
    assert abs(remaining.mean() - tail.mean()) < tolerance


def test_remaining_time_special_cases() -> None:
    u = np.array([0.1, 0.5, 0.9])
    assert np.array_equal(Exponential(3).remaining(u, 100), Exponential(3).ppf(u))  # memoryless
    assert np.array_equal(Fixed(10).remaining(u, 4), np.full(3, 6.0))
    assert np.array_equal(Fixed(10).remaining(u, 40), np.zeros(3))
    assert set(Empirical((2, 5, 9)).remaining(u, 4).tolist()) <= {1.0, 5.0}
    assert np.array_equal(Triangular(1, 2, 3).remaining(u, 7), np.zeros(3))


def test_weibull_agrees_with_scipy() -> None:
    weibull, reference = Weibull(0.7, 10.0), stats.weibull_min(0.7, scale=10.0)
    x = np.array([0.0, 0.5, 3.0, 10.0, 80.0])
    u = np.array([0.0, 0.1, 0.5, 0.99])
    assert weibull.mean == pytest.approx(reference.mean(), rel=1e-12)
    assert weibull.variance == pytest.approx(reference.var(), rel=1e-12)
    assert np.allclose(weibull.cdf(x), reference.cdf(x), rtol=1e-12)
    assert np.allclose(weibull.ppf(u), reference.ppf(u), rtol=1e-12)
    # The closed-form conditional draw equals the generic inversion shared by the other families.
    assert np.allclose(weibull.remaining(u, 6.0), _Inversion.remaining(weibull, u, 6.0), rtol=1e-9)
    assert weibull.scaled(2.0) == Weibull(0.7, 20.0)


@pytest.mark.parametrize(("low", "mode", "high"), [(3, 7, 21), (2, 2, 9), (1, 8, 8), (0.5, 1.5, 2.5)])
def test_triangular_inverse_cdf_equals_the_plain_formula(low: float, mode: float, high: float) -> None:
    """The in-place inverse CDF gives bit for bit the two-branch formula it replaces, arrays and scalars."""
    u = np.random.default_rng(3).random((40, 50))
    u[0, :3] = [0.0, (mode - low) / (high - low), np.nextafter(1.0, 0.0)]
    a, c, b = float(low), float(mode), float(high)
    below = u < (c - a) / (b - a)
    root = np.sqrt(np.where(below, u * (b - a) * (c - a), (1 - u) * (b - a) * (b - c)))
    plain = np.where(below, a + root, b - root)
    triangular = Triangular(low, mode, high)
    assert np.array_equal(triangular.ppf(u), plain)
    scalar = triangular.ppf(np.float64(0.3))  # type: ignore[arg-type]
    assert np.array_equal(scalar, triangular.ppf(np.array([0.3]))[0])


def test_exponential_inverse_cdf_equals_the_plain_formula() -> None:
    """The in-place inverse CDF gives bit for bit ``-mean·log1p(-u)``, arrays and scalars."""
    u = np.random.default_rng(4).random((40, 50))
    u[0, 0] = 0.0
    assert np.array_equal(Exponential(6.0).ppf(u), -6.0 * np.log1p(-u))
    assert Exponential(6.0).ppf(0.5) == -6.0 * math.log1p(-0.5)  # type: ignore[arg-type]
