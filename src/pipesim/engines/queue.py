"""The capacity fast path: the SimPy sales floor as a FIFO multi-server queue, all trials at once.

Scenario (the same as :mod:`pipesim.engines.des`). ``reps.count × reps.leads_each`` rep slots; a lead
takes a free slot first come, first served and holds it until it is won or lost. Without stage work a
lead's holding time is known when it is drawn — the sum of its times in stage up to the stage it leaves
— so the floor is a FIFO c-server queue and the Kiefer–Wolfowitz recursion gives every start time:
keep each server's next free time; the next lead in line starts at ``max(arrival, earliest free)`` and
that server is then free at ``start + hold``. The recursion runs lead by lead in queue order, vectorised
over the trials of a block (an ``argmin`` over a ``(trials, slots)`` array per lead).

Queue order matches SimPy's: at day 0 the leads whose processes SimPy starts first — a batch of new
leads, then each open-lead cohort in file order — then Poisson arrivals in time order (SimPy starts the
open leads before the first arrival's timeout fires). Ties in free times are immaterial: any free slot
is as good as another.

Where it does not apply: stage ``work`` needs a rep (``reps.count`` of them, shared across every stage)
while the lead also holds a slot, so holding times depend on the rep queue and the rep queue on who
holds slots — a loop the recursion cannot express. ``auto`` then picks SimPy and says why.

Randomness. Each group of leads draws from its own stream, one ``(trials, leads)`` array for the stage
each lead leaves in, one per time in stage, then arrivals, then deal sizes for the winners only; none of
it depends on the reps, so a variant with more or fewer reps sees the same leads and a paired difference
isolates the change in capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from pipesim.arrival_profile import arrival_times
from pipesim.distributions import Array, Exponential, Fixed, Triangular
from pipesim.engines.common import (
    QUEUE_LEADS,
    Flow,
    Outcomes,
    cohort_counts,
    fan_days,
    groups,
    revenue_by_day,
    scaled_time,
    stream,
    trial_draws,
    week_ends,
    window,
)
from pipesim.errors import EngineError
from pipesim.spec import Model, Reps

BLOCK_TRIALS = 500
# Times in stage whose inverse CDF is a few arithmetic passes: for these a later stage is inverted for
# every lead unless fewer than SUBSET_SHARE of them reach it; others are inverted for those who do.
CHEAP = (Exponential, Triangular, Fixed)
SUBSET_SHARE = 0.5


def reason(model: Model) -> str | None:
    """Why this engine cannot run the model, or ``None`` when it can."""
    if model.segments:
        return "segments: the queue recursion draws one conversion per stage for all leads — use engine 'des'"
    for index, stage in enumerate(model.stages):
        if stage.work is not None:
            return (
                f"stages[{index}].work: stage work needs one of the reps while the lead holds a slot, "
                "so holding times depend on a second queue shared across stages; the queue recursion "
                "cannot express that loop — use engine 'des'"
            )
    return None


def check(model: Model) -> None:
    why = reason(model)
    if why is not None:
        raise EngineError(why)


@dataclass(frozen=True)
class Floor:
    """A block's leads in queue order, one row per trial; rows are padded with ``inf`` arrivals."""

    arrival: Array  # (trials, leads), non-decreasing along each row
    hold: Array  # time holding a slot: times in stage up to the stage the lead leaves
    won: NDArray[np.bool_]
    deal: Array
    new: NDArray[np.bool_]  # a new lead (not an open one); padding is neither new nor won


