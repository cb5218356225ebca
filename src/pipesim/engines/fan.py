"""The fan chart's revenue by week from the group draws: every group's in-horizon winners spread over the
weeks, summed over the groups.

Given a trial's ``n`` in-horizon winners of a group, their counts by week are one multinomial draw, and
the group adds ``average deal × cumulative count`` to each week (:func:`pipesim.engines.cohorts.
cumulative_by_day`, the reference). That costs a binomial per group, week and trial. The fan reads only
the sum over the groups, per trial and week, and only its quantiles per week (P10/P50/P90): given the
trial's counts and revenues that sum has mean ``Σ a n F_k``, covariance ``Σ a² n (F_min(k,l) − F_k F_l)``
(``a`` the group's average deal, ``F`` its cumulative weekly shares; a Brownian bridge's, the last week
fixed) and per week cumulants ``κᵣ = Σ aʳ × the binomial's κᵣ``. Where these say a trial's weeks are
close to Gaussian, they are drawn at once: one Gaussian vector with that mean and covariance (a batched
Cholesky over the trials), each week's standardised value then moved by the Cornish–Fisher terms of its
skewness and kurtosis, so that every week's quantiles match to the fourth cumulant (the weeks' joint law
stays the Gaussian's; nothing reads it but the ordering below). The last week is the trial's revenue.
The other trials — too few winners for that — take the groups' multinomials from their own streams.

The criterion (:func:`gaussian_trials`): the Cornish–Fisher terms left out, ``|κ₅|/κ₂^2.5``, skewness
times excess kurtosis and skewness cubed with their polynomials bounded over the P10–P90 range, in the
trial's timing sds, times the ratio of that sd to the week's spread across the block's trials, below
``APPROX_ERROR`` (a thousandth of the week's spread; a quantile's Monte Carlo SE is about 0.04 of it at
2,000 trials, 0.005 at 100,000) in every week. After the draw, values are made non-decreasing over the
weeks (a running maximum) and kept within ``[0, revenue]``; with the counts the criterion asks for these
move nothing in three calibrated 100,000-lead models (no value changed in 6,000 trials).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

from pipesim.distributions import Array
from pipesim.engines import cohorts
from pipesim.engines.common import COHORTS, Group, stream
from pipesim.spec import Model

APPROX_ERROR = 1e-3  # largest next-order error (in the week's sds across trials) of the Gaussian path
GAUSSIAN_PART = 3  # the Gaussian draws' stream, COHORTS (0, 3): no group's stream uses part 3
JITTER = 1e-12  # on the covariance's diagonal, relative to its trace (see _root)


def weekly_shares(model: Model, all_groups: list[Group], days: Array, finished: list[Array | None]) -> Array:
    """(groups, days) each group's winners' cumulative share by each day, the multinomial's cells summed
    as :func:`pipesim.engines.cohorts.cumulative_by_day` forms them (rows of zeros: none within)."""
    cumulative = np.zeros((len(all_groups), len(days)))
    for index, group in enumerate(all_groups):
        found = finished[index]
        q = cohorts.finished_by(model, group, days) if found is None else found
        if q[-1] <= 0:
            continue
        shares = np.clip(np.diff(np.concatenate([[0.0], q])) / q[-1], 0.0, None)
        cumulative[index] = np.cumsum(shares / shares.sum())
        cumulative[index, -1] = 1.0
    return cumulative


@dataclass(frozen=True)
class Cumulants:
    """Per trial and day, the cumulants of the revenue won by the day given the trial's counts and
    revenues: the sums over groups of ``aʳ`` times a binomial's ``κᵣ`` (``a`` the group's average deal)."""

    weight: Array  # (trials, groups) a² n: the covariance's weights
    mean: Array  # (trials, days)
    k2: Array
    k3: Array
    k4: Array
    k5: Array

    @staticmethod
    def of(shares: Array, inside: NDArray[np.int64], revenue: Array) -> Cumulants:
        n = inside.astype(np.float64)
        average = np.divide(revenue, n, out=np.zeros_like(revenue), where=inside > 0)
        spread = shares * (1.0 - shares)
        skew = 1.0 - 2.0 * shares
        weight = average**2 * n
        return Cumulants(
            weight=weight,
            mean=revenue @ shares,
            k2=weight @ spread,
            k3=(weight * average) @ (spread * skew),
            k4=(weight * average**2) @ (spread * (1.0 - 6.0 * spread)),
            k5=(weight * average**3) @ (spread * skew * (1.0 - 12.0 * spread)),
        )

    def rows(self, which: NDArray[np.bool_]) -> Cumulants:
        """The trials ``which`` only."""
        return Cumulants(*(getattr(self, field.name)[which] for field in fields(self)))

    def standard(self) -> tuple[Array, Array, Array]:
        """Skewness, excess kurtosis and standardised fifth cumulant (zero where a day has no spread)."""
        live = self.k2 > 0
        sd = np.sqrt(np.where(live, self.k2, 1.0))
        skew = np.where(live, self.k3 / sd**3, 0.0)
        excess = np.where(live, self.k4 / sd**4, 0.0)
        return skew, excess, np.where(live, self.k5 / sd**5, 0.0)


def gaussian_trials(found: Cumulants) -> NDArray[np.bool_]:
    """Per trial, whether the Gaussian path's error is below ``APPROX_ERROR`` at every day: the
    third-order Cornish–Fisher terms left out (their polynomials bounded over the P10–P90 range), in the
    trial's timing sds, times the ratio of that sd to the day's spread across the block's trials."""
    skew, excess, fifth = found.standard()
    term = np.abs(fifth) / 24.0 + np.abs(skew * excess) / 6.0 + np.abs(skew) ** 3 / 8.0
    week_sd = np.sqrt(found.mean.var(axis=0) + found.k2.mean(axis=0))
    error = term * np.sqrt(found.k2) / np.where(week_sd > 0, week_sd, 1.0)
    return np.asarray((error <= APPROX_ERROR).all(axis=1))


