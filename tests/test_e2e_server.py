"""End to end: ``pipegraph serve --demo`` in a subprocess, users and keys from the CLI, GraphQL over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipegraph.cli import main


@dataclass
class Server:
    base_url: str
    database_url: str
    process: subprocess.Popen[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    database_url = f"sqlite:///{tmp_path / 'e2e.sqlite3'}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEGRAPH_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipegraph.cli",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--database-url",
            database_url,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"server exited early:\n{process.communicate()[0]}"
            assert time.monotonic() < deadline, "server did not answer /healthz within 60 s"
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield Server(base_url, database_url, process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


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
    assert stale["moveLead"]["lead"] is None
    assert [e["code"] for e in stale["moveLead"]["userErrors"]] == ["CONFLICT"]

    after = {p["name"]: p for p in _data(_graphql(server, key, PIPELINES))["pipelines"]}["B2B Sales"]
    assert after["stages"][1]["leadCount"] == second["leadCount"] + 1
    assert after["stages"][2]["leadCount"] == b2b["stages"][2]["leadCount"]

    server.process.send_signal(signal.SIGINT)
    output, _ = server.process.communicate(timeout=20)
    assert server.process.returncode == 0, output
    assert "loaded demo data: 4 pipelines" in output
    assert f"serving GraphQL at {server.base_url}/graphql" in output
    assert "Traceback" not in output
