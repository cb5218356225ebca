"""Webhooks from the write paths that bypass the ORM: the direct lead changes and the bulk import.

While an endpoint is enabled, a direct change leaves the lead to the general path (whose session records
the webhook event), and a bulk import records each lead's ``lead.created`` and its ``import.finished``;
with none enabled, both stay on their fast paths and write no webhook rows."""

from __future__ import annotations

import io

from sqlalchemy import func, select

from api_support import create_lead, create_pipeline, make_client
from pipegraph.db.models import WebhookDelivery, WebhookEvent
from pipegraph.db.session import Store
from pipegraph.services import imports_bulk, pipelines
from pipegraph.services.webhooks import endpoints

URL = "http://127.0.0.1:9/hook"
MOVE = """
mutation($input: MoveLeadInput!) {
  moveLead(input: $input) { lead { version stage { name } } userErrors { code field message } }
}
"""


async def _event_types(store: Store) -> list[str]:
    async with store.read() as session:
        return list((await session.execute(select(WebhookEvent.type).order_by(WebhookEvent.id))).scalars())


async def _enable_endpoint(store: Store) -> None:
    async with store.write() as session:
        await endpoints.create_endpoint(session, url=URL, allow_private=True, actor=None)


async def test_direct_changes_reach_the_outbox_while_an_endpoint_is_enabled(store: Store) -> None:
    async for client in make_client(store, direct_writes=True):
        pipeline = await create_pipeline(client)
        lead = await create_lead(client, pipeline["id"])
        stages = pipeline["stages"]

        for step, to in enumerate((1, 2, 1), start=1):
            if step == 2:  # the first move had no endpoint: the direct path, no webhook rows
                assert await _event_types(store) == []
                await _enable_endpoint(store)
            change = {"leadId": lead["id"], "toStageId": stages[to]["id"], "expectedVersion": step}
            data = await client.run(MOVE, {"input": change})
            assert data["moveLead"]["userErrors"] == []
        assert await _event_types(store) == ["lead.moved", "lead.moved"]
        async with store.read() as session:
            assert await session.scalar(select(func.count()).select_from(WebhookDelivery)) == 2


async def test_a_bulk_import_records_its_leads_and_its_end(store: Store) -> None:
    async with store.write() as session:
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="CLASSIC", actor=None)
    await _enable_endpoint(store)
    csv_text = "title,value\n" + "".join(f"Deal {i},{i}00\n" for i in range(1, 8))
    async with store.write() as session:
        await imports_bulk.import_leads_bulk(
            session, pipeline_id=pipeline.id, lines=io.StringIO(csv_text), actor=None, batch_rows=3
        )
    assert await _event_types(store) == ["lead.created"] * 7 + ["import.finished"]


async def test_without_endpoints_a_bulk_import_writes_no_webhook_rows(store: Store) -> None:
    async with store.write() as session:
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="CLASSIC", actor=None)
        await imports_bulk.import_leads_bulk(
            session, pipeline_id=pipeline.id, lines=io.StringIO("title\nA\nB\n"), actor=None
        )
    assert await _event_types(store) == []
