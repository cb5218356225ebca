from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from api_support import CREATE_PIPELINE, Client, create_lead, create_pipeline, make_client
from pipegraph.db.models import Role
from pipegraph.db.session import Store


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


STAGES = "query($id: ID!) { pipeline(id: $id) { name stages { id name position probability targetDays } } }"


async def _stages(client: Client, pipeline_id: str) -> list[dict[str, Any]]:
    data = await client.run(STAGES, {"id": pipeline_id})
    stages: list[dict[str, Any]] = data["pipeline"]["stages"]
    return stages


async def test_templates_are_listed_and_usable(client: Client) -> None:
    data = await client.run("{ templates { key stages { name isPostSale } } }")
    keys = [t["key"] for t in data["templates"]]
    assert keys == ["GENERAL_B2B", "CLASSIC", "SOFTWARE", "REAL_ESTATE", "ECOMMERCE"]
    for key in keys:
        pipeline = await create_pipeline(client, name=f"P {key}", template=key)
        expected = next(t for t in data["templates"] if t["key"] == key)["stages"]
        assert [(s["name"], s["isPostSale"]) for s in pipeline["stages"]] == [
            (s["name"], s["isPostSale"]) for s in expected
        ]


async def test_create_pipeline_with_own_stages_and_bad_input(client: Client) -> None:
    good = {"name": "Own", "currency": "eur", "stages": [{"name": "A", "probability": 0.2}, {"name": "B"}]}
    data = await client.run(CREATE_PIPELINE, {"input": good})
    assert data["createPipeline"]["pipeline"]["currency"] == "EUR"
    for bad, field, code in (
        ({"name": "Own", "template": "CLASSIC"}, "input.name", "CONFLICT"),
        ({"name": "X", "stages": [{"name": "A"}, {"name": "a"}]}, "input.stages[1].name", "CONFLICT"),
        (
            {"name": "X", "stages": [{"name": "A", "probability": 1.5}]},
            "input.stages[0].probability",
            "INVALID",
        ),
        ({"name": "X", "template": "NOPE"}, "input.template", "INVALID"),
        ({"name": "X"}, "input.stages", "INVALID"),
        ({"name": "X", "currency": "euro", "template": "CLASSIC"}, "input.currency", "INVALID"),
    ):
        data = await client.run(CREATE_PIPELINE, {"input": bad})
        assert data["createPipeline"]["pipeline"] is None
        assert [(e["field"], e["code"]) for e in data["createPipeline"]["userErrors"]] == [(field, code)], bad
    listed = await client.run("{ pipelines { name } }")
    assert listed["pipelines"] == [{"name": "Own"}]


async def test_stage_mutations(client: Client) -> None:
    pipeline = await create_pipeline(client, template="REAL_ESTATE")
    stages = pipeline["stages"]
    added = await client.run(
        """mutation($i: AddStageInput!) { addStage(input: $i) {
             stage { id name position } userErrors { field } } }""",
        {"i": {"pipelineId": pipeline["id"], "name": "Mortgage", "position": 3, "targetDays": 20}},
    )
    assert added["addStage"]["stage"]["position"] == 3
    updated = await client.run(
        """mutation($i: UpdateStageInput!) { updateStage(input: $i) {
             stage { name probability targetDays } userErrors { field code } } }""",
        {"i": {"stageId": stages[0]["id"], "name": "First contact", "probability": None}},
    )
    assert updated["updateStage"]["stage"] == {"name": "First contact", "probability": None, "targetDays": 7}
    current = await _stages(client, pipeline["id"])
    reversed_ids = [s["id"] for s in reversed(current)]
    reordered = await client.run(
        """mutation($i: ReorderStagesInput!) { reorderStages(input: $i) {
             pipeline { stages { id } } userErrors { field code } } }""",
        {"i": {"pipelineId": pipeline["id"], "stageIds": reversed_ids}},
    )
    assert [s["id"] for s in reordered["reorderStages"]["pipeline"]["stages"]] == reversed_ids
    bad = await client.run(
        """mutation($i: ReorderStagesInput!) { reorderStages(input: $i) { userErrors { field code } } }""",
        {"i": {"pipelineId": pipeline["id"], "stageIds": reversed_ids[1:]}},
    )
    assert bad["reorderStages"]["userErrors"] == [{"field": "input.stageIds", "code": "INVALID"}]
    assert [s["id"] for s in await _stages(client, pipeline["id"])] == reversed_ids


