"""Webhooks when things go wrong, with real servers and a real receiver on both backends: a receiver
down for a while, a receiver that never recovers, a server killed mid-delivery, two servers sharing
the work."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from pipegraph.db.models import WebhookDelivery, WebhookEndpoint
from pipegraph.db.session import Store
from server_support import running_server, seed_database
from test_webhooks_delivery import _assert_in_order_per_lead
from webhook_receiver import running_receiver
from webhook_support import WEBHOOK_ENV, add_endpoint, scripted_run, wait_all_delivered


async def _endpoint_and_deliveries(database_url: str) -> tuple[WebhookEndpoint, list[WebhookDelivery]]:
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            endpoint = (await session.scalars(select(WebhookEndpoint))).one()
            deliveries = list((await session.scalars(select(WebhookDelivery))).all())
            return endpoint, deliveries
    finally:
        await store.dispose()


def test_receiver_failing_five_times_then_recovering_gets_everything(
    database_url: str, tmp_path: Path
) -> None:
    seed = asyncio.run(seed_database(database_url))
    with running_receiver(fail_first=5) as receiver:
        _, receiver.secret = asyncio.run(add_endpoint(database_url, receiver.url))
        with running_server(database_url, tmp_path, env=WEBHOOK_ENV) as server:
            committed, _ = asyncio.run(scripted_run([server], seed, leads=2))
            receiver.wait_for(lambda r: len(r.unique()) == committed)
            wait_all_delivered(database_url, committed)
        assert receiver.requests >= committed + 5
        assert receiver.bad_signatures == 0
        _assert_in_order_per_lead(receiver)
        endpoint, deliveries = asyncio.run(_endpoint_and_deliveries(database_url))
        assert endpoint.enabled
        assert {d.status for d in deliveries} == {"DELIVERED"}
        assert sum(d.attempts for d in deliveries) == receiver.requests


def test_persistent_failure_disables_the_endpoint_with_the_reason(sqlite_url: str, tmp_path: Path) -> None:
    seed = asyncio.run(seed_database(sqlite_url))
    with running_receiver(fail_first=10**6) as receiver:
        asyncio.run(add_endpoint(sqlite_url, receiver.url))
        env = WEBHOOK_ENV | {"PIPEGRAPH_WEBHOOK_MAX_ATTEMPTS": "3"}
        with running_server(sqlite_url, tmp_path, env=env) as server:
            asyncio.run(scripted_run([server], seed, leads=1))
            deadline = time.monotonic() + 30
            endpoint, deliveries = asyncio.run(_endpoint_and_deliveries(sqlite_url))
            while endpoint.enabled and time.monotonic() < deadline:
                time.sleep(0.05)
                endpoint, deliveries = asyncio.run(_endpoint_and_deliveries(sqlite_url))
        assert not endpoint.enabled
        assert "failed attempts" in endpoint.disabled_reason
        assert "HTTP 500" in endpoint.disabled_reason
        failed = [d for d in deliveries if d.status == "FAILED"]
        assert failed
        assert all(d.attempts == 3 for d in failed)
        assert failed[0].response_code == 500
        assert failed[0].response_excerpt == "down for maintenance"
        # The rest wait, still pending, for the endpoint to be enabled again.
        assert {d.status for d in deliveries} <= {"FAILED", "PENDING"}


def test_server_killed_mid_delivery_delivers_the_rest_after_restart(
    database_url: str, tmp_path: Path
) -> None:
    seed = asyncio.run(seed_database(database_url))
    env = WEBHOOK_ENV | {"PIPEGRAPH_WEBHOOK_READ_TIMEOUT": "60"}
    with running_receiver(hold=True) as receiver:
        _, receiver.secret = asyncio.run(add_endpoint(database_url, receiver.url))
        with running_server(database_url, tmp_path, env=env, name="first") as first:
            committed, _ = asyncio.run(scripted_run([first], seed, leads=3))
            receiver.wait_for(lambda r: r.held >= 1)
            first.process.kill()  # SIGKILL, mid-delivery: the receiver holds the requests open
            first.process.wait()
        receiver.release()
        assert len(receiver.unique()) < committed
        with running_server(database_url, tmp_path, env=env, name="second"):
            receiver.wait_for(lambda r: len(r.unique()) == committed)
            counts = wait_all_delivered(database_url, committed)
        assert counts["events"] == counts["delivered"] == committed
        assert receiver.bad_signatures == 0
        _assert_in_order_per_lead(receiver)


def test_two_servers_never_send_the_same_attempt_twice(database_url: str, tmp_path: Path) -> None:
    seed = asyncio.run(seed_database(database_url))
    # A long claim: with a healthy receiver, no delivery is ever claimed by both servers.
    env = WEBHOOK_ENV | {"PIPEGRAPH_WEBHOOK_LEASE": "60"}
    with running_receiver() as receiver:
        _, receiver.secret = asyncio.run(add_endpoint(database_url, receiver.url))
        with (
            running_server(database_url, tmp_path, env=env, name="a") as a,
            running_server(database_url, tmp_path, env=env, name="b") as b,
        ):
            committed, _ = asyncio.run(scripted_run([a, b], seed, leads=6))
            receiver.wait_for(lambda r: len(r.unique()) == committed)
            wait_all_delivered(database_url, committed)
        sent = Counter((r.msg_id, r.attempt) for r in receiver.snapshot())
        assert max(sent.values()) == 1
        assert len(receiver.snapshot()) == committed
        _assert_in_order_per_lead(receiver)
