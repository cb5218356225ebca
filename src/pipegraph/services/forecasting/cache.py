"""One calibration per pipeline, shared by the forecast questions while the pipeline's history stands.

The dashboard asks ``forecast`` and ``leadsNeeded`` of the same pipeline at once, and asks again on every
"Run forecast". Both need the same calibration as of now (the horizon only sets the model's
``horizon_days``), so the application keeps the latest per pipeline (:class:`CalibrationCache`, owned
by the ``SimulationPool``) and a second question that arrives while the first calibrates waits for it
instead of calibrating again.

An entry is valid while its **stamp** is unchanged and it is younger than ``max_age_seconds``. The
stamp, one statement of index look-ups, holds what a calibration reads that can change:

- the position of the pipeline's lead event log (``lead_events``; every create, update, move, close and
  reopen writes an event in its transaction, so the position is a key valid across processes and
  workers) and the last history row's id (writers that load history directly write no events);
- the pipeline's stages (order, removal, targets, names) and the active reps' count and capacity.

The age limit bounds how far the cut-off lags the clock: leads age in their stages even when nothing
is written. Each answer's ``as_of`` says which cut-off it used.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import LeadEventRow, Role, Stage, StageHistory, User
from pipegraph.services.forecasting.calibration import DEFAULT_WINDOW_DAYS, Calibration
from pipegraph.services.forecasting.fast import calibrate_now

MAX_AGE_SECONDS = 30.0  # how stale a cut-off may get while nothing is written
MAX_ENTRIES = 64  # pipelines × windows × capacity kept per process


@dataclass(frozen=True)
class _Entry:
    stamp: Hashable
    made_at: float
    calibration: Calibration


async def stamp(session: AsyncSession, pipeline_id: int) -> Hashable:
    """What a calibration of ``pipeline_id`` depends on that writes can change: two statements of
    index look-ups and a few rows."""
    events = select(func.max(LeadEventRow.id)).where(LeadEventRow.pipeline_id == pipeline_id)
    reps = (User.active.is_(True), User.role == Role.REP)
    head = select(
        events.scalar_subquery(),
        select(func.max(StageHistory.id)).scalar_subquery(),
        select(func.count()).where(*reps).scalar_subquery(),
        select(func.coalesce(func.sum(User.capacity), 0)).where(*reps).scalar_subquery(),
    )
    stages = (
        select(Stage.id, Stage.name, Stage.position, Stage.target_days, Stage.removed_at, Stage.is_post_sale)
        .where(Stage.pipeline_id == pipeline_id)
        .order_by(Stage.id)
    )
    return (
        tuple((await session.execute(head)).one()),
        tuple(tuple(row) for row in (await session.execute(stages)).all()),
    )


class CalibrationCache:
    """The latest calibration as of now per (pipeline, window, capacity), and calibrations in flight."""

    def __init__(
        self,
        *,
        max_age_seconds: float = MAX_AGE_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age_seconds = max_age_seconds
        self.max_entries = max_entries
        self.clock = clock
        self.calibrations = 0  # calibrations made, for tests and benchmarks
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def clear(self) -> None:
        self._entries.clear()

    async def calibration(
        self,
        session: AsyncSession,
        *,
        pipeline_id: int,
        horizon_days: float,
        window_days: float = DEFAULT_WINDOW_DAYS,
        with_capacity: bool = False,
        segments: bool = False,
    ) -> Calibration:
        """``calibrate_now`` of the pipeline, or the kept one while its stamp stands and it is fresh."""
        key = (pipeline_id, window_days, with_capacity, segments)
        current = await stamp(session, pipeline_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # a question arriving meanwhile waits here, then finds the entry
            entry = self._entries.get(key)
            if entry is None or entry.stamp != current or self.clock() - entry.made_at > self.max_age_seconds:
                made = await calibrate_now(
                    session,
                    pipeline_id=pipeline_id,
                    horizon_days=horizon_days,
                    window_days=window_days,
                    with_capacity=with_capacity,
                    segments=segments,
                )
                self.calibrations += 1
                entry = _Entry(current, self.clock(), made)
                self._entries[key] = entry
                while len(self._entries) > self.max_entries:
                    evicted, _ = self._entries.popitem(last=False)
                    self._locks.pop(evicted, None)
            self._entries.move_to_end(key)
        if entry.calibration.model.horizon_days == horizon_days:
            return entry.calibration
        if not (horizon_days > 0 and math.isfinite(horizon_days)):  # refused as ``calibrate`` refuses it
            return await calibrate_now(session, pipeline_id=pipeline_id, horizon_days=horizon_days)
        # The horizon is the model's alone.
        model = replace(entry.calibration.model, horizon_days=float(horizon_days))
        return replace(entry.calibration, model=model)
