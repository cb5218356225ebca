"""Forecast questions over a pipeline: calibrate from its history, then simulate in the pool.

Three interactive questions, each answered within about a second at the default sizes:

- :func:`forecast`: revenue and wins over the horizon, P(goal), histogram, open vs new leads.
- :func:`leads_needed`: new leads (a batch today) for P(goal) ≥ confidence, beside the naive reverse
  funnel (goal ÷ mean deal ÷ win rate).
- :func:`what_if`: a paired comparison of the calibrated model with changed conversions, times in stage
  or reps (common random numbers, so the difference reflects only the change).

As of now (no ``as_of``), the questions take the pool's shared calibration (``cache``,
read from the kept totals by ``fast``) and share equal simulations (``question_shared``); with
an ``as_of`` they calibrate by the reference reading of the history.

Money crosses this module in cents (``goal_cents``) and leaves in the pipeline currency, as pipesim works.
Bigger runs go through simulation jobs (``jobs``), which share the checks here. Like
``calibration``, this module may import pipesim; the rest of pipegraph reaches it only through these two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import pipesim
from pipegraph.db.models import User
from pipegraph.db.types import utcnow
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.forecasting.calibration import Calibration, CalibrationReport, calibrate
from pipegraph.services.simulation_pool import SimulationPool
from pipesim import segments

# Re-exported for the API layer, which never imports pipesim itself.
Forecast = pipesim.Forecast
LeadsNeeded = pipesim.LeadsNeeded
Comparison = pipesim.Comparison
Summary = pipesim.Summary
Estimate = pipesim.Estimate

DEFAULT_TRIALS = 2_000
MAX_INTERACTIVE_TRIALS = 20_000  # vectorised; about a second on one core
# Calibrated models have reps without stage work, so rep changes run on pipesim's queue engine:
# a few times slower per trial than the vectorised one, hundreds of times faster than SimPy.
MAX_INTERACTIVE_CAPACITY_TRIALS = 5_000
MAX_JOB_TRIALS = 2_000_000
MAX_HORIZON_DAYS = 3_650


@dataclass(frozen=True)
class Change:
    """One what-if change. Exactly one of the values is set; stage changes name a stage."""

    stage_id: int | None = None
    conversion: float | None = None  # new mean conversion of the stage, same weight of evidence
    days_factor: float | None = None  # multiplies the stage's time in stage
    reps_delta: int | None = None  # reps added (or removed, negative)
    shift_fraction: float | None = None  # share of one source's new leads that come from another
    shift_from_source: str | None = None
    shift_to_source: str | None = None
    rep_leaves: int | None = None  # a user's id: their new leads spread, their open leads pooled

    @property
    def by_segment(self) -> bool:
        return self.shift_fraction is not None or self.rep_leaves is not None


@dataclass(frozen=True)
class ForecastAnswer:
    forecast: pipesim.Forecast
    report: CalibrationReport


@dataclass(frozen=True)
class LeadsNeededAnswer:
    answer: pipesim.LeadsNeeded
    report: CalibrationReport
    horizon_days: float

    @property
    def per_week(self) -> float:
        return self.answer.leads * 7 / self.horizon_days

    @property
    def naive_per_week(self) -> float:
        return self.answer.naive * 7 / self.horizon_days


@dataclass(frozen=True)
class WhatIfAnswer:
    comparison: pipesim.Comparison
    report: CalibrationReport
    changes: tuple[str, ...]  # what was changed, in words
    horizon_days: float


def check_sizes(*, horizon_days: float, trials: int, seed: int, limit: int, prefix: str = "") -> None:
    if not (0 < horizon_days <= MAX_HORIZON_DAYS and math.isfinite(horizon_days)):
        raise ValidationError(
            f"must be between 1 and {MAX_HORIZON_DAYS} days, got {horizon_days}", field=f"{prefix}horizonDays"
        )
    if not 2 <= trials <= limit:
        hint = " (bigger runs: startSimulation)" if limit < MAX_JOB_TRIALS else ""
        raise ValidationError(f"must be between 2 and {limit}{hint}, got {trials}", field=f"{prefix}trials")
    if not 0 <= seed < 2**63:
        raise ValidationError(f"must be a whole number >= 0, got {seed}", field=f"{prefix}seed")


def check_goal(goal_cents: int | None, *, required: bool, prefix: str = "") -> float | None:
    if goal_cents is None:
        if required:
            raise ValidationError("is required", field=f"{prefix}goal")
        return None
    if goal_cents <= 0:
        raise ValidationError(f"must be more than 0, got {goal_cents / 100:.2f}", field=f"{prefix}goal")
    return goal_cents / 100


def check_confidence(confidence: float, prefix: str = "") -> None:
    if not 0 < confidence < 1:
        raise ValidationError(
            f"must be strictly between 0 and 1, got {confidence}", field=f"{prefix}confidence"
        )


async def _calibrated(
    session: AsyncSession,
    pool: SimulationPool,
    pipeline_id: int,
    horizon_days: float,
    as_of: datetime | None,
    capacity: bool,
    segmented: bool = False,
) -> Calibration:
    """As of now: the pool's shared calibration (read from the kept totals); else the reference."""
    if as_of is None:
        return await pool.calibrations.calibration(
            session,
            pipeline_id=pipeline_id,
            horizon_days=horizon_days,
            with_capacity=capacity,
            segments=segmented,
        )
    if as_of.tzinfo is not None and as_of > utcnow():
        raise ValidationError("must not be in the future", field="asOf")
    return await calibrate(
        session,
        pipeline_id=pipeline_id,
        horizon_days=horizon_days,
        as_of=as_of,
        with_capacity=capacity,
        segments=segmented,
    )


