"""The dashboard in a real browser: Debian's Chromium under Playwright against ``pipegraph serve``.

Every figure the tests read from the page is compared with what the API answers. Screenshots of each
view go to the artefacts folder (see ``dashboard_support.artifacts_dir``) for a reviewer.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Page, Route, expect

from dashboard_support import (
    MOVE,
    Dashboard,
    busiest,
    card_in,
    column,
    first_pipeline,
    money_text,
    open_board,
    screenshot,
    serve,
)

LEAD_QUERY = "query($id: ID!) { lead(id: $id) { version status lostReason company stage { id name } } }"
UPDATE = """mutation($input: UpdateLeadInput!) { updateLead(input: $input) {
    lead { version } userErrors { code message } } }"""


def board_with_a_card(page: Page, dashboard: Dashboard, *, nth: int = 0) -> tuple[Any, Any, Any]:
    """Open the board; return the busiest selling stage, the stage after it and a card of the first."""
    open_board(page, dashboard)
    stages = first_pipeline(dashboard)["stages"]
    index = busiest(stages)
    source, target = stages[index], stages[index + 1]
    return source, target, column(page, source["id"]).locator(".card").nth(nth)


def card_identity(card: Any) -> tuple[str, int]:
    lead_id = card.get_attribute("data-lead-id")
    assert lead_id
    return lead_id, int(card.get_attribute("data-version") or "0")


def lead(dashboard: Dashboard, lead_id: str) -> dict[str, Any]:
    found: dict[str, Any] = dashboard.graphql(LEAD_QUERY, id=lead_id)["lead"]
    return found


def test_serve_prints_the_dashboard_url_and_serves_its_files(dashboard: Dashboard) -> None:
    assert f"dashboard at {dashboard.base_url}/" in dashboard.log.read_text()
    page = httpx.get(f"{dashboard.base_url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="((?:js/|app\.css)[^"]*)"', page.text)
    assert "js/main.js" in assets
    for asset in [*assets, "js/board.js", "js/graphql.js"]:
        response = httpx.get(f"{dashboard.base_url}/{asset}")
        assert response.status_code == 200, asset
        # Module scripts only run when served with a JavaScript type.
        expected = "text/css" if asset.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(expected), asset


def test_board_asks_for_a_key_then_shows_columns_with_counts_and_totals(
    browser: BrowserContext, dashboard: Dashboard
) -> None:
    tab = browser.new_page()
    try:
        tab.goto(f"{dashboard.base_url}/")
        expect(tab.locator("#key-dialog")).to_be_visible()
        tab.fill("#api-key", "pgk_not-a-key")
        tab.press("#api-key", "Enter")
        # The message is inside the dialog (outside, it would sit under the backdrop).
        expect(tab.locator("#key-dialog #key-error")).to_contain_text("not accepted")
        expect(tab.locator("#api-key")).to_have_attribute("type", "password")
        tab.fill("#api-key", dashboard.key)
        tab.press("#api-key", "Enter")
        expect(tab.locator("#board")).to_have_attribute("data-ready", "true")

        stages = first_pipeline(dashboard)["stages"]
        expect(tab.locator(".column h3")).to_have_text([stage["name"] for stage in stages])
        for stage in stages:
            count, total = ("wonCount", "wonValue") if stage["isPostSale"] else ("openCount", "openValue")
            expect(column(tab, stage["id"]).locator(".column-count")).to_have_text(str(stage[count]))
            expect(column(tab, stage["id"]).locator(".column-total")).to_have_text(money_text(stage[total]))
        assert tab.locator(".card").count() > 0
        assert tab.locator(".card.stalled .stalled-badge").count() > 0
        screenshot(tab, "board")
    finally:
        tab.close()


def test_open_mode_needs_no_key(seeded: tuple[Path, str, str], browser: BrowserContext) -> None:
    with serve(*seeded, "--open") as open_server:
        tab = browser.new_page()
        try:
            tab.goto(f"{open_server.base_url}/")
            expect(tab.locator("#board")).to_have_attribute("data-ready", "true")
            expect(tab.locator("#key-dialog")).to_be_hidden()
            expect(tab.locator("#viewer")).to_contain_text("(admin)")
        finally:
            tab.close()


def test_filters_narrow_the_columns_to_matching_leads(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    owner_name = page.locator(".card-owner").first.inner_text()
    page.select_option("#filter-owner", label=owner_name)
    owner_id = page.locator("#filter-owner").input_value()
    expect(page.locator("#board")).to_have_attribute("data-ready", "true")

    pipeline = first_pipeline(dashboard)
    for stage in pipeline["stages"]:
        status = "WON" if stage["isPostSale"] else "OPEN"
        expected = dashboard.graphql(
            "query($f: LeadFilter!) { leads(filter: $f, first: 1) { totalCount } }",
            f={"stageIds": [stage["id"]], "statuses": [status], "ownerIds": [owner_id]},
        )["leads"]["totalCount"]
        expect(column(page, stage["id"]).locator(".column-count")).to_have_text(str(expected))
    owners = page.locator(".card-owner").all_inner_texts()
    assert owners, "the filter left no card to check"
    assert set(owners) == {owner_name}


def test_dragging_a_card_moves_the_lead_through_the_api(page: Page, dashboard: Dashboard) -> None:
    source, target, card = board_with_a_card(page, dashboard)
    lead_id, version = card_identity(card)

    card.drag_to(column(page, target["id"]).locator(".cards"))

    moved = card_in(page, target["id"], lead_id)
    expect(moved).to_have_attribute("data-version", str(version + 1))
    assert lead(dashboard, lead_id)["stage"]["id"] == target["id"]
    after = {stage["id"]: stage for stage in first_pipeline(dashboard)["stages"]}
    assert after[target["id"]]["openCount"] == target["openCount"] + 1
    expect(column(page, target["id"]).locator(".column-count")).to_have_text(str(target["openCount"] + 1))
    expect(column(page, source["id"]).locator(".column-count")).to_have_text(str(source["openCount"] - 1))


def test_another_clients_move_appears_without_reload(page: Page, dashboard: Dashboard) -> None:
    source, target, card = board_with_a_card(page, dashboard)
    lead_id, version = card_identity(card)

    payload = dashboard.graphql(
        MOVE, input={"leadId": lead_id, "toStageId": target["id"], "expectedVersion": version}
    )["moveLead"]
    assert payload["userErrors"] == []

    expect(card_in(page, target["id"], lead_id)).to_be_visible()
    expect(card_in(page, source["id"], lead_id)).to_have_count(0)
    expect(column(page, target["id"]).locator(".column-count")).to_have_text(str(target["openCount"] + 1))
    screenshot(page, "board-live-update")


def test_a_conflicting_move_returns_the_card_and_says_why(page: Page, dashboard: Dashboard) -> None:
    source, target, card = board_with_a_card(page, dashboard, nth=1)
    lead_id, version = card_identity(card)

    def change_first(route: Route) -> None:
        # Another user edits the lead while this move is on its way: the move carries a stale version.
        if "moveLead" in (route.request.post_data or ""):
            update = {"leadId": lead_id, "expectedVersion": version, "company": "Changed Elsewhere Ltd"}
            assert dashboard.graphql(UPDATE, input=update)["updateLead"]["userErrors"] == []
        route.continue_()

    page.route("**/graphql", change_first)
    card.drag_to(column(page, target["id"]).locator(".cards"))

    expect(page.locator("#notice")).to_contain_text("Could not move")
    expect(page.locator("#notice")).to_contain_text(f"is at version {version + 1}, not {version}")
    back = card_in(page, source["id"], lead_id)
    expect(back).to_be_visible()
    expect(back.locator(".card-company")).to_have_text("Changed Elsewhere Ltd")
    expect(back).to_have_attribute("data-version", str(version + 1))
    assert lead(dashboard, lead_id)["stage"]["id"] == source["id"]
    screenshot(page, "board-conflict")


def test_a_refused_move_returns_the_card_with_the_servers_reason(page: Page, dashboard: Dashboard) -> None:
    source, _, card = board_with_a_card(page, dashboard)
    lead_id, version = card_identity(card)
    post_sale = next(stage for stage in first_pipeline(dashboard)["stages"] if stage["isPostSale"])

    card.locator(".move-to").click()
    page.select_option("#move-stage", post_sale["id"])
    page.click("#move-confirm")

    expect(page.locator("#notice")).to_contain_text("Could not move")
    expect(page.locator("#notice")).to_contain_text("post-sale")
    expect(card_in(page, source["id"], lead_id)).to_have_attribute("data-version", str(version))
    assert lead(dashboard, lead_id)["stage"]["id"] == source["id"]


def test_move_to_works_from_the_keyboard(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    stages = first_pipeline(dashboard)["stages"]
    index = busiest(stages, followers=2)
    source = stages[index]
    card = column(page, source["id"]).locator(".card").first
    lead_id = card.get_attribute("data-lead-id")
    assert lead_id

    card.locator(".move-to").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#move-dialog")).to_be_visible()
    expect(page.locator("#move-stage")).to_be_focused()
    page.keyboard.press("ArrowDown")  # the next stage is preselected: this picks the one after it
    target_id = page.locator("#move-stage").input_value()
    assert target_id == stages[index + 2]["id"]
    page.keyboard.press("Tab")  # Cancel
    page.keyboard.press("Tab")  # Move
    page.keyboard.press("Enter")

    moved = card_in(page, target_id, lead_id)
    expect(moved).to_be_visible()
    expect(moved.locator(".move-to")).to_be_focused()
    assert lead(dashboard, lead_id)["stage"]["id"] == target_id


def test_marking_a_lead_lost_asks_for_a_reason_and_closes_it(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    stages = first_pipeline(dashboard)["stages"]
    source = stages[busiest(stages)]
    card = column(page, source["id"]).locator(".card").last
    lead_id = card.get_attribute("data-lead-id")
    assert lead_id

    card.locator("button.lost").click()
    expect(page.locator("#close-reason")).to_have_attribute("required", "")
    page.fill("#close-reason", "Chose a competitor")
    page.click("#close-confirm")

    expect(card_in(page, source["id"], lead_id)).to_have_count(0)
    closed = lead(dashboard, lead_id)
    assert (closed["status"], closed["lostReason"]) == ("LOST", "Chose a competitor")
    expect(column(page, source["id"]).locator(".column-count")).to_have_text(str(source["openCount"] - 1))


def test_lead_panel_shows_history_and_logs_an_activity(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    stages = first_pipeline(dashboard)["stages"]
    card = column(page, stages[busiest(stages)]["id"]).locator(".card").first
    title = card.locator(".card-title").inner_text()
    card.locator(".card-title").click()

    panel = page.locator("#lead-panel")
    expect(panel.locator("h3").first).to_have_text(title)
    expect(panel.locator(".bant li")).to_have_count(4)
    assert panel.locator(".timeline li").count() >= 1
    panel.locator("input[name=subject]").fill("Send the revised proposal")
    panel.locator(".log-activity button").click()
    expect(panel.locator(".activities")).to_contain_text("Send the revised proposal")
    screenshot(page, "lead-panel")


def test_metrics_view_shows_the_funnel_and_the_bottleneck(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.base_url}/#metrics")
    expect(page.locator("#metrics")).to_have_attribute("data-ready", "true")
    pipeline = first_pipeline(dashboard)
    now = datetime.now(UTC)
    metrics = dashboard.graphql(
        """query($id: ID!, $from: DateTime!, $to: DateTime!) { pipelineMetrics(pipelineId: $id, from: $from,
           to: $to) { stages { name isPostSale entered } bottleneck { name } } }""",
        id=pipeline["id"],
        **{"from": (now - timedelta(days=90)).isoformat(), "to": now.isoformat()},
    )["pipelineMetrics"]

    selling = [stage for stage in metrics["stages"] if not stage["isPostSale"]]
    bars = page.locator("#funnel .bar")
    expect(bars).to_have_count(len(selling))
    for index, stage in enumerate(selling):
        expect(bars.nth(index)).to_contain_text(f"{stage['entered']} in ·")
    assert metrics["bottleneck"] is not None
    expect(page.locator(".bottleneck-name")).to_have_text(metrics["bottleneck"]["name"])
    expect(page.locator("#time-in-stage .bar")).to_have_count(len(selling))
    expect(page.locator("#trend polyline.full")).to_have_count(3)
    assert page.locator("#by-source tbody tr").count() >= 2
    screenshot(page, "metrics")


def test_forecast_view_shows_the_apis_percentiles_and_reruns_a_what_if(
    page: Page, dashboard: Dashboard
) -> None:
    with page.expect_response(lambda r: "forecast(input" in (r.request.post_data or "")) as answered:
        page.goto(f"{dashboard.base_url}/#forecast")
    forecast = answered.value.json()["data"]["forecast"]
    expect(page.locator("#forecast")).to_have_attribute("data-ready", "true")

    revenue = forecast["revenue"]
    assert float(revenue["p10"]) <= float(revenue["p50"]) <= float(revenue["p90"])
    for name in ("p10", "p50", "p90"):
        expect(page.locator(f"#forecast-{name} .tile-value")).to_have_text(money_text(revenue[name]))
    goal = page.locator("#forecast-goal").input_value()
    assert forecast["goal"] is not None
    assert float(forecast["goal"]) == float(goal)
    # Number.toFixed rounds the exact binary value half up (P(goal) of 2,000 trials often ends in 5).
    p_goal = Decimal(forecast["pGoal"]["value"] * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    expect(page.locator("#forecast-pgoal .tile-value")).to_contain_text(f"{p_goal}%")
    expect(page.locator("#forecast-histogram [data-marker]")).to_have_count(4)
    expect(page.locator("#leads-needed .leads-naive")).not_to_be_empty()
    screenshot(page, "forecast")

    conversion = int(page.locator("#whatif-conversion").input_value())
    page.fill("#whatif-conversion", str(min(conversion + 15, 100)))
    page.click("#whatif-form button[type=submit]")
    expect(page.locator("#whatif")).to_have_attribute("data-ready", "true")
    expect(page.locator("#whatif-result h3")).to_contain_text(re.compile("conversion", re.IGNORECASE))
    screenshot(page, "forecast-what-if")


def test_capacity_view_shows_the_apis_curve_utilisation_and_waits(page: Page, dashboard: Dashboard) -> None:
    with page.expect_response(lambda r: "capacityPlan(input" in (r.request.post_data or "")) as answered:
        page.goto(f"{dashboard.base_url}/#capacity")
    plan = answered.value.json()["data"]["capacityPlan"]
    expect(page.locator("#capacity")).to_have_attribute("data-ready", "true")

    rows = plan["rows"]
    assert [row["repsAdded"] for row in rows] == list(range(5))  # the form's default: up to 4 added
    table = page.locator("#capacity-table tbody tr")
    expect(table).to_have_count(len(rows))
    for index, row in enumerate(rows):
        line = table.nth(index)
        expect(line.locator(".revenue-p50")).to_have_text(money_text(row["revenue"]["p50"]))
        if row["gain"] is not None:
            expect(line.locator(".gain")).to_have_text(money_text(row["gain"]))
    # The curve has the three percentiles, one point per rep count; a bar of utilisation per row.
    expect(page.locator("#capacity-curve polyline.series")).to_have_count(3)
    points = page.locator("#capacity-curve polyline.p50").get_attribute("points") or ""
    assert len(points.split()) == len(rows)
    expect(page.locator("#capacity-utilisation .bar")).to_have_count(len(rows))
    first = rows[0]["utilisation"]["value"]
    expect(page.locator("#capacity-utilisation .bar .value").first).to_have_text(f"{round(first * 100)}%")
    expect(page.locator("#capacity-summary")).to_contain_text(plan["summary"])
    screenshot(page, "capacity")

    page.fill("#capacity-form input[name=added]", "2")
    with page.expect_response(lambda r: "capacityPlan(input" in (r.request.post_data or "")):
        page.click("#capacity-run")
    expect(page.locator("#capacity")).to_have_attribute("data-ready", "true")
    expect(page.locator("#capacity-table tbody tr")).to_have_count(3)
