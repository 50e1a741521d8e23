"""The dashboard page in a real browser: headless Chromium (Debian's), driven by Playwright.

Starts the read API over demo data on a free local port, with the development sign-in
(the tests' own issuer). Each test signs in THROUGH THE PAGE, clicking a demo user in
its sign-in view, then: opens each view the role may see, checks that its figures and
charts are drawn, shows an alert raised through the desk on the supervisor's dashboard
(its "Acknowledge" posts with the token), clicks through to one complaint's audit view,
and saves screenshots under test-output/; checks that each role sees the views the
permission matrix gives it, that a team lead's team filter is fixed to its team, that a
403 shows a message in the panel, that a 401 and signing out bring back the sign-in
view, and that every request to the API carries the bearer token. In OIDC mode, the page signs in by the
authorization-code flow with PKCE at the real Keycloak (the `keycloak` fixture, realm
`complaints`): its login form, the page's own code exchange at the token endpoint (a
cross-origin request), and its logout. `scripts/browser` installs Chromium; when it
cannot start, the tests fail under CI=true and are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import uvicorn
from fastapi import FastAPI

from aggregates.access import (
    MATRIX,
    READ_AUDIT,
    READ_EXECUTIVE,
    READ_MODELS,
    READ_PRODUCT,
    READ_SUPERVISOR,
    Principal,
)
from aggregates.alert import alert_id_for
from commands.alerts import RaiseAlert
from commands.demo import load_demo
from complaints.identity import (
    DEV_ISSUER,
    DEV_USERS,
    ProviderKeys,
    TokenVerifier,
    authenticator,
    config_router,
    dev_router,
)
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.stored_events import envelopes
from projections.alerts import AlertsProjector
from projections.base import to_batch
from projections.event_log import EventLog
from read_api.app import create_read_app
from tests.identity import AUTHENTICATE, ISSUER, bearer
from tests.keycloak import AUDIENCE, WEB_CLIENT, Keycloak
from tests.test_read_api import build_read_db

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Never Playwright's own browser download: Debian's chromium, with nothing phoning home.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}
# The page's views and the permissions their requests need: what each role should be shown.
VIEW_NEEDS = {"supervisor": {READ_SUPERVISOR}, "product": {READ_PRODUCT},
              "executive": {READ_EXECUTIVE, READ_MODELS}, "audit": {READ_AUDIT}}
# Requests to the API (everything but the page's shell and the sign-in endpoints).
API_PATHS = ("/dashboards/", "/dimensions", "/sla", "/workload", "/trends", "/audit/", "/export/")


def unavailable(reason: str) -> None:
    message = f"{reason}: run scripts/browser to install Debian's chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: FastAPI, port: int) -> Iterator[str]:
    """`app` on a local port, in a thread: its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the read API did not start within 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# An alert raised through the desk (team billing's, for team leads and department heads).
ALERT = {"key": "browser:category_spike:billing/mobile-app", "rule": "category_spike", "rules_version": "1",
         "subject_type": "category_product", "subject": "billing/mobile-app", "team": "billing",
         "severity": "critical", "title_en": "Billing complaints about the app doubled",
         "title_zh": "应用的账单投诉翻倍", "evidence": {"this_week": 40, "last_week": 20},
         "recipients": ["supervisor", "department_head"]}
ALERT_ID = alert_id_for(ALERT["key"])


def add_alert(desk: Any, db: Any) -> None:
    """Raise ALERT through the desk and apply its events as a read node applies the alert stream."""
    after = db.execute("SELECT max(position) FROM events").fetchone()[0]
    desk.raise_alert(RaiseAlert(**ALERT), Principal("automation:alerts", "rules", frozenset({"automation"})))
    batch = to_batch(envelopes(desk.mapper, desk.recorder.select_notifications(after + 1, 100)))
    db.begin()
    AlertsProjector().apply(db, EventLog().insert_new(db, batch))
    db.commit()


@pytest.fixture(scope="module")
def read_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    desk = open_desk(
        Settings(store="sqlite", sqlite_path=tmp_path_factory.mktemp("browser") / "events.sqlite"))
    load_demo(desk, 400, end=datetime.now(UTC), progress=False)
    db = build_read_db(desk)
    add_alert(desk, db)
    yield db
    db.close()
    desk.close()


