"""The graphql-http server audit (the GraphQL-over-HTTP spec's reference audit suite) against a live
``pipegraph serve``: no error and no warning, with ``application/graphql-response+json`` too.

It needs Node (18 or later, for ``fetch``) and npm: the pinned package is installed once into a cache
directory (``PIPEGRAPH_NPM_CACHE``, by default ``~/.cache/pipegraph-npm``; a few seconds the first
time). Without Node the test is skipped with the reason, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from server_support import running_server, seed_database

GRAPHQL_HTTP = "graphql-http@1.23.1"
GRAPHQL = "graphql@16.9.0"
AUDIT_SCRIPT = Path(__file__).parent / "audit" / "graphql_http_audit.mjs"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the graphql-http audit must run in CI: {reason}")
    pytest.skip(reason)


def _node_modules() -> Path:
    """graphql-http installed in the cache directory (once), or a skip/failure saying what is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("Node.js and npm are not installed (apt-get install nodejs npm)")
    major = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(major.strip().lstrip("v").split(".")[0]) < 18:
        _unavailable(f"Node.js {major.strip()} has no fetch; the audit needs 18 or later")
    default = Path.home() / ".cache" / "pipegraph-npm"
    cache = Path(os.environ.get("PIPEGRAPH_NPM_CACHE", default))
    modules = cache / "node_modules"
    if not (modules / "graphql-http" / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), GRAPHQL_HTTP, GRAPHQL],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if installed.returncode != 0:
            _unavailable(f"npm could not install {GRAPHQL_HTTP}: {installed.stderr[-500:]}")
    return modules


def test_graphql_http_server_audit_passes(tmp_path: Path) -> None:
    modules = _node_modules()
    database_url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    seed = asyncio.run(seed_database(database_url))
    # The audits ask for __type: introspection is on, as a client developer would have it.
    with running_server(database_url, tmp_path, env={"PIPEGRAPH_INTROSPECTION": "true"}) as server:
        run = subprocess.run(
            ["node", str(AUDIT_SCRIPT), server.graphql_url, seed.key],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_PATH": str(modules)},
        )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert len(results) > 50  # the whole suite ran
    failing = [f"{r['status']} {r['id']} {r['name']}: {r['reason']}" for r in results if r["status"] != "ok"]
    assert failing == []
