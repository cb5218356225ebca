from __future__ import annotations

import warnings
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SAWarning

from pipegraph.api import ids
from pipegraph.db import migrate
from pipegraph.db.base import Base
from pipegraph.db.session import Store
from pipegraph.services import leads
from server_support import seed_database


async def _tables(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    return names - {"alembic_version"}


async def test_upgrade_downgrade_upgrade_round_trip(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        assert await _tables(store) == set(Base.metadata.tables)
        await migrate.downgrade(store.engine)
        assert await _tables(store) == set()
        await migrate.upgrade(store.engine)
        assert await _tables(store) == set(Base.metadata.tables)
    finally:
        await store.dispose()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _revision(store: Store) -> str | None:
    async with store.engine.connect() as connection:
        return await connection.run_sync(_current_revision)


async def test_each_revision_steps_down_and_up_with_data_in_place(database_url: str) -> None:
    # One step at a time, so every downgrade runs against the schema its upgrade left, with rows in it.
    seed = await seed_database(database_url)
    store = Store.from_url(database_url)
    try:
        async with store.write() as session:
            pipeline_id = ids.decode_as(seed.pipeline_id, "Pipeline", field="id")
            lead = await leads.create_lead(session, pipeline_id=pipeline_id, title="Kept", actor=None)
            stage_id = ids.decode_as(seed.stage_ids[1], "Stage", field="id")
            await leads.move_lead(
                session, lead_id=lead.id, to_stage_id=stage_id, expected_version=1, actor=None
            )
    finally:
        await store.dispose()
    revisions = [
        script.revision for script in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()
    ]
    store = Store.from_url(database_url)
    try:
        for expected in [*revisions[1:], None]:
            await migrate.downgrade(store.engine, "-1")
            assert await _revision(store) == expected
        assert await _tables(store) == set()
        for expected in reversed(revisions):
            await migrate.upgrade(store.engine, "+1")
            assert await _revision(store) == expected
        assert await _tables(store) == set(Base.metadata.tables)
    finally:
        await store.dispose()


async def _stay_columns_and_indexes(store: Store) -> tuple[set[str], set[str]]:
    async with store.engine.connect() as connection:

        def read(sync: Any) -> tuple[set[str], set[str]]:
            inspector = inspect(sync)
            columns = {column["name"] for column in inspector.get_columns("stage_stays")}
            with warnings.catch_warnings():  # SQLite's reflection skips the expression index, warning
                warnings.filterwarnings("ignore", "Skipped unsupported reflection", SAWarning)
                indexes = inspector.get_indexes("stage_stays")
            return columns, {str(index["name"]) for index in indexes}

        return await connection.run_sync(read)


async def test_stay_durations_migration_round_trip(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        columns, indexes = await _stay_columns_and_indexes(store)
        assert "duration_seconds" in columns
        assert "ix_stage_stays_pipeline_exit_duration" in indexes
        await migrate.downgrade(store.engine, "0005")
        columns, indexes = await _stay_columns_and_indexes(store)
        assert "duration_seconds" not in columns
        assert "ix_stage_stays_pipeline_exit_left" in indexes
        assert "ix_stage_stays_pipeline_exit_duration" not in indexes
    finally:
        await store.dispose()


async def _lead_indexes(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: {str(index["name"]) for index in inspect(sync).get_indexes("leads")}
        )


async def test_lead_value_index_only_on_postgresql_and_round_trip(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        assert ("ix_leads_id_value" in await _lead_indexes(store)) == (not store.is_sqlite)
        await migrate.downgrade(store.engine, "0006")
        assert "ix_leads_id_value" not in await _lead_indexes(store)
        await migrate.upgrade(store.engine)
        assert ("ix_leads_id_value" in await _lead_indexes(store)) == (not store.is_sqlite)
    finally:
        await store.dispose()


async def _lead_index_columns(store: Store) -> dict[str, list[str]]:
    async with store.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: {
                str(index["name"]): [str(name) for name in index["column_names"]]
                for index in inspect(sync).get_indexes("leads")
            }
        )


async def test_breakdown_indexes_round_trip(database_url: str) -> None:
    dimensions = ["owner_id", "source", "qualification_score"]
    expected = {
        "ix_leads_pipeline_created_dimensions": ["pipeline_id", "created_at", *dimensions],
        "ix_leads_pipeline_status_closed": [
            *("pipeline_id", "status", "closed_at", "created_at", "value_cents", "stage_id"),
            *dimensions,
        ],
    }
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        indexes = await _lead_index_columns(store)
        assert {name: indexes.get(name) for name in expected} == expected
        await migrate.downgrade(store.engine, "0008")
        indexes = await _lead_index_columns(store)
        assert "ix_leads_pipeline_created_dimensions" not in indexes
        assert indexes["ix_leads_pipeline_status_closed"] == [
            *("pipeline_id", "status", "closed_at", "created_at", "value_cents")
        ]
    finally:
        await store.dispose()


async def test_pipeline_created_index_only_on_sqlite_and_round_trip(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        assert ("ix_leads_pipeline_created" in await _lead_indexes(store)) == store.is_sqlite
        await migrate.downgrade(store.engine, "0013")
        assert "ix_leads_pipeline_created" in await _lead_indexes(store)
        await migrate.upgrade(store.engine)
        assert ("ix_leads_pipeline_created" in await _lead_indexes(store)) == store.is_sqlite
    finally:
        await store.dispose()
