"""The read API through the real app, over read models built from a known history.

The history is driven through `ComplaintDesk` with a fake clock; its events go through
the read node's own projectors into DuckDB. Expected figures are computed here from the
write side's aggregates (their status, due times and milestones), not from the read side.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from aggregates.complaint import OPEN
from complaints.store import open_desk
from commands.desk import ComplaintDesk
from commands.models import (
    AssignComplaint, CloseComplaint, RecordContact, RegisterComplaint, ReopenComplaint,
    ResolveComplaint, TriageComplaint, VerifyResolution, WaitOnCustomer, WithdrawComplaint,
)
from aggregates.categories import load_categories
from complaints.settings import Settings
from complaints.wiring import Wiring
from consumers.stored_events import envelopes
from projections.base import to_batch
from projections.event_log import EventLog
from projections.models import make as make_projectors
from read_api.app import create_read_app
from tests.conftest import FakeClock
from tests.identity import AUTHENTICATE, OPERATOR, bearer

TZ_OFFSET = timedelta(hours=8)  # Asia/Shanghai, the default time zone of the filters
# Where each complaint's customer is (D's did not say).
REGIONS = {"P": "Guangdong", "A": "Guangdong", "B": "Shanghai", "C": "Guangdong", "D": None, "E": "Shanghai"}


def build_read_db(desk: ComplaintDesk, db: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """The desk's events through the read node's projectors, as a read node applies them."""
    db = db or duckdb.connect()
    log = EventLog()
    log.create_schema(db)
    projectors = make_projectors()
    for projector in projectors:
        projector.create_schema(db)
    start = 0
    while notifications := desk.recorder.select_notifications(start + 1, 5_000):
        batch = to_batch(envelopes(desk.mapper, notifications))
        db.begin()
        new = log.insert_new(db, batch)
        for projector in projectors:
            projector.apply(db, new)
        db.commit()
        start = notifications[-1].id
    return db


class History:
    """Six complaints over two weeks, and the instants worth asking about."""

    def __init__(self, settings: Settings) -> None:
        # Tuesday 2026-11-17 10:00 in Shanghai.
        self.clock = FakeClock(datetime(2026, 11, 17, 2, 0, tzinfo=UTC))
        self.desk = open_desk(settings, clock=self.clock)
        self.ids: dict[str, UUID] = {}
        self.snapshot: dict[str, str] = {}
        run = self.run
        run("P", "C-1", "vip", "web", "router", [
            TriageComplaint(category="product_defect", severity="major"),
            AssignComplaint(team="hardware", agent="ann"),
            RecordContact(direction="outbound", channel="phone", summary="called"),
            ResolveComplaint(resolution="replaced"),
            VerifyResolution(csat=4, nps=9),
            CloseComplaint(),
        ])
        self.clock.now = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 local
        run("A", "C-1", "vip", "web", "router", [
            TriageComplaint(category="product_defect", severity="major"),
            AssignComplaint(team="hardware", agent="ann"),
            RecordContact(direction="outbound", channel="phone", summary="called"),
            ResolveComplaint(resolution="patched"),
            VerifyResolution(csat=5, nps=10),
        ])
        run("B", "C-2", "regular", "phone", "tv", [
            TriageComplaint(category="billing", severity="normal"),
            AssignComplaint(team="billing", agent="bob"),
        ])
        run("D", "C-4", "regular", "app", "tv", [])
        self.as_of = self.clock.now
        self.snapshot = {name: self.desk.get_complaint(cid).status for name, cid in self.ids.items()}
        self.clock.advance(minutes=7)
        run("C", "C-3", "regular", "wechat", "router", [
            TriageComplaint(category="product_defect", severity="minor"),
            AssignComplaint(team="hardware", agent="ann"),
            RecordContact(direction="outbound", channel="wechat", summary="asked for photos"),
            WaitOnCustomer(reason="photos"),
        ])
        self.desk.execute(self.ids["D"], WithdrawComplaint(reason="solved myself"), OPERATOR)
        run("E", "C-5", "regular", "email", "tv", [
            TriageComplaint(category="logistics", severity="normal"),
            AssignComplaint(team="logistics", agent="cat"),
            RecordContact(direction="outbound", channel="email", summary="tracking sent"),
            ResolveComplaint(resolution="delivered"),
            ReopenComplaint(reason="wrong item"),
            ResolveComplaint(resolution="exchanged"),
            VerifyResolution(csat=2, nps=3),
        ])
        self.now = self.clock.now + timedelta(hours=1)  # 17:xx local, the same day

    def run(self, name: str, customer: str, tier: str, channel: str, product: str, commands: list[Any]) -> None:
        self.ids[name] = self.desk.register(RegisterComplaint(
            channel=channel, customer={"id": customer, "tier": tier},
            customer_personal={"name": name, "contact": f"{name}@example.com"},
            title=f"complaint {name}", description=f"about {product}", product=product,
            region=REGIONS[name], order_ref=f"ORD-{name}",
        ), OPERATOR).complaint_id
        for command in commands:
            self.clock.advance(minutes=10)
            self.desk.execute(self.ids[name], command, OPERATOR)
        self.clock.advance(minutes=5)

    def states(self) -> dict[str, dict[str, Any]]:
        return {name: self.desk.get_complaint(cid).state() for name, cid in self.ids.items()}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    path = tmp_path_factory.mktemp("read-api") / "events.sqlite"
    h = History(Settings(store="sqlite", sqlite_path=path))
    yield h
    h.desk.close()


@pytest.fixture(scope="module")
def client(history: History) -> Iterator[TestClient]:
    db = build_read_db(history.desk)
    with TestClient(create_read_app(db, AUTHENTICATE, clock=lambda: history.now), headers=bearer()) as c:
        yield c
    db.close()


def local_day(at: datetime) -> Any:
    return (at + TZ_OFFSET).date()


# ------------------------------------------------------------------ supervisor
def test_supervisor_counts_load_and_sla(client: TestClient, history: History) -> None:
    d = client.get("/dashboards/supervisor").json()
    states = history.states()
    now = history.now
    today = local_day(now)
    assert d["counts"]["pending"] == sum(s["status"] in OPEN for s in states.values()) == 2
    assert d["counts"]["new_today"] == sum(local_day(s["registered_at"]) == today for s in states.values()) == 5
    assert d["counts"]["resolved_today"] == sum(
        s["resolved_at"] is not None and local_day(s["resolved_at"]) == today for s in states.values()) == 2
    assert {c["key"]: c["count"] for c in d["by_status"]} == dict(Counter(s["status"] for s in states.values()))

    load = {(a["team"], a["agent"]): a for a in d["agent_load"]}
    open_by: Counter[tuple[str, str]] = Counter(
        (s["team"], s["agent"]) for s in states.values() if s["status"] in OPEN)
    assert {k: a["open"] for k, a in load.items() if a["open"]} == dict(open_by)
    assert load[("hardware", "ann")]["waiting"] == 1

    # SLA attainment, from the due times the write side recorded.
    def first_response(s: dict[str, Any]) -> str | None:
        due, done = s["first_response_due"], s["first_responded_at"]
        if due is None:
            return None
        if done is not None:
            return "met" if done <= due else "breached"
        return "breached" if now > due else None

    verdicts = Counter(first_response(s) for s in states.values())
    fr = d["sla"]["first_response"]
    assert (fr["met"], fr["breached"]) == (verdicts["met"], verdicts["breached"])
    assert fr["attainment"] == pytest.approx(verdicts["met"] / (verdicts["met"] + verdicts["breached"]))
    b = states["B"]
    if now > b["first_response_due"]:
        assert [row["complaint_id"] for row in d["breached"] if row["metric"] == "first_response"] == [str(history.ids["B"])]
        assert d["breached"][0]["title"] == "complaint B"
        assert load[("billing", "bob")]["overdue"] == 1
    res = d["sla"]["resolution"]
    resolved = [s for s in states.values() if s["resolved_at"] is not None and s["resolution_due"] is not None]
    assert res["met"] == sum(s["resolved_at"] <= s["resolution_due"] for s in resolved)
    daily = {p["bucket"]: p for p in d["daily"]}
    assert daily[str(today)]["new"] == 5 and daily[str(today)]["resolved"] == 2
    # Every day of the window, a quiet one as much as a busy one, up to today.
    first = local_day(datetime.fromisoformat(d["window"]["start"]))
    assert list(daily) == [str(first + timedelta(days=i)) for i in range((today - first).days + 1)]
    assert sum(p["new"] for p in d["daily"]) == d["counts"]["new_in_period"]

    # A quiet day: today without a complaint still ends the chart, at zero.
    tomorrow = client.get("/dashboards/supervisor", params={"as_of": (now + timedelta(days=1)).isoformat()}).json()
    assert tomorrow["daily"][-1] == {"bucket": str(today + timedelta(days=1)), "new": 0, "resolved": 0}


def test_as_of_shows_the_past(client: TestClient, history: History) -> None:
    as_of = history.as_of.isoformat()
    d = client.get("/dashboards/supervisor", params={"as_of": as_of}).json()
    assert d["window"]["as_of"].startswith(history.as_of.strftime("%Y-%m-%dT%H:%M"))
    assert d["counts"]["pending"] == sum(s in OPEN for s in history.snapshot.values())
    assert {c["key"]: c["count"] for c in d["by_status"]} == dict(Counter(history.snapshot.values()))


# ------------------------------------------------------------------ product and executive
def test_product_dashboard(client: TestClient, history: History) -> None:
    d = client.get("/dashboards/product", params={"release": "2026-11-20", "release_days": 3}).json()
    states = history.states()
    products = Counter(s["product"] for s in states.values())
    assert [(p["key"], p["count"]) for p in d["by_product"]] == sorted(products.items(), key=lambda kv: (-kv[1], kv[0]))
    assert d["total"] == 6 and d["by_product"][0]["share"] == pytest.approx(0.5)
    categories = Counter(s["category"] for s in states.values() if s["category"])
    top = {c["key"]: (c["count"], c["share"]) for c in d["top_categories"]}
    assert top == {k: (n, pytest.approx(n / sum(categories.values()))) for k, n in categories.items()}
    wow = {g["key"]: g for g in d["week_over_week"]}
    assert wow["router"]["week"] == "2026-11-16" and wow["router"]["this_week"] == 1
    # 17th..23rd: P on the 17th, A and C on the 23rd
    assert [p["count"] for p in d["defect_trend"]["points"]] == [1, 0, 0, 0, 0, 0, 2]
    assert d["defect_trend"]["daily_before"] == pytest.approx(1 / 3) and d["defect_trend"]["daily_after"] == pytest.approx(0.5)
    assert d["defect_trend"]["points"][0]["bucket"] == "2026-11-17"


def test_product_filters(client: TestClient, history: History) -> None:
    d = client.get("/dashboards/product", params={"channel": "web"}).json()
    assert [(p["key"], p["count"]) for p in d["by_product"]] == [("router", 2)]
    d = client.get("/dashboards/supervisor", params={"team": "hardware"}).json()
    assert d["counts"]["pending"] == 1 and {a["agent"] for a in d["agent_load"]} == {"ann"}


def test_executive_dashboard(client: TestClient, history: History) -> None:
    d = client.get("/dashboards/executive", params={"granularity": "week"}).json()
    assert d["total"] == 6
    # P, A and E were resolved; E was reopened. A came within 7 days of P, from C-1.
    assert d["reopen_rate"] == pytest.approx(1 / 3)
    assert d["repeat_rate"] == pytest.approx(1 / 6)
    weeks = {p["bucket"]: p for p in d["satisfaction"]}
    assert weeks["2026-11-16"]["csat"] == 4 and weeks["2026-11-16"]["nps"] == 100
    assert weeks["2026-11-23"]["csat"] == pytest.approx(3.5) and weeks["2026-11-23"]["nps"] == 0
    states = history.states()
    high = sum(s["priority"] in ("urgent", "high") for s in states.values())
    assert sum(p["count"] for p in d["high_priority_monthly"]) == high


@pytest.mark.parametrize(("name", "value"), [("agent", "ann"), ("agent", "bob"), ("category", "product_defect"),
                                           ("category", "logistics"), ("region", "Guangdong"), ("region", "Shanghai")])
def test_agent_category_and_region_narrow_every_figure(client: TestClient, history: History, name: str,
                                                       value: str) -> None:
    """Each filter the docs promise picks exactly the complaints the write side says have
    that agent, category or region, in the dashboards, the read models and the exports."""
    states = history.states()
    chosen = {str(history.ids[n]) for n, s in states.items() if s[name] == value}
    still_open = {str(history.ids[n]) for n, s in states.items() if s[name] == value and s["status"] in OPEN}
    assert chosen and len(chosen) < len(states)  # the filter has something to narrow
    params = {name: value}
    supervisor = client.get("/dashboards/supervisor", params=params).json()
    assert supervisor["counts"]["pending"] == len(still_open)
    assert sum(a["open"] for a in supervisor["agent_load"]) == len(still_open)
    assert {c["key"]: c["count"] for c in supervisor["by_status"]} == dict(
        Counter(s["status"] for n, s in states.items() if s[name] == value))
    assert client.get("/dashboards/product", params=params).json()["total"] == len(chosen)
    assert client.get("/dashboards/executive", params=params).json()["total"] == len(chosen)
    sla = client.get("/sla", params=params | {"limit": 1000}).json()
    assert {r["complaint_id"] for r in sla["items"]} == chosen  # (its rows show agent and category, not region)
    assert {r.get(name, value) for r in sla["items"]} == {value}
    assert sum(r["open"] for r in client.get("/workload", params=params).json()["items"]) == len(still_open)
    assert sum(r["count"] for r in client.get("/trends", params=params).json()["items"]) == len(chosen)
    exported = pq.read_table(io.BytesIO(client.get("/export/complaints", params=params | {"format": "parquet"}).content))
    assert set(exported.column("complaint_id").to_pylist()) == chosen


def test_an_unknown_category_is_a_422_naming_the_allowed_ones(client: TestClient) -> None:
    """Not silently unfiltered figures: the categories come from aggregates/categories.toml."""
    allowed = load_categories()
    for path in ("/dashboards/supervisor", "/dashboards/product", "/sla", "/workload", "/trends",
                 "/export/complaints"):
        response = client.get(path, params={"category": "refunds"})
        assert response.status_code == 422, path
        problem = response.json()["detail"][0]
        assert problem["loc"] == ["query", "category"] and all(f"'{c}'" in problem["msg"] for c in allowed), problem
    assert client.get("/sla", params={"category": allowed[0]}).status_code == 200


def test_the_configured_categories_are_the_filters_values(tmp_path: Path) -> None:
    """COMPLAINTS_CATEGORIES names another list: the read API's `category` takes those."""
    listed = tmp_path / "categories.toml"
    listed.write_text('categories = ["mortgage", "credit_card"]\n')
    wiring = Wiring(Settings(store="sqlite", sqlite_path=tmp_path / "e.sqlite", categories=listed,
                             dev_issuer_key=tmp_path / "issuer.pem"))
    spec = wiring.read_app(None).openapi()
    parameter = next(p for p in spec["paths"]["/sla"]["get"]["parameters"] if p["name"] == "category")
    assert [alt.get("enum") for alt in parameter["schema"]["anyOf"]] == [["mortgage", "credit_card"], None]
    wiring.close()


