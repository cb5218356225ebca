"""Calibration as of now from the kept totals (``fast``) against the reference reading of the
paired history (``calibration.read_history``), on SQLite and PostgreSQL: the same report and model, counts
exactly and sums of days to rounding; and a fixed number of statements whatever the number of leads."""

from __future__ import annotations

import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, func, select, update

from metrics_fixture import load
from pipegraph import demo
from pipegraph.db.models import Lead, LeadStatus, Pipeline, Stage, StageHistory, StageStay
from pipegraph.db.session import Store
from pipegraph.db.stays import derive_stays
from pipegraph.db.types import utcnow
from pipegraph.services.forecasting.calibration import (
    Calibration,
    age_band,
    calibrate,
    pipeline_id_for_name,
    value_band,
)
from pipegraph.services.forecasting.fast import calibrate_now, cohorts_of, open_cohorts_statement
from pipegraph.services.forecasting.synthetic import TruePipeline, generate, write_history
from pipegraph.services.metrics_sql import at, days_between

# Sums of days: per-stay seconds ÷ 86,400 summed in another grouping than per-stay day differences; and
# the reference's day differences come from SQLite's julianday(), which keeps milliseconds, so over
# thousands of stays a sum of days can drift by a few parts in 10⁹ from the kept microsecond totals.
REL = 2e-8
DEMO_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _same(old: Any, new: Any, path: str) -> None:
    """Equal field by field: floats to ``REL``, everything else exactly."""
    if isinstance(old, float) and isinstance(new, float):
        assert math.isclose(old, new, rel_tol=REL, abs_tol=1e-9), path
    elif isinstance(old, tuple | list):
        assert len(old) == len(new), path
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            _same(a, b, f"{path}[{index}]")
    elif hasattr(old, "__dataclass_fields__"):
        assert type(old) is type(new), path
        for f in fields(old):
            _same(getattr(old, f.name), getattr(new, f.name), f"{path}.{f.name}")
    else:
        assert old == new, path


async def _both(store: Store, pipeline_id: int, **kwargs: Any) -> tuple[Calibration, Calibration]:
    async with store.read() as session:
        new = await calibrate_now(session, pipeline_id=pipeline_id, horizon_days=90, **kwargs)
        old = await calibrate(
            session, pipeline_id=pipeline_id, horizon_days=90, as_of=new.report.as_of, **kwargs
        )
    return old, new


async def _agree(store: Store, pipeline_id: int, **kwargs: Any) -> Calibration:
    old, new = await _both(store, pipeline_id, **kwargs)
    _same(old.report, new.report, "report")
    _same(old.model, new.model, "model")
    return new


async def test_hand_made_history_agrees(store: Store) -> None:
    """Skips, a move backwards, a loss reopened into the same stage and lost again, a win from before
    the last stage, a post-sale stay, a lead created straight into a later stage, an empty pipeline."""
    fixture = await load(store)
    calibration = await _agree(store, fixture.pipeline_id)
    assert calibration.report.open_leads == 4
    await _agree(store, fixture.pipeline_id, with_capacity=True, window_days=10_000)
    await _agree(store, fixture.empty_pipeline_id)


async def test_demo_history_agrees_and_follows_stage_changes(store: Store) -> None:
    """Generated history of every pipeline; then with stages reordered and one removed, which change how
    stays count (advance or backwards, counted or not)."""
    await demo.load_demo(store, seed=3, leads_per_pipeline=150, now=DEMO_NOW)
    async with store.read() as session:
        pipeline_id = await pipeline_id_for_name(session, "B2B Sales")
        every = list((await session.execute(select(Pipeline.id))).scalars())
    assert len(every) == len(demo.DEMO_PIPELINES)
    for found in every:
        report = (await _agree(store, found)).report
        assert report.deal_size.wins >= 5
        assert report.open_leads > 0
    stage_ids = [fit.stage_id for fit in (await _agree(store, pipeline_id)).report.stages]
    async with store.write() as session:
        # Swap two middle stages, through a free position in case positions are unique; remove another.
        first, second = stage_ids[1], stage_ids[2]
        for stage_id, position in ((first, 1000), (second, 1), (first, 2)):
            await session.execute(update(Stage).where(Stage.id == stage_id).values(position=position))
        await session.execute(update(Stage).where(Stage.id == stage_ids[3]).values(removed_at=DEMO_NOW))
    report = (await _agree(store, pipeline_id)).report
    assert [fit.stage_id for fit in report.stages][:3] == [stage_ids[0], second, first]
    assert stage_ids[3] not in {fit.stage_id for fit in report.stages}


