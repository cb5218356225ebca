"""``stage_stays`` agrees with ``stage_history``: after every command of the lead services, after the
synthetic bulk loader and after the migrations' backfill, the stays written (durations included) equal
the ones ``stays_sql`` derives from history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph import demo
from pipegraph.db import migrate
from pipegraph.db.models import Lead, LeadStatus
from pipegraph.db.session import Store
from pipegraph.db.stays import ALL_STAY_COLUMNS, stays_from_history
from pipegraph.services import leads, pipelines

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def T(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


async def _written(store: Store) -> list[tuple[Any, ...]]:
    async with store.read() as session:
        statement = text(f"SELECT {', '.join(ALL_STAY_COLUMNS)} FROM stage_stays ORDER BY history_id")
        return [tuple(row) for row in (await session.execute(statement)).all()]


async def _derived(store: Store) -> list[tuple[Any, ...]]:
    async with store.read() as session:
        lead_ids = (await session.execute(select(Lead.id))).scalars().all()
        return await stays_from_history(session, lead_ids=lead_ids)


Command = Callable[[AsyncSession, dict[str, int], list[int]], Awaitable[object]]


def _move(name: str, position: int, at: datetime) -> Command:
    async def run(session: AsyncSession, ids: dict[str, int], stages: list[int]) -> object:
        return await leads.move_lead(
            session, lead_id=ids[name], to_stage_id=stages[position], expected_version=None, actor=None, at=at
        )

    return run


def _close(name: str, outcome: LeadStatus, at: datetime) -> Command:
    async def run(session: AsyncSession, ids: dict[str, int], stages: list[int]) -> object:
        return await leads.close_lead(session, lead_id=ids[name], outcome=outcome, actor=None, at=at)

    return run


def _reopen(name: str, position: int | None, at: datetime) -> Command:
    async def run(session: AsyncSession, ids: dict[str, int], stages: list[int]) -> object:
        stage_id = None if position is None else stages[position]
        return await leads.reopen_lead(session, lead_id=ids[name], stage_id=stage_id, actor=None, at=at)

    return run


def _create_lead(name: str, at: datetime) -> Command:
    async def run(session: AsyncSession, ids: dict[str, int], stages: list[int]) -> object:
        pipeline_id = (await pipelines.list_pipelines(session))[0].id
        lead = await leads.create_lead(
            session, pipeline_id=pipeline_id, title=name, value=100, actor=None, at=at
        )
        ids[name] = lead.id
        return lead

    return run


def _remove_stage(position: int, into: int) -> Command:
    async def run(session: AsyncSession, ids: dict[str, int], stages: list[int]) -> object:
        return await pipelines.remove_stage(
            session, stage_id=stages[position], move_leads_to_stage_id=stages[into], actor=None
        )

    return run


# Positions in the GENERAL_B2B template; the last stage is post-sale.
COMMANDS: list[tuple[str, Command]] = [
    ("create A", _create_lead("A", T(0))),
    ("create B", _create_lead("B", T(1))),
    ("create C", _create_lead("C", T(1))),
    ("move A forward, skipping a stage", _move("A", 2, T(2))),
    ("move A back", _move("A", 1, T(3))),
    ("move B at the same time as A", _move("B", 1, T(3))),
    ("win A", _close("A", LeadStatus.WON, T(4))),
    ("move won A into the post-sale stage", _move("A", -1, T(5))),
    ("lose B", _close("B", LeadStatus.LOST, T(6))),
    ("reopen B where it was", _reopen("B", None, T(7))),
    ("reopen A from the post-sale stage", _reopen("A", 0, T(8))),
    ("remove a stage holding B, moving it on", _remove_stage(1, 2)),
]


async def run_commands(store: Store, ids: dict[str, int] | None = None) -> AsyncIterator[str]:
    """Create a pipeline, then run ``COMMANDS`` one transaction each, yielding each one's name after it
    committed; ``ids`` receives the ids of the leads created, by name."""
    async with store.write() as session:
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="GENERAL_B2B", actor=None)
        stages = [s.id for s in await pipelines.current_stages(session, pipeline.id)]
    ids = {} if ids is None else ids
    for name, command in COMMANDS:
        async with store.write() as session:
            await command(session, ids, stages)
        yield name


async def test_every_service_command_keeps_stays_equal_to_the_history_derivation(store: Store) -> None:
    ids: dict[str, int] = {}
    async for name in run_commands(store, ids):
        written = await _written(store)
        assert written == await _derived(store), name
    current = [row for row in written if row[ALL_STAY_COLUMNS.index("left_at")] is None]
    assert len(current) == len(ids)


async def test_migration_backfills_the_stays_the_services_wrote(store: Store) -> None:
    async for _ in run_commands(store):
        pass
    written = await _written(store)
    await migrate.downgrade(store.engine, "0004")
    await migrate.upgrade(store.engine)
    assert await _written(store) == written
    assert len(written) == len(COMMANDS)  # each command here writes one history row


async def test_bulk_loader_writes_the_stays_and_durations_history_delimits(store: Store) -> None:
    await demo.load_synthetic(store, leads=300, seed=5, reps=4, activities_per_lead=0, now=T(24 * 400))
    written = await _written(store)
    assert written == await _derived(store)
    ended = [row for row in written if row[ALL_STAY_COLUMNS.index("left_at")] is not None]
    assert ended
    assert all(row[ALL_STAY_COLUMNS.index("duration_seconds")] > 0 for row in ended)


async def test_a_leads_open_stay_is_read_and_ended_through_its_own_index(store: Store) -> None:
    """On PostgreSQL, the lookups every change of stage or status makes find the lead's open stay by one
    entry of the partial index, however many stays the lead had: the read of the change's facts and
    the end of the stay. (SQLite's planner, without statistics, takes the lead's stays by
    ``ix_stage_stays_lead_entered``; the statements are the same.)"""
    if store.is_sqlite:
        pytest.skip("PostgreSQL's planner choice; SQLite's has no statistics to prefer the partial index")
    async for _ in run_commands(store):
        pass
    statements = [
        "SELECT s.entered_at, s.stage_id, s.status FROM leads l "
        "LEFT JOIN stage_stays s ON s.lead_id = l.id AND s.left_at IS NULL WHERE l.id = :lead_id",
        "UPDATE stage_stays SET left_at = entered_at WHERE lead_id = :lead_id AND left_at IS NULL",
    ]
    async with store.write() as session:
        if not store.is_sqlite:  # a tiny table: make the planner show whether it can use the index
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            await session.execute(text("SET LOCAL enable_bitmapscan = off"))
        prefix = "EXPLAIN QUERY PLAN " if store.is_sqlite else "EXPLAIN "
        for statement in statements:
            plan = [
                str(row) for row in (await session.execute(text(prefix + statement), {"lead_id": 1})).all()
            ]
            assert any("ix_stage_stays_open" in line for line in plan), (statement, plan)
        await session.rollback()
