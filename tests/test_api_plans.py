"""Compiled reads against the reference path: the same request to two apps over one store, one with
compiled reads and one without, must get byte-identical answers (data, nulls, errors and codes,
cursors, ``extensions.cost``) for every role; planned requests run one statement and no BEGIN."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import nodes, queries
from sqlalchemy import event

from pipegraph import demo
from pipegraph.api import ids
from pipegraph.api import types as api_types
from pipegraph.api.plans import PlannedReads
from pipegraph.api.plans import runner as plans_runner
from pipegraph.app import create_app
from pipegraph.db.models import Role
from pipegraph.db.session import Store
from pipegraph.services import api_keys, leads, pipelines, users
from pipegraph.services import queries as queries_service
from pipegraph.services.templates import StageSpec
from pipegraph.settings import Settings

NOW = datetime(2024, 6, 1, tzinfo=UTC)
WEB = Path(__file__).parent.parent / "src" / "pipegraph" / "web" / "assets" / "js"
ODD_TITLES = [
    "Müller – Straße ☃",
    'quote " and backslash \\ here',
    "tab\tnew\nline\rbell\x07 del\x7f end",
    "emoji 🚀 and 𝄞",
    "<script>&amp;</script>",
    "  padded  ",
]


class StepClock:
    """A clock that moves one second per reading: both apps see the same budgets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@dataclass
class Pair:
    compiled: httpx.AsyncClient
    reference: httpx.AsyncClient
    plans: PlannedReads
    keys: dict[Role, str]
    ids: dict[str, list[str]]

    async def post(self, client: httpx.AsyncClient, body: dict[str, Any], role: Role) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return await client.post("/graphql", json=body, headers=headers)

    async def compare(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        role: Role = Role.ADMIN,
        operation_name: str | None = None,
    ) -> tuple[Any, bool]:
        """Both answers, checked equal byte for byte; the parsed body and whether it was planned."""
        body: dict[str, Any] = {"query": query, "variables": variables}
        if operation_name is not None:
            body["operationName"] = operation_name
        served = self.plans.served
        compiled = await self.post(self.compiled, body, role)
        planned = self.plans.served > served
        reference = await self.post(self.reference, body, role)
        assert compiled.status_code == reference.status_code, (query, compiled.text, reference.text)
        assert compiled.headers["content-type"] == reference.headers["content-type"]
        assert compiled.content == reference.content, _difference(compiled.content, reference.content)
        return compiled.json(), planned


def _difference(compiled: bytes, reference: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(compiled, reference, strict=False)) if a != b), 150)
    start = max(at - 150, 0)
    return f"compiled: {compiled[start : at + 80]!r}\nreference: {reference[start : at + 80]!r}"


async def _seed(store: Store) -> tuple[dict[Role, str], dict[str, list[str]]]:
    await demo.load_demo(store, seed=7, leads_per_pipeline=15, now=NOW)
    keys: dict[Role, str] = {}
    async with store.write() as session:
        admin = None
        for role in Role:
            user = await users.create_user(
                session,
                name=f"{role.value.title()} Ünïcode",
                email=f"{role.value.lower()}@plans.example.com",
                role=role,
            )
            _, keys[role] = await api_keys.create_api_key(session, user_id=user.id)
            admin = user if role is Role.ADMIN else admin
        # Odd values: floats without a short form, 0 and 1, microseconds, no owner, odd text.
        pipeline = await pipelines.create_pipeline(
            session,
            name="Édition ☃",
            stages=[
                StageSpec("Zero", probability=0.0, target_days=0),
                StageSpec("Third", probability=0.1 + 0.2),
                StageSpec("Tiny", probability=1e-05, exit_criteria="a\nb"),
                StageSpec("Sure", probability=1.0, is_post_sale=False),
                StageSpec("None"),
            ],
            actor=admin,
        )
        stages = await pipelines.current_stages(session, pipeline.id)
        for index, title in enumerate(ODD_TITLES * 2):
            await leads.create_lead(
                session,
                pipeline_id=pipeline.id,
                title=title,
                stage_id=stages[index % len(stages)].id,
                owner_id=None if index % 3 == 0 else admin.id if admin else None,
                company=title[::-1],
                contact_email=f"{index}@example.com",
                source=["Web", "référence", "web "][index % 3],
                value=Decimal(index * 1234) / 100 if index % 4 else 0,
                expected_close_date=date(2024, 7, index + 1) if index % 2 else None,
                budget=index % 2 == 0,
                actor=admin,
                at=NOW - timedelta(days=index, microseconds=index * 37_001),
            )
    found: dict[str, list[str]] = {"Lead": [], "Pipeline": [], "Stage": [], "User": []}
    async with store.read() as session:
        from sqlalchemy import text

        for type_name, table in (
            ("Lead", "leads"),
            ("Pipeline", "pipelines"),
            ("Stage", "stages"),
            ("User", "users"),
        ):
            rows = await session.execute(text(f"SELECT id FROM {table} ORDER BY id"))
            found[type_name] = [ids.encode(type_name, row[0]) for row in rows]
    return keys, found


