"""For the dashboard tests: a seeded server on loopback, Debian's Chromium under Playwright, an API client.

The browser is the system's ``chromium`` (never a downloaded build). Without it the tests skip, except
under ``CI=true``, where they must run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipegraph import demo
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, users
from server_support import running_server

ARTIFACTS_VARIABLE = "PIPEGRAPH_TEST_ARTIFACTS"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_LEADS_PER_PIPELINE = 60


@dataclass(frozen=True)
class Dashboard:
    """A running server and an admin's key for it."""

    base_url: str
    key: str
    log: Path

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
        )
        body: dict[str, Any] = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data


def chromium_path() -> str:
    """The system Chromium, or a skip (a failure under ``CI=true``) naming the packages to install."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        reason = "dashboard tests need Chromium: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


def artifacts_dir() -> Path:
    """Where screenshots go for a reviewer: ``$PIPEGRAPH_TEST_ARTIFACTS`` or test-artifacts/dashboard."""
    default = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
    folder = Path(os.environ.get(ARTIFACTS_VARIABLE) or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def money_text(amount: str | Decimal) -> str:
    """How the page shows an amount of US dollars: whole, half up, with thousands separators."""
    whole = Decimal(amount).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return f"-${-whole:,}" if whole < 0 else f"${whole:,}"


async def _seed(database_url: str) -> str:
    """Migrate, load a small demo and return a new key for its admin."""
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        await demo.load_demo(store, seed=7, leads_per_pipeline=DEMO_LEADS_PER_PIPELINE)
        async with store.write() as session:
            admin = next(u for u in await users.list_users(session) if u.role == Role.ADMIN)
            _, key = await api_keys.create_api_key(session, user_id=admin.id, actor=admin)
    finally:
        await store.dispose()
    return key


def seed_database(folder: Path) -> tuple[str, str]:
    """A seeded SQLite file in ``folder``: its URL and a key for its admin."""
    database_url = f"sqlite:///{folder / 'dashboard.sqlite3'}"
    return database_url, asyncio.run(_seed(database_url))


@contextmanager
def serve(folder: Path, database_url: str, key: str, *options: str) -> Iterator[Dashboard]:
    """``pipegraph serve [options]`` on loopback; its output goes to a log file in ``folder``."""
    with running_server(database_url, folder, args=options) as server:
        yield Dashboard(server.base_url, key, server.log_path)
