"""In-horizon probabilities per trial when each trial scales the times in stage (parameter uncertainty).

A trial multiplies every time in stage ``i`` by its own ``s_i = exp(sd_i · Z_i)``; given the scales the
leads of a group still share one finish-time law, so a trial's in-horizon wins of the group are
``Bin(n, P·q(s))`` — only ``q`` now depends on the trial. Per block it is computed for all trials at
once:

- the later stages' times on a grid of ``GRID`` steps over the horizon, each stage's masses (its law
  rounded to the nearest point) computed at Chebyshev nodes in ``log s`` and interpolated to the
  trial's scale, then convolved trial by trial (one batched FFT per stage), with the arrival time of a
  new lead;
- the start stage's remaining time given the group's age, ``s·T − a`` given ``s·T > a``, enters through
  its distribution function at a few scales — Chebyshev nodes in ``log s`` over the block's range — and
  each trial's ``q`` is the barycentric interpolant at its own scale. ``q`` is an analytic function of
  ``log s`` for the smooth laws (:data:`SMOOTH`), so the interpolation error falls geometrically with
  the nodes; ``tests/sim/test_cohort_scales.py`` bounds it (and the coarser grid's error against the
  fine grid of :mod:`pipesim.engines.cohorts`) far below the Monte Carlo standard error.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np
from scipy import signal, special

from pipesim.arrival_profile import arrival_times
from pipesim.distributions import Array, Distribution, Exponential, Gamma, LogNormal, Weibull
from pipesim.engines.cohorts import TAIL, arrival_of
from pipesim.engines.common import Group
from pipesim.spec import Model

GRID = 1 << 8  # grid steps over the horizon
ATOMS = 1 << 11  # quantile atoms of an arrival profile and of a remaining time deep in the tail
NODE_COUNTS = (8, 12, 16, 24)  # Chebyshev node counts in log(scale), fewest first (fewer than 8 met the
# tolerance for no cohort of the calibrated 100,000-lead model: trying them cost as much as the answer)
TOLERANCE = 1e-9  # largest interpolation error accepted on a probability (see ``interpolated``)
SMOOTH = (Exponential, Gamma, Weibull, LogNormal)  # laws whose q is analytic in log(scale)


def covers(model: Model) -> bool:
    """Whether every stage whose times are uncertain has a law this interpolation is exact enough for."""
    return all(
        stage.time_uncertainty == 0 or isinstance(stage.time_in_stage, SMOOTH) for stage in model.stages
    )


@functools.cache
def _atoms() -> Array:
    return (np.arange(ATOMS) + 0.5) / ATOMS


def deposit(values: Array, scale: Array, horizon: float) -> Array:
    """(len(scale), GRID + 1) grid masses of ``values × scale[t]`` (equal-weight atoms), each atom split
    linearly between its two nearest points; atoms beyond the horizon are dropped."""
    trials = len(scale)
    position = values[None, :] * scale[:, None] * (GRID / horizon)
    keep = position <= GRID
    position = np.where(keep, position, 0.0)  # beyond the horizon, or infinite: dropped below
    low = np.floor(position).astype(np.int64)
    share = position - low
    index = (np.arange(trials)[:, None] * (GRID + 2) + low)[keep]
    size = trials * (GRID + 2)
    mass = np.bincount(index, weights=(1.0 - share)[keep], minlength=size)
    mass += np.bincount(index + 1, weights=share[keep], minlength=size)
    return np.asarray(mass.reshape(trials, GRID + 2)[:, : GRID + 1] / len(values), dtype=np.float64)


def bin_masses(law: Distribution, scale: Array, horizon: float) -> Array:
    """(len(scale), GRID + 1) masses of ``scale × law`` rounded to the nearest grid point (the last
    point takes only the half-step up to the horizon: later times finish late whatever follows)."""
    edges = np.append(np.arange(GRID + 1) - 0.5, GRID) * (horizon / GRID)
    edges[0] = 0.0
    cdf = law.cdf(np.clip(edges[None, :] / scale[:, None], 0.0, None))
    return np.asarray(np.diff(cdf, axis=1), dtype=np.float64)


def interpolated(rows_at: Callable[[Array], Array], log_s: Array) -> tuple[Array, Array]:
    """Chebyshev nodes in log(scale) over ``log_s``'s range and ``rows_at`` at them: the fewest nodes
    whose barycentric interpolant is within ``TOLERANCE`` of ``rows_at`` at as many points between
    them (every row a vector of probabilities, so this bounds the error of any q made from them)."""
    return interpolated_between(rows_at, float(log_s.min()), float(log_s.max()))


def interpolated_between(rows_at: Callable[[Array], Array], low: float, high: float) -> tuple[Array, Array]:
    """:func:`interpolated` over the range ``[low, high]`` of log(scale)."""
    if high - low < 1e-12:
        return np.array([low]), rows_at(np.exp(np.array([low])))
    for count in NODE_COUNTS:
        at = chebyshev_nodes(low, high, count)
        rows = rows_at(np.exp(at))
        check = chebyshev_nodes(low, high, count + 1)
        if np.abs(barycentric(at, check) @ rows - rows_at(np.exp(check))).max() <= TOLERANCE:
            break
    return at, rows


SPREAD_SDS = 6.0  # the nodes span this many sds of log(scale) each way: the same for every block


def node_range(sd: float, log_s: Array) -> tuple[float, float]:
    """The range of log(scale) a stage's nodes span: ``± SPREAD_SDS · sd`` (``log s = sd · Z``), widened
    to the block's own scales if any lies beyond (a chance of about 2e-9 a trial). Fixed by the model
    rather than by the block's extremes, so every block of every question of a model shares its nodes
    and the rows at them (:func:`start_rows`)."""
    low, high = float(log_s.min()), float(log_s.max())
    if sd > 0:
        low, high = min(low, -SPREAD_SDS * sd), max(high, SPREAD_SDS * sd)
    return low, high


START_ROWS_KEPT = 2048  # groups' start-stage rows kept per process (a few KiB to ~50 KiB each)

RowsKey = tuple[Any, float, float, float, float]  # law (a Distribution), age, horizon, low, high


class _KeptRows:
    """Start-stage rows by group, least recently used dropped first; counts hits and misses like
    ``functools.lru_cache`` (tests read them)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[Array, Array]] = OrderedDict()
        self._hits = self._misses = 0
        self._lock = threading.Lock()  # blocks may run on threads of one process

    def get(self, key: Hashable) -> tuple[Array, Array] | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self._misses += 1
                return None
            self._hits += 1
            self._entries.move_to_end(key)
            return found

    def put(self, key: Hashable, value: tuple[Array, Array]) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def cache_info(self) -> Any:  # functools' _CacheInfo
        return functools._CacheInfo(self._hits, self._misses, self._size, len(self._entries))

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0


