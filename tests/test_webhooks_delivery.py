"""Webhooks end to end: ``pipegraph serve`` sending to a real receiver on loopback, on both backends."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from server_support import running_server, seed_database
from webhook_receiver import Receiver, running_receiver
from webhook_support import WEBHOOK_ENV, add_endpoint, lead_versions, scripted_run, wait_all_delivered


def _assert_in_order_per_lead(receiver: Receiver) -> None:
    """After de-duplication, each lead's events arrived with rising versions."""
    versions: dict[str, list[int]] = defaultdict(list)
    for received in receiver.unique().values():
        if received.type.startswith("lead."):
            versions[received.data["lead"]["id"]].append(received.data["lead"]["version"])
    for lead, seen in versions.items():
        assert seen == sorted(seen), (lead, seen)


def test_every_committed_change_arrives_once_in_order_signed(database_url: str, tmp_path: Path) -> None:
    seed = asyncio.run(seed_database(database_url))
    with running_receiver() as receiver:
        _, receiver.secret = asyncio.run(add_endpoint(database_url, receiver.url))
        with running_server(database_url, tmp_path, env=WEBHOOK_ENV) as server:
            committed, refused = asyncio.run(scripted_run([server], seed))
            receiver.wait_for(lambda r: len(r.unique()) >= committed)
            counts = wait_all_delivered(database_url, committed)
        assert refused > 0
        unique = receiver.unique()
        assert len(unique) == committed, "a refused (rolled-back) change was sent, or a change was lost"
        assert receiver.bad_signatures == 0
        assert len(receiver.snapshot()) == committed, "with a healthy receiver, each message is sent once"
        _assert_in_order_per_lead(receiver)
        sent = {
            (r.data["lead"]["id"], r.data["lead"]["version"]) for r in unique.values() if "lead" in r.data
        }
        assert sent == asyncio.run(lead_versions(database_url))
        assert sum(r.type == "activity.logged" for r in unique.values()) == 4
        assert counts["events"] == counts["deliveries"] == counts["delivered"] == committed
