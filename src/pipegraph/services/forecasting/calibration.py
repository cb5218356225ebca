"""Calibration: a :class:`pipesim.Model` from a pipeline's own stage history.

This is the one module where pipegraph meets pipesim. Everything is measured as of a cut-off ``as_of``
(default: now); history after it is ignored, so a backtest can calibrate in the past.

Stays. A *stay* starts with a history row that leaves a lead OPEN in one of the pipeline's current sales
stages (its creation, a move or a reopen) and ends with the lead's next row. A stay with no next row by
``as_of`` is still running: it is *censored*. How a stay ends decides what it counts as:

- advance: the next row moves the lead to a later stage, or wins it. Stages jumped over (a skip, or a
  win before the last stage) count as passed for their conversion, but add no time: nothing was
  observed about how long a lead stays there.
- loss: the next row is LOST. A reopen later starts a new stay; the loss still counts.
- backward move (to an earlier or the same stage): neither advance nor loss. Its days count as exposure
  with no exit, like a censored stay, and the lead is counted again where it lands.

Parameters, each with the count of history behind it in the :class:`CalibrationReport`:

- Conversion of stage i: ``Beta(1 + advances, 1 + losses)``, the posterior of a uniform prior. Leads
  still in the stage are neither. With no history it is the prior itself (mean 1/2, wide).
- Time in stage: exponential, fitted with right-censoring; where the stage's latest stays show another
  family (Weibull, log-normal, gamma) with an AIC lower by at least ``AIC_MARGIN`` (the exponential
  is nested in two of them, so a bare AIC win is often chance), that family instead
  (``forecasting/durations.py``).
  For the exponential: advances and losses are competing exits with
  constant hazards, so the maximum-likelihood mean is ``exposure / exits`` where exposure sums the days
  of every stay, completed or still running. A naive mean of completed stays only (also reported) is
  biased low, because the long stays are the ones still running. With constant hazards the time to an
  advance, given an advance, has the same law as the time to any exit, which is what pipesim's "time in
  stage, then convert" needs. Only sums reach Python, so memory is flat at any history size. Fewer than
  ``MIN_EXITS`` exits: the stage's target days, else ``PRIOR_STAGE_DAYS``. Where the latest stays show
  that advances and losses take different times (AIC, ``AIC_MARGIN``; ``pipesim.competing``), the
  stage's time is the time to advance and its conversion counts each running stay by its odds of
  advancing (see ``_with_outcomes``).
- Deal size: log-normal, maximum likelihood on the values of the latest ``MAX_DEAL_SAMPLE`` wins (a
  bounded sample; wins are a small share of leads). Fewer than ``MIN_WINS`` wins: a log-normal with the
  mean value of the pipeline's leads (else ``PRIOR_DEAL_SIZE``) and a coefficient of variation of 1.
- Arrivals: Poisson at ``created / window days`` over the last ``window_days`` before ``as_of`` (shorter
  when the pipeline is younger). Leads created straight into a later stage count as arrivals at the
  first stage. Fewer than ``MIN_ARRIVALS``: rate 0 (no new leads assumed). Where the window's creations
  show a weekday profile or a trend (read over up to a year), the model carries them, and the trend's
  standard error widens the rate's (``forecasting/arrivals.py``).
- Parameter uncertainty (``parameter_uncertainty``): each fitted time in stage, the deal size and the
  arrival rate carry the sd of the log of their scale, ``SE(mean) / mean`` by the delta method, so each
  trial draws its own parameters as the conversions already do; parameters from the prior carry
  ``PRIOR_UNCERTAINTY``.
- Reps: active users with role REP and their mean capacity. They enter the model only on request
  (``with_capacity``), because pipesim then holds a rep slot for every open lead, and a real pipeline
  often holds more stale open leads than its nominal capacity.
- Open leads: the censored stays at ``as_of``, grouped by stage, value band (ratio
  ``VALUE_BAND_RATIO``) and age band (doubling: a lead's remaining time depends on its age in every
  family but the exponential, so ages a cohort averages stay within a factor 2) into cohorts with their
  mean age in stage and mean value; leads without a value draw from the deal size.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Float, Integer, String, and_, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from pipegraph.db.models import Lead, LeadStatus, Pipeline, Role, Stage, StageHistory, User
from pipegraph.db.types import utcnow
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.forecasting import segments as segment_fit
from pipegraph.services.forecasting.arrivals import (
    TREND_WINDOW_DAYS,
    ArrivalShape,
    creation_counts,
    fit_counts,
)
from pipegraph.services.forecasting.durations import (
    StaySample,
    fit_stage_durations,
    fit_stage_outcomes,
    stay_samples,
    survival_curves,
)
from pipegraph.services.metrics_sql import at, days_between
from pipesim import Arrivals, BetaProbability, Exponential, LogNormal, Model, OpenLeads, Reps, Segment
from pipesim import Stage as SimStage
from pipesim.competing import CompetingFit
from pipesim.distributions import Distribution
from pipesim.fitting import DurationFit, Family
from pipesim.survival import SurvivalPoint

MIN_EXITS = 5  # exits a stage needs before its time in stage is fitted rather than taken from the prior
MIN_WINS = 5  # wins needed to fit the deal size
MIN_ARRIVALS = 3  # creations needed in the window to fit the arrival rate
PRIOR_STAGE_DAYS = 14.0  # time-in-stage prior for a stage without a target
PRIOR_DEAL_SIZE = 1_000.0  # deal-size prior (currency units) for a pipeline without any lead value
PRIOR_CONVERSION = (1.0, 1.0)  # Beta prior of every conversion: uniform
MAX_DEAL_SAMPLE = 20_000  # latest wins used for the deal size
DEFAULT_WINDOW_DAYS = 90.0  # arrival-rate window
VALUE_BAND_RATIO = 2.0  # open-lead cohorts: values within a band differ by at most this factor
AIC_MARGIN = 4.0  # another family replaces the exponential only with considerably more support
MIN_STAGE_DAYS = 1.0 / 24  # an exponential needs a positive mean; an hour is "instant" for a pipeline
PRIOR_UNCERTAINTY = 0.5  # sd of the log of a parameter taken from the prior: about ×/÷ 1.65
WON_POSITION = 1_000_000  # target position of a win: beyond every stage
_OPEN, _WON, _LOST = LeadStatus.OPEN.value, LeadStatus.WON.value, LeadStatus.LOST.value


class Source(enum.StrEnum):
    """Where a parameter came from: the history, or the stated prior (too little history)."""

    HISTORY = "HISTORY"
    PRIOR = "PRIOR"


@dataclass(frozen=True)
class StageFit:
    name: str
    stage_id: int
    advances: int  # stays that moved forward or won (skipped-through passes included)
    passed_through: int  # of the advances: skips over this stage, no time observed
    losses: int
    moved_back: int  # stays that ended moving backwards: censored, neither advance nor loss
    still_open: int  # stays still running at ``as_of``: censored
    exposure_days: float  # days in the stage over all stays, completed or not
    exits: int  # advances and losses that ended a stay here (time events)
    conversion: BetaProbability
    conversion_sd: float  # posterior standard deviation
    conversion_source: Source
    mean_days: float  # mean time in stage of the model's distribution
    mean_days_se: float | None  # asymptotic standard error of the fitted mean; None for the prior
    naive_mean_days: float | None  # mean of completed stays only, biased low; for comparison
    time_source: Source
    time_in_stage: Distribution = field(default_factory=lambda: Exponential(PRIOR_STAGE_DAYS))
    time_family: str = "exponential"
    family_fits: DurationFit | None = None  # every family's fit on the latest stays, best first
    survival: tuple[SurvivalPoint, ...] = ()  # Kaplan–Meier of the latest stays (thinned)
    loss_time: Distribution | None = None  # the time to a loss, where timed apart from advances

    @property
    def loss_mean_days(self) -> float | None:
        return None if self.loss_time is None else self.loss_time.mean


@dataclass(frozen=True)
class DealSizeFit:
    wins: int  # won values in the sample
    mean: float
    sd: float
    mean_se: float | None
    source: Source


@dataclass(frozen=True)
class ArrivalFit:
    created: int
    window_days: float
    rate_per_day: float
    rate_se: float | None
    source: Source
    shape: ArrivalShape | None = None  # weekday profile and trend, where the history supports them


@dataclass(frozen=True)
class RepsFit:
    count: int
    total_capacity: int
    leads_each: int  # mean capacity, rounded
    in_model: bool


@dataclass(frozen=True)
class CalibrationReport:
    pipeline_id: int
    pipeline_name: str
    currency: str
    as_of: datetime
    stages: tuple[StageFit, ...]
    deal_size: DealSizeFit
    arrivals: ArrivalFit
    reps: RepsFit
    open_leads: int
    open_cohorts: int
    notes: tuple[str, ...] = field(default=())
    segments: tuple[tuple[Segment, float], ...] = ()  # each segment and its win probability


@dataclass(frozen=True)
class Calibration:
    model: Model
    report: CalibrationReport

    def loss_time(self, stage: str) -> Distribution | None:
        """The stage's time to a loss where it was timed apart from the time to advance (the model's
        time in stage), else None: what an open lead's odds of advancing given its age need."""
        return next((fit.loss_time for fit in self.report.stages if fit.name == stage), None)


