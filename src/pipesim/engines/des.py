"""Discrete-event engine (SimPy): reps as resources, leads queue when every rep is busy.

Scenario. A sales floor has ``reps.count`` reps, each able to work ``reps.leads_each`` open leads at once:
a pool of rep slots. A new lead waits (FIFO) for a free slot and keeps it until it is won or lost; open
leads from the model's ``open_leads`` already hold slots at day 0. In each stage a lead first gets a rep's
dedicated ``work`` time if the stage has one (waiting for any of the ``reps.count`` reps), then spends its
time in stage, then converts or is lost. Wins after the horizon do not count.

Randomness is per lead: lead j of a trial takes its stage outcomes, times, deal size and work times from
row j of the trial's lead stream, by inversion — so a variant model (one more rep, a faster stage) sees
the same leads, and the paired difference isolates the change. All of a trial's draws are made up front,
vectorised; SimPy then only sequences the events. With segments, a new lead's row also picks its segment
by share (last column), whose conversions and deal size it then uses; an open cohort keeps its segment.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from numpy.typing import NDArray

from pipesim.arrival_profile import arrival_times
from pipesim.distributions import Array
from pipesim.engines.common import (
    LEADS,
    Flow,
    Group,
    Outcomes,
    TrialDraws,
    cohort_counts,
    fan_days,
    groups,
    pick_segment,
    scaled_time,
    stream,
    trial_draws,
    window,
)
from pipesim.engines.queue import flow_of
from pipesim.spec import Model

BLOCK_TRIALS = 50


@dataclass(frozen=True)
class Lead:
    """One lead's whole story, drawn before the simulation runs."""

    arrival: float
    start: int
    durations: tuple[float, ...]  # time in each stage from ``start``
    work: tuple[float, ...]  # rep work time in each stage from ``start`` (0 = none)
    stages_passed: int  # stages it converts out of before being lost (all of them: won)
    deal: float
    existing: bool