@pytest.fixture(scope="module")
def base_url(read_db: Any) -> Iterator[str]:
    """The read API with the development sign-in the page uses, over the tests' issuer
    (whose tokens AUTHENTICATE accepts)."""
    app = create_read_app(read_db, AUTHENTICATE)
    app.include_router(dev_router(ISSUER))
    app.include_router(config_router("development", DEV_ISSUER, None))
    with serving(app, free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def oidc(read_db: Any, keycloak: Keycloak) -> Iterator[str]:
    """The read API in OIDC mode, as `complaints serve` wires it for a provider: tokens
    verified with the real Keycloak's keys (its discovery document, its JWKS), the page
    told to sign in there as the public client complaints-web."""
    verifier = TokenVerifier(ProviderKeys(keycloak.issuer), keycloak.issuer, AUDIENCE)
    app = create_read_app(read_db, authenticator(verifier, None))
    app.include_router(config_router("oidc", keycloak.issuer, WEB_CLIENT))
    with serving(app, free_port()) as url:
        yield url


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


def views_of(role: str) -> list[str]:
    """The tabs the matrix lets `role` see, in the page's order."""
    return [view for view, needs in VIEW_NEEDS.items() if needs <= MATRIX[role]]  # type: ignore[index]


class Watch:
    """A page's script errors, and its requests to the API: any without the bearer token,
    and the answers' statuses."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.untokened: list[str] = []
        self.statuses: list[tuple[int, str]] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", self.request)
        page.on("response", lambda r: self.statuses.append((r.status, r.url)) if self.to_api(r.url) else None)

    @staticmethod
    def to_api(url: str) -> bool:
        return urlsplit(url).path.startswith(API_PATHS)

    def request(self, request: Any) -> None:
        if self.to_api(request.url) and not request.headers.get("authorization", "").startswith("Bearer "):
            self.untokened.append(request.url)

    def refused(self, *codes: int) -> list[tuple[int, str]]:
        return [(status, url) for status, url in self.statuses if status in codes]


def sign_in(page: Any, base_url: str, username: str, path: str = "/") -> None:
    """Through the page: open it, click the demo user in the development sign-in."""
    page.goto(f"{base_url}{path}")
    page.click(f"#signin .dev-user[data-username={username}]")
    page.wait_for_selector("#who", state="visible")
    assert page.locator("#signin").is_hidden()


def view_of(page: Any) -> dict[str, str]:
    """The view the page's address describes (its query string)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def visible_tabs(page: Any) -> list[str]:
    return [tab.get_attribute("data-view") for tab in page.locator(".tabs button:visible").all()]


def test_dashboard_views_and_audit(base_url: str, browser: object) -> None:
    OUTPUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    page.goto(f"{base_url}/")
    # Before signing in: the sign-in view, marked as the development one, and no dashboard.
    page.wait_for_selector("#signin .dev-user[data-username=head]")
    assert page.url.endswith("/dashboard")  # / redirects
    sign_in_text = page.locator("#signin").inner_text()  # the browser asks for English
    assert "not for production" in sign_in_text and "开发环境登录" not in sign_in_text
    # The demo users grouped by role, each with its name, role and team.
    for user in DEV_USERS:
        button = page.locator(f"#dev-users [data-role={user.roles[0]}] .dev-user[data-username={user.username}]")
        assert user.name in button.inner_text() and (user.team or "") in button.inner_text()
    assert "team lead" in page.locator(".dev-user[data-username=billing-lead]").inner_text()
    for hidden in ("#signed-in", "#tabs", "main", "#filters", "#view-supervisor", "#who"):
        assert page.locator(hidden).is_hidden(), f"{hidden} is shown before signing in"
    assert page.locator(".kpi").count() == 0 and not watch.statuses  # not even asked for
    page.screenshot(path=str(OUTPUT / "dashboard-sign-in.png"))

    page.click("#signin .dev-user[data-username=head]")  # the department head: every view
    page.wait_for_selector("#who", state="visible")
    assert view_of(page) == {"view": "supervisor"}  # the first view is the supervisor's
    who = page.locator("#who").inner_text()
    assert "陈静 Chen Jing" in who and "department head" in who and "Sign out" in who
    assert page.locator("#workspace-link").is_visible()  # a role that acts on complaints
    assert visible_tabs(page) == views_of("department_head") == ["supervisor", "product", "executive", "audit"]

    views = {
        "supervisor": ("#sup-kpis", 7, ["#sup-daily", "#sup-status", "#sup-load", "#sup-sla"]),
        "product": ("#prod-kpis", 6, ["#prod-products", "#prod-categories", "#prod-wow"]),
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
        if view == "product":
            # No release date is known (none in the data or the configuration): the chart says
            # so rather than inventing one; a date picked goes into the address.
            assert "No release date is known" in page.locator("#prod-defects .no-release").inner_text()
            assert page.locator("[data-kpi=defects_after] .value").inner_text() == "–"
            release = (datetime.now(UTC) - timedelta(days=10)).date().isoformat()
            page.fill("#release", release)
            page.dispatch_event("#release", "change")
            page.wait_for_selector("#prod-defects .main-svg path.js-line", timeout=15_000)
            assert view_of(page)["release"] == release

    # Export: fetched with the token and saved from a Blob (a plain link would send none).
    with page.expect_download() as download:
        page.click("#export")
    assert download.value.suggested_filename == "complaints.csv"  # the executive view's table
    with open(download.value.path(), encoding="utf-8") as exported:
        assert "complaint_id" in exported.readline() and exported.readline()

    # Live: the page polls the read API by itself.
    status = page.locator("#status")
    before = int(status.get_attribute("data-refreshes") or 0)
    page.wait_for_function(f"Number(document.querySelector('#status').dataset.refreshes) > {before}", timeout=15_000)

    page.click(".tabs button[data-view=supervisor]")
    page.wait_for_selector("#sup-kpis .kpi")
    # The alert raised through the desk, on the supervisor's dashboard, in both languages; its
    # "Acknowledge" posts to the command API with the token (answered here: no command API).
    acknowledged: list[Any] = []
    page.route(f"**/alerts/{ALERT_ID}/acknowledge", lambda route: (acknowledged.append(route.request), route.fulfill(
        status=200, content_type="application/json", body=json.dumps({
            "alert_id": str(ALERT_ID), "version": 2, "status": "acknowledged", "command_id": "c", "replayed": False}))))
    row = page.locator(f"#sup-alerts tr[data-alert='{ALERT_ID}']")
    row.wait_for(timeout=15_000)
    text = row.inner_text()
    assert ALERT["title_en"] in text and "critical" in text and "open" in text, text
    assert "billing/mobile-app" in text, text
    row.locator("button.ack").click()
    row.locator(".acked").wait_for(timeout=15_000)
    assert len(acknowledged) == 1 and acknowledged[0].method == "POST", acknowledged
    assert acknowledged[0].headers["authorization"].startswith("Bearer "), acknowledged[0].headers
    page.unroute(f"**/alerts/{ALERT_ID}/acknowledge")

    # From the supervisor's breached list (or the search) to one complaint's audit view.
    rows = page.locator("#sup-breached tr.click, #sup-risk tr.click")
    if rows.count():
        rows.first.click()
    else:
        page.click(".tabs button[data-view=audit]")
        page.wait_for_selector("#results tr.click")
        page.locator("#results tr.click").first.click()
    page.wait_for_selector("#timeline li", timeout=15_000)
    assert view_of(page)["view"] == "audit" and view_of(page)["complaint"]
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
    assert not watch.errors, watch.errors
    assert not watch.untokened, f"requests to the API without the token: {watch.untokened}"
    assert not watch.refused(401, 403), watch.refused(401, 403)
    page.close()


def test_filters_narrow_the_figures(base_url: str, browser: object) -> None:
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "quality")  # product and quality: its own dashboard, and the audit
    assert visible_tabs(page) == views_of("quality") == ["product", "audit"]
    assert view_of(page) == {"view": "product"}
    page.wait_for_selector("#prod-kpis .kpi")
    total = page.locator("[data-kpi=total] .value").inner_text()
    page.wait_for_selector("#filters select[name=product] option:nth-child(2)", state="attached")
    with page.expect_response(lambda r: "/dashboards/product" in r.url and "product=" in r.url):
        page.select_option("#filters select[name=product]", index=1)
    page.wait_for_function(
        f"document.querySelector('[data-kpi=total] .value').textContent !== {total!r}", timeout=10_000)
    assert int(page.locator("[data-kpi=total] .value").inner_text().replace(",", "")) < int(total.replace(",", ""))
    assert not watch.errors and not watch.untokened and not watch.refused(401, 403)
    page.close()


def test_the_executive_sees_the_views_the_matrix_gives(base_url: str, browser: object) -> None:
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "executive")
    # Its own dashboard first; the tabs are the matrix's (every dashboard, no audit).
    assert view_of(page) == {"view": "executive"}
    assert page.locator("#workspace-link").is_hidden()  # acts on no complaint
    expected = views_of("executive")
    assert visible_tabs(page) == expected and "audit" not in expected
    assert page.locator(".tabs button[data-view=supervisor]").is_visible() == ("supervisor" in expected)
    page.wait_for_selector("#exec-kpis .kpi", timeout=15_000)
    page.wait_for_selector("#exec-sat .main-svg", timeout=15_000)
    assert "赵敏 Zhao Min" in page.locator("#who").inner_text()
    assert page.locator("#filters select[name=team]").is_enabled()
    # The supervisor's lists do not lead to an audit view the executive may not open.
    page.click(".tabs button[data-view=supervisor]")
    page.wait_for_selector("#sup-kpis .kpi", timeout=15_000)
    assert page.locator("#sup-breached tr.click, #sup-risk tr.click").count() == 0

    # A role with no view here (intake): a message, no tabs, no filters, no figures.
    assert views_of("intake") == []
    page.click("#sign-out")
    page.wait_for_selector("#signin .dev-user[data-username=intake]", state="visible")
    page.click("#signin .dev-user[data-username=intake]")
    page.wait_for_selector("#no-views", state="visible")
    assert visible_tabs(page) == [] and page.locator("#filters").is_hidden() and page.locator(".kpi").count() == 0
    assert not watch.errors and not watch.untokened and not watch.refused(401, 403)
    page.close()


