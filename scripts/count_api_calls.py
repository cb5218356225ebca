"""Python function calls per GraphQL request, counted with cProfile: a deterministic measure of what
a change to the request path costs (timings on a shared machine are too noisy for small changes).

Seeds a SQLite file with ``bench_api.seed``, then sends the same leads page as ``bench_api.py`` (50
leads with stage and owner names) in-process through the real app and prints the calls per request.
Run it on two trees to compare them, e.g. against an older commit exported with ``git archive``:

    python scripts/count_api_calls.py [--requests 200] [--leads 2000]
    PYTHONPATH=/path/to/old/src python scripts/count_api_calls.py

The throttle's budget is made large enough never to refuse (one key sends every request); a tree
without query limits ignores those settings.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import GRAPHQL_QUERY, _global_id, seed

UNTHROTTLED_ENV = {"PIPEGRAPH_COST_BUDGET": str(10**12), "PIPEGRAPH_COST_RESTORE_RATE": str(10**12)}


async def count(database_url: str, key: str, pipeline_id: int, requests: int) -> tuple[int, int]:
    """Calls per request, and primitive (non-recursive) calls per request."""
    import pipegraph
    from pipegraph.app import create_app
    from pipegraph.settings import Settings

    print(f"  pipegraph from {Path(pipegraph.__file__).parent}")
    app = create_app(Settings.from_env(UNTHROTTLED_ENV, database_url=database_url))
    body = {"query": GRAPHQL_QUERY, "variables": {"pipelineId": _global_id("Pipeline", pipeline_id)}}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://count") as client:

        async def call() -> None:
            response = await client.post("/graphql", json=body, headers=headers)
            assert response.status_code == 200, response.text
            assert len(response.json()["data"]["leads"]["edges"]) == 50

        for _ in range(20):  # warm the caches: parser, validation, cost plans, authentication
            await call()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(requests):
            await call()
        profile.disable()
    stats = pstats.Stats(profile)
    return stats.total_calls // requests, stats.prim_calls // requests  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests profiled (default 200)")
    parser.add_argument("--leads", type=int, default=2000, help="leads seeded (default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        database_url = f"sqlite:///{Path(directory) / 'count.sqlite3'}"
        key, pipeline_id = asyncio.run(seed(database_url, args.leads, 7))
        total, primitive = asyncio.run(count(database_url, key, pipeline_id, args.requests))
    print(f"  calls per request: {total} ({primitive} primitive), over {args.requests} requests")


if __name__ == "__main__":
    main()
