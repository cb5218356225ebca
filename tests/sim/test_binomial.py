from __future__ import annotations

import numpy as np
import pytest

from pipesim.engines import binomial


def test_inverse_equals_the_reference_on_random_arguments() -> None:
    rng = np.random.default_rng(20261204)
    size = 200_000
    n = np.concatenate(
        [rng.integers(0, 130, size), rng.integers(0, 20_000, size // 4), rng.integers(10**6, 10**9, 1000)]
    )
    p = np.concatenate([rng.random(size), rng.random(size // 4) ** 4, rng.random(1000)])
    u = rng.random(len(n))
    u[:2000] = rng.random(2000) * 1e-12  # near 0
    u[2000:4000] = 1.0 - rng.random(2000) * 1e-12  # near 1
    found = binomial.inverse(u, n, p)
    assert np.array_equal(found, binomial.inverse_reference(u, n, p))
    assert np.unique(found).size > 100  # not a constant: the arguments reach many quantiles


def test_inverse_equals_the_reference_at_the_edges() -> None:
    u = np.array([0.0, 1.0, 1e-300, 0.5, 1.0 - 1e-16, np.nan, -0.1, 1.1])
    for n in (0, 1, 7, 10**6):
        for p in (0.0, 1e-300, 1e-12, 0.5, 1.0 - 1e-12, 1.0, -0.5, 1.5, np.nan):
            expected = binomial.inverse_reference(u, n, np.full(len(u), p))
            assert np.array_equal(binomial.inverse(u, n, np.full(len(u), p)), expected), (n, p)


@pytest.mark.filterwarnings("ignore:Error in function boost:RuntimeWarning")
def test_inverse_equals_the_reference_at_the_cdf_s_own_values() -> None:
    """u exactly at P(Bin(n, p) <= k) and a hair either side: where rounding decides the answer (the
    quantile kernel warns where it cannot bracket u within a hair of 1; both paths take its answer)."""
    rng = np.random.default_rng(7)
    n = rng.integers(1, 200, 5000)
    p = rng.random(5000)
    k = np.floor(rng.random(5000) * (n + 1))
    at = np.clip(np.asarray(binomial._cdf(k, n.astype(np.float64), p)), 0.0, 1.0)
    for u in (at, np.nextafter(at, 0.0), np.nextafter(at, 1.0)):
        assert np.array_equal(binomial.inverse(u, n, p), binomial.inverse_reference(u, n, p))


@pytest.mark.parametrize("axis", ["u", "n", "p"])
def test_inverse_is_monotone(axis: str) -> None:
    rng = np.random.default_rng(3)
    size = 20_000
    u, n, p = rng.random(size), rng.integers(0, 200, size), rng.random(size)
    base = binomial.inverse(u, n, p)
    if axis == "u":
        more = binomial.inverse(np.minimum(u + rng.random(size) * 0.1, 1.0), n, p)
    elif axis == "n":
        more = binomial.inverse(u, n + rng.integers(0, 5, size), p)
    else:
        more = binomial.inverse(u, n, np.minimum(p + rng.random(size) * 0.1, 1.0))
    assert (more >= base).all()
