"""Calibration from stage history: hand-counted stays, recovery of known parameters within their standard
errors, censoring, priors on thin history. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from metrics_fixture import NOW, load
from pipegraph.cli import main
from pipegraph.db import migrate
from pipegraph.db.session import Store
from pipegraph.errors import NotFoundError, ValidationError
from pipegraph.services.forecasting.calibration import (
    PRIOR_STAGE_DAYS,
    Calibration,
    Source,
    calibrate,
    pipeline_id_for_name,
)
from pipegraph.services.forecasting.durations import MAX_STAYS
from pipegraph.services.forecasting.synthetic import TruePipeline, generate, play_out, write_history
from pipesim import BetaProbability, Exponential, LogNormal, Weibull, forecast, from_toml

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
Z = 4.0  # tolerance in standard errors; seeds are fixed, so this only guards against a wrong estimator


async def _calibrate(store: Store, pipeline_id: int, as_of: datetime, **kwargs: object) -> Calibration:
    async with store.read() as session:
        return await calibrate(session, pipeline_id=pipeline_id, horizon_days=90, as_of=as_of, **kwargs)  # type: ignore[arg-type]


async def test_stays_are_counted_as_documented(store: Store) -> None:
    """The metrics fixture by hand (notation in ``metrics_fixture``), as of T40."""
    fixture = await load(store)
    result = await _calibrate(store, fixture.pipeline_id, NOW)
    fits = {fit.name: fit for fit in result.report.stages}
    assert list(fits) == ["Lead In", "Qualified", "Proposal", "Closing"]  # post-sale stage left out

    def counts(name: str) -> tuple[int, int, int, int, int, int]:
        fit = fits[name]
        return (fit.advances, fit.passed_through, fit.losses, fit.moved_back, fit.still_open, fit.exits)

    # Lead In: A, B, C, D, H, I advanced (B and I by skipping ahead); E is still there.
    assert counts("Lead In") == (6, 0, 0, 0, 1, 6)
    assert fits["Lead In"].exposure_days == pytest.approx(2 + 3 + 1 + 5 + 20 + 7 + 2.5)
    # Qualified: A, C, D advanced, B and I skipped through; C lost twice (before and after its reopen);
    # F and H are still there.
    assert counts("Qualified") == (5, 2, 2, 0, 2, 5)
    assert fits["Qualified"].exposure_days == pytest.approx(3 + 4 + 2 + 3 + 9 + 15 + 5)
    # Proposal: A advanced, G won from here; D and I skipped through; B lost; C moved back.
    assert counts("Proposal") == (4, 2, 1, 1, 0, 3)
    assert fits["Proposal"].exposure_days == pytest.approx(4 + 2 + 1 + 5)
    # Closing: A and I won, G passed it winning from Proposal; D still there (36 days).
    assert counts("Closing") == (3, 1, 0, 0, 1, 2)

    assert [fit.conversion for fit in result.report.stages] == [
        BetaProbability(7, 1),
        BetaProbability(6, 3),
        BetaProbability(5, 2),
        BetaProbability(4, 1),
    ]
    # Censored fit: all days over the exits; naive: completed stays only.
    assert fits["Lead In"].mean_days == pytest.approx(40.5 / 6)
    assert fits["Lead In"].naive_mean_days == pytest.approx(20.5 / 6)
    assert fits["Qualified"].mean_days == pytest.approx(41 / 5)
    # Fewer than five exits: the target days (Closing), else the stated prior (Proposal).
    assert (fits["Proposal"].mean_days, fits["Proposal"].time_source) == (PRIOR_STAGE_DAYS, Source.PRIOR)
    assert (fits["Closing"].mean_days, fits["Closing"].time_source) == (3.0, Source.PRIOR)

    # Three wins are too few: the deal size is the mean value of the pipeline's leads, CV 1.
    deal = result.report.deal_size
    assert (deal.wins, deal.source) == (3, Source.PRIOR)
    assert deal.mean == pytest.approx(3_650_000 / 9 / 100)
    # Nine creations since T-20: the window shrinks to the pipeline's 60 days of life.
    arrivals = result.report.arrivals
    assert (arrivals.created, arrivals.window_days, arrivals.rate_per_day) == (9, 60.0, 0.15)
    # Ada and Bo are active reps with the default capacity.
    reps = result.report.reps
    assert (reps.count, reps.total_capacity, reps.leads_each, reps.in_model) == (2, 50, 25, False)

    cohorts = {(c.stage, c.value): (c.count, round(c.age_days, 6)) for c in result.model.open_leads}
    assert cohorts == (
        {
            ("Lead In", 5000.0): (1, 20.0),
            ("Qualified", 500.0): (1, 15.0),
            ("Qualified", 7000.0): (1, 5.0),
            ("Closing", 4000.0): (1, 36.0),
        }
    )
    assert result.report.open_leads == 4


async def test_history_after_the_cut_off_is_ignored(store: Store) -> None:
    fixture = await load(store)
    result = await _calibrate(store, fixture.pipeline_id, ORIGIN + timedelta(days=9.5))
    fits = {fit.name: fit for fit in result.report.stages}
    # At T9.5 A sits in Closing since T9, C is back in Qualified since T8, I in Closing since T8.5.
    assert fits["Closing"].still_open == 3  # A, D, I
    assert fits["Qualified"].still_open == 1  # C
    assert fits["Qualified"].losses == 0


TRUTH = TruePipeline(
    conversions=(0.6, 0.5, 0.4),
    mean_days=(8.0, 15.0, 12.0),
    arrivals_per_day=12.0,
    deal_mean=5_000.0,
    deal_sd=3_000.0,
)


async def test_calibration_recovers_known_parameters(store: Store) -> None:
    rng = np.random.default_rng(20240101)
    days = 180.0
    lives = generate(TRUTH, rng, days)
    pipeline_id = await write_history(store, TRUTH, lives, origin=ORIGIN, until=days)
    result = await _calibrate(store, pipeline_id, ORIGIN + timedelta(days=days))
    report = result.report

    for fit, p, mean in zip(report.stages, TRUTH.conversions, TRUTH.mean_days, strict=True):
        decided = fit.advances + fit.losses
        assert fit.conversion_source is Source.HISTORY
        assert abs(fit.conversion.mean - p) < Z * math.sqrt(p * (1 - p) / decided)
        assert fit.time_source is Source.HISTORY
        assert fit.mean_days_se is not None
        assert abs(fit.mean_days - mean) < Z * mean / math.sqrt(fit.exits)
    # The last window of 90 days saw Poisson(12 × 90) creations.
    arrivals = report.arrivals
    assert arrivals.window_days == 90.0
    assert abs(arrivals.rate_per_day - TRUTH.arrivals_per_day) < Z * math.sqrt(TRUTH.arrivals_per_day / 90)
    deal = report.deal_size
    assert deal.source is Source.HISTORY
    assert deal.mean_se is not None
    assert abs(deal.mean - TRUTH.deal_mean) < Z * deal.mean_se
    assert deal.wins == int(np.sum(lives.won & (lives.closed <= days)))
    # Every lead open at the cut-off is in a cohort, once.
    assert report.open_leads == lives.open_at(days)
    assert sum(cohort.count for cohort in result.model.open_leads) == lives.open_at(days)
    assert (report.reps.count, report.reps.leads_each) == (TRUTH.reps, TRUTH.rep_capacity)

    model = result.model
    assert model.stage_names == TRUTH.stage_names
    assert all(isinstance(stage.time_in_stage, Exponential) for stage in model.stages)
    assert isinstance(model.deal_size, LogNormal)
    assert model.arrivals.rate_per_day == arrivals.rate_per_day
    assert model.reps is None


async def test_times_in_stage_take_the_family_the_history_shows(store: Store) -> None:
    """Weibull stays (shape 0.7: the longer a lead waits, the less likely it moves) are fitted as a
    Weibull, with the shape recovered within its standard error; the exponential path stays available."""
    truth = replace(TRUTH, duration="weibull", duration_shape=0.7)
    rng = np.random.default_rng(7)
    days = 180.0
    lives = generate(truth, rng, days)
    pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=days)
    result = await _calibrate(store, pipeline_id, ORIGIN + timedelta(days=days))
    for fit, stage in zip(result.report.stages, result.model.stages, strict=True):
        assert fit.family_fits is not None
        assert fit.time_family == "weibull"
        assert isinstance(stage.time_in_stage, Weibull)
        best = fit.family_fits.best
        assert fit.family_fits.exits + fit.family_fits.running == min(
            MAX_STAYS, fit.exits + fit.still_open + fit.moved_back
        )
        assert abs(best.parameters["shape"] - 0.7) < Z * best.standard_errors["shape"]
    exponential = await _calibrate(store, pipeline_id, ORIGIN + timedelta(days=days), time_families=False)
    assert all(isinstance(stage.time_in_stage, Exponential) for stage in exponential.model.stages)
    assert all(fit.family_fits is None for fit in exponential.report.stages)


async def test_censored_fit_is_unbiased_where_the_naive_mean_is_biased_low(store: Store) -> None:
    """Slow stages and a young pipeline: many stays are still running at the cut-off. Completed stays
    are the short ones, so their mean falls far below the truth; the censored fit does not."""
    truth = TruePipeline(
        conversions=(0.5,), mean_days=(40.0,), arrivals_per_day=20.0, deal_mean=1_000.0, deal_sd=500.0
    )
    days = 60.0
    lives = generate(truth, np.random.default_rng(7), days)
    pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=days)
    fit = (await _calibrate(store, pipeline_id, ORIGIN + timedelta(days=days))).report.stages[0]
    se = 40.0 / math.sqrt(fit.exits)
    assert fit.still_open > fit.exits / 2  # heavy censoring
    assert abs(fit.mean_days - 40.0) < Z * se
    assert fit.naive_mean_days is not None
    assert fit.naive_mean_days < 40.0 - 10 * se
    # Conversion ignores the leads still in the stage, so censoring does not bias it either.
    assert abs(fit.conversion.mean - 0.5) < Z * math.sqrt(0.25 / (fit.advances + fit.losses))


async def test_thin_history_falls_back_to_stated_priors(store: Store) -> None:
    truth = TruePipeline(
        conversions=(0.5, 0.5), mean_days=(5.0, 5.0), arrivals_per_day=0.02, deal_mean=800.0, deal_sd=1.0
    )
    lives = play_out(truth, np.random.default_rng(3), np.array([10.0, 50.0]))
    pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=100.0)
    result = await _calibrate(store, pipeline_id, ORIGIN + timedelta(days=100))
    report = result.report
    for fit in report.stages:
        assert (fit.conversion_source, fit.time_source) == (Source.PRIOR, Source.PRIOR)
        assert fit.mean_days == PRIOR_STAGE_DAYS
        assert fit.conversion == BetaProbability(1 + fit.advances, 1 + fit.losses)
    assert report.arrivals.source is Source.PRIOR
    assert result.model.arrivals.rate_per_day == 0.0
    assert report.deal_size.source is Source.PRIOR
    assert report.deal_size.mean == pytest.approx(float(np.mean(lives.value)), abs=0.01)
    assert len(report.notes) == 2 * len(report.stages) + 2


async def test_empty_pipeline_calibrates_to_the_priors(store: Store) -> None:
    fixture = await load(store)
    result = await _calibrate(store, fixture.empty_pipeline_id, NOW)
    assert result.model.open_leads == ()
    assert result.report.deal_size.mean == 1_000.0
    assert all(stage.conversion == BetaProbability(1, 1) for stage in result.model.stages)


async def test_bad_input_is_named(store: Store) -> None:
    fixture = await load(store)
    with pytest.raises(NotFoundError) as missing:
        await _calibrate(store, 10_000, NOW)
    assert missing.value.field == "pipelineId"
    async with store.read() as session:
        with pytest.raises(ValidationError) as horizon:
            await calibrate(session, pipeline_id=fixture.pipeline_id, horizon_days=0)
        assert horizon.value.field == "horizonDays"
        assert await pipeline_id_for_name(session, "Fixture") == fixture.pipeline_id
        with pytest.raises(NotFoundError) as unknown:
            await pipeline_id_for_name(session, "Nope")
        assert unknown.value.field == "pipeline"


async def test_capacity_enters_the_model_on_request(store: Store) -> None:
    fixture = await load(store)
    result = await _calibrate(store, fixture.pipeline_id, NOW, with_capacity=True)
    assert result.model.reps is not None
    assert (result.model.reps.count, result.model.reps.leads_each) == (2, 25)


def test_export_model_writes_toml_that_pipesim_reads(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def prepare() -> None:
        store = Store.from_url(database_url)
        try:
            await migrate.upgrade(store.engine)
            await load(store)
        finally:
            await store.dispose()

    asyncio.run(prepare())
    argv = ["export-model", "--database-url", database_url, "--pipeline", "Fixture", "--horizon-days", "30"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Fixture: calibrated from stage history")
    assert "# Proposal: conversion 0.714" in out  # Beta(5, 2)
    model = from_toml(out)
    assert model.horizon_days == 30
    assert model.stage_names == ("Lead In", "Qualified", "Proposal", "Closing")
    assert [stage.conversion for stage in model.stages] == [
        BetaProbability(7, 1),
        BetaProbability(6, 3),
        BetaProbability(5, 2),
        BetaProbability(4, 1),
    ]
    assert sum(cohort.count for cohort in model.open_leads) == 4
    assert forecast(model, trials=200, seed=1).revenue_existing.mean > 0  # runs as exported

    assert main(["export-model", "--database-url", database_url, "--pipeline", "Nope"]) == 2
    assert "pipeline: no pipeline named 'Nope'" in capsys.readouterr().err


def test_export_model_as_of_a_past_moment(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--as-of`` exports the model the history up to then gives: the same as calibrating at that cut-off."""
    as_of = ORIGIN + timedelta(days=9.5)

    async def prepare() -> str:
        store = Store.from_url(database_url)
        try:
            await migrate.upgrade(store.engine)
            fixture = await load(store)
            return (await _calibrate(store, fixture.pipeline_id, as_of)).model.to_toml()
        finally:
            await store.dispose()

    expected = asyncio.run(prepare())
    base = ["export-model", "--database-url", database_url, "--pipeline", "Fixture", "--horizon-days", "90"]
    assert main([*base, "--as-of", as_of.isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"as of {as_of.isoformat()}" in out.splitlines()[0]
    assert from_toml(out).to_toml() == expected
    # A date alone is that day's end (UTC); a cut-off in the future is refused before anything is read.
    assert main([*base, "--as-of", "2024-01-09"]) == 0
    assert "as of 2024-01-10T00:00:00+00:00" in capsys.readouterr().out.splitlines()[0]
    assert main([*base, "--as-of", "2999-01-01"]) == 2
    assert "is in the future" in capsys.readouterr().err