# --- queries ------------------------------------------------------------------------------------------


def _history(pipeline_id: int, as_of: datetime) -> Any:
    """History up to ``as_of``, each row with its lead's next row (if any)."""
    h = StageHistory
    window: dict[str, Any] = {"partition_by": h.lead_id, "order_by": (h.changed_at, h.id)}
    return (
        select(
            h.lead_id,
            h.to_stage_id.label("stage_id"),
            cast(h.to_status, String).label("status"),
            h.changed_at,
            func.lead(h.changed_at).over(**window).label("next_at"),
            func.lead(h.to_stage_id, type_=Integer).over(**window).label("next_stage_id"),
            func.lead(cast(h.to_status, String), type_=String).over(**window).label("next_status"),
        )
        .where(h.pipeline_id == pipeline_id, h.changed_at <= at(as_of))
        .cte("history")
    )


async def _stage_rows(session: AsyncSession, pipeline_id: int) -> list[Any]:
    statement = (
        select(Stage.id, Stage.name, Stage.position, Stage.target_days)
        .where(
            Stage.pipeline_id == pipeline_id,
            Stage.removed_at.is_(None),
            Stage.is_post_sale.is_(False),
        )
        .order_by(Stage.position, Stage.id)
    )
    return list((await session.execute(statement)).all())


