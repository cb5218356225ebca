"""What the Monte Carlo engines share: random streams, per-trial draws, lead groups and outcomes.

Streams. Trials are cut into blocks of a fixed size per engine. Every random number comes from a stream
``SeedSequence(seed, spawn_key=(block, purpose, ...))`` — the same children ``SeedSequence(seed).spawn``
would give — so a block's numbers depend only on the seed and the block, never on which worker runs it
or how many workers there are.

Groups. New leads form group 0 and start at the first stage; each open-lead cohort is a further group
that starts at its current stage with its age in that stage. Per-trial draws (one row per trial) hold the
conversion probabilities — Beta ones drawn once per trial, so parameter uncertainty carries into the
spread — and one uniform per group for its number of wins. Models that state the uncertainty of their
times in stage, deal size or arrival rate also get per-trial scale factors ``exp(sd·Z)`` from a stream of
their own, so models without it draw exactly the numbers they always did.

Segments. A model with segments draws each segment's conversions per trial too, from a stream of its
own (so a model without segments sees exactly the numbers it saw before). Given a trial's conversions
every new lead independently picks a segment by share and then wins with that segment's probability, so
a new lead wins with probability ``Σ share_s · P_s`` and a winner belongs to segment s with probability
``share_s · P_s / Σ share_t · P_t``: engines draw wins from the first and each winner's segment from the
second. An open-lead cohort keeps the segment it names.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipesim.arrival_profile import expected_count
from pipesim.distributions import Array, BetaProbability, Conversion, Distribution, Exponential, Fixed
from pipesim.spec import Model

# Purposes of the streams, the second element of every spawn key.
TRIAL = 0
ARRIVALS = 1
WINNERS = 2
LEADS = 3
QUEUE_LEADS = 4
COHORTS = 5  # a group's in-horizon wins and deal sums (``engines.cohorts``)
PARAMETERS = 6
SEGMENTS = 7


def stream(seed: int, block: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block, *key)))


@dataclass(frozen=True)
class Group:
    """Leads that share a starting point: new arrivals (``existing=False``) or one open-lead cohort."""

    start: int  # index of the stage they are in
    age_days: float  # days already spent in that stage
    value: float | None  # known deal size, else drawn from the model's deal size
    existing: bool
    segment: int | None = None  # an open cohort's segment (index into model.segments)


def groups(model: Model) -> list[Group]:
    found = [Group(0, 0.0, None, existing=False)]
    found += [
        Group(
            model.stage_index(cohort.stage),
            cohort.age_days,
            cohort.value,
            existing=True,
            segment=None if cohort.segment is None else model.segment_index(cohort.segment),
        )
        for cohort in model.open_leads
    ]
    return found


def cohort_counts(model: Model) -> list[int]:
    return [cohort.count for cohort in model.open_leads]


@dataclass(frozen=True)
class TrialDraws:
    """Per-trial random quantities of one block."""

    p: Array  # (trials, stages) conversion probabilities
    win_u: Array  # (trials, groups) uniforms that set each group's number of wins
    new_leads: NDArray[np.int64]  # (trials,) number of new leads
    time_scale: Array  # (trials, stages) factor on every time in each stage (1: no uncertainty)
    deal_scale: Array  # (trials,) factor on every drawn deal size
    p_segments: Array  # (trials, segments, stages) each segment's conversion probabilities

    def group_p(self, group: Group) -> Array:
        """(trials, stages) conversions of a group's leads (a cohort's segment's, else the stages')."""
        return self.p if group.segment is None else self.p_segments[:, group.segment, :]

    def segment_wins(self, model: Model) -> Array:
        """(trials, segments) ``share_s · P_s``: a new lead's chance to be won in segment s."""
        shares = np.array([segment.share for segment in model.segments])
        return np.asarray(np.prod(self.p_segments, axis=2) * shares[None, :], dtype=np.float64)

    def new_lead_win_probability(self, model: Model) -> Array:
        """(trials,) probability that a new lead is eventually won."""
        if not model.segments:
            return win_probability_from(self.p, 0)
        return np.asarray(self.segment_wins(model).sum(axis=1), dtype=np.float64)


def trial_draws(model: Model, seed: int, block: int, trials: int) -> TrialDraws:
    n_stages, n_groups = len(model.stages), 1 + len(model.open_leads)
    u = stream(seed, block, TRIAL).random((trials, n_stages + n_groups))
    p = np.empty((trials, n_stages))
    for index, stage in enumerate(model.stages):
        p[:, index] = _conversions(stage.conversion, u, index, (seed, block, trials, u.shape[1], index))
    time_scale, deal_scale, rate_scale = _parameter_scales(model, seed, block, trials)
    if model.arrivals.kind == "batch":
        new_leads = np.full(trials, model.arrivals.count, dtype=np.int64)
    else:
        expected = expected_count(model.arrivals, model.horizon_days)
        lam = expected if model.arrivals.rate_uncertainty == 0 else expected * rate_scale
        new_leads = stream(seed, block, ARRIVALS).poisson(lam, trials).astype(np.int64)
    p_segments = np.empty((trials, len(model.segments), n_stages))
    if model.segments:
        su = stream(seed, block, SEGMENTS).random((trials, len(model.segments), n_stages))
        for s_index, segment in enumerate(model.segments):
            for index in range(n_stages):
                if segment.conversions is None:
                    p_segments[:, s_index, index] = p[:, index]
                else:
                    p_segments[:, s_index, index] = segment.conversions[index].ppf(su[:, s_index, index])
    return TrialDraws(
        p=p,
        win_u=u[:, n_stages:],
        new_leads=new_leads,
        time_scale=time_scale,
        deal_scale=deal_scale,
        p_segments=p_segments,
    )