def test_a_team_lead_sees_its_team_and_signs_out(base_url: str, browser: object) -> None:
    # A complaint of another team, to open by its address.
    operator = httpx.get(f"{base_url}/sla", params={"limit": 1000}, headers=bearer(), timeout=30)
    assert operator.status_code == 200, operator.text
    other = next(row["complaint_id"] for row in operator.json()["items"] if row["team"] not in (None, "billing"))

    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "billing-lead")
    assert visible_tabs(page) == views_of("supervisor") == ["supervisor", "audit"]
    assert view_of(page) == {"view": "supervisor", "team": "billing"}  # its team, fixed
    who = page.locator("#who").inner_text()
    assert "刘洋 Liu Yang" in who and "team billing" in who
    # The team filter: billing, fixed.
    team = page.locator("#filters select[name=team]")
    page.wait_for_selector("#sup-kpis .kpi", timeout=15_000)
    page.wait_for_selector("#filters select[name=product] option:nth-child(2)", state="attached")  # /dimensions came
    assert team.input_value() == "billing" and team.is_disabled()
    page.click("#reset")
    assert team.input_value() == "billing"
    asked = [parse_qs(urlsplit(url).query).get("team") for _, url in watch.statuses if "/dashboards/" in url]
    assert asked and all(t == ["billing"] for t in asked), asked
    page.screenshot(path=str(OUTPUT / "dashboard-team-lead.png"))

    # Another team's complaint: the server says 403, the panel says so (and the page lives on).
    page.goto(f"{base_url}/dashboard?view=audit&complaint={other}")
    page.reload()  # the session outlives a reload (sessionStorage)
    denied = page.locator("#view-audit .denied")
    denied.wait_for(state="visible", timeout=15_000)
    assert "Your role may not see this" in denied.inner_text()
    assert page.locator("#who").is_visible() and watch.refused(403)
    page.screenshot(path=str(OUTPUT / "dashboard-denied.png"))

    # Signing out: back to the sign-in view, the token gone, nothing of the figures left.
    page.click("#sign-out")
    page.wait_for_selector("#signin .dev-user", state="visible")
    assert page.locator("#signed-in").is_hidden() and page.locator("#who").is_hidden()
    assert page.evaluate("sessionStorage.getItem('complaints.session')") is None
    assert page.evaluate("localStorage.length") == 0
    assert page.locator(".kpi").count() == 0 and page.locator("#results tr").count() == 0
    page.reload()
    page.wait_for_selector("#signin .dev-user", state="visible")

    # A token the API refuses (401): back to the sign-in view, saying why.
    page.evaluate("""sessionStorage.setItem('complaints.session', JSON.stringify({mode: 'development',
        token: 'not-a-token', user: {username: 'x', name: 'x', roles: ['executive'], team: null}}))""")
    page.reload()
    page.wait_for_selector("#signin-note", state="visible", timeout=15_000)
    assert "sign in again" in page.locator("#signin-note").inner_text()
    assert page.locator("#signed-in").is_hidden() and watch.refused(401)
    assert page.evaluate("sessionStorage.getItem('complaints.session')") is None
    assert not watch.errors, watch.errors
    assert not watch.untokened, watch.untokened
    page.close()


