"""For the dashboard tests: a seeded server on loopback, Debian's Chromium under Playwright, an API client.

The browser is the system's ``chromium`` (never a downloaded build). Without it the tests skip, except
under ``CI=true``, where they must run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Page, ViewportSize, expect, sync_playwright

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
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1500, "height": 900}
# axe-core's impacts that fail a page; "moderate" and "minor" are reported by axe but not gated on.
FAILING_IMPACTS = ("serious", "critical")


STAGES_QUERY = """{ pipelines { id name stages { id name isPostSale
    openCount: leadCount(status: OPEN) openValue: totalValue(status: OPEN)
    wonCount: leadCount(status: WON) wonValue: totalValue(status: WON) } } }"""


MOVE = """mutation($input: MoveLeadInput!) { moveLead(input: $input) {
    lead { version } userErrors { code message } } }"""


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


def screenshot(page: Page, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def serious_axe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now (all of axe's default rules)."""
    response: dict[str, Any] = Axe().run(page).response
    return [
        f"{violation['id']} ({violation['impact']}): {[node['target'] for node in violation['nodes']][:5]}"
        for violation in response["violations"]
        if violation["impact"] in FAILING_IMPACTS
    ]


def first_pipeline(dashboard: Dashboard) -> dict[str, Any]:
    pipeline: dict[str, Any] = dashboard.graphql(STAGES_QUERY)["pipelines"][0]
    return pipeline


def busiest(stages: list[dict[str, Any]], *, followers: int = 1) -> int:
    """The selling stage with the most open leads that has ``followers`` selling stages after it."""
    selling = [i for i, stage in enumerate(stages) if not stage["isPostSale"]]
    candidates = selling[: len(selling) - followers]
    return max(candidates, key=lambda i: int(stages[i]["openCount"]))


def open_board(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.base_url}/#board")
    expect(page.locator("#board")).to_have_attribute("data-ready", "true")
    expect(page.locator("#live-status")).to_have_attribute("data-status", "live")


def column(page: Page, stage_id: str) -> Any:
    return page.locator(f'.column[data-stage-id="{stage_id}"]')


def card_in(page: Page, stage_id: str, lead_id: str) -> Any:
    return column(page, stage_id).locator(f'.card[data-lead-id="{lead_id}"]')


def _run(work: Coroutine[Any, Any, str]) -> str:
    """Run a coroutine to completion, also while Playwright's event loop runs in this thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


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


async def _viewer_key(database_url: str) -> str:
    store = Store.from_url(database_url)
    try:
        async with store.write() as session:
            viewer = await users.create_user(
                session, name="Vera Viewer", email="vera@example.com", role=Role.VIEWER
            )
            _, key = await api_keys.create_api_key(session, user_id=viewer.id, actor=None)
    finally:
        await store.dispose()
    return key


def viewer_key(database_url: str) -> str:
    """A key for a new VIEWER of the seeded database."""
    return _run(_viewer_key(database_url))


def seed_database(folder: Path) -> tuple[str, str]:
    """A seeded SQLite file in ``folder``: its URL and a key for its admin."""
    database_url = f"sqlite:///{folder / 'dashboard.sqlite3'}"
    return database_url, _run(_seed(database_url))


@contextmanager
def serve(
    folder: Path, database_url: str, key: str, *options: str, port: int | None = None
) -> Iterator[Dashboard]:
    """``pipegraph serve [options]`` on loopback (on ``port`` if given); its log goes to ``folder``."""
    with running_server(database_url, folder, args=options, port=port) as server:
        yield Dashboard(server.base_url, key, server.log_path)


# Fixtures shared by the dashboard test modules (each module gets its own server and browser).


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    folder = tmp_path_factory.mktemp("dashboard")
    return (folder, *seed_database(folder))


@pytest.fixture(scope="module")
def dashboard(seeded: tuple[Path, str, str]) -> Iterator[Dashboard]:
    """The server as in production: API keys required."""
    with serve(*seeded) as running:
        yield running


@pytest.fixture(scope="module")
def browser(dashboard: Dashboard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium with a fresh profile for the module (the server is seeded before it starts)."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=DESKTOP,
        )
        context.set_default_timeout(20_000)
        # Assertions wait as long as actions: on a busy machine a board can take more than expect's 5 s.
        expect.set_options(timeout=20_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, dashboard: Dashboard) -> Iterator[Page]:
    """A tab signed in with the admin's key (as if it had been entered once this session)."""
    tab = browser.new_page()
    tab.add_init_script(f"sessionStorage.setItem('pipegraph.apiKey', {json.dumps(dashboard.key)})")
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        tab.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"
