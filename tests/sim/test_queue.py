"""The queue engine against the SimPy engine it replaces: the same leads give the same starts and
outcomes (differential, exact), and independent runs give the same distributions (two-sample KS)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from pipesim import (
    Arrivals,
    Exponential,
    Fixed,
    FixedProbability,
    Gamma,
    LogNormal,
    Model,
    OpenLeads,
    Reps,
    Stage,
    Triangular,
    capacity,
    compare,
    load_model,
    simulate,
)
from pipesim.distributions import Array, Distribution
from pipesim.engines import des, explain, queue
from pipesim.engines.common import Flow, trial_draws, window
from pipesim.errors import EngineError
from pipesim.questions import SHARED_DRAW_TRIALS, flow_report
from pipesim.results import Summary

EXAMPLES = sorted(Path(__file__).resolve().parents[2].glob("examples/*.toml"))
RANDOM_MODELS = 8  # seeded random models in the KS comparison, each with three KS tests
ALPHA = 0.01


def random_model(seed: int) -> Model:
    """A small model with capacity: 1–3 stages, batch or Poisson arrivals, sometimes open leads."""
    rng = np.random.default_rng(seed)
    n_stages = int(rng.integers(1, 4))

    def duration() -> Distribution:
        kind = rng.integers(4)
        mean = float(rng.uniform(1, 8))
        if kind == 0:
            return Exponential(mean)
        if kind == 1:
            return Gamma(2.0, mean / 2)
        if kind == 2:
            return Triangular(0.0, mean, 2 * mean)
        return Fixed(round(mean))

    stages = tuple(
        Stage(f"s{i}", FixedProbability(float(rng.uniform(0.3, 0.95))), duration()) for i in range(n_stages)
    )
    arrivals = (
        Arrivals.batch(int(rng.integers(20, 120)))
        if rng.random() < 0.5
        else Arrivals.poisson(float(rng.uniform(0.5, 3.0)))
    )
    cohorts = (
        (OpenLeads(f"s{int(rng.integers(n_stages))}", int(rng.integers(1, 10)), float(rng.uniform(0, 5))),)
        if rng.random() < 0.5
        else ()
    )
    return Model(
        stages=stages,
        deal_size=LogNormal(10_000, 4_000),
        arrivals=arrivals,
        horizon_days=60,
        reps=Reps(int(rng.integers(1, 4)), int(rng.integers(1, 8))),
        open_leads=cohorts,
    )


def floor_of(leads: list[des.Lead]) -> queue.Floor:
    """The SimPy engine's leads of one trial, in the queue order SimPy serves them."""
    at_start = [lead for lead in leads if lead.existing or lead.arrival == 0]
    ordered = at_start + [lead for lead in leads if not (lead.existing or lead.arrival == 0)]
    hold = [sum(lead.durations[: lead.stages_passed + 1]) for lead in ordered]
    won = [lead.stages_passed == len(lead.durations) for lead in ordered]
    return queue.Floor(
        arrival=np.array([[lead.arrival for lead in ordered]]),
        hold=np.array([hold]),
        won=np.array([won]),
        deal=np.array([[lead.deal for lead in ordered]]),
        new=np.array([[not lead.existing for lead in ordered]]),
    )


@pytest.mark.parametrize("seed", range(12))
def test_the_recursion_serves_simpys_leads_exactly_as_simpy_does(seed: int) -> None:
    model = random_model(seed)
    draws = trial_draws(model, seed, 0, 4)
    for trial in range(4):
        leads = des.trial_leads(model, seed, 0, trial, draws)
        floor = des.SalesFloor(model)
        floor.run(leads)
        table = floor_of(leads)
        assert model.reps is not None
        start = queue.fifo_starts(table.arrival, table.hold, model.reps.slots)
        outcomes, _ = queue.measure(model, table, start)
        assert outcomes.wins_new[0] == floor.wins[0]
        assert outcomes.wins_existing[0] == floor.wins[1]
        assert math.isclose(outcomes.revenue[0], sum(floor.revenue), rel_tol=1e-12)
        assert math.isclose(outcomes.wait_days[0], floor.mean_wait, rel_tol=1e-9, abs_tol=1e-9)