def test_signing_in_at_keycloak(oidc: str, keycloak: Keycloak, browser: object) -> None:
    """OIDC mode: the authorization-code flow with PKCE against the real Keycloak, through
    its own login form; signing out ends the Keycloak session too."""
    url = oidc
    endpoints = f"{keycloak.issuer}/protocol/openid-connect"
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    to_keycloak: list[Any] = []  # the page's requests to the provider (navigations and fetches)
    page.on("request", lambda r: to_keycloak.append(r) if r.url.startswith(endpoints) else None)
    bearers: set[str] = set()
    page.on("request", lambda r: bearers.add(r.headers.get("authorization", "")) if Watch.to_api(r.url) else None)

    page.goto(f"{url}/dashboard?view=audit")
    page.wait_for_selector("#oidc-sign-in", state="visible")
    assert page.locator("#signin-dev").is_hidden() and page.locator("#signed-in").is_hidden()
    assert keycloak.issuer in page.locator("#signin-oidc").inner_text()

    # To Keycloak's login form, asked for a code with an S256 challenge, to come back here.
    page.click("#oidc-sign-in")
    page.wait_for_selector("input#username", timeout=30_000)
    assert page.url.startswith(f"{endpoints}/auth?")
    asked = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert asked["response_type"] == "code" and asked["client_id"] == WEB_CLIENT, asked
    assert asked["redirect_uri"] == f"{url}/dashboard" and asked["scope"] == "openid", asked
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43, asked
    page.screenshot(path=str(OUTPUT / "dashboard-keycloak-login.png"))
    page.fill("input#username", "supervisor")
    page.fill("input#password", "supervisor-pw")
    page.click("#kc-login")

    # Back with a code, exchanged (with the verifier) by the page itself for Keycloak's tokens.
    page.wait_for_selector("#who:visible, #signin-note:visible", timeout=30_000)
    assert page.locator("#who").is_visible(), page.locator("#signin-note").inner_text()
    exchanges = [r for r in to_keycloak if r.url == f"{endpoints}/token"]
    assert len(exchanges) == 1 and exchanges[0].method == "POST", [r.url for r in to_keycloak]
    form = {k: v[0] for k, v in parse_qs(exchanges[0].post_data or "").items()}
    assert form["grant_type"] == "authorization_code" and form["client_id"] == WEB_CLIENT, form
    assert form["redirect_uri"] == f"{url}/dashboard" and len(form["code_verifier"]) >= 43, form
    assert exchanges[0].response() is not None and exchanges[0].response().status == 200
    # The code is gone from the address; back where it was (with the team lead's team, fixed).
    assert page.url == f"{url}/dashboard?view=audit&team=billing"
    session = page.evaluate("JSON.parse(sessionStorage.getItem('complaints.session'))")
    assert session["mode"] == "oidc" and session["id_token"]
    claims = jwt.decode(session["token"], options={"verify_signature": False})
    assert claims["iss"] == keycloak.issuer and AUDIENCE in claims["aud"] and claims["azp"] == WEB_CLIENT

    # Who: the realm's supervisor of team billing (Keycloak's `name`: given name, space, family name).
    who = page.locator("#who").inner_text()
    assert claims["name"] == "洋 刘" and "刘洋" in who, who  # shown family name first, as the server records it
    assert "team lead" in who and "team billing" in who, who
    assert visible_tabs(page) == views_of("supervisor") == ["supervisor", "audit"]

    # The team lead's dashboard, its team filter fixed to billing.
    page.click(".tabs button[data-view=supervisor]")
    page.wait_for_selector("#sup-kpis .kpi", timeout=15_000)
    for chart in ("#sup-daily", "#sup-status", "#sup-load", "#sup-sla"):
        # Drawn, or saying it is empty: one team's share of the demo data may have no open load now.
        page.wait_for_selector(f"{chart} .main-svg, {chart} .empty", timeout=15_000)
    values = page.locator("#sup-kpis .kpi .value").all_inner_texts()
    assert any(ch.isdigit() for v in values for ch in v), values
    team = page.locator("#filters select[name=team]")
    page.wait_for_selector("#filters select[name=product] option:nth-child(2)", state="attached")  # /dimensions came
    assert team.input_value() == "billing" and team.is_disabled()
    asked_teams = [parse_qs(urlsplit(u).query).get("team") for _, u in watch.statuses if "/dashboards/" in u]
    assert asked_teams and all(t == ["billing"] for t in asked_teams), asked_teams
    page.screenshot(path=str(OUTPUT / "dashboard-keycloak-team-lead.png"))

    # Every request to the API carried Keycloak's access token, and every answer was 200.
    assert bearers == {f"Bearer {session['token']}"}, bearers
    assert watch.statuses and all(status == 200 for status, _ in watch.statuses), watch.statuses
    assert not watch.untokened and not watch.errors, (watch.untokened, watch.errors)

    # Signing out ends the Keycloak session too, and comes back to the sign-in view.
    page.click("#sign-out")
    page.wait_for_selector("#oidc-sign-in", state="visible", timeout=30_000)
    logouts = [r for r in to_keycloak if r.url.startswith(f"{endpoints}/logout?")]
    assert len(logouts) == 1, [r.url for r in to_keycloak]
    told = {k: v[0] for k, v in parse_qs(urlsplit(logouts[0].url).query).items()}
    assert told["client_id"] == WEB_CLIENT and told["post_logout_redirect_uri"] == f"{url}/dashboard", told
    assert told["id_token_hint"] == session["id_token"]
    assert page.url == f"{url}/dashboard"
    assert page.locator("#signed-in").is_hidden() and page.locator("#who").is_hidden()
    assert page.evaluate("sessionStorage.getItem('complaints.session')") is None
    # No session left at Keycloak: signing in again asks for the password again.
    page.click("#oidc-sign-in")
    page.wait_for_selector("input#password", timeout=30_000)
    assert page.url.startswith(f"{endpoints}/auth?")
    assert not watch.errors, watch.errors
    page.close()


