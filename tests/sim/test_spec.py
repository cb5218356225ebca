from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipesim import BetaProbability, Model, ModelError, OpenLeads, Reps, from_mapping, from_toml, load_model
from pipesim.spec import Stage

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.toml"))

VALID = {
    "horizon_days": 90,
    "deal_size": 1000,
    "arrivals": {"kind": "batch", "count": 10},
    "stages": [
        {"name": "a", "conversion": 0.5, "time_in_stage": {"dist": "weibull", "shape": 0.8, "scale": 3}},
        {
            "name": "b",
            "conversion": {"alpha": 2, "beta": 3},
            "time_in_stage": {"dist": "exponential", "mean": 4},
        },
        {"name": "c", "conversion": 0.5, "time_in_stage": {"dist": "gamma", "shape": 2, "scale": 1}},
    ],
}


def with_changes(**changes: object) -> dict[str, object]:
    copied: dict[str, object] = json.loads(json.dumps({**VALID, **changes}))
    return copied


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_every_example_loads_and_round_trips_through_toml(path: Path) -> None:
    model = load_model(path)
    assert from_toml(model.to_toml()) == model


def test_json_model_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(VALID))
    model = load_model(path)
    assert model.stage_names == ("a", "b", "c")
    assert model.stages[1].conversion == BetaProbability(2, 3)


def test_bad_value_is_reported_with_its_key_path() -> None:
    data = with_changes()
    data["stages"][2]["conversion"] = {"alpha": -1, "beta": 2}  # type: ignore[index]
    with pytest.raises(ModelError) as caught:
        from_mapping(data)
    assert [str(issue) for issue in caught.value.issues] == [
        "stages[2].conversion.alpha: must be > 0, got -1"
    ]


def test_every_problem_is_reported_at_once() -> None:
    data = with_changes(horizon_days=-5, arrivals={"kind": "weekly"}, colour="red")
    data["stages"][0]["time_in_stage"] = {"dist": "pareto"}  # type: ignore[index]
    with pytest.raises(ModelError) as caught:
        from_mapping(data, source="plan.toml")
    paths = {issue.path for issue in caught.value.issues}
    assert paths == {"horizon_days", "arrivals.kind", "colour", "stages[0].time_in_stage.dist"}
    assert str(caught.value).startswith("plan.toml: invalid model (4 problem(s))")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"open_leads": [{"stage": "nowhere", "count": 3}]}, "open_leads[0].stage"),
        ({"reps": {"count": 0}}, "reps.count"),
        ({"deal_size": {"dist": "triangular", "low": 5, "mode": 1, "high": 9}}, "deal_size"),
        ({"deal_size": {"dist": "empirical", "samples": [1, "x"]}}, "deal_size.samples[1]"),
        ({"stages": []}, "stages"),
        ({"deal_size": {"dist": "weibull", "shape": 2}}, "deal_size.scale"),
    ],
)
def test_invalid_parts_name_their_path(change: dict[str, object], path: str) -> None:
    with pytest.raises(ModelError) as caught:
        from_mapping(with_changes(**change))
    assert path in {issue.path for issue in caught.value.issues}


def test_invalid_toml_syntax_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="not valid TOML"):
        from_toml("horizon_days = = 3")


def test_model_built_in_code_is_checked_too() -> None:
    model = from_mapping(VALID)
    with pytest.raises(ModelError, match=r"stages\[0\].work"):
        model.replace_stage(0, work=model.deal_size)
    with pytest.raises(ModelError, match="duplicate stage name"):
        Model(
            stages=(model.stages[0], model.stages[0]),
            deal_size=model.deal_size,
            arrivals=model.arrivals,
            horizon_days=30,
        )


def test_code_built_model_with_open_leads_writes_back_to_toml() -> None:
    base = from_mapping(VALID)
    model = Model(
        stages=(*base.stages, Stage("d", BetaProbability(3, 1))),
        deal_size=base.deal_size,
        arrivals=base.arrivals,
        horizon_days=60,
        reps=Reps(2, 5),
        open_leads=(OpenLeads("c", 4, age_days=3.5, value=900.0),),
    )
    assert from_toml(model.to_toml()) == model
