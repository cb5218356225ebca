"""The daily flow totals (``stage_flow_days``) agree with the stays, and metrics read through them
equal metrics read from the stays alone.

Totals written by the services, the bulk loader and the migration's backfill are compared with a
rebuild from the stays; ``pipeline_metrics`` is run over windows of every shape (whole days, partial
days at either end, shorter than a day, past ``now``, with ``now`` before the last change) with and
without the totals, on the hand-built fixture and on synthetic data, and must give the same figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text

from metrics_fixture import END, START, load
from metrics_fixture import NOW as FIXTURE_NOW
from pipegraph import demo
from pipegraph.db import flow_days, migrate
from pipegraph.db.models import Pipeline, StageExitTotal, StageFlowDay, whole_days_text
from pipegraph.db.session import Store
from pipegraph.services import leads, pipelines
from pipegraph.services.forecasting import fast
from pipegraph.services.metrics import pipeline_metrics
from test_stays import run_commands

Key = tuple[Any, ...]


async def _totals(store: Store) -> dict[Key, tuple[int, float]]:
    """The stored totals by key, rows counting nothing left out (removals leave them behind)."""
    d = StageFlowDay
    went = (d.next_stage_id, d.next_status, d.days_in_stage)
    async with store.read() as session:
        statement = select(d.pipeline_id, d.day, d.kind, d.stage_id, d.status, *went, d.n, d.seconds_sum)
        rows = (await session.execute(statement)).all()
    return {tuple(row[:-2]): (row.n, row.seconds_sum) for row in rows if row.n}


async def _rebuilt(store: Store) -> dict[Key, tuple[int, float]]:
    async with store.write() as session:
        await flow_days.rebuild(session)
    return await _totals(store)


async def _assert_exit_totals_kept(store: Store) -> int:
    """``stage_exit_totals`` (kept by triggers) equal the daily exit rows summed over all days, the
    reading calibration used before them; returns how many stays ended."""
    async with store.read() as session:
        pipeline_ids = (await session.execute(select(Pipeline.id))).scalars().all()
        ended = 0
        for pipeline_id in pipeline_ids:
            kept = {
                tuple(row[:4]): (row.n, row.seconds) for row in await fast.exits_to_date(session, pipeline_id)
            }
            summed = {
                tuple(row[:4]): (row.n, row.seconds)
                for row in await fast.exits_from_days(session, pipeline_id)
            }
            assert kept.keys() == summed.keys(), pipeline_id
            for key, (n, seconds) in summed.items():
                assert kept[key][0] == n, key
                assert kept[key][1] == pytest.approx(seconds, rel=1e-12, abs=1e-6), key
            ended += sum(n for n, _ in summed.values())
        orphans = await session.execute(
            select(StageExitTotal.pipeline_id).where(StageExitTotal.pipeline_id.not_in(pipeline_ids))
        )
        assert orphans.all() == []
    return ended


def _assert_same_totals(found: dict[Key, tuple[int, float]], expected: dict[Key, tuple[int, float]]) -> None:
    assert found.keys() == expected.keys()
    for key, (n, seconds) in expected.items():
        assert found[key][0] == n, key
        # Sums of the same lengths added in another order (and removed again) differ in the last bits.
        assert found[key][1] == pytest.approx(seconds, rel=1e-12, abs=1e-6), key


async def test_every_service_command_keeps_the_totals_equal_to_a_rebuild(store: Store) -> None:
    async for name in run_commands(store):
        written = await _totals(store)
        assert written, name
        await _assert_exit_totals_kept(store)
        _assert_same_totals(written, await _rebuilt(store))
        await _assert_exit_totals_kept(store)
    kinds = Counter(key[2] for key in written)
    assert kinds[flow_days.EXIT]
    assert kinds[flow_days.ENTRY]


async def test_loader_and_migration_write_the_totals_of_the_stays(store: Store) -> None:
    await demo.load_synthetic(
        store, leads=400, seed=11, reps=4, activities_per_lead=0, now=datetime(2025, 6, 1, tzinfo=UTC)
    )
    loaded = await _totals(store)
    assert sum(n for (_, _, kind, *_), (n, _) in loaded.items() if kind == flow_days.ENTRY) > 400
    assert await _assert_exit_totals_kept(store) > 400
    _assert_same_totals(loaded, await _rebuilt(store))
    await migrate.downgrade(store.engine, "0007")
    await migrate.upgrade(store.engine)
    _assert_same_totals(await _totals(store), loaded)
    assert await _assert_exit_totals_kept(store) > 400  # the migration's backfill


async def test_exit_totals_follow_a_pipeline_deleted_with_its_rows(store: Store) -> None:
    """The daily rows of a deleted pipeline go by cascade; its totals go with it and the other
    pipelines' stay as they were."""
    await demo.load_synthetic(
        store, leads=200, seed=3, reps=3, activities_per_lead=0, now=datetime(2025, 6, 1, tzinfo=UTC)
    )
    async with store.write() as session:
        other = await pipelines.create_pipeline(session, name="Other", template="GENERAL_B2B", actor=None)
        stages = [s.id for s in await pipelines.current_stages(session, other.id)]
        lead = await leads.create_lead(session, pipeline_id=other.id, title="one", value=100, actor=None)
    async with store.write() as session:
        await leads.move_lead(
            session, lead_id=lead.id, to_stage_id=stages[1], expected_version=None, actor=None
        )
    before = await _assert_exit_totals_kept(store)
    async with store.write() as session:
        first = (await session.execute(select(Pipeline.id).order_by(Pipeline.id))).scalars().first()
        await session.execute(text("DELETE FROM pipelines WHERE id = :id"), {"id": first})
    after = await _assert_exit_totals_kept(store)
    assert 1 <= after < before
    async with store.read() as session:
        kept = (await session.execute(select(StageExitTotal.pipeline_id).distinct())).scalars().all()
    assert first not in kept
    assert other.id in kept


