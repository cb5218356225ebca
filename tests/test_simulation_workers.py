"""Simulation workers never outlive the server: after ``kill -9`` of a ``pipegraph serve`` that ran a
forecast, its workers exit and none of them holds the listening port (a restart on it succeeds)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import httpx

from server_support import graphql, running_server, seed_database

FORECAST = """
query($id: ID!) { forecast(input: {pipelineId: $id, horizonDays: 30, trials: 200}) { trials } }
"""


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc: Linux, where the suite runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z"


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_workers_die_with_a_killed_server_and_free_its_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.sqlite3'}"
    seed = asyncio.run(seed_database(url))
    with running_server(url, tmp_path) as server:

        async def forecast() -> None:
            async with httpx.AsyncClient(timeout=120) as client:
                data = await graphql(client, server, seed.key, FORECAST, id=seed.pipeline_id)
                assert data["forecast"]["trials"] == 200

        asyncio.run(forecast())
        workers = _children(server.process.pid)
        assert workers, "the forecast ran in no worker process"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 30
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "a simulation worker outlived its server"
        assert _port_is_free(server.port)
