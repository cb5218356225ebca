"""The cohort path with parameter uncertainty and varying arrivals, against the per-winner reference.

Laws: independent seeds, 4,000 trials a side; every outcome's mean within 4 SE, sd ratio within 4 SE and
a two-sample KS test at α = 0.01. Numerics: the per-trial in-horizon probabilities against the fine grid
of ``engines.cohorts`` (scales of 1), against themselves computed one trial at a time (no interpolation
between scales) and against sampled finish times at a trial's scales.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from pipesim import Arrivals, BetaProbability, Gamma, LogNormal, Model, OpenLeads, Stage, Weibull
from pipesim.arrival_profile import arrival_times
from pipesim.distributions import Distribution, Fixed
from pipesim.engines import cohort_scales, cohorts, vectorized
from pipesim.engines.common import Outcomes, fan_days, groups, trial_draws

from .test_cohorts import _model

WEEKDAYS = (1.4, 1.3, 1.2, 1.1, 0.8, 0.12, 0.08)


def _uncertain(model: Model, times: float, deal: float, rate: float) -> Model:
    return replace(
        model,
        stages=tuple(replace(stage, time_uncertainty=times) for stage in model.stages),
        deal_size_uncertainty=deal,
        arrivals=replace(model.arrivals, rate_uncertainty=rate),
    )


def _calibrated_like() -> Model:
    """Shaped like a model calibrated from a large pipeline: six stages, small per-trial spreads, many
    cohorts of varied ages, some deep in their stage's tail."""
    laws: list[Distribution] = [LogNormal(5.9, 4.7), LogNormal(8.7, 7.5), LogNormal(10.6, 8.4)]
    laws += [LogNormal(11.0, 8.9), LogNormal(11.1, 9.1), Gamma(3.03, 2.34)]
    stages = tuple(
        Stage(f"S{index}", BetaProbability(300 + 40 * index, 200), law, time_uncertainty=0.05 + 0.005 * index)
        for index, law in enumerate(laws)
    )
    rng = np.random.default_rng(11)
    cohorts_ = (
        *(
            OpenLeads(f"S{index % 6}", int(rng.integers(5, 60)), age_days=float(age), value=value)
            for index, (age, value) in enumerate(
                zip(rng.gamma(1.5, 8.0, 18), [None, 12_000.0, None] * 6, strict=True)
            )
        ),
        OpenLeads("S2", 9, age_days=400.0),  # far beyond the stage's usual time
    )
    return Model(
        stages=stages,
        deal_size=LogNormal(34_800.0, 33_000.0),
        deal_size_uncertainty=0.0065,
        arrivals=Arrivals("poisson", rate_per_day=4.0, rate_uncertainty=0.008),
        horizon_days=90.0,
        open_leads=cohorts_,
    )


MODELS = {
    "all-uncertain": _uncertain(_model(), times=0.3, deal=0.2, rate=0.25),
    "weekday-and-trend": _model(
        arrivals=Arrivals("poisson", rate_per_day=3.0, weekday=WEEKDAYS, start_weekday=3, trend_per_day=0.01)
    ),
    "profile-and-uncertain": _uncertain(
        _model(arrivals=Arrivals("poisson", rate_per_day=3.0, weekday=WEEKDAYS, trend_per_day=-0.005)),
        times=0.15,
        deal=0.1,
        rate=0.1,
    ),
    "batch-uncertain": _uncertain(_model(arrivals=Arrivals("batch", count=300)), times=0.4, deal=0.3, rate=0),
    "one-stage-uncertain": replace(
        _model(),
        stages=(_model().stages[0], replace(_model().stages[1], time_uncertainty=0.25), _model().stages[2]),
    ),
    "calibrated-like": _calibrated_like(),
}


def _outcomes(simulate: object, model: Model, seed: int) -> Outcomes:
    run = simulate  # (model, seed, block, trials) -> Outcomes
    return Outcomes.concat([run(model, seed, block, 1000) for block in range(4)])  # type: ignore[operator]


