"""The PostgreSQL backend of :mod:`pipegraph.services.lead_writes`: two round trips per change.

One prepared statement reads the facts; one more writes everything, in autocommit (a single statement
is its own transaction, so no ``BEGIN`` or ``COMMIT``), through asyncpg connections of its own
(:mod:`pipegraph.db.direct`). The write statement's parts run in the general path's order (lead row,
history, stays, then the pipeline's event lock, held until the commit, the daily totals and the event
with its ``NOTIFY``), so the two paths cannot deadlock each other.

The daily totals come after the lock because every writer of the pipeline shares today's rows and
queues for the lock anyway: a writer holding the rows while it waited for the lock would make the
writers behind it wait for the rows too, through its whole commit. In this order no writer waits for
the rows (``tests/test_lead_writes.py`` holds the lock and updates the rows while a move waits).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import inspect

from pipegraph.db import flow_days
from pipegraph.db.base import Base
from pipegraph.db.direct import DirectConnections
from pipegraph.db.lead_events import LOCK_SPACE, notify_each
from pipegraph.db.models import Lead, LeadStatus, Role, Stage, User
from pipegraph.db.write_gates import WriteGates
from pipegraph.services.lead_writes import DETAIL_COLUMNS, HISTORY_COLUMNS, Change, Facts, Move
from pipegraph.services.unset import Unset

M = TypeVar("M", bound=Base)


def _attributes(model: type[Base]) -> list[tuple[str, str]]:
    """(attribute, column) of a model's columns."""
    return [(attr.key, attr.columns[0].name) for attr in inspect(model).column_attrs]


_LEAD, _STAGE, _USER = _attributes(Lead), _attributes(Stage), _attributes(User)


