"""The direct lead changes (``pipegraph.services.lead_writes``) against the general path, the reference.

The same generated changes (moves, closes, reopens, detail changes; stale versions, refused moves,
bad values, other users' leads) go to two apps over two databases, one with direct writes and one
without, on a frozen clock: every GraphQL answer must be the same, and afterwards every row of every
table the changes write. Then the promise itself: a change costs two statements on the direct
connections and none on SQLAlchemy's.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text

from api_support import Client, create_lead, create_pipeline, make_client
from pipegraph.api import ids
from pipegraph.app import lead_writes_for
from pipegraph.db import migrate
from pipegraph.db.direct import DirectConnections
from pipegraph.db.lead_events import LOCK_SPACE
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services.events_postgres import PostgresBroker

LEAD_FIELDS = """id title company contactName contactEmail contactPhone source value status lostReason
  expectedCloseDate budget authority need timeline qualificationScore createdAt updatedAt closedAt
  stageEnteredAt version stage { id name isPostSale } owner { id email }"""
PAYLOAD = f"lead {{ {LEAD_FIELDS} }} userErrors {{ field message code }}"
MUTATIONS = {
    "move": f"mutation($i: MoveLeadInput!) {{ moveLead(input: $i) {{ {PAYLOAD} }} }}",
    "close": f"mutation($i: CloseLeadInput!) {{ closeLead(input: $i) {{ {PAYLOAD} }} }}",
    "reopen": f"mutation($i: ReopenLeadInput!) {{ reopenLead(input: $i) {{ {PAYLOAD} }} }}",
    "update": f"mutation($i: UpdateLeadInput!) {{ updateLead(input: $i) {{ {PAYLOAD} }} }}",
}
# Tables the changes write: compared row by row. The others (users, keys, pipelines: written before
# the clock is frozen, keys with random secrets) are compared by count.
WRITTEN = ("leads", "stage_history", "stage_stays", "stage_flow_days", "lead_events")
OTHERS = ("users", "api_keys", "pipelines", "stages", "activities", "goals", "simulation_jobs")


class Clock:
    """Every ``utcnow`` of pipegraph's modules, frozen at a time the test moves on."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock()
    for name, module in list(sys.modules.items()):
        if name.startswith("pipegraph") and callable(getattr(module, "utcnow", None)):
            monkeypatch.setattr(module, "utcnow", frozen)
    return frozen


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two empty databases on one backend: one for each path."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'direct.sqlite3'}", f"sqlite:///{tmp_path / 'general.sqlite3'}"
    first: str = request.getfixturevalue("postgres_url")
    return first, request.getfixturevalue("second_postgres_url")


@pytest.fixture
def second_postgres_url(postgres_url: str) -> Iterator[str]:
    """Another empty database on the same server."""
    base, _, name = postgres_url.rpartition("/")
    other = f"{name}_ref"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(f"{base}/postgres")
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{other}"'))
    try:
        yield f"{base}/{other}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)'))