kept_rows = _KeptRows(START_ROWS_KEPT)


def start_rows(
    law: Any, ages: Sequence[float], horizon: float, low: float, high: float
) -> list[tuple[Array, Array]]:  # a Distribution
    """The start stage's terms of groups of one stage (at their ``ages``) at their Chebyshev nodes over
    ``[low, high]`` (log scale), kept: the questions of one view (``forecast`` and ``leadsNeeded`` of
    one model, seed and trials) draw the same scales per block, so the second reads the open cohorts'
    rows the first computed. The arguments fix the rows, so a kept entry is the same numbers computed
    again (:func:`start_rows_reference`). The groups not kept are computed together. Callers must not
    write to them."""
    keys: list[RowsKey] = [(law, age, horizon, low, high) for age in ages]
    found: list[tuple[Array, Array] | None] = [kept_rows.get(cast(Hashable, key)) for key in keys]
    missing = [index for index, entry in enumerate(found) if entry is None]
    if missing:
        computed = _interpolated_starts(law, np.array([ages[index] for index in missing]), horizon, low, high)
        for index, (at, rows) in zip(missing, computed, strict=True):
            at.flags.writeable = False
            rows.flags.writeable = False
            found[index] = (at, rows)
            kept_rows.put(cast(Hashable, keys[index]), (at, rows))
    return [entry for entry in found if entry is not None]


def start_rows_reference(
    law: Any, age: float, horizon: float, low: float, high: float
) -> tuple[Array, Array]:  # a Distribution
    """One group's rows of :func:`start_rows`, computed alone."""
    return interpolated_between(functools.partial(start_terms, law, age, horizon), low, high)


