"""GraphiQL's page loads every file from pipegraph itself (it works offline), and each file served is
the one the page's ``integrity`` hash names."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from pipegraph.app import create_app
from pipegraph.db.session import Store
from pipegraph.settings import Settings
from pipegraph.web import ASSETS, GRAPHIQL_ASSETS

_REFERENCE = re.compile(r'(?:src|href)="([^"]+)"\s+integrity="sha384-([^"]+)"')


@pytest.fixture
async def http(sqlite_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    url = sqlite_store.engine.url.render_as_string(False)
    app = create_app(Settings.from_env({}, database_url=url, graphiql=True), store=sqlite_store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


async def test_graphiql_loads_nothing_from_another_host(http: httpx.AsyncClient) -> None:
    page = await http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "unpkg.com" not in page.text
    assert not re.search(r'(?:src|href)="https?://', page.text)
    references = _REFERENCE.findall(page.text)
    assert len(references) == 7
    for path, digest in references:
        assert path.startswith(GRAPHIQL_ASSETS)
        served = await http.get(path)
        assert served.status_code == 200, path
        assert base64.b64encode(hashlib.sha384(served.content).digest()).decode() == digest, path


def test_vendored_files_keep_their_licences() -> None:
    vendor = ASSETS / "vendor" / "graphiql"
    for name in ("react.production.min.js", "react-dom.production.min.js"):
        assert "@license React" in (vendor / name).read_text()[:200]
    assert "js-cookie v3.0.5 | MIT" in (vendor / "js.cookie.min.js").read_text()[:100]
    for licence in ("LICENSE.react", "LICENSE.react-dom", "LICENSE.js-cookie", "LICENSE.graphiql"):
        assert (
            "MIT License" in (vendor / licence).read_text()
            or "Permission is hereby granted" in (vendor / licence).read_text()
        )