def segment_key(by: str | None) -> Any:
    """The lead column a segment is read from: its source, its owner's email, or none (one pool)."""
    if by == "source":
        return Lead.source
    if by == "owner":
        return select(User.email).where(User.id == Lead.owner_id).correlate(Lead).scalar_subquery()
    return literal("")


async def _stay_outcomes(
    session: AsyncSession, dialect: str, pipeline_id: int, as_of: datetime, by: str | None = None
) -> list[Any]:
    """Per stage, per way a stay ended (and where to): count and days. At most stages² rows (times the
    segments of ``by``, when given: each row then carries its ``segment``)."""
    w = _history(pipeline_id, as_of)
    stage, other = aliased(Stage), aliased(Stage)
    kind = case(
        (w.c.next_at.is_(None), literal("open")),
        (w.c.next_status == _LOST, literal("lost")),
        (w.c.next_status == _WON, literal("won")),
        (other.position > stage.position, literal("advanced")),
        else_=literal("back"),
    )
    target = case(
        (w.c.next_status == _WON, literal(WON_POSITION)),
        (w.c.next_status == _OPEN, other.position),
        else_=literal(None, Integer),
    )
    days = days_between(dialect, w.c.changed_at, func.coalesce(w.c.next_at, at(as_of)))
    columns = [stage.id.label("stage_id"), kind.label("kind"), target.label("target"), days.label("days")]
    if by is not None:
        columns.append(func.coalesce(segment_key(by), "").label("segment"))
    joined = select(*columns).select_from(w).join(stage, stage.id == w.c.stage_id)
    if by is not None:
        joined = joined.join(Lead, Lead.id == w.c.lead_id)
    stays = (
        joined.outerjoin(other, other.id == w.c.next_stage_id)
        .where(
            w.c.status == _OPEN,
            stage.is_post_sale.is_(False),
            stage.removed_at.is_(None),
        )
        .subquery("stays")
    )
    keys = [stays.c.stage_id, stays.c.kind, stays.c.target]
    if by is not None:
        keys.append(stays.c.segment)
    statement = select(
        *keys,
        func.count().label("n"),
        cast(func.coalesce(func.sum(stays.c.days), 0.0), Float).label("days"),
    ).group_by(*keys)
    return list((await session.execute(statement)).all())


def value_band(value: Any) -> Any:
    """0 for no value, else 1 + the number of band edges at or below the value."""
    edges, edge = [], 100.0  # one currency unit in cents
    while edge < 1e15:
        edges.append(int(edge))
        edge *= VALUE_BAND_RATIO
    whens = [(value <= 0, literal(0))]
    whens += [(value < limit, literal(band)) for band, limit in enumerate(edges, start=1)]
    return case(*whens, else_=literal(len(edges) + 1))


def age_band(age: Any) -> Any:
    """0 for less than a day in the stage, else 1 + the number of doubling edges at or below the age."""
    edges = [2.0**k for k in range(11)]  # 1 day … 1024 days
    whens = [(age < edge, literal(band)) for band, edge in enumerate(edges)]
    return case(*whens, else_=literal(len(edges)))


