"""The bulk import against the row-by-row one: the same file gives the same rows in every table, the
same problems, and nothing written when any row fails."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event, text

from conftest import _postgres_admin_url
from pipegraph.db import flow_days, migrate
from pipegraph.db.lead_events import take_events, write_events
from pipegraph.db.session import Store
from pipegraph.errors import ValidationError
from pipegraph.services import imports, imports_bulk, imports_references, leads, pipelines, users
from pipegraph.services.import_rows import ImportRejectedError

AT = datetime(2026, 3, 15, 14, 30, 12, 345678, tzinfo=UTC)
# Every table an import writes, each with its order; the events' time is when they were logged.
TABLES = {
    "leads": "SELECT * FROM leads ORDER BY id",
    "stage_history": "SELECT * FROM stage_history ORDER BY id",
    "stage_stays": "SELECT * FROM stage_stays ORDER BY history_id",
    "stage_flow_days": (
        "SELECT pipeline_id, day, kind, stage_id, status, next_stage_id, next_status, days_in_stage, n, "
        "seconds_sum FROM stage_flow_days WHERE n <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8"
    ),
    "lead_events": "SELECT id, pipeline_id, lead_id, kind, version, actor_id FROM lead_events ORDER BY id",
}
STAGES = ("Lead Generation", "lead qualification", "NEEDS ASSESSMENT", "Proposal", "negotiation", "")
DATES = ("", "2026-05-01", "05/17/2026", "17.05.2026", "2026-05-17 14:30", "2026-05-17T09:00:00")
FLAGS = ("", "yes", "no", "TRUE", "0", "1", "x", "n")


def corpus(rows: int, seed: int) -> str:
    """A file of ``rows`` good rows of every kind of value, columns in an unusual order."""
    rng = random.Random(seed)
    out = io.StringIO()
    out.write(
        "Stage,title,Owner Email,value,company,contact-email,expected_close_date,"
        "budget,need,timeline,source\n"
    )
    for n in range(rows):
        title = rng.choice((f"Deal {n}", f'"Quoted, {n}"', f"Ümlaut deal {n}", f"  padded {n}  "))
        value = rng.choice(("", "0", "12.5", "1000", "99.99", f"{rng.randint(0, 10**6)}"))
        email = rng.choice(("", f"c{n}@example.com"))
        owner = rng.choice(("", "rep@example.com", "MANAGER@example.com"))
        flags = ",".join(rng.choice(FLAGS) for _ in range(3))
        out.write(
            f"{rng.choice(STAGES)},{title},{owner},{value},Co {n % 7},{email},{rng.choice(DATES)},{flags},"
            f"{rng.choice(('web', 'referral', ''))}\n"
        )
    return out.getvalue()


async def _admin(plain_url: str, sql: str) -> None:
    connection = await asyncpg.connect(plain_url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def twin_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases on one backend: one per import path."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reference.sqlite3'}", f"sqlite:///{tmp_path / 'bulk.sqlite3'}"
        return
    admin = _postgres_admin_url()
    assert admin is not None
    plain = admin.replace("postgresql+asyncpg://", "postgresql://")
    base = plain.rpartition("/")[0]
    names = [f"pipegraph_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        asyncio.run(_admin(plain, f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        for name in names:
            asyncio.run(_admin(plain, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def twins(twin_urls: tuple[str, str]) -> AsyncIterator[tuple[Store, Store]]:
    stores = [Store.from_url(url) for url in twin_urls]
    try:
        for store in stores:
            await migrate.upgrade(store.engine)
            await _setup(store)
        yield stores[0], stores[1]
    finally:
        for store in stores:
            await store.dispose()


async def _setup(store: Store) -> None:
    """A pipeline with two users and one lead already, so the import adds to existing ids and totals."""
    async with store.write() as session:
        await users.create_user(session, name="Rep", email="rep@example.com")
        await users.create_user(session, name="Manager", email="manager@example.com", role="MANAGER")
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="GENERAL_B2B", actor=None)
        await leads.create_lead(session, pipeline_id=pipeline.id, title="Existing", actor=None, at=AT)


async def _tables(store: Store) -> dict[str, list[tuple[object, ...]]]:
    async with store.read() as session:
        return {
            name: [tuple(r) for r in (await session.execute(text(sql))).all()] for name, sql in TABLES.items()
        }


async def _import(
    store: Store,
    csv_text: str,
    *,
    bulk: bool,
    batch_rows: int = 64,
    check_references: bool | None = None,
    progress: imports_bulk.Progress | None = None,
) -> None:
    async with store.write() as session:
        if bulk:
            lines = io.StringIO(csv_text)
            await imports_bulk.import_leads_bulk(
                session,
                pipeline_id=1,
                lines=lines,
                actor=None,
                at=AT,
                batch_rows=batch_rows,
                check_references=check_references,
                progress=progress,
            )
        else:
            await imports.import_leads(session, pipeline_id=1, csv_text=csv_text, actor=None, at=AT)
            # What the server's event broker does with the events each create_lead recorded.
            await write_events(session, take_events(session))


@pytest.mark.parametrize("check_references", [None, True], ids=["checked-once", "checked-per-row"])
async def test_bulk_import_writes_what_row_by_row_import_writes(
    twins: tuple[Store, Store], check_references: bool | None
) -> None:
    reference, bulk = twins
    csv_text = corpus(500, seed=13)
    await _import(reference, csv_text, bulk=False)
    await _import(bulk, csv_text, bulk=True, check_references=check_references)
    expected, got = await _tables(reference), await _tables(bulk)
    assert len(got["leads"]) == 501
    for name in TABLES:
        assert got[name] == expected[name], name
    # The daily totals are those the stays give.
    async with bulk.write() as session:
        await flow_days.rebuild(session)
    assert (await _tables(bulk))["stage_flow_days"] == got["stage_flow_days"]


async def test_bulk_import_reports_the_same_problems_and_writes_nothing(twins: tuple[Store, Store]) -> None:
    reference, bulk = twins
    # Good rows over several batches, then bad rows at the very end.
    csv_text = (
        corpus(300, seed=5) + ",,,-1,,not-an-email,31/31/2026,perhaps,,,\nZ,Fine,nobody@example.com,,,,,,,,\n"
    )
    before = await _tables(bulk)
    raised: list[ImportRejectedError] = []
    for store, is_bulk in ((reference, False), (bulk, True)):
        with pytest.raises(ImportRejectedError) as rejected:
            await _import(store, csv_text, bulk=is_bulk)
        raised.append(rejected.value)
    fields = [[(e.field, e.message) for e in r.errors] for r in raised]
    assert fields[0] == fields[1]
    assert [f for f, _ in fields[1]] == [
        "csv[row 301].title",
        "csv[row 301].contact_email",
        "csv[row 301].value",
        "csv[row 301].expected_close_date",
        "csv[row 301].budget",
        "csv[row 302].stage",
        "csv[row 302].owner_email",
    ]
    assert await _tables(bulk) == before
    # The connection is fit for the next import: no staging table left behind.
    await _import(bulk, corpus(3, seed=1), bulk=True)
    assert len((await _tables(bulk))["leads"]) == 4


def _postgres_only(store: Store) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL checks references once per import; SQLite per row")


async def test_imported_tables_have_no_trigger_the_import_would_skip(twins: tuple[Store, Store]) -> None:
    """Checking references once skips the triggers of the import's own inserts (replica role): every
    trigger on those tables but the foreign keys' must fire always (the exit totals' does)."""
    _, bulk = twins
    _postgres_only(bulk)
    tables = ", ".join(f"'{name}'::regclass" for name in imports_references.IMPORTED_TABLES)
    async with bulk.read() as session:
        found = await session.execute(
            text(
                "SELECT tgname, tgenabled::text FROM pg_trigger "
                f"WHERE tgrelid IN ({tables}) AND NOT tgisinternal"
            )
        )
        assert sorted(tuple(row) for row in found.all()) == [
            (f"stage_exit_totals_{name}", "A") for name in ("delete", "insert", "update")
        ]


async def test_a_user_deleted_during_the_import_refuses_it(twins: tuple[Store, Store]) -> None:
    _, bulk = twins
    _postgres_only(bulk)
    before = await _tables(bulk)
    csv_text = "title,owner_email\n" + "".join(f"Deal {n},manager@example.com\n" for n in range(100))

    async def delete_manager(rows_read: int, rows_loaded: int) -> None:
        if rows_read == 64:  # checked already, not yet locked: another writer deletes the owner
            async with bulk.write() as other:
                await other.execute(text("DELETE FROM users WHERE email = 'manager@example.com'"))

    with pytest.raises(ValidationError, match="a user the file names was deleted"):
        await _import(bulk, csv_text, bulk=True, progress=delete_manager)
    assert await _tables(bulk) == before


@pytest.mark.parametrize("check_references", [None, True], ids=["checked-once", "checked-per-row"])
async def test_statements_do_not_grow_with_the_rows(
    twins: tuple[Store, Store], check_references: bool | None
) -> None:
    """Set-based: beyond one staging statement per batch, an import of 640 rows runs as many
    statements as one of 64."""
    _, bulk = twins
    counts = []
    for rows in (64, 640):
        statements: list[str] = []

        def count(*args: object, statements: list[str] = statements) -> None:
            statements.append(str(args[2]))

        sync_engine = bulk.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", count)
        try:
            await _import(bulk, corpus(rows, seed=rows), bulk=True, check_references=check_references)
        finally:
            event.remove(sync_engine, "before_cursor_execute", count)
        staging = sum("INSERT INTO import_staging" in statement for statement in statements)
        counts.append(len(statements) - staging)
    assert counts[0] == counts[1]


async def test_sqlite_import_leaves_the_page_caches_as_it_found_them(twins: tuple[Store, Store]) -> None:
    _, bulk = twins
    if bulk.engine.dialect.name != "sqlite":
        pytest.skip("the apply cache is SQLite's")
    async with bulk.write() as session:
        before = (await session.execute(text("PRAGMA main.cache_size"))).scalar_one()
        temp_before = (await session.execute(text("PRAGMA temp.cache_size"))).scalar_one()
        lines = io.StringIO(corpus(10, seed=2))
        await imports_bulk.import_leads_bulk(session, pipeline_id=1, lines=lines, actor=None, at=AT)
        assert (await session.execute(text("PRAGMA main.cache_size"))).scalar_one() == before
        assert (await session.execute(text("PRAGMA temp.cache_size"))).scalar_one() == temp_before
