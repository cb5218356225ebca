"""The fan's revenue by week: the Gaussian path against the groups' multinomials (the reference).

Laws: per week, the mean, sd and P10/P50/P90 over 6,000 trials within 4 Monte Carlo SEs of the
reference's (the two share the trials' counts and revenues, so the unpaired SEs used are conservative);
the same check fails when the timing noise is dropped (each trial's expected revenue by week). Exact:
the totals, whichever path draws the weeks; the multinomials' numbers where the counts are too few.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from pipesim import Arrivals, BetaProbability, Model, OpenLeads
from pipesim.engines import fan, vectorized
from pipesim.engines.common import Outcomes, fan_days, groups

from .test_cohort_scales import _calibrated_like
from .test_cohorts import _model

BLOCKS = 6
TRIALS = 1000


def _many_cohorts(model: Model, rate: float, cohorts: int, seed: int) -> Model:
    """``model`` at a large pipeline's counts, as calibrated: ``rate`` new leads a day and ``cohorts``
    open cohorts of 1 to 60 leads at varied ages in every stage, each with its known deal value."""
    rng = np.random.default_rng(seed)
    names = [stage.name for stage in model.stages]
    open_leads = tuple(
        OpenLeads(
            names[index % len(names)],
            int(rng.integers(1, 60)),
            age_days=float(rng.gamma(1.2, 12.0)),
            value=float(rng.lognormal(10.2, 0.8)),
        )
        for index in range(cohorts)
    )
    stages = tuple(replace(stage, conversion=BetaProbability(9_000, 900)) for stage in model.stages)
    arrivals = replace(model.arrivals, rate_per_day=rate)
    return replace(model, stages=stages, arrivals=arrivals, open_leads=open_leads)


LARGE = {
    "calibrated-like": _many_cohorts(_calibrated_like(), rate=170.0, cohorts=300, seed=1),
    "fixed-laws": _many_cohorts(_model(), rate=120.0, cohorts=60, seed=2),
}


def _fans(model: Model, seed: int) -> Outcomes:
    return Outcomes.concat(
        [vectorized.simulate_cohorts(model, seed, block, TRIALS) for block in range(BLOCKS)]
    )


def _reference(model: Model, seed: int, monkeypatch: pytest.MonkeyPatch) -> Outcomes:
    with monkeypatch.context() as patch:
        patch.setattr(fan, "APPROX_ERROR", -1.0)  # no trial on the Gaussian path: every group's multinomial
        return _fans(model, seed)


def _quantile_se(sample: NDArray[np.float64], p: float) -> float:
    """SE of the sample's p-quantile: sqrt(p(1 - p)/n) / density, the density from the spacing of the
    quantiles 0.05 either side."""
    low, high = np.percentile(sample, [100 * (p - 0.05), 100 * (p + 0.05)])
    density = 0.1 / max(high - low, 1e-12)
    return float(math.sqrt(p * (1 - p) / len(sample)) / density)


def _mismatches(reference: NDArray[np.float64], found: NDArray[np.float64]) -> list[str]:
    """The weeks' statistics further apart than 4 SEs (an empty list: the same law per week)."""
    out = []
    n = len(reference)
    for week in range(reference.shape[1] - 1):  # the last day is the trial's revenue, the same in both
        a, b = reference[:, week], found[:, week]
        if a.std() == 0:
            if b.std() != 0 or a.mean() != b.mean():
                out.append(f"week {week}: constant")
            continue
        se = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / n)
        if abs(a.mean() - b.mean()) > 4 * se:
            out.append(f"week {week}: mean")
        if abs(b.std(ddof=1) / a.std(ddof=1) - 1) > 4 * math.sqrt(1 / n):  # sd ratio: se ≈ sqrt(1/2n + 1/2n)
            out.append(f"week {week}: sd")
        for p in (0.1, 0.5, 0.9):
            se = math.hypot(_quantile_se(a, p), _quantile_se(b, p))
            if abs(np.percentile(a, 100 * p) - np.percentile(b, 100 * p)) > 4 * se:
                out.append(f"week {week}: P{round(100 * p)}")
    return out


def _gaussian_share(model: Model, seed: int, monkeypatch: pytest.MonkeyPatch) -> float:
    chosen: list[NDArray[np.bool_]] = []
    choose: Callable[[fan.Cumulants], NDArray[np.bool_]] = fan.gaussian_trials

    def spy(found: fan.Cumulants) -> NDArray[np.bool_]:
        chosen.append(choose(found))
        return chosen[-1]

    with monkeypatch.context() as patch:
        patch.setattr(fan, "gaussian_trials", spy)
        vectorized.simulate_cohorts(model, seed, 0, TRIALS)
    return float(np.concatenate(chosen).mean())


