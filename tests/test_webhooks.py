"""Webhooks without a network: the outbox follows the transaction, signatures verify with the published
library, private addresses are refused, the retry schedule spans about a day."""

from __future__ import annotations

import json
import random
import time

import pytest
import standardwebhooks
from sqlalchemy import func, select

from pipegraph.cli import main
from pipegraph.db.models import WebhookDelivery, WebhookEvent
from pipegraph.db.session import Store
from pipegraph.errors import ConfigurationError, ValidationError
from pipegraph.services import leads, pipelines
from pipegraph.services.forecasting import jobs as calibration_jobs
from pipegraph.services.imports import ImportRejectedError, import_leads
from pipegraph.services.webhooks import addresses, endpoints, signing
from pipegraph.services.webhooks.dispatcher import DispatchPolicy, claim
from pipegraph.settings import Settings

URL = "http://127.0.0.1:9/hook"


async def _pipeline(store: Store) -> int:
    async with store.write() as session:
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="CLASSIC", actor=None)
        return pipeline.id


async def _count(store: Store, model: type[WebhookEvent] | type[WebhookDelivery]) -> int:
    async with store.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_rolled_back_change_writes_no_event(store: Store) -> None:
    pipeline_id = await _pipeline(store)
    async with store.write() as session:
        await endpoints.create_endpoint(session, url=URL, allow_private=True, actor=None)

    async def failing_change() -> None:
        async with store.write() as session:
            await leads.create_lead(session, pipeline_id=pipeline_id, title="Never", actor=None)
            raise RuntimeError("the change fails after its event was recorded")

    with pytest.raises(RuntimeError):
        await failing_change()
    assert await _count(store, WebhookEvent) == 0
    async with store.write() as session:
        await leads.create_lead(session, pipeline_id=pipeline_id, title="Kept", actor=None)
    assert (await _count(store, WebhookEvent), await _count(store, WebhookDelivery)) == (1, 1)


async def test_without_endpoints_nothing_is_written(store: Store) -> None:
    pipeline_id = await _pipeline(store)
    async with store.write() as session:
        await leads.create_lead(session, pipeline_id=pipeline_id, title="Quiet", actor=None)
    assert await _count(store, WebhookEvent) == 0


async def test_endpoint_gets_only_the_types_it_wants(store: Store) -> None:
    pipeline_id = await _pipeline(store)
    async with store.write() as session:
        await endpoints.create_endpoint(session, url=URL, events=["lead.won"], allow_private=True, actor=None)
        await leads.create_lead(session, pipeline_id=pipeline_id, title="Not wanted", actor=None)
    assert await _count(store, WebhookDelivery) == 0


