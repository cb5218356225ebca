"""Fuzzing a live server (``pipegraph serve`` in a subprocess, production mode, a valid API key):
schemathesis's GraphQL mode calls every root field with generated arguments, and hypothesis-graphql
generates whole documents, valid and with one schema violation each. Whatever comes in, the server
must answer below 500 and every error must be structured and masked: an ``extensions.code``, never a
traceback, never ``INTERNAL`` (a masked bug is still a bug).

Bounded for CI: fixed example counts, derandomised (the same examples on every run), no example
database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema
from schemathesis.graphql import nodes

from pipegraph.cli import main
from server_support import running_server

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schema.graphql"
FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

# Values of the custom scalars, as GraphQL literals: mostly valid, some not (the server must refuse
# those with a structured error too).
_DATES = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 1, 1))
_SCALARS: dict[str, st.SearchStrategy[str]] = {
    "Date": _DATES.map(dt.date.isoformat) | st.text(max_size=12),
    "DateTime": st.datetimes(timezones=st.just(dt.UTC)).map(dt.datetime.isoformat) | st.text(max_size=12),
    "Money": st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str) | st.text(max_size=8),
}


@dataclass(frozen=True)
class LiveServer:
    graphql_url: str
    key: str

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            self.graphql_url, json=body, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{directory / 'fuzz.sqlite3'}"
    _cli("db", "upgrade", "--database-url", url)
    _cli(
        "create-user",
        "--database-url",
        url,
        "--name",
        "Fuzz",
        "--email",
        "fuzz@example.com",
        "--role",
        "ADMIN",
    )
    key = (
        _cli("create-api-key", "--database-url", url, "--email", "fuzz@example.com").strip().splitlines()[-1]
    )
    # One key sends everything: the budget would only slow it down.
    with running_server(url, directory, env={"PIPEGRAPH_COST_BUDGET": "0"}) as server:
        yield LiveServer(server.graphql_url, key)


def assert_handled(status: int, text: str, request: object) -> None:
    """Below 500, JSON, and every error structured and not a masked bug."""
    assert status < 500, f"{text} for {request}"
    assert "Traceback" not in text
    body = httpx.Response(status, content=text.encode()).json()
    bodies = body if isinstance(body, list) else [body]
    for item in bodies:
        for error in item.get("errors") or ():
            code = (error.get("extensions") or {}).get("code")
            assert code, f"unstructured error: {error} for {request}"
            assert code != "INTERNAL", f"internal error: {error} for {request}"


# schemathesis: every root field, arguments generated from the schema file (introspection is off).
for _name, _strategy in _SCALARS.items():
    schemathesis.graphql.scalar(_name, _strategy.map(nodes.String))
schemathesis.graphql.scalar("JSON", st.just(nodes.String("{}")))
SCHEMA = schemathesis.graphql.from_path(SCHEMA_PATH)


@SCHEMA.parametrize()
@settings(FUZZ_SETTINGS, max_examples=8)
def test_schemathesis_finds_no_server_errors(case: Any, live_server: LiveServer) -> None:
    response = case.call(
        base_url=live_server.graphql_url, headers={"Authorization": f"Bearer {live_server.key}"}
    )
    assert_handled(response.status_code, response.text, case.body)


def _literal(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[graphql.ValueNode]:
    return strategy.map(lambda value: graphql.StringValueNode(value=value))


_DOCUMENT_SCALARS = {name: _literal(strategy) for name, strategy in _SCALARS.items()}
_DOCUMENT_SCALARS["JSON"] = _literal(st.just("{}"))
_SDL = SCHEMA_PATH.read_text()


@pytest.mark.parametrize("mode", [Mode.POSITIVE, Mode.NEGATIVE], ids=["valid", "one-violation"])
def test_generated_documents_get_structured_answers(live_server: LiveServer, mode: Mode) -> None:
    @given(document=from_schema(_SDL, custom_scalars=_DOCUMENT_SCALARS, mode=mode))
    @settings(FUZZ_SETTINGS, max_examples=80)
    def check(document: str) -> None:
        response = live_server.post({"query": document})
        assert_handled(response.status_code, response.text, document)

    check()