async def _open_cohorts(
    session: AsyncSession, dialect: str, pipeline_id: int, as_of: datetime, by_segment: bool = False
) -> list[Any]:
    """Open stays by stage, value band and age band (and by source and owner: ``by_segment``)."""
    w = _history(pipeline_id, as_of)
    stage = aliased(Stage)
    band = value_band(Lead.value_cents)
    age = days_between(dialect, w.c.changed_at, at(as_of))
    extra = (
        [
            func.coalesce(segment_key("source"), "").label("source"),
            func.coalesce(segment_key("owner"), "").label("owner"),
        ]
        if by_segment
        else []
    )
    open_stays = (
        select(
            stage.id.label("stage_id"),
            band.label("band"),
            Lead.value_cents.label("value_cents"),
            age.label("age"),
            age_band(age).label("age_band"),
            *extra,
        )
        .select_from(w)
        .join(stage, stage.id == w.c.stage_id)
        .join(Lead, Lead.id == w.c.lead_id)
        .where(
            w.c.status == _OPEN,
            w.c.next_at.is_(None),
            stage.is_post_sale.is_(False),
            stage.removed_at.is_(None),
        )
        .subquery("open_stays")
    )
    keys = [open_stays.c.stage_id, open_stays.c.band, open_stays.c.age_band]
    if by_segment:
        keys += [open_stays.c.source, open_stays.c.owner]
    statement = (
        select(
            *keys,
            func.count().label("n"),
            cast(func.avg(open_stays.c.value_cents), Float).label("value_cents"),
            cast(func.avg(open_stays.c.age), Float).label("age"),
        )
        .group_by(*keys)
        .order_by(*keys)
    )
    return list((await session.execute(statement)).all())


async def _arrivals(
    session: AsyncSession, pipeline_id: int, as_of: datetime, window_days: float
) -> ArrivalFit:
    h = StageHistory
    start = as_of - timedelta(days=window_days)
    created = and_(h.pipeline_id == pipeline_id, h.from_stage_id.is_(None), h.changed_at <= at(as_of))
    statement = select(
        func.coalesce(func.sum(case((h.changed_at >= at(start), 1), else_=0)), 0).label("n"),
        func.min(h.changed_at).label("first"),
    ).where(created)
    row = (await session.execute(statement)).one()
    return arrival_fit(int(row.n), row.first, as_of, window_days)


def arrival_fit(count: int, first: datetime | None, as_of: datetime, window_days: float) -> ArrivalFit:
    """The rate from ``count`` creations in the window; ``first`` (the first ever) shortens the window."""
    start = as_of - timedelta(days=window_days)
    window = window_days
    if first is not None and first > start:
        window = max((as_of - first).total_seconds() / 86_400, 1.0)
    if count < MIN_ARRIVALS:
        return ArrivalFit(count, window, 0.0, None, Source.PRIOR)
    return ArrivalFit(count, window, count / window, math.sqrt(count) / window, Source.HISTORY)


async def _won_values(session: AsyncSession, pipeline_id: int, as_of: datetime) -> list[int]:
    h = StageHistory
    statement = (
        select(Lead.value_cents)
        .select_from(h)
        .join(Lead, Lead.id == h.lead_id)
        .where(
            h.pipeline_id == pipeline_id,
            h.from_status == LeadStatus.OPEN,
            h.to_status == LeadStatus.WON,
            h.changed_at <= at(as_of),
            Lead.value_cents > 0,
        )
        .order_by(h.changed_at.desc(), h.id.desc())
        .limit(MAX_DEAL_SAMPLE)
    )
    return [int(value) for value in (await session.execute(statement)).scalars()]


async def _mean_lead_value(session: AsyncSession, pipeline_id: int) -> float | None:
    statement = select(cast(func.avg(Lead.value_cents), Float)).where(
        Lead.pipeline_id == pipeline_id, Lead.value_cents > 0
    )
    mean = (await session.execute(statement)).scalar()
    return None if mean is None else float(mean) / 100


async def _reps(session: AsyncSession) -> tuple[int, int]:
    statement = select(func.count(), func.coalesce(func.sum(User.capacity), 0)).where(
        User.active.is_(True), User.role == Role.REP
    )
    count, capacity = (await session.execute(statement)).one()
    return int(count), int(capacity)


@dataclass(frozen=True)
class HistoryReads:
    """What the fit needs from a pipeline's history up to ``as_of``, however it was read."""

    outcomes: list[Any]  # stage_id, kind, target, n, days: stays by stage and how they ended
    won_cents: list[int]  # values of the latest wins, at most MAX_DEAL_SAMPLE
    arrivals: ArrivalFit
    cohorts: list[Any]  # stage_id, band, n, value_cents, age: open stays by stage and value band


class HistoryReader(Protocol):
    def __call__(
        self, session: AsyncSession, dialect: str, pipeline_id: int, as_of: datetime, window_days: float
    ) -> Awaitable[HistoryReads]: ...