async def test_only_the_oldest_pending_delivery_of_a_lead_is_claimed(store: Store) -> None:
    pipeline_id = await _pipeline(store)
    async with store.write() as session:
        await endpoints.create_endpoint(session, url=URL, allow_private=True, actor=None)
    for title in ("First", "Second"):
        async with store.write() as session:
            lead = await leads.create_lead(session, pipeline_id=pipeline_id, title=title, actor=None)
            await leads.update_lead(session, lead_id=lead.id, title=f"{title}, renamed", actor=None)
    async with store.write() as session:
        first = await claim(session, worker="a", lease=60)
    async with store.write() as session:
        second = await claim(session, worker="b", lease=60)
    # One per lead (its creation), then nothing: each lead's update waits for its creation.
    assert [json.loads(c.payload)["type"] for c in first] == ["lead.created", "lead.created"]
    assert second == []


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = signing.new_secret()
    body = b'{"type":"webhook.ping","timestamp":"2026-01-01T00:00:00Z","data":{}}'
    headers = signing.signed_headers(secret, "msg_1", int(time.time()), body)
    assert standardwebhooks.Webhook(secret).verify(body, headers)["type"] == "webhook.ping"
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.new_secret()).verify(body, headers)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_addresses_are_refused_naming_the_url_field(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        await addresses.check_address(addresses.check_url_shape(url), allow_private=False)
    assert refused.value.field == "url"
    await addresses.check_address(url, allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "/relative", "http://user:pw@example.com/", "http://x:99999/"]
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        addresses.check_url_shape(url)
    assert refused.value.field == "url"


async def test_endpoint_on_a_private_address_is_refused_without_the_setting(sqlite_store: Store) -> None:
    with pytest.raises(ValidationError) as refused:
        async with sqlite_store.write() as session:
            await endpoints.create_endpoint(
                session, url="http://127.0.0.1:8080/", allow_private=False, actor=None
            )
    assert refused.value.field == "url"


def test_default_retries_span_about_a_day() -> None:
    policy = DispatchPolicy()
    rng = random.Random(1)
    total = sum(policy.backoff(attempt, rng) for attempt in range(1, policy.max_attempts))
    assert 16 * 3600 < total < 30 * 3600


def test_cli_adds_lists_disables_and_removes_endpoints(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"PIPEGRAPH_DATABASE_URL": sqlite_url}
    assert main(["db", "upgrade"], environ=env) == 0
    assert main(["webhooks", "add", "--url", "http://127.0.0.1:9/hook"], environ=env) == 2
    assert "url: " in capsys.readouterr().err
    allowed = env | {"PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE": "true"}
    assert (
        main(["webhooks", "add", "--url", "http://127.0.0.1:9/hook", "--event", "lead.won"], environ=allowed)
        == 0
    )
    added = capsys.readouterr().out
    assert "added endpoint 1" in added
    assert "whsec_" in added
    assert main(["webhooks", "disable", "1"], environ=env) == 0
    assert main(["webhooks", "list"], environ=env) == 0
    assert "DISABLED (disabled by the command line" in capsys.readouterr().out
    assert main(["webhooks", "enable", "1"], environ=env) == 0
    assert main(["webhooks", "deliveries", "1"], environ=env) == 0
    assert main(["webhooks", "remove", "1"], environ=env) == 0
    assert main(["webhooks", "deliveries", "1"], environ=env) == 2
    assert "endpoint: no webhook endpoint with id 1" in capsys.readouterr().err


def test_webhook_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "PIPEGRAPH_WEBHOOKS_ALLOW_PRIVATE": "true",
            "PIPEGRAPH_WEBHOOK_RETRY_BASE": "0.5",
            "PIPEGRAPH_WEBHOOK_MAX_ATTEMPTS": "4",
            "PIPEGRAPH_WEBHOOK_DISPATCH": "false",
        }
    )
    assert settings.webhooks_allow_private
    assert (settings.webhook_retry_base, settings.webhook_max_attempts) == (0.5, 4)
    assert not settings.webhook_dispatch
    with pytest.raises(ConfigurationError, match="PIPEGRAPH_WEBHOOK_LEASE"):
        Settings.from_env({"PIPEGRAPH_WEBHOOK_LEASE": "-1"})


async def _event_types(store: Store) -> list[str]:
    async with store.read() as session:
        return list((await session.scalars(select(WebhookEvent.type).order_by(WebhookEvent.id))).all())


async def test_import_sends_its_leads_and_one_finished_event_or_nothing(sqlite_store: Store) -> None:
    pipeline_id = await _pipeline(sqlite_store)
    async with sqlite_store.write() as session:
        await endpoints.create_endpoint(session, url=URL, allow_private=True, actor=None)
    with pytest.raises(ImportRejectedError):
        async with sqlite_store.write() as session:
            await import_leads(
                session, pipeline_id=pipeline_id, csv_text="title,value\nA,1\nB,oops\n", actor=None
            )
    assert await _event_types(sqlite_store) == []
    async with sqlite_store.write() as session:
        await import_leads(session, pipeline_id=pipeline_id, csv_text="title\nA\nB\n", actor=None)
    assert await _event_types(sqlite_store) == ["lead.created", "lead.created", "import.finished"]


async def test_cancelled_simulation_job_sends_finished(sqlite_store: Store) -> None:
    pipeline_id = await _pipeline(sqlite_store)
    async with sqlite_store.write() as session:
        await endpoints.create_endpoint(session, url=URL, allow_private=True, actor=None)
        parameters = calibration_jobs.JobParameters(horizon_days=30, trials=1000)
        job = await calibration_jobs.create_job(
            session,
            pipeline_id=pipeline_id,
            kind=calibration_jobs.JobKind.FORECAST,
            parameters=parameters,
            created_by=None,
        )
    async with sqlite_store.write() as session:
        await calibration_jobs.cancel_job(session, job.id)
    async with sqlite_store.read() as session:
        payload = json.loads((await session.scalars(select(WebhookEvent.payload))).one())
    assert payload["type"] == "simulation_job.finished"
    assert payload["data"]["job"]["status"] == "CANCELLED"
