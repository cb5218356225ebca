"""The truth's own model (``synthetic.truth_model``): the forecast a perfect calibration would make, the
backtest's reference. Its forecast must match what the truth itself plays out."""

from __future__ import annotations

import math

import numpy as np
import pytest

import pipesim
from pipegraph.services.forecasting.synthetic import TruePipeline, TrueSource, generate, truth_model

CUT_OFF, HORIZON = 240.0, 90.0
MIXED = TruePipeline(
    conversions=(0.7, 0.6, 0.8),
    mean_days=(6.0, 12.0, 9.0),
    arrivals_per_day=3.0,
    deal_mean=5_000.0,
    deal_sd=2_500.0,
    duration="lognormal",
    duration_shape=0.9,
    sources=(TrueSource("cold", 0.6, 0.7), TrueSource("referral", 0.4, 1.5)),
    rep_strengths=(0.6, 1.3),
    weekday_profile=(1.3, 1.2, 1.1, 1.0, 0.9, 0.3, 0.2),
    trend_per_year=0.5,
)


def test_segments_are_the_truths_sources_and_reps_with_its_capped_conversions() -> None:
    lives = generate(MIXED, np.random.default_rng(1), CUT_OFF)
    model = truth_model(MIXED, lives, CUT_OFF, HORIZON)
    assert [(s.name, round(s.share, 9)) for s in model.segments] == [
        ("cold · rep 0", 0.3), ("cold · rep 1", 0.3), ("referral · rep 0", 0.2), ("referral · rep 1", 0.2),
    ]  # fmt: skip
    exact = (
        sum(
            share * math.prod(min(c * source * rep, 0.98) for c in MIXED.conversions)
            for source, share in ((0.7, 0.6), (1.5, 0.4))
            for rep in (0.6, 1.3)
        )
        / 2
    )
    assert model.win_probability == pytest.approx(exact, rel=1e-12)
    # Every lead open at the cut-off, one cohort each, in its own segment, stage, age and value.
    assert len(model.open_leads) == lives.open_at(CUT_OFF)
    assert {cohort.count for cohort in model.open_leads} == {1}
    assert all(cohort.segment in {s.name for s in model.segments} for cohort in model.open_leads)
    assert sorted(c.value for c in model.open_leads if c.value is not None) == sorted(
        lives.value[(lives.created <= CUT_OFF) & (lives.closed > CUT_OFF)].tolist()
    )


def test_new_leads_revenue_matches_the_truths_own_play_out() -> None:
    """Revenue of leads arriving in the horizon: the model's forecast mean against the mean over the
    truth's own histories (arrivals with weekday profile and trend, log-normal times, segments), within
    4 standard errors of the difference."""
    rng = np.random.default_rng(7)
    replicates = []
    for _ in range(300):
        lives = generate(MIXED, rng, CUT_OFF + HORIZON)
        new = lives.won & (lives.created > CUT_OFF) & (lives.closed <= CUT_OFF + HORIZON)
        replicates.append(float(lives.value[new].sum()))
    played = np.array(replicates)
    model = truth_model(MIXED, generate(MIXED, np.random.default_rng(1), CUT_OFF), CUT_OFF, HORIZON)
    forecast = pipesim.forecast(model, 20_000, seed=3).revenue_new
    se = math.hypot(played.std(ddof=1) / math.sqrt(len(played)), forecast.se)
    assert abs(forecast.mean - played.mean()) < 4 * se
    # Not vacuous: the difference is resolved to a few per cent of the revenue.
    assert 4 * se < 0.1 * played.mean()


def test_open_leads_revenue_matches_what_the_truth_did_next() -> None:
    """Each history's leads open at the cut-off, forecast by the truth's model, against what they went on
    to win in the horizon: over many histories the summed difference is within 4 of its standard
    deviations (the forecasts' own spreads), so ages, stages, values and segments are carried right."""
    rng = np.random.default_rng(11)
    differences, variances = [], []
    for index in range(40):
        lives = generate(MIXED, rng, CUT_OFF + HORIZON)
        model = truth_model(MIXED, lives, CUT_OFF, HORIZON)
        before = lives.won & (lives.created <= CUT_OFF) & (lives.closed > CUT_OFF)
        realised = float(lives.value[before & (lives.closed <= CUT_OFF + HORIZON)].sum())
        existing = pipesim.forecast(model.with_new_leads(0), 2_000, seed=index).revenue_existing
        differences.append(realised - existing.mean)
        variances.append(existing.sd**2)
    z = sum(differences) / math.sqrt(sum(variances))
    assert abs(z) < 4
