"""Real servers for end-to-end tests: ``pipegraph serve`` in a subprocess, a seeded database, GraphQL calls.

The server's output goes to a file, not a pipe, so a chatty server can never block on a full pipe.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from pipegraph.api import ids
from pipegraph.db import migrate
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, pipelines, users

MOVE_LEAD = """
mutation ($leadId: ID!, $stageId: ID!, $version: Int!) {
  moveLead(input: {leadId: $leadId, toStageId: $stageId, expectedVersion: $version}) {
    lead { id version stage { name } }
    userErrors { field message code }
  }
}"""
CREATE_LEAD = """
mutation ($pipelineId: ID!, $title: String!) {
  createLead(input: {pipelineId: $pipelineId, title: $title}) {
    lead { id version }
    userErrors { field message code }
  }
}"""


@dataclass
class ServerProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    @property
    def websocket_url(self) -> str:
        return "ws" + self.graphql_url.removeprefix("http")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True)
class Seed:
    """A migrated database with an admin's key and one pipeline (global ids)."""

    key: str
    pipeline_id: str
    stage_ids: list[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def seed_database(database_url: str) -> Seed:
    store = Store.from_url(database_url)
    try:
        await migrate.upgrade(store.engine)
        async with store.write() as session:
            admin = await users.create_user(session, name="Ada", email="ada@example.com", role=Role.ADMIN)
            _, key = await api_keys.create_api_key(session, user_id=admin.id)
            pipeline = await pipelines.create_pipeline(session, name="Sales", template="CLASSIC", actor=None)
            stages = await pipelines.current_stages(session, pipeline.id)
            stage_ids = [ids.encode("Stage", stage.id) for stage in stages]
    finally:
        await store.dispose()
    return Seed(key, ids.encode("Pipeline", pipeline.id), stage_ids)


def create_lead_in_app(client: TestClient, seed: Seed, title: str) -> str:
    """A new lead in the seeded pipeline, created through an in-process app; its global id."""
    created = client.post(
        "/graphql",
        json={
            "query": "mutation($i: CreateLeadInput!) { createLead(input: $i) { lead { id } } }",
            "variables": {"i": {"pipelineId": seed.pipeline_id, "title": title}},
        },
        headers={"Authorization": f"Bearer {seed.key}"},
    ).json()
    lead_id: str = created["data"]["createLead"]["lead"]["id"]
    return lead_id


@contextmanager
def running_server(
    database_url: str,
    log_dir: Path,
    *,
    args: Sequence[str] = (),
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """``pipegraph serve`` on a free port, answering ``/healthz``; killed afterwards if still running.

    Its environment is this process's without ``PIPEGRAPH_*`` settings, plus ``env``; its output goes to
    ``log_dir/<name>.log`` (by default named after the port).
    """
    port = port or free_port()  # a given port: a restarted server where clients expect it
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEGRAPH_")} | dict(env or {})
    log_path = log_dir / f"{name or f'server-{port}'}.log"
    command = [sys.executable, "-m", "pipegraph.cli", "serve", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--database-url", database_url, *args],
            cwd=log_dir,
            env=server_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"server exited early:\n{server.output()}"
            assert time.monotonic() < deadline, f"no answer from /healthz within 60 s:\n{server.output()}"
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(server: ServerProcess, signal_number: int, timeout: float = 30) -> str:
    """Signal the server, wait for it to exit cleanly and return its whole output."""
    server.process.send_signal(signal_number)
    return wait_for_exit(server, signal_number, timeout)


def wait_for_exit(server: ServerProcess, signal_number: int, timeout: float = 30) -> str:
    """Wait for a server already sent ``signal_number`` to exit cleanly; its whole output."""
    server.process.wait(timeout=timeout)
    output = server.output()
    # uvicorn re-raises the signal once it has shut down, so a SIGTERM ends with that signal's status.
    assert server.process.returncode in (0, -signal_number), output
    assert "Traceback" not in output, output
    return output


async def graphql(
    client: httpx.AsyncClient, server: ServerProcess, key: str, query: str, **variables: Any
) -> dict[str, Any]:
    """The ``data`` of a request that must succeed at the HTTP and GraphQL levels."""
    response = await client.post(
        server.graphql_url,
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data
