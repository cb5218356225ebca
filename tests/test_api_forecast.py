"""``forecast``, ``leadsNeeded`` and ``whatIf`` through the app, over a synthetic history that ends now."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from scipy import integrate, linalg
from sqlalchemy import select

from api_support import Client, make_client
from pipegraph.api import ids
from pipegraph.db.models import User
from pipegraph.db.session import Store
from pipegraph.db.types import utcnow
from pipegraph.services.forecasting.calibration import calibrate
from pipegraph.services.forecasting.lead_odds import win_probability
from pipegraph.services.forecasting.synthetic import TruePipeline, TrueSource, generate, write_history
from pipesim import Model

TRUTH = TruePipeline(
    conversions=(0.6, 0.5, 0.7),
    mean_days=(6.0, 12.0, 9.0),
    arrivals_per_day=4.0,
    deal_mean=2_000.0,
    deal_sd=1_000.0,
)
DAYS = 150.0

FORECAST = """
query($input: ForecastInput!) {
  forecast(input: $input) {
    pipelineId horizonDays trials seed engine expectedRevenue goal
    revenue { mean se p10 p50 p90 }
    wins { mean p10 p90 }
    pGoal { value se }
    histogram { low high trials }
    fromOpenLeads { mean se }
    fromNewLeads { mean se }
    calibration {
      asOf openLeads openCohorts notes
      stages {
        stageId name conversion advances losses stillOpen exits meanDaysInStage naiveMeanDays timeSource
        timeFamily
        timeFamilyFits { family aic meanDays parameters { name value standardError } }
        survival { days survival standardError atRisk }
      }
      dealSize { wins mean source }
      arrivals { created windowDays ratePerDay source }
      reps { count leadsEach inModel }
    }
  }
}
"""

LEADS_NEEDED = """
query($input: LeadsNeededInput!) {
  leadsNeeded(input: $input) {
    goal confidence horizonDays trials leads leadsPerWeek intervalLow intervalHigh
    naiveLeads naiveLeadsPerWeek pGoal { value se }
  }
}
"""

WHAT_IF = """
query($input: WhatIfInput!) {
  whatIf(input: $input) {
    trials engine changes pVariantBetter
    base { mean } variant { mean } difference { mean p10 p50 }
    pGoalBase { value } pGoalVariant { value } pGoalDifference { value se }
  }
}
"""


@pytest.fixture
async def client(store: Store) -> AsyncIterator[Client]:
    async for c in make_client(store):
        yield c


@pytest.fixture
async def pipeline_id(store: Store) -> int:
    lives = generate(TRUTH, np.random.default_rng(11), DAYS)
    origin = utcnow() - timedelta(days=DAYS)
    return await write_history(store, TRUTH, lives, origin=origin, until=DAYS)


def _gid(pk: int) -> str:
    return ids.encode("Pipeline", pk)


def _finish_probability(model: Model, start: int, days: float) -> float:
    """P(the exponential stays from stage ``start`` to the end sum to ≤ days): a phase-type CDF."""
    rates = [1 / stage.time_in_stage.mean for stage in model.stages[start:]]
    generator = np.diag([-r for r in rates]) + np.diag(rates[:-1], k=1)
    survival = linalg.expm(generator * days)[0].sum()
    return float(1 - survival)


def exact_mean_revenue(model: Model) -> float:
    """E[revenue in the horizon], exactly: open cohorts plus Poisson arrivals, each won with the product of
    mean conversions (independent Beta draws) and finished in time with the phase-type probability."""
    horizon = model.horizon_days
    conversions = [stage.conversion.mean for stage in model.stages]
    total = 0.0
    for cohort in model.open_leads:
        start = model.stage_index(cohort.stage)
        value = cohort.value if cohort.value is not None else model.deal_size.mean
        total += (
            cohort.count * value * math.prod(conversions[start:]) * _finish_probability(model, start, horizon)
        )
    in_time, _ = integrate.quad(lambda arrival: _finish_probability(model, 0, horizon - arrival), 0, horizon)
    rate = model.arrivals.rate_per_day
    return total + rate * math.prod(conversions) * model.deal_size.mean * float(in_time)


async def test_forecast_matches_the_exact_mean_of_the_calibrated_model(
    client: Client, store: Store, pipeline_id: int
) -> None:
    variables = {
        "input": {
            "pipelineId": _gid(pipeline_id),
            "horizonDays": 60,
            "trials": 4000,
            "seed": 3,
            "goal": "50000",
        }
    }
    data = (await client.run(FORECAST, variables))["forecast"]
    async with store.read() as session:
        model = (await calibrate(session, pipeline_id=pipeline_id, horizon_days=60, segments=True)).model
    exact = exact_mean_revenue(model)
    revenue = data["revenue"]
    mean, se = float(revenue["mean"]), float(revenue["se"])
    assert abs(mean - exact) < 4 * se + 0.01
    assert float(revenue["p10"]) <= float(revenue["p50"]) <= float(revenue["p90"])
    assert data["expectedRevenue"] == revenue["mean"]
    # Open and new leads split the revenue, trial by trial, so their means add up (to the cent).
    parts = float(data["fromOpenLeads"]["mean"]) + float(data["fromNewLeads"]["mean"])
    assert parts == pytest.approx(mean, abs=0.02)
    assert sum(bucket["trials"] for bucket in data["histogram"]) == 4000
    assert 0 <= data["pGoal"]["value"] <= 1
    assert (data["trials"], data["seed"], data["engine"], data["goal"]) == (4000, 3, "vectorized", "50000.00")

    calibration = data["calibration"]
    assert [s["name"] for s in calibration["stages"]] == list(TRUTH.stage_names)
    assert all(s["timeSource"] == "HISTORY" for s in calibration["stages"])
    for stage in calibration["stages"]:
        # Exponential truth: no other family has considerably more support.
        assert stage["timeFamily"] == "EXPONENTIAL"
        fits = stage["timeFamilyFits"]
        assert sorted(f["family"] for f in fits) == ["EXPONENTIAL", "GAMMA", "LOGNORMAL", "WEIBULL"]
        assert [f["aic"] for f in fits] == sorted(f["aic"] for f in fits)
        assert all(p["standardError"] > 0 for f in fits for p in f["parameters"])
        curve = stage["survival"]
        assert 2 <= len(curve) <= 40
        assert [p["days"] for p in curve] == sorted(p["days"] for p in curve)
        assert all(1 >= a["survival"] >= b["survival"] >= 0 for a, b in itertools.pairwise(curve))
    assert calibration["openLeads"] == sum(s["stillOpen"] for s in calibration["stages"])
    assert calibration["dealSize"]["source"] == "HISTORY"
    assert calibration["arrivals"]["windowDays"] == 90.0
    # The synthetic reps, plus the API test users with role REP.
    assert calibration["reps"]["count"] >= TRUTH.reps
    assert calibration["reps"]["inModel"] is False

    again = (await client.run(FORECAST, variables))["forecast"]
    assert again["revenue"] == revenue  # same seed, same answer


async def test_leads_needed_reaches_the_goal_at_the_confidence(client: Client, pipeline_id: int) -> None:
    variables = {
        "input": {
            "pipelineId": _gid(pipeline_id),
            "goal": "150000",
            "confidence": 0.9,
            "horizonDays": 90,
            "trials": 3000,
        }
    }
    data = (await client.run(LEADS_NEEDED, variables))["leadsNeeded"]
    assert data["leads"] > 0
    p_goal = data["pGoal"]
    assert p_goal["value"] >= 0.9
    assert data["intervalLow"] <= data["leads"] <= data["intervalHigh"]
    assert data["leadsPerWeek"] == pytest.approx(data["leads"] * 7 / 90)
    # Reverse funnel: goal ÷ mean deal ÷ win rate, ignoring the open leads, the horizon and the variance.
    assert data["naiveLeads"] > 0
    assert data["naiveLeadsPerWeek"] == pytest.approx(data["naiveLeads"] * 7 / 90)
    assert (data["goal"], data["confidence"], data["trials"]) == ("150000.00", 0.9, 3000)


async def test_what_if_is_a_paired_comparison(client: Client, store: Store, pipeline_id: int) -> None:
    async with store.read() as session:
        report = (await calibrate(session, pipeline_id=pipeline_id, horizon_days=60)).report
    last_stage = ids.encode("Stage", report.stages[-1].stage_id)
    variables = {
        "input": {
            "pipelineId": _gid(pipeline_id),
            "horizonDays": 60,
            "goal": "40000",
            "trials": 2000,
            "changes": [{"stageId": last_stage, "conversion": 0.9}],
        }
    }
    data = (await client.run(WHAT_IF, variables))["whatIf"]
    # A higher conversion keeps every base winner (common random numbers): no trial gets worse.
    assert float(data["difference"]["p10"]) >= 0
    assert float(data["variant"]["mean"]) > float(data["base"]["mean"])
    assert data["pVariantBetter"] > 0.5
    assert data["pGoalVariant"]["value"] >= data["pGoalBase"]["value"]
    assert data["changes"] == [f"Stage 3: conversion {report.stages[-1].conversion.mean:.3f} → 0.900"]

    slower = {"input": {**variables["input"], "changes": [{"stageId": last_stage, "daysFactor": 2.0}]}}
    data = (await client.run(WHAT_IF, slower))["whatIf"]
    assert float(data["difference"]["p50"]) <= 0  # same winners, later: fewer inside the horizon
    assert float(data["variant"]["mean"]) < float(data["base"]["mean"])


async def test_what_if_on_reps_simulates_capacity(client: Client, pipeline_id: int) -> None:
    variables = {
        "input": {
            "pipelineId": _gid(pipeline_id),
            "horizonDays": 30,
            "trials": 40,
            "changes": [{"repsDelta": 2}],
        }
    }
    data = (await client.run(WHAT_IF, variables))["whatIf"]
    assert data["engine"] == "queue"  # reps without stage work: the FIFO queue engine, not SimPy
    assert data["trials"] == 40
    assert data["changes"][0].startswith("reps ")
    # More reps never slow anyone down.
    assert float(data["difference"]["p10"]) >= 0


async def test_a_forecast_as_of_a_past_moment_uses_the_history_up_to_then(
    client: Client, store: Store, pipeline_id: int
) -> None:
    as_of = utcnow() - timedelta(days=30)
    variables = {"input": {"pipelineId": _gid(pipeline_id), "trials": 500, "asOf": as_of.isoformat()}}
    data = (await client.run(FORECAST, variables))["forecast"]
    async with store.read() as session:
        expected = (await calibrate(session, pipeline_id=pipeline_id, horizon_days=90, as_of=as_of)).report
    calibration = data["calibration"]
    assert datetime.fromisoformat(calibration["asOf"]) == as_of
    assert calibration["openLeads"] == expected.open_leads
    assert [s["exits"] for s in calibration["stages"]] == [fit.exits for fit in expected.stages]


ODDS = """
query($p: ID!, $h: Int!) {
  leads(pipelineId: $p, first: 40) {
    edges {
      node { status daysInStage winProbability(horizonDays: $h) stage { name } source owner { email } }
    }
  }
}
"""


async def test_each_open_lead_has_its_odds_of_winning_within_the_horizon(
    client: Client, store: Store, pipeline_id: int
) -> None:
    data = await client.run(ODDS, {"p": _gid(pipeline_id), "h": 60})
    leads = [edge["node"] for edge in data["leads"]["edges"]]
    async with store.read() as session:
        calibration = await calibrate(session, pipeline_id=pipeline_id, horizon_days=60, segments=True)
    assert any(lead["status"] == "OPEN" for lead in leads)
    for lead in leads:
        if lead["status"] != "OPEN":
            assert lead["winProbability"] is None
            continue
        owner = None if lead["owner"] is None else lead["owner"]["email"]
        stage = lead["stage"]["name"]
        expected = win_probability(
            calibration.model, stage, lead["daysInStage"], 60, lead["source"], owner,
            calibration.loss_time(stage),
        )  # fmt: skip
        assert expected is not None
        assert 0 <= lead["winProbability"] <= 1
        assert lead["winProbability"] == pytest.approx(expected, abs=0.02)  # calibrated a moment apart
    body = (await client.raw(ODDS, {"p": _gid(pipeline_id), "h": 0})).json()
    assert {e["extensions"]["field"] for e in body["errors"]} == {"horizonDays"}


def _error(body: dict[str, Any]) -> tuple[str, str]:
    error = body["errors"][0]
    return error["extensions"]["code"], error["extensions"]["field"]


@pytest.mark.parametrize(
    ("query", "overrides", "expected"),
    [
        (FORECAST, {"trials": 10_000_000}, ("INVALID", "input.trials")),
        (FORECAST, {"horizonDays": 0}, ("INVALID", "input.horizonDays")),
        (FORECAST, {"goal": "-5"}, ("INVALID", "input.goal")),
        (FORECAST, {"asOf": "2999-01-01T00:00:00+00:00"}, ("INVALID", "input.asOf")),
        (LEADS_NEEDED, {"goal": "1000", "asOf": "2999-01-01T00:00:00+00:00"}, ("INVALID", "input.asOf")),
        (FORECAST, {"pipelineId": ids.encode("Pipeline", 999)}, ("NOT_FOUND", "input.pipelineId")),
        (FORECAST, {"pipelineId": ids.encode("Lead", 1)}, ("NOT_FOUND", "input.pipelineId")),
        (LEADS_NEEDED, {"goal": "1000", "confidence": 1.5}, ("INVALID", "input.confidence")),
        (WHAT_IF, {"changes": []}, ("INVALID", "input.changes")),
        (WHAT_IF, {"changes": [{"conversion": 0.5, "daysFactor": 2}]}, ("INVALID", "input.changes[0]")),
        (WHAT_IF, {"changes": [{"conversion": 0.5}]}, ("INVALID", "input.changes[0].stageId")),
        (
            WHAT_IF,
            {"changes": [{"stageId": ids.encode("Stage", 999), "daysFactor": 2}]},
            ("NOT_FOUND", "input.changes[0].stageId"),
        ),
        (WHAT_IF, {"changes": [{"repsDelta": -100}]}, ("INVALID", "input.changes[0].repsDelta")),
    ],
)
async def test_bad_input_names_the_field(
    client: Client, pipeline_id: int, query: str, overrides: dict[str, Any], expected: tuple[str, str]
) -> None:
    base: dict[str, Any] = {"pipelineId": _gid(pipeline_id), "trials": 100}
    if query is LEADS_NEEDED:
        base["goal"] = "1000"
    body = (await client.raw(query, {"input": {**base, **overrides}})).json()
    assert body["data"] is None
    assert _error(body) == expected


def test_money_is_rounded_to_cents() -> None:
    from pipegraph.api.forecast import money

    assert money(1234.5678) == Decimal("1234.57")
    assert money(0.0) == Decimal("0.00")


CAPACITY_PLAN = """
query($input: CapacityPlanInput!) {
  capacityPlan(input: $input) {
    horizonDays trials seed engine goal reps knee summary
    rows {
      repsAdded reps revenue { p10 p50 p90 mean } wins { mean } pGoal { value se }
      waitP90Days { value se } utilisation { value se } gain gainSe
    }
    calibration { reps { count inModel } }
  }
}
"""


async def test_capacity_plan_gives_the_curve_on_common_leads(client: Client, pipeline_id: int) -> None:
    variables = {
        "input": {
            "pipelineId": _gid(pipeline_id),
            "horizonDays": 60,
            "repsAdded": 3,
            "goal": "40000",
            "trials": 200,
            "seed": 4,
        }
    }
    data = (await client.run(CAPACITY_PLAN, variables))["capacityPlan"]
    assert data["engine"] == "queue"
    assert data["reps"] == data["calibration"]["reps"]["count"]
    rows = data["rows"]
    assert [row["repsAdded"] for row in rows] == [0, 1, 2, 3]
    assert [row["reps"] for row in rows] == [data["reps"] + k for k in range(4)]
    assert rows[0]["gain"] is None
    for before, after in itertools.pairwise(rows):
        # The same leads with one more rep: nobody waits longer, no trial earns less, so means rise.
        assert float(after["gain"]) >= 0
        assert float(after["revenue"]["mean"]) >= float(before["revenue"]["mean"])
        assert after["pGoal"]["value"] >= before["pGoal"]["value"]
        assert after["waitP90Days"]["value"] <= before["waitP90Days"]["value"] + 1e-9
        assert after["utilisation"]["value"] <= before["utilisation"]["value"] + 1e-9
    if data["knee"] is not None:
        assert "returns fall off" in data["summary"]
    # The same question again is answered alike (a repeat view shares the run).
    assert (await client.run(CAPACITY_PLAN, variables))["capacityPlan"] == data


async def test_capacity_plan_refuses_bad_input_naming_the_field(client: Client, pipeline_id: int) -> None:
    for key, value, field in [("repsAdded", 0, "input.repsAdded"), ("trials", 1, "input.trials")]:
        variables = {"input": {"pipelineId": _gid(pipeline_id), key: value}}
        body = (await client.raw(CAPACITY_PLAN, variables)).json()
        assert body["errors"][0]["extensions"]["field"] == field, body


async def test_what_if_by_segment_shifts_sources_and_lets_a_rep_go(client: Client, store: Store) -> None:
    truth = replace(
        TRUTH,
        sources=(TrueSource("cold outreach", 0.6, 0.6), TrueSource("referral", 0.4, 1.4)),
        rep_strengths=(0.6, 1.2),
    )
    lives = generate(truth, np.random.default_rng(12), DAYS)
    pk = await write_history(store, truth, lives, origin=utcnow() - timedelta(days=DAYS), until=DAYS)
    base = {"pipelineId": _gid(pk), "horizonDays": 60, "trials": 400}
    shift = {"shiftFraction": 0.5, "shiftFromSource": "cold outreach", "shiftToSource": "referral"}
    data = (await client.run(WHAT_IF, {"input": {**base, "changes": [shift]}}))["whatIf"]
    assert float(data["variant"]["mean"]) > float(data["base"]["mean"])  # referral converts better
    assert data["changes"] == ["50% of new cold outreach leads come from referral instead"]
    async with store.read() as session:
        model = (await calibrate(session, pipeline_id=pk, horizon_days=60, segments=True)).model
        weakest = min((s for s in model.segments if s.owner), key=lambda s: model.segment_win_probability(s))
        user_id = (await session.execute(select(User.id).where(User.email == weakest.owner))).scalar_one()
    leaves = {"repLeaves": ids.encode("User", user_id)}
    data = (await client.run(WHAT_IF, {"input": {**base, "changes": [leaves]}}))["whatIf"]
    assert float(data["variant"]["mean"]) > float(data["base"]["mean"])  # the weaker rep's leads do better
    bad = {**shift, "shiftToSource": "fax"}
    body = (await client.raw(WHAT_IF, {"input": {**base, "changes": [bad]}})).json()
    assert body["errors"][0]["extensions"]["field"] == "input.changes[0].shiftToSource"
