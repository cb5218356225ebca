"""The fast path: numpy, no capacity limits, whole blocks of trials at once.

Per trial and per group of leads, the number of eventual wins is one binomial draw by inversion,
``W = F⁻¹(u; n, P)`` with ``P`` the product of the stage conversions from the group's stage onward —
equal in distribution to thinning the leads stage by stage. Only the winners then need more randomness:
an arrival time (Poisson arrivals), a time in each remaining stage for the horizon cut-off, and a deal size.
With segments, a new winner also takes its segment from its row (the winners' segment mix; see
``engines.common``), which sets its deal size.

Common random numbers. The k-th winner of a trial takes its arrival, times and deal size from row k of
its group's winner stream, by inversion. Because ``W`` is an inverse CDF of the same uniform, a variant
with a higher conversion or more leads keeps every base winner (same times, same deal) and adds new ones;
a variant with a shorter stage gives each winner the same quantile of the shorter time. A paired
difference therefore reflects only the change — the variance a comparison cares about — at a cost of
``O(winners)`` rather than ``O(leads × stages)`` per trial. Winner rows come in chunks of ``CHUNK`` per
trial, each chunk its own stream, so base and variant share every chunk they both use.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from pipesim.arrival_profile import arrival_times
from pipesim.distributions import Array
from pipesim.engines import binomial, cohort_scales, cohorts, kept
from pipesim.engines import fan as fan_chart
from pipesim.engines.common import (
    COHORTS,
    WINNERS,
    Group,
    Outcomes,
    TrialDraws,
    cohort_counts,
    fan_days,
    groups,
    pick_segment,
    revenue_by_day,
    scaled_time,
    stream,
    trial_draws,
    win_probability_from,
)
from pipesim.errors import EngineError
from pipesim.spec import Model

BLOCK_TRIALS = 1000
PER_WINNER_BELOW = 200.0  # expected winners a trial below which time-scaled models take rows per winner
CHUNK = 32  # winner rows drawn per trial per chunk


def check(model: Model) -> None:
    if model.needs_capacity:
        raise EngineError(
            "the vectorized engine has no rep capacity; this model has [reps] — use engine 'des'"
        )


binomial_inverse = binomial.inverse  # smallest k with P(Bin(n, p) <= k) >= u, monotone in u, n and p


def _winner_rows(model: Model, seed: int, block: int, group_index: int, chunk: int, trials: int) -> Array:
    # arrival, one time per stage, deal size (and the segment, with segments)
    width = len(model.stages) + 2 + (1 if model.segments else 0)
    return stream(seed, block, WINNERS, group_index, chunk).random((trials, CHUNK, width))


def _deals(model: Model, group: Group, rows: Array, deal_scale: Array, segment_wins: Array | None) -> Array:
    """Deal size of each winner row; ``deal_scale`` is each row's trial factor on drawn deal sizes and
    ``segment_wins`` (rows × segments) weighs a new winner's segment."""
    u = rows[:, len(model.stages) + 1]
    if group.value is not None:
        return np.full(len(rows), group.value)
    if group.segment is not None:
        return (model.segments[group.segment].deal_size or model.deal_size).ppf(u) * deal_scale
    if not model.segments or group.existing or segment_wins is None:
        return model.deal_size.ppf(u) * deal_scale
    picked = pick_segment(segment_wins, rows[:, -1])
    deals = np.empty(len(rows))
    for index, segment in enumerate(model.segments):
        mine = picked == index
        if mine.any():
            deals[mine] = (segment.deal_size or model.deal_size).ppf(u[mine]) * deal_scale[mine]
    return deals


def _finish_times_and_deals(
    model: Model,
    group: Group,
    rows: Array,
    draws: TrialDraws,
    trial_of: NDArray[np.int64],
    segment_wins: Array | None = None,
) -> tuple[Array, Array]:
    """Win time (days from the start) and deal size for each winner row (row i of trial ``trial_of[i]``)."""
    n_stages = len(model.stages)
    if group.existing or model.arrivals.kind == "batch":
        finish = np.zeros(len(rows))
    else:
        # Given their count, Poisson arrivals are independent with density rate(t) / its integral.
        finish = arrival_times(model.arrivals, model.horizon_days, rows[:, 0])
    for index in range(group.start, n_stages):
        duration = model.stages[index].time_in_stage
        age = group.age_days if index == group.start else 0.0
        finish += scaled_time(duration, rows[:, 1 + index], age, draws.time_scale[trial_of, index])
    return finish, _deals(model, group, rows, draws.deal_scale[trial_of], segment_wins)


