"""Reps as people (own capacity, ramps for new hires, leaving dates): the queue engine against SimPy
exactly on the same leads and in distribution on independent runs, and a ramp against the capacity
derived by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from pipesim import (
    Arrivals,
    Exponential,
    Fixed,
    FixedProbability,
    Model,
    ModelError,
    Person,
    Reps,
    Stage,
    from_toml,
    simulate,
)
from pipesim.engines import des, queue
from pipesim.engines.common import trial_draws

from .test_queue import assert_same_distributions, floor_of, random_model


def with_people(seed: int) -> Model:
    """A random capacity model whose team gains a ramping hire and loses someone part-way."""
    model = random_model(seed)
    rng = np.random.default_rng(seed + 7)
    assert model.reps is not None
    horizon = model.horizon_days
    people = (
        Person(
            "hire", int(rng.integers(1, 6)), float(rng.uniform(0, horizon / 3)), float(rng.uniform(0, 30))
        ),
        Person("leaver", int(rng.integers(1, 6)), 0.0, 0.0, float(rng.uniform(5, horizon))),
    )
    return replace(model, reps=Reps(model.reps.count - 1, model.reps.leads_each, people))


@pytest.mark.parametrize("seed", range(10))
def test_the_recursion_serves_simpys_leads_exactly_with_people(seed: int) -> None:
    model = with_people(seed)
    assert model.reps is not None
    assert not model.reps.uniform
    opens, closes = (np.array(times) for times in model.reps.slot_times())
    draws = trial_draws(model, seed, 0, 4)
    for trial in range(4):
        leads = des.trial_leads(model, seed, 0, trial, draws)
        floor = des.SalesFloor(model)
        floor.run(leads)
        table = floor_of(leads)
        start = queue.fifo_starts_people(table.arrival, table.hold, opens, closes)
        outcomes, _ = queue.measure(model, table, start)
        assert outcomes.wins_new[0] == floor.wins[0]
        assert outcomes.wins_existing[0] == floor.wins[1]
        assert math.isclose(outcomes.revenue[0], sum(floor.revenue), rel_tol=1e-12)
        assert math.isclose(outcomes.wait_days[0], floor.mean_wait, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_models_with_people_match_simpy_in_distribution(seed: int) -> None:
    assert_same_distributions(with_people(300 + seed), 3000, 400, seed=400 + seed)


def test_people_open_every_slot_alike_fall_back_to_the_plain_recursion() -> None:
    model = random_model(3)
    assert model.reps is not None
    same = replace(model, reps=Reps(model.reps.count - 1, model.reps.leads_each, (Person("a"),)))
    _, a = simulate(model, 200, seed=5, engine="queue")
    _, b = simulate(same, 200, seed=5, engine="queue")
    assert np.array_equal(a.revenue, b.revenue)
    assert model.reps.slots == same.reps.slots  # type: ignore[union-attr]


def saturated(reps: Reps, hold: float | None = None) -> Model:
    """One stage every lead passes, more leads at day 0 than the reps can touch: every open slot is
    always busy, so wins count the work the slots can do."""
    return Model(
        stages=(Stage("work", FixedProbability(1.0), Exponential(2.0) if hold is None else Fixed(hold)),),
        deal_size=Fixed(1.0),
        arrivals=Arrivals.batch(400),
        horizon_days=60,
        reps=reps,
    )


@pytest.mark.parametrize(("engine", "trials"), [("queue", 4000), ("des", 150)])
def test_a_ramp_delivers_the_integral_of_productivity(engine: str, trials: int) -> None:
    # A hire with capacity C = 4 starts on day s = 10 and ramps over N = 20 days; holding times are
    # exponential with mean m = 2 days. A saturated slot completes leads as a Poisson process of rate
    # 1/m while open, so E[wins by T] = (1/m) × ∫ available slots dt = (1/m) × C × (T - s - N/2)
    # = 4 × (60 - 10 - 10) / 2 = 80, and wins are a sum of independent Poisson counts: Var = mean.
    model = saturated(Reps(0, 4, (Person("new hire", None, 10.0, 20.0),)))
    expected = 4 * (60 - 10 - 20 / 2) / 2
    _, out = simulate(model, trials, seed=11, engine=engine)
    assert abs(out.wins.mean() - expected) < 4 * math.sqrt(expected / trials)


@pytest.mark.parametrize("engine", ["queue", "des"])
def test_a_leaver_takes_no_lead_from_the_leaving_day(engine: str) -> None:
    # Fixed 2-day leads: the leaver (2 slots) starts leads at days 0, 2, 4, 6, 8 on each slot and none at
    # 10 (the leaving day); the stayer (1 slot) works all 60 days. Wins: 2 × 5 + 30.
    model = saturated(Reps(0, 1, (Person("leaver", 2, 0.0, 0.0, 10.0), Person("stayer"))), hold=2.0)
    _, out = simulate(model, 3, seed=1, engine=engine)
    assert out.wins.tolist() == [40.0, 40.0, 40.0]
    assert out.flow is not None
    # Utilisation over the slot-days open: 2 × 10 + 60.
    assert np.allclose(out.flow.utilisation, (2 * 10 + 60) / (2 * 10 + 60))


def test_people_are_read_written_and_checked() -> None:
    text = """
horizon_days = 90
deal_size = 1000
[arrivals]
kind = "poisson"
rate_per_day = 2
[reps]
count = 2
leads_each = 3
[[reps.people]]
name = "Ana"
leads = 5
start_day = 30
ramp_days = 45
[[reps.people]]
name = "Bo"
leave_day = 60
[[stages]]
name = "a"
conversion = 0.5
time_in_stage = {dist = "exponential", mean = 5}
"""
    model = from_toml(text)
    assert model.reps is not None
    assert model.reps.people == (Person("Ana", 5, 30.0, 45.0), Person("Bo", None, 0.0, 0.0, 60.0))
    assert model.reps.slots == 2 * 3 + 5 + 3
    assert model.reps.reps == 4
    opens, closes = model.reps.slot_times()
    assert opens[6:11] == [30 + 45 * (k + 0.5) / 5 for k in range(5)]
    assert closes[11:] == [60.0] * 3
    assert from_toml(model.to_toml()) == model
    bad = text.replace("leave_day = 60", "leave_day = -1").replace("leads = 5", "leads = 0")
    with pytest.raises(ModelError) as caught:
        from_toml(bad)
    paths = {issue.path for issue in caught.value.issues}
    assert {"reps.people[0].leads", "reps.people[1].leave_day"} <= paths
    with pytest.raises(ModelError) as caught:
        replace(model, stages=(replace(model.stages[0], work=Fixed(1.0)),))
    assert [issue.path for issue in caught.value.issues] == ["stages[0].work"]
