"""Capacity answers: Erlang C for M/M/c on the queue engine, the capacity curve's paired differences,
per-lead outputs, the analytic engine through forecast(), and the CLI."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipesim import (
    Arrivals,
    EngineError,
    Exponential,
    Fixed,
    FixedProbability,
    Measurement,
    Model,
    ModelError,
    QuestionError,
    Reps,
    Stage,
    capacity,
    forecast,
    from_toml,
    load_model,
    simulate,
)
from pipesim.cli import main

ROOT = Path(__file__).resolve().parents[2]


def mmc(servers: int, arrival_rate: float = 2.0) -> Model:
    """M/M/c: Poisson leads, each holding a rep slot for an exponential day; every lead converts."""
    return Model(
        stages=(Stage("worked", FixedProbability(1.0), Exponential(1.0)),),
        deal_size=Fixed(1.0),
        arrivals=Arrivals.poisson(arrival_rate),
        horizon_days=1200,
        reps=Reps(count=servers, leads_each=1),
        measurement=Measurement(warmup_days=100, end_days=1100),  # skip the empty start and the tail
    )


def erlang_c(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Probability an arrival waits (Erlang C)."""
    load = arrival_rate / service_rate
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    return top / (sum(load**k / math.factorial(k) for k in range(servers)) + top)


@pytest.mark.parametrize("servers", [3, 5])
def test_queue_engine_matches_erlang_c(servers: int) -> None:
    rate = 2.0 if servers == 3 else 4.0
    thresholds = (0.25, 0.5, 1.0, 2.0)
    result = forecast(mmc(servers, rate), 200, seed=servers, thresholds=thresholds)
    assert result.engine == "queue"
    assert result.flow is not None
    p_wait = erlang_c(rate, 1.0, servers)
    mean_wait = p_wait / (servers - rate)
    wait = result.flow.wait.mean
    assert abs(wait.value - mean_wait) < 4 * wait.se
    for exceed in result.flow.wait_exceeds:
        expected = p_wait * math.exp(-(servers - rate) * exceed.days)
        assert abs(exceed.probability.value - expected) < 4 * exceed.probability.se, exceed.days
    utilisation = result.flow.utilisation
    assert abs(utilisation.value - rate / servers) < 4 * utilisation.se


def test_capacity_curve_is_paired_and_names_the_knee() -> None:
    model = load_model(ROOT / "examples/readme_team.toml").with_new_leads(300)
    model = replace(model, reps=Reps(1, 40))
    plan = capacity(model, range(4), 400, seed=3, goal=1_500_000)
    assert [row.reps for row in plan.rows] == [1, 2, 3, 4]
    assert {row.engine for row in plan.rows} == {"queue"}
    assert all(row.gain is not None and row.gain.value >= 0 for row in plan.rows[1:])
    waits = [row.wait_p90.value for row in plan.rows]
    assert waits == sorted(waits, reverse=True)
    assert "the 1st rep adds" in plan.summary.lower()
    # Common random numbers: the paired difference varies less than one between independent runs.
    _, one = simulate(replace(model, reps=Reps(1, 40)), 400, seed=3)
    _, two = simulate(replace(model, reps=Reps(2, 40)), 400, seed=3)
    _, two_apart = simulate(replace(model, reps=Reps(2, 40)), 400, seed=4)
    assert np.var(two.revenue - one.revenue) < np.var(two_apart.revenue - one.revenue)
    assert np.all(two.revenue >= one.revenue - 1e-6)  # same leads: a second rep only brings wins forward


def test_capacity_needs_reps() -> None:
    with pytest.raises(QuestionError, match="reps"):
        capacity(load_model(ROOT / "examples/outbound_smb.toml"), range(2), 10)


def test_analytic_forecast_gives_moments_only_or_says_why_not() -> None:
    model = Model(
        stages=(Stage("a", FixedProbability(0.5), Exponential(3.0)), Stage("b", FixedProbability(0.4))),
        deal_size=Fixed(1000.0),
        arrivals=Arrivals.batch(500),
        horizon_days=30,
    )
    exact = forecast(model, engine="analytic")
    assert exact.moments_only
    assert math.isnan(exact.revenue.p50)
    _, sampled = simulate(model, 20_000, seed=1)
    assert abs(exact.revenue.mean - sampled.revenue.mean()) < 4 * sampled.revenue.std() / math.sqrt(20_000)
    with pytest.raises(EngineError, match="analytic"):
        forecast(load_model(ROOT / "examples/readme_team.toml"), engine="analytic")


def test_measurement_window_is_read_and_checked() -> None:
    text = (ROOT / "examples/readme_team.toml").read_text() + "\n[measurement]\nwarmup_days = 10\n"
    assert from_toml(text).measurement == Measurement(10.0, None)
    with pytest.raises(ModelError, match="measurement"):
        from_toml(text.replace("warmup_days = 10", "warmup_days = 95"))


def test_cli_capacity_table_and_json() -> None:
    out, err = io.StringIO(), io.StringIO()
    path = str(ROOT / "examples/readme_team.toml")
    assert main(["capacity", path, "--reps", "0..2", "--trials", "200", "--goal", "5000000"], out, err) == 0
    assert "rep adds" in out.getvalue()
    out = io.StringIO()
    assert main(["capacity", path, "--reps", "0,1", "--trials", "200", "--json"], out, err) == 0
    data = json.loads(out.getvalue())
    assert [row["added"] for row in data["rows"]] == [0, 1]
    with pytest.raises(SystemExit):
        main(["capacity", path, "--reps", "x"], io.StringIO(), io.StringIO())
