"""Per-lead odds of winning within a horizon, against closed forms."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from scipy import stats
from sqlalchemy import select

from pipegraph.db import migrate
from pipegraph.db.models import Pipeline
from pipegraph.db.session import Store
from pipegraph.demo import load_demo
from pipegraph.services.forecasting.calibration import calibrate
from pipegraph.services.forecasting.lead_odds import SAMPLES, win_probability
from pipesim import Arrivals, BetaProbability, Exponential, Fixed, Model, Stage, Weibull

NOW = datetime(2025, 6, 30, 12, tzinfo=UTC)


def _model(*stages: Stage) -> Model:
    return Model(stages=stages, deal_size=Fixed(1000.0), arrivals=Arrivals.batch(0), horizon_days=90)


def _tolerance(p: float) -> float:
    return 4 * math.sqrt(max(p * (1 - p), 1e-4) / SAMPLES)


def test_two_exponential_stages_match_the_hypoexponential_cdf() -> None:
    model = _model(
        Stage("Qualify", BetaProbability(6, 4), Exponential(10.0)),
        Stage("Close", BetaProbability(3, 1), Exponential(20.0)),
    )
    for horizon in (10.0, 30.0, 90.0):
        a, b = 1 / 10, 1 / 20
        in_time = 1 - (b * math.exp(-a * horizon) - a * math.exp(-b * horizon)) / (b - a)
        expected_time = in_time
        got = win_probability(model, "Qualify", 5.0, horizon)  # memoryless: the age changes nothing
        assert got is not None
        assert abs(got / (0.6 * 0.75) - expected_time) < _tolerance(expected_time)
    # From the last stage only its own conversion and time remain.
    got = win_probability(model, "Close", 0.0, 20.0)
    assert got is not None
    assert abs(got / 0.75 - (1 - math.exp(-1))) < _tolerance(1 - math.exp(-1))


def test_age_counts_where_the_hazard_is_not_constant() -> None:
    """Weibull shape 0.5: a lead that has waited long is less likely to move soon."""
    weibull = Weibull(0.5, 10.0)
    model = _model(Stage("Only", BetaProbability(1, 1), weibull))
    horizon, age = 30.0, 40.0
    truth = stats.weibull_min(0.5, scale=10.0)
    expected = (truth.cdf(age + horizon) - truth.cdf(age)) / truth.sf(age)
    got = win_probability(model, "Only", age, horizon)
    assert got is not None
    assert abs(got / 0.5 - expected) < _tolerance(expected)
    fresh = win_probability(model, "Only", 0.0, horizon)
    assert fresh is not None
    assert fresh > got


def test_stages_outside_the_model_have_no_odds() -> None:
    model = _model(Stage("Only", BetaProbability(1, 1), Exponential(3.0)))
    assert win_probability(model, "Post-sale", 1.0, 90.0) is None


def test_where_losers_linger_an_old_lead_is_likelier_a_loser() -> None:
    """Advances after Exp(mean 5) days, losses after Exp(mean 20): a lead still there after ``age`` days
    advances with probability p e^(-age/5) / (p e^(-age/5) + (1 - p) e^(-age/20)), then wins within the
    horizon as its remaining (memoryless) time to advance allows."""
    p, horizon = 0.6, 10.0
    model = _model(Stage("Qualify", BetaProbability(6, 4), Exponential(5.0)))
    in_time = 1 - math.exp(-horizon / 5)
    for age in (0.0, 5.0, 20.0, 40.0):
        advancing = p * math.exp(-age / 5)
        expected = advancing / (advancing + (1 - p) * math.exp(-age / 20)) * in_time
        got = win_probability(model, "Qualify", age, horizon, loss_time=Exponential(20.0))
        assert got is not None
        assert abs(got - expected) < _tolerance(expected)
    # Without a loss time apart (one time to any exit) the age says nothing of the outcome.
    assert win_probability(model, "Qualify", 40.0, horizon) == win_probability(model, "Qualify", 0.0, horizon)
    old = win_probability(model, "Qualify", 40.0, horizon, loss_time=Exponential(20.0))
    assert old is not None
    assert old < 0.1 * p * in_time


async def test_the_calibration_gives_the_loss_time_where_it_timed_losses_apart(tmp_path: Path) -> None:
    """The demo's losers linger: its calibration times their losses apart in some stage, hands that time
    to the odds (``Calibration.loss_time``), and there an old lead's odds fall below a fresh one's."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'demo.sqlite3'}")
    try:
        await migrate.upgrade(store.engine)
        await load_demo(store, seed=1, now=NOW)
        async with store.read() as session:
            pipeline_id = await session.scalar(select(Pipeline.id).where(Pipeline.name == "B2B Sales"))
            assert pipeline_id is not None
            calibration = await calibrate(session, pipeline_id=pipeline_id, horizon_days=90, as_of=NOW)
    finally:
        await store.dispose()
    apart = [fit for fit in calibration.report.stages if fit.loss_mean_days is not None]
    assert apart, "the demo's lingering losers are timed apart in at least one stage"
    for fit in calibration.report.stages:
        loss_time = calibration.loss_time(fit.name)
        if fit.loss_mean_days is None:
            assert loss_time is None
            continue
        assert loss_time is not None
        assert loss_time.mean == fit.loss_mean_days > fit.mean_days
        model, age = calibration.model, 3 * fit.mean_days
        fresh = win_probability(model, fit.name, 0.0, 90.0, loss_time=loss_time)
        waited = win_probability(model, fit.name, age, 90.0, loss_time=loss_time)
        unconditioned = win_probability(model, fit.name, age, 90.0)
        assert fresh is not None
        assert waited is not None
        assert unconditioned is not None
        assert waited < unconditioned
        assert waited < fresh
