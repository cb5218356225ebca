"""Times in stage in the family the history shows: exponential, Weibull, log-normal or gamma.

Calibration's exponential comes from two sums (days in the stage, exits), so it costs nothing at any
history size; but real stays rarely have a constant hazard — a lead that has waited long is less likely
to move soon. This module reads each stage's latest ``MAX_STAYS`` stays (their lengths, and whether
each ended or is still running at ``as_of``), fits every family with right-censoring
(:mod:`pipesim.fitting`) and keeps the one with the lowest AIC.

A stay that ended moving backwards counts as running until then (censored), as in calibration. Advances
and losses are competing exits: the family describes the time to either, and the model then converts
with the stage's probability — exact for constant hazards, and the usual approximation otherwise.
Fewer than ``MIN_EXITS`` exits in the sample keeps the exponential.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Integer, and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from pipegraph.db.models import LeadStatus, Stage
from pipegraph.services.metrics_sql import at, days_between
from pipesim.fitting import DurationFit, fit_durations
from pipesim.survival import SurvivalPoint, kaplan_meier

MAX_STAYS = 1_000  # latest stays per stage read for the family fit: bounded memory and fit time
MIN_EXITS = 30  # exits a stage's sample needs before a family other than the exponential is fitted
CURVE_POINTS = 40  # Kaplan–Meier points kept per stage: enough to draw, few enough to send


@dataclass(frozen=True)
class StaySample:
    exits: list[float]  # days of stays that ended (advance or loss)
    running: list[float]  # days of stays still running at ``as_of``, or that moved back (censored)


async def stay_samples(
    session: AsyncSession, dialect: str, history: Any, as_of: datetime, stage_ids: list[int]
) -> dict[int, StaySample]:
    """Per stage, the lengths of its latest ``MAX_STAYS`` stays; ``history`` is calibration's CTE."""
    stage, other = aliased(Stage), aliased(Stage)
    ended = or_(
        history.c.next_status.in_([LeadStatus.WON.value, LeadStatus.LOST.value]),
        and_(history.c.next_status == LeadStatus.OPEN.value, other.position > stage.position),
    )
    latest = func.row_number().over(partition_by=history.c.stage_id, order_by=history.c.changed_at.desc())
    stays = (
        select(
            history.c.stage_id,
            case((and_(history.c.next_at.is_not(None), ended), literal(1)), else_=literal(0)).label("ended"),
            days_between(dialect, history.c.changed_at, func.coalesce(history.c.next_at, at(as_of))).label(
                "days"
            ),
            latest.label("latest"),
        )
        .select_from(history)
        .join(stage, stage.id == history.c.stage_id)
        .outerjoin(other, other.id == history.c.next_stage_id)
        .where(history.c.status == LeadStatus.OPEN.value, history.c.stage_id.in_(stage_ids))
        .subquery("stays")
    )
    statement = select(stays.c.stage_id, stays.c.ended.cast(Integer), stays.c.days).where(
        stays.c.latest <= MAX_STAYS
    )
    samples: dict[int, StaySample] = defaultdict(lambda: StaySample([], []))
    for stage_id, was_exit, days in (await session.execute(statement)).all():
        sample = samples[stage_id]
        (sample.exits if was_exit else sample.running).append(max(float(days), 0.0))
    return dict(samples)


def fit_stage_durations(samples: dict[int, StaySample]) -> dict[int, DurationFit]:
    """Every family fitted per stage that has enough exits, best first."""
    return {
        stage_id: fit_durations(np.array(sample.exits), np.array(sample.running))
        for stage_id, sample in samples.items()
        if len(sample.exits) >= MIN_EXITS
    }


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