async def forecast(
    session: AsyncSession,
    pool: SimulationPool,
    *,
    pipeline_id: int,
    horizon_days: float,
    goal_cents: int | None = None,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    as_of: datetime | None = None,
) -> ForecastAnswer:
    check_sizes(horizon_days=horizon_days, trials=trials, seed=seed, limit=MAX_INTERACTIVE_TRIALS)
    goal = check_goal(goal_cents, required=False)
    calibration = await _calibrated(session, pool, pipeline_id, horizon_days, as_of, capacity=False)
    result = await pool.question_shared(pipesim.forecast, calibration.model, trials, seed, goal=goal)
    return ForecastAnswer(result, calibration.report)


async def leads_needed(
    session: AsyncSession,
    pool: SimulationPool,
    *,
    pipeline_id: int,
    horizon_days: float,
    goal_cents: int,
    confidence: float = 0.9,
    trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    as_of: datetime | None = None,
) -> LeadsNeededAnswer:
    check_sizes(horizon_days=horizon_days, trials=trials, seed=seed, limit=MAX_INTERACTIVE_TRIALS)
    goal = check_goal(goal_cents, required=True)
    assert goal is not None
    check_confidence(confidence)
    calibration = await _calibrated(session, pool, pipeline_id, horizon_days, as_of, capacity=False)
    # New leads as one batch today, on top of the open ones: the arrival rate is what is being chosen.
    model = calibration.model.with_new_leads(0)
    try:
        answer = await pool.question_shared(pipesim.leads_needed, model, goal, confidence, trials, seed)
    except pipesim.QuestionError as error:
        raise ValidationError(str(error).removeprefix("goal: "), field="goal") from None
    return LeadsNeededAnswer(answer, calibration.report, horizon_days=horizon_days)


_SEGMENT_FIELDS = {
    "from_source": "shiftFromSource",
    "to_source": "shiftToSource",
    "fraction": "shiftFraction",
    "owner": "repLeaves",
}


def _segment_change(
    model: pipesim.Model, change: Change, where: str, owners: dict[int, str]
) -> tuple[pipesim.Model, str]:
    """A what-if by segment (``pipesim.segments``), its refusals naming the input's field."""
    try:
        if change.shift_fraction is not None:
            source, target = change.shift_from_source or "", change.shift_to_source or ""
            variant = segments.shift_source(model, source, target, change.shift_fraction)
            return variant, f"{change.shift_fraction:.0%} of new {source} leads come from {target} instead"
        assert change.rep_leaves is not None
        email = owners.get(change.rep_leaves)
        if email is None:
            raise NotFoundError("no such user", field=f"{where}.repLeaves")
        return segments.without_owner(model, email), f"{email} leaves: new leads spread, open leads pooled"
    except pipesim.QuestionError as error:
        name, _, message = str(error).partition(": ")
        raise ValidationError(message, field=f"{where}.{_SEGMENT_FIELDS.get(name, name)}") from None