def gaussian_by_day(shares: Array, found: Cumulants, total: Array, rng: np.random.Generator) -> Array:
    """(trials, days) cumulative revenue by the Gaussian path (module docstring) for the trials of
    ``found``; ``total``: their revenue."""
    trials, days = len(total), shares.shape[1]
    free = days - 1  # the last day's value is the trial's revenue
    by_day = np.empty((trials, days))
    by_day[:, -1] = total
    if free > 0:
        z = rng.standard_normal((trials, free, 1))
        standard = (_root(_covariance(shares[:, :free], found.weight)) @ z)[:, :, 0]
        sd = np.sqrt(found.k2[:, :free])
        standard = np.divide(standard, sd, out=np.zeros_like(standard), where=sd > 0)
        skew, excess, _ = (value[:, :free] for value in found.standard())
        # Cornish-Fisher to the fourth cumulant: each day's quantiles, the joint law Gaussian.
        z2 = standard**2
        moved = (
            standard
            + skew / 6.0 * (z2 - 1.0)
            + excess / 24.0 * standard * (z2 - 3.0)
            - skew**2 / 36.0 * standard * (2.0 * z2 - 5.0)
        )
        by_day[:, :free] = found.mean[:, :free] + sd * moved
    by_day = np.maximum.accumulate(by_day, axis=1)
    return np.clip(by_day, 0.0, total[:, None])


def _covariance(shares: Array, weight: Array) -> Array:
    """(trials, days, days) ``Σ weight · (F_min(k,l) − F_k F_l)`` over the groups: the product over the
    groups taken for the lower triangle only (``F`` non-decreasing: ``F_min(k,l)`` is the earlier day's)."""
    days = shares.shape[1]
    later, earlier = np.tril_indices(days)
    lower = weight @ (shares[:, earlier] * (1.0 - shares[:, later]))
    covariance = np.empty((len(weight), days, days))
    covariance[:, later, earlier] = lower
    covariance[:, earlier, later] = lower
    return covariance


def _root(covariance: Array) -> Array:
    """A square root ``L`` (``L Lᵀ`` = the covariance) per trial: Cholesky with ``JITTER`` on the diagonal
    (days no winner reaches, or every winner has, have no variance), eigenvectors should that fail."""
    days = covariance.shape[1]
    jittered = covariance.copy()
    scale = JITTER * np.trace(covariance, axis1=1, axis2=2) + 1e-300
    jittered[:, np.arange(days), np.arange(days)] += scale[:, None]
    try:
        return np.asarray(np.linalg.cholesky(jittered))
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(covariance)
        return np.asarray(vectors * np.sqrt(np.clip(values, 0.0, None))[:, None, :])


def revenue_by_day(
    model: Model,
    all_groups: list[Group],
    days: Array,
    finished: list[Array | None],
    inside: NDArray[np.int64],
    revenue: Array,
    seed: int,
    block: int,
) -> Array:
    """(trials, len(days)) cumulative revenue of every group's in-horizon winners (``inside`` and
    ``revenue``: (trials, groups)): the Gaussian path for the trials :func:`gaussian_trials` allows, the
    groups' multinomials (the reference, each group's own stream) for the others."""
    trials = len(inside)
    shares = weekly_shares(model, all_groups, days, finished)
    by_day = np.zeros((trials, len(days)))
    found = Cumulants.of(shares, inside, revenue)
    gaussian = gaussian_trials(found)
    if gaussian.any():
        rng = stream(seed, block, COHORTS, 0, GAUSSIAN_PART)
        some = found.rows(gaussian)
        by_day[gaussian] = gaussian_by_day(shares, some, revenue[gaussian].sum(axis=1), rng)
    exact = ~gaussian
    if exact.any():
        for index, group in enumerate(all_groups):
            counts = np.where(exact, inside[:, index], 0)
            weekly = stream(seed, block, COHORTS, index, 2)
            by_day += cohorts.cumulative_by_day(
                model, group, days, counts, revenue[:, index] * exact, weekly, finished[index]
            )
    return by_day