def _same_law(reference: NDArray[np.float64], fast: NDArray[np.float64]) -> None:
    se = math.sqrt(reference.var(ddof=1) / len(reference) + fast.var(ddof=1) / len(fast))
    assert abs(reference.mean() - fast.mean()) <= 4 * se + 1e-9
    ratio = fast.std(ddof=1) / reference.std(ddof=1)
    assert abs(ratio - 1) <= 4 * math.sqrt(2 / len(reference))
    assert stats.ks_2samp(reference, fast).pvalue > 0.01


@pytest.mark.parametrize("name", list(MODELS))
def test_cohort_path_has_the_per_winner_law(name: str) -> None:
    model = MODELS[name]
    assert cohorts.covers(model)
    assert cohort_scales.covers(model)
    reference = _outcomes(vectorized.simulate_per_winner, model, seed=1)
    fast = _outcomes(vectorized.simulate_cohorts, model, seed=2)  # independent seeds: a two-sample test
    for outcome in ("wins_new", "wins_existing", "revenue_new", "revenue_existing"):
        if getattr(reference, outcome).std() == 0:
            assert getattr(fast, outcome).std() == 0
        else:
            _same_law(getattr(reference, outcome), getattr(fast, outcome))
    _same_law(reference.revenue, fast.revenue)


@pytest.mark.parametrize("name", ["all-uncertain", "calibrated-like", "weekday-and-trend"])
def test_per_trial_grid_is_within_3e_5_of_the_fine_grid(name: str) -> None:
    # The coarser per-trial grid at scales of 1 against the fixed-law path (8,192 steps, within 2e-6 of
    # closed forms): far below the Monte Carlo SE of any outcome (q's own SE at 4,000 trials is ~1e-2).
    model = MODELS[name]
    all_groups = groups(model)
    q = cohort_scales.in_horizon_by_trial(model, all_groups, np.ones((2, len(model.stages))))
    fixed = replace(model, stages=tuple(replace(stage, time_uncertainty=0.0) for stage in model.stages))
    fine = np.array([cohorts.in_horizon_probability(fixed, group) for group in all_groups])
    assert np.abs(q[0] - fine).max() < 3e-5
    assert np.array_equal(q[0], q[1])


@pytest.mark.parametrize("name", ["all-uncertain", "calibrated-like", "batch-uncertain"])
def test_interpolation_between_scales_is_within_1e_7(name: str) -> None:
    # One trial at a time the scale range is a point: no interpolation. The block's interpolants agree
    # (to ~1e-10 where the law's distribution function is used; a cohort deep in its stage's tail, whose
    # remaining time comes from quantile atoms on the grid, is piecewise linear in the scale: ~2e-8).
    model = MODELS[name]
    all_groups = groups(model)
    scales = trial_draws(model, 5, 0, 400).time_scale
    q = cohort_scales.in_horizon_by_trial(model, all_groups, scales)
    picked = [int(np.argmin(scales[:, 0])), int(np.argmax(scales[:, 0])), *range(0, 400, 37)]
    for trial in picked:
        alone = cohort_scales.in_horizon_by_trial(model, all_groups, scales[trial : trial + 1])
        assert np.abs(q[trial] - alone[0]).max() < 1e-7