async def read_history(
    session: AsyncSession, dialect: str, pipeline_id: int, as_of: datetime, window_days: float
) -> HistoryReads:
    """The reference reading: every sum from the history rows themselves, paired by window functions."""
    return HistoryReads(
        outcomes=await _stay_outcomes(session, dialect, pipeline_id, as_of),
        won_cents=await _won_values(session, pipeline_id, as_of),
        arrivals=await _arrivals(session, pipeline_id, as_of, window_days),
        cohorts=await _open_cohorts(session, dialect, pipeline_id, as_of),
    )


# --- fitting ------------------------------------------------------------------------------------------


def _fit_deal_size(values_cents: list[int], fallback_mean: float | None) -> DealSizeFit:
    if len(values_cents) < MIN_WINS:
        mean = fallback_mean if fallback_mean is not None else PRIOR_DEAL_SIZE
        return DealSizeFit(len(values_cents), mean, mean, None, Source.PRIOR)
    logs = np.log(np.asarray(values_cents, dtype=np.float64) / 100)
    mu, sigma = float(np.mean(logs)), float(np.std(logs))  # maximum likelihood (ddof 0)
    mean = math.exp(mu + sigma**2 / 2)
    sd = mean * math.sqrt(math.expm1(sigma**2))
    # Delta method on mu and sigma² (independent, variances sigma²/n and 2 sigma⁴/n).
    n = len(values_cents)
    mean_se = mean * math.sqrt(sigma**2 / n + sigma**4 / (2 * n))
    return DealSizeFit(n, mean, max(sd, 1e-9 * mean), mean_se, Source.HISTORY)


@dataclass
class _Tally:
    advances: int = 0
    passed_through: int = 0
    losses: int = 0
    moved_back: int = 0
    still_open: int = 0
    exits: int = 0
    exposure_days: float = 0.0
    completed_days: float = 0.0


def _tally(stage_rows: list[Any], outcomes: list[Any]) -> dict[int, _Tally]:
    tallies = {row.id: _Tally() for row in stage_rows}
    position = {row.id: row.position for row in stage_rows}
    for row in outcomes:
        tally = tallies[row.stage_id]
        n, days = int(row.n), float(row.days)
        tally.exposure_days += days
        if row.kind == "open":
            tally.still_open += n
        elif row.kind == "back":
            tally.moved_back += n
        elif row.kind == "lost":
            tally.losses += n
            tally.exits += n
            tally.completed_days += days
        else:  # advanced or won, possibly past stages it never stayed in
            tally.advances += n
            tally.exits += n
            tally.completed_days += days
            for stage_id, skipped in tallies.items():
                if position[row.stage_id] < position[stage_id] < row.target:
                    skipped.advances += n
                    skipped.passed_through += n
    return tallies


def _fit_stage(row: Any, tally: _Tally) -> StageFit:
    alpha = PRIOR_CONVERSION[0] + tally.advances
    beta = PRIOR_CONVERSION[1] + tally.losses
    conversion = BetaProbability(alpha, beta)
    conversion_sd = math.sqrt(alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1)))
    decided = tally.advances + tally.losses
    naive = tally.completed_days / tally.exits if tally.exits else None
    if tally.exits >= MIN_EXITS:
        mean = max(tally.exposure_days / tally.exits, MIN_STAGE_DAYS)
        mean_se: float | None = mean / math.sqrt(tally.exits)
        time_source = Source.HISTORY
    else:
        mean = float(row.target_days) if row.target_days else PRIOR_STAGE_DAYS
        mean, mean_se, time_source = max(mean, MIN_STAGE_DAYS), None, Source.PRIOR
    return StageFit(
        name=row.name,
        stage_id=row.id,
        advances=tally.advances,
        passed_through=tally.passed_through,
        losses=tally.losses,
        moved_back=tally.moved_back,
        still_open=tally.still_open,
        exposure_days=tally.exposure_days,
        exits=tally.exits,
        conversion=conversion,
        conversion_sd=conversion_sd,
        conversion_source=Source.HISTORY if decided >= MIN_EXITS else Source.PRIOR,
        mean_days=mean,
        mean_days_se=mean_se,
        naive_mean_days=naive,
        time_source=time_source,
        time_in_stage=Exponential(mean),
    )


def _with_family(fit: StageFit, families: DurationFit | None) -> StageFit:
    """The stage's time in the family with the lowest AIC, when it is not the exponential."""
    if families is None or fit.time_source is Source.PRIOR:
        return fit
    best = families.best
    exponential = next(f for f in families.fits if f.family is Family.EXPONENTIAL)
    if best.family is Family.EXPONENTIAL or best.aic > exponential.aic - AIC_MARGIN:
        # The exponential from every stay's days beats the one from the latest stays.
        return replace(fit, family_fits=families)
    return replace(
        fit,
        time_in_stage=best.distribution,
        time_family=best.family.value,
        mean_days=max(best.distribution.mean, MIN_STAGE_DAYS),
        mean_days_se=best.mean_se,
        family_fits=families,
    )