@pytest.fixture
def sent_directly(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements sent on the direct connections, as they are sent."""
    sent: list[str] = []
    original = DirectConnections.connection

    @asynccontextmanager
    async def logged(self: DirectConnections) -> AsyncIterator[asyncpg.Connection]:
        def log(record: Any) -> None:
            sent.append(record.query)

        async with original(self) as connection:
            connection.add_query_logger(log)
            try:
                yield connection
            finally:
                connection.remove_query_logger(log)

    monkeypatch.setattr(DirectConnections, "connection", logged)
    return sent


@pytest.fixture
def statements() -> list[str]:
    return []


def listen_statements(store: Store, statements: list[str]) -> None:
    """Note every statement SQLAlchemy sends from now on."""

    def note(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", note)


@asynccontextmanager
async def _client(url: str, *, direct: bool) -> AsyncIterator[tuple[Client, Store]]:
    store = Store.from_url(url)
    await migrate.upgrade(store.engine)
    try:
        async for client in make_client(store, direct_writes=direct):
            yield client, store
    finally:
        await store.dispose()


async def _rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with store.read() as session:
        for table in WRITTEN:
            rows = [tuple(row) for row in await session.execute(text(f"SELECT * FROM {table}"))]
            tables[table] = sorted(rows, key=lambda row: [repr(value) for value in row])
        for table in OTHERS:
            tables[table] = [((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one(),)]
    return tables


Change = tuple[str, Role, dict[str, Any]]


def _changes(seed: int, leads: list[str], stages: list[str], count: int) -> list[Change]:
    """Changes of every kind, most of them valid; ``expectedVersion`` None is filled in with the lead's
    version at the time (or a stale one)."""
    rng = random.Random(seed)
    roles = (Role.ADMIN, Role.ADMIN, Role.MANAGER, Role.REP, Role.VIEWER)
    changes: list[Change] = []
    for _ in range(count):
        kind = rng.choice(("move", "move", "close", "reopen", "update", "update"))
        lead = rng.choice(leads)
        values: dict[str, Any] = {"leadId": lead}
        if kind == "move":
            values["toStageId"] = rng.choice(stages)
        elif kind == "close":
            values["outcome"] = rng.choice(("WON", "LOST"))
            values["reason"] = rng.choice(("", "price", "x" * 2001))
            if rng.random() < 0.5:
                values["value"] = rng.choice(("2500.00", "-1", "12.345", "99"))
        elif kind == "reopen":
            if rng.random() < 0.5:
                values["stageId"] = rng.choice(stages)
        else:
            for name, options in (
                ("title", ("Renewal", "", " Padded ", "T" * 301)),
                ("company", ("Acme", "")),
                ("contactEmail", ("a@b.co", "not-an-email")),
                ("value", ("10.00", "-5")),
                ("budget", (True, False)),
                ("need", (True, False)),
                ("expectedCloseDate", ("2026-06-30", None)),
            ):
                if rng.random() < 0.4:
                    values[name] = rng.choice(options)
        values["expectedVersion"] = rng.choice((None, None, None, "stale", "omit"))
        changes.append((kind, rng.choice(roles), values))
    return changes


async def _apply(
    client: Client, clock: Clock, changes: list[tuple[str, Role, dict[str, Any]]], owners: dict[str, str]
) -> list[Any]:
    versions: dict[str, int] = {}
    answers = []
    for step, (kind, role, template) in enumerate(changes):
        clock.now += timedelta(minutes=37, microseconds=step * 7919)
        values = dict(template)
        version = versions.get(values["leadId"], 1)
        expected = values.pop("expectedVersion")
        if expected is None:
            values["expectedVersion"] = version
        elif expected == "stale":
            values["expectedVersion"] = version - 1
        elif kind == "move":  # required there
            values["expectedVersion"] = version
        if kind == "update" and step % 5 == 0:
            values["ownerId"] = owners["rep" if step % 2 else "manager"]
        response = await client.raw(MUTATIONS[kind], {"i": values}, role=role)
        answer = response.json()
        # The throttle's figures follow the wall clock, not the change.
        answer.pop("extensions", None)
        answers.append((response.status_code, answer))
        payload = next(iter((answer.get("data") or {"none": None}).values()))
        if payload is not None and payload["lead"] is not None and not payload["userErrors"]:
            versions[values["leadId"]] = payload["lead"]["version"]
    return answers


async def test_direct_and_general_paths_write_the_same(
    two_databases: tuple[str, str], clock: Clock, sent_directly: list[str], statements: list[str]
) -> None:
    results = []
    for url, direct in zip(two_databases, (True, False), strict=True):
        clock.now = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
        async with _client(url, direct=direct) as (client, store):
            pipeline = await create_pipeline(client, template="GENERAL_B2B")
            stages = [stage["id"] for stage in pipeline["stages"]]
            leads = [
                (await create_lead(client, pipeline["id"], role=role, value="100.00"))["id"]
                for role in (Role.ADMIN, Role.REP, Role.REP, Role.MANAGER)
            ]
            owners = {
                "rep": ids.encode("User", client.user_ids[Role.REP]),
                "manager": ids.encode("User", client.user_ids[Role.MANAGER]),
            }
            if direct:
                listen_statements(store, statements)
            answers = await _apply(client, clock, _changes(13, leads, stages, 400), owners)
            results.append((answers, await _rows(store)))
    (direct_answers, direct_rows), (general_answers, general_rows) = results
    for step, (mine, reference) in enumerate(zip(direct_answers, general_answers, strict=True)):
        assert mine == reference, f"change {step}"
    for table in (*WRITTEN, *OTHERS):
        assert direct_rows[table] == general_rows[table], table
    # The corpus exercised both outcomes.
    payloads = [next(iter(answer["data"].values())) for _, answer in direct_answers if answer.get("data")]
    succeeded = sum(1 for payload in payloads if not payload["userErrors"])
    assert len(payloads) < len(direct_answers)  # some omitted the required expectedVersion
    assert 80 < succeeded < len(payloads)
    assert len(direct_rows["stage_history"]) > 60
    # Every change that succeeded was written by the direct path (the general one made none).
    if two_databases[0].startswith("sqlite"):
        direct_updates = [s for s in statements if s.startswith("UPDATE leads SET") and "WHERE leads.id" in s]
        general_updates = [
            s for s in statements if s.startswith("UPDATE leads SET") and "WHERE leads.id" not in s
        ]
        assert (len(direct_updates), general_updates) == (succeeded, [])
    else:
        assert sum(1 for s in sent_directly if s.lstrip().startswith("WITH lead AS")) == succeeded


@pytest.mark.postgres
async def test_a_change_costs_two_statements_on_the_direct_connections(
    postgres_url: str, sent_directly: list[str]
) -> None:
    async with _client(postgres_url, direct=True) as (client, store):
        pipeline = await create_pipeline(client)
        stages = [stage["id"] for stage in pipeline["stages"]]
        lead = await create_lead(client, pipeline["id"])
        general: list[str] = []
        event.listen(store.engine.sync_engine, "before_cursor_execute", lambda *a: general.append(a[2]))
        version = lead["version"]
        steps: list[tuple[str, dict[str, Any]]] = [
            ("move", {"toStageId": stages[1]}),
            ("update", {"title": "Renamed"}),
            ("move", {"toStageId": stages[2]}),
            ("close", {"outcome": "WON", "value": "300.00"}),
            ("reopen", {}),
            ("update", {"company": "Acme"}),
        ]
        # The first round prepares the statements (asyncpg also reads the types of their parameters
        # once per connection); the second is what every change costs from then on.
        for counted, (kind, values) in [(False, step) for step in steps] + [(True, step) for step in steps]:
            sent_directly.clear()
            general.clear()
            data = await client.run(
                MUTATIONS[kind], {"i": {"leadId": lead["id"], "expectedVersion": version, **values}}
            )
            payload = next(iter(data.values()))
            assert payload["userErrors"] == [], payload
            version = payload["lead"]["version"]
            if counted:
                assert len(sent_directly) == 2, (kind, sent_directly)
                assert [s for s in general if "api_keys" not in s] == [], (kind, general)


async def test_on_sqlite_a_change_is_a_few_statements_in_one_transaction(
    sqlite_url: str, tmp_path: Path, statements: list[str]
) -> None:
    counts = {}
    for url, direct in ((sqlite_url, True), (f"sqlite:///{tmp_path / 'general.sqlite3'}", False)):
        async with _client(url, direct=direct) as (client, store):
            pipeline = await create_pipeline(client)
            stages = [stage["id"] for stage in pipeline["stages"]]
            lead = await create_lead(client, pipeline["id"])
            listen_statements(store, statements)
            statements.clear()
            variables = {"i": {"leadId": lead["id"], "toStageId": stages[1], "expectedVersion": 1}}
            data = await client.run(MUTATIONS["move"], variables)
            assert data["moveLead"]["userErrors"] == []
            counts[direct] = [s for s in statements if "api_keys" not in s]
    # BEGIN IMMEDIATE, the read, the lead, its history row, the stay ended and the one started, the
    # daily totals (one batch), the event.
    assert len(counts[True]) == 8, counts[True]
    assert counts[True][0] == "BEGIN IMMEDIATE"
    assert len(counts[False]) > len(counts[True])


async def _waiting_for(connection: asyncpg.Connection, wait_event: str) -> None:
    """Return once some other backend of the database waits for a lock of that kind."""
    for _ in range(500):
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = $1",
            wait_event,
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no backend waits for a lock of kind {wait_event}")


@pytest.mark.postgres
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "general"])
async def test_a_move_locks_the_daily_totals_only_once_it_holds_the_pipeline_lock(
    postgres_url: str, direct: bool
) -> None:
    """Every writer of a pipeline shares today's totals and queues for its event lock: a move that
    waits for the lock must not hold the totals meanwhile, or the writers behind it would wait for
    them through its whole commit."""
    async with _client(postgres_url, direct=direct) as (client, _store):
        pipeline = await create_pipeline(client)
        stages = [stage["id"] for stage in pipeline["stages"]]
        lead = await create_lead(client, pipeline["id"])
        url = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
        holder, other = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            pipeline_id = await holder.fetchval("SELECT pipeline_id FROM leads")
            assert await holder.fetchval("SELECT count(*) FROM stage_flow_days") > 0
            held = holder.transaction()
            await held.start()
            await holder.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_SPACE, pipeline_id)
            values = {"leadId": lead["id"], "toStageId": stages[1], "expectedVersion": lead["version"]}
            move = asyncio.create_task(client.run(MUTATIONS["move"], {"i": values}))
            await _waiting_for(other, "advisory")
            # Every total of the pipeline, the rows the move will change among them, is free.
            await other.execute("SET lock_timeout = '5s'")
            async with other.transaction():
                updated = await other.execute(
                    "UPDATE stage_flow_days SET n = n WHERE pipeline_id = $1", pipeline_id
                )
            assert updated != "UPDATE 0"
            await held.rollback()
            payload = (await move)["moveLead"]
            assert payload["userErrors"] == []
            assert payload["lead"]["version"] == lead["version"] + 1
        finally:
            await holder.close()
            await other.close()


@pytest.mark.postgres
async def test_the_writes_connections_plan_their_statements_once(postgres_url: str) -> None:
    """The write path's connections keep one generic plan per statement (they look rows up by key), and
    the read path's connections are left to PostgreSQL's choice."""
    store = Store.from_url(postgres_url)
    broker = PostgresBroker(store.engine)
    writes = lead_writes_for(store, broker, pool_size=1)
    assert writes is not None
    plain = DirectConnections.for_engine(store.engine, size=1)
    try:
        backend: Any = writes._backend
        async with backend._connections.connection() as connection:
            assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        async with plain.connection() as connection:
            assert await connection.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await writes.close()
        await plain.close()
        await broker.close()
        await store.dispose()
