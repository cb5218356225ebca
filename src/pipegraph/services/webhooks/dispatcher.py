"""The dispatcher: every API process runs one; together they send each delivery at least once.

A round records the outcomes of the previous batch and claims the next batch of due deliveries in one
transaction (the claim is one statement; PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two processes
never claim the same row; SQLite: inside the store's single writer), then sends them concurrently.
Only the oldest pending delivery of a lead to an endpoint is ever due, so a lead's events arrive in
order. A claim counts an attempt and lasts ``lease`` seconds: a process killed mid-send leaves claims
that run out, and another (or the restarted) process sends them again — with the same
``webhook-id``, so receivers de-duplicate. An outcome is recorded only by the process holding that
attempt's claim.

A failure (no answer, a timeout, a non-2xx status) is tried again after an exponential, jittered
backoff; after ``max_attempts`` the delivery is FAILED and its endpoint disabled with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from pipegraph.db import availability
from pipegraph.db.models import WebhookDelivery, WebhookDeliveryStatus, WebhookEndpoint, WebhookEvent
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.errors import ValidationError
from pipegraph.services.webhooks import addresses, signing

logger = logging.getLogger("pipegraph.webhooks")
BATCH = 64
EXCERPT_CHARS = 200
USER_AGENT = "pipegraph-webhooks/1"
PENDING = WebhookDeliveryStatus.PENDING.value


@dataclass(frozen=True)
class DispatchPolicy:
    retry_base: float = 5.0
    max_attempts: int = 15
    lease: float = 60.0
    poll_interval: float = 1.0
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    allow_private: bool = False

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones: doubling, ±25% jitter so a
        receiver coming back is not hit by every retry at once."""
        return float(self.retry_base * 2 ** (attempts - 1) * rng.uniform(0.75, 1.25))


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    attempt: int
    event_id: int
    payload: str
    url: str
    secret: str
    endpoint_id: int


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    ok: bool
    response_code: int | None = None
    latency_ms: int | None = None
    excerpt: str = ""
    error: str = ""


def worker_name() -> str:
    """Who holds a claim: host, process and a random part (a restarted process is someone else)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def claim(session: AsyncSession, *, worker: str, lease: float, limit: int = BATCH) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries (each the oldest pending one of its lead and endpoint)."""
    now = utcnow()
    d = WebhookDelivery
    earlier = aliased(WebhookDelivery)
    blocked = exists().where(
        earlier.endpoint_id == d.endpoint_id,
        earlier.lead_id == d.lead_id,
        earlier.status == PENDING,
        earlier.id < d.id,
    )
    due = (
        select(d.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == d.endpoint_id)
        .where(
            d.status == PENDING,
            d.next_attempt_at <= now,
            or_(d.claimed_until.is_(None), d.claimed_until < now),
            WebhookEndpoint.enabled.is_(True),
            ~blocked,
        )
        .order_by(d.id)
        .limit(limit)
        .with_for_update(of=d, skip_locked=True)
    )
    statement = (
        update(d)
        .where(d.id.in_(due.scalar_subquery()))
        .values(claimed_by=worker, claimed_until=now + timedelta(seconds=lease), attempts=d.attempts + 1)
        .returning(d.id, d.attempts)
        .execution_options(synchronize_session=False)
    )
    attempts: dict[int, int] = {row[0]: row[1] for row in await session.execute(statement)}
    if not attempts:
        return []
    rows = await session.execute(
        select(
            d.id, d.event_id, WebhookEvent.payload, WebhookEndpoint.url, WebhookEndpoint.secret, d.endpoint_id
        )
        .join(WebhookEvent, WebhookEvent.id == d.event_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == d.endpoint_id)
        .where(d.id.in_(list(attempts)))
        .order_by(d.id)
    )
    return [
        Claimed(delivery_id, attempts[delivery_id], event_id, payload, url, secret, endpoint_id)
        for delivery_id, event_id, payload, url, secret, endpoint_id in rows
    ]


async def send(client: httpx.AsyncClient, claimed: Claimed, *, allow_private: bool) -> Outcome:
    """One attempt; never raises for the receiver's failures (they are the outcome)."""
    body = claimed.payload.encode()
    msg_id = signing.message_id(claimed.event_id)
    headers = signing.signed_headers(claimed.secret, msg_id, int(time.time()), body)
    headers |= {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        # Not part of the standard: which attempt this is (the id stays the same across attempts).
        "webhook-attempt": str(claimed.attempt),
    }
    started = time.perf_counter()
    try:
        await addresses.check_address(claimed.url, allow_private=allow_private)
        async with client.stream("POST", claimed.url, content=body, headers=headers) as response:
            excerpt = await _excerpt(response)
    except ValidationError as refused:
        return Outcome(claimed, ok=False, error=f"refused: {refused.message}")
    except httpx.HTTPError as error:
        latency = round((time.perf_counter() - started) * 1000)
        return Outcome(claimed, ok=False, latency_ms=latency, error=f"{type(error).__name__}: {error}"[:300])
    latency = round((time.perf_counter() - started) * 1000)
    ok = 200 <= response.status_code < 300
    failure = "" if ok else f"HTTP {response.status_code}"
    return Outcome(claimed, ok, response.status_code, latency, excerpt, failure)