# The clock both paths read for daysInStage, isStalled and stalledOnly: one reading, with microseconds.
CLOCK = NOW + timedelta(days=2, seconds=45_296, microseconds=789_013)


@pytest.fixture
async def pair(store: Store, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pair]:
    keys, found = await _seed(store)
    for module in (api_types, queries_service, plans_runner):
        monkeypatch.setattr(module, "utcnow", lambda: CLOCK)
    url = store.engine.url.render_as_string(hide_password=False)
    clients = []
    apps = []
    for compiled in (True, False):
        app = create_app(Settings.from_env({}, database_url=url, compiled_reads=compiled), store=store)
        assert app.state.limits.throttle is not None
        app.state.limits.throttle._clock = StepClock()
        apps.append(app)
        clients.append(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        )
    assert apps[1].state.plans is None
    try:
        yield Pair(clients[0], clients[1], apps[0].state.plans, keys, found)
    finally:
        await apps[0].state.plans.close()
        for client in clients:
            await client.aclose()


LEAD_FIELDS = (
    "id title company contactName contactEmail contactPhone source value status lostReason "
    "expectedCloseDate budget authority need timeline qualificationScore createdAt updatedAt closedAt "
    "stageEnteredAt version __typename"
)
STAGE_FIELDS = "id name position probability targetDays exitCriteria isPostSale removed __typename"
PLANNED = [
    # The board page and its generalisations.
    "query Board($p: ID!) { leads(pipelineId: $p, first: 50, filter: {statuses: [OPEN]}) "
    "{ edges { node { id title value stage { name } owner { name } } } } }",
    f"{{ leads(first: 100) {{ totalCount pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} "
    f"edges {{ cursor node {{ {LEAD_FIELDS} stage {{ {STAGE_FIELDS} pipeline {{ id name }} }} "
    "owner { id name email role capacity active createdAt __typename } "
    "pipeline { id name currency description archived createdAt updatedAt __typename } } } } }",
    "{ leads(last: 7, orderBy: {field: VALUE, direction: ASC}) { pageInfo { hasNextPage hasPreviousPage "
    "startCursor endCursor } nodes { value title } } }",
    "{ a: leads(first: 3, orderBy: {field: TITLE}) { edges { cursor node { title } } __typename } "
    "b: leads(first: 0) { totalCount pageInfo { hasNextPage startCursor } edges { cursor } } }",
    '{ leads(first: 5, orderBy: {field: UPDATED_AT, direction: ASC}, filter: {search: "ü"}) '
    "{ totalCount nodes { title updatedAt } } }",
    '{ leads(first: 5, orderBy: {field: STAGE_ENTERED_AT}, filter: {sources: [" WEB"], minValue: "5", '
    'maxValue: "100.5", createdAfter: "2024-01-01T00:00:00Z", createdBefore: "2024-06-01T00:00:00+02:00"}) '
    "{ totalCount totalValue edges { node { title source value } } } }",
    '{ leads(first: 4, filter: {search: "%_\\\\"}) { totalCount totalValue } }',
    # What the clock decides: days in stage (floats), stalled leads, the stalled filter.
    "query Stalled($p: ID!) { leads(pipelineId: $p, first: 30, orderBy: {field: STAGE_ENTERED_AT}) "
    "{ nodes { daysInStage isStalled status stage { targetDays } } } "
    "stalled: leads(first: 20, filter: {stalledOnly: true}) { totalCount totalValue "
    "pageInfo { hasNextPage endCursor } "
    "edges { cursor node { id isStalled daysInStage } } } }",
    "query Card($id: ID!) { lead(id: $id) { isStalled daysInStage owner { name } } "
    "n: node(id: $id) { ... on Lead { daysInStage } } }",
    "{ pipelines { id name currency description archived createdAt updatedAt __typename } "
    "all: pipelines(includeArchived: true) { name } }",
    "fragment L on Lead { title owner { ...U } } fragment U on User { name email } "
    "query One($id: ID!, $yes: Boolean!, $no: Boolean = false) { lead(id: $id) { ...L id @include(if: $yes) "
    "value @skip(if: $yes) stage @include(if: $no) { name } } n: node(id: $id) { __typename id "
    "... on Lead { title stage { position } } ... on Pipeline { name } } }",
]