# ---------------------------------------------------------------- the page's two languages, its address, its defects
PHONE = {"width": 390, "height": 844}


def chart(page: Any, chart_id: str) -> Any:
    """What Plotly drew in a chart: its traces and layout (the page's own data)."""
    return page.evaluate(f"(() => {{ const gd = document.getElementById('{chart_id}');"
                         " return {data: gd.data, layout: gd.layout, ticks: {"
                         " x: [...gd.querySelectorAll('.xtick text')].map((t) => t.textContent),"
                         " y: [...gd.querySelectorAll('.ytick text')].map((t) => t.textContent)}}; })()")


def platform_fonts(page: Any, selector: str) -> list[str]:
    """The fonts Chromium drew the element's text with (not the ones asked for)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    cdp.detach()
    return [font["familyName"] for font in fonts]


def test_the_page_speaks_chinese_when_the_browser_asks(base_url: str, browser: object) -> None:
    """zh-CN by default for a Chinese browser: labels, code names, numbers; drawn in a CJK font;
    the switch to English and back in the top bar, kept across a reload."""
    OUTPUT.mkdir(exist_ok=True)
    context = browser.new_context(viewport=LAPTOP, locale="zh-CN")  # type: ignore[attr-defined]
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{base_url}/dashboard")
    page.wait_for_selector("#signin .dev-user[data-username=head]")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert "开发环境登录" in page.locator("#signin").inner_text()
    assert "not for production" not in page.locator("#signin").inner_text()
    page.click("#signin .dev-user[data-username=head]")
    page.wait_for_selector("#sup-kpis .kpi", timeout=15_000)
    page.wait_for_selector("#sup-status .main-svg", timeout=15_000)
    assert page.locator(".tabs button[data-view=supervisor]").inner_text() == "主管"
    assert page.locator("[data-kpi=new_today] .label").inner_text() == "今日新增"
    assert "部门负责人" in page.locator("#who").inner_text()
    assert page.locator("#workspace-link").inner_text() == "工作台"
    statuses = chart(page, "sup-status")["data"][0]["y"]
    assert "已关闭" in statuses and not any("_" in s or s.isascii() for s in statuses), statuses
    assert page.evaluate("[...document.querySelector('#filters select[name=channel]').options]"
                         ".find((o) => o.value === 'social_media').textContent") == "社交媒体"
    assert ALERT["title_zh"] in page.locator("#sup-alerts").inner_text()
    # Drawn in a CJK font (scripts/browser installs fonts-noto-cjk), not boxes of a fallback.
    assert page.evaluate("""document.fonts.check('16px "Noto Sans CJK SC"', '空调')""")
    assert any("CJK" in font for font in platform_fonts(page, f"#sup-alerts tr[data-alert='{ALERT_ID}'] .alert-title"))
    page.screenshot(path=str(OUTPUT / "dashboard-supervisor-zh-CN.png"))
    for view, kpis, charts in (("product", "#prod-kpis", ("#prod-products", "#prod-categories")),
                               ("executive", "#exec-kpis", ("#exec-sat", "#exec-priority", "#exec-channel"))):
        page.click(f".tabs button[data-view={view}]")
        page.wait_for_selector(f"{kpis} .kpi", timeout=15_000)
        for drawn in charts:
            page.wait_for_selector(f"{drawn} .main-svg", timeout=15_000)
        labels = page.locator(f"{kpis} .kpi .label").all_inner_texts()
        assert all(not label.isascii() for label in labels), labels  # every KPI named in Chinese
        page.screenshot(path=str(OUTPUT / f"dashboard-{view}-zh-CN.png"))
    channels = chart(page, "exec-channel")["data"][0]["y"]
    assert "电话" in channels and "phone" not in channels, channels
    page.click(".tabs button[data-view=audit]")
    page.locator("#results tr.click").first.click()
    page.wait_for_selector("#state-table table", timeout=15_000)
    assert "状态" in page.locator("#state-table").inner_text() and "登记" in page.locator("#timeline").inner_text()
    page.screenshot(path=str(OUTPUT / "dashboard-audit-zh-CN.png"))
    page.click(".tabs button[data-view=supervisor]")
    page.wait_for_selector("#sup-kpis .kpi", timeout=15_000)

    # To English from the top bar, and it stays so after a reload.
    page.select_option("#lang select", "en")
    page.wait_for_function("document.querySelector('[data-kpi=new_today] .label').textContent === 'New today'")
    assert page.evaluate("document.documentElement.lang") == "en"
    page.wait_for_function("document.getElementById('sup-status').data[0].y.includes('closed')", timeout=15_000)
    page.reload()
    page.wait_for_selector("#sup-kpis .kpi", timeout=15_000)
    assert page.locator("[data-kpi=new_today] .label").inner_text() == "New today"
    page.select_option("#lang select", "zh-CN")
    assert not watch.errors, watch.errors
    context.close()


def test_the_view_lives_in_the_address(base_url: str, browser: object) -> None:
    """A link reproduces the view and its filters; each change is a history entry that back
    and forward walk."""
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "head", "/dashboard?view=product&channel=web&period=7d&severity=major")
    page.wait_for_selector("#prod-kpis .kpi", timeout=15_000)
    assert page.locator(".tabs button.active").get_attribute("data-view") == "product"
    assert page.locator("#filters select[name=channel]").input_value() == "web"
    assert page.locator("#filters select[name=period]").input_value() == "7d"
    asked = [parse_qs(urlsplit(url).query) for _, url in watch.statuses if "/dashboards/product" in url]
    assert asked and asked[-1]["channel"] == ["web"] and asked[-1]["severity"] == ["major"], asked

    with page.expect_response(lambda r: "/dashboards/product" in r.url and "channel=phone" in r.url):
        page.select_option("#filters select[name=channel]", "phone")
    assert view_of(page)["channel"] == "phone"
    page.click(".tabs button[data-view=executive]")
    page.wait_for_selector("#exec-kpis .kpi", timeout=15_000)
    assert view_of(page) == {"view": "executive", "channel": "phone", "period": "7d", "severity": "major"}
    page.go_back()
    page.wait_for_function("document.querySelector('.tabs button.active').dataset.view === 'product'")
    with page.expect_response(lambda r: "/dashboards/product" in r.url and "channel=web" in r.url):
        page.go_back()
    assert page.locator("#filters select[name=channel]").input_value() == "web"
    page.go_forward()
    page.wait_for_function("document.querySelector('#filters select[name=channel]').value === 'phone'")
    assert not watch.errors, watch.errors
    page.close()


def test_a_filter_changed_meanwhile_wins_and_as_of_is_the_desks(base_url: str, browser: object) -> None:
    """A filter changed while the figures are on their way is what is shown, and asked with the
    export; "As of" is a wall-clock time at the desk (Asia/Shanghai), whatever the browser's zone."""
    context = browser.new_context(viewport=LAPTOP, timezone_id="America/New_York")  # type: ignore[attr-defined]
    page = context.new_page()
    watch = Watch(page)
    sign_in(page, base_url, "quality")
    page.wait_for_selector("#prod-kpis .kpi", timeout=15_000)
    page.wait_for_selector("#filters select[name=product] option:nth-child(3)", state="attached")
    held: list[Any] = []  # the first answer, held back until the second is drawn
    page.route("**/dashboards/product?*", lambda route: route.continue_() if held else held.append(route))
    page.select_option("#filters select[name=product]", index=1)
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    chosen = page.locator("#filters select[name=product]").input_value()
    page.select_option("#filters select[name=product]", index=2)  # while the first is held
    last = page.locator("#filters select[name=product]").input_value()
    assert held and chosen != last
    expected = httpx.get(f"{base_url}/dashboards/product", params={"product": last}, headers=bearer(), timeout=30).json()
    page.wait_for_function(
        f"document.querySelector('[data-kpi=total] .value').textContent === {format(expected['total'], ',')!r}",
        timeout=15_000)
    with page.expect_response(lambda r: r.url == held[0].request.url):
        held[0].continue_()  # the first answer, late: not drawn over the second
    page.wait_for_timeout(300)
    page.unroute("**/dashboards/product?*")
    assert page.locator("[data-kpi=total] .value").inner_text() == format(expected["total"], ",")
    assert view_of(page)["product"] == last

    # As of 09:30 at the desk: 01:30 UTC, not 09:30 in New York.
    with page.expect_response(lambda r: "/dashboards/product" in r.url and "as_of=" in r.url) as answer:
        page.fill("#filters input[name=as_of]", "2026-11-20T09:30")
        page.dispatch_event("#filters input[name=as_of]", "change")
    as_of = parse_qs(urlsplit(answer.value.url).query)["as_of"][0]
    assert datetime.fromisoformat(as_of) == datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('as of')")  # says so
    with page.expect_request(lambda r: "/export/" in r.url) as exported:
        page.click("#export")
    assert parse_qs(urlsplit(exported.value.url).query)["as_of"] == [as_of]
    page.reload()  # the address keeps the instant, shown again as the desk's wall clock
    page.wait_for_selector("#prod-kpis .kpi", timeout=15_000)
    assert page.locator("#filters input[name=as_of]").input_value() == "2026-11-20T09:30"
    assert not watch.errors, watch.errors
    context.close()


