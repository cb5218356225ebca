"""The fast path: numpy, no capacity limits, whole blocks of trials at once.

:func:`simulate` draws each group's in-horizon wins and their revenue for the group as a whole
(:mod:`pipesim.engines.cohorts`, ``O(groups × trials)``); :func:`simulate_per_winner`, described below,
draws a row per winner and stays as its reference (``tests/sim/test_cohorts.py``).

Per trial and per group of leads, the number of eventual wins is one binomial draw by inversion,
``W = F⁻¹(u; n, P)`` with ``P`` the product of the stage conversions from the group's stage onward —
equal in distribution to thinning the leads stage by stage. Only the winners then need more randomness:
an arrival time (Poisson arrivals), a time in each remaining stage for the horizon cut-off, and a deal size.

Common random numbers. The k-th winner of a trial takes its arrival, times and deal size from row k of
its group's winner stream, by inversion. Because ``W`` is an inverse CDF of the same uniform, a variant
with a higher conversion or more leads keeps every base winner (same times, same deal) and adds new ones;
a variant with a shorter stage gives each winner the same quantile of the shorter time. A paired
difference therefore reflects only the change — the variance a comparison cares about — at a cost of
``O(winners)`` rather than ``O(leads × stages)`` per trial. Winner rows come in chunks of ``CHUNK`` per
trial, each chunk its own stream, so base and variant share every chunk they both use.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from pipesim.distributions import Array
from pipesim.engines import cohorts
from pipesim.engines.common import (
    COHORTS,
    WINNERS,
    Group,
    Outcomes,
    TrialDraws,
    cohort_counts,
    groups,
    stream,
    trial_draws,
    win_probability_from,
)
from pipesim.errors import EngineError
from pipesim.spec import Model

BLOCK_TRIALS = 1000
CHUNK = 32  # winner rows drawn per trial per chunk


def check(model: Model) -> None:
    if model.needs_capacity:
        raise EngineError(
            "the vectorized engine has no rep capacity; this model has [reps] — use engine 'des'"
        )


def binomial_inverse(u: Array, n: NDArray[np.int64] | int, p: Array) -> NDArray[np.int64]:
    """Smallest k with P(Bin(n, p) <= k) >= u: monotone in u, n and p, which common random numbers rely on."""
    k = stats.binom.ppf(u, n, np.clip(p, 0.0, 1.0))
    return np.asarray(np.maximum(np.nan_to_num(k), 0.0), dtype=np.int64)


def _winner_rows(model: Model, seed: int, block: int, group_index: int, chunk: int, trials: int) -> Array:
    width = len(model.stages) + 2  # arrival, one time per stage, deal size
    return stream(seed, block, WINNERS, group_index, chunk).random((trials, CHUNK, width))


def _finish_times_and_deals(model: Model, group: Group, rows: Array) -> tuple[Array, Array]:
    """Win time (days from the start) and deal size for each winner row."""
    n_stages = len(model.stages)
    if group.existing or model.arrivals.kind == "batch":
        finish = np.zeros(len(rows))
    else:
        finish = rows[:, 0] * model.horizon_days  # Poisson arrivals are uniform given their count
    for index in range(group.start, n_stages):
        duration = model.stages[index].time_in_stage
        u = rows[:, 1 + index]
        if index == group.start and group.age_days > 0:
            finish += duration.remaining(u, group.age_days)
        else:
            finish += duration.ppf(u)
    if group.value is not None:
        deals = np.full(len(rows), group.value)
    else:
        deals = model.deal_size.ppf(rows[:, n_stages + 1])
    return finish, deals


def _group_leads(model: Model, draws: TrialDraws) -> list[NDArray[np.int64]]:
    trials = len(draws.new_leads)
    return [draws.new_leads] + [np.full(trials, count, dtype=np.int64) for count in cohort_counts(model)]


def simulate(model: Model, seed: int, block: int, trials: int, draws: TrialDraws | None = None) -> Outcomes:
    """Outcomes of ``trials`` trials of block ``block``: per group, the in-horizon wins as one binomial
    draw and their revenue as one sum (:mod:`pipesim.engines.cohorts`), from the same per-trial draws
    as :func:`simulate_per_winner` — equal in distribution, ``O(groups × trials)``."""
    check(model)
    draws = trial_draws(model, seed, block, trials) if draws is None else draws
    wins = [np.zeros(trials), np.zeros(trials)]  # new, existing
    revenue = [np.zeros(trials), np.zeros(trials)]
    for index, (group, leads) in enumerate(zip(groups(model), _group_leads(model, draws), strict=True)):
        # Eventual wins Bin(n, P) thinned by the in-horizon probability q: Bin(n, P q), one draw.
        q = cohorts.in_horizon_probability(model, group)
        inside = binomial_inverse(
            draws.win_u[:, index], leads, win_probability_from(draws.p, group.start) * q
        )
        slot = 1 if group.existing else 0
        wins[slot] += inside
        if group.value is not None:
            revenue[slot] += inside * group.value
        else:
            revenue[slot] += cohorts.deal_sums(
                model.deal_size, inside, stream(seed, block, COHORTS, index, 1)
            )
    return Outcomes(
        wins_new=wins[0],
        wins_existing=wins[1],
        revenue_new=revenue[0],
        revenue_existing=revenue[1],
        wait_days=np.zeros(trials),
    )


def simulate_per_winner(model: Model, seed: int, block: int, trials: int) -> Outcomes:
    """The reference for :func:`simulate`: a row per eventual winner with its own arrival, stage times
    and deal size, ``O(winners)`` per trial."""
    check(model)
    draws = trial_draws(model, seed, block, trials)
    wins = [np.zeros(trials), np.zeros(trials)]  # new, existing
    revenue = [np.zeros(trials), np.zeros(trials)]
    for index, (group, leads) in enumerate(zip(groups(model), _group_leads(model, draws), strict=True)):
        eventual = binomial_inverse(draws.win_u[:, index], leads, win_probability_from(draws.p, group.start))
        slot = 1 if group.existing else 0
        for chunk in range(math.ceil(int(eventual.max(initial=0)) / CHUNK)):
            rank = chunk * CHUNK + np.arange(CHUNK)
            mask = rank[None, :] < eventual[:, None]
            trial_of = np.nonzero(mask)[0]
            rows = _winner_rows(model, seed, block, index, chunk, trials)[mask]
            finish, deals = _finish_times_and_deals(model, group, rows)
            inside = finish <= model.horizon_days
            wins[slot] += np.bincount(trial_of, weights=inside, minlength=trials)
            revenue[slot] += np.bincount(trial_of, weights=deals * inside, minlength=trials)
    return Outcomes(
        wins_new=wins[0],
        wins_existing=wins[1],
        revenue_new=revenue[0],
        revenue_existing=revenue[1],
        wait_days=np.zeros(trials),
    )


def leads_to_goal(model: Model, seed: int, block: int, trials: int, goal: float, max_winners: int) -> Array:
    """Per trial, the fewest new leads (a batch at day 0) whose in-horizon revenue, with the open leads',
    reaches ``goal`` — ``inf`` when ``max_winners`` winners are not enough.

    Uses the same draws as :func:`simulate`, so ``mean(result <= n)`` equals P(revenue >= goal) of a
    forecast of the model with ``n`` new leads and the same seed: P(goal) is monotone in ``n`` by
    construction and the answer is a quantile of this array."""
    check(model)
    model = model.with_new_leads(0)
    draws = trial_draws(model, seed, block, trials)
    existing = simulate(model, seed, block, trials, draws).revenue_existing
    short = goal - existing  # revenue the new leads must bring
    needed_wins = np.where(short <= 0, 0, -1).astype(np.int64)  # -1: not yet reached
    carried = np.zeros(trials)
    group = groups(model)[0]
    for chunk in range(math.ceil(max_winners / CHUNK)):
        open_trials = needed_wins < 0
        if not open_trials.any():
            break
        rows = _winner_rows(model, seed, block, 0, chunk, trials).reshape(trials * CHUNK, -1)
        finish, deals = _finish_times_and_deals(model, group, rows)
        counted = (deals * (finish <= model.horizon_days)).reshape(trials, CHUNK)
        running = carried[:, None] + np.cumsum(counted, axis=1)
        reached = running >= short[:, None]
        first = np.argmax(reached, axis=1)
        newly = open_trials & reached.any(axis=1)
        needed_wins[newly] = chunk * CHUNK + first[newly] + 1
        carried = running[:, -1]
    p_win = win_probability_from(draws.p, 0)
    return _fewest_leads(needed_wins, draws.win_u[:, 0], p_win)


def _fewest_leads(needed_wins: NDArray[np.int64], u: Array, p_win: Array) -> Array:
    """Smallest n with F⁻¹(u; n, p) >= k, i.e. P(Bin(n, p) <= k - 1) < u, by vectorised bisection."""
    result = np.full(len(u), np.inf)
    result[needed_wins == 0] = 0.0
    todo = (needed_wins > 0) & (p_win > 0) & (u > 0)
    k = needed_wins[todo].astype(np.float64)
    uu, pp = u[todo], p_win[todo]

    def enough(n: Array) -> NDArray[np.bool_]:
        return np.asarray(stats.binom.cdf(k - 1, n, pp) < uu)

    low = k - 1  # never enough: k - 1 leads cannot give k wins
    high = np.ceil(k / pp)
    while not (ok := enough(high)).all():
        high = np.where(ok, high, high * 2)
    while (gap := high - low > 1).any():
        middle = np.floor((low + high) / 2)
        ok = enough(middle)
        high = np.where(gap & ok, middle, high)
        low = np.where(gap & ~ok, middle, low)
    result[todo] = high
    return result