def _interpolated_starts(
    law: Distribution, ages: Array, horizon: float, low: float, high: float
) -> list[tuple[Array, Array]]:
    """:func:`interpolated_between` of each age's :func:`start_terms`, the ages' terms at each node count
    computed in one call."""
    if high - low < 1e-12:
        at = np.array([low])
        rows = start_terms_of(law, ages, horizon, np.exp(at))
        return [(at.copy(), rows[index].copy()) for index in range(len(ages))]
    found: list[tuple[Array, Array]] = [(np.zeros(0), np.zeros(0))] * len(ages)
    pending = np.arange(len(ages))
    for count in NODE_COUNTS:
        at = chebyshev_nodes(low, high, count)
        check = chebyshev_nodes(low, high, count + 1)
        weights = barycentric(at, check)
        rows = start_terms_of(law, ages[pending], horizon, np.exp(at))
        checked = start_terms_of(law, ages[pending], horizon, np.exp(check))
        failed = []
        for row, index in enumerate(pending):
            found[index] = (at, rows[row].copy())
            if not np.abs(weights @ rows[row] - checked[row]).max() <= TOLERANCE:
                failed.append(index)
        pending = np.array(failed, dtype=np.int64)
        if not len(pending):
            break
    return found


def _stage_masses(law: Distribution, scale: Array, horizon: float) -> Array:
    """Per trial (one row for all when the scale is fixed) the stage's time on the grid: the masses at
    Chebyshev nodes in log(scale), interpolated to each trial's scale."""
    log_s = np.log(scale)
    at, rows = interpolated(lambda nodes: bin_masses(law, nodes, horizon), log_s)
    if len(at) == 1:
        return rows
    return np.asarray(barycentric(at, log_s) @ rows, dtype=np.float64)


def _convolve(a: Array, b: Array) -> Array:
    return np.asarray(np.maximum(signal.fftconvolve(a, b, axes=1)[:, : GRID + 1], 0.0), dtype=np.float64)


def later_masses(model: Model, scales: Array) -> list[Array]:
    """Per stage ``j``, the (trials or 1, GRID + 1) masses of the time spent in the stages after ``j``."""
    n = len(model.stages)
    horizon = model.horizon_days
    masses: list[Array] = [np.zeros((1, GRID + 1))] * n
    mass = np.zeros((1, GRID + 1))
    mass[0, 0] = 1.0
    for j in range(n - 1, -1, -1):
        masses[j] = mass
        if j > 0:
            mass = _convolve(mass, _stage_masses(model.stages[j].time_in_stage, scales[:, j], horizon))
    return masses


def _arrival_masses(model: Model, group: Group) -> Array | None:
    arrivals = arrival_of(model, group)
    if arrivals is None:
        return None
    if not arrivals.varies:
        mass = np.full((1, GRID + 1), 1.0 / GRID)
        mass[0, [0, -1]] = 0.5 / GRID
        return mass
    return deposit(arrival_times(arrivals, model.horizon_days, _atoms()), np.ones(1), model.horizon_days)


def log_survival(law: Distribution, x: Array) -> Array:
    """``log P(T > x)`` of the smooth laws, accurate deep into the tail (where ``1 − F`` loses its
    digits)."""
    x = np.maximum(x, 0.0)
    if isinstance(law, Exponential):
        return np.asarray(-x / law.mean_value, dtype=np.float64)
    if isinstance(law, Weibull):
        return np.asarray(-((x / law.scale) ** law.shape), dtype=np.float64)
    if isinstance(law, LogNormal):
        with np.errstate(divide="ignore"):
            z = (np.log(x) - law._mu) / law._sigma
        return np.asarray(special.log_ndtr(-z), dtype=np.float64)
    if isinstance(law, Gamma):
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(special.gammaincc(law.shape, x / law.scale)), dtype=np.float64)
    raise TypeError(f"no survival function for {law!r}")