class SalesFloor:
    """Owns the SimPy environment, the rep slots and the reps; one process per lead."""

    def __init__(self, model: Model, wait_window: tuple[float, float] | None = None) -> None:
        self.model = model
        self.env = simpy.Environment()
        reps = model.reps
        self.slots = (
            simpy.Resource(self.env, capacity=reps.slots) if reps is not None and reps.uniform else None
        )
        # Reps with hire dates, ramps or leaving dates: each slot a token in a store, put in when it
        # opens, taken out when it closes, not given back by a lead ending at or after its closing.
        self.store: simpy.Store | None = None
        self.closes: list[float] = []
        if reps is not None and not reps.uniform:
            self.store = simpy.Store(self.env)
            opens, self.closes = reps.slot_times()
            for token, (opening, closing) in enumerate(zip(opens, self.closes, strict=True)):
                if opening < closing:
                    self.env.process(self.open_slot(token, opening, closing))
        has_work = any(stage.work is not None for stage in model.stages)
        self.reps = simpy.Resource(self.env, capacity=reps.count) if reps is not None and has_work else None
        self.wait_window = wait_window if wait_window is not None else window(model)
        self.wins = [0, 0]  # new, existing
        self.revenue = [0.0, 0.0]
        self.wait_total = 0.0
        self.waited = 0
        self.waiting: dict[int, float] = {}  # id(lead) -> arrival, for leads still queued
        self.starts: dict[int, float] = {}  # id(lead) -> when it got a slot
        self.finishes: dict[int, float] = {}  # id(lead) -> when it was won or lost
        self.won: set[int] = set()  # id(lead) of leads won by the horizon
        self.days = fan_days(model)
        self.by_day = np.zeros(len(self.days))  # revenue won in each fan period (summed at the end)

    def open_slot(self, token: int, opening: float, closing: float) -> Generator[Any, Any, None]:
        """Puts slot ``token`` in the store at its opening and takes it out at its closing if idle."""
        assert self.store is not None
        if opening > 0:
            yield self.env.timeout(opening)
        self.store.put(token)
        if math.isfinite(closing):
            yield self.env.timeout(closing - self.env.now)
            if token in self.store.items:
                self.store.items.remove(token)

    def source(self, leads: list[Lead]) -> Generator[Any, Any, None]:
        """Releases new leads at their arrival times."""
        for lead in leads:
            if lead.arrival > self.env.now:
                yield self.env.timeout(lead.arrival - self.env.now)
            self.env.process(self.lead(lead))

    def lead(self, lead: Lead) -> Generator[Any, Any, None]:
        env = self.env
        slot: Any = None
        if self.slots is not None or self.store is not None:
            counted = not lead.existing and self.wait_window[0] <= lead.arrival <= self.wait_window[1]
            slot = self.slots.request() if self.slots is not None else self.store.get()  # type: ignore[union-attr]
            if counted:
                self.waiting[id(lead)] = lead.arrival
            token = yield slot
            if counted:
                del self.waiting[id(lead)]
                self.wait_total += env.now - lead.arrival
                self.waited += 1
        self.starts[id(lead)] = env.now
        for step, duration in enumerate(lead.durations):
            if lead.work[step] > 0 and self.reps is not None:
                with self.reps.request() as rep:
                    yield rep
                    yield env.timeout(lead.work[step])
            if duration > 0:
                yield env.timeout(duration)
            if step >= lead.stages_passed:
                break
        else:
            kind = 1 if lead.existing else 0
            self.wins[kind] += 1
            self.revenue[kind] += lead.deal
            self.won.add(id(lead))
            period = int(np.searchsorted(self.days, env.now, side="left"))
            if period < len(self.days):
                self.by_day[period] += lead.deal
        self.finishes[id(lead)] = env.now
        if slot is not None and self.slots is not None:
            self.slots.release(slot)
        elif self.store is not None and env.now < self.closes[token]:
            self.store.put(token)  # back at the end: the slot idle the longest is taken first

    def run(self, leads: list[Lead]) -> None:
        """Existing leads first (they hold their slots already), then new ones as they arrive."""
        for lead in leads:
            if lead.existing or lead.arrival == 0:
                self.env.process(self.lead(lead))
        later = [lead for lead in leads if not lead.existing and lead.arrival > 0]
        if later:
            self.env.process(self.source(later))
        # Just past the horizon, so a win exactly at the horizon counts as in the vectorised engine.
        horizon = self.model.horizon_days
        self.env.run(until=math.nextafter(horizon, math.inf))
        # Leads still queued at the horizon count with the wait so far, so congestion is not hidden.
        self.wait_total += sum(horizon - arrival for arrival in self.waiting.values())
        self.waited += len(self.waiting)

    @property
    def mean_wait(self) -> float:
        return self.wait_total / self.waited if self.waited else 0.0

    def flow(self, leads: list[Lead]) -> Flow:
        """Per-lead measurements of the run, as the queue engine reports them (one trial)."""
        keys = [id(lead) for lead in leads]
        arrival = np.array([[lead.arrival for lead in leads]])
        start = np.array([[self.starts.get(key, math.inf) for key in keys]])
        finish = np.array([[self.finishes.get(key, math.inf) for key in keys]])
        low, high = self.wait_window
        waited = np.array([[not lead.existing and low <= lead.arrival <= high for lead in leads]])
        won = np.array([[key in self.won for key in keys]])
        return flow_of(self.model, arrival.reshape(1, -1), start, finish, waited, won & waited)


def _segments_of(model: Model, rows: Array, group: Group) -> NDArray[np.int64] | None:
    """Each lead's segment index, or None when the group's leads use the stages' own conversions."""
    if group.segment is not None:
        return np.full(len(rows), group.segment, dtype=np.int64)
    if not model.segments or group.existing:
        return None
    shares = np.array([[segment.share for segment in model.segments]])
    return pick_segment(np.repeat(shares, len(rows), axis=0), rows[:, -1])