@pytest.mark.parametrize("name", list(LARGE))
def test_the_gaussian_path_draws_the_fan_of_the_multinomials(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = LARGE[name]
    assert _gaussian_share(model, 3, monkeypatch) > 0.95  # the path under test is the one taken
    found = _fans(model, 3)
    reference = _reference(model, 3, monkeypatch)
    assert found.revenue_by_day is not None
    assert reference.revenue_by_day is not None
    assert _mismatches(reference.revenue_by_day, found.revenue_by_day) == []


def test_the_check_catches_a_fan_without_timing_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each trial's expected revenue by week (its counts' noise dropped) fails the same check.
    model = LARGE["calibrated-like"]
    reference = _reference(model, 3, monkeypatch)

    def expected(
        shares: NDArray[np.float64], found: fan.Cumulants, total: NDArray[np.float64], _: object
    ) -> object:
        by_day = found.mean.copy()
        by_day[:, -1] = total
        return by_day

    with monkeypatch.context() as patch:
        patch.setattr(fan, "gaussian_by_day", expected)
        quiet = _fans(model, 3)
    assert reference.revenue_by_day is not None
    assert quiet.revenue_by_day is not None
    assert len(_mismatches(reference.revenue_by_day, quiet.revenue_by_day)) >= 5


@pytest.mark.parametrize("name", list(LARGE))
def test_the_totals_do_not_depend_on_the_fan_s_path(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = LARGE[name]
    found = vectorized.simulate_cohorts(model, 5, 1, TRIALS)
    with monkeypatch.context() as patch:
        patch.setattr(fan, "APPROX_ERROR", -1.0)
        reference = vectorized.simulate_cohorts(model, 5, 1, TRIALS)
    for outcome in ("wins_new", "wins_existing", "revenue_new", "revenue_existing"):
        assert np.array_equal(getattr(found, outcome), getattr(reference, outcome))
    by_day = found.revenue_by_day
    assert by_day is not None
    assert np.allclose(by_day[:, -1], found.revenue, rtol=1e-12)
    assert (np.diff(by_day, axis=1) >= 0).all()
    assert (by_day >= 0).all()
    assert (by_day <= found.revenue[:, None] * (1 + 1e-12)).all()


@pytest.mark.parametrize(
    "model",
    [
        _model(arrivals=Arrivals("poisson", rate_per_day=1.0)),
        _model(arrivals=Arrivals("batch", count=200)),
        replace(_calibrated_like(), arrivals=Arrivals("poisson", rate_per_day=2.0)),
    ],
)
def test_few_winners_take_the_groups_multinomials(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tens of winners a group: every trial on the reference path, the same numbers.
    assert _gaussian_share(model, 4, monkeypatch) == 0.0
    found = vectorized.simulate_cohorts(model, 4, 0, TRIALS)
    with monkeypatch.context() as patch:
        patch.setattr(fan, "APPROX_ERROR", -1.0)
        reference = vectorized.simulate_cohorts(model, 4, 0, TRIALS)
    assert found.revenue_by_day is not None
    assert reference.revenue_by_day is not None
    assert np.array_equal(found.revenue_by_day, reference.revenue_by_day)
    assert found.revenue_by_day[:, -1].sum() > 0
    assert len(fan_days(model)) > 2
    assert len(groups(model)) > 1


def test_the_covariance_is_the_sum_of_the_groups_bridges() -> None:
    # The lower triangle's product against each group's full matrix; the root against the covariance,
    # weeks without variance (no winner in by then) included.
    rng = np.random.default_rng(0)
    shares = np.sort(rng.random((30, 6)), axis=1)
    shares[:5, :2] = 0.0
    weight = rng.random((4, 30))
    bridges = np.minimum(shares[:, :, None], shares[:, None, :]) - shares[:, :, None] * shares[:, None, :]
    expected = np.einsum("tg,gkl->tkl", weight, bridges)
    found = fan._covariance(shares, weight)
    assert np.allclose(found, expected, rtol=0, atol=1e-14)
    shares[:, :2] = 0.0  # the first two weeks: none in any group
    covariance = fan._covariance(shares, weight)
    root = fan._root(covariance)
    assert np.allclose(root @ root.transpose(0, 2, 1), covariance, rtol=0, atol=1e-9)
    assert np.abs(root[:, :2]).max() < 1e-5
