"""Times in stage in the family the history shows: exponential, Weibull, log-normal or gamma.

Calibration's exponential comes from two sums (days in the stage, exits), so it costs nothing at any
history size; but real stays rarely have a constant hazard — a lead that has waited long is less likely
to move soon. This module reads each stage's latest ``MAX_STAYS`` stays from ``stage_stays`` (their
lengths, and whether each ended or is still running at ``as_of``), fits every family with right-censoring
(:mod:`pipesim.fitting`) and keeps the one with the lowest AIC.

A stay that ended moving backwards counts as running until then (censored), as in calibration. Advances
and losses are competing exits: the family describes the time to either, and the model then converts
with the stage's probability — exact for constant hazards, and the usual approximation otherwise.
Fewer than ``MIN_EXITS`` exits in the sample keeps the exponential.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import CompoundSelect, bindparam, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from pipegraph.db.models import LeadStatus, Stage, StageStay
from pipegraph.db.types import UTCDateTime
from pipesim.competing import CompetingFit, fit_competing
from pipesim.fitting import DurationFit, Family, fit_durations
from pipesim.survival import SurvivalPoint, kaplan_meier

MAX_STAYS = 1_000  # latest stays per stage read for the family fit: bounded memory and fit time
MIN_EXITS = 30  # exits a stage's sample needs before a family other than the exponential is fitted
MIN_OUTCOME_EXITS = 10  # advances, and losses, a stage's sample needs before they are timed apart
FITS_PER_DAY = 96.0  # stay lengths are fitted to the quarter hour (see ``_rounded``)
CURVE_POINTS = 40  # Kaplan–Meier points kept per stage: enough to draw, few enough to send


@dataclass(frozen=True)
class StaySample:
    exits: list[float]  # days of stays that ended (advance or loss)
    running: list[float]  # days of stays still running at ``as_of``, or that moved back (censored)
    losses: list[float] = field(default_factory=list)  # of the exits, those that ended in a loss
    advances: list[float] = field(default_factory=list)  # and those that advanced (or won)


async def stay_samples(
    session: AsyncSession, pipeline_id: int, as_of: datetime, stages: dict[int, int]
) -> dict[int, StaySample]:
    """Per stage (``stages``: id → position), the lengths of its latest ``MAX_STAYS`` open stays that
    started by ``as_of``. Each stage's rows are one backward range of the stays' entry index."""
    parameters: dict[str, object] = {"pipeline_id": pipeline_id, "as_of": as_of}
    parameters.update({f"stage_{index}": stage_id for index, stage_id in enumerate(stages)})
    samples: dict[int, StaySample] = {stage_id: StaySample([], []) for stage_id in stages}
    if not stages:
        return samples
    for row in (await session.execute(_samples_statement(len(stages)), parameters)).all():
        ended = row.left_at is not None and row.left_at <= as_of
        end = row.left_at if ended else as_of
        days = max((end - row.entered_at).total_seconds() / 86_400, 0.0)
        exited = ended and (
            row.next_status in (LeadStatus.WON, LeadStatus.LOST)
            or (row.next_position is not None and row.next_position > stages[row.stage_id])
        )
        sample = samples[row.stage_id]
        (sample.exits if exited else sample.running).append(days)
        if exited:
            (sample.losses if row.next_status == LeadStatus.LOST else sample.advances).append(days)
    return samples


@functools.lru_cache(maxsize=32)
def _samples_statement(stage_count: int) -> CompoundSelect[Any]:
    """The latest stays of ``stage_count`` stages, built once per count (bound: pipeline, as_of, stages)."""
    following = aliased(Stage)
    parts = [
        select(
            StageStay.stage_id,
            StageStay.entered_at,
            StageStay.left_at,
            StageStay.next_status,
            following.position.label("next_position"),
        )
        .outerjoin(following, following.id == StageStay.next_stage_id)
        .where(
            StageStay.pipeline_id == bindparam("pipeline_id"),
            StageStay.stage_id == bindparam(f"stage_{index}"),
            StageStay.status == LeadStatus.OPEN,
            StageStay.entered_at <= bindparam("as_of", type_=UTCDateTime()),
        )
        .order_by(StageStay.entered_at.desc())
        .limit(MAX_STAYS)
        .subquery()
        .select()
        for index in range(stage_count)
    ]
    return union_all(*parts)


def fit_stage_durations(samples: dict[int, StaySample]) -> dict[int, DurationFit]:
    """Every family fitted per stage that has enough exits, best first."""
    return {
        stage_id: _fit_cached(_rounded(sample.exits), _rounded(sample.running))
        for stage_id, sample in samples.items()
        if len(sample.exits) >= MIN_EXITS
    }


def fit_stage_outcomes(
    samples: dict[int, StaySample], families: dict[int, Family]
) -> dict[int, CompetingFit]:
    """Times to advance and to loss apart (:mod:`pipesim.competing`), in each stage's family, for the
    stages whose sample has ``MIN_OUTCOME_EXITS`` of each."""
    fits: dict[int, CompetingFit] = {}
    for stage_id, sample in samples.items():
        if min(len(sample.advances), len(sample.losses)) < MIN_OUTCOME_EXITS:
            continue
        family = families.get(stage_id, Family.EXPONENTIAL)
        key = (_rounded(sample.advances), _rounded(sample.losses), _rounded(sample.running))
        fits[stage_id] = _competing_cached(family, *key)
    return fits


@functools.lru_cache(maxsize=256)
def _competing_cached(family: Family, advances: bytes, losses: bytes, running: bytes) -> CompetingFit:
    return fit_competing(
        family,
        np.frombuffer(advances, dtype=np.float64) / FITS_PER_DAY,
        np.frombuffer(losses, dtype=np.float64) / FITS_PER_DAY,
        np.frombuffer(running, dtype=np.float64) / FITS_PER_DAY,
    )


def _rounded(days: list[float]) -> bytes:
    """Lengths to the quarter hour, as bytes: running stays grow with the clock, so unrounded samples
    would never repeat; rounded, the forecast, leads-needed and what-if questions of the same quarter
    hour share one fit. A quarter hour moves no fit by more than a rounding error."""
    return np.round(np.asarray(days, dtype=np.float64) * FITS_PER_DAY).tobytes()


@functools.lru_cache(maxsize=256)
def _fit_cached(exits: bytes, running: bytes) -> DurationFit:
    return fit_durations(
        np.frombuffer(exits, dtype=np.float64) / FITS_PER_DAY,
        np.frombuffer(running, dtype=np.float64) / FITS_PER_DAY,
    )


def survival_curves(samples: dict[int, StaySample]) -> dict[int, tuple[SurvivalPoint, ...]]:
    """Per stage, its Kaplan–Meier curve thinned to at most ``CURVE_POINTS`` points (the last kept)."""
    curves: dict[int, tuple[SurvivalPoint, ...]] = {}
    for stage_id, sample in samples.items():
        points = kaplan_meier(sample.exits, sample.running)
        if len(points) > CURVE_POINTS:
            keep = np.unique(np.linspace(0, len(points) - 1, CURVE_POINTS).round().astype(int))
            points = [points[i] for i in keep]
        curves[stage_id] = tuple(points)
    return curves
