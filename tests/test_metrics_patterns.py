"""Breakdowns and time series against hand-computed values, on both backends (fixture in
``metrics_fixture``: January 2024, leads A-I)."""

from __future__ import annotations

from datetime import date

import pytest

from metrics_fixture import END, OPEN, START, WON, Fixture, T, load
from pipegraph.db.models import Lead, Role, User
from pipegraph.db.session import Store
from pipegraph.errors import NotFoundError, PermissionDeniedError, ValidationError
from pipegraph.services.goals import list_goals, set_goal
from pipegraph.services.metrics_patterns import Breakdown, Dimension, breakdown, time_series
from pipegraph.services.metrics_sql import Interval


async def _breakdown(store: Store, fixture: Fixture, by: Dimension) -> dict[str | None, Breakdown]:
    async with store.read() as session:
        rows = await breakdown(session, pipeline_id=fixture.pipeline_id, start=START, end=END, by=by)
    return {row.key: row for row in rows}


def _core(row: Breakdown) -> tuple[int, int, int, int, int, int, int]:
    return (
        row.created,
        row.won_count,
        row.won_value_cents,
        row.lost_count,
        row.lost_value_cents,
        row.open_count,
        row.open_value_cents,
    )


async def test_breakdown_by_source(store: Store) -> None:
    fixture = await load(store)
    rows = await _breakdown(store, fixture, Dimension.SOURCE)
    # web: A (created, won 100000), B (created, lost 200000), F and H (created, open 50000 + 700000),
    # D (open 400000, created before the window).
    assert _core(rows["web"]) == (4, 1, 100000, 1, 200000, 3, 1150000)
    assert (rows["web"].win_rate, rows["web"].avg_sales_cycle_days) == (0.5, 10.0)
    # referral: C (created, lost 300000), E (created, open 500000), I (created, won 800000);
    # G was won before the window and is absent.
    assert _core(rows["referral"]) == (3, 1, 800000, 1, 300000, 1, 500000)
    assert (rows["referral"].avg_won_deal_cents, rows["referral"].avg_sales_cycle_days) == (800000, 8.0)
    assert list(rows) == ["web", "referral"]  # most created first


async def test_breakdown_counts_each_lead_once_per_figure(store: Store) -> None:
    fixture = await load(store)
    # J: created before the window, won in it. K: created in it, lost in it, reopened (still open,
    # its last closed_at in the window). L: created in it, won after it.
    leads = [("J", T(-40), WON, T(12), 900), ("K", T(5), OPEN, T(20), 70), ("L", T(3), WON, T(35), 5)]
    async with store.write() as session:
        session.add_all(
            Lead(
                pipeline_id=fixture.pipeline_id,
                stage_id=fixture.stage_ids[0],
                title=title,
                source="event",
                value_cents=value,
                status=status,
                created_at=created,
                closed_at=closed,
            )
            for title, created, status, closed, value in leads
        )
    rows = await _breakdown(store, fixture, Dimension.SOURCE)
    # Created: K and L; won: J alone (L closed after the window); open: K; lost: none.
    assert _core(rows["event"]) == (2, 1, 900, 0, 0, 1, 70)
    assert (rows["event"].win_rate, rows["event"].avg_sales_cycle_days) == (1.0, 52.0)
    assert list(rows) == ["web", "referral", "event"]


async def test_breakdown_by_owner(store: Store) -> None:
    fixture = await load(store)
    rows = await _breakdown(store, fixture, Dimension.OWNER)
    ada, bo = rows[str(fixture.ada_id)], rows[str(fixture.bo_id)]
    # Ada: A won, B lost, E open, I won.
    assert (ada.label, *_core(ada)) == ("Ada", 4, 2, 900000, 1, 200000, 1, 500000)
    assert ada.win_rate == pytest.approx(2 / 3)
    assert (ada.avg_won_deal_cents, ada.avg_sales_cycle_days) == (450000, 9.0)
    # Bo: C lost, H open (created), D open (older).
    assert (bo.label, *_core(bo)) == ("Bo", 2, 0, 0, 1, 300000, 2, 1100000)
    assert (bo.win_rate, bo.avg_won_deal_cents) == (0.0, None)
    # F has no owner: no closed leads, so no win rate.
    assert (rows[None].label, *_core(rows[None])) == ("Unassigned", 1, 0, 0, 0, 0, 1, 50000)
    assert rows[None].win_rate is None


