"""The API's answers when its database cannot be used: a 503 ``DATABASE_UNAVAILABLE`` in the GraphQL
error shape, a JSON 500 ``INTERNAL`` for anything else escaping the app, a WebSocket closed with 1013."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pipegraph.app import create_app
from pipegraph.db.session import Store
from pipegraph.settings import Settings
from server_support import seed_database

QUERY = {"query": "{ viewer { email } }"}


def unopenable_app(tmp_path: Path) -> tuple[TestClient, str]:
    """An app whose SQLite file sits in a directory that is gone, and a key that was valid before."""
    directory = tmp_path / "data"
    directory.mkdir()
    url = f"sqlite:///{directory / 'pipegraph.sqlite3'}"
    key = asyncio.run(seed_database(url)).key
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    return TestClient(create_app(Settings.from_env({}, database_url=url))), key


def test_a_database_file_that_cannot_be_opened_is_a_503_with_a_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, key = unopenable_app(tmp_path)
    with client, caplog.at_level(logging.WARNING, logger="pipegraph.api"):
        response = client.post("/graphql", json=QUERY, headers={"Authorization": f"Bearer {key}"})
        health = client.get("/healthz")
    assert response.status_code == 503
    assert response.headers["retry-after"].isdigit()
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "DATABASE_UNAVAILABLE"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert "unable to open" not in response.text
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "database": "unreachable"}
    assert all(record.exc_info is None for record in caplog.records)
    assert any(error["extensions"]["requestId"] in record.getMessage() for record in caplog.records)


def test_a_websocket_that_cannot_be_authenticated_for_want_of_the_database_is_closed_with_1013(
    tmp_path: Path,
) -> None:
    client, key = unopenable_app(tmp_path)
    with client, client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1013


async def test_an_exception_escaping_the_app_is_a_json_500_with_the_request_id(
    sqlite_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_store.engine.url.render_as_string(hide_password=False)
    key = (await seed_database(url)).key
    async with sqlite_store.write() as session:
        # A real bug below the API and outside GraphQL execution: authentication's table is gone.
        await session.execute(text("DROP TABLE api_keys"))
    app = create_app(Settings.from_env({}, database_url=url), store=sqlite_store)
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.ERROR, logger="pipegraph.api"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post("/graphql", json=QUERY, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 500
    assert "connection" not in response.headers  # the server may keep the connection for the next request
    [error] = response.json()["errors"]
    assert error == {
        "message": "Internal server error",
        "extensions": {"code": "INTERNAL", "requestId": response.headers["x-request-id"]},
    }
    [record] = [r for r in caplog.records if error["extensions"]["requestId"] in r.getMessage()]
    assert record.exc_info is not None
