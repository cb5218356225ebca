"""The database goes away under load and comes back: a real server (two workers) on its own PostgreSQL
database, reached through a proxy the test controls, so no other test's database is touched.

The outage has two acts, as a stopping server has: PostgreSQL ends every session of the database and
refuses new ones (``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``: real admin-shutdown errors),
then the port itself refuses connections and open ones are cut (the proxy). Every answer meanwhile must
be JSON with a code, a 503 ``DATABASE_UNAVAILABLE`` with ``Retry-After`` or a success; no connection is
dropped, no traceback is logged; a subscription asked for during the outage gets an error with a code
and no driver text; one opened before keeps working, or ends with such an error and a new one works.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from db_proxy import TcpProxy
from server_support import CREATE_LEAD, running_server, seed_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 6
LEADS = "query($id: ID!) { leads(pipelineId: $id, first: 5) { totalCount edges { node { title } } } }"
SUBSCRIBE = "subscription($id: ID!) { leadEvents(pipelineId: $id) { kind lead { title } } }"
DRIVER_TEXT = ("sqlalche", "asyncpg", "Traceback", "terminating connection")


class Load:
    """Clients sending a mix of reads and writes as fast as answers come, recording every answer."""

    def __init__(self, url: str, key: str, pipeline_id: str) -> None:
        self.url, self.key, self.pipeline_id = url, key, pipeline_id
        self.answers: list[tuple[float, int, dict[str, str], Any]] = []
        self.transport_errors: list[str] = []
        self.stopped = False

    async def client(self, number: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(timeout=30) as http:
            sent = 0
            while not self.stopped:
                sent += 1
                if sent % 3 == 0:
                    body = {"query": CREATE_LEAD, "variables": {"pipelineId": self.pipeline_id, "title": "x"}}
                else:
                    body = {"query": LEADS, "variables": {"id": self.pipeline_id}}
                try:
                    response = await http.post(self.url, json=body, headers=headers)
                except httpx.TransportError as error:
                    self.transport_errors.append(f"client {number}: {error!r}")
                    continue
                try:
                    payload = response.json()
                except ValueError:
                    payload = response.text
                self.answers.append((time.monotonic(), response.status_code, dict(response.headers), payload))

    def since(self, moment: float) -> list[tuple[float, int, dict[str, str], Any]]:
        return [answer for answer in self.answers if answer[0] >= moment]


def check_answer(status: int, headers: dict[str, str], payload: Any) -> str:
    """The answer's kind ("ok" or "unavailable"); fails on anything else."""
    assert isinstance(payload, dict), f"not JSON: {status} {payload!r}"
    if status == 200:
        assert "errors" not in payload, payload
        return "ok"
    assert status == 503, (status, payload)
    assert headers.get("retry-after", "").isdigit(), headers
    [error] = payload["errors"]
    assert error["extensions"]["code"] == "DATABASE_UNAVAILABLE", payload
    assert error["extensions"]["requestId"], payload
    assert not any(text in json.dumps(payload) for text in DRIVER_TEXT), payload
    return "unavailable"


async def ws_connect(server_url: str, key: str) -> Any:
    ws = await websockets.connect(server_url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")])
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


async def subscribe(ws: Any, operation_id: str, pipeline_id: str) -> None:
    await ws.send(
        json.dumps(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": SUBSCRIBE, "variables": {"id": pipeline_id}},
            }
        )
    )


def operation_errors(message: dict[str, Any], operation_id: str) -> list[dict[str, Any]]:
    """The GraphQL errors in a graphql-transport-ws message of one operation."""
    if message.get("id") != operation_id:
        return []
    if message["type"] == "error":
        errors: list[dict[str, Any]] = message["payload"]
        return errors
    return list(message["payload"].get("errors", [])) if message["type"] == "next" else []


async def messages_until(ws: Any, seconds: float) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            received.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            break
    return received


async def test_database_outage_under_load(postgres_url: str, tmp_path: Path) -> None:
    seed = await seed_database(postgres_url)
    database = postgres_url.rpartition("/")[2]
    admin = await asyncpg.connect(postgres_url.rpartition("/")[0] + "/postgres")
    with (
        TcpProxy.to(postgres_url) as (proxy, proxied_url),
        running_server(
            proxied_url,
            tmp_path,
            args=["--workers", "2"],
            name="outage",
            env={"PIPEGRAPH_COST_BUDGET": "0"},  # the clients send as fast as answers come
        ) as server,
    ):
        load = Load(server.graphql_url, seed.key, seed.pipeline_id)
        clients = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]
        live = await ws_connect(server.websocket_url, seed.key)
        await subscribe(live, "live", seed.pipeline_id)
        try:
            await asyncio.sleep(2)
            before = load.since(0)
            assert before
            assert {check_answer(*a[1:]) for a in before} == {"ok"}
            await messages_until(live, 0.1)  # events of the load so far

            outage_started = time.monotonic()
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1", database
            )
            await asyncio.sleep(2.5)
            proxy.refuse()
            proxy.cut()
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await subscribe(live, "during", seed.pipeline_id)
            during_messages = await messages_until(live, 2.5)
            outage_ended = time.monotonic()
            proxy.resume()

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                recent = load.since(time.monotonic() - 1)
                if recent and all(status == 200 for _, status, _, _ in recent):
                    break
            recovered = time.monotonic()
            await asyncio.sleep(2)
        finally:
            load.stopped = True
            await asyncio.gather(*clients)
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await admin.close()

        kinds = Counter(check_answer(*answer[1:]) for answer in load.since(outage_started))
        print(f"answers from the outage on: {dict(kinds)}; recovered {recovered - outage_ended:.1f} s after")
        assert load.transport_errors == []
        assert kinds["unavailable"] > 0, kinds
        assert recovered - outage_ended < 20, "no recovery"
        after = load.since(recovered)
        assert after
        assert {check_answer(*a[1:]) for a in after} == {"ok"}

        # The subscription asked for during the outage: an error with a code, no driver text.
        errors = [error for message in during_messages for error in operation_errors(message, "during")]
        # The one opened before either goes on, or ended naming the position to resume from (its reads
        # failed past their retries), and the client subscribes again on the same connection.
        live_errors = [error for message in during_messages for error in operation_errors(message, "live")]
        # A live stream that cannot go on says where to resume from.
        assert {e["extensions"]["code"] for e in live_errors} <= {"RESUME_FROM"}, live_errors
        live_id = "live"
        if live_errors:
            live_id = "again"
            await subscribe(live, live_id, seed.pipeline_id)
        assert errors, during_messages
        assert {e["extensions"]["code"] for e in errors} == {"DATABASE_UNAVAILABLE"}, errors
        assert not any(text in json.dumps(errors + live_errors) for text in DRIVER_TEXT), errors

        # The subscription delivers once the event listener is back.
        async with httpx.AsyncClient() as http:
            for _ in range(20):
                response = await http.post(
                    server.graphql_url,
                    json={
                        "query": CREATE_LEAD,
                        "variables": {"pipelineId": seed.pipeline_id, "title": "after"},
                    },
                    headers={"Authorization": f"Bearer {seed.key}"},
                )
                assert response.status_code == 200, response.text
                heard = [m for m in await messages_until(live, 1) if m.get("id") == live_id]
                titles = [
                    m["payload"]["data"]["leadEvents"]["lead"]["title"] for m in heard if m["type"] == "next"
                ]
                if "after" in titles:
                    break
            else:
                raise AssertionError(f"the subscription heard nothing after the outage: {during_messages}")
        await live.close()

        output = server.output()
        assert "Traceback" not in output, output
        assert "database unavailable" in output
