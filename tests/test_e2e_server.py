"""End to end: ``pipegraph serve --demo`` in a subprocess, users and keys from the CLI, GraphQL over HTTP."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipegraph.cli import main
from server_support import ServerProcess, running_server, stop


@dataclass
class Server:
    process: ServerProcess
    database_url: str

    @property
    def base_url(self) -> str:
        return self.process.base_url


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    database_url = f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
    with running_server(database_url, tmp_path, args=["--demo"]) as process:
        yield Server(process, database_url)


def _graphql(server: Server, key: str | None, query: str, **variables: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{server.base_url}/graphql",
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=10,
    )


def _data(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


PIPELINES = "{ viewer { email role } pipelines { id name stages { id name leadCount } } }"
CREATE_LEAD = """
mutation ($pipelineId: ID!) {
  createLead(input: {pipelineId: $pipelineId, title: "Globex – pilot", company: "Globex", value: "1500.00",
                     source: "referral", budget: true, need: true}) {
    lead { id version status qualificationScore stage { name } owner { email } }
    userErrors { field message code }
  }
}"""
MOVE_LEAD = """
mutation ($leadId: ID!, $stageId: ID!, $version: Int!) {
  moveLead(input: {leadId: $leadId, toStageId: $stageId, expectedVersion: $version}) {
    lead { version stage { name } history { toStage { name } } }
    userErrors { field message code }
  }
}"""


def test_serve_demo_cli_keys_graphql_and_clean_stop(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    # Users and keys come from the CLI while the server runs on the same database.
    assert main(["create-user", "--database-url", server.database_url, "--name", "Max Manager",
                 "--email", "max@example.com", "--role", "MANAGER"]) == 0  # fmt: skip
    assert main(["create-api-key", "--database-url", server.database_url, "--email", "max@example.com"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]

    unauthenticated = _graphql(server, None, PIPELINES)
    assert unauthenticated.status_code == 401
    assert _graphql(server, "pgk_not-a-real-key", PIPELINES).status_code == 401

    data = _data(_graphql(server, key, PIPELINES))
    assert data["viewer"] == {"email": "max@example.com", "role": "MANAGER"}
    pipelines = {p["name"]: p for p in data["pipelines"]}
    assert set(pipelines) == {"B2B Sales", "Software Sales", "Real Estate", "E-commerce Recovery"}
    b2b = pipelines["B2B Sales"]
    assert sum(stage["leadCount"] for stage in b2b["stages"]) == 300
    assert all(stage["leadCount"] > 0 for stage in b2b["stages"])

    created = _data(_graphql(server, key, CREATE_LEAD, pipelineId=b2b["id"]))["createLead"]
    assert created["userErrors"] == []
    lead = created["lead"]
    assert lead["version"] == 1
    assert lead["status"] == "OPEN"
    assert lead["qualificationScore"] == 50
    assert lead["stage"]["name"] == "Lead Generation"
    assert lead["owner"]["email"] == "max@example.com"

    second = b2b["stages"][1]
    moved = _data(_graphql(server, key, MOVE_LEAD, leadId=lead["id"], stageId=second["id"], version=1))[
        "moveLead"
    ]
    assert moved["userErrors"] == []
    assert moved["lead"]["version"] == 2
    assert [h["toStage"]["name"] for h in moved["lead"]["history"]] == [
        "Lead Generation",
        "Lead Qualification",
    ]

    stale = _data(
        _graphql(server, key, MOVE_LEAD, leadId=lead["id"], stageId=b2b["stages"][2]["id"], version=1)
    )
    assert [e["code"] for e in stale["moveLead"]["userErrors"]] == ["CONFLICT"]
    assert stale["moveLead"]["lead"] == moved["lead"]  # as it is now, to retry from

    after = {p["name"]: p for p in _data(_graphql(server, key, PIPELINES))["pipelines"]}["B2B Sales"]
    assert after["stages"][1]["leadCount"] == second["leadCount"] + 1
    assert after["stages"][2]["leadCount"] == b2b["stages"][2]["leadCount"]

    output = stop(server.process, signal.SIGINT)
    assert "loaded demo data: 4 pipelines" in output
    assert f"serving GraphQL at {server.base_url}/graphql" in output
