"""Fitting time-in-stage distributions to observed stays, some of them still running.

A stay either ended (an *exit*: the lead advanced or was lost, at a known number of days) or is still
running at the cut-off (*right-censored*: it lasted at least that long). Dropping the running stays
biases every fit low, because the long stays are the ones still running; the likelihood here counts
each exit by its density and each running stay by its survival, ``Σ log f(exit) + Σ log S(running)``.

Four families are fitted by maximum likelihood — exponential, Weibull, log-normal and gamma — and the one
with the lowest AIC (``2k − 2 log L``) is chosen. Each fit reports its standard errors from the observed
information (the inverse Hessian of the negative log-likelihood in log-parameters, by finite
differences), so a caller can say how sure the fit is and a test can check recovery within a few SE.

The optimiser works on log-parameters with each family's closed-form log density and log survival
(scipy.special), vectorised over the sample: many times faster than ``rv_continuous.fit`` on
:class:`scipy.stats.CensoredData` (a Nelder–Mead search over generic methods), and it reaches the same
optimum, which ``tests/sim/test_fitting.py`` checks. The exponential's optimum is the closed form
``days of every stay / exits``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from pipesim.distributions import Distribution, Exponential, Gamma, LogNormal, Weibull

Array = NDArray[np.float64]

MIN_DAYS = 1.0 / 24  # stays shorter than an hour count as an hour: the families need positive times


class Family(enum.StrEnum):
    EXPONENTIAL = "exponential"
    WEIBULL = "weibull"
    LOGNORMAL = "lognormal"
    GAMMA = "gamma"


@dataclass(frozen=True)
class FamilyFit:
    """One family's maximum-likelihood fit."""

    family: Family
    distribution: Distribution
    log_likelihood: float
    aic: float
    parameters: dict[str, float]
    standard_errors: dict[str, float]  # of ``parameters``, from the observed information
    mean_se: float | None  # of the distribution's mean, by the delta method


@dataclass(frozen=True)
class DurationFit:
    """Every family's fit, best first by AIC, with the counts behind them."""

    exits: int
    running: int
    fits: tuple[FamilyFit, ...]

    @property
    def best(self) -> FamilyFit:
        return self.fits[0]


@dataclass(frozen=True)
class _Spec:
    """A family as the optimiser sees it: log-likelihood terms of log-parameters, and the distribution."""

    names: tuple[str, ...]
    logpdf: Callable[[Array, Array], Array]  # (log-parameters, days) -> log density
    logsf: Callable[[Array, Array], Array]  # (log-parameters, days) -> log survival
    distribution: Callable[[Array], Distribution]
    start: Callable[[float, float], Array]  # from the sample's log-mean and log-sd


def _weibull_start(log_mean: float, log_sd: float) -> Array:
    shape = 1.28 / max(log_sd, 0.05)  # the log of a Weibull time has sd π / (k √6) ≈ 1.28 / k
    return np.array([math.log(shape), log_mean + 0.5772 / shape])


def _weibull_logpdf(p: Array, x: Array) -> Array:
    k, scale = math.exp(p[0]), math.exp(p[1])
    z = x / scale
    return np.asarray(math.log(k / scale) + (k - 1) * np.log(z) - z**k)


def _lognormal_logpdf(p: Array, x: Array) -> Array:
    mu, sigma = p[0], math.exp(p[1])
    z = (np.log(x) - mu) / sigma
    return np.asarray(-0.5 * z * z - np.log(x) - math.log(sigma) - 0.5 * math.log(2 * math.pi))


def _gamma_logpdf(p: Array, x: Array) -> Array:
    a, scale = math.exp(p[0]), math.exp(p[1])
    return np.asarray((a - 1) * np.log(x) - x / scale - special.gammaln(a) - a * math.log(scale))


def _gamma_logsf(p: Array, x: Array) -> Array:
    survival = special.gammaincc(math.exp(p[0]), x / math.exp(p[1]))
    return np.asarray(np.log(np.maximum(survival, 1e-300)))


_SPECS: dict[Family, _Spec] = {
    Family.EXPONENTIAL: _Spec(
        names=("mean",),
        logpdf=lambda p, x: -x / math.exp(p[0]) - p[0],
        logsf=lambda p, x: -x / math.exp(p[0]),
        distribution=lambda p: Exponential(math.exp(p[0])),
        start=lambda log_mean, log_sd: np.array([log_mean + log_sd**2 / 2]),
    ),
    Family.WEIBULL: _Spec(
        names=("shape", "scale"),
        logpdf=_weibull_logpdf,
        logsf=lambda p, x: -((x / math.exp(p[1])) ** math.exp(p[0])),
        distribution=lambda p: Weibull(math.exp(p[0]), math.exp(p[1])),
        start=_weibull_start,
    ),
    Family.LOGNORMAL: _Spec(
        # p = (mu, log sigma): mu is already on the log scale.
        names=("mu", "sigma"),
        logpdf=_lognormal_logpdf,
        logsf=lambda p, x: special.log_ndtr((p[0] - np.log(x)) / math.exp(p[1])),
        distribution=lambda p: _lognormal(p[0], math.exp(p[1])),
        start=lambda log_mean, log_sd: np.array([log_mean, math.log(max(log_sd, 0.05))]),
    ),
    Family.GAMMA: _Spec(
        names=("shape", "scale"),
        logpdf=_gamma_logpdf,
        logsf=_gamma_logsf,
        distribution=lambda p: Gamma(math.exp(p[0]), math.exp(p[1])),
        start=lambda log_mean, log_sd: np.array(
            [-2 * math.log(max(log_sd, 0.05)), log_mean + 2 * math.log(max(log_sd, 0.05))]
        ),
    ),
}


