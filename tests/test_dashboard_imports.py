"""The import view in Debian's Chromium against a real ``pipegraph serve``: a file imported through the
view and counted through the API, a file with bad rows showing its problems (capped, with the total)
and writing nothing, a running import cancelled, axe-core on each outcome, and a phone's screen.

Screenshots of the outcomes at desktop and phone size go to the artefacts folder for a reviewer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, FilePayload, Page, expect

from dashboard_support import (
    DESKTOP,
    PHONE,
    Dashboard,
    first_pipeline,
    screenshot,
    serious_axe_violations,
    viewer_key,
)

COUNT = "query($p: ID!) { leads(pipelineId: $p, first: 1) { totalCount } }"
MAP = "Deal Name=title,Amount=value"
NARROWEST = 360


def lead_count(dashboard: Dashboard, pipeline_id: str) -> int:
    count: int = dashboard.graphql(COUNT, p=pipeline_id)["leads"]["totalCount"]
    return count


def open_imports(page: Page, dashboard: Dashboard, pipeline_id: str) -> None:
    page.goto(f"{dashboard.base_url}/#imports")
    expect(page.locator("#imports")).to_have_attribute("data-ready", "true")
    page.select_option("#import-pipeline", pipeline_id)


def choose(page: Page, text: str) -> None:
    payload: FilePayload = {"name": "leads.csv", "mimeType": "text/csv", "buffer": text.encode()}
    page.set_input_files("#import-file", files=[payload])


def csv_text(rows: int, *, bad_values: int = 0, last: str = "") -> str:
    good = "".join(f"Imported {n},{n}.50,\n" for n in range(rows))
    bad = "".join(f"Bad value {n},lots,\n" for n in range(bad_values))
    return f"Deal Name,Amount,Stage\n{good}{bad}{last}"


def job_of(dashboard: Dashboard, job_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{dashboard.base_url}/imports/{job_id}", headers={"Authorization": f"Bearer {dashboard.key}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_accessible(page: Page, where: str) -> None:
    violations = serious_axe_violations(page)
    assert violations == [], f"{where}: {violations}"


def test_a_file_imported_through_the_view_is_counted_by_the_api(page: Page, dashboard: Dashboard) -> None:
    pipeline = first_pipeline(dashboard)
    before = lead_count(dashboard, pipeline["id"])
    open_imports(page, dashboard, pipeline["id"])
    choose(page, csv_text(25))
    page.fill("#import-map", MAP)
    page.click("#import-run")
    expect(page.locator("#import-outcome")).to_have_attribute("data-status", "SUCCEEDED")
    expect(page.locator("#import-summary")).to_have_text(f"Imported 25 leads into {pipeline['name']}.")
    expect(page.locator("#import-outcome-heading")).to_be_focused()
    expect(page.locator("#import-progress")).to_be_hidden()
    assert lead_count(dashboard, pipeline["id"]) == before + 25
    # The file is chosen afresh for another import: sending it twice would import its leads twice.
    assert page.eval_on_selector("#import-file", "input => input.files.length") == 0
    assert_accessible(page, "import succeeded")
    screenshot(page, "imports-succeeded-desktop")


def test_a_file_with_bad_rows_lists_its_problems_and_writes_nothing(page: Page, dashboard: Dashboard) -> None:
    pipeline = first_pipeline(dashboard)
    before = lead_count(dashboard, pipeline["id"])
    open_imports(page, dashboard, pipeline["id"])
    # 120 unreadable amounts, then one row with three problems: 123 in all, the first 100 listed.
    choose(page, csv_text(5, bad_values=120, last=",-1,Nowhere\n"))
    page.fill("#import-map", MAP)
    # From the keyboard: Enter in the map field sends the form.
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/imports")) as posted:
        page.press("#import-map", "Enter")
    job = job_of(dashboard, posted.value.json()["id"])
    # The first 100 problems, then the server's note that there are more.
    assert (job["status"], job["problemCount"], len(job["problems"])) == ("FAILED", 123, 101)
    expect(page.locator("#import-outcome")).to_have_attribute("data-status", "FAILED")
    expect(page.locator("#import-summary")).to_contain_text("Nothing was imported: the file has 123 problems")
    expect(page.locator("#import-problems caption")).to_have_text("The first 100 of 123 problems")
    rows = page.locator("#import-problems tbody tr")
    expect(rows).to_have_count(100)
    first = job["problems"][0]
    expect(rows.first.locator("th, td")).to_have_text(["6", "value", first["message"]])
    assert lead_count(dashboard, pipeline["id"]) == before
    assert_accessible(page, "import refused")
    screenshot(page, "imports-problems-desktop")

    page.set_viewport_size(PHONE)
    assert_accessible(page, "import refused, phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "imports-problems-phone")
    page.set_viewport_size({"width": NARROWEST, "height": PHONE["height"]})
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROWEST
    page.set_viewport_size(DESKTOP)


def test_a_file_with_three_problems_in_one_row_names_each_column(page: Page, dashboard: Dashboard) -> None:
    pipeline = first_pipeline(dashboard)
    open_imports(page, dashboard, pipeline["id"])
    choose(page, csv_text(2, last=",-1,Nowhere\n"))
    page.fill("#import-map", MAP)
    page.click("#import-run")
    expect(page.locator("#import-problems caption")).to_have_text("3 problems")
    cells = page.locator("#import-problems tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.children].slice(0, 2).map(cell => cell.textContent))"
    )
    assert cells == [["3", "title"], ["3", "value"], ["3", "stage"]]


def test_a_running_import_is_cancelled_and_writes_nothing(page: Page, dashboard: Dashboard) -> None:
    pipeline = first_pipeline(dashboard)
    before = lead_count(dashboard, pipeline["id"])
    open_imports(page, dashboard, pipeline["id"])
    polled: list[str] = []
    page.on("request", lambda r: polled.append(r.url) if r.method == "GET" and "/imports/" in r.url else None)
    choose(page, csv_text(400_000))
    page.fill("#import-map", MAP)
    page.click("#import-run")
    expect(page.locator("#import-cancel")).to_be_visible()
    expect(page.locator("#import-rows-read")).not_to_have_text("0")
    screenshot(page, "imports-running-desktop")
    page.focus("#import-cancel")
    page.keyboard.press("Enter")
    expect(page.locator("#import-outcome")).to_have_attribute("data-status", "CANCELLED")
    expect(page.locator("#import-summary")).to_have_text("Nothing was imported.")
    expect(page.locator("#import-run")).to_be_enabled()
    assert lead_count(dashboard, pipeline["id"]) == before
    assert polled == []  # progress and outcome came through the importProgress subscription
    assert_accessible(page, "import cancelled")
    screenshot(page, "imports-cancelled-desktop")


def test_without_a_websocket_the_view_follows_the_job_by_polling(page: Page, dashboard: Dashboard) -> None:
    pipeline = first_pipeline(dashboard)
    before = lead_count(dashboard, pipeline["id"])
    page.route_web_socket("**/graphql", lambda socket: socket.close())
    polled: list[str] = []
    page.on("request", lambda r: polled.append(r.url) if r.method == "GET" and "/imports/" in r.url else None)
    open_imports(page, dashboard, pipeline["id"])
    choose(page, csv_text(40_000))
    page.fill("#import-map", MAP)
    page.click("#import-run")
    expect(page.locator("#import-outcome")).to_have_attribute("data-status", "SUCCEEDED")
    expect(page.locator("#import-summary")).to_have_text(f"Imported 40,000 leads into {pipeline['name']}.")
    assert polled
    assert lead_count(dashboard, pipeline["id"]) == before + 40_000


def test_a_viewer_is_told_importing_needs_a_rep(
    browser: BrowserContext, dashboard: Dashboard, seeded: tuple[Path, str, str]
) -> None:
    tab = browser.new_page()
    tab.add_init_script(f"sessionStorage.setItem('pipegraph.apiKey', {json.dumps(viewer_key(seeded[1]))})")
    try:
        tab.goto(f"{dashboard.base_url}/#imports")
        expect(tab.locator("#imports")).to_have_attribute("data-ready", "true")
        expect(tab.locator("#import-role-note")).to_be_visible()
        expect(tab.locator("#import-run")).to_be_disabled()
        assert_accessible(tab, "import view, viewer")
        tab.set_viewport_size(PHONE)
        screenshot(tab, "imports-viewer-phone")
    finally:
        tab.close()