# ------------------------------------------------------------------ read models
def test_sla_pages_are_stable_and_sortable(client: TestClient) -> None:
    first = client.get("/sla", params={"limit": 5, "sort": "due_at", "order": "desc"}).json()
    assert first["total"] == 12 and len(first["items"]) == 5  # two clocks a complaint
    rest = client.get("/sla", params={"limit": 5, "offset": 5, "sort": "due_at", "order": "desc"}).json()
    last = client.get("/sla", params={"limit": 5, "offset": 10, "sort": "due_at", "order": "desc"}).json()
    rows = first["items"] + rest["items"] + last["items"]
    assert len({(r["complaint_id"], r["metric"]) for r in rows}) == 12
    dues = [r["due_at"] for r in rows if r["due_at"] is not None]
    assert dues == sorted(dues, reverse=True) and rows[-1]["due_at"] is None  # None last
    only = client.get("/sla", params={"severity": "minor"}).json()
    assert {r["severity"] for r in only["items"]} == {"minor"} and only["total"] == 2


def test_workload_and_trends(client: TestClient) -> None:
    w = client.get("/workload", params={"sort": "open", "order": "desc"}).json()
    assert [(r["team"], r["agent"], r["open"]) for r in w["items"][:2]] == [("billing", "bob", 1), ("hardware", "ann", 1)]
    t = client.get("/trends", params={"dimension": "product", "granularity": "week"}).json()
    assert [(r["bucket"], r["key"], r["count"]) for r in t["items"]] == [
        ("2026-11-16", "router", 1), ("2026-11-23", "router", 2), ("2026-11-23", "tv", 3)]
    by_count = client.get("/trends", params={"dimension": "channel", "sort": "count", "order": "desc", "limit": 1}).json()
    # Six complaints, each alone on its day and channel: all tie, and ties go by (bucket, key).
    assert by_count["total"] == 6 and by_count["items"] == [{"bucket": "2026-11-17", "key": "web", "count": 1}]


