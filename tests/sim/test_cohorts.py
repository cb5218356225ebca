"""The cohort path (one binomial and one sum per group) against the per-winner reference and exact laws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import special, stats

from pipesim import (
    Arrivals,
    BetaProbability,
    Exponential,
    FixedProbability,
    Gamma,
    LogNormal,
    Model,
    OpenLeads,
    Stage,
    Weibull,
)
from pipesim.engines import cohorts, vectorized
from pipesim.engines.common import Group, Outcomes

HORIZON = 90.0


def _model(**changes: object) -> Model:
    base: dict[str, object] = {
        "stages": (
            Stage("Qualify", BetaProbability(60, 40), LogNormal(8.0, 6.0)),
            Stage("Propose", BetaProbability(70, 30), Weibull(1.6, 12.0)),
            Stage("Close", FixedProbability(0.8), Gamma(3.0, 2.5)),
        ),
        "deal_size": LogNormal(20_000.0, 15_000.0),
        "arrivals": Arrivals(kind="poisson", rate_per_day=3.0),
        "horizon_days": HORIZON,
        "open_leads": (
            OpenLeads("Qualify", 120, age_days=4.0, value=15_000.0),
            OpenLeads("Propose", 80, age_days=20.0),
            OpenLeads("Close", 60, age_days=3.0, value=40_000.0),
            OpenLeads("Close", 5, age_days=30.0),
        ),
    }
    base.update(changes)
    return Model(**base)  # type: ignore[arg-type]


def _outcomes(simulate: object, model: Model, seed: int, blocks: int) -> Outcomes:
    run = simulate  # (model, seed, block, trials) -> Outcomes
    return Outcomes.concat([run(model, seed, block, 1000) for block in range(blocks)])  # type: ignore[operator]


def _same_law(reference: NDArray[np.float64], fast: NDArray[np.float64]) -> None:
    se = math.sqrt(reference.var(ddof=1) / len(reference) + fast.var(ddof=1) / len(fast))
    assert abs(reference.mean() - fast.mean()) <= 4 * se + 1e-9
    ratio = fast.std(ddof=1) / reference.std(ddof=1)
    assert abs(ratio - 1) <= 4 * math.sqrt(2 / len(reference))  # sd ratio: se ≈ sqrt(1/(2n) + 1/(2n))
    assert stats.ks_2samp(reference, fast).pvalue > 1e-4


@pytest.mark.parametrize(
    "model",
    [
        _model(),
        _model(arrivals=Arrivals(kind="batch", count=400)),
        _model(deal_size=Exponential(10_000.0), open_leads=()),
    ],
    ids=["poisson-and-cohorts", "batch", "exponential-deals"],
)
def test_cohort_path_has_the_per_winner_law(model: Model) -> None:
    reference = _outcomes(vectorized.simulate_per_winner, model, seed=1, blocks=4)
    fast = _outcomes(vectorized.simulate, model, seed=2, blocks=4)  # independent seeds: a two-sample test
    for name in ("wins_new", "wins_existing", "revenue_new", "revenue_existing"):
        if getattr(reference, name).std() == 0:
            assert getattr(fast, name).std() == 0
            assert getattr(fast, name).mean() == getattr(reference, name).mean()
        else:
            _same_law(getattr(reference, name), getattr(fast, name))
    _same_law(reference.revenue, fast.revenue)


def test_in_horizon_probability_matches_closed_forms() -> None:
    # Gamma stages of one scale sum to a gamma; the exponential is memoryless, so the age changes nothing.
    stages = (
        Stage("A", FixedProbability(0.5), Exponential(10.0)),
        Stage("B", FixedProbability(0.5), Gamma(2.0, 10.0)),
        Stage("C", FixedProbability(0.5), Gamma(1.5, 10.0)),
    )
    model = Model(
        stages=stages, deal_size=Exponential(1.0), arrivals=Arrivals("batch", 1), horizon_days=HORIZON
    )
    for age in (0.0, 7.0):
        q = cohorts.in_horizon_probability(model, Group(0, age, None, existing=True))
        assert abs(q - special.gammainc(4.5, HORIZON / 10.0)) < 1e-5
    # A Weibull stage alone, given its age: 1 - S(age + H) / S(age).
    weibull = Weibull(0.7, 40.0)
    alone = Model(
        stages=(Stage("W", FixedProbability(0.5), weibull),),
        deal_size=Exponential(1.0),
        arrivals=Arrivals("batch", 1),
        horizon_days=HORIZON,
    )
    age = 25.0
    exact = 1 - math.exp(-(((age + HORIZON) / 40.0) ** 0.7) + (age / 40.0) ** 0.7)
    assert abs(cohorts.in_horizon_probability(alone, Group(0, age, None, existing=True)) - exact) < 1e-6
    # A Poisson arrival uniform over the horizon, then one exponential stage.
    flow = Model(
        stages=(Stage("E", FixedProbability(0.5), Exponential(30.0)),),
        deal_size=Exponential(1.0),
        arrivals=Arrivals("poisson", rate_per_day=1.0),
        horizon_days=HORIZON,
    )
    exact = 1 - 30.0 / HORIZON * (1 - math.exp(-HORIZON / 30.0))
    assert abs(cohorts.in_horizon_probability(flow, Group(0, 0.0, None, existing=False)) - exact) < 1e-5


def test_in_horizon_probability_matches_sampled_finish_times() -> None:
    model = _model(horizon_days=30.0)
    horizon = model.horizon_days
    rng = np.random.default_rng(5)
    n = 400_000
    for group in (Group(0, 0.0, None, existing=False), Group(0, 5.0, None, existing=True)):
        finish = np.zeros(n) if group.existing else rng.random(n) * horizon
        for index in range(group.start, len(model.stages)):
            law = model.stages[index].time_in_stage
            u = rng.random(n)
            finish += law.remaining(u, group.age_days) if index == group.start else law.ppf(u)
        sampled = float(np.mean(finish <= horizon))
        q = cohorts.in_horizon_probability(model, group)
        assert 0.05 < sampled < 0.95
        assert abs(q - sampled) < 4 * math.sqrt(sampled * (1 - sampled) / n)


@pytest.mark.parametrize("law", [LogNormal(20_000.0, 15_000.0), Weibull(1.3, 9_000.0), Gamma(0.8, 5_000.0)])
def test_translated_gamma_sums_have_the_exact_sums_law(law: object) -> None:
    terms = cohorts._gamma_terms(law)
    assert terms is not None
    mean, sd, skew, fewest = terms
    k, n = fewest, 20_000
    rng = np.random.default_rng(9)
    exact = np.array([law.ppf(rng.random(k)).sum() for _ in range(n)])  # type: ignore[attr-defined]
    approx = cohorts.translated_gamma(rng.random(n), np.full(n, k, dtype=np.int64), mean, sd, skew)
    _same_law(exact, approx)


def test_deal_sums_count_every_deal() -> None:
    rng = np.random.default_rng(3)
    wins = np.array([0, 1, 64, 65, 500, 5000], dtype=np.int64)
    law = LogNormal(1_000.0, 3_000.0)  # heavy enough that large exact sums run past the first chunk
    totals = cohorts.deal_sums(law, np.repeat(wins, 400), rng).reshape(len(wins), 400)
    assert (totals[0] == 0).all()
    for row, k in zip(totals[1:], wins[1:], strict=True):
        assert abs(row.mean() - k * 1_000.0) < 4 * math.sqrt(k) * 3_000.0 / math.sqrt(400)
