"""The dashboard tells the truth: re-read after the server comes back, filtered totals from the server,
a failed filter never shown as applied, formatted numbers, partial weeks said to be partial, and a
VIEWER's refused move explained. Debian's Chromium against ``pipegraph serve``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

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
    seed_database,
    serve,
    viewer_key,
)
from server_support import free_port

COLUMN_TOTALS = """query($f: LeadFilter!) { leads(filter: $f, first: 1) { totalCount totalValue } }"""


def signed_in_tab(browser: BrowserContext, key: str) -> Page:
    tab = browser.new_page()
    tab.add_init_script(f"sessionStorage.setItem('pipegraph.apiKey', {json.dumps(key)})")
    return tab


def test_filtered_columns_show_the_servers_count_and_total(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    owner_name = page.locator(".card-owner").first.inner_text()
    page.select_option("#filter-owner", label=owner_name)
    owner_id = page.locator("#filter-owner").input_value()
    expect(page.locator("#board")).to_have_attribute("data-ready", "true")
    for stage in first_pipeline(dashboard)["stages"]:
        status = "WON" if stage["isPostSale"] else "OPEN"
        expected = dashboard.graphql(
            COLUMN_TOTALS, f={"stageIds": [stage["id"]], "statuses": [status], "ownerIds": [owner_id]}
        )["leads"]
        head = column(page, stage["id"])
        expect(head.locator(".column-count")).to_have_text(f"{expected['totalCount']:,}")
        # The whole column's value, not the loaded cards' ("$515,746+").
        expect(head.locator(".column-total")).to_have_text(money_text(expected["totalValue"]))


def test_a_filter_that_fails_is_not_shown_as_applied(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    before = page.locator(".column-count").all_inner_texts()

    def fail_columns(route: Route) -> None:
        if "BoardColumn" in (route.request.post_data or ""):
            route.abort()
        else:
            route.continue_()

    page.route("**/graphql", fail_columns)
    page.click("#filter-stalled")
    expect(page.locator("#notice")).to_contain_text("Could not apply the filter")
    expect(page.locator("#notice")).to_contain_text("keeps the filter it had")
    expect(page.locator("#filter-stalled")).not_to_be_checked()
    page.unroute("**/graphql")
    expect(page.locator(".column-count")).to_have_text(before)


def test_after_the_server_comes_back_the_board_is_read_again(
    browser: BrowserContext, tmp_path_factory: Any
) -> None:
    folder: Path = tmp_path_factory.mktemp("reconnect")
    database_url, key = seed_database(folder)
    port = free_port()
    tab = signed_in_tab(browser, key)
    try:
        with serve(folder, database_url, key, port=port) as first:
            open_board(tab, first)
            stages = first_pipeline(first)["stages"]
            index = busiest(stages)
            source, target = stages[index], stages[index + 1]
            card = column(tab, source["id"]).locator(".card").first
            lead_id = card.get_attribute("data-lead-id")
            version = int(card.get_attribute("data-version") or "0")
        expect(tab.locator("#live-status")).not_to_have_attribute("data-status", "live")

        # While it is away: a filter fails (and is put back), and another server moves a lead.
        tab.click("#filter-stalled")  # put back at once: check() would object
        expect(tab.locator("#notice")).to_contain_text("cannot be reached")
        expect(tab.locator("#filter-stalled")).not_to_be_checked()
        with serve(folder, database_url, key) as other:
            moved = other.graphql(
                MOVE, input={"leadId": lead_id, "toStageId": target["id"], "expectedVersion": version}
            )["moveLead"]
            assert moved["userErrors"] == []

        with serve(folder, database_url, key, port=port) as again:
            expect(tab.locator("#live-status")).to_have_attribute("data-status", "live", timeout=40_000)
            expect(card_in(tab, target["id"], lead_id)).to_be_visible()
            expect(card_in(tab, source["id"], lead_id)).to_have_count(0)
            expect(tab.locator("#notice")).to_be_hidden()
            after = {stage["id"]: stage for stage in first_pipeline(again)["stages"]}
            for stage_id in (source["id"], target["id"]):
                expect(column(tab, stage_id).locator(".column-count")).to_have_text(
                    f"{after[stage_id]['openCount']:,}"
                )
            screenshot(tab, "board-after-reconnect")
    finally:
        tab.close()


def test_a_viewers_refused_move_says_why_without_internal_ids(
    browser: BrowserContext, dashboard: Dashboard, seeded: tuple[Path, str, str]
) -> None:
    tab = signed_in_tab(browser, viewer_key(seeded[1]))
    try:
        open_board(tab, dashboard)
        expect(tab.locator("#viewer")).to_contain_text("(viewer)")
        card = tab.locator(".card").first
        lead_id = card.get_attribute("data-lead-id")
        card.locator(".move-to").click()
        tab.click("#move-confirm")
        notice = tab.locator("#notice")
        expect(notice).to_contain_text("Could not move")
        expect(notice).to_contain_text("VIEWER")
        expect(notice).to_contain_text("may read leads but not change them")
        expect(notice).not_to_contain_text("REP")
        assert lead_id is not None
        assert re.search(r"lead \d+", notice.inner_text()) is None
    finally:
        tab.close()


def test_metrics_numbers_are_formatted_and_partial_weeks_are_marked(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.base_url}/#metrics")
    expect(page.locator("#metrics")).to_have_attribute("data-ready", "true")
    summary = page.locator(".bottleneck-summary")
    if summary.count():
        # Money with its currency and separators, never a bare "253501.87".
        expect(summary).to_contain_text(re.compile(r"\$[\d,]+ of expected revenue at risk"))
        assert re.search(r"(?<![\d,.])\d{4,}", summary.inner_text()) is None, summary.inner_text()
    expect(page.locator("#trend polyline.full")).to_have_count(3)
    # A 90-day window never starts and ends on week boundaries: both ends are partial and drawn dashed.
    expect(page.locator("#trend polyline.partial")).to_have_count(6)
    expect(page.locator("#trend figcaption")).to_contain_text("days in the window")
    # The time-in-stage values start after the target tick, never over it.
    for bar in page.locator("#time-in-stage .bar").all():
        tick = bar.locator("line.marker")
        if tick.count():
            tick_box, text_box = tick.bounding_box(), bar.locator("text.value").bounding_box()
            assert tick_box is not None
            assert text_box is not None
            assert text_box["x"] >= tick_box["x"] + tick_box["width"]
    screenshot(page, "metrics-formatted")


def test_column_counts_use_thousands_separators(page: Page, dashboard: Dashboard) -> None:
    def many(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        if "BoardPipeline" in (route.request.post_data or ""):
            for stage in body["data"]["pipeline"]["stages"]:
                stage["openCount"], stage["openValue"] = 1234567, str(Decimal("15998850.27"))
                stage["wonCount"] = 1234567
        route.fulfill(response=response, json=body)

    page.route("**/graphql", many)
    open_board(page, dashboard)
    expect(page.locator(".column-count").first).to_have_text("1,234,567")
    expect(page.locator(".column-total").first).to_have_text("$15,998,850")
