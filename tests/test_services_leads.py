from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from pipegraph.db.lead_events import take_events
from pipegraph.db.models import Lead, Role, Stage, StageHistory, User
from pipegraph.db.session import Store
from pipegraph.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from pipegraph.services import imports, leads, pipelines, queries, users
from pipegraph.services.templates import TEMPLATES, StageSpec


async def _setup(store: Store) -> tuple[int, list[int], User]:
    async with store.write() as session:
        rep = await users.create_user(session, name="Rep", email="rep@example.com", role=Role.REP)
        pipeline = await pipelines.create_pipeline(session, name="Sales", template="GENERAL_B2B", actor=None)
        stages = await pipelines.current_stages(session, pipeline.id)
    return pipeline.id, [s.id for s in stages], rep


async def _snapshot(store: Store) -> tuple[object, ...]:
    async with store.read() as session:
        rows = (await session.execute(select(Lead).order_by(Lead.id))).scalars()
        lead_state = [(x.id, x.stage_id, x.status, x.value_cents, x.version, x.contact_email) for x in rows]
        history = (await session.execute(select(func.count()).select_from(StageHistory))).scalar_one()
        stage_state = (
            await session.execute(select(Stage.id, Stage.name, Stage.position, Stage.removed_at))
        ).all()
    return tuple(lead_state), history, tuple(sorted(stage_state))


async def _history(store: Store, lead_id: int) -> list[tuple[int | None, int, str | None, str]]:
    async with store.read() as session:
        rows = await queries.history_by_lead_ids(session, [lead_id])
    return [(h.from_stage_id, h.to_stage_id, h.from_status, h.to_status) for h in rows[lead_id]]


async def test_templates_create_their_stages_in_order(store: Store) -> None:
    pipeline_id, stage_ids, _ = await _setup(store)
    async with store.read() as session:
        stages = await pipelines.current_stages(session, pipeline_id)
    assert [s.name for s in stages] == [spec.name for spec in TEMPLATES["GENERAL_B2B"].stages]
    assert [s.position for s in stages] == list(range(len(stage_ids)))
    assert stages[-1].is_post_sale


async def test_lead_lifecycle_writes_one_history_row_per_change(store: Store) -> None:
    pipeline_id, stage_ids, rep = await _setup(store)
    async with store.write() as session:
        lead = await leads.create_lead(
            session, pipeline_id=pipeline_id, title="Deal", value="1200.50", actor=rep
        )
        assert [e.kind for e in take_events(session)] == ["CREATED"]
    assert lead.owner_id == rep.id
    assert lead.value_cents == 120050
    async with store.write() as session:
        await leads.move_lead(
            session, lead_id=lead.id, to_stage_id=stage_ids[1], expected_version=1, actor=rep
        )
    async with store.write() as session:
        await leads.update_lead(session, lead_id=lead.id, budget=True, need=True, actor=rep)
    async with store.write() as session:
        closed = await leads.close_lead(
            session, lead_id=lead.id, outcome="WON", value=Decimal("1500"), actor=rep
        )
    assert (closed.status, closed.value_cents, closed.version, closed.qualification_score) == (
        "WON",
        150000,
        4,
        50,
    )
    async with store.write() as session:
        await leads.move_lead(
            session, lead_id=lead.id, to_stage_id=stage_ids[-1], expected_version=4, actor=rep
        )
    async with store.write() as session:
        await leads.reopen_lead(session, lead_id=lead.id, stage_id=stage_ids[2], actor=rep)
    assert await _history(store, lead.id) == [
        (None, stage_ids[0], None, "OPEN"),
        (stage_ids[0], stage_ids[1], "OPEN", "OPEN"),
        (stage_ids[1], stage_ids[1], "OPEN", "WON"),
        (stage_ids[1], stage_ids[-1], "WON", "WON"),
        (stage_ids[-1], stage_ids[2], "WON", "OPEN"),
    ]


