"""CSV import in bulk: rows streamed into a staging table, then applied in a few set-based statements.

The rows are read once, as they stream, each turned into its staging record by a plan compiled from
the header (``pipegraph.services.import_plan``; anything unusual goes through ``parse_row``, the same
checks as the row-by-row path in ``pipegraph.services.imports``). While no row has failed, each batch
of records goes to a temporary staging table — PostgreSQL ``COPY`` (asyncpg
``copy_records_to_table``), SQLite a batched ``executemany``; once a row fails, loading stops and the
rest are only checked, so every problem is still reported. Then, in the caller's transaction, the
staged rows become leads, their creation history, their stays and daily totals and their CREATED
events, each in one ``INSERT … SELECT``. Nothing is written unless every row passed, and memory stays
flat: one batch and at most ``MAX_PROBLEMS`` problems are held, never the file.

On PostgreSQL the foreign keys of those inserts are checked once per import, under the locks the
per-row checks would take, when the role may do so (``pipegraph.services.imports_references``);
otherwise, and on SQLite, by the database row by row. SQLite applies the rows with a larger, bounded
page cache (``pipegraph.db.page_cache``).

The result equals the row-by-row path's, table by table (``tests/test_imports_bulk.py`` proves it):
the leads get ids in row order (PostgreSQL draws them, and the history rows' ids, from their sequences
batch by batch as it stages the rows; SQLite, with one writer at a time, counts on from the largest
id), and the stays and totals are those the history delimits, as ``pipegraph.db.stays.derive_stays``
computes them. The events are logged with their positions but not NOTIFYed one by one: subscribers
resuming from a position read them from the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, column, exists, select, table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from pipegraph.db import flow_days, stays
from pipegraph.db.lead_events import LOCK_SPACE, LeadEventKind
from pipegraph.db.models import Lead, LeadStatus, Role, User, WebhookEndpoint
from pipegraph.db.page_cache import bulk_page_cache
from pipegraph.db.types import UTCDateTime, utcnow
from pipegraph.errors import ValidationError
from pipegraph.services import imports_references as references
from pipegraph.services.import_plan import staged_records
from pipegraph.services.import_rows import Problems, load_target
from pipegraph.services.permissions import require_role
from pipegraph.services.webhooks.events import record_import_finished, record_lead_event

BATCH_ROWS = 5_000
SQLITE_APPLY_CACHE_KIB = 64 * 1024
STAGING = "import_staging"
# Staged columns, in COPY order; ``lead_id`` follows from the row number on SQLite (a generated column);
# on PostgreSQL each batch draws its lead and history ids before its COPY (``_POSTGRESQL_IDS``).
_STAGED = (
    "row_no",
    "stage_id",
    "owner_id",
    "title",
    "company",
    "contact_name",
    "contact_email",
    "contact_phone",
    "source",
    "value_cents",
    "expected_close_date",
    "budget",
    "authority",
    "need",
    "timeline",
    "qualification_score",
)
_STAGING_TYPES = (
    "integer", "integer", "integer", "text", "text", "text", "text", "text", "text", "bigint", "date",
    "boolean", "boolean", "boolean", "boolean", "integer",
)  # fmt: skip
_POSTGRESQL_IDS = (("lead_id", "bigint"), ("history_id", "bigint"))

Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    rows: int
    first_lead_id: int | None
    last_lead_id: int | None


async def import_leads_bulk(
    session: AsyncSession,
    *,
    pipeline_id: int,
    lines: Iterable[str],
    actor: User | None,
    header_map: Mapping[str, str] | None = None,
    at: datetime | None = None,
    progress: Progress | None = None,
    batch_rows: int = BATCH_ROWS,
    check_references: bool | None = None,
) -> BulkOutcome:
    """Import every row of the CSV ``lines`` (read once, as they come) or none.

    ``progress(rows_read, rows_loaded)`` is awaited after every batch; an exception it raises (a
    cancelled job) ends the import, and the caller's rollback leaves nothing behind.
    ``check_references``: whether the database checks each row's foreign keys (SQLite always does);
    by default, on PostgreSQL, the import checks them once when its role may
    (``pipegraph.services.imports_references``).
    """
    require_role(actor, Role.REP, "importing leads")
    target = await load_target(session, pipeline_id=pipeline_id, actor=actor)
    connection = await session.connection()
    dialect = connection.dialect.name
    await _create_staging(connection, dialect)
    problems = Problems()
    batch: list[tuple[Any, ...]] = []
    read = loaded = 0
    records = staged_records(lines, target, header_map, iso_dates=dialect == "sqlite")
    for record, row_errors in records:
        read += 1
        if record is None:
            problems.add(row_errors)
            batch.clear()
            continue
        if problems.total:
            continue
        batch.append(record)
        if len(batch) >= batch_rows:
            loaded += await _stage(connection, dialect, batch)
            batch.clear()
            if progress is not None:
                await progress(read, loaded)
    if problems.total or not read:
        if progress is not None:
            await progress(read, loaded)
        if not read:
            raise ValidationError("the CSV has no data rows", field="csv")
        raise problems.rejection()
    loaded += await _stage(connection, dialect, batch)
    if progress is not None:
        await progress(read, loaded)
    if dialect != "postgresql":
        check_references = True
    elif check_references is None:
        check_references = not await references.may_skip_triggers(connection)
    async with bulk_page_cache(connection, SQLITE_APPLY_CACHE_KIB):
        first, last = await _apply(
            connection,
            dialect,
            pipeline_id=pipeline_id,
            actor=actor,
            at=at or utcnow(),
            check_references=check_references,
        )
    await _record_webhooks(session, STAGING, first is not None, actor=actor, pipeline_id=pipeline_id)
    if dialect == "sqlite":
        await connection.exec_driver_sql(f"DROP TABLE {STAGING}")
    return BulkOutcome(rows=loaded, first_lead_id=first, last_lead_id=last)


async def _record_webhooks(
    session: AsyncSession, rows: str, any_rows: bool, *, actor: User | None, pipeline_id: int
) -> None:
    """With a webhook endpoint enabled, each imported lead's ``lead.created`` and the import's
    ``import.finished`` go into the outbox with the import's transaction, as on the row-by-row path.
    (Held until the commit: an import of millions of rows with endpoints enabled takes memory for them.)"""
    if not await session.scalar(select(exists().where(WebhookEndpoint.enabled))):
        return
    leads: list[Lead] = []
    if any_rows:
        # The staged rows' ids, not an id range: on PostgreSQL other writers draw ids in between.
        ids = select(column("lead_id", Integer)).select_from(table(rows))
        statement = select(Lead).where(Lead.id.in_(ids)).order_by(Lead.id)
        leads = list((await session.execute(statement)).scalars())
    actor_id = actor.id if actor is not None else None
    for lead in leads:
        record_lead_event(session, LeadEventKind.CREATED, lead, actor_id)
    record_import_finished(session, pipeline_id=pipeline_id, leads=leads, actor_id=actor_id)


async def _create_staging(connection: AsyncConnection, dialect: str) -> None:
    columns = ", ".join(f"{name} {kind}" for name, kind in zip(_STAGED, _STAGING_TYPES, strict=True))
    if dialect == "postgresql":
        columns += "".join(f", {name} {kind}" for name, kind in _POSTGRESQL_IDS)
        # Dropped with the transaction, committed or not: a killed import leaves no staging behind.
        await connection.exec_driver_sql(f"CREATE TEMP TABLE {STAGING} ({columns}) ON COMMIT DROP")
    else:
        # One writer at a time: the leads get the ids after the largest, in row order, and the rows
        # are applied only when every row passed, so row n's lead is the n-th id from there.
        found = await connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM leads")
        before = int(found.scalar_one())
        lead_id = f"lead_id integer GENERATED ALWAYS AS (row_no + {before}) VIRTUAL"
        await connection.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{STAGING}")
        await connection.exec_driver_sql(f"CREATE TEMP TABLE {STAGING} ({columns}, {lead_id})")


async def _stage(connection: AsyncConnection, dialect: str, batch: list[tuple[Any, ...]]) -> int:
    if not batch:
        return 0
    if dialect == "postgresql":
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        # The batch's ids, drawn in row order as one create_lead per row draws them: the staged rows
        # are applied as they are, with no copy to number them and no ANALYZE of that copy.
        drawn = await driver.fetch(_DRAW_IDS, len(batch))
        records = [(*record, ids[0], ids[1]) for record, ids in zip(batch, drawn, strict=True)]
        columns = [*_STAGED, *(name for name, _ in _POSTGRESQL_IDS)]
        await driver.copy_records_to_table(STAGING, records=records, columns=columns)
    else:
        marks = ", ".join("?" for _ in _STAGED)
        insert = f"INSERT INTO {STAGING} ({', '.join(_STAGED)}) VALUES ({marks})"
        await connection.exec_driver_sql(insert, batch)
    return len(batch)


_LEAD_COLUMNS = (
    "id, pipeline_id, stage_id, owner_id, title, company, contact_name, contact_email, contact_phone, "
    "source, value_cents, status, lost_reason, expected_close_date, budget, authority, need, timeline, "
    "qualification_score, created_at, updated_at, closed_at, stage_entered_at, version"
)
_OPEN, _CREATED = LeadStatus.OPEN.value, LeadEventKind.CREATED.value


def _apply_statements(dialect: str, rows: str) -> list[str]:
    """Leads, history, stays, totals and events of the staged rows ``rows`` (a table with lead ids)."""
    new_leads = f"lead_id IN (SELECT lead_id FROM {rows})"
    # PostgreSQL would read an untyped parameter in a SELECT list as text.
    at = "CAST(:at AS TIMESTAMPTZ)" if dialect == "postgresql" else ":at"
    pipeline, actor = "CAST(:pipeline_id AS INTEGER)", "CAST(:actor_id AS INTEGER)"
    statements = [
        f"""INSERT INTO leads ({_LEAD_COLUMNS})
        SELECT lead_id, {pipeline}, stage_id, owner_id, title, company, contact_name,
               contact_email, contact_phone, source, value_cents, '{_OPEN}', '', expected_close_date,
               budget, authority, need, timeline, qualification_score, {at}, {at}, NULL, {at}, 1
        FROM {rows} ORDER BY row_no""",
    ]
    if dialect == "postgresql":
        # History ids were drawn in row order with the lead ids; each stay takes its history row's.
        statements += [
            f"""INSERT INTO stage_history (id, lead_id, pipeline_id, from_stage_id, to_stage_id,
                   from_status, to_status, changed_at, actor_id)
            SELECT history_id, lead_id, {pipeline}, NULL, stage_id, NULL, '{_OPEN}', {at}, {actor}
            FROM {rows}""",
            f"""INSERT INTO stage_stays ({", ".join(stays.ALL_STAY_COLUMNS)})
            SELECT history_id, lead_id, {pipeline}, stage_id, '{_OPEN}', {at}, NULL, NULL, NULL, NULL
            FROM {rows}""",
        ]
    else:
        statements += [
            # History ids follow row order, as one create_lead per row gives them.
            f"""INSERT INTO stage_history (lead_id, pipeline_id, from_stage_id, to_stage_id,
                   from_status, to_status, changed_at, actor_id)
            SELECT lead_id, {pipeline}, NULL, stage_id, NULL, '{_OPEN}', {at}, {actor}
            FROM {rows} ORDER BY row_no""",
            # A new lead's one history row opens its one stay, still running: what ``stays_sql``
            # derives for it, without the window over every row.
            f"""INSERT INTO stage_stays ({", ".join(stays.ALL_STAY_COLUMNS)})
            SELECT h.id, h.lead_id, h.pipeline_id, h.to_stage_id, h.to_status, h.changed_at,
                   NULL, NULL, NULL, NULL
            FROM stage_history h WHERE h.{new_leads}""",
        ]
    if dialect == "postgresql":
        # Event positions follow commit order within a pipeline (see pipegraph.db.lead_events); the lock
        # comes before the daily totals, whose rows every writer of the pipeline locks after it
        # (pipegraph.db.flow_days.apply), so that no writer holds them while it queues for it.
        statements.append(f"SELECT pg_advisory_xact_lock({LOCK_SPACE}, :pipeline_id)")
    statements.append(flow_days.totals_sql(dialect, new_leads))
    statements.append(
        f"""INSERT INTO lead_events (pipeline_id, lead_id, kind, version, occurred_at, actor_id)
        SELECT {pipeline}, lead_id, '{_CREATED}', 1, {at}, {actor}
        FROM {rows} ORDER BY row_no"""
    )
    return statements


async def _apply(
    connection: AsyncConnection,
    dialect: str,
    *,
    pipeline_id: int,
    actor: User | None,
    at: datetime,
    check_references: bool,
) -> tuple[int | None, int | None]:
    rows = STAGING
    parameters = {
        "pipeline_id": pipeline_id,
        "at": at,
        "actor_id": actor.id if actor is not None else None,
        "sign": 1,
    }
    statements = _apply_statements(dialect, rows)
    if check_references:
        await _run(connection, statements, parameters)
    else:
        actor_id = actor.id if actor is not None else None
        await references.lock_references(connection, rows, pipeline_id=pipeline_id, actor_id=actor_id)
        async with references.triggers_skipped(connection):
            await _run(connection, statements, parameters)
    span = await connection.execute(text(f"SELECT min(lead_id), max(lead_id) FROM {rows}"))
    first, last = span.one()
    return first, last


def _sequence(table: str) -> str:
    """The table's id sequence, looked up once per statement: a plain ``pg_get_serial_sequence`` call
    is evaluated (and the name resolved) for every row, which took longer than drawing the ids."""
    return f"(SELECT CAST(pg_get_serial_sequence('{table}', 'id') AS regclass))"


# Lead and history ids in pairs, drawn in the order the function scan yields its rows.
_DRAW_IDS = (
    f"SELECT nextval({_sequence('leads')}), nextval({_sequence('stage_history')}) FROM generate_series(1, $1)"
)


async def _run(connection: AsyncConnection, statements: list[str], parameters: dict[str, Any]) -> None:
    for statement in statements:
        clause = text(statement)
        if ":at" in statement:
            clause = clause.bindparams(bindparam("at", type_=UTCDateTime()))
        used = {key: value for key, value in parameters.items() if f":{key}" in statement}
        await connection.execute(clause, used)