async def _excerpt(response: httpx.Response) -> str:
    """The start of the body, read no further: a big answer costs nothing beyond it."""
    taken = b""
    async for chunk in response.aiter_raw():
        taken += chunk
        if len(taken) >= EXCERPT_CHARS * 4:
            break
    return taken.decode("utf-8", errors="replace")[:EXCERPT_CHARS]


async def record(
    session: AsyncSession, outcomes: list[Outcome], *, worker: str, policy: DispatchPolicy, rng: random.Random
) -> None:
    """Write each outcome, if this worker still holds that attempt's claim (else a later claim owns it)."""
    now = utcnow()
    d = WebhookDelivery
    for outcome in outcomes:
        c = outcome.claimed
        values: dict[str, object] = {
            "claimed_by": None,
            "claimed_until": None,
            "response_code": outcome.response_code,
            "latency_ms": outcome.latency_ms,
            "response_excerpt": outcome.excerpt,
            "last_error": outcome.error,
        }
        if outcome.ok:
            values |= {"status": WebhookDeliveryStatus.DELIVERED.value, "delivered_at": now}
        elif c.attempt >= policy.max_attempts:
            values["status"] = WebhookDeliveryStatus.FAILED.value
        else:
            values["next_attempt_at"] = now + timedelta(seconds=policy.backoff(c.attempt, rng))
        held = and_(d.id == c.delivery_id, d.claimed_by == worker, d.attempts == c.attempt)
        result = await session.execute(
            update(d).where(held).values(**values).execution_options(synchronize_session=False)
        )
        if result.rowcount and not outcome.ok and c.attempt >= policy.max_attempts:  # type: ignore[attr-defined]
            reason = (
                f"disabled after {c.attempt} failed attempts of delivery {c.delivery_id} "
                f"(last: {outcome.error or 'no answer'}) at {now.isoformat()}"
            )
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == c.endpoint_id, WebhookEndpoint.enabled.is_(True))
                .values(enabled=False, disabled_reason=reason, updated_at=now)
            )
            logger.warning("webhook endpoint %d %s", c.endpoint_id, reason)


async def release(session: AsyncSession, *, worker: str) -> None:
    """Give back this worker's claims (at shutdown), so they are due again at once."""
    d = WebhookDelivery
    await session.execute(
        update(d)
        .where(d.claimed_by == worker, d.status == PENDING)
        .values(claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )


class Dispatcher:
    """The sending loop of one process: start it with :meth:`start`, end it with :meth:`stop`."""

    def __init__(self, store: Store, policy: DispatchPolicy) -> None:
        self.store = store
        self.policy = policy
        self.worker = worker_name()
        self._wakeup = asyncio.Event()
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        # Outcomes sent but not yet written: recorded with the next claim, or at shutdown.
        self._unrecorded: list[Outcome] = []

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self.store.outbox_listeners.append(self.wake)
        self._task = asyncio.create_task(self.run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        if self.wake in self.store.outbox_listeners:
            self.store.outbox_listeners.remove(self.wake)
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with self.store.write() as session:
                await record(session, self._unrecorded, worker=self.worker, policy=self.policy, rng=self._rng)
                await release(session, worker=self.worker)
        except (SQLAlchemyError, OSError):
            logger.warning("webhooks: could not release claims at shutdown; they run out by themselves")

    async def run(self) -> None:
        p = self.policy
        timeout = httpx.Timeout(p.read_timeout, connect=p.connect_timeout)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while True:
                # Cleared before looking, so a wake-up during the round is not lost.
                self._wakeup.clear()
                try:
                    sent = await self.round(client)
                except Exception as error:  # the loop must outlive any one round
                    if availability.is_unavailable(error):
                        logger.warning("webhooks: %s; trying again", availability.describe(error))
                    else:
                        logger.exception("webhooks: a dispatch round failed; trying again")
                    sent = 0
                if not sent:
                    await self._idle()

    async def round(self, client: httpx.AsyncClient) -> int:
        """Record the last batch's outcomes and claim the next batch in one transaction (one turn of
        SQLite's writer lock, not two: a lead's next event is due as soon as its last is recorded),
        then send; how many were sent."""
        async with self.store.write() as session:
            await record(session, self._unrecorded, worker=self.worker, policy=self.policy, rng=self._rng)
            claimed = await claim(session, worker=self.worker, lease=self.policy.lease)
        self._unrecorded = []
        if not claimed:
            return 0
        allow = self.policy.allow_private
        self._unrecorded = list(
            await asyncio.gather(*(send(client, c, allow_private=allow) for c in claimed))
        )
        return len(claimed)

    async def _idle(self) -> None:
        """Until this process writes deliveries, or the poll interval (other processes' work, retries)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self.policy.poll_interval)
