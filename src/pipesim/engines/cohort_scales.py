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
from collections.abc import Sequence

import numpy as np
from scipy import signal

from pipesim.arrival_profile import arrival_times
from pipesim.distributions import Array, Distribution, Exponential, Gamma, LogNormal, Weibull
from pipesim.engines.cohorts import TAIL, arrival_of
from pipesim.engines.common import Group
from pipesim.spec import Model

GRID = 1 << 9  # grid steps over the horizon
ATOMS = 1 << 11  # quantile atoms of an arrival profile and of a remaining time deep in the tail
NODES = 12  # Chebyshev nodes in log(scale) for the start stage
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


def _stage_masses(law: Distribution, scale: Array, horizon: float) -> Array:
    """Per trial (one row for all when the scale is fixed) the stage's time on the grid: the masses at
    Chebyshev nodes in log(scale), interpolated to each trial's scale."""
    log_s = np.log(scale)
    low, high = float(log_s.min()), float(log_s.max())
    if high - low < 1e-12:
        return bin_masses(law, scale[:1], horizon)
    at = chebyshev_nodes(low, high)
    return np.asarray(barycentric(at, log_s) @ bin_masses(law, np.exp(at), horizon), dtype=np.float64)


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


def start_terms(law: Distribution, age: float, horizon: float, scale: Array) -> Array:
    """(len(scale), GRID + 1): at each grid point ``x``, P(remaining time ≤ horizon − x) for a lead
    ``age`` days into a stage whose times are ``scale × law`` — so that ``q = Σ later(x) · term(x)``."""
    grid = np.linspace(0.0, horizon, GRID + 1)
    rows = np.empty((len(scale), GRID + 1))
    for index, s in enumerate(scale):
        below = float(law.cdf(np.array([age / s]))[0]) if age > 0 else 0.0
        if 1.0 - below > TAIL:
            rows[index] = np.clip((law.cdf((age + horizon - grid) / s) - below) / (1.0 - below), 0.0, 1.0)
        else:
            # Deep in the tail the ratio loses its digits: the law's own remaining-time quantiles.
            remaining = s * law.remaining(_atoms(), age / s)
            cumulative = np.cumsum(deposit(remaining, np.ones(1), horizon)[0])
            rows[index] = cumulative[::-1]  # P(R ≤ H − x_i) = mass at points ≤ GRID − i
    return rows


def chebyshev_nodes(low: float, high: float, count: int = NODES) -> Array:
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


def in_horizon_by_trial(model: Model, groups: Sequence[Group], scales: Array, nodes: int = NODES) -> Array:
    """(trials, groups) probability that a winner of each group wins within the horizon, given each
    trial's time scales (``scales``: trials × stages)."""
    trials = len(scales)
    horizon = model.horizon_days
    later = later_masses(model, scales)
    q = np.empty((trials, len(groups)))
    for index, group in enumerate(groups):
        mass = later[group.start]
        arrival = _arrival_masses(model, group)
        if arrival is not None:
            mass = _convolve(mass, arrival)
        s = scales[:, group.start]
        law = model.stages[group.start].time_in_stage
        age = group.age_days if group.existing else 0.0
        log_s = np.log(s)
        low, high = float(log_s.min()), float(log_s.max())
        if high - low < 1e-12:
            terms = start_terms(law, age, horizon, s[:1])
            q[:, index] = mass @ terms[0]
            continue
        at = chebyshev_nodes(low, high, nodes)
        terms = start_terms(law, age, horizon, np.exp(at))
        values = mass @ terms.T  # (trials or 1, nodes)
        q[:, index] = (barycentric(at, log_s) * values).sum(axis=1)
    return np.clip(q, 0.0, 1.0)
