"""``Lead.winProbability``: the pipeline's calibration (with segments), once per request, and each lead's
odds from it, by its stage, age, source and owner."""

from __future__ import annotations

import asyncio

from pipegraph.api.context import Info
from pipegraph.api.forecast import simulation_pool
from pipegraph.errors import ValidationError
from pipegraph.services.forecasting import lead_odds
from pipegraph.services.forecasting.calibration import Calibration

MAX_HORIZON_DAYS = 3650


async def _calibration(info: Info, pipeline_pk: int) -> Calibration:
    """The pipeline's calibration as of now: one task per request and pipeline, so a page of leads
    shares one calibration (itself shared across requests by the simulation pool's cache)."""
    key = ("calibration", pipeline_pk)
    task: asyncio.Future[Calibration] | None = info.context.memo.get(key)
    if task is None:

        async def calibrate() -> Calibration:
            async with info.context.store.read() as session:
                calibrations = simulation_pool(info).calibrations
                return await calibrations.calibration(
                    session, pipeline_id=pipeline_pk, horizon_days=90, segments=True
                )

        task = info.context.memo[key] = asyncio.ensure_future(calibrate())
    return await task


async def win_probability(
    info: Info,
    *,
    pipeline_pk: int,
    stage: str,
    age_days: float,
    horizon_days: int,
    source: str | None = None,
    owner: str | None = None,
) -> float | None:
    if not 1 <= horizon_days <= MAX_HORIZON_DAYS:
        raise ValidationError(
            f"must be between 1 and {MAX_HORIZON_DAYS} days, got {horizon_days}", field="horizonDays"
        )
    calibration = await _calibration(info, pipeline_pk)
    return lead_odds.win_probability(
        calibration.model, stage, age_days, horizon_days, source, owner, calibration.loss_time(stage)
    )