def test_supervisor_charts_say_what_they_show(base_url: str, browser: object) -> None:
    """Agents' load: whole-number ticks, every agent named, the unassigned apart; the SLA
    bars with the policy's target; today's partial day marked; drill-through to the workspace."""
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "head")
    page.wait_for_selector("#sup-load .main-svg", timeout=15_000)
    page.wait_for_selector("#sup-sla .main-svg", timeout=15_000)
    d = httpx.get(f"{base_url}/dashboards/supervisor", headers=bearer(), timeout=30).json()
    load = chart(page, "sup-load")
    agents = [a["agent"] for a in d["agent_load"] if a["agent"] and a["open"] > 0][:14]
    assert sorted(load["ticks"]["y"]) == sorted(agents), load["ticks"]["y"]  # every name, none twice
    assert "(unassigned)" not in load["ticks"]["y"] and None not in load["data"][0]["y"]
    x_ticks = load["ticks"]["x"]
    assert len(x_ticks) == len(set(x_ticks)) and all(t.replace(",", "").isdigit() for t in x_ticks), x_ticks
    unassigned = sum(a["open"] for a in d["agent_load"] if not a["agent"])
    assert (str(unassigned) in page.locator("#sup-unassigned").inner_text()) if unassigned else True

    sla = chart(page, "sup-sla")
    target = d["sla"]["target_attainment"]
    assert target == 0.9
    lines = [s for s in sla["layout"].get("shapes", []) if s["type"] == "line"]
    assert [line["y0"] for line in lines] == [90], lines
    assert "90.0%" in page.locator("#sup-sla").inner_text()

    daily = chart(page, "sup-daily")["data"][0]
    assert daily["marker"]["pattern"]["shape"][-1] == "/"  # today: still filling up
    assert set(daily["marker"]["pattern"]["shape"][1:-1]) <= {""}
    assert "partial" in page.locator("#sup-daily-note").inner_text()

    # Drill-through: a KPI, and a bar, open the complaints behind them in the workspace.
    page.route("**/workspace?*", lambda route: route.fulfill(status=200, content_type="text/html", body="<p>workspace</p>"))
    page.click("[data-kpi=pending]")
    page.wait_for_url("**/workspace?*")
    assert view_of(page) == {"period": "all", "status": "open"}  # open now, whenever registered
    page.go_back()
    page.wait_for_selector("#sup-status .main-svg .point", timeout=15_000)
    bar = page.locator("#sup-status .main-svg .point").last.bounding_box()  # the largest status
    page.mouse.click(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)
    page.wait_for_url("**/workspace?*")
    largest = max(d["by_status"], key=lambda s: s["count"])["key"]
    assert view_of(page) == {"period": "30d", "status": largest}
    assert not watch.errors, watch.errors
    page.close()