def _with_outcomes(fit: StageFit, outcome: CompetingFit | None, sample: StaySample | None) -> StageFit:
    """Time in stage as the time to advance, timed apart from losses (``pipesim.competing``), and the
    conversion with each running stay counted by its chance to advance: where losers linger, the time
    to any exit is too long for the leads that win, and decided stays hold too few of the slow losers.
    Only where AIC prefers the separate times by ``AIC_MARGIN``: otherwise the shared time is surer."""
    if outcome is None or sample is None or fit.time_source is Source.PRIOR or outcome.aic_gain < AIC_MARGIN:
        return fit
    odds = float(np.sum(outcome.advance_odds(sample.running)))
    alpha = PRIOR_CONVERSION[0] + fit.advances + odds
    beta = PRIOR_CONVERSION[1] + fit.losses + len(sample.running) - odds
    return replace(
        fit,
        conversion=BetaProbability(alpha, beta),
        conversion_sd=math.sqrt(alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1))),
        time_in_stage=outcome.advance_time,
        mean_days=max(outcome.advance_time.mean, MIN_STAGE_DAYS),
        mean_days_se=outcome.advance_mean_se,
        loss_time=outcome.loss_time,
    )


async def _segments(
    session: AsyncSession,
    dialect: str,
    pipeline_id: int,
    as_of: datetime,
    window_days: float,
    stage_rows: list[Any],
    fits: tuple[StageFit, ...],
) -> tuple[tuple[Segment, ...], tuple[OpenLeads, ...]]:
    """The model's segments (``forecasting/segments.py``) and the open cohorts, each in its segment."""
    stage_ids = [row.id for row in stage_rows]

    async def rates(by: str) -> tuple[segment_fit.SegmentRates, int]:
        rows = await _stay_outcomes(session, dialect, pipeline_id, as_of, by=by)
        grouped: dict[str, list[Any]] = {}
        for row in rows:
            grouped.setdefault(str(row.segment), []).append(row)
        counts = {
            name: {sid: (t.advances, t.losses) for sid, t in _tally(stage_rows, part).items()}
            for name, part in grouped.items()
        }
        return segment_fit.pooled_by_stage(stage_ids, counts), len(grouped)

    by_source, _ = await rates("source")
    by_owner, owners = await rates("owner")
    arrivals = await segment_fit.arrivals_by_cell(session, pipeline_id, as_of, window_days, segment_key)
    open_rows = await _open_cohorts(session, dialect, pipeline_id, as_of, by_segment=True)
    with_owners = owners > 1
    won = await segment_fit.won_values_by_source(session, pipeline_id, as_of, MAX_DEAL_SAMPLE)
    deals = {
        source: deal
        for source, values in won.items()
        if (deal := segment_fit.lognormal_deal(values, MIN_WINS)) is not None
    }
    built = segment_fit.build_segments(
        tuple(fit.conversion for fit in fits),
        by_source,
        by_owner if with_owners else None,
        arrivals,
        {(str(row.source), str(row.owner)) for row in open_rows},
        deals,
    )
    names = {row.id: row.name for row in stage_rows}
    cohorts = tuple(
        OpenLeads(
            stage=names[row.stage_id],
            count=int(row.n),
            age_days=max(float(row.age or 0.0), 0.0),
            value=None if int(row.band) == 0 else float(row.value_cents) / 100,
            segment=segment_fit.cell_name(str(row.source), str(row.owner) if with_owners else None),
        )
        for row in open_rows
    )
    return built, cohorts


def _cohorts(stage_rows: list[Any], rows: list[Any]) -> tuple[OpenLeads, ...]:
    names = {row.id: row.name for row in stage_rows}
    return tuple(
        OpenLeads(
            stage=names[row.stage_id],
            count=int(row.n),
            age_days=max(float(row.age or 0.0), 0.0),
            value=None if int(row.band) == 0 else float(row.value_cents) / 100,
        )
        for row in rows
    )


def _log_sd(se: float | None, mean: float) -> float:
    """The sd of the log of a positive parameter from its standard error (delta method), capped."""
    if se is None or not mean > 0:
        return PRIOR_UNCERTAINTY
    return min(se / mean, PRIOR_UNCERTAINTY)