def _assert_same_figures(found: Any, expected: Any, path: str = "metrics") -> None:
    """Equal, except floats, which may differ in their last bits (sums in another order)."""
    if dataclasses.is_dataclass(found):
        for field in dataclasses.fields(found):
            name = f"{path}.{field.name}"
            _assert_same_figures(getattr(found, field.name), getattr(expected, field.name), name)
    elif isinstance(found, tuple):
        assert len(found) == len(expected), path
        for index, (a, b) in enumerate(zip(found, expected, strict=True)):
            _assert_same_figures(a, b, f"{path}[{index}]")
    elif isinstance(found, float) and isinstance(expected, float):
        # Day figures are rounded to 6 decimals, so a last-bit difference can move the last digit.
        assert math.isclose(found, expected, rel_tol=1e-9, abs_tol=2e-6), (path, found, expected)
    else:
        assert found == expected, (path, found, expected)


def _windows(rng: random.Random, origin: datetime, span_days: int, now: datetime) -> list[tuple[Any, ...]]:
    """(start, end, now) windows of every shape the split handles."""
    day = timedelta(days=1)
    midnight = datetime(origin.year, origin.month, origin.day, tzinfo=UTC)
    shapes: list[tuple[Any, ...]] = [
        (midnight, midnight + span_days * day, now),  # whole days only
        (midnight + timedelta(hours=5), midnight + 10 * day, now),  # partial first day
        (midnight, midnight + timedelta(days=9, hours=7), now),  # partial last day
        (midnight + timedelta(hours=13), midnight + timedelta(hours=20), now),  # within one day
        (midnight + timedelta(hours=22), midnight + timedelta(days=1, hours=2), now),  # across midnight
        (midnight + timedelta(hours=3), now + 5 * day, now),  # past now
        (midnight, midnight + span_days * day, now - timedelta(days=3, hours=5)),  # now before changes
    ]
    for _ in range(12):
        start = midnight + timedelta(seconds=rng.uniform(0, span_days * 86_400))
        end = start + timedelta(seconds=rng.uniform(3_600, span_days * 86_400))
        shapes.append((start, end, now))
    return shapes


async def _compare_over_windows(store: Store, pipeline_id: int, windows: list[tuple[Any, ...]]) -> None:
    async with store.read() as session:
        for start, end, now in windows:
            found = await pipeline_metrics(session, pipeline_id=pipeline_id, start=start, end=end, now=now)
            expected = await pipeline_metrics(
                session, pipeline_id=pipeline_id, start=start, end=end, now=now, daily_totals=False
            )
            _assert_same_figures(found, expected, f"[{start}, {end}) now {now}")