# ------------------------------------------------------------------ audit
def test_audit_history_state_and_timeline(client: TestClient, history: History) -> None:
    cid = history.ids["E"]
    h = client.get(f"/audit/complaints/{cid}/history").json()
    assert [e["event_type"] for e in h["events"]] == [
        "Registered", "Triaged", "Assigned", "ContactRecorded", "Resolved", "Reopened", "Resolved", "Verified"]
    reopened = h["events"][5]
    assert reopened["actor"] == OPERATOR.subject and reopened["changes"]["status"] == {"before": "resolved", "after": "assigned"}
    s = client.get(f"/audit/complaints/{cid}/state", params={"version": 3}).json()
    assert s["version"] == 3 and s["state"]["agent"] == "cat" and s["state"]["status"] == "assigned"
    assert s["state"] == client.get(f"/audit/complaints/{cid}/state", params={"at": h["events"][2]["occurred_at"]}).json()["state"]
    t = client.get(f"/audit/complaints/{cid}/timeline").json()
    assert t["status"] == "verified" and t["title"] == "complaint E"
    assert [i["status"] for i in t["items"]][-3:] == ["assigned", "resolved", "verified"]
    assert "Reopened: wrong item" in t["items"][5]["summary"]


def test_search(client: TestClient, history: History) -> None:
    found = client.get("/audit/search", params={"customer": "C-1"}).json()["items"]
    assert {UUID(r["complaint_id"]) for r in found} == {history.ids["P"], history.ids["A"]}
    assert [r["order_ref"] for r in client.get("/audit/search", params={"text": "about tv", "order": "ORD-E"}).json()["items"]] == ["ORD-E"]