def _variables(pair: Pair) -> dict[str, Any]:
    return {"p": pair.ids["Pipeline"][-1], "id": pair.ids["Lead"][-3], "yes": True}


@pytest.mark.parametrize("role", list(Role))
async def test_plannable_corpus_is_answered_alike_for_every_role(pair: Pair, role: Role) -> None:
    for query in PLANNED:
        variables = _variables(pair)
        used = {name: value for name, value in variables.items() if f"${name}" in query}
        _, planned = await pair.compare(query, used, role=role)
        assert planned, (query, pair.plans.fallbacks)
    # Every lead by id and as a node, and every pipeline.
    for lead_id in pair.ids["Lead"][::4]:
        query = (
            "query($id: ID!) { lead(id: $id) { id title stage { id } owner { id } } node(id: $id) { id } }"
        )
        assert (await pair.compare(query, {"id": lead_id}, role=role))[1]
    for pipeline_id in pair.ids["Pipeline"]:
        query = "query($id: ID!) { pipeline(id: $id) { id name archived } }"
        assert (await pair.compare(query, {"id": pipeline_id}, role=role))[1]


async def test_every_page_is_reached_alike_forwards_and_backwards(pair: Pair) -> None:
    for order in ("CREATED_AT", "VALUE", "TITLE", "STAGE_ENTERED_AT"):
        for direction in ("ASC", "DESC"):
            query = (
                "query($first: Int, $after: String, $last: Int, $before: String) { leads(first: $first, "
                "after: $after, last: $last, before: $before, "
                f"orderBy: {{field: {order}, direction: {direction}}}) "
                "{ pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
                "edges { cursor node { id } } } }"
            )
            seen: list[str] = []
            variables: dict[str, Any] = {"first": 7}
            while True:
                data, planned = await pair.compare(query, variables)
                assert planned
                page = data["data"]["leads"]
                seen += [edge["node"]["id"] for edge in page["edges"]]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                variables = {"first": 7, "after": page["pageInfo"]["endCursor"]}
            assert len(seen) == len(set(seen)) == len(pair.ids["Lead"])
            backwards: list[str] = []
            variables = {"last": 9}
            while True:
                data, planned = await pair.compare(query, variables)
                page = data["data"]["leads"]
                backwards = [edge["node"]["id"] for edge in page["edges"]] + backwards
                if not page["pageInfo"]["hasPreviousPage"]:
                    break
                variables = {"last": 9, "before": page["pageInfo"]["startCursor"]}
            assert backwards == seen


