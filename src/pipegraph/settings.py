"""Settings read once at start-up from an environment mapping (``PIPEGRAPH_`` prefix).

``Settings.from_env(os.environ)`` in production, ``Settings.from_env({...})`` in tests: no globals.
"""

from __future__ import annotations

import ipaddress
import os
import socket
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


def _parse_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name}: must be a positive number of seconds, got {raw!r}")
    return value


def default_simulation_workers() -> int:
    """Interactive simulation processes unless set: two where there are two cores, so the two blocks of
    a question at the default trials run side by side."""
    return min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=default_database_url)
    host: str = "127.0.0.1"
    port: int = 8000
    # Development mode: every request acts as an admin, GraphiQL is served. Refused off loopback.
    open_access: bool = False
    graphiql: bool = False
    # Production mode hides the schema; --open turns it on unless set explicitly.
    introspection: bool = False
    log_sql: bool = False
    # Plannable reads run as one compiled statement (``pipegraph.api.plans``), plannable lead changes
    # without Strawberry (with direct writes); false: all by Strawberry.
    compiled_reads: bool = True
    # On PostgreSQL, moves, closes, reopens and detail changes run in two round trips
    # (``pipegraph.services.lead_writes``); false: all through the general path.
    direct_writes: bool = True
    pool_size: int = 10
    # API processes serving this database (``serve --workers``); more than one needs PostgreSQL.
    workers: int = 1
    # Interactive simulation processes; a question's blocks run side by side in them.
    simulation_workers: int = field(default_factory=default_simulation_workers)
    dask_scheduler: str | None = None
    # Query limits (see README, "Limits and production mode").
    max_query_cost: int = 1000
    cost_budget: int = 10_000  # per API key; 0 turns throttling off
    cost_restore_rate: int = 500  # points per second
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_batch: int = 10
    max_body_bytes: int = 4 * 1024 * 1024  # room for a 10,000-row CSV import
    request_timeout: float = 30.0  # seconds
    # Live events held per subscription before a slow one reads the log instead (nothing is dropped).
    event_feed_capacity: int = 1000
    # Webhooks (docs/webhooks.md): private targets (loopback, LAN) are refused unless allowed.
    webhooks_allow_private: bool = False
    # Whether this process sends webhooks (every API process does by default; they share the work).
    webhook_dispatch: bool = True
    # A failed delivery is tried again after about base * 2^(attempt-1) seconds (jittered), up to the
    # maximum attempts; 5 s and 15 attempts spread the retries over about 23 hours.
    webhook_retry_base: float = 5.0
    webhook_max_attempts: int = 15
    # How long a claimed delivery stays with its process; a crashed one's claims run out after this.
    webhook_lease: float = 60.0
    # How often a dispatcher looks for work written by other processes (its own wake it at once).
    webhook_poll_interval: float = 1.0
    webhook_connect_timeout: float = 5.0
    webhook_read_timeout: float = 10.0
    # Import jobs (``pipegraph.services.import_jobs``): the name of this server among those sharing the
    # database (default: host name and port, plus the process id with several workers), and how long a
    # running job's heartbeat stays good; past it, any server marks the job FAILED.
    instance_id: str | None = None
    import_lease: float = 30.0

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
    def import_instance(self) -> str:
        """This server's name on the import jobs it runs: the same again after a restart, so a
        restarted server fails its own unfinished jobs at once; unique per worker process."""
        name = self.instance_id or f"{socket.gethostname()}:{self.port}"
        return f"{name}:{os.getpid()}" if self.workers > 1 else name

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
        if (raw := env.get("PIPEGRAPH_COMPILED_READS")) is not None:
            values["compiled_reads"] = _parse_bool("PIPEGRAPH_COMPILED_READS", raw)
        if (raw := env.get("PIPEGRAPH_DIRECT_WRITES")) is not None:
            values["direct_writes"] = _parse_bool("PIPEGRAPH_DIRECT_WRITES", raw)
        if (raw := env.get("PIPEGRAPH_POOL_SIZE")) is not None:
            values["pool_size"] = _parse_int("PIPEGRAPH_POOL_SIZE", raw, minimum=1)
        if (raw := env.get("PIPEGRAPH_WORKERS")) is not None:
            values["workers"] = _parse_int("PIPEGRAPH_WORKERS", raw, minimum=1)
        if (raw := env.get("PIPEGRAPH_SIMULATION_WORKERS")) is not None:
            values["simulation_workers"] = _parse_int("PIPEGRAPH_SIMULATION_WORKERS", raw, minimum=1)
        if scheduler := env.get("PIPEGRAPH_DASK_SCHEDULER"):
            values["dask_scheduler"] = scheduler
        if instance := env.get("PIPEGRAPH_INSTANCE_ID"):
            values["instance_id"] = instance
        if (raw := env.get("PIPEGRAPH_IMPORT_LEASE")) is not None:
            values["import_lease"] = _parse_seconds("PIPEGRAPH_IMPORT_LEASE", raw)
        values.update(_limits_from_env(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.open_access and "graphiql" not in values:
            settings = replace(settings, graphiql=True)
        if settings.open_access and "introspection" not in values:
            settings = replace(settings, introspection=True)
        return settings


# Setting name -> (variable suffix, minimum): whole numbers that bound what one request may ask.
_INT_LIMITS = {
    "max_query_cost": ("MAX_QUERY_COST", 1),
    "cost_budget": ("COST_BUDGET", 0),
    "cost_restore_rate": ("COST_RESTORE_RATE", 1),
    "max_depth": ("MAX_DEPTH", 1),
    "max_aliases": ("MAX_ALIASES", 0),
    "max_tokens": ("MAX_TOKENS", 1),
    "max_batch": ("MAX_BATCH", 1),
    "max_body_bytes": ("MAX_BODY_BYTES", 1),
    "event_feed_capacity": ("EVENT_FEED_CAPACITY", 1),
}


def _limits_from_env(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, (suffix, minimum) in _INT_LIMITS.items():
        if (raw := env.get(f"PIPEGRAPH_{suffix}")) is not None:
            values[name] = _parse_int(f"PIPEGRAPH_{suffix}", raw, minimum=minimum)
    if (raw := env.get("PIPEGRAPH_REQUEST_TIMEOUT")) is not None:
        values["request_timeout"] = _parse_seconds("PIPEGRAPH_REQUEST_TIMEOUT", raw)
    values.update(_webhooks_from_env(env))
    return values


_WEBHOOK_SECONDS = {
    "webhook_retry_base": "WEBHOOK_RETRY_BASE",
    "webhook_lease": "WEBHOOK_LEASE",
    "webhook_poll_interval": "WEBHOOK_POLL_INTERVAL",
    "webhook_connect_timeout": "WEBHOOK_CONNECT_TIMEOUT",
    "webhook_read_timeout": "WEBHOOK_READ_TIMEOUT",
}


def _webhooks_from_env(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    if (raw := env.get("PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE")) is not None:
        values["webhooks_allow_private"] = _parse_bool("PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE", raw)
    if (raw := env.get("PIPEGRAPH_WEBHOOK_DISPATCH")) is not None:
        values["webhook_dispatch"] = _parse_bool("PIPEGRAPH_WEBHOOK_DISPATCH", raw)
    if (raw := env.get("PIPEGRAPH_WEBHOOK_MAX_ATTEMPTS")) is not None:
        values["webhook_max_attempts"] = _parse_int("PIPEGRAPH_WEBHOOK_MAX_ATTEMPTS", raw, minimum=1)
    for name, suffix in _WEBHOOK_SECONDS.items():
        if (raw := env.get(f"PIPEGRAPH_{suffix}")) is not None:
            values[name] = _parse_seconds(f"PIPEGRAPH_{suffix}", raw)
    return values


def limits_environment(settings: Settings) -> dict[str, str]:
    """The ``PIPEGRAPH_*`` variables of the limits, for worker processes (``PIPEGRAPH_WORKERS`` is the
    job of whoever starts them)."""
    env = {
        f"PIPEGRAPH_{suffix}": str(getattr(settings, name))
        for name, (suffix, _) in _INT_LIMITS.items()
        if name != "workers"
    }
    env["PIPEGRAPH_REQUEST_TIMEOUT"] = repr(settings.request_timeout)
    return env
