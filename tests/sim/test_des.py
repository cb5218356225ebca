from __future__ import annotations

import math

import numpy as np
from scipy import stats

from pipesim import (
    Arrivals,
    Exponential,
    Fixed,
    FixedProbability,
    LogNormal,
    Model,
    OpenLeads,
    Reps,
    Stage,
    simulate,
)
from pipesim.engines import des
from pipesim.engines.common import trial_draws


def erlang_c_wait(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean wait in queue of an M/M/c system (Erlang C)."""
    load = arrival_rate / service_rate
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    p_wait = top / (sum(load**k / math.factorial(k) for k in range(servers)) + top)
    return p_wait / (servers * service_rate - arrival_rate)


def test_waiting_for_a_rep_matches_erlang_c() -> None:
    # M/M/3: leads arrive at 2 a day, each holds a rep slot for an exponential day; every lead converts.
    model = Model(
        stages=(Stage("worked", FixedProbability(1.0), Exponential(1.0)),),
        deal_size=Fixed(1.0),
        arrivals=Arrivals.poisson(2.0),
        horizon_days=1200,
        reps=Reps(count=3, leads_each=1),
    )
    trials, seed = 12, 21
    draws = trial_draws(model, seed, 0, trials)
    waits = []
    for trial in range(trials):
        floor = des.SalesFloor(model, wait_window=(100.0, 1100.0))  # skip warm-up and unfinished tail
        floor.run(des.trial_leads(model, seed, 0, trial, draws))
        waits.append(floor.mean_wait)
    expected = erlang_c_wait(2.0, 1.0, 3)
    assert math.isclose(expected, 4 / 9)
    assert abs(np.mean(waits) - expected) < 5 * np.std(waits, ddof=1) / math.sqrt(trials)


def shared_model(reps: Reps | None = None) -> Model:
    return Model(
        stages=(
            Stage("qualify", FixedProbability(0.5), Exponential(4)),
            Stage("propose", FixedProbability(0.4), Exponential(6)),
            Stage("close", FixedProbability(0.5), Exponential(5)),
        ),
        deal_size=LogNormal(20_000, 8_000),
        arrivals=Arrivals.poisson(4),
        horizon_days=40,
        reps=reps,
        open_leads=(OpenLeads("propose", 10, age_days=3),),
    )


def test_des_and_vectorized_agree_in_distribution() -> None:
    _, fast = simulate(shared_model(), 2000, seed=31, engine="vectorized")
    _, slow = simulate(shared_model(), 400, seed=32, engine="des")
    result = stats.ks_2samp(fast.revenue, slow.revenue)
    assert result.pvalue > 0.01
    assert np.all(slow.wait_days == 0)


def test_capacity_makes_leads_wait_and_costs_wins() -> None:
    _, free = simulate(shared_model(), 100, seed=4, engine="des")
    _, tight = simulate(shared_model(Reps(count=1, leads_each=3)), 100, seed=4, engine="des")
    assert np.all(tight.wait_days > 0)
    assert tight.wins.mean() < free.wins.mean()
    # Same leads, same stories: with room for everyone the capacity model is the unlimited one.
    _, roomy = simulate(shared_model(Reps(count=50, leads_each=50)), 100, seed=4, engine="des")
    assert np.array_equal(roomy.revenue, free.revenue)


def test_work_time_needs_a_free_rep() -> None:
    base = shared_model(Reps(count=2, leads_each=20))
    busy = base.replace_stage(0, work=Fixed(1.5))
    _, without = simulate(base, 50, seed=8, engine="des")
    _, with_work = simulate(busy, 50, seed=8, engine="des")
    assert with_work.wins.mean() < without.wins.mean()