def test_in_horizon_probability_at_given_scales_matches_sampled_finish_times() -> None:
    model = MODELS["profile-and-uncertain"]
    scales = np.array([[0.6, 1.7, 1.1], [1.5, 0.7, 0.9]])
    all_groups = groups(model)
    q = cohort_scales.in_horizon_by_trial(model, all_groups, scales)
    rng = np.random.default_rng(8)
    n = 400_000
    for row, scale in enumerate(scales):
        for index in (0, 2):  # the new leads (arrival by the profile), the Propose cohort 20 days in
            group = all_groups[index]
            if group.existing:
                finish = np.zeros(n)
            else:
                finish = arrival_times(model.arrivals, model.horizon_days, rng.random(n))
            for stage in range(group.start, len(model.stages)):
                law = model.stages[stage].time_in_stage
                age = group.age_days if stage == group.start else 0.0
                times = law.ppf(rng.random(n)) * scale[stage]
                if age > 0:  # scale × T given scale × T > age, less the age
                    below = law.cdf(np.array([age / scale[stage]]))[0]
                    times = law.ppf(below + rng.random(n) * (1 - below)) * scale[stage] - age
                finish += times
            sampled = float(np.mean(finish <= model.horizon_days))
            assert 0.05 < sampled <= 1.0
            assert abs(q[row, index] - sampled) < 4 * math.sqrt(max(sampled * (1 - sampled), 1 / n) / n)


def test_laws_without_an_analytic_scale_dependence_take_the_reference_path() -> None:
    stages = (Stage("A", BetaProbability(5, 5), Fixed(4.0), time_uncertainty=0.2),)
    model = Model(
        stages=stages, deal_size=Weibull(1.2, 1_000.0), arrivals=Arrivals("batch", 10), horizon_days=60.0
    )
    assert not cohort_scales.covers(model)
    one = vectorized.simulate(model, 3, 0, 200)
    reference = vectorized.simulate_per_winner(model, 3, 0, 200)
    assert np.array_equal(one.revenue, reference.revenue)


def test_the_cheaper_exact_path_runs() -> None:
    # Few winners a trial: rows per winner (the same numbers as the reference); many: the group draws.
    base = MODELS["all-uncertain"]
    small = replace(base, open_leads=base.open_leads[:2], arrivals=replace(base.arrivals, rate_per_day=1.0))
    assert vectorized._expected_winners(small, trial_draws(small, 3, 0, 200)) < vectorized.PER_WINNER_BELOW
    same = vectorized.simulate(small, 3, 0, 200).revenue
    assert np.array_equal(same, vectorized.simulate_per_winner(small, 3, 0, 200).revenue)
    large = replace(small, open_leads=tuple(replace(c, count=c.count * 20) for c in small.open_leads))
    assert vectorized._expected_winners(large, trial_draws(large, 3, 0, 200)) > vectorized.PER_WINNER_BELOW
    grouped = vectorized.simulate(large, 3, 0, 200).revenue
    assert np.array_equal(grouped, vectorized.simulate_cohorts(large, 3, 0, 200).revenue)


def test_totals_do_not_depend_on_the_fan() -> None:
    model = MODELS["calibrated-like"]
    with_fan = vectorized.simulate_cohorts(model, 4, 0, 300)
    without = vectorized.simulate_cohorts(model, 4, 0, 300, fan=False)
    assert np.array_equal(with_fan.revenue, without.revenue)
    assert np.array_equal(with_fan.wins, without.wins)
    assert with_fan.revenue_by_day is not None
    assert np.allclose(with_fan.revenue_by_day[:, -1], with_fan.revenue)


@pytest.mark.parametrize("name", ["calibrated-like", "profile-and-uncertain"])
def test_fan_probabilities_match_the_fine_grid(name: str) -> None:
    model = MODELS[name]
    days = fan_days(model)
    for group, coarse in zip(
        groups(model), cohort_scales.fan_probabilities(model, groups(model), days), strict=True
    ):
        assert coarse is not None
        assert np.abs(coarse - cohorts.finished_by(model, group, days)).max() < 1e-4


