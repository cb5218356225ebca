"""The binomial inverse CDF the group draws take their wins from, fast and exact.

``inverse_reference`` is ``scipy.stats.binom.ppf``: its generic wrapper checks and reshapes every call
before its kernel (Boost's quantile, a root search on the CDF) runs. ``inverse`` gives the same numbers
at a fraction of the cost: a Cornish–Fisher guess ``k`` checked against the same library's binomial CDF,
``F(k − 1) < u ≤ F(k)`` — the smallest such ``k`` is the quantile — one step up or down where the guess
misses, and the kernel itself for the rest and wherever ``u`` lies within ``MARGIN`` of a bound (there
the kernel's own rounding decides, as in the reference). ``tests/sim/test_binomial.py`` compares the two.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats
from scipy.special import _ufuncs

from pipesim.distributions import Array

MARGIN = 1e-10  # closer than this to F(k − 1) or F(k), u is left to the quantile kernel

_ppf = _ufuncs._binom_ppf  # the kernel binom.ppf calls once its arguments are checked
_cdf = _ufuncs._binom_cdf  # the kernel binom.cdf calls


def inverse_reference(u: Array, n: NDArray[np.int64] | int, p: Array) -> NDArray[np.int64]:
    """Smallest k with P(Bin(n, p) <= k) >= u: monotone in u, n and p, which common random numbers rely on."""
    k = stats.binom.ppf(u, n, np.clip(p, 0.0, 1.0))
    return np.asarray(np.maximum(np.nan_to_num(k), 0.0), dtype=np.int64)


def inverse(u: Array, n: NDArray[np.int64] | int, p: Array) -> NDArray[np.int64]:
    """:func:`inverse_reference`, the same numbers for integer ``n`` (elementwise, broadcast)."""
    uu, nn, pp = np.broadcast_arrays(
        np.asarray(u, dtype=np.float64), np.asarray(n, dtype=np.int64), np.clip(p, 0.0, 1.0)
    )
    k = np.zeros(uu.shape, dtype=np.int64)
    valid = (nn >= 0) & (pp >= 0.0) & (pp <= 1.0)  # false for a NaN p: the reference gives 0 there
    top = valid & (uu == 1.0)
    k[top] = nn[top]
    inner = valid & (uu > 0.0) & (uu < 1.0)
    if inner.any():
        k[inner] = _inner_inverse(uu[inner], nn[inner].astype(np.float64), pp[inner])
    return k


def _inner_inverse(u: Array, n: Array, p: Array) -> NDArray[np.int64]:
    """The quantile for 0 < u < 1, 0 <= p <= 1, n >= 0 (1-D arrays)."""
    mean, q = n * p, 1.0 - p
    sd = np.sqrt(mean * q)
    z = special.ndtri(u)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(sd > 0, (q - p) / sd, 0.0)
    # F(k) ≈ Φ((k + ½ − mean) / sd) with the skewness's first correction to the normal quantile.
    guess = np.ceil(mean + sd * (z + skew * (z * z - 1.0) / 6.0) - 0.5)
    k = np.clip(np.nan_to_num(guess), 0.0, n)
    upper = _cdf(k, n, p)
    lower = np.where(k > 0, _cdf(k - 1.0, n, p), 0.0)
    # One step where the guess is one off: up (F(k) < u) or down (u <= F(k − 1)).
    up = upper < u
    down = ~up & (u <= lower) & (k > 0)
    for moved, step in ((up, 1.0), (down, -1.0)):
        if moved.any():
            k[moved] += step
            if step > 0:
                lower[moved] = upper[moved]
                upper[moved] = _cdf(k[moved], n[moved], p[moved])
            else:
                upper[moved] = lower[moved]
                lower[moved] = np.where(k[moved] > 0, _cdf(k[moved] - 1.0, n[moved], p[moved]), 0.0)
    settled = (lower < u - MARGIN) & (u <= upper - MARGIN) & (k <= n)
    rest = ~settled
    if rest.any():
        k[rest] = _ppf(u[rest], n[rest], p[rest])
    return np.asarray(np.maximum(np.nan_to_num(k), 0.0), dtype=np.int64)