@pytest.mark.parametrize(
    ("case", "error", "field"),
    [
        ("stale_version", ConflictError, "expected_version"),
        ("other_pipeline_stage", ValidationError, "to_stage_id"),
        ("closed_lead", ValidationError, "lead_id"),
        ("post_sale_for_open", ValidationError, "to_stage_id"),
        ("unknown_stage", NotFoundError, "to_stage_id"),
        ("unknown_lead", NotFoundError, "lead_id"),
        ("other_reps_lead", PermissionDeniedError, "lead_id"),
    ],
)
async def test_bad_moves_change_nothing(
    store: Store, case: str, error: type[Exception], field: str | None
) -> None:
    pipeline_id, stage_ids, rep = await _setup(store)
    async with store.write() as session:
        other = await pipelines.create_pipeline(session, name="Other", stages=[StageSpec("Only")], actor=None)
        other_stage = (await pipelines.current_stages(session, other.id))[0]
        other_rep = await users.create_user(session, name="R2", email="r2@example.com", role=Role.REP)
        lead = await leads.create_lead(session, pipeline_id=pipeline_id, title="Deal", actor=rep)
        lost = await leads.create_lead(session, pipeline_id=pipeline_id, title="Lost", actor=rep)
        await leads.close_lead(session, lead_id=lost.id, outcome="LOST", reason="price", actor=rep)
    before = await _snapshot(store)
    arguments: dict[str, object] = {
        "lead_id": lead.id,
        "to_stage_id": stage_ids[1],
        "expected_version": 1,
        "actor": rep,
    }
    changes: dict[str, dict[str, object]] = {
        "stale_version": {"expected_version": 7},
        "other_pipeline_stage": {"to_stage_id": other_stage.id},
        "closed_lead": {"lead_id": lost.id, "expected_version": 2},
        "post_sale_for_open": {"to_stage_id": stage_ids[-1]},
        "unknown_stage": {"to_stage_id": 999_999},
        "unknown_lead": {"lead_id": 999_999},
        "other_reps_lead": {"actor": other_rep},
    }
    arguments |= changes[case]
    with pytest.raises(error) as raised:
        async with store.write() as session:
            await leads.move_lead(session, **arguments)  # type: ignore[arg-type]
    assert getattr(raised.value, "field", None) == field
    if case == "stale_version":
        assert "version 1" in str(raised.value)
    assert await _snapshot(store) == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"value": "-1"}, "value"),
        ({"value": "1.001"}, "value"),
        ({"value": "abc"}, "value"),
        ({"contact_email": "nope"}, "contact_email"),
        ({"title": " "}, "title"),
        ({"pipeline_id": 999_999}, "pipeline_id"),
        ({"owner_id": 999_999}, "owner_id"),
    ],
)
async def test_bad_lead_input_is_rejected(store: Store, kwargs: dict[str, object], field: str) -> None:
    pipeline_id, _, _ = await _setup(store)
    before = await _snapshot(store)
    arguments: dict[str, object] = {"pipeline_id": pipeline_id, "title": "Deal", "actor": None} | kwargs
    with pytest.raises((ValidationError, NotFoundError)) as raised:
        async with store.write() as session:
            await leads.create_lead(session, **arguments)  # type: ignore[arg-type]
    assert raised.value.field == field
    assert await _snapshot(store) == before


async def test_remove_stage_moves_leads_and_keeps_history(store: Store) -> None:
    pipeline_id, stage_ids, rep = await _setup(store)
    async with store.write() as session:
        lead = await leads.create_lead(session, pipeline_id=pipeline_id, title="Deal", actor=rep)
        await leads.move_lead(
            session, lead_id=lead.id, to_stage_id=stage_ids[1], expected_version=1, actor=rep
        )
    async with store.write() as session:
        await pipelines.remove_stage(
            session, stage_id=stage_ids[1], move_leads_to_stage_id=stage_ids[2], actor=None
        )
    async with store.read() as session:
        current = await pipelines.current_stages(session, pipeline_id)
        moved = await leads.get_lead(session, lead.id)
    assert [s.id for s in current] == [stage_ids[0], *stage_ids[2:]]
    assert [s.position for s in current] == list(range(len(current)))
    assert (moved.stage_id, moved.version) == (stage_ids[2], 3)
    assert await _history(store, lead.id) == [
        (None, stage_ids[0], None, "OPEN"),
        (stage_ids[0], stage_ids[1], "OPEN", "OPEN"),
        (stage_ids[1], stage_ids[2], "OPEN", "OPEN"),
    ]
    # The removed stage's name is free again.
    async with store.write() as session:
        await pipelines.add_stage(
            session, pipeline_id=pipeline_id, name="Lead Qualification", position=1, actor=None
        )