def one_per_trial(values: Array, trial: NDArray[np.int32], trials: int, seed: int) -> Array:
    """One value drawn at random from each trial that has any: independent samples for KS (leads of one
    trial share a queue, so pooling them all would overstate the sample size)."""
    rng = np.random.default_rng(seed)
    picked = []
    bounds = np.searchsorted(trial, np.arange(trials + 1))
    for low, high in itertools.pairwise(bounds):
        if high > low:
            picked.append(values[low + rng.integers(high - low)])
    return np.array(picked)


def assert_same_distributions(model: Model, queue_trials: int, des_trials: int, seed: int) -> None:
    _, fast = simulate(model, queue_trials, seed=seed, engine="queue")
    _, slow = simulate(model, des_trials, seed=seed + 1000, engine="des")
    assert isinstance(fast.flow, Flow)
    assert isinstance(slow.flow, Flow)
    pairs = {
        "revenue": (fast.revenue, slow.revenue),
        "wait": (
            one_per_trial(fast.flow.waits, fast.flow.wait_trial, queue_trials, seed),
            one_per_trial(slow.flow.waits, slow.flow.wait_trial, des_trials, seed),
        ),
        "lead time": (
            one_per_trial(fast.flow.lead_times, fast.flow.lead_time_trial, queue_trials, seed),
            one_per_trial(slow.flow.lead_times, slow.flow.lead_time_trial, des_trials, seed),
        ),
    }
    for name, (a, b) in pairs.items():
        if len(a) < 20 or len(b) < 20 or np.ptp(np.concatenate([a, b])) == 0:
            continue  # nothing to compare (e.g. no waits without reps)
        assert stats.ks_2samp(a, b).pvalue > ALPHA, name


@pytest.mark.parametrize("seed", range(RANDOM_MODELS))
def test_random_models_match_simpy_in_distribution(seed: int) -> None:
    assert_same_distributions(random_model(100 + seed), 3000, 400, seed=200 + seed)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_matches_simpy_or_says_why_not(path: Path) -> None:
    model = load_model(path)
    name, why = explain(model)
    if queue.reason(model) is not None:
        assert name == "des"
        assert "work" in why
        with pytest.raises(EngineError, match="work"):
            simulate(model, 10, engine="queue")
        return
    smaller = model
    if model.arrivals.kind == "batch" and model.arrivals.count > 300:
        smaller = model.with_new_leads(300)  # keeps SimPy's share of the test short; same structure
    assert_same_distributions(smaller, 2000, 200, seed=7)


def test_auto_picks_the_queue_engine_for_reps_without_work() -> None:
    model = load_model(Path(__file__).resolve().parents[2] / "examples/readme_team.toml")
    name, why = explain(model)
    assert name == "queue"
    assert "FIFO" in why
    assert explain(replace(model, reps=None))[0] == "vectorized"