BAD = [
    ('{ lead(id: "nope") { id } }', None),
    ('{ lead(id: "UGlwZWxpbmU6MQ==") { id } }', None),  # a Pipeline's ID
    ('{ lead(id: "TGVhZDo5OTk5OTk=") { id title } }', None),  # no such lead: null
    ('{ node(id: "TGVhZDo5OTk5OTk=") { id } }', None),
    ('{ node(id: "UGlwZWxpbmU6MQ==") { id ... on Pipeline { name } } }', None),
    ('{ pipeline(id: "TGVhZDox") { id } }', None),
    ("{ leads(first: -1) { totalCount } }", None),
    ("{ leads(first: 101) { totalCount } }", None),
    ("{ leads(first: 2, last: 2) { totalCount } }", None),
    ('{ leads(after: "not-a-cursor") { totalCount } }', None),
    ('{ leads(after: "WyJUSVRMRSIsZmFsc2UsIngiLDNd") { totalCount } }', None),  # another ordering
    ('{ leads(pipelineId: "TGVhZDox") { totalCount } }', None),
    ('{ leads(filter: {minValue: "1.234"}) { totalCount } }', None),
    ('{ leads(filter: {stageIds: ["nope"]}) { totalCount } }', None),
    ("query($f: Int) { leads(first: $f) { totalCount } }", {"f": "ten"}),
    ("query($id: ID!) { lead(id: $id) { id } }", {}),
    ("{ leads { edges { node { nope } } } }", None),
    ("{ leads(first: 1, filter: {stalledOnly: true}) { edges { node { history { id } } } } }", None),
    ("{ pipelines { name stages { name } } }", None),
    ("{ viewer { name } leads(first: 1) { totalCount } }", None),
    ("{ leads(first: 1) { edges { node { title } } }", None),  # a syntax error
    ('{ leads(filter: {search: "nul \\u0000"}) { totalCount } }', None),
    ("query($s: String) { leads(filter: {search: $s}) { totalCount } }", {"s": "\x00"}),
    ("query($s: String) { leads(filter: {search: $s}) { totalCount } }", {"s": "long" * 100}),
    ("query A { pipelines { name } } query B { pipelines { id } }", None),
    ('mutation { createUser(input: {name: "x", email: "x@y.z"}) { userErrors { code } } }', None),
]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ADMIN])
async def test_bad_input_is_refused_alike(pair: Pair, role: Role) -> None:
    for query, variables in BAD:
        if query.startswith("mutation") and role is Role.ADMIN:
            continue  # a write would change what the second app reads
        data, planned = await pair.compare(query, variables, role=role)
        if "errors" in data:
            assert not planned, query


def _dashboard_operations() -> dict[str, str]:
    """The dashboard's operations by name, their ``${...}`` filled from the same module."""
    found: dict[str, str] = {}
    for path in sorted(WEB.glob("*.js")):
        source = path.read_text()
        constants = dict(re.findall(r"const (\w+) = `([^`]*)`;", source))
        constants.update(re.findall(r"const (\w+) = (\d+);", source))
        constants.update(re.findall(r'const (\w+) = "([^"]*)";', source))

        def fill(match: re.Match[str], constants: dict[str, str] = constants) -> str:
            return constants.get(match.group(1), match.group(0))

        for body in constants.values():
            text = re.sub(r"\$\{(\w+)\}", fill, body)
            match = re.match(r"\s*(query|mutation) (\w+)", text)
            if match and "${" not in text:
                found[match.group(2)] = text
    return found


async def test_dashboard_and_readme_operations_are_answered_alike(pair: Pair) -> None:
    operations = _dashboard_operations()
    assert {"Start", "BoardPipeline", "BoardColumn", "BoardLead", "LeadPanel", "Metrics"} <= operations.keys()
    pipeline_id, lead_id = pair.ids["Pipeline"][0], pair.ids["Lead"][5]
    reads: dict[str, dict[str, Any]] = {
        "Start": {},
        "BoardPipeline": {"id": pipeline_id},
        "BoardColumn": {
            "pipelineId": pipeline_id,
            "filter": {"stageIds": [pair.ids["Stage"][0]]},
            "after": None,
        },
        "BoardLead": {"id": lead_id},
        "LeadPanel": {"id": lead_id},
    }
    stalled = {"stageIds": [pair.ids["Stage"][0]], "stalledOnly": True}
    reads["BoardColumn stalled"] = {**reads["BoardColumn"], "filter": stalled}
    planned = set()
    for name, variables in reads.items():
        operation = name.split()[0]
        if (await pair.compare(operations[operation], variables, operation_name=operation))[1]:
            planned.add(name)
    # The board's columns and cards, the requests a board makes all day, are planned.
    assert planned == {"BoardColumn", "BoardColumn stalled", "BoardLead"}
    # The others fall back without being sent (a mutation would change the store between the two apps).
    for name, text in operations.items():
        if name not in reads:
            assert pair.plans.explain(text, name) is not None, name
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for block in re.findall(r"```graphql\n(.*?)```", readme, re.DOTALL):
        # A subscription needs a stream: a plain POST is refused (STREAMING_REQUIRED, with a request id).
        if "pipelineMetrics" not in block and not block.lstrip().startswith("subscription"):
            await pair.compare(block)
    assert pair.plans.explain(operations["LeadPanel"], "LeadPanel") == "Lead.history"
    assert pair.plans.explain(operations["Start"], "Start") == "Query.viewer"


# -- generated documents -----------------------------------------------------------------------------