def test_the_questions_of_one_view_share_the_start_stage_rows() -> None:
    # ``forecast`` and ``leadsNeeded`` of one model, seed and trials draw the same scales per block: the
    # second reads every group's start-stage rows the first computed (a hit per group), with the same q
    # as computed afresh.
    model = MODELS["calibrated-like"]
    batch = model.with_new_leads(0)
    scales = trial_draws(model, 3, 0, 300).time_scale
    cohort_scales.kept_rows.cache_clear()
    first = cohort_scales.in_horizon_by_trial(model, groups(model), scales)
    computed = cohort_scales.kept_rows.cache_info()
    assert computed.hits == 0
    assert computed.misses == len(groups(model))
    second = cohort_scales.in_horizon_by_trial(batch, groups(batch), scales)
    assert cohort_scales.kept_rows.cache_info().hits == len(groups(batch))
    cohort_scales.kept_rows.cache_clear()
    afresh = cohort_scales.in_horizon_by_trial(batch, groups(batch), scales)
    assert np.array_equal(second, afresh)
    assert np.array_equal(first[:, 1:], second[:, 1:])  # the open cohorts' q, whatever the new leads


def test_the_blocks_of_a_question_share_the_start_stage_rows() -> None:
    # The nodes span ± SPREAD_SDS sds of log(scale), not the block's extremes: a second block reads
    # every group's rows the first computed.
    model = MODELS["calibrated-like"]
    cohort_scales.kept_rows.cache_clear()
    cohort_scales.in_horizon_by_trial(model, groups(model), trial_draws(model, 3, 0, 300).time_scale)
    cohort_scales.in_horizon_by_trial(model, groups(model), trial_draws(model, 3, 1, 300).time_scale)
    assert cohort_scales.kept_rows.cache_info().hits == len(groups(model))


@pytest.mark.parametrize("name", ["calibrated-like", "all-uncertain", "batch-uncertain"])
def test_one_inverse_for_all_groups_draws_what_each_group_drew(name: str) -> None:
    # The group draws take every group's wins from one call; the reference takes them group by group.
    model = MODELS[name]
    draws = trial_draws(model, 6, 1, 400)
    all_groups = groups(model)
    leads = vectorized._group_leads(model, draws)
    q = vectorized._q_by_trial(model, all_groups, draws.time_scale, leads[0], True)
    drawn = list(range(len(all_groups)))
    inside = vectorized._inside(model, draws, all_groups, leads, q, drawn)
    for index, group in enumerate(all_groups):
        wins, revenue = vectorized._group_draws(model, 6, 1, draws, index, group, leads[index], q)
        assert np.array_equal(inside[:, index], wins)
        gained = vectorized._group_revenue(model, 6, 1, draws, index, group, inside[:, index])
        assert np.array_equal(gained, revenue)
    assert inside.sum() > 0


@pytest.mark.parametrize("name", list(MODELS))
def test_fan_probabilities_equal_the_group_by_group_reference(name: str) -> None:
    model = MODELS[name]
    days = fan_days(model)
    found = cohort_scales.fan_probabilities(model, groups(model), days)
    expected = cohort_scales.fan_probabilities_reference(model, groups(model), days)
    assert [a is None for a in found] == [b is None for b in expected]
    for a, b in zip(found, expected, strict=True):
        assert (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
    assert any(a is not None and a[-1] > 0 for a in found)


@pytest.mark.parametrize("name", list(MODELS))
def test_start_rows_computed_together_equal_each_group_s_alone(name: str) -> None:
    model = MODELS[name]
    scales = trial_draws(model, 2, 0, 300).time_scale
    cohort_scales.kept_rows.cache_clear()
    for start, stage in enumerate(model.stages):
        ages = [group.age_days if group.existing else 0.0 for group in groups(model) if group.start == start]
        ages += [0.0, 1e-3, 400.0]  # new leads, barely in, far beyond the stage's usual time
        low, high = cohort_scales.node_range(stage.time_uncertainty, np.log(scales[:, start]))
        law = stage.time_in_stage
        together = cohort_scales.start_rows(law, ages, model.horizon_days, low, high)
        for age, (at, rows) in zip(ages, together, strict=True):
            alone = cohort_scales.start_rows_reference(law, age, model.horizon_days, low, high)
            assert np.array_equal(at, alone[0])
            assert np.array_equal(rows, alone[1])
    cohort_scales.kept_rows.cache_clear()
