"""Small named distributions for times in stage, deal sizes and conversion probabilities.

Every distribution samples by inversion: ``ppf(u)`` maps uniforms in [0, 1) to values. The engines draw the
uniforms from per-lead streams and pass them through ``ppf``, so two models that differ only in one
distribution's parameters see the same uniforms — common random numbers come for free. ``sample`` takes a
``numpy.random.Generator`` for the occasional direct draw; nothing touches global random state.

``remaining(u, age)`` draws the time still to spend in a stage for a lead that has already spent ``age``
days there: the total time conditioned on exceeding the age, minus the age.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import numpy as np
from numpy.typing import NDArray
from scipy import special

Array: TypeAlias = NDArray[np.float64]


class Distribution(Protocol):
    """A non-negative continuous (or discrete empirical) distribution, sampled by inversion."""

    @property
    def mean(self) -> float: ...

    @property
    def variance(self) -> float: ...

    def ppf(self, u: Array) -> Array: ...

    def cdf(self, x: Array) -> Array: ...

    def remaining(self, u: Array, age: float) -> Array: ...

    def scaled(self, factor: float) -> Distribution: ...

    def to_mapping(self) -> dict[str, Any]: ...


class _Inversion:
    """Shared behaviour: sampling and the age-conditioned remaining time by inversion."""

    def ppf(self, u: Array) -> Array:
        raise NotImplementedError

    def cdf(self, x: Array) -> Array:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> Array:
        return self.ppf(rng.random(size))

    def remaining(self, u: Array, age: float) -> Array:
        if age <= 0:
            return self.ppf(u)
        below = float(self.cdf(np.array([age]))[0])
        if below >= 1.0:
            # Older than any time the distribution allows: the stage ends now.
            return np.zeros_like(u)
        return np.maximum(self.ppf(below + u * (1.0 - below)) - age, 0.0)


@dataclass(frozen=True)
class Fixed(_Inversion):
    """Always ``value``."""

    value: float

    @property
    def mean(self) -> float:
        return self.value

    @property
    def variance(self) -> float:
        return 0.0

    def ppf(self, u: Array) -> Array:
        return np.full(np.shape(u), self.value, dtype=np.float64)

    def cdf(self, x: Array) -> Array:
        return (np.asarray(x) >= self.value).astype(np.float64)

    def remaining(self, u: Array, age: float) -> Array:
        return np.full(np.shape(u), max(self.value - age, 0.0), dtype=np.float64)

    def scaled(self, factor: float) -> Fixed:
        return Fixed(self.value * factor)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "fixed", "value": self.value}


@dataclass(frozen=True)
class Exponential(_Inversion):
    """Memoryless waiting time with the given ``mean``."""

    mean_value: float

    @property
    def mean(self) -> float:
        return self.mean_value

    @property
    def variance(self) -> float:
        return self.mean_value**2

    def ppf(self, u: Array) -> Array:
        if np.ndim(u) == 0 or np.asarray(u).dtype != np.float64:
            return -self.mean_value * np.log1p(-np.asarray(u))
        t = np.negative(u)  # -mean·log1p(-u) in one buffer: the same operations, bit for bit
        np.log1p(t, out=t)
        t *= -self.mean_value
        return t

    def cdf(self, x: Array) -> Array:
        return -np.expm1(-np.maximum(x, 0.0) / self.mean_value)

    def remaining(self, u: Array, age: float) -> Array:
        return self.ppf(u)  # memoryless: the age changes nothing

    def scaled(self, factor: float) -> Exponential:
        return Exponential(self.mean_value * factor)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "exponential", "mean": self.mean_value}


@dataclass(frozen=True)
class Gamma(_Inversion):
    """Gamma with ``shape`` k and ``scale`` θ (mean kθ); a sum of k exponential phases when k is whole."""

    shape: float
    scale: float

    @property
    def mean(self) -> float:
        return self.shape * self.scale

    @property
    def variance(self) -> float:
        return self.shape * self.scale**2

    def ppf(self, u: Array) -> Array:
        return np.asarray(special.gammaincinv(self.shape, u), dtype=np.float64) * self.scale

    def cdf(self, x: Array) -> Array:
        return np.asarray(special.gammainc(self.shape, np.maximum(x, 0.0) / self.scale), dtype=np.float64)

    def scaled(self, factor: float) -> Gamma:
        return Gamma(self.shape, self.scale * factor)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "gamma", "shape": self.shape, "scale": self.scale}


@dataclass(frozen=True)
class Weibull(_Inversion):
    """Weibull with ``shape`` k and ``scale`` λ: the hazard falls with time in stage when k < 1 (the longer a
    lead waits, the less likely it moves) and rises when k > 1; k = 1 is the exponential."""

    shape: float
    scale: float

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1 + 1 / self.shape)

    @property
    def variance(self) -> float:
        return self.scale**2 * (math.gamma(1 + 2 / self.shape) - math.gamma(1 + 1 / self.shape) ** 2)

    def ppf(self, u: Array) -> Array:
        return np.asarray(self.scale * (-np.log1p(-np.asarray(u))) ** (1 / self.shape), dtype=np.float64)

    def cdf(self, x: Array) -> Array:
        return np.asarray(-np.expm1(-((np.maximum(x, 0.0) / self.scale) ** self.shape)), dtype=np.float64)

    def remaining(self, u: Array, age: float) -> Array:
        # Closed form of the conditional inverse, exact where the generic one loses digits deep in the tail.
        if age <= 0:
            return self.ppf(u)
        past = (age / self.scale) ** self.shape
        total = self.scale * (past - np.log1p(-np.asarray(u))) ** (1 / self.shape)
        return np.asarray(np.maximum(total - age, 0.0), dtype=np.float64)

    def scaled(self, factor: float) -> Weibull:
        return Weibull(self.shape, self.scale * factor)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "weibull", "shape": self.shape, "scale": self.scale}


@dataclass(frozen=True)
class LogNormal(_Inversion):
    """Log-normal given its own ``mean`` and ``sd`` (not those of the underlying normal)."""

    mean_value: float
    sd: float
    _mu: float = field(init=False, repr=False, compare=False)
    _sigma: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sigma2 = math.log1p((self.sd / self.mean_value) ** 2)
        object.__setattr__(self, "_sigma", math.sqrt(sigma2))
        object.__setattr__(self, "_mu", math.log(self.mean_value) - sigma2 / 2)

    @property
    def mean(self) -> float:
        return self.mean_value

    @property
    def variance(self) -> float:
        return self.sd**2

    def ppf(self, u: Array) -> Array:
        return np.asarray(np.exp(self._mu + self._sigma * special.ndtri(u)), dtype=np.float64)

    def cdf(self, x: Array) -> Array:
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - self._mu) / self._sigma
        return np.asarray(special.ndtr(z), dtype=np.float64)

    def scaled(self, factor: float) -> LogNormal:
        return LogNormal(self.mean_value * factor, self.sd * factor)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "lognormal", "mean": self.mean_value, "sd": self.sd}


@dataclass(frozen=True)
class Triangular(_Inversion):
    """Triangular on [``low``, ``high``] peaking at ``mode``: for "usually about m, between a and b"."""

    low: float
    mode: float
    high: float

    @property
    def mean(self) -> float:
        return (self.low + self.mode + self.high) / 3

    @property
    def variance(self) -> float:
        a, c, b = self.low, self.mode, self.high
        return (a * a + b * b + c * c - a * b - a * c - b * c) / 18

    def ppf(self, u: Array) -> Array:
        a, c, b = self.low, self.mode, self.high
        if b == a:
            return np.full(np.shape(u), a, dtype=np.float64)
        u = np.asarray(u, dtype=np.float64)
        if u.ndim == 0:
            return self.ppf(u.reshape(1)).reshape(())
        above = u >= (c - a) / (b - a)
        # One square root per value (of whichever side it falls on), not one per side: the same
        # operations in the same order as ``a + sqrt(u·(b−a)·(c−a))`` below the mode and
        # ``b − sqrt((1−u)·(b−a)·(b−c))`` above it, so bit for bit the same values. No masked
        # arithmetic (``where=`` runs several times slower than a plain pass): ``|u − 1|`` is exactly
        # ``1 − u``, and the side's factor and end are picked per value.
        t = np.subtract(u, above)
        np.abs(t, out=t)
        t *= b - a
        t *= np.where(above, b - c, c - a)
        np.sqrt(t, out=t)
        return np.where(above, b - t, a + t)

    def cdf(self, x: Array) -> Array:
        a, c, b = self.low, self.mode, self.high
        x = np.clip(np.asarray(x, dtype=np.float64), a, b)
        if b == a:
            return (x >= a).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            left = (x - a) ** 2 / ((b - a) * (c - a))
            right = 1 - (b - x) ** 2 / ((b - a) * (b - c))
        return np.where(x <= c, np.nan_to_num(left), np.nan_to_num(right, nan=1.0))

    def scaled(self, factor: float) -> Triangular:
        return Triangular(self.low * factor, self.mode * factor, self.high * factor)

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "triangular", "low": self.low, "mode": self.mode, "high": self.high}


@dataclass(frozen=True)
class Empirical(_Inversion):
    """Resamples observed values with equal weight (a bootstrap of the history it came from)."""

    samples: tuple[float, ...]
    _sorted: Array = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sorted", np.sort(np.asarray(self.samples, dtype=np.float64)))

    @property
    def mean(self) -> float:
        return float(self._sorted.mean())

    @property
    def variance(self) -> float:
        return float(self._sorted.var())

    def ppf(self, u: Array) -> Array:
        n = len(self._sorted)
        index = np.minimum((np.asarray(u) * n).astype(np.int64), n - 1)
        return np.asarray(self._sorted[index], dtype=np.float64)

    def cdf(self, x: Array) -> Array:
        return np.searchsorted(self._sorted, x, side="right") / len(self._sorted)

    def remaining(self, u: Array, age: float) -> Array:
        # Resample only among the observations longer than the age, as the calibration needs.
        longer = self._sorted[self._sorted > age]
        if len(longer) == 0:
            return np.zeros_like(u)
        index = np.minimum((np.asarray(u) * len(longer)).astype(np.int64), len(longer) - 1)
        return longer[index] - age

    def scaled(self, factor: float) -> Empirical:
        return Empirical(tuple(value * factor for value in self.samples))

    def to_mapping(self) -> dict[str, Any]:
        return {"dist": "empirical", "samples": list(self.samples)}


@dataclass(frozen=True)
class FixedProbability:
    """A conversion probability known exactly."""

    p: float

    @property
    def mean(self) -> float:
        return self.p

    @property
    def second_moment(self) -> float:
        return self.p * self.p

    @property
    def is_fixed(self) -> bool:
        return True

    def ppf(self, u: Array) -> Array:
        return np.full(np.shape(u), self.p, dtype=np.float64)

    def improved(self, share: float) -> FixedProbability:
        """Removes ``share`` of the losses: p + share·(1 − p)."""
        return FixedProbability(self.p + share * (1 - self.p))

    def to_value(self) -> float | dict[str, float]:
        return self.p


@dataclass(frozen=True)
class BetaProbability:
    """A conversion probability learnt from limited history: Beta(alpha, beta), e.g. wins+1, losses+1.

    The engines draw it once per trial, so its uncertainty widens the forecast as it should."""

    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def second_moment(self) -> float:
        a, b = self.alpha, self.beta
        return a * (a + 1) / ((a + b) * (a + b + 1))

    @property
    def is_fixed(self) -> bool:
        return False

    def ppf(self, u: Array) -> Array:
        return np.asarray(special.betaincinv(self.alpha, self.beta, u), dtype=np.float64)

    def improved(self, share: float) -> BetaProbability:
        """Removes ``share`` of the expected losses, keeping the weight of evidence (alpha + beta)."""
        total = self.alpha + self.beta
        mean = min(self.mean + share * (1 - self.mean), 1 - 1e-9)
        return BetaProbability(mean * total, (1 - mean) * total)

    def to_value(self) -> float | dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}


Conversion: TypeAlias = FixedProbability | BetaProbability