def draw_leads(
    model: Model,
    rows: Array,
    group: Group,
    p: Array,
    time_scale: Array,
    deal_scale: float,
    p_segments: Array | None = None,
) -> list[Lead]:
    """Turns a group's uniform rows (one per lead) into leads. Columns: S conversion, arrival, S times,
    deal, S work times (and the segment, with segments). ``time_scale`` (one per stage) and
    ``deal_scale`` are the trial's parameter draws; ``p_segments``: (segments, S) conversions."""
    n_stages = len(model.stages)
    if len(rows) == 0:
        return []
    segment_of = _segments_of(model, rows, group)
    if segment_of is None or p_segments is None:
        p_lead = np.broadcast_to(p, (len(rows), n_stages))
    else:
        p_lead = p_segments[segment_of]
    converts = rows[:, group.start : n_stages] < p_lead[:, group.start :]
    passed = np.where(converts.all(axis=1), n_stages - group.start, np.argmin(converts, axis=1))
    if group.existing or model.arrivals.kind == "batch":
        arrival = np.zeros(len(rows))
    else:
        arrival = arrival_times(model.arrivals, model.horizon_days, rows[:, n_stages])
    times = np.zeros((len(rows), n_stages - group.start))
    work = np.zeros_like(times)
    for column, index in enumerate(range(group.start, n_stages)):
        stage = model.stages[index]
        u = rows[:, n_stages + 1 + index]
        age = group.age_days if index == group.start else 0.0
        scale = np.full(len(rows), time_scale[index])
        times[:, column] = scaled_time(stage.time_in_stage, u, age, scale)
        if stage.work is not None:
            work[:, column] = stage.work.ppf(rows[:, 2 * n_stages + 2 + index])
    deal_u = rows[:, 2 * n_stages + 1]
    if group.value is not None:
        deals = np.full(len(rows), group.value)
    elif segment_of is None:
        deals = model.deal_size.ppf(deal_u) * deal_scale
    else:
        deals = np.empty(len(rows))
        for index, segment in enumerate(model.segments):
            mine = segment_of == index
            if mine.any():
                deals[mine] = (segment.deal_size or model.deal_size).ppf(deal_u[mine]) * deal_scale
    order = np.argsort(arrival, kind="stable")
    return [
        Lead(
            arrival=float(arrival[j]),
            start=group.start,
            durations=tuple(times[j].tolist()),
            work=tuple(work[j].tolist()),
            stages_passed=int(passed[j]),
            deal=float(deals[j]),
            existing=group.existing,
        )
        for j in order
    ]


def trial_leads(model: Model, seed: int, block: int, trial: int, draws: TrialDraws) -> list[Lead]:
    width = 3 * len(model.stages) + 2 + (1 if model.segments else 0)
    leads: list[Lead] = []
    counts = [int(draws.new_leads[trial]), *cohort_counts(model)]
    p, time_scale, deal_scale = draws.p[trial], draws.time_scale[trial], float(draws.deal_scale[trial])
    for index, (group, count) in enumerate(zip(groups(model), counts, strict=True)):
        rows = stream(seed, block, LEADS, trial, index).random((count, width))
        leads += draw_leads(model, rows, group, p, time_scale, deal_scale, draws.p_segments[trial])
    return leads


def simulate(model: Model, seed: int, block: int, trials: int, *, detail: bool = True) -> Outcomes:
    draws = trial_draws(model, seed, block, trials)
    out = np.zeros((5, trials))
    by_day = np.zeros((trials, len(fan_days(model))))
    flows = []
    for trial in range(trials):
        floor = SalesFloor(model)
        leads = trial_leads(model, seed, block, trial, draws)
        floor.run(leads)
        out[:, trial] = (*floor.wins, *floor.revenue, floor.mean_wait)
        by_day[trial] = np.cumsum(floor.by_day)
        if detail:
            flows.append(floor.flow(leads))
    return Outcomes(
        wins_new=out[0],
        wins_existing=out[1],
        revenue_new=out[2],
        revenue_existing=out[3],
        wait_days=out[4],
        flow=Flow.concat(flows) if detail else None,
        revenue_by_day=by_day if detail else None,
    )
