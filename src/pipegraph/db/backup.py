"""``pipegraph db backup``: an online, consistent copy of the SQLite database.

SQLite's backup API copies the pages under one read transaction (in WAL mode that does not stop the
server from writing), so the copy is the database as of one commit, WAL content included. A plain file
copy taken while the server runs could mix pages of different commits. PostgreSQL has ``pg_dump``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from pipegraph.errors import ConfigurationError
from pipegraph.settings import normalise_database_url


def sqlite_path(database_url: str) -> Path:
    url = make_url(normalise_database_url(database_url))
    if url.get_backend_name() != "sqlite":
        raise ConfigurationError(
            "backup copies SQLite databases only; for PostgreSQL use pg_dump, e.g. "
            "pg_dump --format=custom --file pipegraph.dump postgresql://user@host/db",
            field="database",
        )
    if not url.database or url.database == ":memory:":
        raise ConfigurationError("an in-memory database has nothing to back up", field="database")
    return Path(url.database)


def backup_sqlite(database_url: str, output: Path) -> int:
    """Copy the database to ``output`` (which must not exist yet); returns the copy's size in bytes."""
    source_path = sqlite_path(database_url)
    if not source_path.is_file():
        raise ConfigurationError(f"no database file at {str(source_path)!r}", field="database")
    if output.exists():
        raise ConfigurationError(f"{str(output)!r} already exists; choose a new file", field="output")
    if not output.parent.is_dir():
        raise ConfigurationError(f"directory {str(output.parent)!r} does not exist", field="output")
    # The server's busy timeout, so a checkpoint in progress makes the copy wait rather than fail.
    source = sqlite3.connect(source_path, timeout=30)
    try:
        target = sqlite3.connect(output)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    return output.stat().st_size
