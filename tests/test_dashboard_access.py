"""The dashboard for everyone: axe-core on every view and dialog, the keyboard paths, phone screens and
the forecast's busy state, in Debian's Chromium against ``pipegraph serve``.

Screenshots of each view at desktop and phone size go to the artefacts folder for a reviewer.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from dashboard_support import (
    DESKTOP,
    PHONE,
    Dashboard,
    busiest,
    column,
    first_pipeline,
    open_board,
    screenshot,
    serious_axe_violations,
)

SIZES = {"desktop": DESKTOP, "phone": PHONE}
VIEWS = ["board", "metrics", "forecast", "capacity", "imports"]
NARROWEST = 360  # the narrowest phone the layout promises to fit
PAGE_SIZE = 20  # cards a column loads at a time (board.js)
CREATE_LEAD = (
    """mutation($input: CreateLeadInput!) { createLead(input: $input) { userErrors { message } } }"""
)


def open_view(page: Page, dashboard: Dashboard, view: str) -> None:
    page.goto(f"{dashboard.base_url}/#{view}")
    expect(page.locator(f"#{view}")).to_have_attribute("data-ready", "true")


def assert_accessible(page: Page, where: str) -> None:
    violations = serious_axe_violations(page)
    assert violations == [], f"{where}: {violations}"


def page_width(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def inside_viewport(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    assert box is not None
    assert size is not None
    return (
        box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= size["width"]
        and (box["y"] + box["height"] <= size["height"])
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("view", VIEWS)
def test_every_view_has_no_serious_axe_violations(
    page: Page, dashboard: Dashboard, view: str, size: str
) -> None:
    page.set_viewport_size(SIZES[size])
    open_view(page, dashboard, view)
    assert_accessible(page, view)
    screenshot(page, f"{view}-{size}")


@pytest.mark.parametrize("size", SIZES)
def test_every_dialog_has_no_serious_axe_violations_and_fits_the_screen(
    page: Page, dashboard: Dashboard, size: str
) -> None:
    page.set_viewport_size(SIZES[size])
    open_board(page, dashboard)
    stages = first_pipeline(dashboard)["stages"]
    card = column(page, stages[busiest(stages)]["id"]).locator(".card").first

    card.locator(".move-to").click()
    expect(page.locator("#move-dialog")).to_be_visible()
    assert_accessible(page, "move dialog")
    for part in ("#move-dialog", "#move-confirm"):
        assert inside_viewport(page, part), part
    screenshot(page, f"move-dialog-{size}")
    page.keyboard.press("Escape")

    card.locator("button.lost").click()
    expect(page.locator("#close-dialog")).to_be_visible()
    assert_accessible(page, "close dialog")
    assert inside_viewport(page, "#close-confirm")
    page.keyboard.press("Escape")

    card.locator(".card-title").click()
    expect(page.locator("#lead-panel .timeline li").first).to_be_visible()
    assert_accessible(page, "lead panel")
    assert inside_viewport(page, "#lead-panel-close")
    screenshot(page, f"lead-panel-{size}")


def test_the_key_dialog_keeps_its_message_inside_and_hides_the_key(page: Page, dashboard: Dashboard) -> None:
    page.set_viewport_size(PHONE)
    page.add_init_script("sessionStorage.setItem('pipegraph.apiKey', 'pgk_not-a-key')")
    page.goto(f"{dashboard.base_url}/")
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator("#key-error")).to_contain_text("not accepted")
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#api-key")).to_have_attribute("type", "password")
    assert inside_viewport(page, "#key-save")
    assert_accessible(page, "key dialog")
    screenshot(page, "key-dialog-phone")
    page.fill("#api-key", dashboard.key)
    page.press("#api-key", "Enter")
    expect(page.locator("#board")).to_have_attribute("data-ready", "true")


@pytest.mark.parametrize("width", [NARROWEST, PHONE["width"]])
def test_every_view_fits_a_phone_without_sideways_scrolling(
    page: Page, dashboard: Dashboard, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": PHONE["height"]})
    for view in VIEWS:
        open_view(page, dashboard, view)
        assert page_width(page) <= width, view
        # Chart text is drawn at a size one can read (not a desktop drawing scaled down).
        heights = page.eval_on_selector_all(
            f"#view-{view} svg text", "nodes => nodes.map(node => node.getBoundingClientRect().height)"
        )
        assert all(height >= 11 for height in heights), (view, min(heights, default=None))
        # Every visible button, field and menu is a target of at least 24 by 24 pixels.
        small = page.eval_on_selector_all(
            f"#view-{view} button, #view-{view} select, #view-{view} input, .topbar select",
            """nodes => nodes.filter(node => node.offsetParent !== null)
                 .map(node => node.getBoundingClientRect())
                 .filter(box => box.width < 24 || box.height < 24).length""",
        )
        assert small == 0, view


def test_on_a_phone_the_stage_picker_brings_a_column_into_view(page: Page, dashboard: Dashboard) -> None:
    page.set_viewport_size(PHONE)
    open_board(page, dashboard)
    stages = first_pipeline(dashboard)["stages"]
    last = stages[-1]
    picker = page.locator(f'#stage-picker a[data-stage-id="{last["id"]}"]')
    count = last["wonCount"] if last["isPostSale"] else last["openCount"]
    expect(picker).to_have_text(f"{last['name']} ({count:,})")
    picker.click()
    heading = column(page, last["id"]).locator("h3")
    expect(heading).to_be_focused()
    expect(heading).to_be_in_viewport()


def test_enter_in_the_lost_reason_confirms_and_an_empty_reason_is_asked_for(
    page: Page, dashboard: Dashboard
) -> None:
    open_board(page, dashboard)
    stages = first_pipeline(dashboard)["stages"]
    source = stages[busiest(stages)]
    card = column(page, source["id"]).locator(".card").last
    lead_id = card.get_attribute("data-lead-id")

    card.locator("button.lost").click()
    page.keyboard.press("Enter")  # no reason yet: the dialog stays and asks for one
    expect(page.locator("#close-dialog")).to_be_visible()
    page.keyboard.type("Budget frozen")
    page.keyboard.press("Enter")

    expect(page.locator("#close-dialog")).to_be_hidden()
    expect(page.locator(f'.card[data-lead-id="{lead_id}"]')).to_have_count(0)
    expect(page.locator("#notice")).to_contain_text("marked lost")
    found = dashboard.graphql(
        "query($id: ID!) { lead(id: $id) { status lostReason } }",
        id=lead_id,
    )["lead"]
    assert found == {"status": "LOST", "lostReason": "Budget frozen"}


def test_the_lead_panel_keeps_focus_inside_and_gives_it_back(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    title = page.locator(".card .card-title").first
    title.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#lead-panel-close")).to_be_focused()
    for _ in range(40):
        page.keyboard.press("Tab")
        inside = page.evaluate("document.getElementById('lead-panel').contains(document.activeElement)")
        assert inside, page.evaluate("document.activeElement.outerHTML.slice(0, 120)")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.getElementById('lead-panel').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(page.locator("#lead-panel")).to_be_hidden()
    expect(title).to_be_focused()


def test_skip_links_reach_the_content_and_the_last_column(page: Page, dashboard: Dashboard) -> None:
    open_board(page, dashboard)
    skip = page.locator(".skip-link")
    first_stop = "document.querySelector('a[href], button, select, input, [tabindex]:not([tabindex=\"-1\"])')"
    assert page.evaluate(f"{first_stop}.classList.contains('skip-link')"), (
        "the skip link is not the first stop"
    )
    skip.focus()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    last = first_pipeline(dashboard)["stages"][-1]
    # From the content: the filters, then the stage links; the last stage is a few stops away.
    stops = 0
    while page.evaluate("document.activeElement.dataset.stageId") != last["id"]:
        page.keyboard.press("Tab")
        stops += 1
        assert stops <= 15, "the last stage's link is not near the top of the board"
    page.keyboard.press("Enter")
    expect(column(page, last["id"]).locator("h3")).to_be_focused()


def test_show_more_moves_focus_to_the_first_new_card(page: Page, dashboard: Dashboard) -> None:
    pipeline = first_pipeline(dashboard)
    stage_id = pipeline["stages"][0]["id"]
    for number in range(PAGE_SIZE + 5):  # more than a page in the first column
        created = dashboard.graphql(
            CREATE_LEAD,
            input={"pipelineId": pipeline["id"], "stageId": stage_id, "title": f"Paging lead {number}"},
        )["createLead"]
        assert created["userErrors"] == []
    open_board(page, dashboard)
    more = column(page, stage_id).locator(".more")
    expect(more).to_be_visible()
    shown = column(page, stage_id).locator(".card").count()
    while more.is_visible():
        more.focus()
        page.keyboard.press("Enter")
        expect(column(page, stage_id).locator(".card").nth(shown)).to_be_visible()
        focused = column(page, stage_id).locator(".card").nth(shown).locator(".card-title")
        expect(focused).to_be_focused()
        shown = column(page, stage_id).locator(".card").count()
    assert page.evaluate("document.activeElement !== document.body")


def test_the_forecast_shows_progress_and_ignores_repeat_clicks(page: Page, dashboard: Dashboard) -> None:
    open_view(page, dashboard, "forecast")
    expect(page.locator("#forecast-goal-source")).to_contain_text(re.compile(r"won in the last 90 days"))
    held: list[Route] = []
    sent: list[str] = []

    def hold(route: Route) -> None:
        body = route.request.post_data or ""
        if "forecast(input" in body or "leadsNeeded(input" in body:
            sent.append(body)
            held.append(route)
        else:
            route.continue_()

    page.route("**/graphql", hold)
    run = page.locator("#forecast-run")
    run.click()
    expect(run).to_be_disabled()
    expect(page.locator("#forecast-progress")).to_be_visible()
    expect(page.locator("#forecast-progress")).to_contain_text("Running 2,000 trials")
    expect(page.locator("#forecast")).to_have_attribute("aria-busy", "true")
    run.click(force=True)  # a disabled button: nothing happens
    page.locator("#forecast-form").evaluate("form => form.requestSubmit()")  # Enter in a field, say
    page.wait_for_timeout(200)
    assert len(sent) == 2, sent  # one forecast and one leadsNeeded, not twice each

    for route in held:
        route.continue_()
    expect(page.locator("#forecast")).to_have_attribute("data-ready", "true")
    expect(run).to_be_enabled()
    expect(page.locator("#forecast-progress")).to_be_hidden()


def test_the_default_goal_says_where_it_came_from(page: Page, dashboard: Dashboard) -> None:
    open_view(page, dashboard, "forecast")
    source = page.locator("#forecast-goal-source")
    expect(source).to_contain_text("Suggested goal")
    text: Any = source.inner_text()
    won = re.search(r"\$([\d,]+) won in the last 90 days", text)
    assert won, text
    goal = float(page.locator("#forecast-goal").input_value())
    # The trend's growth is capped to -20%..+25% a span, so the goal stays near what the last span won.
    last = float(won.group(1).replace(",", ""))
    assert 0.8 * last - 1000 <= goal <= 1.25 * last + 1000
    page.fill("#forecast-goal", "123000")
    expect(source).to_have_text("Your goal.")
