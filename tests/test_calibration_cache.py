"""The shared calibration (``cache``): questions asked at once calibrate once; a write to the
pipeline (a value changed with its event, a move), a stage change or age makes the next one calibrate
again; a hit costs the stamp's two statements. Counted, never timed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, update

from pipegraph import demo
from pipegraph.db.lead_events import take_events, write_events
from pipegraph.db.models import Lead, LeadStatus, Stage
from pipegraph.db.session import Store
from pipegraph.services import leads
from pipegraph.services.forecasting.cache import CalibrationCache
from pipegraph.services.forecasting.calibration import pipeline_id_for_name

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _ask(store: Store, cache: CalibrationCache, pipeline_id: int, horizon: float = 90) -> Any:
    async with store.read() as session:
        return await cache.calibration(session, pipeline_id=pipeline_id, horizon_days=horizon)


async def _loaded(store: Store) -> int:
    await demo.load_demo(store, seed=6, leads_per_pipeline=60, now=NOW)
    async with store.read() as session:
        return await pipeline_id_for_name(session, "B2B Sales")


async def test_questions_at_once_share_one_calibration(store: Store) -> None:
    pipeline_id = await _loaded(store)
    cache = CalibrationCache()
    first, second = await asyncio.gather(_ask(store, cache, pipeline_id), _ask(store, cache, pipeline_id, 30))
    assert cache.calibrations == 1
    assert first.report is second.report
    assert (first.model.horizon_days, second.model.horizon_days) == (90, 30)
    assert second.model.stages == first.model.stages

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        third = await _ask(store, cache, pipeline_id)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert third.report is first.report
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2


async def test_writes_stage_changes_and_age_calibrate_again(store: Store) -> None:
    pipeline_id = await _loaded(store)
    clock = Clock()
    cache = CalibrationCache(max_age_seconds=30, clock=clock)
    before = await _ask(store, cache, pipeline_id)

    # A value changed: no history row, but its event moves the log's position.
    async with store.write() as session:
        lead = (
            await session.execute(
                select(Lead).where(Lead.pipeline_id == pipeline_id, Lead.status == LeadStatus.OPEN).limit(1)
            )
        ).scalar_one()
        await leads.update_lead(session, lead_id=lead.id, value="123456.00", actor=None)
        await write_events(session, take_events(session))
        stage_ids = list(
            (
                await session.execute(
                    select(Stage.id).where(Stage.pipeline_id == pipeline_id).order_by(Stage.position)
                )
            ).scalars()
        )
    changed = await _ask(store, cache, pipeline_id)
    assert cache.calibrations == 2
    assert changed.model.open_leads != before.model.open_leads

    # A move written without its event (as a loader writes history): the history's last id moves.
    async with store.write() as session:
        current = (await session.execute(select(Lead.stage_id).where(Lead.id == lead.id))).scalar_one()
        target = next(stage_id for stage_id in stage_ids[1:3] if stage_id != current)
        await leads.move_lead(session, lead_id=lead.id, to_stage_id=target, expected_version=None, actor=None)
        take_events(session)
    await _ask(store, cache, pipeline_id)
    assert cache.calibrations == 3

    # A stage renamed, then nothing written but time passing.
    async with store.write() as session:
        await session.execute(update(Stage).where(Stage.id == stage_ids[0]).values(name="Renamed"))
    renamed = await _ask(store, cache, pipeline_id)
    assert cache.calibrations == 4
    assert renamed.report.stages[0].name == "Renamed"
    clock.now += 29
    await _ask(store, cache, pipeline_id)
    assert cache.calibrations == 4
    clock.now += 2
    await _ask(store, cache, pipeline_id)
    assert cache.calibrations == 5
