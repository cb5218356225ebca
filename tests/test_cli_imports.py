"""``pipegraph import`` with a header map and ``pipegraph export-leads``, in process: a file from another
CRM imports, and its export imports into an empty pipeline as the same leads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from pipegraph.cli import main
from pipegraph.db.models import Lead, Pipeline, Stage, User
from pipegraph.db.session import Store
from pipegraph.services import pipelines, users
from server_support import seed_database

OTHER_CRM = (
    "Deal Name,Amount,Deal Stage,Owner,Close Date,Budget\n"
    "Acme rollout,1200.50,qualifying,ADA@example.com,03/15/2027,yes\n"
    '"Beta ""pilot"", phase 2",0,PROSPECTING,,15.03.2027,no\n'
    "Gamma,99,Negotiation,rep@example.com,2027-04-01 14:30,1\n"
)
MAP = "Deal Name=title,Amount=value,Deal Stage=stage,Owner=owner_email,Close Date=expected_close_date"


async def _setup(database_url: str) -> None:
    await seed_database(database_url)
    store = Store.from_url(database_url)
    try:
        async with store.write() as session:
            await users.create_user(session, name="Rep", email="rep@example.com")
            await pipelines.create_pipeline(session, name="Copy", template="CLASSIC", actor=None)
    finally:
        await store.dispose()


async def _leads(database_url: str, pipeline: str) -> list[tuple[object, ...]]:
    store = Store.from_url(database_url)
    try:
        async with store.read() as session:
            rows = await session.execute(
                select(*(Lead.title, Lead.company, Lead.value_cents, Stage.name, User.email))
                .add_columns(Lead.expected_close_date, Lead.budget, Lead.qualification_score, Lead.status)
                .join(Stage, Stage.id == Lead.stage_id)
                .join(Pipeline, Pipeline.id == Lead.pipeline_id)
                .outerjoin(User, User.id == Lead.owner_id)
                .where(Pipeline.name == pipeline)
                .order_by(Lead.id)
            )
            return [tuple(r) for r in rows]
    finally:
        await store.dispose()


def test_import_with_a_map_then_export_round_trips(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_setup(database_url))
    source = tmp_path / "other.csv"
    source.write_text(OTHER_CRM, encoding="utf-8")
    db = ["--database-url", database_url]
    assert main(["import", str(source), "--pipeline", "Sales", "--map", MAP, *db]) == 0
    imported = asyncio.run(_leads(database_url, "Sales"))
    assert [(r[0], r[2], r[3], r[4], str(r[5])) for r in imported] == [
        ("Acme rollout", 120050, "Qualifying", "ada@example.com", "2027-03-15"),
        ('Beta "pilot", phase 2', 0, "Prospecting", None, "2027-03-15"),
        ("Gamma", 9900, "Negotiation", "rep@example.com", "2027-04-01"),
    ]
    exported = tmp_path / "export.csv"
    assert main(["export-leads", "--pipeline", "Sales", "--output", str(exported), *db]) == 0
    assert main(["import", str(exported), "--pipeline", "Copy", *db]) == 0
    assert asyncio.run(_leads(database_url, "Copy")) == imported


def test_import_names_every_problem_and_writes_nothing(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(seed_database(database_url))
    source = tmp_path / "bad.csv"
    source.write_text("Deal Name,Amount,Close Date\nFine,1,2027-01-01\n,-1,13/45/2027\n", encoding="utf-8")
    db = ["--database-url", database_url]
    assert main(["import", str(source), "--pipeline", "Sales", "--map", MAP, *db]) == 1
    err = capsys.readouterr().err
    assert "csv[row 2].title" in err
    assert "csv[row 2].value" in err
    assert "csv[row 2].expected_close_date: '13/45/2027' is not a date" in err
    assert asyncio.run(_leads(database_url, "Sales")) == []
