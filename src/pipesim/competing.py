"""Time to advance and time to loss, fitted apart: a stage whose losers linger.

:mod:`pipesim.fitting` fits one time to *any* exit, and a model then converts with the stage's
probability. That is exact when how long a lead stays says nothing of how it leaves. Real pipelines break
it: giving up on a lead takes longer than moving a good one on. Then the one fitted time is too long for
the leads that advance (so too few new leads win within a horizon) and a lead that has waited long is
more likely a loser than the stage's conversion says.

The mixture here says it directly: a lead entering the stage will advance with probability ``p``, after a
time with law ``F_a``; else it is lost after a time with law ``F_l`` (same family, own parameters). Its
likelihood, with stays still running at the cut-off right-censored::

    Σ_adv [log p + log f_a(t)] + Σ_loss [log(1 − p) + log f_l(t)] + Σ_run log[p S_a(t) + (1 − p) S_l(t)]

maximised over ``(logit p, F_a, F_l)``. A running stay of age ``t`` then advances with probability
``p S_a(t) / (p S_a(t) + (1 − p) S_l(t))`` (:meth:`CompetingFit.advance_odds`), and the ``F_a`` it
reports is what a "time in stage, then convert" model needs for the leads that win.

The shared model (one time to any exit, independent of the outcome) is the mixture with ``F_a = F_l``;
:attr:`CompetingFit.aic_gain` compares the two by AIC, so a caller keeps the separate times only where the
history shows them: with heavy censoring the mixture's parameters trade off along a ridge, and its
times are much less certain than the shared one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from pipesim.distributions import Distribution
from pipesim.fitting import _SPECS, MIN_DAYS, Family, _covariance, fit_family

Array = NDArray[np.float64]


@dataclass(frozen=True)
class CompetingFit:
    """The mixture's maximum-likelihood fit; ``advance_mean_se`` from the observed information."""

    family: Family
    advance_probability: float
    advance_time: Distribution
    loss_time: Distribution
    advance_mean_se: float | None
    log_likelihood: float
    advances: int
    losses: int
    running: int
    shared_log_likelihood: float  # the shared model's: one time to any exit, in the same family

    @property
    def aic_gain(self) -> float:
        """AIC of the shared model minus the mixture's (positive: the separate times earn their keep)."""
        extra = len(_SPECS[self.family].names)  # the loss time's parameters
        return 2 * (self.log_likelihood - self.shared_log_likelihood) - 2 * extra

    def advance_odds(self, ages: Sequence[float] | Array) -> Array:
        """The chance that a stay still running at each age ends in an advance."""
        return advance_odds(self.advance_probability, self.advance_time, self.loss_time, ages)


def advance_odds(
    p: float, advance_time: Distribution, loss_time: Distribution, ages: Sequence[float] | Array
) -> Array:
    """``p S_a / (p S_a + (1 − p) S_l)`` at each age: the chance that a stay still running then ends in
    an advance, when a stay advances with probability ``p`` after ``advance_time`` else is lost after
    ``loss_time``."""
    days = np.maximum(np.asarray(ages, dtype=np.float64), 0.0)
    stay_a = p * (1.0 - advance_time.cdf(days))
    stay_l = (1 - p) * (1.0 - loss_time.cdf(days))
    total = stay_a + stay_l
    return np.asarray(np.where(total > 0, stay_a / np.maximum(total, 1e-300), 0.0), dtype=np.float64)


def fit_competing(
    family: Family,
    advances: Sequence[float] | Array,
    losses: Sequence[float] | Array,
    running: Sequence[float] | Array,
) -> CompetingFit:
    """Maximum-likelihood mixture of ``family`` times to advance and to loss (needs both outcomes)."""
    spec = _SPECS[family]
    adv = np.maximum(np.asarray(advances, dtype=np.float64), MIN_DAYS)
    lost = np.maximum(np.asarray(losses, dtype=np.float64), MIN_DAYS)
    run = np.maximum(np.asarray(running, dtype=np.float64), MIN_DAYS)
    if len(adv) < 2 or len(lost) < 2:
        raise ValueError("a competing fit needs at least two advances and two losses")
    k = len(spec.names)

    def negative_log_likelihood(x: Array) -> float:
        log_p, log_q = -np.logaddexp(0.0, -x[0]), -np.logaddexp(0.0, x[0])
        pa, pl = x[1 : 1 + k], x[1 + k :]
        try:
            with np.errstate(all="ignore"):
                total = len(adv) * log_p + spec.logpdf(pa, adv).sum()
                total += len(lost) * log_q + spec.logpdf(pl, lost).sum()
                if len(run):
                    total += np.logaddexp(log_p + spec.logsf(pa, run), log_q + spec.logsf(pl, run)).sum()
        except OverflowError:
            return 1e300
        return -float(total) if np.isfinite(total) else 1e300

    # Start from each outcome's own fit, running stays ignored, and the share of ended stays.
    start_a = _log_parameters(fit_family(family, adv, np.empty(0)).parameters, family)
    start_l = _log_parameters(fit_family(family, lost, np.empty(0)).parameters, family)
    share = len(adv) / (len(adv) + len(lost))
    start = np.concatenate([[special.logit(share)], start_a, start_l])
    x = np.asarray(optimize.minimize(negative_log_likelihood, start, method="BFGS").x, dtype=np.float64)
    if negative_log_likelihood(x) > negative_log_likelihood(start):
        x = start
    shared = fit_family(family, np.concatenate([adv, lost]), run).log_likelihood
    shared += len(adv) * math.log(share) + len(lost) * math.log(1 - share)
    covariance = _covariance(negative_log_likelihood, x)
    advance_time = spec.distribution(x[1 : 1 + k])
    mean_se = None
    if covariance is not None:
        step = 1e-5
        gradient = np.zeros(len(x))
        for i in range(1, 1 + k):
            e = np.eye(len(x))[i] * step
            up, down = spec.distribution((x + e)[1 : 1 + k]), spec.distribution((x - e)[1 : 1 + k])
            gradient[i] = (up.mean - down.mean) / (2 * step)
        variance = float(gradient @ covariance @ gradient)
        mean_se = math.sqrt(variance) if variance >= 0 else None
    return CompetingFit(
        family=family,
        advance_probability=float(special.expit(x[0])),
        advance_time=advance_time,
        loss_time=spec.distribution(x[1 + k :]),
        advance_mean_se=mean_se,
        log_likelihood=-negative_log_likelihood(x),
        advances=len(adv),
        losses=len(lost),
        running=len(run),
        shared_log_likelihood=shared,
    )


def _log_parameters(parameters: dict[str, float], family: Family) -> Array:
    """Back to the optimiser's log-parameters (log-normal's ``mu`` is already on the log scale)."""
    values = list(parameters.values())
    if family is Family.LOGNORMAL:
        return np.array([values[0], math.log(values[1])])
    return np.log(np.array(values, dtype=np.float64))
