"""A larger SQLite page cache while many rows go into indexes at once (bulk import, the demo loader).

A lead goes into indexes ordered by its value and stage, each row at a place of its own: past a few
hundred thousand leads those pages outgrow SQLite's default cache (2 MiB), and every row then reads a
page back and spills another, which made a million-row load four times slower per row than one of
100,000. The cache is a bound, not a copy of the file: memory stays flat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection

BULK_CACHE_KIB = 64 * 1024


@asynccontextmanager
async def bulk_page_cache(connection: AsyncConnection, kib: int = BULK_CACHE_KIB) -> AsyncIterator[None]:
    """On SQLite, a page cache of ``kib`` KiB for the block, then the previous size; elsewhere nothing."""
    if connection.dialect.name != "sqlite":
        yield
        return
    # ``main.``: unnamed, the setting would reach the temporary database too, whose staging rows need
    # no cache of that size.
    found = await connection.exec_driver_sql("PRAGMA main.cache_size")
    previous = int(found.scalar_one())
    await connection.exec_driver_sql(f"PRAGMA main.cache_size = -{kib}")
    try:
        yield
    finally:
        await connection.exec_driver_sql(f"PRAGMA main.cache_size = {previous}")