PLANNABLE_SDL = """
scalar Money
scalar DateTime
scalar Date
enum LeadStatus { OPEN WON LOST }
enum Role { VIEWER REP MANAGER ADMIN }
enum LeadOrderField { CREATED_AT UPDATED_AT STAGE_ENTERED_AT VALUE TITLE }
enum OrderDirection { ASC DESC }
input LeadFilter { stageIds: [ID!] statuses: [LeadStatus!] ownerIds: [ID!] sources: [String!]
  minValue: Money maxValue: Money createdAfter: DateTime createdBefore: DateTime search: String }
input LeadOrder { field: LeadOrderField! = CREATED_AT direction: OrderDirection! = DESC }
interface Node { id: ID! }
type User implements Node { id: ID! name: String! email: String! role: Role! capacity: Int! active: Boolean!
  createdAt: DateTime! }
type Pipeline implements Node { id: ID! name: String! currency: String! description: String!
  archived: Boolean! createdAt: DateTime! updatedAt: DateTime! }
type Stage implements Node { id: ID! name: String! position: Int! probability: Float targetDays: Int
  exitCriteria: String! isPostSale: Boolean! removed: Boolean! pipeline: Pipeline! }
type Lead implements Node { id: ID! title: String! company: String! contactName: String! contactEmail: String!
  contactPhone: String! source: String! value: Money! status: LeadStatus! lostReason: String!
  expectedCloseDate: Date budget: Boolean! authority: Boolean! need: Boolean! timeline: Boolean!
  qualificationScore: Int! createdAt: DateTime! updatedAt: DateTime! closedAt: DateTime
  stageEnteredAt: DateTime! version: Int! stage: Stage! owner: User pipeline: Pipeline! }
type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }
type LeadEdge { node: Lead! cursor: String! }
type LeadConnection { edges: [LeadEdge!]! nodes: [Lead!]! pageInfo: PageInfo! totalCount: Int! }
type Query {
  node(id: ID!): Node
  pipelines(includeArchived: Boolean! = false): [Pipeline!]!
  pipeline(id: ID!): Pipeline
  lead(id: ID!): Lead
  leads(pipelineId: ID, filter: LeadFilter, orderBy: LeadOrder, first: Int, after: String, last: Int,
        before: String): LeadConnection!
}
"""


