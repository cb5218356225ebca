"""Settings read once at start-up from an environment mapping (``PIPEGRAPH_`` prefix).

``Settings.from_env(os.environ)`` in production, ``Settings.from_env({...})`` in tests: no globals.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipegraph.errors import ConfigurationError

DEFAULT_SQLITE_FILE = "pipegraph.sqlite3"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def default_database_url(directory: Path | None = None) -> str:
    """A SQLite file in the working directory: the embedded default."""
    path = (directory or Path.cwd()) / DEFAULT_SQLITE_FILE
    return f"sqlite+aiosqlite:///{path}"


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (``postgresql://``, ``sqlite:///``) and pick the async driver."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ConfigurationError(
        f"PIPEGRAPH_DATABASE_URL: unsupported database URL {url.split('://', 1)[0]!r}; "
        "use sqlite:///path/to/file.sqlite3 or postgresql://user@host/dbname"
    )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigurationError(f"{name}: expected true or false, got {raw!r}")


def _parse_int(name: str, raw: str, *, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name}: must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=default_database_url)
    host: str = "127.0.0.1"
    port: int = 8000
    # Development mode: every request acts as an admin, GraphiQL is served. Refused off loopback.
    open_access: bool = False
    graphiql: bool = False
    introspection: bool = True
    log_sql: bool = False
    pool_size: int = 10
    # API processes serving this database (``serve --workers``); per-process budgets divide by it.
    workers: int = 1
    simulation_workers: int = 1
    dask_scheduler: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "database_url", normalise_database_url(self.database_url))
        if self.open_access and not is_loopback(self.host):
            raise ConfigurationError(
                f"--open (PIPEGRAPH_OPEN) treats every request as an admin and is refused on the "
                f"non-loopback host {self.host!r}; bind to 127.0.0.1 or use API keys"
            )
        if self.workers > 1 and self.is_sqlite:
            raise ConfigurationError(
                f"PIPEGRAPH_WORKERS: {self.workers} worker processes need PostgreSQL; with SQLite, "
                "subscriptions and the queue of writers live in one process, so serve with one worker "
                "or set PIPEGRAPH_DATABASE_URL=postgresql://..."
            )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if url := env.get("PIPEGRAPH_DATABASE_URL"):
            values["database_url"] = url
        if host := env.get("PIPEGRAPH_HOST"):
            values["host"] = host
        if port := env.get("PIPEGRAPH_PORT"):
            values["port"] = _parse_int("PIPEGRAPH_PORT", port, minimum=0)
        if (raw := env.get("PIPEGRAPH_OPEN")) is not None:
            values["open_access"] = _parse_bool("PIPEGRAPH_OPEN", raw)
        if (raw := env.get("PIPEGRAPH_GRAPHIQL")) is not None:
            values["graphiql"] = _parse_bool("PIPEGRAPH_GRAPHIQL", raw)
        if (raw := env.get("PIPEGRAPH_INTROSPECTION")) is not None:
            values["introspection"] = _parse_bool("PIPEGRAPH_INTROSPECTION", raw)
        if (raw := env.get("PIPEGRAPH_LOG_SQL")) is not None:
            values["log_sql"] = _parse_bool("PIPEGRAPH_LOG_SQL", raw)
        if (raw := env.get("PIPEGRAPH_POOL_SIZE")) is not None:
            values["pool_size"] = _parse_int("PIPEGRAPH_POOL_SIZE", raw, minimum=1)
        if (raw := env.get("PIPEGRAPH_WORKERS")) is not None:
            values["workers"] = _parse_int("PIPEGRAPH_WORKERS", raw, minimum=1)
        if (raw := env.get("PIPEGRAPH_SIMULATION_WORKERS")) is not None:
            values["simulation_workers"] = _parse_int("PIPEGRAPH_SIMULATION_WORKERS", raw, minimum=1)
        if scheduler := env.get("PIPEGRAPH_DASK_SCHEDULER"):
            values["dask_scheduler"] = scheduler
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.open_access and "graphiql" not in values:
            settings = replace(settings, graphiql=True)
        return settings