async def test_a_win_undone_reads_the_wins_from_the_stays(store: Store) -> None:
    """A won lead reopened: the won leads are no longer the wins, so the sample comes from the stays."""
    await demo.load_demo(store, seed=4, leads_per_pipeline=120, now=DEMO_NOW)
    async with store.write() as session:
        pipeline_id = await pipeline_id_for_name(session, "B2B Sales")
        lead = (
            await session.execute(
                select(Lead).where(Lead.pipeline_id == pipeline_id, Lead.status == LeadStatus.WON).limit(1)
            )
        ).scalar_one()
        session.add(
            StageHistory(
                lead_id=lead.id,
                pipeline_id=pipeline_id,
                from_stage_id=lead.stage_id,
                to_stage_id=lead.stage_id,
                from_status=LeadStatus.WON,
                to_status=LeadStatus.OPEN,
                changed_at=DEMO_NOW,
            )
        )
        lead.status, lead.closed_at = LeadStatus.OPEN, None
        await session.flush()
        await derive_stays(session, lead_ids=[lead.id])
    statements, count = _counting(store)
    try:
        await _agree(store, pipeline_id)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert any("stage_stays" in s and "next_status" in s and "value_cents" in s for s in statements)


def _counting(store: Store) -> tuple[list[str], Any]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    return statements, count


@pytest.mark.parametrize("leads", [40, 400])
async def test_statements_do_not_grow_with_the_leads(store: Store, leads: int) -> None:
    """Pipeline, stages (twice: sales stages and all positions), exit totals, open cohorts, arrivals,
    won leads (count and sample), reps, and each stage's latest stays for the time-in-stage families
    (one statement, each stage's rows an index range of at most ``MAX_STAYS``): ten statements at any size."""
    await demo.load_demo(store, seed=5, leads_per_pipeline=leads, now=DEMO_NOW)
    async with store.read() as session:
        pipeline_id = await pipeline_id_for_name(session, "B2B Sales")
    statements, count = _counting(store)
    try:
        async with store.read() as session:
            calibration = await calibrate_now(session, pipeline_id=pipeline_id, horizon_days=90)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert calibration.report.deal_size.wins >= 5
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(reads) == 10, statements


async def test_synthetic_history_agrees(store: Store) -> None:
    """The synthetic writer (history ending now, arrivals in the window) keeps stays and totals too."""
    truth = TruePipeline(
        conversions=(0.6, 0.5, 0.7),
        mean_days=(6.0, 12.0, 9.0),
        arrivals_per_day=4.0,
        deal_mean=2_000.0,
        deal_sd=1_000.0,
    )
    lives = generate(truth, np.random.default_rng(5), 120.0)
    pipeline_id = await write_history(store, truth, lives, origin=utcnow() - timedelta(days=120), until=120.0)
    report = (await _agree(store, pipeline_id)).report
    assert report.arrivals.created > 0
    assert report.open_leads > 0


def _open_cohorts_folded(dialect: str, pipeline_id: int, as_of: datetime) -> Any:
    """The open leads' cohorts as first read: the current stay's start a scalar subquery inside the
    subquery the grouping reads, which the planners fold in (a probe in the age and in every branch of
    the age band's CASE). The reference for ``fast.open_cohorts_statement``."""
    entered = select(func.max(StageStay.entered_at)).where(StageStay.lead_id == Lead.id).scalar_subquery()
    age = days_between(dialect, entered, at(as_of))
    open_leads = (
        select(
            Lead.stage_id.label("stage_id"),
            value_band(Lead.value_cents).label("band"),
            Lead.value_cents.label("value_cents"),
            age.label("age"),
            age_band(age).label("age_band"),
        )
        .join(Stage, Stage.id == Lead.stage_id)
        .where(
            Lead.pipeline_id == pipeline_id,
            Lead.status == LeadStatus.OPEN,
            Stage.is_post_sale.is_(False),
            Stage.removed_at.is_(None),
        )
        .subquery("open_leads")
    )
    return cohorts_of(open_leads)


async def test_open_cohorts_read_each_current_stay_once_with_the_same_rows(store: Store) -> None:
    """The cohorts' statement probes each lead's current stay once (one subquery in the SQL, in a
    materialised CTE) and gives the rows of the folded statement: counts and bands exactly, means and
    sums of days to rounding."""
    await demo.load_demo(store, seed=4, leads_per_pipeline=150, now=DEMO_NOW)
    fixture = await load(store)
    dialect = store.engine.dialect.name
    as_of = utcnow()
    compiled = str(open_cohorts_statement(dialect, 1, as_of).compile(dialect=store.engine.dialect))
    assert compiled.count("max(stage_stays.entered_at)") == 1
    assert "MATERIALIZED" in compiled
    async with store.read() as session:
        ids = list((await session.execute(select(Pipeline.id))).scalars())
        assert fixture.pipeline_id in ids
        for pipeline_id in ids:
            new = (await session.execute(open_cohorts_statement(dialect, pipeline_id, as_of))).all()
            old = (await session.execute(_open_cohorts_folded(dialect, pipeline_id, as_of))).all()
            assert [row[:3] for row in new] == [row[:3] for row in old]
            for a, b in zip(new, old, strict=True):
                for x, y in zip(a[3:], b[3:], strict=True):
                    assert math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-9)
            assert sum(row.n for row in new) > 0 or pipeline_id == fixture.empty_pipeline_id
