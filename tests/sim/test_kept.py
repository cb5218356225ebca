"""The open cohorts' draws kept between the questions of one view (``engines.kept``): whatever ran
first, every outcome is the same array as computed afresh, and the second question reads the first's."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest

from pipesim import Arrivals, Model
from pipesim.engines import common, kept, vectorized
from pipesim.engines.common import Outcomes

from .test_cohort_scales import MODELS
from .test_cohorts import _model


def _large(model: Model) -> Model:
    """Cohorts large enough that the open leads alone take the group draws (``PER_WINNER_BELOW``)."""
    return replace(model, open_leads=tuple(replace(c, count=c.count * 40) for c in model.open_leads))


CASES = {
    "calibrated-like": _large(MODELS["calibrated-like"]),
    "all-uncertain": _large(MODELS["all-uncertain"]),
    "no-uncertainty": _large(_model()),
    "batch": _large(_model(arrivals=Arrivals("batch", count=200))),
}


def _equal(a: Outcomes, b: Outcomes) -> None:
    for f in fields(a):
        assert np.array_equal(getattr(a, f.name), getattr(b, f.name)), f.name


@pytest.mark.parametrize("name", list(CASES))
def test_forecast_and_leads_needed_share_the_open_cohorts_with_the_same_answers(name: str) -> None:
    model: Model = CASES[name]
    trials, goal = 300, 40_000_000.0
    kept.clear()
    forecast_alone = vectorized.simulate_cohorts(model, 7, 1, trials)
    kept.clear()
    needed_alone = vectorized.leads_to_goal(model, 7, 1, trials, goal, 2_000)
    # leadsNeeded first, then the forecast reading its open cohorts; then the other way round.
    kept.clear()
    hits, misses = kept.counts()
    needed = vectorized.leads_to_goal(model, 7, 1, trials, goal, 2_000)
    forecast = vectorized.simulate_cohorts(model, 7, 1, trials)
    assert kept.counts() == (hits + 1, misses + 1)
    _equal(forecast_alone, forecast)
    assert np.array_equal(needed_alone, needed)
    assert np.isfinite(needed).mean() > 0.5
    kept.clear()
    vectorized.simulate_cohorts(model, 7, 1, trials)
    assert np.array_equal(vectorized.leads_to_goal(model, 7, 1, trials, goal, 2_000), needed_alone)
    assert kept.counts() == (hits + 2, misses + 2)


def test_another_seed_block_or_cohort_is_not_read_from_the_kept() -> None:
    model = CASES["calibrated-like"]
    kept.clear()
    vectorized.simulate_cohorts(model, 7, 0, 200)
    hits, _ = kept.counts()
    older = replace(model, open_leads=tuple(replace(c, age_days=c.age_days + 1) for c in model.open_leads))
    for changed, seed, block in ((model, 8, 0), (model, 7, 1), (older, 7, 0)):
        vectorized.simulate_cohorts(changed, seed, block, 200)
    assert kept.counts()[0] == hits
    assert older != model


def test_beta_conversions_are_kept_while_the_open_leads_age() -> None:
    # A model calibrated again a moment later: every cohort a little older, the stages' counts the same.
    model = MODELS["calibrated-like"]
    older = replace(model, open_leads=tuple(replace(c, age_days=c.age_days + 0.01) for c in model.open_leads))
    common.clear_kept_conversions()
    first = common.trial_draws(model, 5, 1, 300)
    kept_now = len(common._conversions_kept)
    assert kept_now == len(model.stages)  # every stage's conversion is a Beta law here
    second = common.trial_draws(older, 5, 1, 300)
    assert len(common._conversions_kept) == kept_now  # read, not computed again
    assert np.array_equal(first.p, second.p)
    u = common.stream(5, 1, common.TRIAL).random((300, len(model.stages) + 1 + len(model.open_leads)))
    afresh = np.column_stack([stage.conversion.ppf(u[:, i]) for i, stage in enumerate(model.stages)])
    assert np.array_equal(second.p, afresh)
    other = common.trial_draws(model, 5, 2, 300)  # another block: other uniforms, computed
    assert len(common._conversions_kept) == 2 * kept_now
    assert not np.array_equal(other.p, first.p)
