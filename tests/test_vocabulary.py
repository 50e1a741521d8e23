"""The names of the domain's codes (aggregates.vocabulary): every code the domain knows has
one in both languages, and the page gets them, with the desk's time zone, from
/static/vocabulary.json (served by a real server)."""

from __future__ import annotations

from typing import get_args

import httpx
from fastapi import FastAPI

from aggregates.access import ROLES
from aggregates.alert import AlertSeverity, SubjectType
from aggregates.categories import load_categories
from aggregates.complaint import Channel, Status
from aggregates.events import PAYLOADS
from aggregates.priority import Impact, Priority, Severity, Tier
from aggregates.vocabulary import VOCABULARY
from read_api.page import page_router
from tests.test_dashboard_browser import free_port, serving

DOMAIN = {"status": Status, "channel": Channel, "severity": Severity, "priority": Priority, "impact": Impact,
          "tier": Tier, "alert_severity": AlertSeverity, "subject_type": SubjectType}


def test_every_code_has_its_names() -> None:
    for kind, codes in DOMAIN.items():
        assert set(VOCABULARY[kind]) == set(get_args(codes)), kind
    assert set(VOCABULARY["role"]) == set(ROLES)
    assert set(VOCABULARY["event_type"]) == set(PAYLOADS)
    assert set(load_categories()) <= set(VOCABULARY["category"])
    for kind, table in VOCABULARY.items():
        for code, (en, zh) in table.items():
            assert en.strip() and zh.strip() and en != zh, (kind, code)


def test_the_page_gets_the_names_and_the_desks_time_zone() -> None:
    app = FastAPI()
    app.include_router(page_router("Europe/Berlin"))
    with serving(app, free_port()) as url:
        answer = httpx.get(f"{url}/static/vocabulary.json", timeout=10)
        script = httpx.get(f"{url}/static/i18n.js", timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["time_zone"] == "Europe/Berlin"
    assert body["labels"]["category"]["product_defect"] == ["product defect", "产品缺陷"]
    assert body["labels"]["status"]["waiting_on_customer"] == ["waiting on customer", "等待客户"]
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "window.I18N" in script.text