def _select(alias: str, attributes: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{alias}.{column} AS {alias}_{column}" for _, column in attributes)


# What a change reads, named by table alias: l the lead, s its open stay, t the stage, o the owner.
READ_COLUMNS = f"""{_select("l", _LEAD)},
       s.entered_at AS s_entered_at, s.stage_id AS s_stage_id, s.status AS s_status,
       {_select("t", _STAGE)}, {_select("o", _USER)}"""
# $1 the lead; $2 the stage the change names (NULL: the lead's); $3 whether it names an owner, $4 which.
_READ = f"""
SELECT {READ_COLUMNS}
FROM leads l
LEFT JOIN stage_stays s ON s.lead_id = l.id AND s.left_at IS NULL
LEFT JOIN stages t ON t.id = COALESCE($2::integer, l.stage_id)
LEFT JOIN users o ON o.id = CASE WHEN $3::boolean THEN $4::integer ELSE l.owner_id END
WHERE l.id = $1
"""

# The pipeline's event lock, held until the commit; ``{after}`` names the CTEs that must run first.
_LOCKED = f"""
locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({LOCK_SPACE}, lead.pipeline_id) FROM lead {{after}}
),"""
# The event, once the lock is held.
_EVENT = f"""
event AS (
    INSERT INTO lead_events (pipeline_id, lead_id, kind, version, occurred_at, actor_id)
    SELECT lead.pipeline_id, lead.id, $3::text, lead.version, $4::timestamptz, $5::integer FROM lead, locked
    RETURNING id, pipeline_id, lead_id, kind, version, occurred_at, actor_id
)
SELECT {notify_each("$6::text")} FROM event
"""

# While any webhook endpoint is enabled, the lead's UPDATE matches no row and the general path writes the
# change, whose session records the webhook event in the outbox with it (pipegraph.db.webhook_outbox).
# $1 lead, $2 version read, $3 event kind, $4 now, $5 actor, $6 channel; then the lead's new details.
_DETAILS = (
    """
WITH lead AS (
    UPDATE leads SET title = $7::text, owner_id = $8::integer, company = $9::text, contact_name = $10::text,
        contact_email = $11::text, contact_phone = $12::text, source = $13::text, value_cents = $14::bigint,
        expected_close_date = $15::date, budget = $16::boolean, authority = $17::boolean,
        need = $18::boolean, timeline = $19::boolean, qualification_score = $20::integer,
        updated_at = $4::timestamptz, version = version + 1
    WHERE id = $1 AND version = $2 AND NOT EXISTS (SELECT FROM webhook_endpoints WHERE enabled)
    RETURNING id, pipeline_id, version
),"""
    + _LOCKED.format(after="")
    + _EVENT
)

_KEY_ARRAYS = (
    "$15::date[], $16::text[], $17::integer[], $18::text[], $19::integer[], $20::text[], $21::integer[]"
)
# $1–$6 as above; the lead's new stage and status ($7, $8), stage_entered_at, closed_at, lost_reason,
# value_cents ($9–$12), the history row's from-stage and from-status ($13, $14), the ended stay's length
# ($23), and the daily totals as arrays ($15–$22: key columns, days in stage, n, seconds).
_HISTORY = (
    """
WITH lead AS (
    UPDATE leads SET stage_id = $7::integer, status = $8::text, stage_entered_at = $9::timestamptz,
        closed_at = $10::timestamptz, lost_reason = $11::text, value_cents = $12::bigint,
        updated_at = $4::timestamptz, version = version + 1
    WHERE id = $1 AND version = $2 AND NOT EXISTS (SELECT FROM webhook_endpoints WHERE enabled)
    RETURNING id, pipeline_id, version
), history AS (
    INSERT INTO stage_history
        (lead_id, pipeline_id, from_stage_id, to_stage_id, from_status, to_status, changed_at, actor_id)
    SELECT id, pipeline_id, $13::integer, $7::integer, $14::text, $8::text, $4::timestamptz, $5::integer
    FROM lead
    RETURNING id, lead_id, pipeline_id
), ended AS (
    UPDATE stage_stays SET left_at = $4::timestamptz, next_stage_id = $7::integer, next_status = $8::text,
        duration_seconds = $23::double precision
    WHERE lead_id = $1 AND left_at IS NULL AND EXISTS (SELECT FROM lead)
    RETURNING 1
), started AS (
    INSERT INTO stage_stays (history_id, lead_id, pipeline_id, stage_id, status, entered_at)
    SELECT id, lead_id, pipeline_id, $7::integer, $8::text, $4::timestamptz FROM history
    RETURNING 1
),"""
    + _LOCKED.format(after="WHERE (SELECT count(*) FROM ended) + (SELECT count(*) FROM started) >= 0")
    + f"""
totals AS (
    INSERT INTO stage_flow_days
        (pipeline_id, day, kind, stage_id, status, next_stage_id, next_status, days_in_stage, n, seconds_sum)
    SELECT (SELECT pipeline_id FROM lead), t.*
    FROM unnest({_KEY_ARRAYS}, $22::bigint[], $24::double precision[]) AS t
    WHERE EXISTS (SELECT FROM locked)
    ORDER BY 2, 3, 4, 5, 6, 7, 8
    {flow_days.ADD_TO_STORED}
    RETURNING 1
),"""
    + _EVENT
)


def _model(model: type[M], row: Mapping[str, Any], alias: str, attributes: Sequence[tuple[str, str]]) -> M:
    """A detached instance holding the row's values as loaded ones, built without the mapped
    constructor, whose attribute events cost more than the rest of reading the facts."""
    instance: M = model.__mapper__.class_manager.new_instance()
    instance.__dict__.update({key: row[f"{alias}_{column}"] for key, column in attributes})
    return instance


def facts_of(row: Mapping[str, Any]) -> Facts:
    lead = _model(Lead, row, "l", _LEAD)
    lead.status = LeadStatus(lead.status)
    stage = None if row["t_id"] is None else _model(Stage, row, "t", _STAGE)
    owner = None if row["o_id"] is None else _model(User, row, "o", _USER)
    if owner is not None:
        owner.role = Role(owner.role)
    stay = row["s_entered_at"]
    open_stay = None if stay is None else (stay, row["s_stage_id"], row["s_status"])
    return Facts(lead, stage, owner, open_stay)


class PostgresBackend:
    def __init__(self, connections: DirectConnections, *, channel: str) -> None:
        self._connections = connections
        self._channel = channel
        self.gates = WriteGates()  # a pipeline's writes queue here, not in PostgreSQL's lock queue

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Statements]:
        yield _Statements(self._connections, self._channel, self.gates)

    async def close(self) -> None:
        await self._connections.close()


class _Statements:
    """Each statement on a connection of its own, in autocommit: the version the write names keeps
    the change whole."""

    def __init__(self, connections: DirectConnections, channel: str, gates: WriteGates) -> None:
        self._connections = connections
        self._channel = channel
        self._gates = gates

    async def read(self, lead_id: int, stage_id: int | None, owner: int | Unset | None) -> Facts | None:
        named = not isinstance(owner, Unset)
        async with self._connections.connection() as connection:
            rows = await connection.fetch(_READ, lead_id, stage_id, named, owner if named else None)
        return facts_of(rows[0]) if len(rows) == 1 else None

    async def write(self, change: Change, move: Move | None) -> bool:
        head = [
            *(change.lead_id, change.read_version, change.kind.value, change.now, change.actor_id),
            self._channel,
        ]
        if move is None:
            statement = _DETAILS
            parameters = [*head, *(change.values[name] for name in DETAIL_COLUMNS)]
        else:
            statement = _HISTORY
            values = [change.values[name] for name in HISTORY_COLUMNS]
            values[1] = str(values[1])  # the status, as text
            totals = move.totals
            parameters = [
                *head,
                *values,
                *(move.from_stage_id, move.from_status),
                *([key[i] for key, _ in totals] for i in range(1, 8)),
                [n for _, (n, _s) in totals],
                move.ended_seconds,
                [seconds for _, (_n, seconds) in totals],
            ]
        async with self._gates.passage(change.pipeline_id), self._connections.connection() as connection:
            rows = await connection.fetch(statement, *parameters)
        return len(rows) == 1
