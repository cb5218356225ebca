from __future__ import annotations

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
