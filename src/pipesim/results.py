"""Typed answers. Each has ``to_dict()`` (plain JSON-ready data) and is built from simulated samples.

Percentile convention: P10 is the 10th percentile — 10 % of trials came out below it, a pessimistic
outcome; P90 is an optimistic one. ``se`` fields are Monte Carlo standard errors.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipesim.distributions import Array


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _plain(self)
        return data


@dataclass(frozen=True)
class Estimate(_Serialisable):
    """A Monte Carlo estimate and its standard error."""

    value: float
    se: float

    @staticmethod
    def proportion(hits: NDArray[np.bool_] | Array) -> Estimate:
        p = float(np.mean(hits))
        return Estimate(p, math.sqrt(p * (1 - p) / len(hits)))

    @staticmethod
    def mean_of(samples: Array) -> Estimate:
        sd = float(np.std(samples, ddof=1)) if len(samples) > 1 else 0.0
        return Estimate(float(np.mean(samples)), sd / math.sqrt(len(samples)))


@dataclass(frozen=True)
class Summary(_Serialisable):
    """Distribution of one quantity over trials."""

    mean: float
    sd: float
    se: float  # standard error of the mean
    p10: float
    p50: float
    p90: float

    @staticmethod
    def of(samples: Array) -> Summary:
        p10, p50, p90 = np.percentile(samples, [10, 50, 90])
        sd = float(np.std(samples, ddof=1)) if len(samples) > 1 else 0.0
        return Summary(
            mean=float(np.mean(samples)),
            sd=sd,
            se=sd / math.sqrt(len(samples)),
            p10=float(p10),
            p50=float(p50),
            p90=float(p90),
        )


@dataclass(frozen=True)
class Histogram(_Serialisable):
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @staticmethod
    def of(samples: Array, bins: int = 30) -> Histogram:
        counts, edges = np.histogram(samples, bins=bins)
        return Histogram(tuple(edges.tolist()), tuple(int(c) for c in counts))


@dataclass(frozen=True)
class RevenueBand(_Serialisable):
    """Cumulative revenue won by ``day`` (a week's end, or the horizon): P10/P50/P90 over trials."""

    day: float
    p10: float
    p50: float
    p90: float

    @staticmethod
    def of(days: Array, cumulative: Array) -> tuple[RevenueBand, ...]:
        """Bands from ``cumulative`` (trials, days): the fan chart of revenue over time."""
        if cumulative.size == 0:
            return ()
        low, mid, high = np.percentile(cumulative, [10, 50, 90], axis=0)
        return tuple(
            RevenueBand(float(day), float(low[i]), float(mid[i]), float(high[i]))
            for i, day in enumerate(days)
        )


@dataclass(frozen=True)
class Forecast(_Serialisable):
    """Wins and revenue within the horizon."""

    engine: str
    trials: int
    seed: int
    currency: str
    horizon_days: float
    wins: Summary
    revenue: Summary
    revenue_new: Summary  # from leads arriving during the horizon
    revenue_existing: Summary  # from the open leads already in the pipeline
    wait_days: Summary  # mean wait of a new lead for a rep slot, up to the horizon (0 without capacity)
    histogram: Histogram  # of revenue
    goal: float | None
    p_goal: Estimate | None  # P(revenue >= goal)
    engine_reason: str = ""  # why ``engine`` was picked
    flow: FlowReport | None = None  # per-lead waits, lead times, utilisation, queues (with [reps])
    moments_only: bool = False  # engine "analytic": mean and sd are exact, percentiles unavailable
    revenue_by_week: tuple[RevenueBand, ...] = ()  # cumulative revenue by week's end: the fan chart


@dataclass(frozen=True)
class LeadsNeeded(_Serialisable):
    """Fewest new leads (a batch at day 0) with P(revenue >= goal within the horizon) >= confidence; for
    models with Poisson arrivals also the arrival rate that does it (``rate_per_week``)."""

    engine: str
    trials: int
    seed: int
    goal: float
    confidence: float
    leads: int
    p_goal: Estimate  # P(goal) at ``leads``, with its Monte Carlo standard error
    interval: tuple[int, int] | None  # 95 % Monte Carlo interval for ``leads``
    naive: int  # reverse funnel: goal ÷ mean deal ÷ conversions, ignoring variance and the horizon
    analytic: int | None  # negative-binomial answer where exact (fixed deals and conversions)
    rate_per_week: float | None = None  # Poisson models: lowest arrival rate reaching the goal (to 1 %)
    p_goal_at_rate: Estimate | None = None  # P(goal) at that rate


@dataclass(frozen=True)
class Comparison(_Serialisable):
    """Paired what-if: the same simulated leads under the base and the variant model."""

    engine: str
    trials: int
    seed: int
    currency: str
    base: Summary  # revenue
    variant: Summary
    difference: Summary  # variant − base, per trial
    wins_difference: Summary
    p_variant_better: float  # share of trials where the variant earned strictly more
    goal: float | None
    p_goal_base: Estimate | None
    p_goal_variant: Estimate | None
    p_goal_difference: Estimate | None  # paired: its se is that of the per-trial difference


@dataclass(frozen=True)
class Lever(_Serialisable):
    """The effect of one improvement on one stage."""

    stage: str
    change: str  # "losses -10%" or "time in stage -10%"
    revenue: Estimate  # paired change in mean revenue
    p_goal: Estimate | None  # paired change in P(goal)


@dataclass(frozen=True)
class Sensitivity(_Serialisable):
    """Which stage's improvement moves the outcome most; ``bottleneck`` names it."""

    engine: str
    trials: int
    seed: int
    goal: float | None
    levers: tuple[Lever, ...]  # most effective first
    bottleneck: str


BATCHES = 20  # trial batches for the standard error of per-lead statistics
QUANTILES = (0.5, 0.9, 0.99)  # per-lead quantiles reported


def pooled(values: Array, counts: NDArray[np.int64], statistic: Any) -> Estimate:
    """A per-lead statistic over all leads, with a batch-means standard error: leads of one trial share a
    queue and are not independent, so the error comes from the spread of the statistic over
    ``BATCHES`` groups of whole trials. ``values`` are in trial order, ``counts[i]`` of them trial i's."""
    return pooled_all(values, counts, lambda sample: np.array([statistic(sample)]))[0]


def pooled_all(
    values: Array, counts: NDArray[np.int64], statistics: Callable[[Array], Array]
) -> tuple[Estimate, ...]:
    """:func:`pooled` for several statistics computed together (e.g. ``np.quantile`` at several levels
    partitions the sample once for all of them): one estimate per value ``statistics`` returns."""
    count = len(statistics(np.zeros(1)))
    if len(values) == 0:
        return tuple(Estimate(math.nan, math.nan) for _ in range(count))
    whole = np.asarray(statistics(values), dtype=np.float64)
    # Whole-trial batches: the first value of trial ceil(i·trials/BATCHES) starts batch i.
    trials = len(counts)
    ends = np.concatenate(([0], np.cumsum(counts)))  # values before each trial
    bounds = ends[np.ceil(np.arange(BATCHES + 1) * trials / BATCHES).astype(np.int64)]
    parts = np.array(
        [
            np.asarray(statistics(values[a:b]), dtype=np.float64)
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
    )
    if len(parts) < 2:
        return tuple(Estimate(float(v), math.nan) for v in whole)
    # Each statistic's spread from its own contiguous column: the same summation as a 1-D sample.
    se = [
        float(np.std(np.ascontiguousarray(parts[:, i]), ddof=1)) / math.sqrt(len(parts)) for i in range(count)
    ]
    return tuple(Estimate(float(v), e) for v, e in zip(whole, se, strict=True))


@dataclass(frozen=True)
class Exceedance(_Serialisable):
    days: float
    probability: Estimate  # share of measured leads that waited longer than ``days``


@dataclass(frozen=True)
class LeadDays(_Serialisable):
    """Days per lead (wait or lead time), pooled over every measured lead of every trial."""

    leads: int  # how many leads were measured, over all trials
    mean: Estimate
    p50: Estimate
    p90: Estimate
    p99: Estimate

    @staticmethod
    def of(values: Array, counts: NDArray[np.int64]) -> LeadDays:
        # The three quantiles from one partition of each sample.
        p50, p90, p99 = pooled_all(values, counts, lambda sample: np.quantile(sample, QUANTILES))
        return LeadDays(leads=len(values), mean=pooled(values, counts, np.mean), p50=p50, p90=p90, p99=p99)


@dataclass(frozen=True)
class WeeklyQueue(_Serialisable):
    day: float  # end of the week
    p10: float  # leads waiting for a rep slot, over trials
    p50: float
    p90: float


@dataclass(frozen=True)
class FlowReport(_Serialisable):
    """Queues and capacity, measured in the window (after the warm-up, up to its end)."""

    window: tuple[float, float]  # days
    wait: LeadDays  # each new lead's wait for a rep slot (cut at the horizon if still waiting)
    wait_exceeds: tuple[Exceedance, ...]  # P(wait > t) per lead, for the thresholds asked
    lead_time: LeadDays  # arrival to win, for new leads won within the horizon
    utilisation: Estimate  # share of rep-slot time in use, mean over trials
    queue_by_week: tuple[WeeklyQueue, ...]


@dataclass(frozen=True)
class CapacityRow(_Serialisable):
    """The model with ``added`` more reps (``reps`` in all)."""

    added: int
    reps: int
    engine: str
    revenue: Summary
    wins: Summary
    p_goal: Estimate | None
    wait_p90: Estimate  # days, per lead
    utilisation: Estimate
    gain: Estimate | None  # paired change in mean revenue from one rep fewer (None for the first row)


@dataclass(frozen=True)
class CapacityPlan(_Serialisable):
    """Revenue, goal odds, waits and utilisation for 0..k reps added, all on the same simulated leads."""

    trials: int
    seed: int
    currency: str
    goal: float | None
    rows: tuple[CapacityRow, ...]
    knee: int | None  # reps added after which one more rep buys less than half the one before
    summary: str  # "the 1st rep adds $X, the 2nd $Y, ..."
