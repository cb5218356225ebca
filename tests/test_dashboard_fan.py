"""The forecast's fan chart in a real browser: cumulative revenue by week, P10–P90 band, P50 line and goal
line, drawn from the API's ``revenueByWeek``; axe-core finds nothing serious at desktop and phone size,
and the chart fits a phone's width. Screenshots go to the artefacts folder for a reviewer.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from dashboard_support import DESKTOP, PHONE, Dashboard, artifacts_dir, serious_axe_violations

SIZES = {"desktop": DESKTOP, "phone": PHONE}


def _open_forecast(page: Page, dashboard: Dashboard) -> dict[str, Any]:
    with page.expect_response(lambda r: "forecast(input" in (r.request.post_data or "")) as answered:
        page.goto(f"{dashboard.base_url}/#forecast")
    expect(page.locator("#forecast")).to_have_attribute("data-ready", "true")
    forecast: dict[str, Any] = answered.value.json()["data"]["forecast"]
    return forecast


@pytest.mark.parametrize("size", SIZES)
def test_fan_chart_draws_the_weekly_bands_and_the_goal(page: Page, dashboard: Dashboard, size: str) -> None:
    page.set_viewport_size(SIZES[size])
    forecast = _open_forecast(page, dashboard)
    bands = forecast["revenueByWeek"]
    # One band per week's end and one at the horizon; the last is the horizon's revenue itself.
    assert len(bands) == -(-int(forecast["horizonDays"]) // 7)
    assert bands[-1]["day"] == forecast["horizonDays"]
    for name in ("p10", "p50", "p90"):
        assert float(bands[-1][name]) == pytest.approx(float(forecast["revenue"][name]), abs=0.01)
    assert all(float(b["p10"]) <= float(b["p50"]) <= float(b["p90"]) for b in bands)
    assert [float(b["p50"]) for b in bands] == sorted(float(b["p50"]) for b in bands)

    fan = page.locator("#forecast-fan svg")
    points = fan.locator(".fan-median").get_attribute("points") or ""
    assert len(points.split()) == len(bands) + 1  # day 0, then each band
    expect(fan.locator("[data-marker=Goal]")).to_have_count(1)
    expect(fan.locator(".fan-label")).to_have_count(3)

    box = page.locator("#forecast-fan").bounding_box()
    viewport = page.viewport_size
    assert box is not None
    assert viewport is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= viewport["width"]
    assert serious_axe_violations(page) == []
    page.locator("#forecast-fan").screenshot(path=str(artifacts_dir() / f"forecast-fan-{size}.png"))
