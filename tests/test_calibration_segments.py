"""Calibration with segments: per-source conversions of a synthetic truth recovered, reps pooled, the mix
of new leads, open leads in their segment, and the exported model read back by pipesim."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from metrics_fixture import load
from pipegraph.cli import main
from pipegraph.db import migrate
from pipegraph.db.session import Store
from pipegraph.services.forecasting.calibration import Calibration, calibrate
from pipegraph.services.forecasting.synthetic import TruePipeline, TrueSource, generate, write_history
from pipesim import forecast, from_toml
from pipesim.segments import shift_source, without_owner

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
Z = 4.0
SOURCES = (
    TrueSource("cold outreach", 0.4, 0.6),
    TrueSource("website", 0.3, 1.0),
    TrueSource("referral", 0.3, 1.5),
)
TRUTH = TruePipeline(
    conversions=(0.6, 0.5),
    mean_days=(6.0, 10.0),
    arrivals_per_day=15.0,
    deal_mean=4_000.0,
    deal_sd=2_000.0,
    sources=SOURCES,
)
DAYS = 150.0


async def _calibrate(store: Store, truth: TruePipeline, seed: int) -> Calibration:
    lives = generate(truth, np.random.default_rng(seed), DAYS)
    pipeline_id = await write_history(store, truth, lives, origin=ORIGIN, until=DAYS)
    async with store.read() as session:
        return await calibrate(
            session,
            pipeline_id=pipeline_id,
            horizon_days=60,
            as_of=ORIGIN + timedelta(days=DAYS),
            segments=True,
            time_families=False,
        )


async def test_calibration_recovers_the_conversions_of_each_source(store: Store) -> None:
    result = await _calibrate(store, TRUTH, 11)
    model = result.model
    by_source = {segment.source: segment for segment in model.segments}
    assert set(by_source) == {source.name for source in SOURCES}
    for source in SOURCES:
        segment = by_source[source.name]
        assert segment.owner is None  # the truth has no owners: one segment per source
        assert abs(segment.share - source.share) < Z * math.sqrt(source.share * (1 - source.share) / 1300)
        assert segment.conversions is not None
        for stage, (conversion, p) in enumerate(zip(segment.conversions, TRUTH.conversions, strict=True)):
            expected = min(p * source.conversion_factor, 0.98)
            decided = conversion.alpha + conversion.beta  # type: ignore[union-attr]
            sd = math.sqrt(expected * (1 - expected) / decided)
            assert abs(conversion.mean - expected) < Z * sd, (source.name, stage)
    # Open leads keep their source.
    assert all(cohort.segment in {s.name for s in model.segments} for cohort in model.open_leads)
    again = from_toml(model.to_toml())
    assert again == model
    shifted = shift_source(model, "cold outreach", "referral", 0.2)
    assert shifted.win_probability > model.win_probability


async def test_reps_are_pooled_and_a_rep_can_leave(store: Store) -> None:
    truth = TruePipeline(
        conversions=(0.5,),
        mean_days=(5.0,),
        arrivals_per_day=6.0,
        deal_mean=1_000.0,
        deal_sd=300.0,
        sources=(TrueSource("web", 1.0, 1.0),),
        rep_strengths=(0.5, 1.5),
    )
    result = await _calibrate(store, truth, 12)
    model = result.model
    owners = {segment.owner: segment for segment in model.segments if segment.owner}
    assert len(owners) == 2
    weak, strong = sorted(owners.values(), key=lambda s: s.conversions[0].mean)  # type: ignore[index]
    assert weak.conversions is not None
    assert strong.conversions is not None
    # Each rep near their own rate (0.25 and 0.75): a pooled estimate sits between raw rate and pool.
    assert weak.conversions[0].mean < 0.4 < 0.6 < strong.conversions[0].mean
    assert abs(weak.share - 0.5) < 0.1
    gone = without_owner(model, weak.owner or "")
    assert gone.win_probability > model.win_probability
    assert all(c.segment != weak.name for c in gone.open_leads)


def test_export_model_with_segments_writes_toml_that_pipesim_reads(
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
    argv = ["export-model", "--database-url", database_url, "--pipeline", "Fixture", "--segments"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "# segment " in out
    model = from_toml(out)
    assert model.segments
    assert math.isclose(sum(segment.share for segment in model.segments), 1.0)
    assert sum(cohort.count for cohort in model.open_leads) == 4
    assert all(cohort.segment is not None for cohort in model.open_leads)
    assert forecast(model, trials=200, seed=1).revenue_existing.mean > 0  # runs as exported


def test_a_leads_odds_use_its_segment() -> None:
    """Odds by segment: the (source, owner) cell, else the source's owner-less cell, else the stages'."""
    from pipegraph.services.forecasting.lead_odds import win_probability
    from pipesim import Arrivals, Fixed, FixedProbability, Model, Segment, Stage

    stages = (Stage("a", FixedProbability(0.5), Fixed(1.0)), Stage("b", FixedProbability(0.4), Fixed(1.0)))
    cells = (
        Segment("web / ann", 0.5, (FixedProbability(0.9), FixedProbability(0.8)), None, "web", "ann"),
        Segment("web", 0.5, (FixedProbability(0.6), FixedProbability(0.5)), None, "web"),
    )
    model = Model(stages, Fixed(1.0), Arrivals.batch(0), 30.0, segments=cells)
    assert win_probability(model, "a", 0.0, 30, "web", "ann") == pytest.approx(0.72)
    assert win_probability(model, "a", 0.0, 30, "web", "bob") == pytest.approx(0.30)
    assert win_probability(model, "b", 0.0, 30, "web", "ann") == pytest.approx(0.8)
    assert win_probability(model, "a", 0.0, 30, "phone", "ann") == pytest.approx(0.20)
    assert win_probability(model, "a", 0.0, 1.5, "web", "ann") == 0.0  # two days of stages left
