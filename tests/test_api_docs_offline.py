"""/docs and /redoc work offline: every app that offers them serves Swagger UI's and
ReDoc's scripts and styles itself (from the installed fastapi-offline package), and the
pages refer to nothing on another origin. Through real servers on loopback: the command
API, the read API and the notifier (each as the composition root builds it), and
`complaints run`; Swagger UI and ReDoc then draw every operation in headless Chromium
with every request to another origin refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from complaints.settings import Settings
from complaints.wiring import Wiring
from scripts.serving import free_port
from tests.running import complaints_run
from tests.test_dashboard_browser import browser  # noqa: F401  (the fixture: Debian's chromium)

DOC_PAGES = ("/docs", "/redoc")
# What each kind of asset must be served as.
ASSET_TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",), ".png": ("image/png",)}


class AssetLinks(HTMLParser):
    """The URLs a page loads: its scripts, style sheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (tag, name) in {("script", "src"), ("link", "href"), ("img", "src")}:
                self.urls.append(value)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` on a free loopback port, in a thread: its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start within 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def wiring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wiring]:
    d = tmp_path_factory.mktemp("docs")
    wired = Wiring(Settings(store="sqlite", sqlite_path=d / "e.sqlite", read_db=d / "read.duckdb",
                            notifier_state=d / "notifier.sqlite", dev_issuer_key=d / "issuer.pem",
                            master_key=d / "master.key", chain_key=d / "chain.key", links_key=d / "links.key"))
    yield wired
    wired.close()


@pytest.fixture(scope="module")
def servers(wiring: Wiring, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every app that offers docs, each on its own port: name -> base URL."""
    desk = wiring.desk()
    with serving(wiring.command_app(desk)) as command, serving(wiring.read_app(None)) as read, \
            serving(wiring.notifier_app(wiring.notifier(desk=desk))) as notifier, \
            complaints_run(tmp_path_factory.mktemp("run")) as run:
        yield {"command": command, "read": read, "notifier": notifier, "run": run}


APPS = ("command", "read", "notifier", "run")


@pytest.mark.parametrize("page", DOC_PAGES)
@pytest.mark.parametrize("app", APPS)
def test_docs_pages_load_only_their_own_assets(servers: dict[str, str], app: str, page: str) -> None:
    base = servers[app]
    answer = httpx.get(base + page, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "img-src 'self' data:;" in answer.headers["content-security-policy"]  # ReDoc's logo stays away
    html = answer.text
    # Nothing from another origin: no absolute or protocol-relative URL anywhere in the page.
    assert "://" not in html and "'//" not in html and '"//' not in html, html
    links = AssetLinks()
    links.feed(html)
    scripts = [url for url in links.urls if url.endswith(".js")]
    assert scripts, f"{page} loads no script of its own: {links.urls}"
    for url in links.urls:
        absolute = urljoin(base + page, url)
        assert urlsplit(absolute).netloc == urlsplit(base).netloc, url
        asset = httpx.get(absolute, timeout=10)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"]
        assert kind.startswith(ASSET_TYPES[Path(urlsplit(url).path).suffix]), (url, kind)
        if not kind.startswith("image/"):
            assert len(asset.content) > 100_000, (url, len(asset.content))  # the real bundle, not a stub
    assert httpx.get(base + "/openapi.json", timeout=10).json()["openapi"].startswith("3.")


def test_swagger_ui_and_redoc_draw_every_operation_offline(servers: dict[str, str], browser: object,
                                                           tmp_path: Path) -> None:
    """In Chromium, with every request to another origin refused: Swagger UI shows one
    block per operation of /openapi.json, ReDoc one menu entry per operation id."""
    base = servers["run"]
    spec = httpx.get(base + "/openapi.json", timeout=10).json()
    ids = sorted(op["operationId"] for item in spec["paths"].values() for op in item.values())
    context = browser.new_context()  # type: ignore[attr-defined]
    elsewhere: list[str] = []

    def only_here(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if urlsplit(url).netloc == urlsplit(base).netloc or url.startswith(("data:", "blob:")):
            route.continue_()  # type: ignore[attr-defined]
        else:
            elsewhere.append(url)
            route.abort()  # type: ignore[attr-defined]

    context.route("**/*", only_here)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(base + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() == len(ids)
        assert page.locator(".info .title").first.inner_text().startswith("Complaints: command API")
        page.goto(base + "/redoc")
        # Its menu: one entry per operation, under its tag ("tag/complaints/operation/complaints-register").
        menu = "li[data-item-id*='/operation/']"
        page.wait_for_selector(menu, state="attached", timeout=30_000)
        shown = page.eval_on_selector_all(menu, "items => items.map(i => i.getAttribute('data-item-id'))")
        assert sorted(item.partition("/operation/")[2] for item in shown) == ids
        page.screenshot(path=str(tmp_path / "redoc.png"))
    finally:
        context.close()
    assert not elsewhere, f"requests to other origins: {elsewhere}"
    assert not errors, errors
