from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from pipegraph.cli import main, settings_environment
from pipegraph.db.base import Base
from pipegraph.db.session import Store
from pipegraph.settings import Settings


def _query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        store = Store.from_url(url)
        try:
            async with store.read() as session:
                return [tuple(row) for row in (await session.execute(text(sql), params)).all()]
        finally:
            await store.dispose()

    return asyncio.run(run())


def _tables(url: str) -> set[str]:
    async def run() -> set[str]:
        store = Store.from_url(url)
        try:
            async with store.engine.connect() as connection:
                return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        finally:
            await store.dispose()

    return asyncio.run(run()) - {"alembic_version"}


def _create_user(url: str, email: str = "rep@example.com", role: str = "rep") -> int:
    return main(
        ["create-user", "--database-url", url, "--name", "Rita Rep", "--email", email, "--role", role]
    )


def test_db_upgrade_creates_every_table_and_downgrade_to_base_drops_them(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert _tables(database_url) == set(Base.metadata.tables)
    assert main(["db", "downgrade", "--database-url", database_url, "--revision", "base"]) == 0
    assert _tables(database_url) == set()
    assert "downgraded to base" in capsys.readouterr().out


def test_database_url_is_read_from_the_environment(sqlite_url: str) -> None:
    assert main(["db", "upgrade"], environ={"PIPEGRAPH_DATABASE_URL": sqlite_url}) == 0
    assert "leads" in _tables(sqlite_url)


def test_create_user_stores_the_user_with_its_role(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert _create_user(database_url, role="manager") == 0
    assert "created user" in capsys.readouterr().out
    rows = _query(database_url, "SELECT name, email, role, capacity FROM users")
    assert rows == [("Rita Rep", "rep@example.com", "MANAGER", 25)]


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert _create_user(database_url) == 0
    capsys.readouterr()
    assert main(["create-api-key", "--database-url", database_url, "--email", "rep@example.com"]) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert len(key.splitlines()) == 1
    assert len(key) > 32
    assert "not shown again" in captured.err
    stored = _query(database_url, "SELECT key_hash, prefix FROM api_keys")
    assert stored == [(hashlib.sha256(key.encode()).hexdigest(), key[: len(stored[0][1])])]
    # The plaintext appears nowhere in the row.
    assert all(key not in str(value) for value in stored[0])


def test_create_api_key_for_an_unknown_email_is_a_one_line_error(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", sqlite_url]) == 0
    capsys.readouterr()
    assert main(["create-api-key", "--database-url", sqlite_url, "--email", "nobody@example.com"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipegraph: error: email: no user with email 'nobody@example.com'")
    assert len(err.strip().splitlines()) == 1
    assert _query(sqlite_url, "SELECT count(*) FROM api_keys") == [(0,)]


def test_bad_role_exits_2_naming_the_option_and_the_choices(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", sqlite_url]) == 0
    capsys.readouterr()
    assert _create_user(sqlite_url, role="boss") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--role" in err
    assert "'boss'" in err
    assert "VIEWER, REP, MANAGER, ADMIN" in err
    assert _query(sqlite_url, "SELECT count(*) FROM users") == [(0,)]


def test_duplicate_email_exits_2_and_keeps_the_first_user(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", sqlite_url]) == 0
    assert _create_user(sqlite_url) == 0
    capsys.readouterr()
    assert _create_user(sqlite_url, email="REP@example.com", role="admin") == 2
    assert capsys.readouterr().err.startswith("pipegraph: error: email: ")
    assert _query(sqlite_url, "SELECT email, role FROM users") == [("rep@example.com", "REP")]


def test_bad_email_exits_2_naming_the_field(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--database-url", sqlite_url]) == 0
    capsys.readouterr()
    assert _create_user(sqlite_url, email="not-an-email") == 2
    assert capsys.readouterr().err.startswith("pipegraph: error: email: ")


def test_open_is_refused_on_a_non_loopback_host(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--open", "--database-url", sqlite_url])
    assert code == 2
    err = capsys.readouterr().err
    assert "non-loopback host '0.0.0.0'" in err
    assert len(err.strip().splitlines()) == 1
    # Refused before touching the database.
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


def test_unsupported_database_url_is_a_configuration_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--database-url", "mysql://localhost/db"]) == 2
    assert "unsupported database URL 'mysql'" in capsys.readouterr().err


def test_unreachable_database_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "db.sqlite3"
    assert main(["db", "upgrade", "--database-url", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipegraph: error: database: ")
    assert len(err.strip().splitlines()) == 1


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db"]) == 2
    assert "error:" in capsys.readouterr().err


def test_every_option_has_help_text() -> None:
    from pipegraph.cli import build_parser

    def walk(parser: Any) -> list[Any]:
        found = [parser]
        for action in parser._actions:
            if action.choices and hasattr(action, "_name_parser_map"):
                for sub in action._name_parser_map.values():
                    found += walk(sub)
        return found

    parsers = walk(build_parser())
    assert len(parsers) > 8
    missing = [
        (parser.prog, action.dest)
        for parser in parsers
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert missing == []


def test_seed_demo_loads_once_and_refuses_a_second_time(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["seed-demo", "--database-url", sqlite_url, "--leads-per-pipeline", "40"]) == 0
    assert "160 leads" in capsys.readouterr().out
    assert main(["seed-demo", "--database-url", sqlite_url]) == 2
    assert "already has pipelines" in capsys.readouterr().err
    assert _query(sqlite_url, "SELECT count(*) FROM leads") == [(160,)]


def test_export_schema_writes_the_printed_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipegraph.api.schema import print_schema

    output = tmp_path / "schema.graphql"
    assert main(["export-schema", "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8").rstrip("\n") == print_schema().rstrip("\n")
    assert main(["export-schema", "--output", "-"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == print_schema().rstrip("\n")


def test_worker_environment_rebuilds_the_same_settings(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        host="::1",
        port=9000,
        open_access=True,
        graphiql=True,
        pool_size=4,
        dask_scheduler="tcp://127.0.0.1:8786",
    )
    assert Settings.from_env(settings_environment(settings)) == settings


def test_workers_learn_how_many_they_are() -> None:
    # Per-process budgets divide by it, so every worker must see the same count.
    settings = Settings(database_url="postgresql://db.internal/pipegraph", workers=3)
    environment = settings_environment(settings)
    assert environment["PIPEGRAPH_WORKERS"] == "3"
    assert Settings.from_env(environment) == settings


def test_serve_with_several_workers_on_sqlite_exits_2_before_migrating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "one.sqlite3"
    assert main(["serve", "--workers", "2", "--database-url", f"sqlite:///{database}"]) == 2
    assert "worker processes need PostgreSQL" in capsys.readouterr().err
    assert not database.exists()
