"""pipegraph beside PostGraphile 5 on the same PostgreSQL data, alternated under wrk in one run.

Prepares a PostgreSQL database (by default ``pipegraph_bench_peer`` on the local server, created if
missing): pipegraph's migrations (``pipegraph db upgrade``), ``--leads`` synthetic leads
(``pipegraph.demo.load_synthetic``, seed 7, half an activity per lead) and ``VACUUM ANALYZE``; a database
already loaded with the same size and seed is reused (the load is recorded in its comment), and
vacuumed again before each write query's runs, so dead rows of earlier runs (autovacuum may be off) do
not slow the later ones. Installs
PostGraphile 5 and Node 22 from npm into ``--cache-dir`` once (Node 20 lacks ``Promise.withResolvers``,
which PostGraphile 5 needs, so the npm ``node@22`` package supplies the runtime), writes a preset there
(amber, the ``public`` schema, a pool of ``--pool-size`` connections) and starts both servers:

- pipegraph: ``uvicorn pipegraph.app:app_from_env --factory`` (what ``pipegraph serve --workers`` runs in
  each worker), one process, access log off, pool of ``--pool-size`` (plus as many in overflow), an
  admin's API key on every request, the per-key budget too large to refuse (as ``bench_api.py``);
- PostGraphile: ``postgraphile -C <preset>`` on Node 22, one process, ``GRAPHILE_ENV=production``, no
  authentication.

Queries (``--queries``, the GraphQL documents are ``DOCUMENTS`` below):

- ``board``: the 50 newest open leads of a pipeline with title, value, stage name and owner name (the
  requests take turns over every pipeline);
- ``lead``: one lead by id, the same fields (turns over 100 leads spread over the table);
- ``update``: a lead's title (pipegraph ``updateLead``, PostGraphile ``updateLeadByRowId``, a plain
  UPDATE), each server over its own ``--update-leads`` leads and a new title on every request; those
  leads' title, version and ``updated_at`` are put back afterwards;
- ``move``: pipegraph ``moveLead`` to another stage before the sale and back, in turns (history row,
  stays, daily totals, event); PostGraphile ``updateLeadByRowId`` of ``stageId``;
- ``close``: pipegraph ``closeLead`` (WON) and ``reopenLead`` in turns; PostGraphile
  ``updateLeadByRowId`` of ``status``. Move and close each take their own ``--update-leads`` leads per
  server, the same on every run (moves keep leads open, closes and reopens keep them before the sale).

Every pipegraph change names the lead's version (``expectedVersion``): wrk sends each lead's turns in
order, the version counted from the one read when the run starts; a pipegraph write run counts as
errors the answered changes that bumped no version. ``PIPEGRAPH_DIRECT_WRITES=false`` in the
environment measures pipegraph's general write path instead of the direct one.

Before timing, the script sends every request body of each query to both servers and stops unless both
answer the same rows (lead row ids, titles, values in cents, stage and owner names). Then, for each
query and each ``--connections`` count: a warm-up of each server, and ``--rounds`` rounds of
pipegraph then PostGraphile, each under wrk for ``--duration`` seconds. Prints, per run, requests/s,
p50/p99 latency and CPU time per request of the server process and of the database's backends (from
``/proc``), then the medians and the ratio pipegraph / PostGraphile of each round and of the medians.
``--count-statements SERVER_LOG`` first lists the statements each server sends PostgreSQL for one
request of each query, read from the server's log while ``log_statement = all`` is set on the bench
database alone (on servers of their own, so the timed ones log nothing).

    python scripts/bench_peer.py [--duration 10] [--rounds 3] [--connections 8,32]
                                 [--queries board,lead,update,move,close] [--leads 100000] [--json]
                                 [--count-statements /var/log/postgresql/postgresql-15-main.log]

Needs wrk (installed with apt-get when missing and run as root), npm, and a PostgreSQL server where it
may create a database. ``dropdb pipegraph_bench_peer`` removes the data; ``rm -r`` the cache directory
removes PostGraphile.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from string import Template
from typing import Any, NamedTuple

import asyncpg
import httpx

from peer_support import (
    DEFAULT_DATABASE_URL,
    Server,
    backends_cpu,
    both_servers,
    cpu_seconds,
    create_key,
    ensure_wrk,
    install_postgraphile,
    logged_statements,
    parse_wrk,
    plain_url,
    prepare_database,
    statement_log,
)
from pipegraph.api import ids

PAGE_SIZE = 50
LEADS_READ = 100  # distinct leads the ``lead`` query takes turns over
SERVERS = ("pipegraph", "postgraphile")
QUERIES = ("board", "lead", "update", "move", "close")
WRITES = ("update", "move", "close")
TITLE_COUNTER = "__N__"  # replaced by the request's number in wrk, so every update writes a new title
# Replaced (with its quotes) by the lead's version at the time: wrk sends a lead's turns in order, and
# each one's previous turn has completed (a set holds many more leads than there are connections).
VERSION = "__V__"
LEAD_FIELDS = "lead { id title value stage { name } owner { name } } userErrors { code message }"
PEER_FIELDS = "lead { rowId title valueCents stageByStageId { name } userByOwnerId { name } }"

# The same fields on both sides. pipegraph orders a page by created_at DESC, id DESC; PostGraphile's
# amber preset names the primary key rowId, so its order needs ROW_ID_DESC to break ties the same way
# (there are leads of one pipeline created in the same microsecond).
DOCUMENTS: dict[str, dict[str, str]] = {
    "board": {
        "pipegraph": (
            "query Board($pipelineId: ID!) { leads(pipelineId: $pipelineId, filter: {statuses: [OPEN]}, "
            f"orderBy: {{field: CREATED_AT, direction: DESC}}, first: {PAGE_SIZE}) "
            "{ nodes { id title value stage { name } owner { name } } } }"
        ),
        "postgraphile": (
            'query Board($pipelineId: Int!) { allLeads(condition: {pipelineId: $pipelineId, status: "OPEN"}, '
            f"orderBy: [CREATED_AT_DESC, ROW_ID_DESC], first: {PAGE_SIZE}) "
            "{ nodes { rowId title valueCents stageByStageId { name } userByOwnerId { name } } } }"
        ),
    },
    "lead": {
        "pipegraph": (
            "query Lead($id: ID!) { lead(id: $id) { id title value stage { name } owner { name } } }"
        ),
        "postgraphile": (
            "query Lead($rowId: Int!) { leadByRowId(rowId: $rowId) "
            "{ rowId title valueCents stageByStageId { name } userByOwnerId { name } } }"
        ),
    },
    "update": {
        "pipegraph": (
            "mutation Update($id: ID!, $title: String!, $version: Int!) "
            "{ updateLead(input: {leadId: $id, title: $title, expectedVersion: $version}) "
            f"{{ {LEAD_FIELDS} }} }}"
        ),
        "postgraphile": (
            "mutation Update($rowId: Int!, $title: String!) "
            "{ updateLeadByRowId(input: {rowId: $rowId, leadPatch: {title: $title}}) "
            "{ lead { rowId title valueCents stageByStageId { name } userByOwnerId { name } } } }"
        ),
    },
    "move": {
        "pipegraph": (
            "mutation Move($id: ID!, $stageId: ID!, $version: Int!) "
            "{ moveLead(input: {leadId: $id, toStageId: $stageId, expectedVersion: $version}) "
            f"{{ {LEAD_FIELDS} }} }}"
        ),
        "postgraphile": (
            "mutation Move($rowId: Int!, $stageId: Int!) "
            "{ updateLeadByRowId(input: {rowId: $rowId, leadPatch: {stageId: $stageId}}) "
            f"{{ {PEER_FIELDS} }} }}"
        ),
    },
    "close": {
        "pipegraph": (
            "mutation Close($id: ID!, $version: Int!) "
            "{ closeLead(input: {leadId: $id, outcome: WON, expectedVersion: $version}) "
            f"{{ {LEAD_FIELDS} }} }}"
        ),
        "postgraphile": (
            "mutation Close($rowId: Int!, $status: String!) "
            "{ updateLeadByRowId(input: {rowId: $rowId, leadPatch: {status: $status}}) "
            f"{{ {PEER_FIELDS} }} }}"
        ),
    },
    # The close runs alternate closing and reopening each lead of their set.
    "reopen": {
        "pipegraph": (
            "mutation Reopen($id: ID!, $version: Int!) "
            f"{{ reopenLead(input: {{leadId: $id, expectedVersion: $version}}) {{ {LEAD_FIELDS} }} }}"
        ),
    },
}
DOCUMENTS["reopen"]["postgraphile"] = DOCUMENTS["close"]["postgraphile"]
# Where each answer keeps its leads: a list of nodes, or one node.
ANSWER_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "board": {"pipegraph": ("leads", "nodes"), "postgraphile": ("allLeads", "nodes")},
    "lead": {"pipegraph": ("lead",), "postgraphile": ("leadByRowId",)},
    "update": {"pipegraph": ("updateLead", "lead"), "postgraphile": ("updateLeadByRowId", "lead")},
    "move": {"pipegraph": ("moveLead", "lead"), "postgraphile": ("updateLeadByRowId", "lead")},
    "close": {"pipegraph": ("closeLead", "lead"), "postgraphile": ("updateLeadByRowId", "lead")},
    "reopen": {"pipegraph": ("reopenLead", "lead"), "postgraphile": ("updateLeadByRowId", "lead")},
}

WRK_SCRIPT = Template("""\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
$authorization
-- Each line: a lead's version, then the bodies its turns take in rotation, tab-separated.
local turns = {}
for line in io.lines("$bodies") do
  local fields = {}
  for field in string.gmatch(line, "[^\t]+") do fields[#fields + 1] = field end
  turns[#turns + 1] = {version = tonumber(fields[1]), bodies = {unpack(fields, 2)}}
end
local counted = $counted
local sent = 0
-- wrk calls the first thread's request() once to check it before any connection opens, and discards
-- the request; that call must not use up a turn (its lead's later versions would all be CONFLICTs).
local threads_seen = 0
setup = function(thread)
  thread:set("checked", threads_seen > 0)
  threads_seen = threads_seen + 1
end
request = function()
  if not checked then
    checked = true
    return wrk.format(nil, nil, nil, "{}")
  end
  sent = sent + 1
  local turn = turns[(sent - 1) % #turns + 1]
  local round = math.floor((sent - 1) / #turns)
  local body = turn.bodies[round % #turn.bodies + 1]
  if counted then
    body = string.gsub(body, "$counter", tostring(sent))
    body = string.gsub(body, '"$version"', tostring(turn.version + round))
  end
  return wrk.format(nil, nil, nil, body)
end
-- Answers that are not a plain success (an HTTP error, GraphQL errors, pipegraph's userErrors), kept so a
-- refused change is told apart from one answered as done and not written.
local refusals = io.open("$refusals", "a")
response = function(status, headers, body)
  local refused = string.find(body, '"errors"', 1, true) or string.find(body, '"userErrors":[{', 1, true)
  if status ~= 200 or refused then
    refusals:write(status, "\\t", (string.gsub(string.sub(body, 1, 400), "%c", " ")), "\\n")
    refusals:flush()
  end
end
""")
# A lead's turns in a run: its version when the run starts, and (document, variables) in rotation.
Turn = tuple[int, list[tuple[str, dict[str, Any]]]]


class Row(NamedTuple):
    """A lead as both servers show it, their IDs decoded to the row's."""

    id: int
    title: str
    value_cents: int
    stage: str
    owner: str | None


@dataclass(frozen=True)
class Fixture:
    """What the requests refer to, chosen from the loaded data."""

    key: str
    pipelines: list[int]
    read_leads: list[int]
    update_leads: dict[str, list[int]]  # server → its own leads
    check_lead: int  # the lead both servers update before timing
    # move and close: server → its own leads (open, or won, before the sale), and the checks' lead
    write_leads: dict[str, dict[str, list[int]]]
    write_checks: dict[str, int]


@dataclass
class Run:
    query: str
    connections: int
    round: int
    server: str
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms: float | None  # CPU time per request
    postgres_cpu_ms: float | None
    error_kinds: str = ""


# --- the leads the requests name ------------------------------------------------------------------


async def make_fixture(url: str, update_leads: int) -> Fixture:
    """An admin's API key, and the pipelines and leads the requests name. The update sets are the
    oldest leads (never on a board page); the leads read are spread over the rest."""
    key = await create_key(url)
    connection = await asyncpg.connect(url)
    try:
        pipelines = [row[0] for row in await connection.fetch("SELECT id FROM pipelines ORDER BY id")]
        lead_ids = [row[0] for row in await connection.fetch("SELECT id FROM leads ORDER BY id")]
    finally:
        await connection.close()
    reserved = 2 * update_leads + 1
    if len(lead_ids) < reserved + LEADS_READ:
        raise SystemExit(
            f"--leads must be at least {reserved + LEADS_READ} with --update-leads {update_leads}"
        )
    rest = lead_ids[reserved:]
    read_leads = rest[:: len(rest) // LEADS_READ][:LEADS_READ]
    write_leads, write_checks = await _write_sets(url, lead_ids[reserved - 1], read_leads, update_leads)
    return Fixture(
        key=key,
        pipelines=pipelines,
        read_leads=read_leads,
        update_leads={
            "pipegraph": lead_ids[:update_leads],
            "postgraphile": lead_ids[update_leads : 2 * update_leads],
        },
        check_lead=lead_ids[2 * update_leads],
        write_leads=write_leads,
        write_checks=write_checks,
    )


async def _write_sets(
    url: str, after: int, read_leads: Sequence[int], size: int
) -> tuple[dict[str, dict[str, list[int]]], dict[str, int]]:
    """The move and close sets, the same on every run of the script: the close sets are the first
    leads after the update sets that are not lost and sit before the sale (closing and reopening keeps
    them so), the move sets the next open ones (moving keeps them open)."""
    connection = await asyncpg.connect(url)
    try:
        candidates = await connection.fetch(
            "SELECT l.id, l.status FROM leads l JOIN stages s ON s.id = l.stage_id "
            "WHERE l.id > $1 AND l.status <> 'LOST' AND NOT s.is_post_sale AND s.removed_at IS NULL "
            "AND NOT l.id = ANY($2::int[]) ORDER BY l.id",
            after,
            list(read_leads),
        )
    finally:
        await connection.close()
    close = [row["id"] for row in candidates[: 2 * size + 1]]
    move = [row["id"] for row in candidates[2 * size + 1 :] if row["status"] == "OPEN"][: 2 * size + 1]
    if len(move) < 2 * size + 1:
        raise SystemExit("too few open leads for the move sets: lower --update-leads")
    sets = {
        query: {"pipegraph": leads[:size], "postgraphile": leads[size : 2 * size]}
        for query, leads in (("move", move), ("close", close))
    }
    return sets, {"move": move[-1], "close": close[-1]}


async def lead_states(url: str, lead_ids: Sequence[int]) -> dict[int, asyncpg.Record]:
    """Each lead's version, status, stage and another stage before the sale of its pipeline, read once
    the writes still running from the previous run have ended (wrk leaves requests in flight when it
    stops; a version read before they commit would make every turn of that lead a CONFLICT)."""
    connection = await asyncpg.connect(url)
    try:
        for _ in range(100):
            busy = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            if not busy:
                break
            await asyncio.sleep(0.05)
        rows = await connection.fetch(
            "SELECT l.id, l.version, l.status, l.stage_id, (SELECT s.id FROM stages s "
            "WHERE s.pipeline_id = l.pipeline_id AND s.id <> l.stage_id AND NOT s.is_post_sale "
            "AND s.removed_at IS NULL ORDER BY s.position LIMIT 1) AS other_stage_id "
            "FROM leads l WHERE l.id = ANY($1::int[])",
            list(lead_ids),
        )
    finally:
        await connection.close()
    return {row["id"]: row for row in rows}


def write_turns(
    query: str, server: str, lead_ids: Sequence[int], states: Mapping[int, asyncpg.Record], title: str
) -> list[Turn]:
    """Each lead's turns in a write run: a new title; a move to another stage and back; a close and a
    reopen (or the other way round for a lead that is closed)."""
    pipegraph = server == "pipegraph"
    turns: list[Turn] = []
    for pk in lead_ids:
        state = states[pk]
        lead = {"id": ids.encode("Lead", pk), "version": VERSION} if pipegraph else {"rowId": pk}
        if query == "update":
            turns.append((state["version"], [("update", {**lead, "title": title})]))
        elif query == "move":
            stages = (state["other_stage_id"], state["stage_id"])
            turns.append(
                (
                    state["version"],
                    [
                        ("move", {**lead, "stageId": ids.encode("Stage", s) if pipegraph else s})
                        for s in stages
                    ],
                )
            )
        else:
            change: list[tuple[str, dict[str, Any]]] = [
                ("close", {**lead} if pipegraph else {**lead, "status": "WON"}),
                ("reopen", {**lead} if pipegraph else {**lead, "status": "OPEN"}),
            ]
            turns.append((state["version"], change if state["status"] == "OPEN" else change[::-1]))
    return turns


def write_sets(query: str, fixture: Fixture) -> dict[str, list[int]]:
    return fixture.update_leads if query == "update" else fixture.write_leads[query]


def check_lead(query: str, fixture: Fixture) -> int:
    return fixture.check_lead if query == "update" else fixture.write_checks[query]


def concrete(values: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A turn's variables with the lead's version in place."""
    return {key: version if value == VERSION else value for key, value in values.items()}


@contextmanager
def restored_leads(url: str, lead_ids: Sequence[int]) -> Iterator[None]:
    """Put back the title, version and updated_at of the leads the update runs change."""

    async def snapshot() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(
                await connection.fetch(
                    "SELECT id, title, version, updated_at FROM leads WHERE id = ANY($1::int[])",
                    list(lead_ids),
                )
            )
        finally:
            await connection.close()

    async def restore(rows: list[asyncpg.Record]) -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.executemany(
                "UPDATE leads SET title = $2, version = $3, updated_at = $4 WHERE id = $1",
                [tuple(row) for row in rows],
            )
        finally:
            await connection.close()

    rows = asyncio.run(snapshot())
    try:
        yield
    finally:
        asyncio.run(restore(rows))


# --- requests and answers -------------------------------------------------------------------------


def variables(query: str, server: str, fixture: Fixture, title: str) -> list[dict[str, Any]]:
    """Every request's variables of a read, in the order wrk sends them."""
    pipegraph = server == "pipegraph"
    if query == "board":
        return [{"pipelineId": ids.encode("Pipeline", pk) if pipegraph else pk} for pk in fixture.pipelines]
    return [{"id": ids.encode("Lead", pk)} if pipegraph else {"rowId": pk} for pk in fixture.read_leads]


def run_turns(query: str, server: str, fixture: Fixture, title: str, url: str) -> list[Turn]:
    """Every lead's turns in a run, in the order wrk sends them (a read's lead has one turn)."""
    if query not in WRITES:
        return [(0, [(query, values)]) for values in variables(query, server, fixture, title)]
    lead_ids = write_sets(query, fixture)[server]
    return write_turns(query, server, lead_ids, asyncio.run(lead_states(url, lead_ids)), title)


def body(query: str, server: str, values: Mapping[str, Any]) -> str:
    return json.dumps({"query": DOCUMENTS[query][server], "variables": values}, separators=(",", ":"))


def rows(query: str, server: str, answer: Mapping[str, Any]) -> list[Row]:
    """The leads of an answer; raises on errors, a missing lead or pipegraph's userErrors."""
    if answer.get("errors") or "data" not in answer:
        raise RuntimeError(f"{server} answered {query} with errors: {json.dumps(answer)[:500]}")
    found: Any = answer["data"]
    for key in ANSWER_PATHS[query][server]:
        if server == "pipegraph" and key == "lead" and found.get("userErrors"):
            raise RuntimeError(f"pipegraph refused the {query}: {found['userErrors']}")
        found = found[key]
    if found is None:
        raise RuntimeError(f"{server} found no lead for {query}")
    return [_row(server, node) for node in (found if isinstance(found, list) else [found])]


def _row(server: str, node: Mapping[str, Any]) -> Row:
    owner = node["owner" if server == "pipegraph" else "userByOwnerId"]
    if server == "pipegraph":
        pk = ids.decode_as(node["id"], "Lead", field="id")
        cents = int(Decimal(node["value"]) * 100)
        stage = node["stage"]["name"]
    else:
        pk, cents, stage = node["rowId"], int(node["valueCents"]), node["stageByStageId"]["name"]
    return Row(pk, node["title"], cents, stage, owner["name"] if owner else None)


def one_request(
    query: str,
    server: str,
    fixture: Fixture,
    title: str,
    url: str,
    states: Mapping[int, asyncpg.Record] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The document and variables of a single request: the first of a read's turns, or the first turn
    of the lead kept for checks (so the sets timed later stay untouched), from ``states`` if given."""
    if query not in WRITES:
        return query, variables(query, server, fixture, title)[0]
    pk = check_lead(query, fixture)
    states = states or asyncio.run(lead_states(url, [pk]))
    version, alternatives = write_turns(query, server, [pk], states, title)[0]
    document, values = alternatives[0]
    return document, concrete(values, version)


def _post(client: httpx.Client, server: Server, query: str, values: Mapping[str, Any]) -> list[Row]:
    response = client.post(
        server.url,
        content=body(query, server.name, values),
        headers={**server.headers, "Content-Type": "application/json"},
    )
    response.raise_for_status()
    return rows(query, server.name, response.json())


def check_same_answers(
    servers: Mapping[str, Server], queries: Sequence[str], fixture: Fixture, url: str
) -> None:
    """Send every request body of the read queries to both servers, and one change of the same lead
    (the same change: both from the lead as it was), and stop unless they answer the same rows."""
    with httpx.Client(timeout=30) as client:
        for query in queries:
            requests: dict[str, list[tuple[str, dict[str, Any]]]]
            if query in WRITES:
                states = asyncio.run(lead_states(url, [check_lead(query, fixture)]))
                requests = {
                    name: [one_request(query, name, fixture, "bench-peer check", url, states)]
                    for name in SERVERS
                }
            else:
                requests = {
                    name: [(query, v) for v in variables(query, name, fixture, "")] for name in SERVERS
                }
            answers = {
                name: [_post(client, servers[name], d, v) for d, v in requests[name]] for name in SERVERS
            }
            if answers["pipegraph"] != answers["postgraphile"]:
                first = next(
                    (a, b)
                    for a, b in zip(answers["pipegraph"], answers["postgraphile"], strict=True)
                    if a != b
                )
                raise SystemExit(f"the servers answer {query} differently; first difference:\n{first}")
            count, sent = sum(map(len, answers["pipegraph"])), len(requests["pipegraph"])
            print(f"  {query}: both servers answer the same {count} rows over {sent} requests")


def count_statements(
    servers: Mapping[str, Server], queries: Sequence[str], fixture: Fixture, log: Path, url: str
) -> dict[str, dict[str, list[str]]]:
    """The statements each server sends PostgreSQL for one request of each query, after two warm-up
    requests (servers started while the database logs every statement)."""
    counted: dict[str, dict[str, list[str]]] = {query: {} for query in queries}
    with httpx.Client(timeout=30) as client:
        for query in queries:
            for name in SERVERS:
                server = servers[name]
                for number in range(2):  # warm-up
                    _post(
                        client, server, *one_request(query, name, fixture, f"bench-peer count {number}", url)
                    )
                # a new title, stage or status: a real write
                document, values = one_request(query, name, fixture, "bench-peer count 2", url)
                send = functools.partial(_post, client, server, document, values)
                counted[query][name] = logged_statements(log, url.rpartition("/")[2], send)
    return counted


def print_statements(counted: Mapping[str, Mapping[str, list[str]]]) -> None:
    print("statements per request (from the PostgreSQL log):")
    for query, by_server in counted.items():
        for name, statements in by_server.items():
            print(f"  {query:<8}{name:<14}{len(statements):>3}")
            for statement in statements:
                print(f"      {statement[:150]}")


# --- measuring ------------------------------------------------------------------------------------


class Bench:
    """Both servers, the requests' fixture and a scratch directory; one wrk run at a time."""

    def __init__(
        self,
        servers: Mapping[str, Server],
        fixture: Fixture,
        database_url: str,
        threads: int,
        directory: Path,
    ) -> None:
        self.servers = servers
        self.fixture = fixture
        self.database_url = database_url
        self.threads = threads
        self.directory = directory

    def wrk(self, server: Server, lines: Sequence[str], seconds: float, connections: int) -> str:
        (self.directory / "bodies.jsonl").write_text("".join(f"{line}\n" for line in lines))
        (self.directory / "refusals.tsv").write_text("")
        script = self.directory / "bench.lua"
        script.write_text(
            WRK_SCRIPT.substitute(
                authorization="".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in server.headers.items()),
                bodies=self.directory / "bodies.jsonl",
                refusals=self.directory / "refusals.tsv",
                counted="true" if any(VERSION in line for line in lines) else "false",
                counter=TITLE_COUNTER,
                version=VERSION,
            )
        )
        command = [
            "wrk", "-t", str(self.threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--latency", "-s", str(script), server.url,
        ]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def measure(self, name: str, query: str, connections: int, seconds: float, round_number: int) -> Run:
        """One wrk run, with the CPU time the server process and the database's backends spent on it."""
        server = self.servers[name]
        label = f"r{round_number}-c{connections}"  # in the titles an update run writes
        title = f"bench-peer {label} {TITLE_COUNTER}"
        turns = run_turns(query, name, self.fixture, title, self.database_url)
        lines = [
            "\t".join([str(version), *(body(document, name, values) for document, values in alternatives)])
            for version, alternatives in turns
        ]
        server_before, backends_before = cpu_seconds(server.pid), backends_cpu(self.database_url)
        output = self.wrk(server, lines, seconds, connections)
        server_after, backends_after = cpu_seconds(server.pid), backends_cpu(self.database_url)
        result = parse_wrk(output)
        refusals = (self.directory / "refusals.tsv").read_text().splitlines()
        per_request = 1000 / max(result.requests, 1)
        server_cpu = None
        if server_after is not None and server_before is not None:
            server_cpu = (server_after - server_before) * per_request
        postgres_cpu = None
        if backends_after:
            spent = sum(after - backends_before.get(pid, 0.0) for pid, after in backends_after.items())
            postgres_cpu = spent * per_request
        errors, kinds = result.errors, [result.error_kinds] if result.error_kinds else []
        if refusals:
            errors, kinds = errors + len(refusals), [*kinds, refusal_summary(refusals)]
        if query == "update":
            leads = self.fixture.update_leads[name]
            if missing := asyncio.run(_missing_writes(self.database_url, leads, label, result.requests)):
                errors, kinds = errors + missing, [*kinds, f"{missing} leads of the set not written"]
        if query in WRITES and name == "pipegraph":
            # Every answered change bumped its lead's version (a refused one, e.g. a CONFLICT, did not).
            after = asyncio.run(lead_states(self.database_url, write_sets(query, self.fixture)[name]))
            changes = sum(after[pk]["version"] for pk in after) - sum(version for version, _ in turns)
            if changes < result.requests - len(refusals):
                missing = result.requests - len(refusals) - changes
                errors, kinds = errors + missing, [*kinds, f"{missing} answered changes not written"]
        return Run(
            query,
            connections,
            round_number,
            name,
            result.requests,
            result.requests_per_second,
            result.p50_ms,
            result.p99_ms,
            errors,
            server_cpu,
            postgres_cpu,
            "; ".join(kinds),
        )

    def compare(
        self, queries: Sequence[str], connections: Sequence[int], rounds: int, seconds: float, warmup: float
    ) -> list[list[Run]]:
        """For each query and connection count: a warm-up of each server (round 0, not kept), then
        ``rounds`` rounds of pipegraph then PostGraphile. Returns the runs of each query and count."""
        groups: list[list[Run]] = []
        for query in queries:
            for count in connections:
                print(f"\n{query}, {count} connections")
                if query in WRITES:
                    asyncio.run(_vacuum(self.database_url))
                if warmup > 0:
                    for name in SERVERS:
                        self.measure(name, query, count, warmup, 0)
                group = []
                for round_number in range(1, rounds + 1):
                    for name in SERVERS:
                        group.append(self.measure(name, query, count, seconds, round_number))
                        print_run(group[-1])
                print_summary(group)
                groups.append(group)
        return groups


async def _vacuum(url: str) -> None:
    """Clear what earlier write runs left (autovacuum may be off or behind): every write run starts from
    tables without dead rows, whichever server and round it follows."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


def refusal_summary(refusals: Sequence[str]) -> str:
    """How many answers were refusals, by their error code (or HTTP status), with the first one."""
    codes: dict[str, int] = {}
    for line in refusals:
        status, _, answer = line.partition("\t")
        found = re.search(r'"code":"([A-Z_]+)"', answer)
        code = found.group(1) if found else f"HTTP {status}"
        codes[code] = codes.get(code, 0) + 1
    counted = ", ".join(f"{count} {code}" for code, count in sorted(codes.items()))
    return f"refused: {counted} (first: {refusals[0].partition(chr(9))[2][:200]})"


async def _missing_writes(url: str, lead_ids: Sequence[int], label: str, requests: int) -> int:
    """Leads of the set that the run should have written and did not: wrk sends to each lead of the
    set in turn, so each was sent at least once if it completed as many requests as there are leads."""
    connection = await asyncpg.connect(url)
    try:
        written = await connection.fetchval(
            "SELECT count(*) FROM leads WHERE id = ANY($1::int[]) AND title LIKE $2",
            list(lead_ids),
            f"bench-peer {label} %",
        )
    finally:
        await connection.close()
    return max(0, min(requests, len(lead_ids)) - int(written))


# --- reporting ------------------------------------------------------------------------------------


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


HEADER = (
    f"  {'round':<7}{'server':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    f"{'CPU ms/req server':>19}{'postgres':>10}{'errors':>8}"
)


def print_run(run: Run) -> None:
    if run.server == SERVERS[0] and run.round == 1:
        print(HEADER)
    print(
        f"  {run.round:<7}{run.server:<14}{run.requests_per_second:>9.0f}{run.p50_ms:>9.1f}{run.p99_ms:>9.1f}"
        f"{_cpu(run.server_cpu_ms):>19}{_cpu(run.postgres_cpu_ms):>10}{run.errors:>8}"
    )
    if run.error_kinds:
        print(f"  {'':<7}{'':<14}errors: {run.error_kinds}")


def _median(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def summarise(group: Sequence[Run]) -> dict[str, Any]:
    """Medians per server and the ratio pipegraph / PostGraphile of each round and of the medians."""
    by_server = {name: [run for run in group if run.server == name] for name in SERVERS}
    medians = {
        name: {
            field: _median([getattr(run, field) for run in runs])
            for field in ("requests_per_second", "p50_ms", "p99_ms", "server_cpu_ms", "postgres_cpu_ms")
        }
        for name, runs in by_server.items()
    }
    ratios = [
        ours.requests_per_second / theirs.requests_per_second
        for ours, theirs in zip(by_server["pipegraph"], by_server["postgraphile"], strict=True)
    ]
    ours_rate, theirs_rate = (medians[name]["requests_per_second"] for name in SERVERS)
    return {
        "medians": medians,
        "round_ratios": [round(ratio, 3) for ratio in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "ratio_of_medians": round((ours_rate or 0.0) / (theirs_rate or 1.0), 3),
        "errors": sum(run.errors for run in group),
    }


def print_summary(group: Sequence[Run]) -> None:
    summary = summarise(group)
    for name in SERVERS:
        m = summary["medians"][name]
        print(
            f"  {'median':<7}{name:<14}{m['requests_per_second']:>9.0f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}"
            f"{_cpu(m['server_cpu_ms']):>19}{_cpu(m['postgres_cpu_ms']):>10}"
        )
    rounds = " ".join(f"{ratio:.2f}" for ratio in summary["round_ratios"])
    print(
        f"  ratio pipegraph / PostGraphile: rounds {rounds}; median {summary['median_ratio']:.2f} "
        f"(of the medians {summary['ratio_of_medians']:.2f})"
    )


# --- main -----------------------------------------------------------------------------------------


def _csv(kind: Callable[[str], Any], choices: Sequence[str] = ()) -> Callable[[str], list[Any]]:
    def parse(raw: str) -> list[Any]:
        values = [kind(part.strip()) for part in raw.split(",") if part.strip()]
        unknown = [value for value in values if choices and value not in choices]
        if not values or unknown:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices) or 'numbers'}"
            )
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        help=f"PostgreSQL database to load (created if missing) or reuse (default {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument("--leads", type=int, default=100_000, help="synthetic leads (default 100000)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path.home() / ".cache" / "pipegraph-bench-peer",
        help="where PostGraphile and Node 22 are installed (default ~/.cache/pipegraph-bench-peer)",
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server (default 2)")
    parser.add_argument(
        "--connections", type=_csv(int), default=[8, 32], help="wrk connection counts (default 8,32)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two servers (default 3)")
    parser.add_argument(
        "--queries",
        type=_csv(str, QUERIES),
        default=["board", "lead"],
        help="board, lead, update, move and/or close (default board,lead)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument(
        "--pool-size",
        type=int,
        default=10,
        help="database connections per server (default 10; pipegraph may open as many again in overflow)",
    )
    parser.add_argument(
        "--update-leads", type=int, default=500, help="leads each server updates in turn (default 500)"
    )
    parser.add_argument(
        "--count-statements",
        type=Path,
        metavar="SERVER_LOG",
        help="first count the statements each server sends per request, read from this PostgreSQL server "
        "log while log_statement=all is set on the database alone (e.g. /var/log/postgresql/"
        "postgresql-15-main.log)",
    )
    parser.add_argument("--json", action="store_true", help="print the runs and summaries as JSON too")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.duration < 1:
        raise SystemExit("--rounds and --duration must be at least 1")
    # A SIGTERM unwinds like Ctrl-C, so both servers are stopped and the updated leads put back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_wrk()
    url = plain_url(args.database_url or DEFAULT_DATABASE_URL)
    prepare_database(url, args.leads, owned=args.database_url is None)
    node, versions = install_postgraphile(args.cache_dir)
    fixture = asyncio.run(make_fixture(url, args.update_leads))
    print(
        f"leads={args.leads} duration={args.duration:g}s rounds={args.rounds} connections={args.connections} "
        f"pool={args.pool_size} wrk threads={args.threads} cores={os.cpu_count()} "
        f"load average {os.getloadavg()[0]:.1f}; {versions}"
    )
    update_sets = [pk for name in SERVERS for pk in fixture.update_leads[name]] + [fixture.check_lead]
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_peer-")))
        server_settings = (args.cache_dir, args.pool_size, directory)
        if "update" in args.queries:
            stack.enter_context(restored_leads(url, update_sets))
        statements: dict[str, dict[str, list[str]]] = {}
        if args.count_statements:
            with statement_log(url), both_servers(url, fixture.key, node, *server_settings) as servers:
                statements = count_statements(servers, args.queries, fixture, args.count_statements, url)
            print_statements(statements)
        servers = stack.enter_context(both_servers(url, fixture.key, node, *server_settings))
        print("checking that both servers answer the same rows:")
        check_same_answers(servers, args.queries, fixture, url)
        bench = Bench(servers, fixture, url, args.threads, directory)
        groups = bench.compare(args.queries, args.connections, args.rounds, args.duration, args.warmup)
    if args.json:
        setup = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        report = {
            "setup": {**setup, "database_url": url, "versions": versions},
            "statements": statements,
            "runs": [asdict(run) for group in groups for run in group],
            "summaries": [
                {"query": group[0].query, "connections": group[0].connections, **summarise(group)}
                for group in groups
            ],
        }
        print(json.dumps(report, indent=2))
    return 1 if any(run.errors for group in groups for run in group) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the servers are stopped and the updated leads put back", file=sys.stderr)
        sys.exit(130)
