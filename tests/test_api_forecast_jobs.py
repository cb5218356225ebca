"""Simulation jobs through the running app (Starlette's TestClient runs the lifespan and a real event loop
in its own thread): the API answers while a big job runs, cancellation, progress over WebSocket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from pipegraph.api import ids
from pipegraph.app import create_app
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.services import api_keys, users
from pipegraph.services.forecasting.synthetic import TruePipeline, generate, write_history
from pipegraph.settings import Settings

TRUTH = TruePipeline(
    conversions=(0.6, 0.5), mean_days=(5.0, 10.0), arrivals_per_day=3.0, deal_mean=1_000.0, deal_sd=400.0
)
JOB_FIELDS = "id kind status trials trialsDone progress result error startedAt finishedAt"
START = f"""
mutation($input: StartSimulationInput!) {{
  startSimulation(input: $input) {{ job {{ {JOB_FIELDS} }} userErrors {{ field message code }} }}
}}
"""
CANCEL = f"""
mutation($id: ID!) {{
  cancelSimulation(id: $id) {{ job {{ {JOB_FIELDS} }} userErrors {{ field message code }} }}
}}
"""
JOB = f"query($id: ID!) {{ simulationJob(id: $id) {{ {JOB_FIELDS} }} }}"
LIGHT_FORECAST = """
query($input: ForecastInput!) { forecast(input: $input) { trials revenue { p50 } } }
"""
PROGRESS = "subscription($id: ID!) { simulationProgress(jobId: $id) { status trialsDone progress result } }"


def _prepare(url: str) -> tuple[dict[Role, str], str]:
    async def setup() -> tuple[dict[Role, str], str]:
        store = Store.from_url(url)
        try:
            await migrate.upgrade(store.engine)
            keys = {}
            async with store.write() as session:
                for role in (Role.ADMIN, Role.VIEWER):
                    user = await users.create_user(
                        session, name=role.value, email=f"{role.value.lower()}@example.com", role=role
                    )
                    _, keys[role] = await api_keys.create_api_key(session, user_id=user.id)
            lives = generate(TRUTH, np.random.default_rng(5), 120.0)
            pipeline_id = await write_history(
                store, TRUTH, lives, origin=utcnow() - timedelta(days=120), until=120.0
            )
        finally:
            await store.dispose()
        return keys, ids.encode("Pipeline", pipeline_id)

    return asyncio.run(setup())


def _post(client: TestClient, key: str, query: str, variables: dict[str, Any]) -> Any:
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _wait_for(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_api_answers_while_a_big_job_runs_and_the_job_can_be_cancelled(database_url: str) -> None:
    keys, pipeline_id = _prepare(database_url)
    admin = keys[Role.ADMIN]
    app = create_app(Settings.from_env({}, database_url=database_url))
    with TestClient(app) as client:
        variables = {"input": {"pipelineId": pipeline_id, "horizonDays": 90, "trials": 2_000_000, "seed": 1}}
        started = _post(client, admin, START, variables)["startSimulation"]
        assert started["userErrors"] == []
        job_id = started["job"]["id"]
        assert (started["job"]["status"], started["job"]["trials"]) == ("QUEUED", 2_000_000)

        def running() -> Any:
            job = _post(client, admin, JOB, {"id": job_id})["simulationJob"]
            return job if job["status"] == "RUNNING" and job["trialsDone"] > 0 else None

        first = _wait_for(running)
        # While the job runs: the health check and an interactive forecast both answer, and the job is
        # still running when they do, so neither waited for it.
        health = client.get("/healthz")
        assert (health.status_code, health.json()["status"]) == (200, "ok")
        light = {"input": {"pipelineId": pipeline_id, "trials": 1000, "seed": 2}}
        assert _post(client, admin, LIGHT_FORECAST, light)["forecast"]["trials"] == 1000
        later = _post(client, admin, JOB, {"id": job_id})["simulationJob"]
        assert later["status"] == "RUNNING"
        assert later["trialsDone"] >= first["trialsDone"]
        assert 0 < later["progress"] < 1

        cancelled = _post(client, admin, CANCEL, {"id": job_id})["cancelSimulation"]
        assert cancelled["userErrors"] == []
        assert cancelled["job"]["status"] == "CANCELLED"
        assert cancelled["job"]["finishedAt"] is not None
        time.sleep(0.6)  # more than two progress intervals: nothing is written after a cancellation
        final = _post(client, admin, JOB, {"id": job_id})["simulationJob"]
        assert (final["status"], final["trialsDone"], final["result"]) == (
            "CANCELLED",
            cancelled["job"]["trialsDone"],
            None,
        )
        again = _post(client, admin, CANCEL, {"id": job_id})["cancelSimulation"]
        assert [(e["field"], e["code"]) for e in again["userErrors"]] == [("id", "CONFLICT")]


def test_job_progress_arrives_over_websocket_until_the_result(database_url: str) -> None:
    keys, pipeline_id = _prepare(database_url)
    admin = keys[Role.ADMIN]
    app = create_app(Settings.from_env({}, database_url=database_url))
    with TestClient(app) as client:
        variables = {
            "input": {
                "pipelineId": pipeline_id,
                "kind": "LEADS_NEEDED",
                "goal": "20000",
                "confidence": 0.9,
                "horizonDays": 60,
                "trials": 20_000,
            }
        }
        job = _post(client, admin, START, variables)["startSimulation"]["job"]
        snapshots = []
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {admin}"}})
            assert ws.receive_json()["type"] == "connection_ack"
            ws.send_json(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": PROGRESS, "variables": {"id": job["id"]}},
                }
            )
            while True:
                message = ws.receive_json()
                if message["type"] == "complete":
                    break
                assert message["type"] == "next", message
                snapshots.append(message["payload"]["data"]["simulationProgress"])
        assert snapshots[-1]["status"] == "SUCCEEDED"
        assert snapshots[-1]["trialsDone"] == 20_000
        done = [s["trialsDone"] for s in snapshots]
        assert done == sorted(done)
        result = snapshots[-1]["result"]
        assert result["leads"] > 0
        assert result["p_goal"]["value"] >= 0.9
        assert result["leads_per_week"] == pytest.approx(result["leads"] * 7 / 60)
        assert result["calibration"][0].startswith("Synthetic: calibrated from stage history")


def test_bad_job_input_and_viewers_are_refused(sqlite_url: str) -> None:
    keys, pipeline_id = _prepare(sqlite_url)
    app = create_app(Settings.from_env({}, database_url=sqlite_url))
    with TestClient(app) as client:
        cases: list[tuple[dict[str, Any], Role, tuple[str | None, str]]] = [
            ({"trials": 10**9}, Role.ADMIN, ("input.trials", "INVALID")),
            ({"kind": "LEADS_NEEDED"}, Role.ADMIN, ("input.goal", "INVALID")),
            ({"pipelineId": ids.encode("Pipeline", 99)}, Role.ADMIN, ("input.pipelineId", "NOT_FOUND")),
            ({}, Role.VIEWER, ("input", "FORBIDDEN")),
        ]
        for overrides, role, expected in cases:
            variables = {"input": {"pipelineId": pipeline_id, "trials": 1000, **overrides}}
            payload = _post(client, keys[role], START, variables)["startSimulation"]
            assert payload["job"] is None
            assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [expected]
        assert (
            _post(client, keys[Role.ADMIN], JOB, {"id": ids.encode("SimulationJob", 99)})["simulationJob"]
            is None
        )
