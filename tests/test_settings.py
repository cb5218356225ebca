from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipegraph.errors import ConfigurationError
from pipegraph.settings import DEFAULT_SQLITE_FILE, Settings


def test_default_database_is_a_sqlite_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / DEFAULT_SQLITE_FILE}"
    assert settings.is_sqlite


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.sqlite3", "sqlite+aiosqlite:///x.sqlite3"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert Settings.from_env({"PIPEGRAPH_DATABASE_URL": given}).database_url == expected


def test_unsupported_database_is_refused_with_the_variable_named() -> None:
    with pytest.raises(ConfigurationError, match="PIPEGRAPH_DATABASE_URL"):
        Settings.from_env({"PIPEGRAPH_DATABASE_URL": "mysql://u@h/db"})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_open_access_is_allowed_on_loopback_and_turns_on_graphiql(host: str) -> None:
    settings = Settings.from_env({"PIPEGRAPH_OPEN": "true", "PIPEGRAPH_HOST": host})
    assert settings.open_access
    assert settings.graphiql


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com"])
def test_open_access_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ConfigurationError, match="non-loopback"):
        Settings.from_env({"PIPEGRAPH_OPEN": "1", "PIPEGRAPH_HOST": host})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PIPEGRAPH_PORT", "eighty", "PIPEGRAPH_PORT: expected a whole number"),
        ("PIPEGRAPH_POOL_SIZE", "0", "PIPEGRAPH_POOL_SIZE: must be at least 1"),
        ("PIPEGRAPH_OPEN", "maybe", "PIPEGRAPH_OPEN: expected true or false"),
        ("PIPEGRAPH_WORKERS", "0", "PIPEGRAPH_WORKERS: must be at least 1"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({variable: value})


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"PIPEGRAPH_PORT": "9000"}, port=9100)
    assert settings.port == 9100


def test_workers_are_read_for_postgresql() -> None:
    env = {"PIPEGRAPH_DATABASE_URL": "postgresql://db.internal/pipegraph", "PIPEGRAPH_WORKERS": "4"}
    assert Settings.from_env(env).workers == 4


def test_several_workers_on_sqlite_are_refused() -> None:
    # Subscriptions and the queue of writers are per process: a second process would miss both.
    with pytest.raises(ConfigurationError, match="PIPEGRAPH_WORKERS: 2 worker processes need PostgreSQL"):
        Settings.from_env({"PIPEGRAPH_WORKERS": "2"})


def test_import_jobs_name_their_instance_and_lease() -> None:
    settings = Settings.from_env({"PIPEGRAPH_INSTANCE_ID": "web-1", "PIPEGRAPH_IMPORT_LEASE": "2.5"})
    assert (settings.import_instance, settings.import_lease) == ("web-1", 2.5)
    # By default host and port: the same again when the server restarts, so it fails its own jobs.
    assert Settings.from_env({"PIPEGRAPH_PORT": "8123"}).import_instance.endswith(":8123")
    # Several workers share host and port: each names its jobs with its process id too.
    env = {"PIPEGRAPH_DATABASE_URL": "postgresql://db/pipegraph", "PIPEGRAPH_WORKERS": "2"}
    assert Settings.from_env(env).import_instance.endswith(f":8000:{os.getpid()}")
    with pytest.raises(ConfigurationError, match="PIPEGRAPH_IMPORT_LEASE: must be a positive number"):
        Settings.from_env({"PIPEGRAPH_IMPORT_LEASE": "0"})


def test_serving_processes_collect_garbage_less_often() -> None:
    """``app_from_env`` (each ``serve --workers`` process) and ``serve`` freeze the start-up heap and
    raise the collector's thresholds; the process's settings are restored after the check."""
    import gc

    from pipegraph.app import SERVING_GC_THRESHOLDS, tune_gc_for_serving

    before = gc.get_threshold()
    try:
        tune_gc_for_serving()
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
