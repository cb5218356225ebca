"""Stage histories generated from known parameters, to check calibration against the truth.

Scenario. Leads arrive as a Poisson process at ``arrivals_per_day`` and start in the first stage. In stage
i a lead stays an exponential time with mean ``mean_days[i]``, then advances with probability
``conversions[i]`` or is lost; passing the last stage is a win. Deal sizes are log-normal. This is the
process calibration assumes, so a calibrated model should recover the parameters within their standard
errors, and a forecast made at a cut-off should cover what the generator did next.

Truths that are *not* the model's own, for judging a forecast on what real pipelines do, change one
part each (and can be combined): times in stage Weibull or log-normal with the same means
(``duration``, ``duration_shape``); leads from ``sources`` whose conversions differ; reps of different
``rep_strengths``; arrivals with a ``weekday_profile`` and a ``trend_per_year``. A source's or a rep's
factor multiplies every stage's conversion (capped below 1).

:func:`truth_model` is the forecast a perfect calibration would make: the truth's own parameters, each
open lead with its exact stage, age, value and segment. Its coverage in a backtest is what the backtest's
finite sample allows any model.

Used by the calibration tests and ``scripts/backtest.py``. Times are days from ``origin``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import insert, select

import pipesim
from pipegraph.db.models import Lead, LeadStatus, Pipeline, Role, Stage, StageHistory, User
from pipegraph.db.session import Store
from pipegraph.db.stays import derive_stays
from pipesim.distributions import Distribution

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class TrueSource:
    """A lead source: its ``share`` of arrivals and the factor on every stage's conversion."""

    name: str
    share: float
    conversion_factor: float


@dataclass(frozen=True)
class TruePipeline:
    """The parameters a synthetic history is drawn from."""

    conversions: tuple[float, ...]
    mean_days: tuple[float, ...]
    arrivals_per_day: float
    deal_mean: float  # currency units
    deal_sd: float
    reps: int = 4
    rep_capacity: int = 30
    duration: str = "exponential"  # or "weibull" (shape k) or "lognormal" (sigma of the log)
    duration_shape: float = 1.0
    sources: tuple[TrueSource, ...] = ()
    rep_strengths: tuple[float, ...] = ()  # factor on conversion per rep; empty: all alike
    weekday_profile: tuple[float, ...] = ()  # 7 relative arrival rates, Monday first; empty: flat
    trend_per_year: float = 0.0  # arrival rate grows by this share per 365 days

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(f"Stage {index + 1}" for index in range(len(self.conversions)))

    @property
    def win_probability(self) -> float:
        return math.prod(self.conversions)


@dataclass(frozen=True)
class Trajectories:
    """Whole lives of leads: ``enter[:, i]`` is when a lead entered stage i (NaN if it never did)."""

    created: Floats
    value: Floats  # currency units
    enter: Floats  # (leads, stages)
    closed: Floats  # when it was won or lost
    last_stage: NDArray[np.int64]
    won: NDArray[np.bool_]
    source: NDArray[np.int64]  # index into ``TruePipeline.sources`` (0 when there are none)
    owner: NDArray[np.int64]  # rep index

    def revenue_between(self, start: float, end: float) -> float:
        """Value of the wins in ``(start, end]``."""
        mask = self.won & (self.closed > start) & (self.closed <= end)
        return float(self.value[mask].sum())

    def open_at(self, day: float) -> int:
        return int(np.sum((self.created <= day) & (self.closed > day)))


def _deal_sizes(truth: TruePipeline, rng: np.random.Generator, n: int) -> Floats:
    sigma2 = math.log1p((truth.deal_sd / truth.deal_mean) ** 2)
    mu = math.log(truth.deal_mean) - sigma2 / 2
    return np.round(rng.lognormal(mu, math.sqrt(sigma2), n), 2)


def _stage_days(truth: TruePipeline, rng: np.random.Generator, mean: float, n: int) -> Floats:
    """Times in a stage with the given mean, in the truth's family."""
    if truth.duration == "exponential":
        return rng.exponential(mean, n)
    if truth.duration == "weibull":
        k = truth.duration_shape
        return rng.weibull(k, n) * (mean / math.gamma(1 + 1 / k))
    if truth.duration == "lognormal":
        sigma = truth.duration_shape
        return rng.lognormal(math.log(mean) - sigma * sigma / 2, sigma, n)
    raise ValueError(f"unknown duration family {truth.duration!r}")


def _time_in_stage(truth: TruePipeline, mean: float) -> Distribution:
    """The truth's time in a stage as a pipesim distribution (what :func:`_stage_days` draws from)."""
    if truth.duration == "exponential":
        return pipesim.Exponential(mean)
    if truth.duration == "weibull":
        k = truth.duration_shape
        return pipesim.Weibull(k, mean / math.gamma(1 + 1 / k))
    if truth.duration == "lognormal":
        sigma = truth.duration_shape
        return pipesim.LogNormal(mean, mean * math.sqrt(math.expm1(sigma * sigma)))
    raise ValueError(f"unknown duration family {truth.duration!r}")


