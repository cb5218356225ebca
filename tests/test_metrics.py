"""Pipeline metrics against hand-computed values; the fixture runs on SQLite and on PostgreSQL.

The fixture and its notation (T(d), leads A-I, stages S0-S4) are described in ``metrics_fixture``.
Entries are history rows in the window that start a stay; exits are rows in the window that end one.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event

from metrics_fixture import END, NOW, START, Fixture, load
from pipegraph.db.session import Store
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.goals import list_goals, set_goal
from pipegraph.services.metrics import (
    STATEMENTS_PER_CALL,
    PipelineMetrics,
    ProbabilitySource,
    StageMap,
    empirical_win_probabilities,
    pipeline_metrics,
)


async def _metrics(store: Store, fixture: Fixture, **kwargs: Any) -> PipelineMetrics:
    async with store.read() as session:
        return await pipeline_metrics(
            session, pipeline_id=fixture.pipeline_id, start=START, end=END, now=NOW, **kwargs
        )


def _stage(metrics: PipelineMetrics, name: str) -> Any:
    return next(s for s in metrics.stages if s.name == name)


async def test_stage_flow_matches_hand_computed_values(store: Store) -> None:
    fixture = await load(store)
    metrics = await _metrics(store, fixture)
    assert [s.name for s in metrics.stages] == ["Lead In", "Qualified", "Proposal", "Closing", "Onboarding"]

    lead_in = _stage(metrics, "Lead In")
    # Entries: A T0, B T1, C T2, I T6, E T20, H T28 = 6 (D entered before the window, F skipped it).
    assert lead_in.entered == 6
    # Of those, A, B, C, I and H have since moved forward (H after the window end, before now); E has not.
    assert lead_in.entered_advanced == 5
    assert lead_in.entered_conversion_rate == pytest.approx(5 / 6)
    # Exits in the window: A (2 d), B (3 d, skipping to Proposal), C (1 d), I (2.5 d): all forward.
    # H left at T35, after the window.
    assert (lead_in.exits, lead_in.advanced, lead_in.moved_back, lead_in.lost) == (4, 4, 0, 0)
    assert lead_in.conversion_rate == 1.0
    assert lead_in.drop_off_rate == 0.0
    # (2 + 3 + 1 + 2.5) / 4 = 2.125; sorted 1, 2, 2.5, 3 -> median (2 + 2.5) / 2 = 2.25.
    assert lead_in.avg_days_in_stage == 2.125
    assert lead_in.median_days_in_stage == 2.25
    # Occupant: E, in since T20, so 20 days old at T40, over the 5-day target.
    assert (lead_in.current_count, lead_in.current_value_cents) == (1, 500000)
    assert (lead_in.avg_age_days, lead_in.max_age_days) == (20.0, 20.0)
    assert (lead_in.stalled_count, lead_in.stalled_value_cents) == (1, 500000)
    # Empirical win probabilities solve the chain of the window's exits (p = share won + Σ share × p):
    #   Closing   p3 = 1 (both exits won)
    #   Proposal  p2 = 1/3 p3 + 1/3 p1 (+ 1/3 lost)        = 1/3 + p1/3
    #   Qualified p1 = 2/5 p2 + 1/5 p3 (+ 2/5 lost)        -> p1 = 5/13, p2 = 6/13
    #   Lead In   p0 = 2/4 p1 + 1/4 p2 + 1/4 p3            = 5/26 + 3/26 + 1/4 = 29/52
    # Lead In has no configured probability, so the empirical one weights it.
    assert lead_in.empirical_win_probability == pytest.approx(29 / 52)
    assert lead_in.probability_source is ProbabilitySource.EMPIRICAL
    assert lead_in.weighted_value_cents == 278846  # 500000 × 29/52 = 278846.15

    qualified = _stage(metrics, "Qualified")
    # Entries: A T2, C T3, C T8 (moved back), C T12 (reopened), F T25 (created here) = 5.
    assert qualified.entered == 5
    # A and C (T3) moved on to Proposal; C's later stays ended lost; F is still there.
    assert qualified.entered_advanced == 2
    # Exits: A → Proposal (3 d), C → Proposal (4 d), C lost T10 (2 d), C lost T15 after the reopen
    # (3 d), D → Closing (9 d: entered T-5, before the window, so the stay start is looked up).
    assert (qualified.exits, qualified.advanced, qualified.moved_back, qualified.lost) == (5, 3, 0, 2)
    assert qualified.lost_value_cents == 600000  # C counted once per loss: 2 × 300000
    assert qualified.conversion_rate == 0.6
    assert qualified.drop_off_rate == 0.4
    # (3 + 4 + 2 + 3 + 9) / 5 = 4.2; sorted 2, 3, 3, 4, 9 -> 3.
    assert qualified.avg_days_in_stage == 4.2
    assert qualified.median_days_in_stage == 3.0
    # Occupants: F (15 days, over the 10-day target) and H (5 days).
    assert (qualified.current_count, qualified.current_value_cents) == (2, 750000)
    assert (qualified.avg_age_days, qualified.max_age_days) == (10.0, 15.0)
    assert (qualified.stalled_count, qualified.stalled_value_cents) == (1, 50000)
    # The configured 0.4 is used rather than the empirical 5/13.
    assert qualified.empirical_win_probability == pytest.approx(5 / 13)
    assert qualified.probability_source is ProbabilitySource.CONFIGURED
    assert qualified.win_probability == 0.4
    assert qualified.weighted_value_cents == 300000  # 750000 × 0.4

    proposal = _stage(metrics, "Proposal")
    # Entries: A T5, B T4 (skipped Qualified), C T7 = 3; only A moved forward.
    assert (proposal.entered, proposal.entered_advanced) == (3, 1)
    # Exits: A → Closing (4 d), B lost (2 d), C back to Qualified (1 d).
    assert (proposal.exits, proposal.advanced, proposal.moved_back, proposal.lost) == (3, 1, 1, 1)
    assert proposal.lost_value_cents == 200000
    assert proposal.conversion_rate == pytest.approx(1 / 3)
    assert proposal.avg_days_in_stage == pytest.approx(7 / 3, abs=1e-6)
    assert proposal.median_days_in_stage == 2.0
    # Nobody there now; G won here before the window and is not an occupant (won, not post-sale).
    assert (proposal.current_count, proposal.avg_age_days, proposal.stalled_count) == (0, None, 0)
    assert proposal.empirical_win_probability == pytest.approx(6 / 13)
    assert proposal.probability_source is ProbabilitySource.EMPIRICAL
    assert proposal.weighted_value_cents == 0

    closing = _stage(metrics, "Closing")
    # Entries: A T9, D T4 (skipped Proposal), I T8.5; A and I were won from here.
    assert (closing.entered, closing.entered_advanced) == (3, 2)
    # Exits: A won (1 d), I won (5.5 d). Winning counts as advancing.
    assert (closing.exits, closing.advanced, closing.won, closing.lost) == (2, 2, 2, 0)
    assert closing.avg_days_in_stage == 3.25
    assert closing.median_days_in_stage == 3.25  # (1 + 5.5) / 2
    # D has been here since T4: 36 days, over the 3-day target.
    assert (closing.current_count, closing.current_value_cents, closing.max_age_days) == (1, 400000, 36.0)
    assert (closing.stalled_count, closing.stalled_value_cents) == (1, 400000)
    assert closing.empirical_win_probability == 1.0  # A and I won from here
    assert closing.weighted_value_cents == 320000  # 400000 × 0.8

    onboarding = _stage(metrics, "Onboarding")
    # A stage with no exits: A entered (won) at T12 and is still there.
    assert (onboarding.entered, onboarding.exits, onboarding.current_count) == (1, 0, 1)
    assert onboarding.conversion_rate is None
    assert onboarding.avg_days_in_stage is None
    assert onboarding.median_days_in_stage is None
    assert (onboarding.avg_age_days, onboarding.stalled_count) == (28.0, 0)  # no target
    assert onboarding.weighted_value_cents == 0  # post-sale value is already won
    assert onboarding.empirical_win_probability is None
    assert onboarding.probability_source is ProbabilitySource.NONE


async def test_overall_figures_match_hand_computed_values(store: Store) -> None:
    fixture = await load(store)
    overall = (await _metrics(store, fixture)).overall
    # Created in January: A, B, C, E, F, H, I (D and G are older).
    assert overall.leads_created == 7
    # Closed in January: A won T10, I won T14, B lost T6, C lost T15 (its last loss; counted once).
    # G was won before the window.
    assert (overall.won_count, overall.won_value_cents) == (2, 900000)
    assert (overall.lost_count, overall.lost_value_cents) == (2, 500000)
    assert overall.win_rate == 0.5
    assert overall.avg_won_deal_cents == 450000
    # Cycles: A 10 days, I 8 days.
    assert overall.avg_sales_cycle_days == 9.0
    assert overall.median_sales_cycle_days == 9.0
    # Open now: E 500000, F 50000, H 700000, D 400000.
    assert (overall.open_count, overall.open_value_cents) == (4, 1650000)
    # 278846 + 300000 + 0 + 320000.
    assert overall.weighted_pipeline_cents == 898846
    # 4 open × 0.5 × 450000 ÷ 9 days.
    assert overall.velocity_cents_per_day == pytest.approx(100000.0)


async def test_bottleneck_is_the_stage_with_most_revenue_at_risk(store: Store) -> None:
    fixture = await load(store)
    bottleneck = (await _metrics(store, fixture)).bottleneck
    # probability × (lost value + stalled value): Lead In 29/52 × 500000 = 278846; Qualified
    # 0.4 × (600000 + 50000) = 260000; Proposal 6/13 × 200000 = 92308; Closing 0.8 × 400000 = 320000.
    assert bottleneck is not None
    assert bottleneck.name == "Closing"
    assert bottleneck.revenue_at_risk_cents == 320000
    assert bottleneck.conversion_rate == 1.0
    # Other selling stages pooled: (4 + 3 + 1) advanced of (4 + 5 + 3) exits.
    assert bottleneck.others_conversion_rate == pytest.approx(8 / 12)
    assert (bottleneck.stalled_count, bottleneck.avg_days_in_stage, bottleneck.target_days) == (1, 3.25, 3)
    assert bottleneck.summary == (
        "Closing: 100% of exits advance vs 67% in other stages; 0 lost and 1 stalled; "
        "average stay 3.2 days (target 3 days); 3,200.00 of expected revenue at risk"
    )


async def test_coverage_from_goal_argument(store: Store) -> None:
    fixture = await load(store)
    coverage = (await _metrics(store, fixture, goal_cents=2_000_000)).coverage
    assert coverage is not None
    # Remaining 2000000 - 900000 won = 1100000; open 1650000 covers it 1.5 times; a 0.5 win rate
    # needs 2.
    assert (coverage.remaining_cents, coverage.goal_is_stored) == (1100000, False)
    assert coverage.attainment == 0.45
    assert coverage.coverage == 1.5
    assert coverage.required_coverage == 2.0
    assert coverage.covered is False


async def test_coverage_uses_narrowest_stored_goal(store: Store) -> None:
    fixture = await load(store)
    async with store.write() as session:
        await set_goal(session, pipeline_id=fixture.pipeline_id, period_start=date(2024, 1, 1),
                       period_end=date(2024, 3, 31), amount="50000", actor=None)  # fmt: skip
        await set_goal(session, pipeline_id=fixture.pipeline_id, period_start=date(2024, 1, 1),
                       period_end=date(2024, 1, 31), amount="1", actor=None)  # fmt: skip
        # Setting the same period again replaces the amount.
        await set_goal(session, pipeline_id=fixture.pipeline_id, period_start=date(2024, 1, 1),
                       period_end=date(2024, 1, 31), amount="9000.00", actor=None)  # fmt: skip
    coverage = (await _metrics(store, fixture)).coverage
    assert coverage is not None
    assert (coverage.goal_cents, coverage.goal_is_stored) == (900000, True)
    # Goal met exactly: nothing remains, so coverage is undefined.
    assert (coverage.remaining_cents, coverage.attainment, coverage.coverage) == (0, 1.0, None)
    async with store.read() as session:
        assert len(await list_goals(session, pipeline_id=fixture.pipeline_id)) == 2


async def test_no_stored_goal_means_no_coverage(store: Store) -> None:
    fixture = await load(store)
    assert (await _metrics(store, fixture)).coverage is None


async def test_empty_pipeline_has_zeros_and_no_rates(store: Store) -> None:
    fixture = await load(store)
    async with store.read() as session:
        metrics = await pipeline_metrics(
            session, pipeline_id=fixture.empty_pipeline_id, start=START, end=END, now=NOW, goal_cents=100
        )
    assert len(metrics.stages) == 5
    for stage in metrics.stages:
        assert (stage.entered, stage.exits, stage.current_count, stage.stalled_count) == (0, 0, 0, 0)
        assert stage.conversion_rate is None
        assert stage.median_days_in_stage is None
    overall = metrics.overall
    assert (overall.leads_created, overall.won_count, overall.open_value_cents) == (0, 0, 0)
    assert overall.win_rate is None
    assert overall.median_sales_cycle_days is None
    assert overall.velocity_cents_per_day is None
    assert metrics.bottleneck is None
    assert metrics.coverage is not None
    assert (metrics.coverage.coverage, metrics.coverage.required_coverage) == (0.0, None)


async def test_one_call_issues_a_fixed_number_of_statements(store: Store) -> None:
    fixture = await load(store)
    statements: list[str] = []

    def count(*args: Any) -> None:
        # Transaction control and PostgreSQL's per-transaction settings are not queries.
        if not args[2].startswith(("BEGIN", "PRAGMA", "SELECT set_config")):
            statements.append(args[2])

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        await _metrics(store, fixture)
        without_goal = len(statements)
        statements.clear()
        await _metrics(store, fixture, goal_cents=1)
        with_goal = len(statements)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert without_goal == STATEMENTS_PER_CALL
    assert with_goal == STATEMENTS_PER_CALL - 1


async def test_unknown_pipeline_is_named(store: Store) -> None:
    async with store.read() as session:
        with pytest.raises(NotFoundError) as error:
            await pipeline_metrics(session, pipeline_id=999, start=START, end=END, now=NOW)
    assert error.value.field == "pipeline_id"


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (END, START, "end"),
        (START, START, "end"),
        (datetime(2024, 1, 1), END, "start"),  # naive: no time zone
    ],
)
async def test_bad_window_is_rejected(store: Store, start: datetime, end: datetime, field: str) -> None:
    async with store.read() as session:
        with pytest.raises(ValidationError) as error:
            await pipeline_metrics(session, pipeline_id=1, start=start, end=end, now=NOW)
    assert error.value.field == field


async def test_negative_goal_is_rejected(store: Store) -> None:
    fixture = await load(store)
    async with store.read() as session:
        with pytest.raises(ValidationError) as error:
            await pipeline_metrics(
                session, pipeline_id=fixture.pipeline_id, start=START, end=END, now=NOW, goal_cents=-1
            )
    assert error.value.field == "goal"


async def test_window_boundaries_are_half_open(store: Store) -> None:
    fixture = await load(store)
    # [T2, T10): A's win at T10 and C's first loss at T10 fall outside; B's loss at T6 is inside.
    async with store.read() as session:
        metrics = await pipeline_metrics(
            session,
            pipeline_id=fixture.pipeline_id,
            start=datetime(2024, 1, 3, tzinfo=UTC),
            end=datetime(2024, 1, 11, tzinfo=UTC),
            now=NOW,
        )
    # Created T2..T10: C (T2), I (T6). Closed: B lost T6 only (A won T10, C's last loss is T15).
    assert metrics.overall.leads_created == 2
    assert (metrics.overall.won_count, metrics.overall.lost_count) == (0, 1)
    # Qualified exits in [T2, T10): A at T5, C at T7 (C's loss at T10 is excluded), D at T4.
    assert _stage(metrics, "Qualified").exits == 3


def _chain(rows: list[tuple[int, int, bool]], exits: dict[int, dict[Any, int]]) -> dict[int, float]:
    """Empirical probabilities for stages ``(id, position, post-sale)`` and exits by destination."""
    stages = StageMap(
        [SimpleNamespace(id=i, position=p, is_post_sale=ps, target_days=None) for i, p, ps in rows]
    )
    flow = {sid: {"exits": sum(to.values()), "to": Counter(to)} for sid, to in exits.items()}
    return empirical_win_probabilities(stages, flow)


def test_win_probability_needs_every_destination_estimated() -> None:
    rows = [(1, 0, False), (2, 1, False), (3, 2, False), (4, 3, True)]
    # Stage 2 has no exits, so stage 1 (which feeds it) has no estimate either; stage 3 won half of
    # its exits and moved the rest into post-sale (which counts as won too).
    result = _chain(rows, {1: {2: 1, "LOST": 1}, 3: {"WON": 1, "LOST": 2, 4: 1}})
    assert result == {3: pytest.approx(0.5)}


def test_win_probability_of_leads_only_cycling_is_unknown() -> None:
    rows = [(1, 0, False), (2, 1, False)]
    assert _chain(rows, {1: {2: 3}, 2: {1: 2}}) == {}
