"""A group's in-horizon wins and their revenue without a row per winner: ``O(groups × trials)``.

The leads of one group (the new arrivals, or one open-lead cohort) share one finish-time law: the time
still to spend in their stage given its age, the times of the stages after it, and for Poisson arrivals
an arrival time over the horizon (uniform, or ``λ(t)/Λ(H)`` with a weekday or trend profile). Parameter
uncertainty scales a trial's deal sizes and its arrival count, and its time scales change ``q`` per
trial (:mod:`pipesim.engines.cohort_scales`). Finish times are independent of the conversions and of
each other, so of a trial's ``W`` eventual winners the number finishing within the horizon is
``Bin(W, q)`` with ``q = P(finish <= horizon)`` — the same law the per-winner path
(:mod:`pipesim.engines.vectorized`) samples row by row, drawn with one binomial by inversion (monotone in
``W`` and ``q``, so common random numbers keep their order).

``q`` comes from the stage-time laws by numerical convolution: each law as quantile atoms deposited on a
grid of ``GRID`` steps over the horizon (linear split between neighbouring points, which keeps every
mean), the later stages convolved once per starting stage; the start stage's remaining time given the
age enters through its distribution function, integrated against that grid.

Revenue is ``k × value`` for a cohort with a known value. Otherwise it is the sum of ``k`` deal sizes:
drawn one by one (exact) while ``k`` is small, and above a threshold from the translated gamma with the
sum's mean, variance and skewness — the classic approximation of a compound sum, used only where the
next term of its Edgeworth expansion (the fourth-cumulant mismatch, ``|κ₄ − 1.5 γ²| / 24k``) is below
``APPROX_ERROR`` of probability; deal laws without known moments always take exact sums.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable
from dataclasses import replace
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from scipy import signal, special

from pipesim.arrival_profile import arrival_times
from pipesim.distributions import (
    Array,
    Distribution,
    Empirical,
    Exponential,
    Fixed,
    Gamma,
    LogNormal,
    Triangular,
    Weibull,
)
from pipesim.engines.common import Group
from pipesim.spec import Arrivals, Model, Stage

GRID = 1 << 13  # grid steps over the horizon for the finish-time convolution
ATOMS = 1 << 13  # quantile atoms per stage-time law
EXACT_DEALS = 64  # up to this many wins a trial's deal sizes are drawn one by one
APPROX_ERROR = 1e-3  # largest next-order error (probability) accepted from the translated gamma
DEAL_CHUNK = 256  # deal sizes drawn per trial at a time for large exact sums


def covers(model: Model) -> bool:
    """Whether a group's leads share one finish-time law and one deal law in every trial, as the group
    draws assume: not with segments (a winner's deal law depends on its segment). Parameter uncertainty
    keeps it so given the trial — deal sizes scaled, the arrival count drawn at the trial's rate, the
    finish-time law at the trial's time scales (:mod:`pipesim.engines.cohort_scales`) — and varying
    arrivals change only the arrival time's law."""
    return not model.segments


@functools.cache
def _atoms() -> Array:
    return (np.arange(ATOMS) + 0.5) / ATOMS


def _deposit(values: Array, horizon: float) -> Array:
    """Equal-weight atoms on the grid ``0, h, …, horizon`` (``GRID + 1`` points), split linearly between
    the two nearest points; atoms beyond the horizon are dropped (they finish late whatever follows)."""
    position = np.asarray(values, dtype=np.float64) / horizon * GRID
    position = position[position <= GRID]
    low = np.floor(position).astype(np.int64)
    share = position - low
    mass = np.bincount(low, weights=1.0 - share, minlength=GRID + 2)
    mass += np.bincount(low + 1, weights=share, minlength=GRID + 2)
    return np.asarray(mass[: GRID + 1] / ATOMS, dtype=np.float64)


@functools.lru_cache(maxsize=16)
def arrival_mass(arrivals: Arrivals, horizon: float) -> Array:
    """Grid masses of a new lead's arrival time given that it arrives within the horizon: uniform for a
    constant rate (exact on the grid), else the profile's quantile atoms (``λ(t) / Λ(H)``)."""
    if not arrivals.varies:
        mass = np.full(GRID + 1, 1.0 / GRID)
        mass[[0, -1]] = 0.5 / GRID
        return mass
    return _deposit(arrival_times(arrivals, horizon, _atoms()), horizon)


@functools.lru_cache(maxsize=64)
def _deposited(law: Any, horizon: float) -> Array:  # a Distribution: frozen, so hashable
    return _deposit(law.ppf(_atoms()), horizon)


@functools.lru_cache(maxsize=64)
def _later_stages(stages: tuple[Stage, ...], start: int, horizon: float, arrival: Arrivals | None) -> Array:
    """Grid masses of the time after stage ``start`` (the later stages' times, plus the arrival time of
    a new lead when ``arrival`` is given), cut at the horizon."""
    mass = np.zeros(GRID + 1)
    mass[0] = 1.0
    parts = [_deposited(cast(Hashable, stage.time_in_stage), horizon) for stage in stages[start + 1 :]]
    if arrival is not None:
        parts.append(arrival_mass(arrival, horizon))
    for part in parts:
        mass = np.maximum(signal.fftconvolve(mass, part)[: GRID + 1], 0.0)
    return mass


TAIL = 1e-6  # below this survival at the age, the remaining time is read from the law's own inversion


@functools.lru_cache(maxsize=1024)
def _in_horizon(
    stages: tuple[Stage, ...], start: int, age: float, horizon: float, arrival: Arrivals | None
) -> float:
    return _finished_by(stages, start, age, horizon, arrival, horizon)


@functools.lru_cache(maxsize=1024)
def _finished_by(
    stages: tuple[Stage, ...], start: int, age: float, horizon: float, arrival: Arrivals | None, day: float
) -> float:
    """P(finish <= ``day``) for a winner of the group, ``day`` within the horizon (on its grid)."""
    later = _later_stages(stages, start, horizon, arrival)
    grid = np.linspace(0.0, horizon, GRID + 1)
    duration = stages[start].time_in_stage
    below = float(duration.cdf(np.array([age]))[0]) if age > 0 else 0.0
    if 1.0 - below > TAIL:
        # P(start's remaining time <= day - t), weighted by the later time's masses at the points t.
        remaining = (duration.cdf(age + day - grid) - below) / (1.0 - below)
        remaining[grid > day] = 0.0
        return float(np.clip(np.dot(later, np.clip(remaining, 0.0, 1.0)), 0.0, 1.0))
    # Deep in the tail the ratio loses its digits: average over the law's own remaining-time quantiles.
    cdf = np.cumsum(later) - later / 2  # P(later <= t) at the points: each mass spreads over a tent
    slack = day - duration.remaining(_atoms(), age)
    inside = slack >= 0
    return float(np.clip(np.interp(slack[inside], grid, cdf).sum() / ATOMS, 0.0, 1.0))


def arrival_of(model: Model, group: Group) -> Arrivals | None:
    """The arrivals whose time a winner of ``group`` waits for: new leads of Poisson arrivals only.
    (The rate's uncertainty is left out: it sets how many arrive, not when.)"""
    if group.existing or model.arrivals.kind == "batch":
        return None
    return replace(model.arrivals, rate_uncertainty=0.0)


def in_horizon_probability(model: Model, group: Group) -> float:
    """Probability that a winner of ``group`` wins within the model's horizon."""
    arrival = arrival_of(model, group)
    age = group.age_days if group.existing else 0.0
    return _in_horizon(model.stages, group.start, age, model.horizon_days, arrival)


def finished_by(model: Model, group: Group, days: Array) -> Array:
    """P(finish <= d) for a winner of ``group`` at each of ``days`` (within the horizon, increasing)."""
    arrival = arrival_of(model, group)
    age = group.age_days if group.existing else 0.0
    values = [
        _finished_by(model.stages, group.start, age, model.horizon_days, arrival, float(d)) for d in days
    ]
    return np.maximum.accumulate(np.asarray(values, dtype=np.float64))


def cumulative_by_day(
    model: Model,
    group: Group,
    days: Array,
    inside: NDArray[np.int64],
    revenue: Array,
    rng: np.random.Generator,
    finished: Array | None = None,
) -> Array:
    """(trials, len(days)) cumulative revenue of the group's ``inside`` in-horizon winners by each day.
    ``finished``: :func:`finished_by` at ``days`` when the caller has it.

    Given that a winner finishes within the horizon, the interval it finishes in has the probabilities
    of :func:`finished_by` (normalised), independently of the others: the counts per interval are one
    multinomial draw. Deals are independent of finish times, so given a trial's in-horizon revenue the
    revenue won by day d is, in expectation, that total times the share of winners in by d — used here,
    which keeps every trial's last value equal to its revenue (the fan's weeks understate only the
    deal-size part of a week's spread). The reference for :mod:`pipesim.engines.fan`, which draws the
    sum over groups at once where the counts are large and calls this one elsewhere."""
    trials = len(inside)
    by_day = np.zeros((trials, len(days)))
    q = finished_by(model, group, days) if finished is None else finished
    if q[-1] <= 0 or not inside.any():
        return by_day
    shares = np.diff(np.concatenate([[0.0], q])) / q[-1]
    shares = np.clip(shares, 0.0, None)
    shares /= shares.sum()
    counts = rng.multinomial(inside, shares)
    cumulative = np.cumsum(counts, axis=1)
    average = np.divide(revenue, inside, out=np.zeros(trials), where=inside > 0)
    by_day[:] = cumulative * average[:, None]
    return by_day


# --- deal sums ------------------------------------------------------------------------------------


def raw_moments(law: Distribution) -> tuple[float, float, float, float] | None:
    """``E[X]``, ``E[X²]``, ``E[X³]``, ``E[X⁴]`` of the laws with known ones, else ``None``."""
    orders = range(1, 5)
    if isinstance(law, Fixed):
        values = [law.value**n for n in orders]
    elif isinstance(law, Exponential):
        values = [math.factorial(n) * law.mean_value**n for n in orders]
    elif isinstance(law, Gamma):
        values = [
            law.scale**n * math.exp(math.lgamma(law.shape + n) - math.lgamma(law.shape)) for n in orders
        ]
    elif isinstance(law, Weibull):
        values = [law.scale**n * math.gamma(1 + n / law.shape) for n in orders]
    elif isinstance(law, LogNormal):
        mu, sigma = law._mu, law._sigma
        values = [math.exp(n * mu + n * n * sigma * sigma / 2) for n in orders]
    elif isinstance(law, Empirical):
        values = [float(np.mean(law._sorted**n)) for n in orders]
    elif isinstance(law, Triangular):
        # Bounded support: the quantile midpoint rule is accurate to many digits.
        points = law.ppf(_atoms())
        values = [float(np.mean(points**n)) for n in orders]
    else:
        return None
    return values[0], values[1], values[2], values[3]


@functools.lru_cache(maxsize=64)
def _gamma_terms(law: Any) -> tuple[float, float, float, int] | None:  # a Distribution
    """Mean, standard deviation and skewness of one deal, and the fewest wins from which the translated
    gamma is accurate enough (``None``: never)."""
    moments = raw_moments(law)
    if moments is None:
        return None
    m1, m2, m3, m4 = moments
    variance = m2 - m1 * m1
    if not variance > 0:
        return None
    third = m3 - 3 * m1 * m2 + 2 * m1**3
    fourth = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
    skew = third / variance**1.5
    excess = fourth / variance**2 - 3
    mismatch = abs(excess - 1.5 * skew * skew)
    fewest = max(EXACT_DEALS + 1, math.ceil(mismatch / (24 * APPROX_ERROR)))
    return m1, math.sqrt(variance), skew, fewest


def translated_gamma(u: Array, wins: NDArray[np.int64], mean: float, sd: float, skew: float) -> Array:
    """Sums of ``wins`` deals with the given per-deal moments, by inversion of the translated gamma
    (normal when the skewness is nil; reflected when it is negative)."""
    k = wins.astype(np.float64)
    total_mean, total_sd = k * mean, np.sqrt(k) * sd
    if abs(skew) < 1e-9:
        return np.asarray(total_mean + total_sd * special.ndtri(u), dtype=np.float64)
    gamma_skew = abs(skew) / np.sqrt(k)
    shape, scale = 4 / gamma_skew**2, total_sd * gamma_skew / 2
    if skew > 0:
        return np.asarray(total_mean + scale * (special.gammaincinv(shape, u) - shape), dtype=np.float64)
    return np.asarray(total_mean - scale * (special.gammaincinv(shape, 1 - u) - shape), dtype=np.float64)


def deal_sums(law: Distribution, wins: NDArray[np.int64], rng: np.random.Generator) -> Array:
    """Per trial, the sum of ``wins`` deal sizes drawn from ``law`` (see the module docstring)."""
    trials = len(wins)
    totals = np.zeros(trials)
    if isinstance(law, Fixed):
        return np.asarray(wins * law.value, dtype=np.float64)
    # Exact part: the first EXACT_DEALS deals of every trial, always drawn (common random numbers).
    rows = law.ppf(rng.random((trials, EXACT_DEALS)))
    taken = np.arange(EXACT_DEALS)[None, :] < wins[:, None]
    totals += (rows * taken).sum(axis=1)
    terms = _gamma_terms(cast(Hashable, law))
    approx_u = rng.random(trials)
    large = wins > EXACT_DEALS
    if terms is not None:
        mean, sd, skew, fewest = terms
        use = wins >= fewest
        totals[use] = translated_gamma(approx_u[use], wins[use], mean, sd, skew)
        large &= ~use
    # Exact sums beyond EXACT_DEALS where the approximation is not good enough.
    done = np.full(trials, EXACT_DEALS)
    while large.any():
        which = np.nonzero(large)[0]
        rows = law.ppf(rng.random((len(which), DEAL_CHUNK)))
        taken = (done[which][:, None] + np.arange(DEAL_CHUNK)[None, :]) < wins[which][:, None]
        totals[which] += (rows * taken).sum(axis=1)
        done[which] += DEAL_CHUNK
        large &= done < wins
    return totals
