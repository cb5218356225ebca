"""Segments in the model: the mixture the engines simulate, the file format, what-if by segment."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipesim import (
    Arrivals,
    BetaProbability,
    Exponential,
    Fixed,
    FixedProbability,
    LogNormal,
    Model,
    ModelError,
    OpenLeads,
    QuestionError,
    Segment,
    Stage,
    compare,
    from_mapping,
    from_toml,
    simulate,
)
from pipesim.segments import shift_source, without_owner

STAGES = (
    Stage("qualify", FixedProbability(0.5), Exponential(4.0)),
    Stage("propose", FixedProbability(0.4), Exponential(6.0)),
)
# Per segment: conversions, deal size, share. Pool: 0.5 · 0.4 = 0.2.
SEGMENTS = (
    Segment(
        "referral/ann", 0.2, (FixedProbability(0.8), FixedProbability(0.7)), Fixed(3000.0), "referral", "ann"
    ),
    Segment("cold/ann", 0.5, (FixedProbability(0.3), FixedProbability(0.2)), Fixed(1000.0), "cold", "ann"),
    Segment("cold/bob", 0.3, (FixedProbability(0.4), FixedProbability(0.1)), None, "cold", "bob"),
    Segment("cold", 0.0, None, None, "cold", None),
)


def segmented(leads: int = 400, *, open_leads: tuple[OpenLeads, ...] = ()) -> Model:
    return Model(
        stages=STAGES,
        deal_size=Fixed(2000.0),
        arrivals=Arrivals.batch(leads),
        horizon_days=1e9,  # every eventual win counts
        open_leads=open_leads,
        segments=SEGMENTS,
    )


def exact(model: Model) -> tuple[float, float]:
    """Mean wins and revenue of new leads plus open cohorts: the exact mixture."""
    wins = revenue = 0.0
    count = model.arrivals.count
    for segment in model.segments:
        p = model.segment_win_probability(segment)
        wins += count * segment.share * p
        revenue += count * segment.share * p * (segment.deal_size or model.deal_size).mean
    for cohort in model.open_leads:
        start = model.stage_index(cohort.stage)
        if cohort.segment is None:
            p = math.prod(stage.conversion.mean for stage in model.stages[start:])
            deal = model.deal_size.mean
        else:
            segment = model.segments[model.segment_index(cohort.segment)]
            p, deal = (
                model.segment_win_probability(segment, start),
                (segment.deal_size or model.deal_size).mean,
            )
        wins += cohort.count * p
        revenue += cohort.count * p * (deal if cohort.value is None else cohort.value)
    return wins, revenue


COHORTS = (
    OpenLeads("propose", 50, 3.0, segment="referral/ann"),
    OpenLeads("qualify", 40, 1.0, segment="cold/bob"),
    OpenLeads("propose", 30, 2.0),
)


@pytest.mark.parametrize(("engine", "trials"), [("vectorized", 4000), ("des", 200)])
def test_segment_model_wins_equal_the_exact_mixture_mean(engine: str, trials: int) -> None:
    model = segmented(open_leads=COHORTS)
    _, out = simulate(model, trials, seed=3, engine=engine)
    wins, revenue = exact(model)
    assert abs(out.wins.mean() - wins) < 4 * out.wins.std(ddof=1) / math.sqrt(trials)
    assert abs(out.revenue.mean() - revenue) < 4 * out.revenue.std(ddof=1) / math.sqrt(trials)
    assert math.isclose(model.win_probability, 0.2 * 0.56 + 0.5 * 0.06 + 0.3 * 0.04)


def test_beta_segment_conversions_carry_their_uncertainty() -> None:
    """Beta conversions per segment: the mean is the mixture of products of Beta means."""
    beta = Segment("b", 0.6, (BetaProbability(8, 2), BetaProbability(3, 7)), LogNormal(500, 200), "web")
    instant = tuple(Stage(stage.name, stage.conversion, Fixed(0.0)) for stage in STAGES)
    model = Model(
        stages=instant,
        deal_size=Fixed(100.0),
        arrivals=Arrivals.poisson(2.0),
        horizon_days=100.0,
        segments=(beta, Segment("rest", 0.4, None, None, "phone")),
    )
    trials = 4000
    _, out = simulate(model, trials, seed=5, engine="vectorized")
    leads = 2.0 * 100.0
    expected = leads * (0.6 * 0.8 * 0.3 + 0.4 * 0.2)
    assert abs(out.wins.mean() - expected) < 4 * out.wins.std(ddof=1) / math.sqrt(trials)
    expected_revenue = leads * (0.6 * 0.8 * 0.3 * 500 + 0.4 * 0.2 * 100)
    assert abs(out.revenue.mean() - expected_revenue) < 4 * out.revenue.std(ddof=1) / math.sqrt(trials)


def test_a_model_without_segments_draws_what_it_drew_before() -> None:
    """Segments use streams of their own: a one-segment model with the stages' conversions and deal
    size has the same eventual wins per trial as the model without segments (its winners' rows carry
    one more column, so their times differ: the horizon here counts every win)."""
    plain = Model(stages=STAGES, deal_size=Fixed(2000.0), arrivals=Arrivals.batch(300), horizon_days=1e9)
    one = Model(
        stages=STAGES,
        deal_size=Fixed(2000.0),
        arrivals=Arrivals.batch(300),
        horizon_days=1e9,
        segments=(Segment("all", 1.0),),
    )
    _, a = simulate(plain, 2000, seed=9, engine="vectorized")
    _, b = simulate(one, 2000, seed=9, engine="vectorized")
    assert np.array_equal(a.wins, b.wins)


def test_toml_round_trip_of_a_segmented_model() -> None:
    model = segmented(open_leads=COHORTS)
    again = from_toml(model.to_toml())
    assert again == model
    assert 'segment = "referral/ann"' in model.to_toml()


@pytest.mark.parametrize(
    ("key", "value", "field", "message"),
    [
        ("share", 0.7, "segments", "shares must sum to 1"),
        ("share", -0.1, "segments[0].share", "must be >= 0"),
        ("conversions", [0.5], "segments[0].conversions", "one conversion per stage"),
        ("conversions", [0.5, 2.0], "segments[0].conversions[1]", "probability"),
        ("deal_size", {"dist": "exponential"}, "segments[0].deal_size.mean", "required"),
        ("colour", 1, "segments[0].colour", "unknown key"),
        ("name", "referral/ann", "segments[1].name", "duplicate segment name"),
    ],
)
def test_segment_errors_name_the_field(key: str, value: object, field: str, message: str) -> None:
    data = segmented().to_mapping()
    data["segments"][1 if key == "name" else 0][key] = value
    with pytest.raises(ModelError) as caught:
        from_mapping(data)
    assert any(issue.path == field and message in issue.message for issue in caught.value.issues), (
        caught.value
    )


def test_an_open_cohort_must_name_a_known_segment() -> None:
    with pytest.raises(ModelError) as caught:
        segmented(open_leads=(OpenLeads("qualify", 3, segment="nobody"),))
    assert caught.value.issues[0].path == "open_leads[0].segment"


def test_shifting_leads_between_sources_moves_the_result_as_the_mixture_says() -> None:
    base = segmented()
    variant = shift_source(base, "cold", "referral", 0.2)
    moved = 0.2 * 0.8  # cold's share is 0.8; referral has one segment
    assert math.isclose(variant.segments[0].share, 0.2 + moved)
    assert math.isclose(variant.segments[1].share, 0.5 * 0.8)
    _, exact_base = exact(base)
    _, exact_variant = exact(variant)
    trials = 3000
    result = compare(base, variant, trials, seed=4, engine="vectorized")
    se = result.difference.sd / math.sqrt(trials)
    assert abs(result.difference.mean - (exact_variant - exact_base)) < 4 * se
    assert result.difference.mean > 0


def test_a_rep_leaving_spreads_their_leads_and_pools_their_open_leads() -> None:
    base = segmented(open_leads=COHORTS)
    variant = without_owner(base, "bob")
    shares = {s.name: s.share for s in variant.segments}
    assert shares["cold/bob"] == 0.0
    assert math.isclose(shares["referral/ann"], 0.2 / 0.7)
    assert math.isclose(shares["cold/ann"], 0.5 / 0.7)
    assert variant.open_leads[1].segment == "cold"  # bob's cohort: the pool of its source
    _, exact_base = exact(base)
    _, exact_variant = exact(variant)
    trials = 3000
    result = compare(base, variant, trials, seed=6, engine="vectorized")
    se = result.difference.sd / math.sqrt(trials)
    assert abs(result.difference.mean - (exact_variant - exact_base)) < 4 * se


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda m: shift_source(m, "fax", "referral", 0.2), "from_source"),
        (lambda m: shift_source(m, "cold", "fax", 0.2), "to_source"),
        (lambda m: shift_source(m, "cold", "referral", 1.5), "fraction"),
        (lambda m: without_owner(m, "carol"), "owner"),
    ],
)
def test_what_if_by_segment_refuses_what_the_model_cannot_express(call: object, field: str) -> None:
    with pytest.raises(QuestionError, match=f"^{field}:"):
        call(segmented())  # type: ignore[operator]


def test_the_command_line_compares_by_segment(tmp_path: Path) -> None:
    from pipesim.cli import main

    path = tmp_path / "model.toml"
    path.write_text(segmented().to_toml(), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    argv = ["compare", str(path), "--shift-source", "cold", "referral", "0.2", "--trials", "500", "--json"]
    assert main(argv, out, err) == 0
    assert json.loads(out.getvalue())["difference"]["mean"] > 0
    out, err = io.StringIO(), io.StringIO()
    assert main(["compare", str(path), "--rep-leaves", "carol", "--trials", "50"], out, err) == 2
    assert "owner: unknown owner 'carol'" in err.getvalue()
    assert main(["compare", str(path), "--trials", "50"], out, err) == 2