def apply_changes(
    model: pipesim.Model,
    report: CalibrationReport,
    changes: list[Change],
    owners: dict[int, str] | None = None,
) -> tuple[pipesim.Model, tuple[str, ...]]:
    """The variant model and each change in words; field paths name the change at fault. ``owners``
    maps user ids to the emails segments are keyed by (for ``repLeaves``)."""
    owners = owners or {}
    by_id = {fit.stage_id: index for index, fit in enumerate(report.stages)}
    described: list[str] = []
    variant = model
    for index, change in enumerate(changes):
        where = f"changes[{index}]"
        values = [
            change.conversion,
            change.days_factor,
            change.reps_delta,
            change.shift_fraction,
            change.rep_leaves,
        ]
        if sum(value is not None for value in values) != 1:
            raise ValidationError(
                "set exactly one of conversion, daysFactor, repsDelta, shiftFraction, repLeaves", field=where
            )
        if change.by_segment:
            variant, said = _segment_change(variant, change, where, owners)
            described.append(said)
            continue
        if change.reps_delta is not None:
            if change.stage_id is not None:
                raise ValidationError("a reps change applies to the whole team; omit stageId", field=where)
            reps = variant.reps
            assert reps is not None  # the base model has capacity whenever reps change
            count = reps.count + change.reps_delta
            if count < 1:
                raise ValidationError(
                    f"leaves {count} reps; at least one is needed", field=f"{where}.repsDelta"
                )
            variant = replace(variant, reps=replace(reps, count=count))
            described.append(f"reps {reps.count} → {count}")
            continue
        if change.stage_id is None:
            raise ValidationError("a stage change needs stageId", field=f"{where}.stageId")
        if change.stage_id not in by_id:
            raise NotFoundError("not a current sales stage of this pipeline", field=f"{where}.stageId")
        position = by_id[change.stage_id]
        stage = variant.stages[position]
        if change.conversion is not None:
            if not 0 < change.conversion < 1:
                raise ValidationError(
                    f"must be strictly between 0 and 1, got {change.conversion}", field=f"{where}.conversion"
                )
            old = stage.conversion
            weight = old.alpha + old.beta if isinstance(old, pipesim.BetaProbability) else 1e6
            conversion = pipesim.BetaProbability(change.conversion * weight, (1 - change.conversion) * weight)
            variant = variant.replace_stage(position, conversion=conversion)
            described.append(
                f"{stage.name}: conversion {stage.conversion.mean:.3f} → {change.conversion:.3f}"
            )
        else:
            factor = change.days_factor
            assert factor is not None
            if not (0 < factor <= 100 and math.isfinite(factor)):
                raise ValidationError(f"must be in (0, 100], got {factor}", field=f"{where}.daysFactor")
            variant = variant.replace_stage(position, time_in_stage=stage.time_in_stage.scaled(factor))
            described.append(
                f"{stage.name}: time in stage {stage.time_in_stage.mean:.1f} → "
                f"{stage.time_in_stage.mean * factor:.1f} days"
            )
    return variant, tuple(described)


async def what_if(
    session: AsyncSession,
    pool: SimulationPool,
    *,
    pipeline_id: int,
    horizon_days: float,
    changes: list[Change],
    goal_cents: int | None = None,
    trials: int | None = None,
    seed: int = 0,
    as_of: datetime | None = None,
) -> WhatIfAnswer:
    capacity = any(change.reps_delta is not None for change in changes)
    limit = MAX_INTERACTIVE_CAPACITY_TRIALS if capacity else MAX_INTERACTIVE_TRIALS
    trials = trials if trials is not None else min(DEFAULT_TRIALS, limit)
    check_sizes(horizon_days=horizon_days, trials=trials, seed=seed, limit=limit)
    goal = check_goal(goal_cents, required=False)
    if not changes:
        raise ValidationError("needs at least one change", field="changes")
    segmented = any(change.by_segment for change in changes)
    calibration = await _calibrated(
        session, pool, pipeline_id, horizon_days, as_of, capacity=capacity, segmented=segmented
    )
    if capacity and calibration.model.reps is None:
        raise ValidationError("the pipeline has no active reps with capacity to change", field="changes")
    leaving = [change.rep_leaves for change in changes if change.rep_leaves is not None]
    owners: dict[int, str] = {}
    if leaving:
        rows = await session.execute(select(User.id, User.email).where(User.id.in_(leaving)))
        owners = {int(user_id): str(email) for user_id, email in rows.all()}
    variant, described = apply_changes(calibration.model, calibration.report, changes, owners)
    comparison = await pool.question_shared(
        pipesim.compare, calibration.model, variant, trials, seed, goal=goal
    )
    return WhatIfAnswer(comparison, calibration.report, described, horizon_days)


MAX_REPS_ADDED = 10
CAPACITY_TRIALS = 1_000  # per rep count: the curve runs 1 + repsAdded simulations on the same leads


@dataclass(frozen=True)
class CapacityAnswer:
    plan: pipesim.CapacityPlan
    report: CalibrationReport
    horizon_days: float
    reps: int  # reps in the calibrated model, before any are added


async def capacity_plan(
    session: AsyncSession,
    pool: SimulationPool,
    *,
    pipeline_id: int,
    horizon_days: float,
    reps_added: int = 5,
    goal_cents: int | None = None,
    trials: int = CAPACITY_TRIALS,
    seed: int = 0,
    as_of: datetime | None = None,
) -> CapacityAnswer:
    """The capacity curve of the calibrated model: 0..``reps_added`` reps added, on common random numbers."""
    check_sizes(horizon_days=horizon_days, trials=trials, seed=seed, limit=MAX_INTERACTIVE_CAPACITY_TRIALS)
    if not 1 <= reps_added <= MAX_REPS_ADDED:
        raise ValidationError(f"must be between 1 and {MAX_REPS_ADDED}, got {reps_added}", field="repsAdded")
    goal = check_goal(goal_cents, required=False)
    calibration = await _calibrated(session, pool, pipeline_id, horizon_days, as_of, capacity=True)
    model = calibration.model
    if model.reps is None:
        raise ValidationError("the pipeline has no active reps with capacity to plan", field="pipelineId")
    plan = await pool.question_shared(
        pipesim.capacity, model, tuple(range(reps_added + 1)), trials, seed, goal=goal
    )
    return CapacityAnswer(plan, calibration.report, horizon_days, model.reps.reps)