CONVERSIONS_KEPT = 64  # stages' per-trial Beta conversions kept per process (8 KiB a block of 1,000)
_conversions_kept: OrderedDict[Hashable, Array] = OrderedDict()
_conversions_lock = threading.Lock()  # blocks may run on threads of one process


def _conversions(conversion: Conversion, u: Array, index: int, where: tuple[int, ...]) -> Array:
    """A stage's per-trial conversions, ``conversion.ppf(u[:, index])``, kept for a Beta law: its inverse
    (``betaincinv`` at the counts of a large history) costs microseconds a trial, and a model calibrated
    again while its open leads age keeps its stages' counts — and, at the same seed, trials and number
    of cohorts (``where``: seed, block, trials, columns of ``u``, stage), the same uniforms."""
    if not isinstance(conversion, BetaProbability):
        return np.asarray(conversion.ppf(u[:, index]), dtype=np.float64)
    key = (conversion, *where)
    with _conversions_lock:
        found = _conversions_kept.get(key)
        if found is not None:
            _conversions_kept.move_to_end(key)
            return found
    found = conversion.ppf(u[:, index])
    found.flags.writeable = False
    with _conversions_lock:
        _conversions_kept[key] = found
        while len(_conversions_kept) > CONVERSIONS_KEPT:
            _conversions_kept.popitem(last=False)
    return found


def clear_kept_conversions() -> None:
    with _conversions_lock:
        _conversions_kept.clear()


def pick_segment(weights: Array, u: Array) -> NDArray[np.int64]:
    """Per row, the segment whose share of ``weights`` (rows × segments, not normalised) ``u`` falls in."""
    cumulative = np.cumsum(weights, axis=1)
    total = cumulative[:, -1:]
    scaled = u.reshape(-1, 1) * np.where(total > 0, total, 1.0)
    picked = (cumulative <= scaled).sum(axis=1)
    return np.asarray(np.minimum(picked, weights.shape[1] - 1), dtype=np.int64)


def _parameter_scales(model: Model, seed: int, block: int, trials: int) -> tuple[Array, Array, Array]:
    """Per-trial factors exp(sd·Z) for each stage's times, the deal size and the arrival rate."""
    n_stages = len(model.stages)
    if not model.has_parameter_uncertainty:
        return np.ones((trials, n_stages)), np.ones(trials), np.ones(trials)
    z = stream(seed, block, PARAMETERS).standard_normal((trials, n_stages + 2))
    sd_times = np.array([stage.time_uncertainty for stage in model.stages])
    time_scale = np.exp(z[:, :n_stages] * sd_times)
    deal_scale = np.exp(z[:, n_stages] * model.deal_size_uncertainty)
    rate_scale = np.exp(z[:, n_stages + 1] * model.arrivals.rate_uncertainty)
    return time_scale, deal_scale, rate_scale


def scaled_time(duration: Distribution, u: Array, age: float, scale: Array) -> Array:
    """Time still to spend in a stage whose times are multiplied by ``scale`` (one per row), for a lead
    already ``age`` days in it: ``scale·T`` conditioned on exceeding the age, minus the age."""
    if age <= 0:
        times = duration.ppf(u)
        if not np.all(scale == 1.0):  # without parameter uncertainty every scale is 1: skip the pass
            times *= scale
        return times
    if np.all(scale == 1.0):
        return duration.remaining(u, age)
    if isinstance(duration, Exponential):
        return duration.ppf(u) * scale  # memoryless at any scale
    if isinstance(duration, Fixed):
        return np.maximum(duration.value * scale - age, 0.0)
    below = duration.cdf(age / scale)
    gone = below >= 1.0  # older than any time allowed: the stage ends now
    level = np.where(gone, 0.0, below + u * (1.0 - below))
    return np.where(gone, 0.0, np.maximum(duration.ppf(level) * scale - age, 0.0))


def win_probability_from(p: Array, start: int) -> Array:
    """Probability that a lead now in stage ``start`` is eventually won, per trial."""
    return np.asarray(np.prod(p[:, start:], axis=1), dtype=np.float64)


def window(model: Model) -> tuple[float, float]:
    """The measurement window (days): waits, lead times and utilisation count only inside it."""
    if model.measurement is None:
        return 0.0, model.horizon_days
    return model.measurement.warmup_days, model.measurement.end(model.horizon_days)