def _group_leads(model: Model, draws: TrialDraws) -> list[NDArray[np.int64]]:
    trials = len(draws.new_leads)
    return [draws.new_leads] + [np.full(trials, count, dtype=np.int64) for count in cohort_counts(model)]


def simulate(
    model: Model, seed: int, block: int, trials: int, draws: TrialDraws | None = None, *, detail: bool = True
) -> Outcomes:
    """Outcomes of ``trials`` trials of block ``block``: the group draws (:func:`simulate_cohorts`) where
    they cover the model, else a row per winner (:func:`simulate_per_winner`) — the two equal in
    distribution. With per-trial time scales the group draws cost a grid convolution per stage and
    trial, so the rows per winner run instead while they are fewer than ``PER_WINNER_BELOW`` a trial.
    ``detail=False`` (questions that read only the totals) lets the group draws skip revenue by week."""
    check(model)
    draws = trial_draws(model, seed, block, trials) if draws is None else draws
    if not (cohorts.covers(model) and cohort_scales.covers(model)):
        return simulate_per_winner(model, seed, block, trials, draws)
    if _time_scaled(model) and _expected_winners(model, draws) < PER_WINNER_BELOW:
        return simulate_per_winner(model, seed, block, trials, draws)
    return simulate_cohorts(model, seed, block, trials, draws, fan=detail)


def _time_scaled(model: Model) -> bool:
    return any(stage.time_uncertainty > 0 for stage in model.stages)


def _expected_winners(model: Model, draws: TrialDraws) -> float:
    """Mean eventual winners a trial over the block: the rows the per-winner path would draw."""
    pairs = zip(groups(model), _group_leads(model, draws), strict=True)
    return float(sum(np.mean(n * win_probability_from(draws.p, group.start)) for group, n in pairs))


def simulate_cohorts(
    model: Model, seed: int, block: int, trials: int, draws: TrialDraws | None = None, *, fan: bool = True
) -> Outcomes:
    """Per group, the in-horizon wins as one binomial draw and their revenue as one sum
    (:mod:`pipesim.engines.cohorts`; per-trial time scales through :mod:`pipesim.engines.cohort_scales`),
    from the same per-trial draws as :func:`simulate_per_winner` — equal in distribution,
    ``O(groups × trials)``. Needs a model :func:`pipesim.engines.cohorts.covers`. The revenue by week
    from :mod:`pipesim.engines.fan`; ``fan=False`` leaves it at zero (questions that read only the
    totals: the same totals)."""
    draws = trial_draws(model, seed, block, trials) if draws is None else draws
    all_groups = groups(model)
    leads_of = _group_leads(model, draws)
    # The open cohorts' wins and revenue as another question of the same model, seed and block drew them.
    kept_key = kept.key(model, seed, block, draws)
    existing = kept.get(kept_key)
    q_by_trial: Array | None = None
    days = fan_days(model)
    finished: list[Array | None] = [None] * len(all_groups)
    if _time_scaled(model):
        q_by_trial = _q_by_trial(model, all_groups, draws.time_scale, leads_of[0], existing is None)
        if fan:  # the weekly shares on the same grid, not afresh on the fine one for each new age
            finished = list(_fan_probabilities(model))
    wins = [np.zeros(trials), np.zeros(trials)]  # new, existing
    revenue = [np.zeros(trials), np.zeros(trials)]
    inside_all = np.zeros((trials, len(all_groups)), dtype=np.int64)
    gained_all = np.zeros((trials, len(all_groups)))
    computed: kept.Existing = []
    drawn = [0] if existing is not None else list(range(len(all_groups)))
    inside_of = _inside(model, draws, all_groups, leads_of, q_by_trial, drawn)
    for index, group in enumerate(all_groups):
        if group.existing and existing is not None:
            inside, gained = existing[index - 1]
        else:
            inside = np.ascontiguousarray(inside_of[:, 0 if existing is not None else index])
            gained = _group_revenue(model, seed, block, draws, index, group, inside)
            if group.existing:
                computed.append((inside, gained))
        slot = 1 if group.existing else 0
        wins[slot] += inside
        revenue[slot] += gained
        inside_all[:, index] = inside
        gained_all[:, index] = gained
    by_day = np.zeros((trials, len(days)))
    if fan:  # the revenue by week, for the fan chart (its own streams: the totals do not depend on it)
        by_day = fan_chart.revenue_by_day(
            model, all_groups, days, finished, inside_all, gained_all, seed, block
        )
    if existing is None:
        kept.put(kept_key, computed)
    return Outcomes(
        wins_new=wins[0],
        wins_existing=wins[1],
        revenue_new=revenue[0],
        revenue_existing=revenue[1],
        wait_days=np.zeros(trials),
        revenue_by_day=by_day,
    )


