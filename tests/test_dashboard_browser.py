"""The dashboard page in a real browser: headless Chromium (Debian's), driven by Playwright.

Starts the read API over demo data on a free local port, opens each role view, checks
that its figures and charts are drawn, clicks through to one complaint's audit view, and
saves screenshots under test-output/. `scripts/browser` installs Chromium; when it cannot
start, the test fails under CI=true and is skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn

from commands.demo import load_demo
from complaints.store import open_desk
from commands.desk import ComplaintDesk
from complaints.settings import Settings
from read_api.app import create_read_app
from tests.test_read_api import build_read_db

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Never Playwright's own browser download: Debian's chromium, with nothing phoning home.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}


def unavailable(reason: str) -> None:
    message = f"{reason}: run scripts/browser to install Debian's chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    desk = open_desk(
        Settings(store="sqlite", sqlite_path=tmp_path_factory.mktemp("browser") / "events.sqlite"))
    load_demo(desk, 400, end=datetime.now(UTC), progress=False)
    db = build_read_db(desk)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_read_app(db), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the read API did not start within 20 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    db.close()
    desk.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        unavailable("the playwright package is missing (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        unavailable(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        except Error as error:
            unavailable(f"Chromium at {CHROMIUM} does not start ({error})")
        yield chromium
        chromium.close()


def test_dashboard_views_and_audit(base_url: str, browser: object) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base_url}/")
    assert page.url.endswith("/dashboard#supervisor")  # / redirects, the first view is the supervisor's

    views = {
        "supervisor": ("#sup-kpis", 7, ["#sup-daily", "#sup-status", "#sup-load", "#sup-sla"]),
        "product": ("#prod-kpis", 6, ["#prod-products", "#prod-categories", "#prod-defects", "#prod-wow"]),
        "executive": ("#exec-kpis", 6, ["#exec-sat", "#exec-high", "#exec-priority", "#exec-channel"]),
    }
    for view, (kpis, tiles, charts) in views.items():
        page.click(f".tabs button[data-view={view}]")
        page.wait_for_selector(f"{kpis} .kpi", timeout=15_000)
        for chart in charts:
            # Plotly draws an SVG with its marks: a chart with no data shows a message instead.
            page.wait_for_selector(f"{chart} .main-svg", timeout=15_000)
            marks = page.locator(f"{chart} .main-svg .point, {chart} .main-svg .slice, {chart} .main-svg path.js-line")
            assert marks.count() > 0, f"{view}: chart {chart} has no marks"
        values = page.locator(f"{kpis} .kpi .value").all_inner_texts()
        assert len(values) == tiles and all(v.strip() not in ("", "NaN", "NaN%") for v in values), values
        assert any(ch.isdigit() for v in values for ch in v), f"{view}: no figures in {values}"
        page.screenshot(path=str(OUTPUT / f"dashboard-{view}.png"))

    # Live: the page polls the read API by itself.
    status = page.locator("#status")
    before = int(status.get_attribute("data-refreshes") or 0)
    page.wait_for_function(f"Number(document.querySelector('#status').dataset.refreshes) > {before}", timeout=15_000)

    # From the supervisor's breached list (or the search) to one complaint's audit view.
    page.click(".tabs button[data-view=supervisor]")
    page.wait_for_selector("#sup-kpis .kpi")
    rows = page.locator("#sup-breached tr.click, #sup-risk tr.click")
    if rows.count():
        rows.first.click()
    else:
        page.click(".tabs button[data-view=audit]")
        page.wait_for_selector("#results tr.click")
        page.locator("#results tr.click").first.click()
    page.wait_for_selector("#timeline li", timeout=15_000)
    assert "#audit/" in page.url
    items = page.locator("#timeline li")
    assert items.count() >= 1 and "Registered" in items.first.inner_text()
    items.nth(min(2, items.count() - 1)).click()
    page.wait_for_selector("#diff-table table", timeout=15_000)
    page.wait_for_selector("#state-table table", timeout=15_000)
    assert "status" in page.locator("#state-table").inner_text()
    page.wait_for_selector("#clocks table", timeout=15_000)
    clocks = page.locator("#clocks").inner_text()
    assert "first response" in clocks and "resolution" in clocks and "activated" in clocks
    page.screenshot(path=str(OUTPUT / "dashboard-audit.png"))
    assert not errors, errors
    page.close()


def test_filters_narrow_the_figures(base_url: str, browser: object) -> None:
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    page.goto(f"{base_url}/dashboard#product")
    page.wait_for_selector("#prod-kpis .kpi")
    total = page.locator("[data-kpi=total] .value").inner_text()
    page.wait_for_selector("#filters select[name=product] option:nth-child(2)", state="attached")
    with page.expect_response(lambda r: "/dashboards/product" in r.url and "product=" in r.url):
        page.select_option("#filters select[name=product]", index=1)
    page.wait_for_function(
        f"document.querySelector('[data-kpi=total] .value').textContent !== {total!r}", timeout=10_000)
    assert int(page.locator("[data-kpi=total] .value").inner_text().replace(",", "")) < int(total.replace(",", ""))
    page.close()
