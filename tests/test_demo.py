"""The demo data set: deterministic, and exactly as consistent as the services would leave a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from pipegraph import demo
from pipegraph.db import migrate
from pipegraph.db.models import Lead, LeadStatus, Stage, StageHistory
from pipegraph.db.session import Store
from pipegraph.db.stays import STAY_COLUMNS, STAYS_FROM_HISTORY
from pipegraph.errors import ValidationError

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LEADS_PER_PIPELINE = 300

# Each query counts rows that break one invariant; all must be zero.
INVARIANTS = {
    "first history row records the creation, open": """
        WITH ordered AS (SELECT h.*, ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY changed_at, id) AS rn
                         FROM stage_history h)
        SELECT count(*) FROM ordered o JOIN leads l ON l.id = o.lead_id
        WHERE o.rn = 1 AND (o.from_stage_id IS NOT NULL OR o.from_status IS NOT NULL
                            OR o.to_status <> 'OPEN' OR o.changed_at <> l.created_at)""",
    "every lead has exactly one creation row": """
        SELECT count(*) FROM leads l
        WHERE (SELECT count(*) FROM stage_history h
               WHERE h.lead_id = l.id AND h.from_stage_id IS NULL) <> 1""",
    "each row starts where the previous one ended, and changes something": """
        WITH ordered AS (
            SELECT h.*, LAG(to_stage_id) OVER w AS prev_stage, LAG(to_status) OVER w AS prev_status,
                   ROW_NUMBER() OVER w AS rn
            FROM stage_history h WINDOW w AS (PARTITION BY lead_id ORDER BY changed_at, id))
        SELECT count(*) FROM ordered
        WHERE rn > 1 AND (from_stage_id IS NULL OR from_stage_id <> prev_stage OR from_status <> prev_status
                          OR (from_stage_id = to_stage_id AND from_status = to_status))""",
    "last history row matches the lead's stage, status and update time": """
        WITH ranked AS (SELECT h.*, ROW_NUMBER() OVER (PARTITION BY lead_id ORDER BY changed_at DESC, id DESC)
                        AS rn FROM stage_history h)
        SELECT count(*) FROM leads l LEFT JOIN ranked r ON r.lead_id = l.id AND r.rn = 1
        WHERE r.id IS NULL OR r.to_stage_id <> l.stage_id OR r.to_status <> l.status
              OR r.changed_at <> l.updated_at""",
    "version counts the changes": """
        SELECT count(*) FROM leads l
        WHERE l.version <> (SELECT count(*) FROM stage_history h WHERE h.lead_id = l.id)""",
    "stage_entered_at is the last stage change": """
        WITH entries AS (SELECT lead_id, MAX(changed_at) AS entered FROM stage_history
                         WHERE from_stage_id IS NULL OR from_stage_id <> to_stage_id GROUP BY lead_id)
        SELECT count(*) FROM leads l JOIN entries e ON e.lead_id = l.id
        WHERE e.entered <> l.stage_entered_at""",
    "closed leads have closed_at = their last closing row, open leads none": """
        WITH closes AS (SELECT lead_id, MAX(changed_at) AS closed FROM stage_history
                        WHERE from_status = 'OPEN' AND to_status <> 'OPEN' GROUP BY lead_id)
        SELECT count(*) FROM leads l LEFT JOIN closes c ON c.lead_id = l.id
        WHERE (l.status = 'OPEN' AND l.closed_at IS NOT NULL)
           OR (l.status <> 'OPEN'
               AND (l.closed_at IS NULL OR c.closed IS NULL OR l.closed_at <> c.closed))""",
    "only won leads stand in or enter post-sale stages": """
        SELECT (SELECT count(*) FROM leads l JOIN stages s ON s.id = l.stage_id
                WHERE s.is_post_sale AND l.status <> 'WON')
             + (SELECT count(*) FROM stage_history h JOIN stages s ON s.id = h.to_stage_id
                WHERE s.is_post_sale AND h.to_status <> 'WON')""",
    "history stays within the lead's pipeline": """
        SELECT count(*) FROM stage_history h
        JOIN leads l ON l.id = h.lead_id
        JOIN stages t ON t.id = h.to_stage_id
        LEFT JOIN stages f ON f.id = h.from_stage_id
        WHERE h.pipeline_id <> l.pipeline_id OR t.pipeline_id <> l.pipeline_id
           OR (f.id IS NOT NULL AND f.pipeline_id <> l.pipeline_id)""",
    "lost leads and only they carry a lost reason": """
        SELECT count(*) FROM leads
        WHERE (status = 'LOST' AND lost_reason = '') OR (status <> 'LOST' AND lost_reason <> '')""",
    "qualification score is 25 per BANT criterion met": """
        SELECT count(*) FROM leads WHERE qualification_score <> 25 * (
            CASE WHEN budget THEN 1 ELSE 0 END + CASE WHEN authority THEN 1 ELSE 0 END
          + CASE WHEN need THEN 1 ELSE 0 END + CASE WHEN timeline THEN 1 ELSE 0 END)""",
    "no dangling references": """
        SELECT (SELECT count(*) FROM stage_history h LEFT JOIN leads l ON l.id = h.lead_id WHERE l.id IS NULL)
             + (SELECT count(*) FROM activities a LEFT JOIN leads l ON l.id = a.lead_id WHERE l.id IS NULL)
             + (SELECT count(*) FROM leads l LEFT JOIN users u ON u.id = l.owner_id WHERE u.id IS NULL)
             + (SELECT count(*) FROM leads l LEFT JOIN stages s ON s.id = l.stage_id WHERE s.id IS NULL)""",
    "leads are owned by reps": """
        SELECT count(*) FROM leads l JOIN users u ON u.id = l.owner_id WHERE u.role <> 'REP'""",
    "stays are the ones the history delimits": f"""
        SELECT (SELECT count(*) FROM (SELECT {", ".join(STAY_COLUMNS)} FROM stage_stays
                                      EXCEPT SELECT * FROM ({STAYS_FROM_HISTORY}) d) x)
             + (SELECT count(*) FROM (SELECT * FROM ({STAYS_FROM_HISTORY}) d
                                      EXCEPT SELECT {", ".join(STAY_COLUMNS)} FROM stage_stays) x)""",
    "only a lead's last stay is current, and it matches the lead": """
        SELECT count(*) FROM leads l
        WHERE (SELECT count(*) FROM stage_stays s WHERE s.lead_id = l.id AND s.left_at IS NULL) <> 1
           OR NOT EXISTS (SELECT 1 FROM stage_stays s WHERE s.lead_id = l.id AND s.left_at IS NULL
                          AND s.stage_id = l.stage_id AND s.status = l.status
                          AND s.entered_at = l.updated_at)""",
    "activities happen after the lead was created": """
        SELECT count(*) FROM activities a JOIN leads l ON l.id = a.lead_id
        WHERE a.created_at < l.created_at""",
}


async def _scalar(store: Store, sql: str) -> Any:
    async with store.read() as session:
        return await session.scalar(text(sql))


async def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    async with store.read() as session:
        return [tuple(row) for row in await session.execute(text(sql))]


@pytest.fixture
async def demo_store(store: Store) -> Store:
    summary = await demo.load_demo(store, seed=7, leads_per_pipeline=LEADS_PER_PIPELINE, now=NOW)
    assert summary.leads == LEADS_PER_PIPELINE * len(demo.DEMO_PIPELINES)
    return store


async def test_history_and_leads_satisfy_every_invariant(demo_store: Store) -> None:
    violations = {name: await _scalar(demo_store, sql) for name, sql in INVARIANTS.items()}
    assert {name: count for name, count in violations.items() if count} == {}


async def test_counts_are_realistic(demo_store: Store) -> None:
    users = dict(await _rows(demo_store, "SELECT role, count(*) FROM users GROUP BY role"))
    assert users == {"REP": 7, "MANAGER": 1, "ADMIN": 1}
    assert await _scalar(demo_store, "SELECT count(*) FROM pipelines") == 4
    history = await _scalar(demo_store, "SELECT count(*) FROM stage_history")
    assert 3 * 1200 < history < 6 * 1200
    assert await _scalar(demo_store, "SELECT count(*) FROM activities") > 1200


async def test_every_stage_of_every_pipeline_has_leads(demo_store: Store) -> None:
    empty = await _rows(
        demo_store,
        "SELECT s.name FROM stages s LEFT JOIN leads l ON l.stage_id = s.id GROUP BY s.id, s.name "
        "HAVING count(l.id) = 0",
    )
    assert empty == []


async def test_every_pipeline_has_wins_losses_and_open_leads(demo_store: Store) -> None:
    rows = await _rows(
        demo_store,
        "SELECT pipeline_id, sum(CASE WHEN status = 'WON' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN status = 'LOST' THEN 1 ELSE 0 END), sum(CASE WHEN status = 'OPEN' THEN 1 ELSE 0 END) "
        "FROM leads GROUP BY pipeline_id",
    )
    assert len(rows) == 4
    assert all(won > 0 and lost > 0 and open_ > 0 for _, won, lost, open_ in rows)


async def test_history_covers_the_months_before_now(demo_store: Store) -> None:
    async with demo_store.read() as session:
        first = await session.scalar(select(func.min(Lead.created_at)))
        last = await session.scalar(select(func.max(StageHistory.changed_at)))
    assert first is not None
    assert last is not None
    assert NOW - timedelta(days=9 * 31) < first < NOW - timedelta(days=8 * 30)
    assert NOW - timedelta(days=3) < last <= NOW


async def test_some_leads_skip_step_back_and_reopen(demo_store: Store) -> None:
    skips, backs, reopens = (
        await _rows(
            demo_store,
            """SELECT sum(CASE WHEN t.position > f.position + 1 AND NOT t.is_post_sale THEN 1 ELSE 0 END),
                      sum(CASE WHEN t.position < f.position THEN 1 ELSE 0 END),
                      sum(CASE WHEN h.from_status = 'LOST' AND h.to_status = 'OPEN' THEN 1 ELSE 0 END)
               FROM stage_history h
               JOIN stages f ON f.id = h.from_stage_id
               JOIN stages t ON t.id = h.to_stage_id""",
        )
    )[0]
    assert skips > 0
    assert backs > 0
    assert reopens > 0


async def test_some_open_leads_are_stalled_past_target_days(demo_store: Store) -> None:
    async with demo_store.read() as session:
        rows = (
            await session.execute(
                select(Lead.stage_entered_at, Stage.target_days)
                .join(Stage, Stage.id == Lead.stage_id)
                .where(Lead.status == LeadStatus.OPEN)
            )
        ).all()
    stalled = len([entered for entered, target in rows if NOW - entered > timedelta(days=target or 0)])
    assert 0 < stalled < len(rows)


async def test_qualification_and_source_predict_winning(demo_store: Store) -> None:
    def win_rate(where: str) -> str:
        return (
            "SELECT avg(CASE WHEN status = 'WON' THEN 1.0 ELSE 0.0 END) FROM leads "
            f"WHERE status <> 'OPEN' AND {where}"
        )

    high = await _scalar(demo_store, win_rate("qualification_score >= 75"))
    low = await _scalar(demo_store, win_rate("qualification_score <= 25"))
    assert float(high) > 2 * float(low)
    referral = await _scalar(demo_store, win_rate("source = 'referral'"))
    cold = await _scalar(demo_store, win_rate("source = 'cold outreach'"))
    assert float(referral) > 2 * float(cold)


async def test_services_accept_the_loaded_leads(demo_store: Store) -> None:
    from pipegraph.services.leads import move_lead

    async with demo_store.read() as session:
        lead = (
            await session.execute(
                select(Lead).where(Lead.status == LeadStatus.OPEN).order_by(Lead.id).limit(1)
            )
        ).scalar_one()
        target = (
            (
                await session.execute(
                    select(Stage.id).where(
                        Stage.pipeline_id == lead.pipeline_id,
                        Stage.id != lead.stage_id,
                        Stage.is_post_sale.is_(False),
                    )
                )
            )
            .scalars()
            .first()
        )
    assert target is not None
    async with demo_store.write() as session:
        moved = await move_lead(
            session, lead_id=lead.id, to_stage_id=target, expected_version=lead.version, actor=None
        )
        assert moved.version == lead.version + 1
    assert await _scalar(demo_store, INVARIANTS["version counts the changes"]) == 0


async def test_loading_into_a_store_with_pipelines_is_refused(demo_store: Store) -> None:
    before = await _scalar(demo_store, "SELECT count(*) FROM leads")
    with pytest.raises(ValidationError, match="already has pipelines"):
        await demo.load_demo(demo_store, now=NOW)
    assert await _scalar(demo_store, "SELECT count(*) FROM leads") == before


async def _dump(url: str, seed: int) -> dict[str, list[tuple[Any, ...]]]:
    store = Store.from_url(url)
    try:
        await migrate.upgrade(store.engine)
        await demo.load_demo(store, seed=seed, leads_per_pipeline=60, now=NOW)
        return {
            table: await _rows(store, f"SELECT * FROM {table} ORDER BY 1")
            for table in (
                "users",
                "pipelines",
                "stages",
                "leads",
                "stage_history",
                "stage_stays",
                "activities",
            )
        }
    finally:
        await store.dispose()


async def test_same_seed_gives_the_same_data_and_another_seed_does_not(tmp_path: Path) -> None:
    first = await _dump(f"sqlite:///{tmp_path / 'a.sqlite3'}", seed=11)
    again = await _dump(f"sqlite:///{tmp_path / 'b.sqlite3'}", seed=11)
    other = await _dump(f"sqlite:///{tmp_path / 'c.sqlite3'}", seed=12)
    assert first == again
    assert first["leads"] != other["leads"]
    assert first["pipelines"] == other["pipelines"]


async def test_synthetic_load_counts_and_ids_continue_afterwards(store: Store) -> None:
    summary = await demo.load_synthetic(store, leads=2_001, seed=3, reps=12, activities_per_lead=0.5, now=NOW)
    assert summary.leads == 2_001
    assert await _scalar(store, "SELECT count(*) FROM leads") == 2_001
    assert await _scalar(store, "SELECT count(*) FROM stage_history") == summary.history
    assert await _scalar(store, "SELECT count(*) FROM stage_stays") == summary.history
    assert await _scalar(store, "SELECT count(*) FROM activities") == summary.activities
    assert await _scalar(store, "SELECT count(*) FROM users WHERE role = 'REP'") == 12
    # Longer paths than the demo: about five history rows per lead.
    assert 4 * 2_001 < summary.history < 6 * 2_001
    violations = {name: await _scalar(store, sql) for name, sql in INVARIANTS.items()}
    assert {name: count for name, count in violations.items() if count} == {}
    # Explicit ids were inserted in bulk; the next ordinary insert must not collide with them.
    async with store.write() as session:
        lead = (await session.execute(select(Lead).order_by(Lead.id).limit(1))).scalar_one()
        session.add(
            StageHistory(
                lead_id=lead.id,
                pipeline_id=lead.pipeline_id,
                from_stage_id=lead.stage_id,
                to_stage_id=lead.stage_id,
                from_status=lead.status,
                to_status=lead.status,
            )
        )
        await session.flush()
    assert await _scalar(store, "SELECT max(id) FROM stage_history") == summary.history + 1


async def test_invariant_queries_notice_a_lead_that_disagrees_with_its_history(sqlite_url: str) -> None:
    store = Store.from_url(sqlite_url)
    try:
        await migrate.upgrade(store.engine)
        await demo.load_demo(store, leads_per_pipeline=20, now=NOW)
        async with store.write() as session:
            await session.execute(
                text(
                    "UPDATE leads SET version = version + 1, "
                    "status = CASE WHEN status = 'OPEN' THEN 'WON' ELSE 'OPEN' END WHERE id = 1"
                )
            )
        broken = {name for name, sql in INVARIANTS.items() if await _scalar(store, sql)}
    finally:
        await store.dispose()
    assert {
        "version counts the changes",
        "last history row matches the lead's stage, status and update time",
    } <= broken