def test_same_seed_same_answer_across_blocks_and_reps_share_leads() -> None:
    model = random_model(3)
    _, once = simulate(model, 1200, seed=5, engine="queue")
    _, again = simulate(model, 1200, seed=5, engine="queue")
    assert np.array_equal(once.revenue, again.revenue)
    assert model.reps is not None
    roomy = replace(model, reps=Reps(1000, 1))
    _, free = simulate(roomy, 1200, seed=5, engine="queue")
    unlimited = replace(model, reps=None)
    _, none = simulate(unlimited, 1200, seed=5, engine="queue")
    # Same leads: with room for everyone nobody waits and the outcome is the unlimited one.
    assert np.array_equal(free.revenue, none.revenue)
    assert np.all(free.wait_days == 0)
    assert np.all(free.revenue >= once.revenue - 1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_pooled_measurements_equal_the_coordinate_reading(seed: int) -> None:
    """The per-lead measurements read with boolean masks and pooled in place equal the plain reading
    (``np.nonzero`` coordinates, each block's trial indices shifted by its offset, then concatenated)."""
    model = random_model(seed)
    blocks = []
    for block in range(3):
        floor = queue.draw(model, seed, block, 40)
        start = queue.starts(model, floor)
        _, flow = queue.measure(model, floor, start)
        assert flow is not None
        finish = start + floor.hold
        low, high = window(model)
        waited = floor.new & (floor.arrival >= low) & (floor.arrival <= high)
        won = floor.won & (finish <= model.horizon_days) & floor.new & waited
        wait_trial, wait_lead = np.nonzero(waited)
        won_trial, won_lead = np.nonzero(won)
        expected_waits = (
            np.minimum(start[wait_trial, wait_lead], model.horizon_days)
            - floor.arrival[wait_trial, wait_lead]
        )
        assert np.array_equal(flow.waits, expected_waits)
        assert np.array_equal(flow.wait_trial, wait_trial)
        assert np.array_equal(
            flow.lead_times, finish[won_trial, won_lead] - floor.arrival[won_trial, won_lead]
        )
        assert np.array_equal(flow.lead_time_trial, won_trial)
        blocks.append(flow)
    pooled = Flow.concat(blocks)
    shifted = np.concatenate([flow.wait_trial + 40 * index for index, flow in enumerate(blocks)])
    assert np.array_equal(pooled.wait_trial, shifted)
    assert np.array_equal(pooled.waits, np.concatenate([flow.waits for flow in blocks]))


def _count_by_sorting(times: Array, points: Array, horizon: float) -> Array:
    """The reference reading of queue lengths: rows laid end to end, one ``searchsorted``."""
    trials, leads = times.shape
    span = horizon + 2.0
    shifted = np.minimum(times, horizon + 1.0) + (np.arange(trials) * span)[:, None]
    queries = points[None, :] + (np.arange(trials) * span)[:, None]
    found = np.searchsorted(shifted.reshape(-1), queries.reshape(-1), side="right").reshape(trials, -1)
    counts: Array = (found - (np.arange(trials) * leads)[:, None]).astype(np.float64)
    return counts


@pytest.mark.parametrize("seed", range(6))
def test_weekly_counts_by_bisection_equal_the_sorted_reading(seed: int) -> None:
    model = random_model(seed)
    floor = queue.draw(model, seed, 0, 50)
    start = queue.starts(model, floor)
    weeks = np.arange(0.0, model.horizon_days + 0.5, 3.5)  # points within the horizon, as week ends are
    for times in (floor.arrival, start, np.minimum(start, 5.0), np.full_like(start, np.inf)):
        expected = _count_by_sorting(times, weeks, model.horizon_days)
        assert np.array_equal(queue._count_at_or_before(times, weeks, model.horizon_days), expected)


def test_one_uniform_per_lead_gives_each_exit_stage_its_exact_probability() -> None:
    """The stage a lead leaves in, drawn from one uniform against the running products of conversions:
    with fixed times the holding time names the stage, and each share is within 4 SE of its exact value."""
    p_stage = (0.7, 0.5, 0.8)
    model = Model(
        stages=tuple(
            Stage(f"s{i}", FixedProbability(p), Fixed(days))
            for i, (p, days) in enumerate(zip(p_stage, (1, 2, 4), strict=True))
        ),
        deal_size=LogNormal(10_000, 4_000),
        arrivals=Arrivals.batch(100),
        horizon_days=60,
        reps=Reps(1, 5),
    )
    trials, leads = 200, 100
    p = np.broadcast_to(np.array(p_stage), (trials, 3))
    hold, won = queue._group_rows(
        model, np.random.default_rng(5), (trials, leads), p, 0, 0.0, np.ones((trials, 3))
    )
    n = trials * leads
    exact = {
        1.0: 1 - p_stage[0],
        3.0: p_stage[0] * (1 - p_stage[1]),
        7.0: p_stage[0] * p_stage[1],
    }
    assert set(np.unique(hold)) == set(exact)
    shares = [(float(np.mean(hold == days)), share) for days, share in exact.items()]
    shares.append((float(np.mean(won)), p_stage[0] * p_stage[1] * p_stage[2]))
    for observed, share in shares:
        assert abs(observed - share) <= 4 * math.sqrt(share * (1 - share) / n)
    assert not np.any(won & (hold != 7.0))  # a winner passed every stage


def test_later_stages_inverted_for_reaching_leads_only_give_the_same_times() -> None:
    """Special-function stage times (gamma, lognormal) are inverted only for the leads that reach the
    stage: the holding times equal the plain reading, every stage inverted for every lead and added
    where reached, number for number."""
    stages = (
        Stage("a", FixedProbability(0.6), LogNormal(5.0, 3.0)),
        Stage("b", FixedProbability(0.5), Gamma(2.0, 3.0)),
        Stage("c", FixedProbability(0.7), Exponential(4.0)),
        Stage("d", FixedProbability(0.9), Triangular(1.0, 2.0, 6.0)),
    )
    model = Model(
        stages=stages,
        deal_size=LogNormal(10_000, 4_000),
        arrivals=Arrivals.batch(50),
        horizon_days=60,
        reps=Reps(1, 5),
    )
    trials, leads = 40, 50
    p = np.broadcast_to(np.array([0.6, 0.5, 0.7, 0.9]), (trials, 4))
    scale = np.exp(np.random.default_rng(3).normal(0, 0.2, (trials, 4)))
    hold, won = queue._group_rows(model, np.random.default_rng(9), (trials, leads), p, 0, 0.0, scale)
    rng = np.random.default_rng(9)
    exit_u = rng.random((trials, leads))
    reach = np.cumprod(p, axis=1)
    expected = np.zeros((trials, leads))
    for index, stage in enumerate(stages):
        times = stage.time_in_stage.ppf(rng.random((trials, leads))) * scale[:, index, None]
        expected += np.where(exit_u < reach[:, index - 1, None], times, 0.0) if index else times
    assert np.array_equal(hold, expected)
    assert np.array_equal(won, exit_u < reach[:, -1, None])


@pytest.mark.parametrize("seed", range(3))
def test_teams_on_one_draw_equal_one_run_per_team(seed: int) -> None:
    """Rep teams served from one draw of the leads give what separate runs give, measurement for
    measurement; without detail the outcomes are the same and the measurements are skipped."""
    model = random_model(seed)
    assert model.reps is not None
    teams = (model.reps, replace(model.reps, count=model.reps.count + 1), None)
    shared = queue.simulate_teams(model, seed, 2, 60, teams=teams)
    for team, together in zip(teams, shared, strict=True):
        alone = queue.simulate(replace(model, reps=team), seed, 2, 60)
        lean = queue.simulate(replace(model, reps=team), seed, 2, 60, detail=False)
        assert lean.flow is None
        assert lean.revenue_by_day is None
        for name in ("wins_new", "wins_existing", "revenue_new", "revenue_existing", "wait_days"):
            assert np.array_equal(getattr(together, name), getattr(alone, name))
            assert np.array_equal(getattr(lean, name), getattr(alone, name))
        assert together.revenue_by_day is not None
        assert alone.revenue_by_day is not None
        assert np.array_equal(together.revenue_by_day, alone.revenue_by_day)
        assert together.flow is not None
        assert alone.flow is not None
        for name in ("waits", "wait_trial", "lead_times", "lead_time_trial", "utilisation", "queue"):
            assert np.array_equal(getattr(together.flow, name), getattr(alone.flow, name))


def test_compare_of_a_rep_change_draws_once_and_answers_as_two_runs() -> None:
    model = random_model(4)
    assert model.reps is not None
    more = replace(model, reps=replace(model.reps, count=model.reps.count + 1))
    paired = compare(model, more, 1100, seed=3)
    _, base = simulate(model, 1100, seed=3, engine="queue")
    _, variant = simulate(more, 1100, seed=3, engine="queue")
    assert paired.engine == "queue"
    assert paired.difference == Summary.of(variant.revenue - base.revenue)
    assert paired.wins_difference == Summary.of(variant.wins - base.wins)


def test_capacity_curve_on_one_draw_equals_team_by_team() -> None:
    """A small curve draws the leads once for every team; each row equals its own run."""
    model = random_model(5)
    assert model.reps is not None
    plan = capacity(model, range(3), 600, seed=2)
    assert SHARED_DRAW_TRIALS >= 600 * 3
    for row in plan.rows:
        variant = replace(model, reps=replace(model.reps, count=model.reps.count + row.added))
        _, alone = simulate(variant, 600, seed=2, engine="queue")
        assert row.engine == "queue"
        assert row.revenue == Summary.of(alone.revenue)
        assert row.wins == Summary.of(alone.wins)
        assert alone.flow is not None
        assert row.wait_p90 == flow_report(variant, alone.flow).wait.p90