async def test_breakdown_by_qualification_score(store: Store) -> None:
    fixture = await load(store)
    rows = await _breakdown(store, fixture, Dimension.SCORE)
    assert _core(rows["0"]) == (2, 0, 0, 0, 0, 2, 550000)  # E, F
    assert _core(rows["25"]) == (1, 0, 0, 1, 200000, 0, 0)  # B
    assert _core(rows["50"]) == (2, 0, 0, 1, 300000, 1, 700000)  # C, H
    assert _core(rows["75"]) == (0, 0, 0, 0, 0, 1, 400000)  # D, open from before
    assert _core(rows["100"]) == (2, 2, 900000, 0, 0, 0, 0)  # A, I (G outside the window)
    assert rows["100"].win_rate == 1.0


async def test_weekly_series(store: Store) -> None:
    fixture = await load(store)
    async with store.read() as session:
        series = await time_series(
            session, pipeline_id=fixture.pipeline_id, start=START, end=END, interval=Interval.WEEK
        )
    # 1 January 2024 is a Monday. Created: A, B, C, I in week 1; E (T20) week 3; F (T25) week 4;
    # H (T28) week 5. Won: A (T10) week 2, I (T14) week 3. Lost: B (T6) week 1, C (T15) week 3.
    table = [(b.start, b.created, b.won_count, b.won_value_cents, b.lost_count, b.cohort_won) for b in series]
    assert table == [
        ("2024-01-01", 4, 0, 0, 1, 2),
        ("2024-01-08", 0, 1, 100000, 0, 0),
        ("2024-01-15", 1, 1, 800000, 1, 0),
        ("2024-01-22", 1, 0, 0, 0, 0),
        ("2024-01-29", 1, 0, 0, 0, 0),
    ]
    # Week 1's cohort: A and I won of 4 created; week 2 created nothing.
    assert [b.cohort_conversion for b in series] == [0.5, None, 0.0, 0.0, 0.0]


async def test_monthly_series(store: Store) -> None:
    fixture = await load(store)
    async with store.read() as session:
        series = await time_series(
            session, pipeline_id=fixture.pipeline_id, start=START, end=END, interval=Interval.MONTH
        )
    assert len(series) == 1
    january = series[0]
    assert (january.start, january.created, january.won_count, january.won_value_cents) == (
        "2024-01-01",
        7,
        2,
        900000,
    )
    assert january.cohort_conversion == pytest.approx(2 / 7)


async def test_goal_needs_a_manager(store: Store) -> None:
    fixture = await load(store)
    rep = User(id=99, name="Rep", email="rep@example.com", role=Role.REP, active=True)
    async with store.write() as session:
        with pytest.raises(PermissionDeniedError):
            await set_goal(session, pipeline_id=fixture.pipeline_id, period_start=date(2024, 1, 1),
                           period_end=date(2024, 1, 31), amount="1", actor=rep)  # fmt: skip


@pytest.mark.parametrize(
    ("pipeline", "period_end", "amount", "field", "error"),
    [
        (True, date(2023, 12, 31), "1", "period_end", ValidationError),
        (True, date(2024, 1, 31), "-5", "amount", ValidationError),
        (True, date(2024, 1, 31), "1.005", "amount", ValidationError),
        (False, date(2024, 1, 31), "1", "pipeline_id", NotFoundError),
    ],
)
async def test_bad_goal_names_the_field_and_writes_nothing(
    store: Store, pipeline: bool, period_end: date, amount: str, field: str, error: type[Exception]
) -> None:
    fixture = await load(store)
    pipeline_id = fixture.pipeline_id if pipeline else 999
    with pytest.raises(error) as raised:
        async with store.write() as session:
            await set_goal(session, pipeline_id=pipeline_id, period_start=date(2024, 1, 1),
                           period_end=period_end, amount=amount, actor=None)  # fmt: skip
    assert getattr(raised.value, "field", None) == field
    async with store.read() as session:
        assert await list_goals(session, pipeline_id=fixture.pipeline_id) == []
