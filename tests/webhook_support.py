"""Scripted changes through a real server and the endpoint setup of webhook tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import func, select

from pipegraph.api import ids
from pipegraph.db.models import LeadEventRow, WebhookDelivery, WebhookEvent
from pipegraph.db.session import Store
from pipegraph.services.webhooks import endpoints
from server_support import CREATE_LEAD, MOVE_LEAD, Seed, ServerProcess

# Webhook settings for servers under test: loopback receivers allowed, quick polling and retries.
WEBHOOK_ENV = {
    "PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE": "true",
    "PIPEGRAPH_WEBHOOK_POLL_INTERVAL": "0.1",
    "PIPEGRAPH_WEBHOOK_RETRY_BASE": "0.05",
    "PIPEGRAPH_WEBHOOK_LEASE": "2",
}
UPDATE_LEAD = """
mutation ($leadId: ID!, $title: String!, $version: Int!) {
  updateLead(input: {leadId: $leadId, title: $title, expectedVersion: $version}) {
    lead { version } userErrors { code }
  }
}"""
CLOSE_LEAD = """
mutation ($leadId: ID!, $version: Int!) {
  closeLead(input: {leadId: $leadId, outcome: WON, expectedVersion: $version}) {
    lead { version } userErrors { code }
  }
}"""
LOG_ACTIVITY = """
mutation ($leadId: ID!) {
  logActivity(input: {leadId: $leadId, kind: CALL, subject: "Intro call"}) {
    activity { id } userErrors { code }
  }
}"""


async def add_endpoint(database_url: str, url: str) -> tuple[int, str]:
    """An endpoint wanting every event type; its id and secret."""
    store = Store.from_url(database_url)
    try:
        async with store.write() as session:
            created = await endpoints.create_endpoint(session, url=url, allow_private=True, actor=None)
        return created.endpoint.id, created.secret
    finally:
        await store.dispose()


async def _call(
    client: httpx.AsyncClient, server: ServerProcess, key: str, query: str, **variables: Any
) -> Any:
    response = await client.post(
        server.graphql_url,
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return next(iter(body["data"].values()))


async def scripted_run(
    servers: list[ServerProcess], seed: Seed, *, leads: int = 4, prefix: str = "Lead"
) -> tuple[int, int]:
    """Per lead, concurrently across leads: create, move through the stages, rename, log a call, win;
    plus one stale move per lead (refused, rolled back). Alternates between ``servers``. The counts of
    committed and refused changes."""
    committed = refused = 0

    async def one_lead(client: httpx.AsyncClient, n: int) -> None:
        nonlocal committed, refused
        server = servers[n % len(servers)]
        created = await _call(
            client, server, seed.key, CREATE_LEAD, pipelineId=seed.pipeline_id, title=f"{prefix} {n}"
        )
        lead_id, version = created["lead"]["id"], created["lead"]["version"]
        committed += 1
        for step, stage_id in enumerate(seed.stage_ids[1:4]):
            server = servers[(n + step) % len(servers)]
            moved = await _call(
                client, server, seed.key, MOVE_LEAD, leadId=lead_id, stageId=stage_id, version=version
            )
            version = moved["lead"]["version"]
            committed += 1
        stale = await _call(
            client,
            server,
            seed.key,
            MOVE_LEAD,
            leadId=lead_id,
            stageId=seed.stage_ids[0],
            version=version - 1,
        )
        assert stale["userErrors"][0]["code"] == "CONFLICT"
        refused += 1
        renamed = await _call(
            client,
            server,
            seed.key,
            UPDATE_LEAD,
            leadId=lead_id,
            title=f"{prefix} {n} (renamed)",
            version=version,
        )
        await _call(client, server, seed.key, LOG_ACTIVITY, leadId=lead_id)
        await _call(client, server, seed.key, CLOSE_LEAD, leadId=lead_id, version=renamed["lead"]["version"])
        committed += 3

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(one_lead(client, n) for n in range(leads)))
    return committed, refused


async def outbox_counts(database_url: str) -> dict[str, int]:
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            return {
                "events": int(await session.scalar(select(func.count()).select_from(WebhookEvent)) or 0),
                "deliveries": int(
                    await session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0
                ),
                "delivered": int(
                    await session.scalar(
                        select(func.count())
                        .select_from(WebhookDelivery)
                        .where(WebhookDelivery.status == "DELIVERED")
                    )
                    or 0
                ),
                "lead_events": int(await session.scalar(select(func.count()).select_from(LeadEventRow)) or 0),
            }
    finally:
        await store.dispose()


async def lead_versions(database_url: str) -> set[tuple[str, int]]:
    """Every (lead global id, version) in the lead event log: what lead webhooks must report."""
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            rows = await session.execute(select(LeadEventRow.lead_id, LeadEventRow.version))
            return {(ids.encode("Lead", lead_id), version) for lead_id, version in rows}
    finally:
        await store.dispose()


def wait_all_delivered(database_url: str, expected: int, timeout: float = 30) -> dict[str, int]:
    """Poll until ``expected`` deliveries are recorded DELIVERED (the receiver may have them a moment
    before the sender has written so); the outbox counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = asyncio.run(outbox_counts(database_url))
        if counts["delivered"] >= expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)