def _generated(pair: Pair, count: int) -> list[str]:
    every_id = [i for found in pair.ids.values() for i in found[:4]] + pair.ids["Lead"] + ["bad", ""]
    scalars: dict[str, st.SearchStrategy[graphql.ValueNode]] = {
        "ID": st.sampled_from(every_id).map(nodes.String),
        "Int": st.sampled_from([0, 1, 2, 5, 20, 100, -1, 101]).map(nodes.Int),
        "String": st.sampled_from(["web", "Ü", "deal", "%", "x"]).map(nodes.String),
        "Money": st.sampled_from(["0", "12.5", "100.00", "1.234", "-1"]).map(nodes.String),
        "DateTime": st.sampled_from(["2024-01-01T00:00:00Z", "2024-05-20T22:29:50.5+02:00", "yesterday"]).map(
            nodes.String
        ),
    }
    documents: list[str] = []

    @settings(
        derandomize=True,
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(queries(PLANNABLE_SDL, custom_scalars=scalars))
    def collect(document: str) -> None:
        documents.append(document)

    collect()
    return documents


@pytest.mark.slow
async def test_generated_documents_are_answered_alike(pair: Pair) -> None:
    documents = _generated(pair, 300)
    planned = 0
    for index, document in enumerate(documents):
        role = list(Role)[index % len(Role)]
        planned += (await pair.compare(document, role=role))[1]
    # Most are planned; the rest were refused (bad IDs, page sizes, amounts) or cost too much.
    assert planned >= len(documents) // 3, pair.plans.fallbacks
    assert pair.plans.fallbacks["database error"] == 0, pair.plans.fallbacks


# -- what a planned request costs the database ---------------------------------------------------------


async def test_a_planned_request_runs_one_statement_and_no_transaction(pair: Pair, store: Store) -> None:
    through_sqlalchemy: list[str] = []

    def record(*args: Any) -> None:
        through_sqlalchemy.append(args[2])

    board = PLANNED[0]
    variables = {"p": pair.ids["Pipeline"][-1]}
    await pair.compare(board, variables)  # the key is authenticated once, then cached
    statements: list[str] = []
    reader: Any = pair.plans.reader
    original: Callable[..., Any] = reader.fetch_text

    async def counting(statement: str, params: list[Any]) -> str:
        statements.append(statement)
        text: str = await original(statement, params)
        return text

    reader.fetch_text = counting
    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    sent: list[str] = []
    if store.is_sqlite:
        sent_before = 0
    else:
        connection = reader._connections._idle[-1]  # the direct connections of the reader
        connection.add_query_logger(lambda record: sent.append(record.query))
        sent_before = 0
    try:
        for pipeline_id in pair.ids["Pipeline"][-3:]:
            served = pair.plans.served
            body = {"query": board, "variables": {"p": pipeline_id}}
            response = await pair.post(pair.compiled, body, Role.ADMIN)
            assert response.status_code == 200
            assert pair.plans.served == served + 1
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 3
    assert len(set(statements)) == 1  # one text per plan: each connection prepares it once
    assert through_sqlalchemy == []  # no BEGIN, no COMMIT, no ping
    if not store.is_sqlite:
        for _ in range(3):  # asyncpg calls its query loggers soon after each query
            await asyncio.sleep(0)
        assert len(sent) - sent_before == 3
        assert not any(re.match(r"\s*(BEGIN|COMMIT|ROLLBACK|START)", q, re.IGNORECASE) for q in sent)


async def test_fallbacks_are_counted_with_their_reason(pair: Pair) -> None:
    await pair.compare("{ pipelines { name stages { name } } }")
    await pair.compare("{ leads(first: 1) { edges { node { history { id } } } } }")
    assert pair.plans.fallbacks["Pipeline.stages"] == 1
    assert pair.plans.fallbacks["Lead.history"] == 1
    assert pair.plans.explain("{ pipelines { name } }") is None
    assert pair.plans.explain("mutation { deleteEverything }") == "does not validate"


async def test_cost_refusals_and_throttling_are_alike(store: Store) -> None:
    keys, found = await _seed(store)
    url = store.engine.url.render_as_string(hide_password=False)
    clients, apps = [], []
    for compiled in (True, False):
        app = create_app(
            Settings.from_env(
                {},
                database_url=url,
                compiled_reads=compiled,
                max_query_cost=200,
                cost_budget=400,
                cost_restore_rate=1,
            ),
            store=store,
        )
        app.state.limits.throttle._clock = lambda: 0.0
        apps.append(app)
        clients.append(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        )
    pair = Pair(clients[0], clients[1], apps[0].state.plans, keys, found)
    try:
        await pair.compare("{ leads(first: 100) { edges { node { title stage { name } } } } }")  # 302
        statuses = []
        for _ in range(5):  # 152 each: two fit in the budget of 400, then 429 THROTTLED
            data, _ = await pair.compare("{ leads(first: 50) { edges { node { title owner { name } } } } }")
            statuses.append(data.get("errors", [{}])[0].get("extensions", {}).get("code"))
        assert statuses[:2] == [None, None]
        assert statuses[2:] == ["THROTTLED"] * 3
    finally:
        await apps[0].state.plans.close()
        for client in clients:
            await client.aclose()


def test_settings_switch_compiled_reads_off() -> None:
    assert Settings.from_env({}).compiled_reads
    assert not Settings.from_env({"PIPEGRAPH_COMPILED_READS": "false"}).compiled_reads


def test_planned_ids_match_encoded_ids() -> None:
    assert json.dumps(ids.encode("Lead", 1)) == '"TGVhZDox"'


async def test_days_in_stage_is_computed_to_the_same_float(pair: Pair) -> None:
    """The statement's ``daysInStage`` against the resolver's arithmetic, over spans of every size
    with microseconds: the same float, not merely a close one."""
    reader: Any = pair.plans.reader
    dialect = pair.plans.dialect
    entered, now = (dialect.param(1, "timestamptz"), dialect.param(2, "timestamptz"))
    statement = f"SELECT {dialect.float_text(dialect.days_since(entered, now))}"
    pick = random.Random(12)
    for _ in range(300):
        start = NOW - timedelta(days=pick.randrange(0, 4000), microseconds=pick.randrange(0, 86_400 * 10**6))
        end = start + timedelta(microseconds=pick.choice([0, 1, 999_999, pick.randrange(0, 10**13)]))
        expected = (end - start).total_seconds() / 86_400
        values = [pair.plans._param(start), pair.plans._param(end)]
        assert float(await reader.fetch_text(statement, values)) == expected, (start, end)