def _lognormal(mu: float, sigma: float) -> LogNormal:
    mean = math.exp(mu + sigma * sigma / 2)
    return LogNormal(mean, mean * math.sqrt(math.expm1(sigma * sigma)))


def _natural(family: Family, p: Array) -> dict[str, float]:
    """The parameters as people read them (log-normal's ``mu`` stays on the log scale)."""
    if family is Family.LOGNORMAL:
        return {"mu": float(p[0]), "sigma": math.exp(p[1])}
    return {name: math.exp(value) for name, value in zip(_SPECS[family].names, p, strict=True)}


def _hessian(f: Callable[[Array], float], x: Array) -> Array:
    """Central finite differences; steps scaled to each coordinate."""
    n = len(x)
    h = 1e-4 * np.maximum(np.abs(x), 1.0)
    out = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = np.eye(n)[i] * h[i], np.eye(n)[j] * h[j]
            value = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
            out[i, j] = out[j, i] = value
    return out


def fit_family(family: Family, exits: Array, running: Array) -> FamilyFit:
    """Maximum-likelihood fit of one family to exits and right-censored running stays."""
    spec = _SPECS[family]
    exits = np.maximum(np.asarray(exits, dtype=np.float64), MIN_DAYS)
    running = np.maximum(np.asarray(running, dtype=np.float64), MIN_DAYS)
    if len(exits) == 0:
        raise ValueError("a duration fit needs at least one exit")

    def negative_log_likelihood(p: Array) -> float:
        try:
            with np.errstate(all="ignore"):
                total = spec.logpdf(p, exits).sum() + spec.logsf(p, running).sum()
        except OverflowError:  # a line search far out: ``math.exp`` of a huge log-parameter
            return 1e300
        return -float(total) if np.isfinite(total) else 1e300

    logs = np.log(exits)
    log_sd = float(logs.std()) if len(exits) > 1 else 1.0
    start = spec.start(float(logs.mean()), log_sd)
    if family is Family.EXPONENTIAL:
        p = np.array([math.log((exits.sum() + running.sum()) / len(exits))])  # closed form
    else:
        p = np.asarray(optimize.minimize(negative_log_likelihood, start, method="BFGS").x, dtype=np.float64)
    log_likelihood = -negative_log_likelihood(p)
    covariance = _covariance(negative_log_likelihood, p)
    natural = _natural(family, p)
    errors, mean_se = _errors(family, spec, p, covariance)
    return FamilyFit(
        family=family,
        distribution=spec.distribution(p),
        log_likelihood=log_likelihood,
        aic=2 * len(p) - 2 * log_likelihood,
        parameters=natural,
        standard_errors=errors,
        mean_se=mean_se,
    )


def _covariance(f: Callable[[Array], float], p: Array) -> Array | None:
    try:
        covariance = np.linalg.inv(_hessian(f, p))
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(covariance)) or np.any(np.diag(covariance) < 0):
        return None
    return np.asarray(covariance, dtype=np.float64)


def _errors(
    family: Family, spec: _Spec, p: Array, covariance: Array | None
) -> tuple[dict[str, float], float | None]:
    if covariance is None:
        return dict.fromkeys(spec.names, math.nan), None
    # Delta method: d natural / d log-parameter is the parameter itself (log-normal's mu: 1).
    scale = np.array(
        [
            value if not (family is Family.LOGNORMAL and i == 0) else 1.0
            for i, value in enumerate(_natural(family, p).values())
        ]
    )
    errors = {
        name: float(abs(s) * math.sqrt(covariance[i, i]))
        for i, (name, s) in enumerate(zip(spec.names, scale, strict=True))
    }
    gradient = np.array(
        [
            (spec.distribution(p + step).mean - spec.distribution(p - step).mean) / (2 * 1e-5)
            for step in np.eye(len(p)) * 1e-5
        ]
    )
    mean_variance = float(gradient @ covariance @ gradient)
    return errors, math.sqrt(mean_variance) if mean_variance >= 0 else None


def fit_durations(
    exits: Sequence[float] | Array,
    running: Sequence[float] | Array,
    families: Sequence[Family] = tuple(Family),
) -> DurationFit:
    """Fit every family and order them by AIC, best first."""
    exit_days = np.asarray(exits, dtype=np.float64)
    running_days = np.asarray(running, dtype=np.float64)
    fits = sorted(
        (fit_family(family, exit_days, running_days) for family in families), key=lambda fit: fit.aic
    )
    return DurationFit(exits=len(exit_days), running=len(running_days), fits=tuple(fits))
