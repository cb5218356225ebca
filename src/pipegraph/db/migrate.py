"""Run Alembic migrations from code: ``pipegraph db upgrade``, server start-up and tests.

The migration scripts ship inside the package, so no ``alembic.ini`` is needed. On SQLite, batch
migrations rebuild a table (copy, drop, rename), and dropping a table that other rows reference fails
while foreign keys are enforced; so, as Alembic advises, enforcement is off while migrations run (it can
only change outside a transaction) and ``PRAGMA foreign_key_check`` must find nothing afterwards.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str = "") -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def _run(connection: Connection, action: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


def _sqlite_foreign_keys(connection: Connection, enforce: bool) -> None:
    # On the driver connection: through SQLAlchemy the statement would open a transaction first.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enforce else 'OFF'}")
    finally:
        cursor.close()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows with dangling references: {broken[:5]}")


async def _migrate(engine: AsyncEngine, action: str, revision: str) -> None:
    if engine.dialect.name != "sqlite":
        async with engine.begin() as connection:
            await connection.run_sync(_run, action, revision)
        return
    async with engine.connect() as connection:
        await connection.run_sync(_sqlite_foreign_keys, False)
        try:
            async with connection.begin():
                await connection.run_sync(_run, action, revision)
                await connection.run_sync(_check_foreign_keys)
        finally:
            await connection.run_sync(_sqlite_foreign_keys, True)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _migrate(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    await _migrate(engine, "downgrade", revision)