def start_terms(law: Distribution, age: float, horizon: float, scale: Array) -> Array:
    """(len(scale), GRID + 1): at each grid point ``x``, P(remaining time ≤ horizon − x) for a lead
    ``age`` days into a stage whose times are ``scale × law`` — so that ``q = Σ later(x) · term(x)``:
    ``1 − S((age + H − x) / s) / S(age / s)``, from the log-survival function for the smooth laws (one
    formula at every age and scale, so smooth in the scale), else — a single scale — as
    :mod:`pipesim.engines.cohorts` does."""
    grid = np.linspace(0.0, horizon, GRID + 1)
    ends = (age + horizon - grid)[None, :] / scale[:, None]
    if isinstance(law, SMOOTH):
        start = log_survival(law, np.asarray(age / scale))[:, None]
        with np.errstate(invalid="ignore"):
            rows = -np.expm1(log_survival(law, ends) - start)
        rows = np.where(np.isfinite(start), rows, 1.0)  # older than any time allowed: ends now
        return np.asarray(np.clip(np.nan_to_num(rows, nan=1.0), 0.0, 1.0), dtype=np.float64)
    below = law.cdf(age / scale) if age > 0 else np.zeros(len(scale))
    rows = np.empty((len(scale), GRID + 1))
    for index, s in enumerate(scale):
        if 1.0 - below[index] > TAIL:
            rows[index] = np.clip((law.cdf(ends[index]) - below[index]) / (1.0 - below[index]), 0.0, 1.0)
        else:
            # Deep in the tail the ratio loses its digits: the law's own remaining-time quantiles; the
            # mass at points below GRID − i and half of the point's own (an atom spreads over a tent).
            mass = deposit(s * law.remaining(_atoms(), age / s), np.ones(1), horizon)[0]
            rows[index] = (np.cumsum(mass) - mass / 2)[::-1]
    return rows


def start_terms_of(law: Distribution, ages: Array, horizon: float, scale: Array) -> Array:
    """(len(ages), len(scale), GRID + 1): :func:`start_terms` at each age, in one call for the smooth
    laws (elementwise the same operations)."""
    if not isinstance(law, SMOOTH):
        return np.stack([start_terms(law, float(age), horizon, scale) for age in ages]).reshape(
            len(ages), len(scale), GRID + 1
        )
    grid = np.linspace(0.0, horizon, GRID + 1)
    ends = (ages[:, None] + horizon - grid[None, :])[:, None, :] / scale[None, :, None]
    start = log_survival(law, ages[:, None] / scale[None, :])[:, :, None]
    with np.errstate(invalid="ignore"):
        rows = -np.expm1(log_survival(law, ends) - start)
    rows = np.where(np.isfinite(start), rows, 1.0)  # older than any time allowed: ends now
    return np.asarray(np.clip(np.nan_to_num(rows, nan=1.0), 0.0, 1.0), dtype=np.float64)


def chebyshev_nodes(low: float, high: float, count: int) -> Array:
    k = np.arange(count)
    return np.asarray((low + high) / 2 + (high - low) / 2 * np.cos(np.pi * (2 * k + 1) / (2 * count)))


def barycentric(nodes: Array, x: Array) -> Array:
    """(len(x), len(nodes)) weights of the Chebyshev (first kind) barycentric interpolant at ``x``."""
    count = len(nodes)
    k = np.arange(count)
    w = (-1.0) ** k * np.sin(np.pi * (2 * k + 1) / (2 * count))
    diff = x[:, None] - nodes[None, :]
    exact = diff == 0
    diff[exact] = 1.0
    terms = w[None, :] / diff
    hit = exact.any(axis=1)
    terms[hit] = exact[hit].astype(np.float64)
    return np.asarray(terms / terms.sum(axis=1, keepdims=True), dtype=np.float64)