def _fan_probabilities(model: Model) -> tuple[Array | None, ...]:
    """:func:`pipesim.engines.cohort_scales.fan_probabilities` of every group, the same in each block of
    a question (the shares at scales of 1): computed once per model, or each time for a model with a
    part that cannot be hashed."""
    try:
        return _fan_probabilities_kept(model)
    except TypeError:
        return tuple(cohort_scales.fan_probabilities(model, groups(model), fan_days(model)))


@functools.lru_cache(maxsize=4)
def _fan_probabilities_kept(model: Model) -> tuple[Array | None, ...]:
    found = cohort_scales.fan_probabilities(model, groups(model), fan_days(model))
    for shares in found:
        if shares is not None:
            shares.flags.writeable = False  # shared by later blocks
    return tuple(found)


def _q_by_trial(
    model: Model, all_groups: list[Group], scales: Array, new_leads: NDArray[np.int64], with_existing: bool
) -> Array:
    """(trials, groups) in-horizon probabilities at the trials' scales: the new leads' computed apart
    from the open cohorts' (so these do not depend on the new leads and can be kept), zero where not
    needed (no new leads; open cohorts kept)."""
    q = np.zeros((len(scales), len(all_groups)))
    if not (with_existing or new_leads.any()):
        return q
    later = cohort_scales.later_masses(model, scales)
    if new_leads.any():
        q[:, :1] = cohort_scales.in_horizon_by_trial(model, all_groups[:1], scales, later)
    if with_existing and len(all_groups) > 1:
        q[:, 1:] = cohort_scales.in_horizon_by_trial(model, all_groups[1:], scales, later)
    return q


def _inside(
    model: Model,
    draws: TrialDraws,
    all_groups: list[Group],
    leads_of: list[NDArray[np.int64]],
    q_by_trial: Array | None,
    drawn: list[int],
) -> NDArray[np.int64]:
    """(trials, len(drawn)) in-horizon wins of the groups ``drawn``: :func:`_group_draws`'s, elementwise
    the same numbers, with one inverse CDF call for all of them."""
    from_start = {start: win_probability_from(draws.p, start) for start in {g.start for g in all_groups}}
    u = draws.win_u[:, drawn]
    leads = np.empty(u.shape, dtype=np.int64)
    p = np.empty(u.shape)
    for column, index in enumerate(drawn):
        group = all_groups[index]
        q = cohorts.in_horizon_probability(model, group) if q_by_trial is None else q_by_trial[:, index]
        leads[:, column] = leads_of[index]
        p[:, column] = from_start[group.start] * q
    return binomial_inverse(u, leads, p)


def _group_revenue(
    model: Model,
    seed: int,
    block: int,
    draws: TrialDraws,
    index: int,
    group: Group,
    inside: NDArray[np.int64],
) -> Array:
    """The revenue of a group's in-horizon wins per trial."""
    if group.value is not None:
        return np.asarray(inside * group.value, dtype=np.float64)
    sums = cohorts.deal_sums(model.deal_size, inside, stream(seed, block, COHORTS, index, 1))
    return sums * draws.deal_scale  # the trial's factor on every drawn deal size