async def test_metrics_from_the_totals_equal_metrics_from_the_stays_on_the_fixture(store: Store) -> None:
    fixture = await load(store)
    origin = datetime(2023, 12, 20, tzinfo=UTC)
    windows = _windows(random.Random(1), origin, 50, FIXTURE_NOW)
    await _compare_over_windows(store, fixture.pipeline_id, windows)


async def test_metrics_from_the_totals_equal_metrics_from_the_stays_on_synthetic_data(store: Store) -> None:
    now = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)
    await demo.load_synthetic(
        store, leads=1_500, seed=3, reps=5, activities_per_lead=0, pipelines=demo.DEMO_PIPELINES[:1], now=now
    )
    async with store.read() as session:
        pipeline_id = (await session.execute(select(Pipeline.id))).scalar_one()
    windows = _windows(random.Random(2), now - timedelta(days=120), 100, now)
    await _compare_over_windows(store, pipeline_id, windows)


async def test_the_median_reads_one_day_of_lengths_through_its_index(store: Store) -> None:
    """The median's lookup matches the expression index (the same expression text on each backend)."""
    fixture = await load(store)
    plans: list[str] = []

    def explain(connection: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "picked" in statement:
            prefix = "EXPLAIN QUERY PLAN " if store.is_sqlite else "EXPLAIN "
            cursor.execute(prefix + statement, parameters)
            plans.extend(str(row) for row in cursor.fetchall())

    event.listen(store.engine.sync_engine, "before_cursor_execute", explain)
    try:
        async with store.read() as session:
            if not store.is_sqlite:  # the fixture is tiny: make the planner show whether it can match
                await session.execute(text("SET LOCAL enable_seqscan = off"))
            await pipeline_metrics(
                session, pipeline_id=fixture.pipeline_id, start=START, end=END, now=FIXTURE_NOW
            )
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", explain)
    # The index is searched with the length in days as one of its equalities (SQLite shows it as
    # ``<expr>=?``; PostgreSQL as an index condition on ``floor``), not merely scanned.
    searched = [
        line for line in plans if "ix_stage_stays_pipeline_stage_days" in line or "Index Cond" in line
    ]
    assert searched, plans
    if store.is_sqlite:
        assert all("<expr>=?" in line for line in searched), plans
    else:
        assert any("Index Cond" in line and "floor" in line for line in searched), plans


async def test_concurrent_moves_through_the_same_days_totals_neither_deadlock_nor_drift(store: Store) -> None:
    """Writers crossing between two stages in opposite directions update the same rows of today's
    totals; their upserts go in key order, so on PostgreSQL none waits for another in a cycle."""
    async with store.write() as session:
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="GENERAL_B2B", actor=None)
        stages = [s.id for s in await pipelines.current_stages(session, pipeline.id)]

    async def journey(index: int) -> None:
        async with store.write() as session:
            lead = await leads.create_lead(
                session, pipeline_id=pipeline.id, title=f"lead {index}", value=100, actor=None
            )
        there, back = (stages[1], stages[2]) if index % 2 else (stages[2], stages[1])
        for to_stage in (there, back, there, back):
            async with store.write() as session:
                await leads.move_lead(
                    session, lead_id=lead.id, to_stage_id=to_stage, expected_version=None, actor=None
                )

    await asyncio.gather(*(journey(index) for index in range(16)))
    totals = await _totals(store)
    entries = sum(n for key, (n, _) in totals.items() if key[2] == flow_days.ENTRY)
    assert entries == 16 * 5
    _assert_same_totals(totals, await _rebuilt(store))
    assert await _assert_exit_totals_kept(store) == 16 * 4


async def test_whole_days_agree_between_python_and_each_backend(store: Store) -> None:
    """Services bucket a stay's length in Python, rebuilds and queries in SQL: the same day, at the
    edges of a day too."""
    day = 86_400.0
    lengths = [0.0, 0.5, day - 1e-6, day, math.nextafter(day, 0.0), math.nextafter(day, math.inf)]
    lengths += [k * day + offset for k in (1, 6, 29, 365) for offset in (-1e-6, 0.0, 1e-6, 3_600.5)]
    dialect = "sqlite" if store.is_sqlite else "postgresql"
    value = ":length" if store.is_sqlite else "CAST(:length AS DOUBLE PRECISION)"
    statement = text(f"SELECT {whole_days_text(dialect, value)}")
    async with store.read() as session:
        for length in lengths:
            found = (await session.execute(statement, {"length": length})).scalar_one()
            assert found == flow_days.whole_days(length), length
