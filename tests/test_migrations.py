from __future__ import annotations

from typing import Any

from sqlalchemy import inspect

from pipegraph.db import migrate
from pipegraph.db.base import Base
from pipegraph.db.session import Store


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


async def _stay_columns_and_indexes(store: Store) -> tuple[set[str], set[str]]:
    async with store.engine.connect() as connection:

        def read(sync: Any) -> tuple[set[str], set[str]]:
            inspector = inspect(sync)
            columns = {column["name"] for column in inspector.get_columns("stage_stays")}
            return columns, {str(index["name"]) for index in inspector.get_indexes("stage_stays")}

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
