"""``node(id:)`` answers for every type that implements ``Node``, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from api_support import Client, create_lead, create_pipeline, make_client
from pipegraph.api import ids
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services.forecasting import jobs as calibration_jobs


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for client in make_client(store):
        yield client


NODE = "query($id: ID!) { node(id: $id) { __typename id } }"


async def node(client: Client, global_id: str) -> dict[str, str] | None:
    found: dict[str, str] | None = (await client.run(NODE, {"id": global_id}))["node"]
    return found


async def test_stage_changes_are_nodes(client: Client) -> None:
    pipeline = await create_pipeline(client)
    lead = await create_lead(client, pipeline["id"])
    history = await client.run(
        "query($id: ID!) { lead(id: $id) { history { id toStage { name } } } }", {"id": lead["id"]}
    )
    [change] = history["lead"]["history"]
    assert await node(client, change["id"]) == {"__typename": "StageChange", "id": change["id"]}
    by_node = await client.run(
        "query($id: ID!) { node(id: $id) { ... on StageChange { toStage { name } toStatus } } }",
        {"id": change["id"]},
    )
    assert by_node["node"] == {"toStage": change["toStage"], "toStatus": "OPEN"}


async def test_goals_are_nodes(client: Client) -> None:
    pipeline = await create_pipeline(client)
    goal_input = {"pipelineId": pipeline["id"], "periodStart": "2026-01-01", "periodEnd": "2026-03-31"}
    set_goal = await client.run(
        "mutation($i: SetGoalInput!) { setGoal(input: $i) { goal { id amount } } }",
        {"i": {**goal_input, "amount": "5000"}},
        role=Role.MANAGER,
    )
    goal = set_goal["setGoal"]["goal"]
    assert await node(client, goal["id"]) == {"__typename": "Goal", "id": goal["id"]}


async def test_simulation_jobs_are_nodes(client: Client, store: Store) -> None:
    pipeline = await create_pipeline(client)
    async with store.write() as session:
        job = await calibration_jobs.create_job(
            session,
            pipeline_id=ids.decode_as(pipeline["id"], "Pipeline", field="id"),
            kind=calibration_jobs.JobKind.FORECAST,
            parameters=calibration_jobs.JobParameters(horizon_days=30, trials=100, seed=1),
            created_by=None,
        )
        job_id = ids.encode("SimulationJob", job.id)
    found = await client.run(
        "query($id: ID!) { node(id: $id) { __typename id ... on SimulationJob { status trials } } }",
        {"id": job_id},
    )
    assert found["node"] == {"__typename": "SimulationJob", "id": job_id, "status": "QUEUED", "trials": 100}


@pytest.mark.parametrize("type_name", ["StageChange", "Goal", "SimulationJob"])
async def test_an_unknown_id_of_these_types_is_null(client: Client, type_name: str) -> None:
    assert await node(client, ids.encode(type_name, 999_999)) is None