def _group_rows(
    model: Model,
    rng: np.random.Generator,
    shape: tuple[int, int],
    p: Array,
    start: int,
    age: float,
    time_scale: Array,
    out: Array | None = None,
) -> tuple[Array, NDArray[np.bool_]]:
    """Holding time and won flag of each lead of a ``(trials, leads)`` group: one uniform per lead for
    the stage it leaves in, then one contiguous uniform array per time in stage (times scaled by the
    trial's draw). Holding times go to ``out`` (the group's columns of the block) when given."""
    n_stages = len(model.stages)
    # A lead reaches stage ``start + j`` (j >= 1) when it converted out of the j stages before, with
    # probability ``prod(p[start:start + j])``; one uniform below that product says so, and the same
    # uniform below the product over every stage says it is won. Equal in law to one uniform per
    # stage, at a fraction of the draws and comparisons.
    reach = np.cumprod(p[:, start:], axis=1)
    exit_u = rng.random(shape)
    hold = np.zeros(0)
    for column, index in enumerate(range(start, n_stages)):
        duration = model.stages[index].time_in_stage
        u = rng.random(shape)
        # A lead spends the stage it is lost in too, then leaves (as in the SimPy story); every lead
        # spends its first stage, so only later stages are masked: a time times 0 or 1 (exact, as the
        # times are finite) added to every lead, three times faster than a masked ``add(where=)``.
        if column == 0:
            # Contiguous, so a flat view of it can take the reached leads' later times in place.
            hold = np.ascontiguousarray(scaled_time(duration, u, age, time_scale[:, index, None]))
            continue
        reached = exit_u < reach[:, column - 1, None]
        if not isinstance(duration, CHEAP) or np.count_nonzero(reached) < SUBSET_SHARE * reached.size:
            # Invert only the leads that reach the stage (each from its own uniform, so each time is
            # the same number as in the pass over every lead): a special-function inverse (gamma,
            # lognormal) costs far more than picking the leads out.
            picked = np.flatnonzero(reached)
            part = scaled_time(
                duration, np.take(u, picked), 0.0, np.take(time_scale[:, index], picked // shape[1])
            )
            hold.reshape(-1)[picked] += part  # distinct leads: one add each
            continue
        times = scaled_time(duration, u, 0.0, time_scale[:, index, None])
        times *= reached
        if out is not None and index == n_stages - 1:
            hold = np.add(hold, times, out=out)  # the last sum goes straight to the block's columns
        else:
            hold += times
    if out is not None and hold is not out:
        out[...] = hold
        hold = out
    won: NDArray[np.bool_] = exit_u < reach[:, -1, None]
    return hold, won


def draw(model: Model, seed: int, block: int, trials: int) -> Floor:
    draws = trial_draws(model, seed, block, trials)
    counts = [int(draws.new_leads.max(initial=0)), *cohort_counts(model)]
    indexed = list(enumerate(zip(groups(model), counts, strict=True)))
    # Columns in queue order; each group writes its own slice of arrays made once for the block (no
    # concatenation of per-group arrays, which costs as much as drawing them).
    order = indexed[1:] + indexed[:1] if model.arrivals.kind == "poisson" else indexed
    width = sum(counts)
    floor = Floor(
        arrival=np.zeros((trials, width)),
        hold=np.empty((trials, width)),
        won=np.empty((trials, width), dtype=bool),
        deal=np.zeros((trials, width)),
        new=np.zeros((trials, width), dtype=bool),
    )
    low = 0
    for index, (group, count) in order:
        columns = slice(low, low + count)
        rng = stream(seed, block, QUEUE_LEADS, index)
        _, won = _group_rows(
            model,
            rng,
            (trials, count),
            draws.p,
            group.start,
            group.age_days,
            draws.time_scale,
            out=floor.hold[:, columns],
        )
        if not group.existing:
            arrival = floor.arrival[:, columns]
            if np.all(draws.new_leads == count):  # every trial has as many new leads (a batch): no padding
                floor.new[:, columns] = True
                present = None
            else:
                present = np.arange(count)[None, :] < draws.new_leads[:, None]
                won &= present
                floor.new[:, columns] = present
            if model.arrivals.kind == "poisson":
                # Arrivals given their count are uniform; sorting them puts the row in queue order, and
                # the other columns are i.i.d. across leads, so they need not follow.
                arrival[:] = arrival_times(model.arrivals, model.horizon_days, rng.random((trials, count)))
            if present is not None:
                arrival[~present] = np.inf
            if model.arrivals.kind == "poisson":
                arrival.sort(axis=1)
        floor.won[:, columns] = won
        if group.value is None:  # deal sizes matter only for winners: draw and invert only theirs
            picked = np.flatnonzero(won)  # row-major within the group, as ``won`` masks it
            sizes = model.deal_size.ppf(rng.random(len(picked)))
            trial_of = picked // count
            if not np.all(draws.deal_scale == 1.0):  # scales of 1 (no uncertainty) need no gather
                sizes *= np.take(draws.deal_scale, trial_of)
            if width != count:  # the group's columns within the block's rows
                picked += trial_of * (width - count) + low
            np.put(floor.deal, picked, sizes)
        else:
            floor.deal[:, columns] = group.value
        low += count
    return floor


def fifo_starts(arrival: Array, hold: Array, servers: int | None) -> Array:
    """Start of service of each lead, rows in queue order: the Kiefer–Wolfowitz recursion over the
    servers' next free times, one lead at a time, all rows at once. Trailing ``inf`` arrivals (padding)
    may overwrite a server's time; nothing after them reads it."""
    trials, leads = arrival.shape
    if servers is None or servers >= leads:
        return arrival.copy()
    # Lead-major copies: each step reads and writes one contiguous row of ``trials`` values.
    arrivals, holds = np.ascontiguousarray(arrival.T), np.ascontiguousarray(hold.T)
    start = np.empty_like(arrivals)
    start[:servers] = arrivals[:servers]  # the first c leads find a free slot
    free = np.ascontiguousarray((arrivals[:servers] + holds[:servers]).T)
    flat = free.reshape(-1)  # a view: flat indexing is cheaper than a (row, column) pair
    offsets = np.arange(trials) * servers
    for k in range(servers, leads):
        where = free.argmin(axis=1)
        where += offsets
        begin = start[k]
        np.maximum(arrivals[k], flat[where], out=begin)
        flat[where] = begin + holds[k]
    return np.ascontiguousarray(start.T)


def fifo_starts_people(arrival: Array, hold: Array, opens: Array, closes: Array) -> Array:
    """Start of service of each lead when slots open and close at their own times (ramps, hires,
    leaving dates): the same recursion, a slot's next free time starting at its opening; a lead takes
    the slot free the longest among those it can still start on before they close (arrivals never
    decrease along a row, so a slot passed by its closing stays closed). A lead no slot can take
    starts at ``inf`` (still queued at the end)."""
    trials, leads = arrival.shape
    arrivals, holds = np.ascontiguousarray(arrival.T), np.ascontiguousarray(hold.T)
    start = np.empty_like(arrivals)
    slots = len(opens)
    free = np.where(opens < closes, opens, np.inf)[None, :].repeat(trials, axis=0)
    close = np.broadcast_to(closes, (trials, slots))
    flat = free.reshape(-1)
    offsets = np.arange(trials) * slots
    rows = np.arange(trials)
    for k in range(leads):
        # A slot whose closing the lead arrives at or after can never serve anyone after it either.
        free[arrivals[k][:, None] >= close] = np.inf
        where = free.argmin(axis=1)
        chosen = free[rows, where]
        begin = np.maximum(arrivals[k], chosen)
        begin[~np.isfinite(chosen)] = np.inf
        start[k] = begin
        after = begin + holds[k]
        where += offsets
        # A slot freed at or after its closing takes no one else.
        flat[where] = np.where(after < close[rows, where - offsets], after, np.inf)
    return np.ascontiguousarray(start.T)


def starts(model: Model, floor: Floor) -> Array:
    """Start times on the model's rep slots: the plain recursion when every slot is open throughout."""
    reps = model.reps
    if reps is None or reps.uniform:
        return fifo_starts(floor.arrival, floor.hold, reps.slots if reps is not None else None)
    opens, closes = reps.slot_times()
    return fifo_starts_people(floor.arrival, floor.hold, np.array(opens), np.array(closes))


def measure(model: Model, floor: Floor, start: Array, *, detail: bool = True) -> tuple[Outcomes, Flow | None]:
    """Per-trial outcomes and per-lead measurements, with SimPy's conventions: a win counts if it
    happens by the horizon; a lead still queued at the horizon counts with its wait so far. Without
    ``detail`` the per-lead measurements and the revenue by week are skipped (a paired compare reads
    revenue and wins only); the other outcomes are the same."""
    horizon = model.horizon_days
    finish = start + floor.hold
    counted = floor.won & (finish <= horizon)
    new = counted & floor.new
    existing = counted ^ new  # counted and not new: padding is never won, so never counted
    wait = np.minimum(start, horizon)
    wait -= floor.arrival
    low, high = window(model)
    waited = floor.new & (floor.arrival >= low) & (floor.arrival <= high)
    n_waited = np.count_nonzero(waited, axis=1)
    mean_wait = np.divide(
        np.where(waited, wait, 0.0).sum(axis=1), n_waited, out=np.zeros(len(n_waited)), where=n_waited > 0
    )
    by_day = None
    if detail:
        trials, leads = counted.shape
        picked = np.flatnonzero(counted)  # row-major, as ``np.nonzero`` reads them
        by_day = revenue_by_day(
            fan_days(model),
            picked // leads,
            np.take(finish, picked),
            np.take(floor.deal, picked),
            trials,
        )
    outcomes = Outcomes(
        wins_new=np.count_nonzero(new, axis=1).astype(np.float64),
        wins_existing=np.count_nonzero(existing, axis=1).astype(np.float64),
        revenue_new=np.where(new, floor.deal, 0.0).sum(axis=1),
        revenue_existing=np.where(existing, floor.deal, 0.0).sum(axis=1),
        wait_days=mean_wait,
        revenue_by_day=by_day,
    )
    if not detail:
        return outcomes, None
    new &= waited
    return outcomes, flow_of(model, floor.arrival, start, finish, waited, new, wait)


def _select(values: Array, mask: NDArray[np.bool_]) -> Array:
    """``values[mask]`` for a 2-D mask, in the same row-major order: a flat ``nonzero`` then a ``take``
    runs several times faster than 2-D boolean indexing when few leads are picked."""
    return np.take(values, np.flatnonzero(mask))


def flow_of(
    model: Model,
    arrival: Array,
    start: Array,
    finish: Array,
    waited: NDArray[np.bool_],
    won_in_window: NDArray[np.bool_],
    wait: Array | None = None,
) -> Flow:
    """Per-lead waits and lead times, slot utilisation and weekly queue lengths from start times;
    ``wait`` (every lead's wait, ``min(start, horizon) - arrival``) saves recomputing it when known."""
    horizon = model.horizon_days
    low, high = window(model)
    # Boolean masks read row by row, as ``np.nonzero`` would, without building the lead coordinates;
    # each row's count of values says which values are its trial's.
    if model.reps is None:
        utilisation = np.zeros(len(arrival))
    else:
        busy = np.minimum(finish, high)
        busy -= np.maximum(start, low)
        np.clip(busy, 0.0, None, out=busy)
        total = busy.sum(axis=1)
        if not np.all(np.isfinite(total)):  # only then can a lead's busy time be other than finite
            total = np.where(np.isfinite(busy), busy, 0.0).sum(axis=1)
        utilisation = total / slot_days(model, low, high)
    weeks = week_ends(model)
    picked = np.flatnonzero(won_in_window)
    return Flow(
        waits=_select(wait, waited)
        if wait is not None
        else np.minimum(start[waited], horizon) - arrival[waited],
        wait_counts=np.count_nonzero(waited, axis=1).astype(np.int64),
        lead_times=np.take(finish, picked) - np.take(arrival, picked),
        lead_time_counts=np.count_nonzero(won_in_window, axis=1).astype(np.int64),
        utilisation=utilisation,
        queue=_count_at_or_before(arrival, weeks, horizon) - _count_at_or_before(start, weeks, horizon),
    )


def slot_days(model: Model, low: float, high: float) -> float:
    """Slot-days open within ``[low, high]``: the denominator of utilisation. A lead still held when its
    rep leaves counts as busy until it ends, so a team losing people can read slightly above 1."""
    assert model.reps is not None
    opens, closes = model.reps.slot_times()
    days = np.clip(np.minimum(closes, high) - np.maximum(opens, low), 0.0, None).sum()
    return float(days) if days > 0 else 1.0


def _count_at_or_before(times: Array, points: Array, horizon: float) -> Array:
    """Per row of non-decreasing ``times``, how many are <= each point (points within the horizon): a
    binary search for every (row, point) at once — a few steps over a (rows, points) array instead of
    touching every lead."""
    trials, leads = times.shape
    flat = times.reshape(-1)
    base = (np.arange(trials, dtype=np.int64) * leads)[:, None]
    query = np.broadcast_to(points[None, :], (trials, len(points)))
    low = np.zeros((trials, len(points)), dtype=np.int64)
    high = np.full((trials, len(points)), leads, dtype=np.int64)
    for _ in range(leads.bit_length()):  # bisect_right, all searches in step
        middle = (low + high) // 2
        active = low < high
        right = active & (flat[base + np.minimum(middle, leads - 1)] <= query)
        low = np.where(right, middle + 1, low)
        high = np.where(active & ~right, middle, high)
    counts: Array = low.astype(np.float64)
    return counts


def simulate(model: Model, seed: int, block: int, trials: int, *, detail: bool = True) -> Outcomes:
    """Outcomes of ``trials`` trials of block ``block``, with per-lead measurements and revenue by week
    unless ``detail`` is off."""
    check(model)
    floor = draw(model, seed, block, trials)
    return _served(model, floor, detail)


def simulate_teams(
    model: Model, seed: int, block: int, trials: int, *, teams: tuple[Reps | None, ...], detail: bool = True
) -> list[Outcomes]:
    """:func:`simulate` of ``replace(model, reps=team)`` for each team, the leads drawn once: nothing
    drawn depends on the reps, so each team's outcomes are exactly what :func:`simulate` gives it."""
    check(model)
    floor = draw(model, seed, block, trials)
    return [_served(replace(model, reps=team), floor, detail) for team in teams]


def _served(model: Model, floor: Floor, detail: bool) -> Outcomes:
    outcomes, flow = measure(model, floor, starts(model, floor), detail=detail)
    return Outcomes(
        outcomes.wins_new,
        outcomes.wins_existing,
        outcomes.revenue_new,
        outcomes.revenue_existing,
        outcomes.wait_days,
        flow=flow,
        revenue_by_day=outcomes.revenue_by_day,
    )