def _conversion_factors(
    truth: TruePipeline, rng: np.random.Generator, n: int
) -> tuple[Floats, NDArray[np.int64], NDArray[np.int64]]:
    """Each lead's factor on conversion, its source and its rep."""
    factor = np.ones(n)
    source = np.zeros(n, dtype=np.int64)
    if truth.sources:
        shares = np.array([s.share for s in truth.sources])
        source = rng.choice(len(shares), size=n, p=shares / shares.sum())
        factor *= np.array([s.conversion_factor for s in truth.sources])[source]
    owner = np.zeros(n, dtype=np.int64)
    if truth.rep_strengths:  # only then: the other truths keep the random stream they always had
        owner = rng.integers(0, len(truth.rep_strengths), n)
        factor *= np.array(truth.rep_strengths)[owner]
    return factor, source, owner


def play_out(truth: TruePipeline, rng: np.random.Generator, created: Floats) -> Trajectories:
    """Play out leads created at the given days."""
    n, stages = len(created), len(truth.conversions)
    enter = np.full((n, stages), np.nan)
    closed = np.full(n, np.nan)
    last_stage = np.zeros(n, dtype=np.int64)
    won = np.zeros(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    clock = created.copy()
    factor, source, owner = _conversion_factors(truth, rng, n)
    for index in range(stages):
        enter[alive, index] = clock[alive]
        last_stage[alive] = index
        clock = clock + _stage_days(truth, rng, truth.mean_days[index], n)
        advance = rng.random(n) < np.minimum(truth.conversions[index] * factor, 0.98)
        lost = alive & ~advance
        closed[lost] = clock[lost]
        alive &= advance
    closed[alive] = clock[alive]
    won[alive] = True
    return Trajectories(created, _deal_sizes(truth, rng, n), enter, closed, last_stage, won, source, owner)


def _segment_names(truth: TruePipeline) -> list[tuple[str, float, float]]:
    """(name, share of arrivals, factor on conversion) of each source × rep, as :func:`play_out` draws
    them; one segment when the truth has neither."""
    sources = [(s.name, s.share, s.conversion_factor) for s in truth.sources] or [("all", 1.0, 1.0)]
    total = sum(share for _, share, _ in sources)
    strengths = truth.rep_strengths or (1.0,)
    return [
        (f"{name} · rep {rep}" if truth.rep_strengths else name, share / total / len(strengths), f * strength)
        for name, share, f in sources
        for rep, strength in enumerate(strengths)
    ]


def truth_model(truth: TruePipeline, lives: Trajectories, cut_off: float, horizon: float) -> pipesim.Model:
    """The truth's own forecast model at day ``cut_off``: its conversions (per source and rep as
    segments), times in stage, deal size and arrivals, and every lead open then as its own cohort.

    The truth's linear trend becomes pipesim's exponential one with the same rate and slope at the
    cut-off (over a 90-day horizon and a trend of 50 % a year the two differ by 0.3 %)."""
    names = truth.stage_names
    stages = tuple(
        pipesim.Stage(name, pipesim.FixedProbability(conversion), _time_in_stage(truth, mean))
        for name, conversion, mean in zip(names, truth.conversions, truth.mean_days, strict=True)
    )
    mixed = bool(truth.sources or truth.rep_strengths)
    segment_rows = _segment_names(truth)
    segments = tuple(
        pipesim.Segment(
            name,
            share,
            tuple(pipesim.FixedProbability(min(c * factor, 0.98)) for c in truth.conversions),
        )
        for name, share, factor in segment_rows
    ) if mixed else ()  # fmt: skip
    profile = np.array(truth.weekday_profile or (1.0,) * 7)
    growth = max(1.0 + truth.trend_per_year * cut_off / 365, 1e-9)
    arrivals = pipesim.Arrivals(
        "poisson",
        rate_per_day=truth.arrivals_per_day * growth,
        weekday=tuple(float(x) for x in profile / profile.mean()) if truth.weekday_profile else None,
        start_weekday=math.floor(cut_off) % 7,  # day 0 is a Monday; the cut-off is a whole day
        trend_per_day=truth.trend_per_year / 365 / growth,
    )
    per_rep = len(truth.rep_strengths) or 1
    open_now = np.nonzero((lives.created <= cut_off) & (lives.closed > cut_off))[0]
    cohorts = []
    for index in open_now:
        stage = int(np.max(np.nonzero(lives.enter[index] <= cut_off)[0]))
        segment = int(lives.source[index]) * per_rep + int(lives.owner[index]) % per_rep
        cohorts.append(
            pipesim.OpenLeads(
                names[stage],
                1,
                age_days=cut_off - float(lives.enter[index, stage]),
                value=float(lives.value[index]),
                segment=segment_rows[segment][0] if mixed else None,
            )
        )
    return pipesim.Model(
        stages=stages,
        deal_size=pipesim.LogNormal(truth.deal_mean, truth.deal_sd),
        arrivals=arrivals,
        horizon_days=horizon,
        open_leads=tuple(cohorts),
        segments=segments,
    )


def _arrival_days(truth: TruePipeline, rng: np.random.Generator, days: float) -> Floats:
    """Poisson arrivals over ``[0, days)`` at the truth's rate, shaped by weekday and trend (thinning)."""
    profile = np.array(truth.weekday_profile or (1.0,) * 7)
    profile = profile / profile.mean()
    growth = max(1.0, 1.0 + truth.trend_per_year * days / 365)
    peak = truth.arrivals_per_day * profile.max() * growth
    candidates = np.sort(rng.uniform(0.0, days, rng.poisson(peak * days)))
    # Day 0 is the origin's weekday, Monday for the backtest's origin.
    rate = truth.arrivals_per_day * profile[np.floor(candidates).astype(np.int64) % 7]
    rate = rate * np.maximum(1.0 + truth.trend_per_year * candidates / 365, 0.0)
    kept: Floats = candidates[rng.random(len(candidates)) < rate / peak]
    return kept


def generate(truth: TruePipeline, rng: np.random.Generator, days: float) -> Trajectories:
    """Poisson arrivals over ``[0, days)``, each played out to its end (possibly after ``days``)."""
    if not truth.weekday_profile and truth.trend_per_year == 0.0:
        count = rng.poisson(truth.arrivals_per_day * days)
        return play_out(truth, rng, np.sort(rng.uniform(0.0, days, count)))
    return play_out(truth, rng, _arrival_days(truth, rng, days))


def _at(origin: datetime, day: float) -> datetime:
    return origin + timedelta(days=float(day))


async def write_history(
    store: Store,
    truth: TruePipeline,
    lives: Trajectories,
    *,
    origin: datetime,
    until: float,
    name: str = "Synthetic",
) -> int:
    """Store the pipeline, its reps, and every lead and history row up to day ``until``; the pipeline id."""
    OPEN, WON, LOST = LeadStatus.OPEN, LeadStatus.WON, LeadStatus.LOST
    async with store.write() as session:
        pipeline = Pipeline(name=name, created_at=origin, updated_at=origin)
        session.add(pipeline)
        session.add_all(
            User(name=f"{name} rep {index}", email=f"rep{index}@{name.lower()}.example", role=Role.REP,
                 capacity=truth.rep_capacity, created_at=origin)
            for index in range(truth.reps)
        )  # fmt: skip
        await session.flush()
        rep_ids = list(
            (
                await session.execute(select(User.id).where(User.email.like(f"%@{name.lower()}.example")))
            ).scalars()
        )
        rep_ids.sort()
        stages = [
            Stage(pipeline_id=pipeline.id, name=stage_name, position=position)
            for position, stage_name in enumerate(truth.stage_names)
        ]
        session.add_all(stages)
        await session.flush()
        stage_ids = [stage.id for stage in stages]

        keep = np.nonzero(lives.created <= until)[0]
        lead_rows, histories = [], []
        for index in keep:
            entered = [i for i in range(len(stage_ids)) if lives.enter[index, i] <= until]
            stage = entered[-1]
            closed_day = float(lives.closed[index])
            is_closed = closed_day <= until
            status = (WON if lives.won[index] else LOST) if is_closed else OPEN
            lead_rows.append(
                {
                    "pipeline_id": pipeline.id,
                    "stage_id": stage_ids[stage],
                    "title": f"Lead {index}",
                    "source": truth.sources[lives.source[index]].name if truth.sources else "",
                    "owner_id": rep_ids[lives.owner[index] % len(rep_ids)] if truth.rep_strengths else None,
                    "value_cents": round(float(lives.value[index]) * 100),
                    "status": status,
                    "created_at": _at(origin, lives.created[index]),
                    "updated_at": _at(origin, closed_day if is_closed else lives.enter[index, stage]),
                    "closed_at": _at(origin, closed_day) if is_closed else None,
                    "stage_entered_at": _at(origin, lives.enter[index, stage]),
                }
            )
            rows: list[tuple[int | None, int, LeadStatus | None, LeadStatus, float]]
            rows = [(None, stage_ids[0], None, OPEN, float(lives.created[index]))]
            rows += [
                (stage_ids[i - 1], stage_ids[i], OPEN, OPEN, float(lives.enter[index, i]))
                for i in entered[1:]
            ]
            if is_closed:
                rows.append((stage_ids[stage], stage_ids[stage], OPEN, status, closed_day))
            histories.append(rows)
        if not lead_rows:
            return pipeline.id
        result = await session.execute(
            insert(Lead).returning(Lead.id, sort_by_parameter_order=True), lead_rows
        )
        lead_ids = list(result.scalars())
        history_rows = [
            {
                "lead_id": lead_id,
                "pipeline_id": pipeline.id,
                "from_stage_id": from_stage,
                "to_stage_id": to_stage,
                "from_status": from_status,
                "to_status": to_status,
                "changed_at": _at(origin, day),
            }
            for lead_id, rows in zip(lead_ids, histories, strict=True)
            for from_stage, to_stage, from_status, to_status, day in rows
        ]
        await session.execute(insert(StageHistory), history_rows)
        # The stays and daily totals every writer keeps beside history (metrics and calibration read them).
        await derive_stays(session, lead_ids=lead_ids)
        return pipeline.id
