from __future__ import annotations

import pytest

from pipesim import (
    Arrivals,
    Model,
    QuestionError,
    compare,
    forecast,
    leads_needed,
    sensitivity,
    simulate,
)
from pipesim.distributions import FixedProbability


def test_leads_needed_matches_the_negative_binomial_quantile(issue_funnel: Model) -> None:
    for confidence, exact in ((0.5, 656), (0.9, 860)):
        answer = leads_needed(issue_funnel, 500_000, confidence, trials=10_000, seed=2)
        assert answer.analytic == exact
        assert answer.interval is not None
        assert answer.interval[0] <= exact <= answer.interval[1]
        assert abs(answer.p_goal.value - confidence) < 5 * answer.p_goal.se + 1 / answer.trials
        assert answer.naive == 667


def test_leads_needed_p_goal_equals_a_forecast_at_the_answer(issue_funnel: Model) -> None:
    answer = leads_needed(issue_funnel, 500_000, 0.9, trials=3000, seed=4)
    at_answer = forecast(issue_funnel.with_new_leads(answer.leads), trials=3000, seed=4, goal=500_000)
    one_less = forecast(issue_funnel.with_new_leads(answer.leads - 1), trials=3000, seed=4, goal=500_000)
    assert at_answer.p_goal == answer.p_goal
    assert at_answer.p_goal is not None
    assert one_less.p_goal is not None
    assert one_less.p_goal.value < 0.9 <= at_answer.p_goal.value


def test_forecast_reports_percentiles_in_order_and_the_split(issue_funnel: Model) -> None:
    result = forecast(issue_funnel, trials=2000, seed=1, goal=750_000)
    assert result.revenue.p10 <= result.revenue.p50 <= result.revenue.p90
    assert result.revenue_existing.mean == 0
    assert sum(result.histogram.counts) == 2000
    data = result.to_dict()
    assert data["revenue"]["p10"] == result.revenue.p10
    assert data["p_goal"]["value"] == pytest.approx(0.5, abs=0.1)


def test_comparing_a_model_with_itself_shows_no_difference(issue_funnel: Model) -> None:
    result = compare(issue_funnel, issue_funnel, trials=1000, seed=3, goal=500_000)
    assert result.difference.mean == result.difference.sd == 0
    assert result.p_goal_difference is not None
    assert result.p_goal_difference.value == 0


def test_paired_comparison_has_far_less_noise_than_independent_runs(issue_funnel: Model) -> None:
    better = issue_funnel.replace_stage(3, conversion=FixedProbability(0.44))
    paired = compare(issue_funnel, better, trials=4000, seed=5)
    independent_sd = (paired.base.sd**2 + paired.variant.sd**2) ** 0.5
    assert paired.difference.sd < independent_sd / 2
    assert paired.difference.p10 >= 0  # common random numbers: a better stage never loses a win
    assert abs(paired.difference.mean - 75_000) < 5 * paired.difference.se


def test_sensitivity_names_the_leakiest_stage_as_bottleneck(issue_funnel: Model) -> None:
    result = sensitivity(issue_funnel, trials=2000, seed=6, goal=750_000)
    assert result.bottleneck == "stage 3"  # conversion 0.4, the lowest
    assert len(result.levers) == 2 * len(issue_funnel.stages)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: leads_needed(m, -5), "goal"),
        (lambda m: leads_needed(m, 1000, confidence=1.0), "confidence"),
        (lambda m: forecast(m, trials=1), "trials"),
    ],
)
def test_bad_arguments_name_the_argument(issue_funnel: Model, call: object, message: str) -> None:
    with pytest.raises(QuestionError, match=message):
        call(issue_funnel)  # type: ignore[operator]


def test_leads_needed_for_a_flow_model_is_a_rate_per_week(issue_funnel: Model) -> None:
    flow = Model(issue_funnel.stages, issue_funnel.deal_size, Arrivals.poisson(3), horizon_days=1e9)
    answer = leads_needed(flow, 500_000, 0.9, trials=4000, seed=5)
    assert answer.rate_per_week is not None
    assert answer.p_goal_at_rate is not None
    assert answer.p_goal_at_rate.value >= 0.9
    # Every winner counts with this horizon, so the expected leads over it match the batch figure to
    # within the Poisson spread of the count (a rate, not a batch, so only roughly).
    expected = answer.rate_per_week / 7 * 1e9
    assert 0.8 * answer.leads < expected < 1.25 * answer.leads
    _, out = simulate(
        Model(flow.stages, flow.deal_size, Arrivals.poisson(answer.rate_per_week / 7 * 0.9), 1e9),
        4000,
        seed=5,
    )
    assert (out.revenue >= 500_000).mean() < 0.9  # 10 % less flow misses the confidence
