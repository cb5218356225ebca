from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pipesim.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"
SMB = str(EXAMPLES / "outbound_smb.toml")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_forecast_prints_a_table_with_the_percentile_convention() -> None:
    code, out, _ = run("forecast", SMB, "--trials", "2000", "--goal", "500000")
    assert code == 0
    assert "P10" in out
    assert "P(revenue >= 500,000)" in out
    assert "P10 is the 10th percentile, a pessimistic outcome." in out


def test_forecast_json_is_machine_readable_and_seeded() -> None:
    first = json.loads(run("forecast", SMB, "--trials", "1500", "--seed", "4", "--json")[1])
    again = json.loads(run("forecast", SMB, "--trials", "1500", "--seed", "4", "--json")[1])
    assert first == again
    assert first["engine"] == "vectorized"
    assert first["trials"] == 1500


def test_leads_needed_shows_the_reverse_funnel_beside_the_answer() -> None:
    code, out, _ = run("leads-needed", SMB, "--goal", "500000", "--confidence", "0.9", "--trials", "2000")
    assert code == 0
    assert "reverse funnel      667" in out


def test_compare_and_sensitivity_run(tmp_path: Path) -> None:
    variant = tmp_path / "variant.toml"
    variant.write_text(Path(SMB).read_text().replace("conversion = 0.4", "conversion = 0.45"))
    code, out, _ = run("compare", SMB, str(variant), "--trials", "1000", "--json")
    assert code == 0
    assert json.loads(out)["difference"]["mean"] > 0
    code, out, _ = run("sensitivity", SMB, "--trials", "500", "--goal", "500000")
    assert code == 0
    assert "bottleneck: Proposal" in out


def test_invalid_model_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(SMB).read_text().replace("conversion = 0.6", "conversion = 1.6"))
    code, out, err = run("forecast", str(bad))
    assert code == 2
    assert out == ""
    assert "stages[1].conversion: must be a probability in [0, 1]" in err


def test_plot_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "revenue.png"
    assert run("forecast", SMB, "--trials", "500", "--plot", str(target))[0] == 0
    assert target.read_bytes()[:4] == b"\x89PNG"


def test_forecast_plot_has_the_fan_chart_with_the_goal(tmp_path: Path) -> None:
    from matplotlib import image

    with_fan = tmp_path / "fan.png"
    assert run("forecast", SMB, "--trials", "500", "--goal", "100000", "--plot", str(with_fan))[0] == 0
    # The fan sits beside the histogram: a figure twice as wide as a single chart's.
    height, width = image.imread(str(with_fan)).shape[:2]
    assert width / height > 2.5


def test_every_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["forecast", "--help"])
    text = capsys.readouterr().out
    for option in ("--trials", "--seed", "--engine", "--workers", "--scheduler", "--json", "--plot"):
        assert option in text