async def test_duplicate_names_conflict(store: Store) -> None:
    _, stage_ids, _ = await _setup(store)
    before = await _snapshot(store)
    with pytest.raises(ConflictError):
        async with store.write() as session:
            await pipelines.create_pipeline(session, name="sales", template="CLASSIC", actor=None)
    with pytest.raises(ConflictError) as raised:
        async with store.write() as session:
            await pipelines.create_pipeline(
                session, name="New", stages=[StageSpec("A"), StageSpec("a")], actor=None
            )
    assert raised.value.field == "stages[1].name"
    with pytest.raises(ConflictError):
        async with store.write() as session:
            await pipelines.update_stage(session, stage_id=stage_ids[0], name="Proposal", actor=None)
    assert await _snapshot(store) == before


async def test_reorder_stages_needs_every_stage_once(store: Store) -> None:
    pipeline_id, stage_ids, rep = await _setup(store)
    with pytest.raises(ValidationError):
        async with store.write() as session:
            await pipelines.reorder_stages(
                session, pipeline_id=pipeline_id, stage_ids=stage_ids[1:], actor=None
            )
    async with store.write() as session:
        await pipelines.reorder_stages(
            session, pipeline_id=pipeline_id, stage_ids=stage_ids[::-1], actor=None
        )
    async with store.read() as session:
        assert [s.id for s in await pipelines.current_stages(session, pipeline_id)] == stage_ids[::-1]
    with pytest.raises(PermissionDeniedError):
        async with store.write() as session:
            await pipelines.reorder_stages(session, pipeline_id=pipeline_id, stage_ids=stage_ids, actor=rep)


async def test_import_reports_every_problem_of_a_row(store: Store) -> None:
    pipeline_id, _, _ = await _setup(store)
    with pytest.raises(imports.ImportRejectedError) as raised:
        async with store.write() as session:
            await imports.import_leads(
                session,
                pipeline_id=pipeline_id,
                csv_text="title,value,stage,budget\n,-1,Nowhere,perhaps\n",
                actor=None,
            )
    assert [e.field for e in raised.value.errors] == [
        "csv[row 1].title",
        "csv[row 1].value",
        "csv[row 1].stage",
        "csv[row 1].budget",
    ]


async def test_import_lists_the_first_problems_and_counts_them_all(store: Store) -> None:
    pipeline_id, _, _ = await _setup(store)
    bad = "title,value\n" + ",-1\n" * 80
    with pytest.raises(imports.ImportRejectedError) as raised:
        async with store.write() as session:
            await imports.import_leads(session, pipeline_id=pipeline_id, csv_text=bad, actor=None)
    errors = raised.value.errors
    assert raised.value.total == 160
    assert len(errors) == 101
    assert (errors[-1].field, errors[-1].message) == ("csv", "160 problems in all; the first 100 are listed")
    assert errors[99].field == "csv[row 50].value"


async def test_import_is_all_or_nothing_with_every_row_error(store: Store) -> None:
    pipeline_id, _, rep = await _setup(store)
    good = (
        "title,company,value,stage,owner_email,budget\nA,Acme,10.5,Proposal,rep@example.com,yes\nB,,0,,,no\n"
    )
    bad = good + "C,,-3,,,\nD,,1,Nowhere,nobody@example.com,maybe\n"
    before = await _snapshot(store)
    with pytest.raises(imports.ImportRejectedError) as raised:
        async with store.write() as session:
            await imports.import_leads(session, pipeline_id=pipeline_id, csv_text=bad, actor=None)
    assert [e.field for e in raised.value.errors] == [
        "csv[row 3].value",
        "csv[row 4].stage",
        "csv[row 4].owner_email",
        "csv[row 4].budget",
    ]
    assert await _snapshot(store) == before
    async with store.write() as session:
        created = await imports.import_leads(session, pipeline_id=pipeline_id, csv_text=good, actor=None)
    assert [(x.title, x.value_cents, x.owner_id, x.qualification_score) for x in created] == [
        ("A", 1050, rep.id, 25),
        ("B", 0, None, 0),
    ]