def _model_arrivals(fit: ArrivalFit, uncertainty: bool) -> Arrivals:
    spread = _log_sd(fit.rate_se, fit.rate_per_day) if uncertainty and fit.rate_per_day > 0 else 0.0
    shape = fit.shape
    if uncertainty and shape is not None:
        # Not knowing the trend: the horizon's rate is uncertain beyond the window's count.
        spread = min(math.hypot(spread, shape.log_rate_sd), PRIOR_UNCERTAINTY)
    if shape is None or (shape.weekday is None and shape.trend_per_day == 0.0):
        return Arrivals("poisson", rate_per_day=fit.rate_per_day, rate_uncertainty=spread)
    return Arrivals(
        "poisson",
        rate_per_day=shape.rate_per_day,
        weekday=shape.weekday,
        start_weekday=shape.start_weekday if shape.weekday is not None else 0,  # only a profile needs it
        trend_per_day=shape.trend_per_day,
        rate_uncertainty=spread,
    )


# --- the entry point ----------------------------------------------------------------------------------


async def pipeline_id_for_name(session: AsyncSession, name: str) -> int:
    found = (await session.execute(select(Pipeline.id).where(Pipeline.name == name))).scalar()
    if found is None:
        raise NotFoundError(f"no pipeline named {name!r}", field="pipeline")
    return int(found)


async def calibrate(
    session: AsyncSession,
    *,
    pipeline_id: int,
    horizon_days: float,
    as_of: datetime | None = None,
    window_days: float = DEFAULT_WINDOW_DAYS,
    with_capacity: bool = False,
    time_families: bool = True,
    parameter_uncertainty: bool = True,
    arrival_shape: bool = True,
    reader: HistoryReader | None = None,
    segments: bool = False,
) -> Calibration:
    """The calibrated model of a pipeline over ``horizon_days`` from ``as_of``, and what stands behind it.

    ``segments`` adds conversion by source and owner, their mix and deal sizes (``forecasting/segments.py``).
    ``reader`` reads the history's sums (default :func:`read_history`, which pairs history rows and
    serves any ``as_of``); ``fast`` passes one that reads the totals kept beside it."""
    if not (horizon_days > 0 and math.isfinite(horizon_days)):
        raise ValidationError(f"must be a finite number of days > 0, got {horizon_days}", field="horizonDays")
    if not (window_days > 0 and math.isfinite(window_days)):
        raise ValidationError(f"must be a finite number of days > 0, got {window_days}", field="windowDays")
    as_of = as_of if as_of is not None else utcnow()
    if as_of.tzinfo is None:
        raise ValidationError("must be timezone-aware", field="asOf")
    pipeline = (
        await session.execute(select(Pipeline.name, Pipeline.currency).where(Pipeline.id == pipeline_id))
    ).one_or_none()
    if pipeline is None:
        raise NotFoundError(f"no pipeline with id {pipeline_id}", field="pipelineId")
    dialect = session.get_bind().dialect.name
    stage_rows = await _stage_rows(session, pipeline_id)
    if not stage_rows:
        raise ValidationError("the pipeline has no sales stages to simulate", field="pipelineId")

    reads = await (reader or read_history)(session, dialect, pipeline_id, as_of, window_days)
    tallies = _tally(stage_rows, reads.outcomes)
    fits = tuple(_fit_stage(row, tallies[row.id]) for row in stage_rows)
    if time_families:
        positions = {row.id: row.position for row in stage_rows}
        samples = await stay_samples(session, pipeline_id, as_of, positions)
        families, curves = fit_stage_durations(samples), survival_curves(samples)
        fits = tuple(
            replace(_with_family(fit, families.get(fit.stage_id)), survival=curves.get(fit.stage_id, ()))
            for fit in fits
        )
        outcomes = fit_stage_outcomes(samples, {fit.stage_id: Family(fit.time_family) for fit in fits})
        fits = tuple(
            _with_outcomes(fit, outcomes.get(fit.stage_id), samples.get(fit.stage_id)) for fit in fits
        )
    won = reads.won_cents
    deal = _fit_deal_size(won, None if len(won) >= MIN_WINS else await _mean_lead_value(session, pipeline_id))
    arrivals = reads.arrivals
    if arrival_shape and arrivals.source is Source.HISTORY:
        span = max(window_days, TREND_WINDOW_DAYS)
        per_slot, first = await creation_counts(session, dialect, pipeline_id, as_of, span)
        shape = fit_counts(per_slot, first, as_of, span, horizon_days, level_days=window_days)
        arrivals = replace(arrivals, shape=shape)
    rep_count, capacity = await _reps(session)
    leads_each = max(round(capacity / rep_count), 1) if rep_count else 0
    in_model = with_capacity and rep_count > 0 and capacity > 0
    reps = RepsFit(rep_count, capacity, leads_each, in_model)
    cohorts = _cohorts(stage_rows, reads.cohorts)
    model_segments: tuple[Segment, ...] = ()
    if segments:
        model_segments, cohorts = await _segments(
            session, dialect, pipeline_id, as_of, window_days, stage_rows, fits
        )

    notes = [
        f"{fit.name}: conversion from the prior (only {fit.advances + fit.losses} decided stays)"
        for fit in fits
        if fit.conversion_source is Source.PRIOR
    ]
    notes += [
        f"{fit.name}: time in stage from the prior ({fit.mean_days:g} days; {fit.exits} exits)"
        for fit in fits
        if fit.time_source is Source.PRIOR
    ]
    if deal.source is Source.PRIOR:
        notes.append(f"deal size from the prior (mean {deal.mean:,.2f}; {deal.wins} wins)")
    if arrivals.source is Source.PRIOR:
        notes.append(f"no new leads assumed ({arrivals.created} created in {arrivals.window_days:g} days)")
    if with_capacity and not in_model:
        notes.append("capacity requested but there are no active reps with capacity")

    model = Model(
        stages=tuple(
            SimStage(
                name=fit.name,
                conversion=fit.conversion,
                time_in_stage=fit.time_in_stage,
                time_uncertainty=_log_sd(fit.mean_days_se, fit.mean_days) if parameter_uncertainty else 0.0,
            )
            for fit in fits
        ),
        deal_size=LogNormal(deal.mean, deal.sd),
        deal_size_uncertainty=_log_sd(deal.mean_se, deal.mean) if parameter_uncertainty else 0.0,
        arrivals=_model_arrivals(arrivals, parameter_uncertainty),
        horizon_days=float(horizon_days),
        reps=Reps(rep_count, leads_each) if in_model else None,
        open_leads=cohorts,
        currency=pipeline.currency,
        name=pipeline.name,
        segments=model_segments,
    )
    report = CalibrationReport(
        pipeline_id=pipeline_id,
        pipeline_name=pipeline.name,
        currency=pipeline.currency,
        as_of=as_of,
        stages=fits,
        deal_size=deal,
        arrivals=arrivals,
        reps=reps,
        open_leads=sum(cohort.count for cohort in cohorts),
        open_cohorts=len(cohorts),
        notes=tuple(notes),
        segments=tuple((segment, model.segment_win_probability(segment)) for segment in model.segments),
    )
    return Calibration(model=model, report=report)