def test_product_and_executive_figures_agree(base_url: str, browser: object) -> None:
    """The donut's share of a category is the KPI's; the repeat-rate card says what it is."""
    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "head", "/dashboard?view=product")
    page.wait_for_selector("#prod-categories .main-svg", timeout=15_000)
    donut = chart(page, "prod-categories")["data"][0]
    hint = page.locator("[data-kpi=top_category] .hint").inner_text()
    assert donut["text"][0] in hint, (donut["text"], hint)
    assert abs(sum(donut["values"]) - 1) < 1e-9  # shares of all complaints, the rest one slice
    page.click(".tabs button[data-view=executive]")
    page.wait_for_selector("#exec-kpis .kpi", timeout=15_000)
    repeat = page.locator("[data-kpi=repeat] .hint").inner_text()
    assert "same customer" in repeat and "high-priority" not in repeat, repeat
    assert not watch.errors, watch.errors
    page.close()


def test_the_audit_view_reads_as_people_read(base_url: str, browser: object, read_db: Any) -> None:
    """Field names and instants as people read them; the whole timeline; a reopened
    complaint's resolution clock keeps its earlier fulfilment."""
    cursor = read_db.cursor()
    longest, events = cursor.execute(
        "SELECT complaint_id, count(*) FROM events WHERE event_type NOT LIKE 'Alert%'"
        " GROUP BY complaint_id ORDER BY 2 DESC, 1 LIMIT 1").fetchone()
    reopened = [row[0] for row in cursor.execute(
        "SELECT DISTINCT complaint_id FROM events WHERE event_type = 'Reopened' ORDER BY 1").fetchall()]
    cursor.close()
    assert events > 8 and reopened

    page = browser.new_page(viewport=LAPTOP)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "head", f"/dashboard?view=audit&complaint={longest}")
    page.wait_for_selector("#state-table table", timeout=15_000)
    assert page.locator("#timeline li").count() == events
    assert page.evaluate("(() => { const t = document.getElementById('timeline'); return t.scrollHeight <= t.clientHeight; })()")
    page.locator("#timeline li").last.scroll_into_view_if_needed()
    assert page.locator("#timeline li").last.is_visible()
    state_text = page.locator("#state-table").inner_text()
    assert "first response due" in state_text and "first_response_due" not in state_text, state_text
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d{3,}|T\d{2}:\d{2}", state_text), state_text
    page.locator("#timeline li").nth(2).click()
    page.wait_for_function("new URLSearchParams(location.search).get('version') === '3'")
    page.screenshot(path=str(OUTPUT / "dashboard-audit-timeline.png"), full_page=True)

    for complaint in reopened:
        clocks = httpx.get(f"{base_url}/audit/complaints/{complaint}/sla", headers=bearer(), timeout=30).json()["clocks"]
        life = [m["event"] for k in clocks if k["metric"] == "resolution" for m in k["life"]]
        assert "reopened" in life and "fulfilled" in life[:life.index("reopened")], (complaint, life)
    assert not watch.errors, watch.errors
    page.close()


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_phone_sized_window(base_url: str, browser: object, lang: str) -> None:
    """At 390 px: the top bar wraps rather than overflowing, and no legend lies over its chart."""
    OUTPUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport=PHONE)  # type: ignore[attr-defined]
    watch = Watch(page)
    sign_in(page, base_url, "head", f"/dashboard?lang={lang}")
    page.wait_for_selector("#sup-daily .main-svg", timeout=15_000)
    page.wait_for_selector("#sup-load .main-svg", timeout=15_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    top = page.locator(".topbar")
    for part in ("#who", "#lang", "#workspace-link", ".brand"):
        box = page.locator(part).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 0.5, (part, box)
    assert page.evaluate("(() => { const t = document.querySelector('.topbar'); return t.scrollWidth <= t.clientWidth; })()")
    for chart_id in ("sup-daily", "sup-load"):
        legend = page.locator(f"#{chart_id} .legend").bounding_box()
        plot_area = page.locator(f"#{chart_id} .nsewdrag").first.bounding_box()
        assert legend["y"] >= plot_area["y"] + plot_area["height"] or legend["y"] + legend["height"] <= plot_area["y"], \
            (chart_id, legend, plot_area)
    assert top.is_visible()
    page.screenshot(path=str(OUTPUT / f"dashboard-phone-{lang}.png"), full_page=True)
    assert not watch.errors, watch.errors
    page.close()