MAX_WEEKS = 520


def fan_days(model: Model) -> Array:
    """Days at which cumulative revenue is read for the fan chart: each week's end within the horizon and
    the horizon itself, at most ``MAX_WEEKS`` + 1 of them."""
    weeks = np.arange(1, min(math.ceil(model.horizon_days / 7), MAX_WEEKS + 1), dtype=np.float64) * 7
    return np.append(weeks[weeks < model.horizon_days], model.horizon_days)


def revenue_by_day(
    days: Array, trial_of: NDArray[np.int64], finish: Array, deals: Array, trials: int
) -> Array:
    """(trials, len(days)) revenue won by each day (wins after the last day are not counted)."""
    slot = np.searchsorted(days, finish, side="left")
    inside = slot < len(days)
    flat = np.bincount(
        trial_of[inside] * len(days) + slot[inside], weights=deals[inside], minlength=trials * len(days)
    )
    return np.cumsum(flat.reshape(trials, len(days)), axis=1)


def week_ends(model: Model) -> Array:
    """Days at which queue lengths are read: the end of every whole week within the horizon (none without
    [reps]: nobody queues), at most ``MAX_WEEKS`` of them."""
    if model.reps is None:
        return np.zeros(0)
    return np.arange(1, min(int(model.horizon_days // 7), MAX_WEEKS) + 1, dtype=np.float64) * 7


@dataclass(frozen=True)
class Flow:
    """Per-lead and queue measurements of a batch of trials (engines with rep capacity).

    ``waits``: each new lead arriving inside the measurement window, its wait for a rep slot (cut at the
    horizon if still queued); ``lead_times``: each new lead won within the horizon that arrived inside
    the window, arrival to win. Values are in trial order and ``*_counts`` say how many each trial has,
    so a standard error can respect that leads of one trial are not independent; ``*_trial`` spell out
    each value's trial (0-based within the batch) when asked — a count per trial instead of an index per
    lead keeps tens of millions of indices out of memory."""

    waits: Array
    wait_counts: NDArray[np.int64]  # (trials,)
    lead_times: Array
    lead_time_counts: NDArray[np.int64]  # (trials,)
    utilisation: Array  # (trials,) share of rep-slot time in use during the window
    queue: Array  # (trials, weeks) leads waiting for a slot at the end of each week

    @property
    def wait_trial(self) -> NDArray[np.int32]:
        return _trial_of(self.wait_counts)

    @property
    def lead_time_trial(self) -> NDArray[np.int32]:
        return _trial_of(self.lead_time_counts)

    @staticmethod
    def concat(parts: list[Flow]) -> Flow:
        if len(parts) == 1:
            return parts[0]
        return Flow(
            waits=np.concatenate([part.waits for part in parts]),
            wait_counts=np.concatenate([part.wait_counts for part in parts]),
            lead_times=np.concatenate([part.lead_times for part in parts]),
            lead_time_counts=np.concatenate([part.lead_time_counts for part in parts]),
            utilisation=np.concatenate([part.utilisation for part in parts]),
            queue=np.concatenate([part.queue for part in parts]),
        )


def _trial_of(counts: NDArray[np.int64]) -> NDArray[np.int32]:
    """Each value's trial from the number of values per trial (values in trial order)."""
    return np.repeat(np.arange(len(counts), dtype=np.int32), counts)


@dataclass(frozen=True)
class Outcomes:
    """Per-trial results of a batch of trials, in trial order."""

    wins_new: Array
    wins_existing: Array
    revenue_new: Array
    revenue_existing: Array
    wait_days: Array  # mean wait of new leads for a free rep slot (0 without capacity limits)
    flow: Flow | None = None  # per-lead measurements, from engines that model rep capacity
    revenue_by_day: Array | None = None  # (trials, fan days) cumulative revenue, see :func:`fan_days`

    @property
    def trials(self) -> int:
        return len(self.wins_new)

    @property
    def wins(self) -> Array:
        return self.wins_new + self.wins_existing

    @property
    def revenue(self) -> Array:
        return self.revenue_new + self.revenue_existing

    @staticmethod
    def concat(parts: list[Outcomes]) -> Outcomes:
        flows = [part.flow for part in parts if part.flow is not None]
        columns = {name: np.concatenate([getattr(part, name) for part in parts]) for name in _OUTCOME_FIELDS}
        fans = [part.revenue_by_day for part in parts if part.revenue_by_day is not None]
        return Outcomes(
            **columns,
            flow=Flow.concat(flows) if len(flows) == len(parts) and flows else None,
            revenue_by_day=np.concatenate(fans) if len(fans) == len(parts) and fans else None,
        )


_OUTCOME_FIELDS = ("wins_new", "wins_existing", "revenue_new", "revenue_existing", "wait_days")


def block_count(trials: int, block_trials: int) -> int:
    return math.ceil(trials / block_trials)