def test_errors(client: TestClient, history: History) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    for path in ("history", "timeline", "state"):
        response = client.get(f"/audit/complaints/{unknown}/{path}")
        assert response.status_code == 404 and unknown in response.json()["detail"]
    early = client.get(f"/audit/complaints/{history.ids['A']}/state", params={"at": "2020-01-01T00:00:00Z"})
    assert early.status_code == 404
    bad = client.get("/dashboards/supervisor", params={"severity": "catastrophic"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "severity"]
    assert client.get("/dashboards/product", params={"tz": "Mars/Base"}).json()["detail"][0]["loc"] == ["query", "tz"]
    naive = client.get("/dashboards/executive", params={"as_of": "2026-11-23T00:00:00"})
    assert naive.status_code == 422 and naive.json()["detail"][0]["loc"] == ["query", "as_of"]
    both = client.get(f"/audit/complaints/{history.ids['A']}/state", params={"version": 1, "at": "2026-11-23T00:00:00Z"})
    assert both.status_code == 422 and both.json()["detail"][0]["loc"] == ["query", "at"]
    assert client.get("/sla", params={"sort": "nope"}).status_code == 422
    assert client.get("/audit/complaints/not-a-uuid/history").json()["detail"][0]["loc"] == ["path", "complaint_id"]


def test_not_ready_is_503() -> None:
    with TestClient(create_read_app(duckdb.connect(), AUTHENTICATE), headers=bearer()) as c:
        response = c.get("/dashboards/supervisor")
    assert response.status_code == 503 and "start the read node" in response.json()["detail"]


# ------------------------------------------------------------------ export
def test_export_csv_and_parquet(client: TestClient, history: History) -> None:
    response = client.get("/export/sla", params={"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'filename="sla.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert len(rows) == 12 and {r["metric"] for r in rows} == {"first_response", "resolution"}
    parquet = pq.read_table(io.BytesIO(client.get("/export/complaints", params={"format": "parquet"}).content))
    assert parquet.num_rows == 6 and set(parquet.column("complaint_id").to_pylist()) == {str(i) for i in history.ids.values()}
    events = list(csv.DictReader(io.StringIO(client.get("/export/events").content.decode("utf-8-sig"))))
    assert len(events) == sum(history.desk.get_complaint(c).version for c in history.ids.values())
    section = list(csv.DictReader(io.StringIO(client.get("/export/product.by_product").content.decode("utf-8-sig"))))
    assert [(r["key"], r["count"]) for r in section] == [("router", "3"), ("tv", "3")]
    trends = pq.read_table(io.BytesIO(client.get("/export/trends", params={
        "format": "parquet", "dimension": "channel", "granularity": "month"}).content))
    assert sum(trends.column("count").to_pylist()) == 6
    assert client.get("/export/nothing").status_code == 422


def test_csv_exports_open_in_excel_with_the_json_instants(tmp_path: Path) -> None:
    """A CSV starts with the UTF-8 byte order mark (Excel then reads Chinese text as it is),
    and its instants are the JSON answers' own, row for row."""
    clock = FakeClock(datetime(2026, 11, 23, 2, 0, 0, 250_000, tzinfo=UTC))  # a fraction of a second too
    desk = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=clock)
    try:
        complaint = desk.register(RegisterComplaint(
            channel="phone", customer={"id": "C-8"}, customer_personal={"name": "王芳", "contact": "wang@example.com"},
            title="电动车电池有安全隐患", description="充电时冒烟", product="ebike"), OPERATOR).complaint_id
        clock.advance(minutes=3)
        desk.execute(complaint, TriageComplaint(category="product_defect", severity="major"), OPERATOR)
        db = build_read_db(desk)
    finally:
        desk.close()
    with TestClient(create_read_app(db, AUTHENTICATE, clock=lambda: clock.now + timedelta(hours=1)),
                    headers=bearer()) as reads:
        exported = reads.get("/export/events", params={"format": "csv", "period": "all"})
        sla_csv = reads.get("/export/sla", params={"format": "csv", "period": "all"}).content
        history_json = reads.get(f"/audit/complaints/{complaint}/history").json()["events"]
        sla_json = reads.get("/sla", params={"period": "all"}).json()["items"]
    assert exported.content.startswith(codecs.BOM_UTF8) and sla_csv.startswith(codecs.BOM_UTF8)
    events = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert "电动车电池有安全隐患" in events[0]["payload"]
    assert [(e["occurred_at"], e["recorded_at"]) for e in events] == [
        (e["occurred_at"], e["recorded_at"]) for e in history_json]
    assert events[0]["occurred_at"] == "2026-11-23T02:00:00.250000Z"
    clocks = list(csv.DictReader(io.StringIO(sla_csv.decode("utf-8-sig"))))
    instants = ("registered_at", "due_at", "stopped_at", "paused_since")
    key = lambda row: (row["metric"], int(row["cycle"]))  # noqa: E731
    assert sorted([key(r), *(r[i] or None for i in instants)] for r in clocks) == sorted(
        [key(r), *(r[i] for i in instants)] for r in sla_json)
    db.close()


def test_export_streams_in_batches(history: History) -> None:
    """A large export leaves in several chunks (one per Arrow batch), never as one body."""
    from read_api import export

    db = duckdb.connect()
    reader = db.sql("SELECT range AS n, 'row ' || range AS label FROM range(200000)").to_arrow_reader(50_000)
    chunks = list(export.stream(reader, "csv"))
    assert len(chunks) >= 4 and sum(c.count(b"\n") for c in chunks) == 200_001
    reader = db.sql("SELECT range AS n FROM range(200000)").to_arrow_reader(50_000)
    parts = list(export.stream(reader, "parquet"))
    assert len(parts) >= 2 and pq.read_table(io.BytesIO(b"".join(parts))).num_rows == 200_000


# ------------------------------------------------------------------ page
def test_page_and_charting_library(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"
    page = client.get("/dashboard")
    assert page.status_code == 200 and "/static/vendor/plotly.min.js" in page.text
    js = client.get("/static/vendor/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000].lower()
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    dims = client.get("/dimensions").json()
    assert dims["team"] == ["billing", "hardware", "logistics"] and dims["product"] == ["router", "tv"]


def test_mounts_into_another_app(history: History) -> None:
    """The lead's process mounts the router next to the command API."""
    from fastapi import FastAPI

    from read_api.app import read_router

    db = build_read_db(history.desk)
    app = FastAPI()
    app.include_router(read_router(lambda: db, AUTHENTICATE, clock=lambda: history.now))
    with TestClient(app, headers=bearer()) as c:
        assert c.get("/dashboards/supervisor").json()["counts"]["pending"] == 2
    db.close()


def test_cache_reuses_answers_until_new_events() -> None:
    from read_api.cache import ResponseCache

    db = duckdb.connect()
    db.execute("CREATE TABLE events (position BIGINT)")
    cache, calls = ResponseCache(ttl=60), []
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert [cache.get("k", db, compute) for _ in range(3)] == [1, 1, 1]
    db.execute("INSERT INTO events VALUES (1)")  # the read node applied a batch
    assert cache.get("k", db, compute) == 2 and cache.get("other", db, compute) == 3
    assert ResponseCache(ttl=0).get("k", db, compute) == 4  # off: always computed