async def test_remove_stage_moves_leads_keeps_history_and_refuses_other_pipelines(client: Client) -> None:
    pipeline = await create_pipeline(client)
    other = await create_pipeline(client, name="Other", template="CLASSIC")
    stages = pipeline["stages"]
    lead = await create_lead(client, pipeline["id"])
    remove = """mutation($i: RemoveStageInput!) { removeStage(input: $i) {
                  removedStageId targetStage { name } userErrors { field code } } }"""
    refused = await client.run(
        remove, {"i": {"stageId": stages[0]["id"], "moveLeadsToStageId": other["stages"][1]["id"]}}
    )
    assert refused["removeStage"]["userErrors"] == [{"field": "input.moveLeadsToStageId", "code": "INVALID"}]
    assert len(await _stages(client, pipeline["id"])) == len(stages)
    done = await client.run(
        remove, {"i": {"stageId": stages[0]["id"], "moveLeadsToStageId": stages[1]["id"]}}
    )
    assert done["removeStage"]["targetStage"] == {"name": "Lead Qualification"}
    current = await _stages(client, pipeline["id"])
    assert [s["name"] for s in current][:2] == ["Lead Qualification", "Needs Assessment"]
    assert [s["position"] for s in current] == list(range(len(stages) - 1))
    history = await client.run(
        """query($id: ID!) { lead(id: $id) { version stage { name }
             history { fromStage { name removed } toStage { name removed } } } }""",
        {"id": lead["id"]},
    )
    assert history["lead"]["version"] == 2
    assert history["lead"]["history"] == [
        {"fromStage": None, "toStage": {"name": "Lead Generation", "removed": True}},
        {
            "fromStage": {"name": "Lead Generation", "removed": True},
            "toStage": {"name": "Lead Qualification", "removed": False},
        },
    ]


async def test_user_mutations(client: Client) -> None:
    create = """mutation($i: CreateUserInput!) { createUser(input: $i) {
                  user { id email role capacity active } userErrors { field message code } } }"""
    data = await client.run(create, {"i": {"name": "New Rep", "email": "new@example.com", "capacity": 40}})
    user = data["createUser"]["user"]
    assert (user["role"], user["capacity"], user["active"]) == ("REP", 40, True)
    for bad, field, code in (
        ({"name": "X", "email": "bad"}, "input.email", "INVALID"),
        ({"name": "X", "email": "NEW@example.com"}, "input.email", "CONFLICT"),
        ({"name": "X", "email": "x@example.com", "capacity": -1}, "input.capacity", "INVALID"),
    ):
        data = await client.run(create, {"i": bad})
        assert [(e["field"], e["code"]) for e in data["createUser"]["userErrors"]] == [(field, code)]
    updated = await client.run(
        """mutation($i: UpdateUserInput!) { updateUser(input: $i) {
             user { role active } userErrors { code } } }""",
        {"i": {"userId": user["id"], "role": "MANAGER", "active": False}},
    )
    assert updated["updateUser"]["user"] == {"role": "MANAGER", "active": False}
    denied = await client.run(
        """mutation($i: UpdateUserInput!) { updateUser(input: $i) { user { role } userErrors { code } } }""",
        {"i": {"userId": user["id"], "role": "ADMIN"}},
        role=Role.MANAGER,
    )
    assert denied["updateUser"] == {"user": None, "userErrors": [{"code": "FORBIDDEN"}]}
    emails = [u["email"] for u in (await client.run("{ users { email } }"))["users"]]
    assert len(emails) == len(Role) + 1