def describe(report: CalibrationReport) -> list[str]:
    """What stands behind each parameter, one line each, for people reading an exported model."""
    lines = [f"{report.pipeline_name}: calibrated from stage history as of {report.as_of.isoformat()}"]
    for fit in report.stages:
        lines.append(
            f"{fit.name}: conversion {fit.conversion.mean:.3f} ± {fit.conversion_sd:.3f} "
            f"[{fit.conversion_source}: {fit.advances} advanced ({fit.passed_through} skipped through), "
            f"{fit.losses} lost]; {fit.mean_days:.1f} days in stage, {fit.time_family} "
            f"[{fit.time_source}: {fit.exits} exits, "
            f"{fit.still_open} still there, {fit.moved_back} moved back, {fit.exposure_days:.0f} days]"
        )
    deal, arrivals, reps = report.deal_size, report.arrivals, report.reps
    lines.append(f"deal size: mean {deal.mean:,.2f}, sd {deal.sd:,.2f} [{deal.source}: {deal.wins} wins]")
    lines.append(
        f"arrivals: {arrivals.rate_per_day:.3f} a day [{arrivals.source}: {arrivals.created} created "
        f"in {arrivals.window_days:g} days]"
    )
    lines.append(
        f"reps: {reps.count} with {reps.total_capacity} slots"
        + ("" if reps.in_model else " (not in the model: add a [reps] table to simulate capacity)")
    )
    lines.append(f"open leads: {report.open_leads} in {report.open_cohorts} cohorts")
    lines += [
        f"segment {segment.name}: {segment.share:.1%} of new leads, wins {win:.3f} of them"
        for segment, win in report.segments
    ]
    return lines + [f"note: {note}" for note in report.notes]


async def export_model(
    session: AsyncSession,
    *,
    pipeline_name: str,
    horizon_days: float,
    as_of: datetime | None = None,
    segments: bool = False,
) -> str:
    """The calibrated model as pipesim TOML, headed by comments that say what stands behind it;
    ``as_of`` calibrates on the history up to then (what the model would have been); ``segments`` adds
    conversion by source and owner."""
    pipeline_id = await pipeline_id_for_name(session, pipeline_name)
    result = await calibrate(
        session, pipeline_id=pipeline_id, horizon_days=horizon_days, as_of=as_of, segments=segments
    )
    header = "".join(f"# {line}\n" for line in describe(result.report))
    return header + "\n" + result.model.to_toml()
