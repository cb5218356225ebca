"""``pipelineMetrics`` and ``setGoal`` through the app, over the hand-computed fixture (see
``metrics_fixture`` and ``test_metrics`` for the derivations)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from api_support import Client, make_client
from metrics_fixture import Fixture, load
from pipegraph.api import ids
from pipegraph.db.models import Role
from pipegraph.db.session import Store

METRICS = """
query($id: ID!, $goal: Money) {
  pipelineMetrics(pipelineId: $id, from: "2024-01-01T00:00:00Z", to: "2024-02-01T00:00:00Z",
                  now: "2024-02-10T00:00:00Z", goal: $goal) {
    from to
    stages { name entered exits conversionRate medianDaysInStage currentValue weightedValue
             stalledCount probabilitySource }
    overall { leadsCreated wonCount wonValue winRate avgWonDeal medianSalesCycleDays openValue
              weightedPipeline velocityPerDay }
    coverage { goal remaining coverage requiredCoverage covered goalIsStored }
    bottleneck { name revenueAtRisk summary }
    breakdown(by: SOURCE) { key created wonValue winRate }
    timeSeries(interval: MONTH) { start created wonCount cohortConversion }
  }
}
"""

SET_GOAL = """
mutation($input: SetGoalInput!) {
  setGoal(input: $input) { goal { periodStart periodEnd amount } userErrors { field message code } }
}
"""


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


@pytest.fixture
async def fixture(store: Store) -> Fixture:
    return await load(store)


def _pipeline_id(fixture: Fixture) -> str:
    return ids.encode("Pipeline", fixture.pipeline_id)


async def test_viewer_reads_metrics(client: Client, fixture: Fixture) -> None:
    data = await client.run(METRICS, {"id": _pipeline_id(fixture), "goal": "20000.00"}, role=Role.VIEWER)
    metrics = data["pipelineMetrics"]
    assert metrics["from"] == "2024-01-01T00:00:00+00:00"
    assert [s["name"] for s in metrics["stages"]] == [
        "Lead In",
        "Qualified",
        "Proposal",
        "Closing",
        "Onboarding",
    ]
    qualified = metrics["stages"][1]
    assert qualified == {
        "name": "Qualified",
        "entered": 5,
        "exits": 5,
        "conversionRate": 0.6,
        "medianDaysInStage": 3.0,
        "currentValue": "7500.00",
        "weightedValue": "3000.00",
        "stalledCount": 1,
        "probabilitySource": "CONFIGURED",
    }
    assert metrics["overall"] == {
        "leadsCreated": 7,
        "wonCount": 2,
        "wonValue": "9000.00",
        "winRate": 0.5,
        "avgWonDeal": "4500.00",
        "medianSalesCycleDays": 9.0,
        "openValue": "16500.00",
        "weightedPipeline": "8988.46",
        "velocityPerDay": "1000.00",
    }
    assert metrics["coverage"] == {
        "goal": "20000.00",
        "remaining": "11000.00",
        "coverage": 1.5,
        "requiredCoverage": 2.0,
        "covered": False,
        "goalIsStored": False,
    }
    assert metrics["bottleneck"]["name"] == "Closing"
    assert metrics["bottleneck"]["revenueAtRisk"] == "3200.00"
    assert metrics["breakdown"] == [
        {"key": "web", "created": 4, "wonValue": "1000.00", "winRate": 0.5},
        {"key": "referral", "created": 3, "wonValue": "8000.00", "winRate": 0.5},
    ]
    assert metrics["timeSeries"] == [
        {"start": "2024-01-01", "created": 7, "wonCount": 2, "cohortConversion": pytest.approx(2 / 7)}
    ]


async def test_manager_sets_goal_and_metrics_use_it(client: Client, fixture: Fixture) -> None:
    goal = {"pipelineId": _pipeline_id(fixture), "periodStart": "2024-01-01", "periodEnd": "2024-01-31"}
    data = await client.run(SET_GOAL, {"input": {**goal, "amount": "18000"}}, role=Role.MANAGER)
    assert data["setGoal"] == {
        "goal": {"periodStart": "2024-01-01", "periodEnd": "2024-01-31", "amount": "18000.00"},
        "userErrors": [],
    }
    coverage = (await client.run(METRICS, {"id": _pipeline_id(fixture)}))["pipelineMetrics"]["coverage"]
    # 18000 - 9000 won = 9000 remaining; 16500 open covers it 1.8333 times.
    assert coverage["goalIsStored"] is True
    assert coverage["remaining"] == "9000.00"
    assert coverage["coverage"] == pytest.approx(16500 / 9000)


@pytest.mark.parametrize(
    ("role", "change", "field", "code"),
    [
        (Role.REP, {}, "input", "FORBIDDEN"),
        (Role.MANAGER, {"periodEnd": "2023-12-01"}, "input.periodEnd", "INVALID"),
        (Role.MANAGER, {"amount": "-1"}, "input.amount", "INVALID"),
        (Role.ADMIN, {"pipelineId": ids.encode("Pipeline", 999)}, "input.pipelineId", "NOT_FOUND"),
    ],
)
async def test_bad_goal_is_a_user_error_and_stores_nothing(
    client: Client, fixture: Fixture, role: Role, change: dict[str, str], field: str | None, code: str
) -> None:
    goal = {"pipelineId": _pipeline_id(fixture), "periodStart": "2024-01-01", "periodEnd": "2024-01-31"}
    data = await client.run(SET_GOAL, {"input": {**goal, "amount": "100", **change}}, role=role)
    [error] = data["setGoal"]["userErrors"]
    assert (error["field"], error["code"]) == (field, code)
    assert data["setGoal"]["goal"] is None
    stored = await client.run(
        "query($id: ID!) { goals(pipelineId: $id) { amount } }", {"id": goal["pipelineId"]}
    )
    assert stored["goals"] == []


async def test_bad_window_names_the_argument(client: Client, fixture: Fixture) -> None:
    response = await client.raw(
        """query($id: ID!) { pipelineMetrics(pipelineId: $id, from: "2024-02-01T00:00:00Z",
           to: "2024-01-01T00:00:00Z") { from } }""",
        {"id": _pipeline_id(fixture)},
    )
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "INVALID", "field": "to"}


async def test_owner_breakdown_keys_are_user_ids(client: Client, fixture: Fixture) -> None:
    query = """
    query($id: ID!) {
      pipelineMetrics(pipelineId: $id, from: "2024-01-01T00:00:00Z", to: "2024-02-01T00:00:00Z",
                      now: "2024-02-10T00:00:00Z") { breakdown(by: OWNER) { key label } }
    }
    """
    rows = (await client.run(query, {"id": _pipeline_id(fixture)}))["pipelineMetrics"]["breakdown"]
    owned = [row for row in rows if row["key"] is not None]
    assert owned
    for row in owned:
        node = await client.run(
            "query($id: ID!) { node(id: $id) { ... on User { name } } }", {"id": row["key"]}
        )
        assert node["node"] == {"name": row["label"]}