def _group_draws(
    model: Model,
    seed: int,
    block: int,
    draws: TrialDraws,
    index: int,
    group: Group,
    leads: NDArray[np.int64],
    q_by_trial: Array | None,
) -> tuple[NDArray[np.int64], Array]:
    """A group's in-horizon wins and their revenue per trial, one group at a time: the reference for
    :func:`_inside` and :func:`_group_revenue`."""
    # Eventual wins Bin(n, P) thinned by the in-horizon probability q: Bin(n, P q), one draw.
    q = cohorts.in_horizon_probability(model, group) if q_by_trial is None else q_by_trial[:, index]
    inside = binomial_inverse(draws.win_u[:, index], leads, win_probability_from(draws.p, group.start) * q)
    if group.value is not None:
        return inside, np.asarray(inside * group.value, dtype=np.float64)
    sums = cohorts.deal_sums(model.deal_size, inside, stream(seed, block, COHORTS, index, 1))
    return inside, sums * draws.deal_scale  # the trial's factor on every drawn deal size


def simulate_per_winner(
    model: Model, seed: int, block: int, trials: int, draws: TrialDraws | None = None
) -> Outcomes:
    """The reference for :func:`simulate`: a row per eventual winner with its own arrival, stage times
    and deal size, ``O(winners)`` per trial. It also serves the models the group draws do not cover
    (:func:`pipesim.engines.cohorts.covers`)."""
    check(model)
    draws = trial_draws(model, seed, block, trials) if draws is None else draws
    wins = [np.zeros(trials), np.zeros(trials)]  # new, existing
    revenue = [np.zeros(trials), np.zeros(trials)]
    days = fan_days(model)
    by_day = np.zeros((trials, len(days)))
    segment_wins = draws.segment_wins(model) if model.segments else None
    for index, (group, leads) in enumerate(zip(groups(model), _group_leads(model, draws), strict=True)):
        if group.existing:
            p_win = win_probability_from(draws.group_p(group), group.start)
        else:
            p_win = draws.new_lead_win_probability(model)
        eventual = binomial_inverse(draws.win_u[:, index], leads, p_win)
        slot = 1 if group.existing else 0
        for chunk in range(math.ceil(int(eventual.max(initial=0)) / CHUNK)):
            rank = chunk * CHUNK + np.arange(CHUNK)
            mask = rank[None, :] < eventual[:, None]
            trial_of = np.nonzero(mask)[0]
            rows = _winner_rows(model, seed, block, index, chunk, trials)[mask]
            weights = None if segment_wins is None else segment_wins[trial_of]
            finish, deals = _finish_times_and_deals(model, group, rows, draws, trial_of, weights)
            inside = finish <= model.horizon_days
            wins[slot] += np.bincount(trial_of, weights=inside, minlength=trials)
            revenue[slot] += np.bincount(trial_of, weights=deals * inside, minlength=trials)
            by_day += revenue_by_day(days, trial_of, finish, deals, trials)
    return Outcomes(
        wins_new=wins[0],
        wins_existing=wins[1],
        revenue_new=revenue[0],
        revenue_existing=revenue[1],
        wait_days=np.zeros(trials),
        revenue_by_day=by_day,
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
    existing = simulate(model, seed, block, trials, draws, detail=False).revenue_existing
    short = goal - existing  # revenue the new leads must bring
    needed_wins = np.where(short <= 0, 0, -1).astype(np.int64)  # -1: not yet reached
    carried = np.zeros(trials)
    group = groups(model)[0]
    segment_wins = draws.segment_wins(model) if model.segments else None
    weights = None if segment_wins is None else np.repeat(segment_wins, CHUNK, axis=0)
    for chunk in range(math.ceil(max_winners / CHUNK)):
        open_trials = needed_wins < 0
        if not open_trials.any():
            break
        rows = _winner_rows(model, seed, block, 0, chunk, trials).reshape(trials * CHUNK, -1)
        trial_of = np.repeat(np.arange(trials), CHUNK)
        finish, deals = _finish_times_and_deals(model, group, rows, draws, trial_of, weights)
        counted = (deals * (finish <= model.horizon_days)).reshape(trials, CHUNK)
        running = carried[:, None] + np.cumsum(counted, axis=1)
        reached = running >= short[:, None]
        first = np.argmax(reached, axis=1)
        newly = open_trials & reached.any(axis=1)
        needed_wins[newly] = chunk * CHUNK + first[newly] + 1
        carried = running[:, -1]
    p_win = draws.new_lead_win_probability(model)
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
