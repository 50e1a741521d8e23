"""Alerts on the read side: the `alerts` read model, `GET /alerts`, `GET /alerts/{id}` and
the dashboards' `open_alerts`.

Alerts are raised, acknowledged and resolved through a real desk (SQLite in a temporary
directory), a read node with every read model follows the event store in-process, and
the read API answers over HTTP in-process (TestClient) with the tests' bearer tokens.
The complaint read models must not notice the alert events: the same rows before and
after them, and no dead letters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import json

import duckdb
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from aggregates.access import Principal
from commands.alerts import AcknowledgeAlert, RaiseAlert, ResolveAlert
from commands.desk import ComplaintDesk
from commands.models import AssignComplaint, RegisterComplaint, TriageComplaint
from complaints.identity import DevUser
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.read_node import ReadNode
from consumers.sources import LogSource
from projections.alerts import ALERTS, AlertsProjector
from projections.base import BATCH_SCHEMA
from projections.facts import PoisonEvent
from projections.models import MODELS, make
from read_api.app import create_read_app
from tests.identity import AUTHENTICATE, OPERATOR, bearer, principal_of

AUTOMATION = Principal("automation:alerts", "rules", frozenset({"automation"}))
AGENT = DevUser("billing-1", "Li Na", ("agent",), "billing")
LEAD = DevUser("billing-lead", "Liu Yang", ("supervisor",), "billing")
INTAKE = DevUser("intake", "Wang Fang", ("intake",))
# Every table of the complaint read models (not the alerts').
COMPLAINT_TABLES = sorted(t for name, cls in MODELS.items() if name != "alerts" for t in cls.tables)


@dataclass
class World:
    desk: ComplaintDesk
    node: ReadNode
    client: TestClient
    complaints: dict[str, UUID]
    alerts: dict[str, UUID]
    before: dict[str, Any]  # the complaint read models before any alert

    def catch_up(self) -> None:
        self.node.catch_up()

    def get(self, path: str, user: DevUser | None = None, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers=bearer(user) if user else bearer())
        assert response.status_code == 200, response.text
        return response.json()


def contents(db: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, Any]:
    return {t: db.execute(f'SELECT count(*), sum(hash(t)::HUGEINT) FROM "{t}" t').fetchall()[0] for t in tables}


def raise_alert(desk: ComplaintDesk, key: str, **fields: Any) -> UUID:
    defaults: dict[str, Any] = {"rule": "sla_breach", "rules_version": "2026-12", "subject_type": "complaint",
                                "subject": key, "severity": "warning", "title_en": f"Alert {key}",
                                "title_zh": f"告警 {key}", "recipients": ["supervisor"]}
    return desk.raise_alert(RaiseAlert(key=key, **(defaults | fields)), AUTOMATION).alert_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("alerts")
    desk = open_desk(Settings(store="sqlite", sqlite_path=tmp / "events.sqlite"))
    complaints = {}
    for name, team in (("A", "billing"), ("B", "tech"), ("C", None)):
        complaints[name] = cid = desk.register(RegisterComplaint(
            channel="web", customer={"id": f"C-{name}", "tier": "regular"},
            customer_personal={"name": name, "contact": f"{name}@example.com"},
            title=f"complaint {name}", description="broken", product="router"), OPERATOR).complaint_id
        if team:
            desk.execute(cid, TriageComplaint(category="billing", severity="major"), OPERATOR)
            desk.execute(cid, AssignComplaint(team=team, agent=f"{team}-1"), OPERATOR)
    node = ReadNode(tmp / "read.duckdb", LogSource(desk.recorder, desk.mapper), make(), poll_timeout=0.01)
    node.open()
    node.catch_up()
    before = contents(node.cursor(), COMPLAINT_TABLES)

    a, b = complaints["A"], complaints["B"]
    alerts = {
        # for the supervisor dashboard: team billing's, critical, about complaint A
        "breach": raise_alert(desk, f"sla_breach:{a}", subject=str(a), complaint_id=a, team="billing",
                              severity="critical", recipients=["supervisor", "agent"],
                              evidence={"metric": "resolution", "overdue_minutes": 42, "complaints": [str(a)]}),
        # team tech's, for the supervisor dashboard as well
        "repeat": raise_alert(desk, "repeat_customer:C-B", rule="repeat_customer", subject_type="customer",
                              subject="C-B", complaint_id=b, team="tech", recipients=["supervisor"]),
        # the product dashboard's: no team
        "spike": raise_alert(desk, "product_spike:router", rule="product_spike", subject_type="product",
                             subject="router", severity="info", recipients=["quality"]),
        # the executive dashboard's: one resolved by its rule, one open
        "gone": raise_alert(desk, "volume:w48", rule="volume", subject_type="category_product",
                            subject="billing/router", recipients=["executive"]),
        "volume": raise_alert(desk, "volume:w49", rule="volume", subject_type="category_product",
                              subject="billing/router", severity="critical", recipients=["executive"]),
    }
    desk.act_on_alert(alerts["breach"], AcknowledgeAlert(note="on it"), principal_of(LEAD))
    desk.act_on_alert(alerts["gone"], ResolveAlert(reason="back to normal", automatic=True), AUTOMATION)
    node.catch_up()
    # as_of exactly as asked (the default rounds it down to the minute): the test asks about
    # the microsecond before an alert was raised or acknowledged.
    app = create_read_app(node, AUTHENTICATE, as_of_granularity=0)
    with TestClient(app) as client:
        yield World(desk, node, client, complaints, alerts, before)
    node.close()
    desk.close()


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["alert_id"] for item in items]


def test_the_complaint_read_models_ignore_alert_events(world: World) -> None:
    db = world.node.cursor()
    assert contents(db, COMPLAINT_TABLES) == world.before
    assert db.execute("SELECT count(*) FROM dead_letters").fetchall() == [(0,)]
    assert db.execute("SELECT count(*) FROM events WHERE event_type LIKE 'Alert%'").fetchall() == [(7,)]
    assert db.execute(f"SELECT count(*) FROM {ALERTS}").fetchall() == [(5,)]
    assert db.execute("SELECT count(*) FROM complaint_facts").fetchall() == [(3,)]
    # An alert's id is no complaint's, for the audit routes either.
    response = world.client.get(f"/audit/complaints/{world.alerts['breach']}/history", headers=bearer())
    assert response.status_code == 404, response.text


def test_list_filters_and_order(world: World) -> None:
    a = world.alerts
    # Active by default: critical first, then newest first.
    active = world.get("/alerts")
    assert ids(active["items"]) == [str(a[k]) for k in ("volume", "breach", "repeat", "spike")]
    assert active["total"] == 4 and active["limit"] == 100
    assert [item["status"] for item in active["items"]] == ["open", "acknowledged", "open", "open"]
    assert ids(world.get("/alerts", status="open")["items"]) == [str(a[k]) for k in ("volume", "repeat", "spike")]
    assert ids(world.get("/alerts", status="acknowledged")["items"]) == [str(a["breach"])]
    resolved = world.get("/alerts", status="resolved")["items"]
    assert ids(resolved) == [str(a["gone"])]
    assert resolved[0]["resolution_reason"] == "back to normal" and resolved[0]["resolved_automatically"] is True
    for params, expected in (
        ({"rule": "volume"}, ["volume"]),
        ({"rule": "volume", "status": "resolved"}, ["gone"]),
        ({"severity": "critical"}, ["volume", "breach"]),
        ({"team": "tech"}, ["repeat"]),
        ({"subject_type": "product"}, ["spike"]),
        ({"subject": "C-B"}, ["repeat"]),
        ({"complaint_id": str(world.complaints["A"])}, ["breach"]),
    ):
        assert ids(world.get("/alerts", **params)["items"]) == [str(a[k]) for k in expected], params
    page = world.get("/alerts", limit=1)
    assert len(page["items"]) == 1 and page["total"] == 4
    for bad in ({"status": "closed"}, {"limit": 0}, {"limit": 1001}, {"severity": "fatal"}):
        response = world.client.get("/alerts", params=bad, headers=bearer())
        assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "query", bad


def test_one_alert_with_its_evidence_and_history(world: World) -> None:
    alert = world.get(f"/alerts/{world.alerts['breach']}")
    assert alert["evidence"] == {"metric": "resolution", "overdue_minutes": 42,
                                 "complaints": [str(world.complaints["A"])]}
    assert alert["status"] == "acknowledged" and alert["version"] == 2 and alert["team"] == "billing"
    assert alert["acknowledged_by"] == "billing-lead" and alert["acknowledge_note"] == "on it"
    assert alert["raised_by"] == "automation:alerts" and alert["recipients"] == ["supervisor", "agent"]
    assert alert["title_zh"].startswith("告警") and alert["complaint_id"] == str(world.complaints["A"])
    history = alert["history"]
    assert [(e["version"], e["event_type"], e["actor"]) for e in history] == [
        (1, "AlertRaised", "automation:alerts"), (2, "AlertAcknowledged", "billing-lead")]
    assert history[0]["payload"]["severity"] == "critical" and history[1]["payload"]["note"] == "on it"
    missing = world.client.get(f"/alerts/{uuid4()}", headers=bearer())
    assert missing.status_code == 404 and "no alert" in missing.json()["detail"]
    # A complaint's id is no alert's.
    assert world.client.get(f"/alerts/{world.complaints['A']}", headers=bearer()).status_code == 404


def test_who_may_see_which_alerts(world: World) -> None:
    a = world.alerts
    for path in ("/alerts", f"/alerts/{a['breach']}"):
        assert world.client.get(path, headers=bearer(INTAKE)).status_code == 403, path  # no read:alerts
        assert world.client.get(path).status_code == 401, path
    # Team-bound: an agent and a team lead see their team's alerts only.
    for user in (AGENT, LEAD):
        assert ids(world.get("/alerts", user)["items"]) == [str(a["breach"])]
        assert world.get(f"/alerts/{a['breach']}", user)["alert_id"] == str(a["breach"])
        for path, params in ((f"/alerts/{a['repeat']}", {}), (f"/alerts/{a['spike']}", {}), ("/alerts", {"team": "tech"})):
            response = world.client.get(path, params=params, headers=bearer(user))
            assert response.status_code == 403 and "billing" in response.json()["detail"], (user, path)


def test_the_dashboards_show_their_audiences_open_alerts(world: World) -> None:
    a = world.alerts
    supervisor = world.get("/dashboards/supervisor")["open_alerts"]
    assert ids(supervisor) == [str(a["repeat"]), str(a["breach"])]  # newest first
    assert supervisor[1]["status"] == "acknowledged" and supervisor[1]["evidence"]["overdue_minutes"] == 42
    assert ids(world.get("/dashboards/product")["open_alerts"]) == [str(a["spike"])]
    assert ids(world.get("/dashboards/executive")["open_alerts"]) == [str(a["volume"])]  # not the resolved one
    # A team's view (a team lead's whatever it asks): that team's alerts.
    assert ids(world.get("/dashboards/supervisor", LEAD)["open_alerts"]) == [str(a["breach"])]
    assert ids(world.get("/dashboards/supervisor", team="tech")["open_alerts"]) == [str(a["repeat"])]
    # As of an instant: the alerts raised by then and not resolved, as they stood.
    breach = world.get(f"/alerts/{a['breach']}")
    past = world.get("/dashboards/supervisor", as_of=_minus(breach["acknowledged_at"], microseconds=1))["open_alerts"]
    assert ids(past) == [str(a["repeat"]), str(a["breach"])]
    assert past[1]["status"] == "open" and past[1]["acknowledged_by"] is None and past[1]["version"] == 1
    assert world.get("/dashboards/supervisor", as_of=_minus(breach["raised_at"], microseconds=1))["open_alerts"] == []


def _minus(iso: str, **delta: float) -> str:
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")) - timedelta(**delta)).isoformat()


def test_acknowledging_and_resolving_show_on_the_next_batch(world: World) -> None:
    # Raised, acknowledged and resolved in one batch: applied in order.
    quick = raise_alert(world.desk, "manual:1", rule="manual", team="logistics", recipients=["analyst"])
    world.desk.act_on_alert(quick, AcknowledgeAlert(), OPERATOR)
    world.desk.act_on_alert(quick, ResolveAlert(reason="done"), OPERATOR)
    # And one step per batch.
    slow = raise_alert(world.desk, "manual:2", rule="manual", team="logistics", recipients=["analyst"])
    world.catch_up()
    assert ids(world.get("/alerts", rule="manual")["items"]) == [str(slow)]
    done = world.get(f"/alerts/{quick}")
    assert (done["status"], done["version"], done["acknowledged_by"], done["resolved_by"]) == (
        "resolved", 3, "operator", "operator")
    assert [e["event_type"] for e in done["history"]] == ["AlertRaised", "AlertAcknowledged", "AlertResolved"]
    world.desk.act_on_alert(slow, AcknowledgeAlert(note="looking"), OPERATOR)
    world.catch_up()
    assert world.get("/alerts", rule="manual")["items"][0]["status"] == "acknowledged"
    world.desk.act_on_alert(slow, ResolveAlert(reason="fixed"), OPERATOR)
    world.catch_up()
    assert world.get("/alerts", rule="manual")["items"] == []
    assert ids(world.get("/alerts", rule="manual", status="resolved")["items"]) == [str(slow), str(quick)]
    assert contents(world.node.cursor(), COMPLAINT_TABLES) == world.before
    assert world.node.cursor().execute("SELECT count(*) FROM dead_letters").fetchall() == [(0,)]


def test_a_malformed_alert_event_is_poison_and_nothing_is_written() -> None:
    db = duckdb.connect()
    projector = AlertsProjector()
    projector.create_schema(db)
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    raised = {"key": "k", "rule": "r", "rules_version": "1", "subject_type": "product", "subject": "tv",
              "complaint_id": None, "team": None, "severity": "info", "title_en": "t", "title_zh": "t",
              "evidence": {}, "recipients": ["quality"], "owner": None, "due_at": None}

    def row(position: int, alert: str, version: int, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"position": position, "complaint_id": alert, "complaint_version": version, "event_type": event_type,
                "event_version": 1, "occurred_at": at, "recorded_at": at, "actor": "rules", "command_id": f"c{position}",
                "correlation_id": "x", "payload": json.dumps(payload)}

    good, bad = str(uuid4()), str(uuid4())
    batch = pa.Table.from_pylist([
        row(1, good, 1, "AlertRaised", raised),
        row(2, bad, 1, "AlertRaised", {k: v for k, v in raised.items() if k != "severity"}),
        row(3, good, 2, "AlertResolved", {"reason": "ok", "automatic": True}),
    ], schema=BATCH_SCHEMA)
    with pytest.raises(PoisonEvent) as raised_error:
        projector.apply(db, batch)
    assert raised_error.value.positions == [2] and "severity" in str(raised_error.value)
    assert db.execute(f"SELECT count(*) FROM {ALERTS}").fetchall() == [(0,)]
    projector.apply(db, batch.filter(pa.array([True, False, True])))  # what a read node applies then
    assert db.execute(f"SELECT status, version, resolved_automatically FROM {ALERTS}").fetchall() == [
        ("resolved", 2, True)]