def in_horizon_by_trial(
    model: Model, groups: Sequence[Group], scales: Array, later: list[Array] | None = None
) -> Array:
    """(trials, groups) probability that a winner of each group wins within the horizon, given each
    trial's time scales (``scales``: trials × stages; ``later``: :func:`later_masses` at them, when the
    caller has it)."""
    trials = len(scales)
    horizon = model.horizon_days
    later = later_masses(model, scales) if later is None else later
    q = np.empty((trials, len(groups)))
    for start in sorted({group.start for group in groups}):
        law = model.stages[start].time_in_stage
        log_s = np.log(scales[:, start])
        low, high = node_range(model.stages[start].time_uncertainty, log_s)
        # The start stage's terms of every group here at the nodes, stacked for one product per mass.
        # The nodes depend only on their count (the range is the stage's), so the trials' barycentric
        # weights are computed once per count, not per group.
        members = [index for index, group in enumerate(groups) if group.start == start]
        ages = [_age(groups[index]) for index in members]
        blocks, weights = [], []
        by_count: dict[int, Array] = {}
        for at, rows in start_rows(cast(Hashable, law), ages, horizon, low, high):
            blocks.append(rows)
            if len(at) not in by_count:
                by_count[len(at)] = np.ones((1, 1)) if len(at) == 1 else barycentric(at, log_s)
            weights.append(by_count[len(at)])
        values = later[start] @ np.concatenate(blocks).T  # (trials or 1, all nodes)
        first = 0
        for index, rows, weight in zip(members, blocks, weights, strict=True):
            arrival = _arrival_masses(model, groups[index])
            if arrival is None:
                own = values[:, first : first + len(rows)]
            else:  # new leads wait for their arrival too: their own product, not every group's
                own = _convolve(later[start], arrival) @ rows.T
            q[:, index] = (weight * own).sum(axis=1)
            first += len(rows)
    return np.clip(q, 0.0, 1.0)


def fan_probabilities(model: Model, groups: Sequence[Group], days: Array) -> list[Array | None]:
    """Per group, P(finish ≤ d) at each of ``days`` for a winner at scales of 1 on this grid — the weekly
    shares of the fan chart, which the path with time scales reads at the median scale — or ``None``
    where the start stage's law is not one of :data:`SMOOTH` (then the fine grid's). The groups of one
    start stage share one call of the law's survival function, at the grid points before each day only
    (the terms after it are nil): the same numbers as :func:`fan_probabilities_reference`."""
    horizon = model.horizon_days
    later = later_masses(model, np.ones((1, len(model.stages))))
    grid = np.linspace(0.0, horizon, GRID + 1)
    slack = days[:, None] - grid[None, :]
    before = slack >= 0
    ahead = slack[before]
    found: list[Array | None] = [None] * len(groups)
    for start in sorted({group.start for group in groups}):
        law = model.stages[start].time_in_stage
        if not isinstance(law, SMOOTH):
            continue
        members = [index for index, group in enumerate(groups) if group.start == start]
        ages = np.array([_age(groups[index]) for index in members])
        starts = log_survival(law, ages)
        with np.errstate(invalid="ignore"):
            values = -np.expm1(log_survival(law, ages[:, None] + ahead[None, :]) - starts[:, None])
        values = np.nan_to_num(values, nan=1.0)
        for row, index in enumerate(members):
            mass = later[start]
            arrival = _arrival_masses(model, groups[index])
            if arrival is not None:
                mass = _convolve(mass, arrival)
            terms = np.zeros(slack.shape)
            if np.isfinite(starts[row]):
                terms[before] = values[row]
            else:
                terms[before] = 1.0
            found[index] = np.maximum.accumulate(np.clip(mass[0] @ terms.T, 0, 1))
    return found


def _age(group: Group) -> float:
    return group.age_days if group.existing else 0.0


def fan_probabilities_reference(model: Model, groups: Sequence[Group], days: Array) -> list[Array | None]:
    """:func:`fan_probabilities` group by group, at every grid point."""
    horizon = model.horizon_days
    later = later_masses(model, np.ones((1, len(model.stages))))
    grid = np.linspace(0.0, horizon, GRID + 1)
    found: list[Array | None] = []
    for group in groups:
        law = model.stages[group.start].time_in_stage
        if not isinstance(law, SMOOTH):
            found.append(None)
            continue
        mass = later[group.start]
        arrival = _arrival_masses(model, group)
        if arrival is not None:
            mass = _convolve(mass, arrival)
        age = group.age_days if group.existing else 0.0
        start = float(log_survival(law, np.array([age]))[0])
        slack = days[:, None] - grid[None, :]
        with np.errstate(invalid="ignore"):
            terms = -np.expm1(log_survival(law, age + np.maximum(slack, 0.0)) - start)
        terms = np.where(slack >= 0, np.nan_to_num(terms, nan=1.0), 0.0) if np.isfinite(start) else slack >= 0
        found.append(np.maximum.accumulate(np.clip(mass[0] @ np.asarray(terms, dtype=np.float64).T, 0, 1)))
    return found
