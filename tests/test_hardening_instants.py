"""Issue 14: a sane window for every instant, and one bad event never holds a read node back.

Regression tests of findings 1, 2 and 3 (each failed on the code before the fix: a year-9999
registration held a read node for minutes, a year-1 one made every `as_of` view and the
complaint's triage a 500, and query instants at the ends of the calendar were a 500), then
the window itself (commands, the domain, the calendar table, queries), the poison search's
budget, and a read node fed hypothesis-generated extreme events in-process and through a
real Kafka (`kafka`, `slow`) keeping its lag under a bound while good events around the bad
ones are applied.

Everything new is imported inside the tests that need it, so that this file also runs on the
code from before the fix (that is how the findings' tests were seen to fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from aggregates.access import Principal
from aggregates.complaint import Complaint, Meta
from aggregates.envelope import parse
from commands.api import create_app
from commands.desk import ComplaintDesk
from commands.models import RegisterComplaint
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.read_node import ReadNode
from consumers.sources import LogSource
from consumers.stored_events import wire_encoder
from projections.base import to_batch
from projections.event_log import EventLog
from projections.models import make as make_projectors
from read_api.app import create_read_app
from tests.conftest import FakeClock, send_commands
from tests.identity import AUTHENTICATE, OPERATOR, bearer
from tests.test_consumer_runner import Counting, ListSource

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # a Monday morning in Shanghai
AUTOMATION = Principal("automation:alerts", "alerts", frozenset({"automation"}))


class Hung(BaseException):
    """Raised in the main thread when a block runs past its time (a BaseException: a read node
    must not take it for a projector's failure and start searching for poison)."""


@contextlib.contextmanager
def within(seconds: float, what: str) -> Iterator[None]:
    """Fail after `seconds` instead of hanging for minutes (SIGALRM in the main thread)."""

    def expired(signum: int, frame: Any) -> None:
        raise Hung(f"{what} took longer than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def resident_mb() -> float:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[ComplaintDesk]:
    app = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=FakeClock(NOW))
    send_commands(app, 30, seed=5)
    yield app
    app.close()


def wire_messages(desk: ComplaintDesk) -> list[bytes]:
    encode = wire_encoder(desk.mapper)
    return [encode(n) for n in desk.recorder.select_notifications(1, 100_000)]


def forged(template: dict[str, Any], position: int, occurred_at: str, **changes: Any) -> bytes:
    """A copy of `template` as a new complaint's first event, at `position` and `occurred_at`
    (what an older version, or a hand written straight into the store or Kafka, left there)."""
    complaint = str(uuid.uuid4())
    envelope = template | {"complaint_id": complaint, "complaint_version": 1, "position": position,
                           "occurred_at": occurred_at, "command_id": f"forged-{complaint}",
                           "correlation_id": f"forged-{complaint}"} | changes
    return json.dumps(envelope).encode()


def keys(values: Sequence[bytes]) -> set[tuple[str, int]]:
    return {(e["complaint_id"], e["complaint_version"]) for e in map(json.loads, values)}


def registered(values: Sequence[bytes]) -> set[str]:
    return {e["complaint_id"] for e in map(json.loads, values) if e["event_type"] == "Registered"}


def stored(db: duckdb.DuckDBPyConnection) -> set[tuple[str, int]]:
    return set(db.execute("SELECT complaint_id::VARCHAR, complaint_version FROM events").fetchall())


def in_facts(db: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in db.execute("SELECT complaint_id::VARCHAR FROM complaint_facts").fetchall()}


# ---------------------------------------------------------------------------- finding 1
def test_finding_1_a_registration_in_year_9999_is_dead_lettered_at_once_and_the_rest_applied(
        desk: ComplaintDesk, tmp_path: Path) -> None:
    """Before: one core at 100% for minutes and 2 GB in `calendar_table.year_windows` (8,000
    years of windows), again in the poison search, then `year 10000 is out of range`."""
    good = wire_messages(desk)
    template = next(e for e in map(json.loads, good) if e["event_type"] == "Registered")
    top = max(json.loads(v)["position"] for v in good)
    bad = forged(template, top + 1, "9999-12-31T12:00:00Z")
    stream = good[: len(good) // 2] + [bad] + good[len(good) // 2:]
    memory = resident_mb()
    with ReadNode(tmp_path / "read.duckdb", ListSource(stream, per_poll=len(stream)), make_projectors()) as node:
        started = time.monotonic()
        with within(60, "a batch holding a year-9999 registration"):
            node.catch_up()
        took = time.monotonic() - started
        db = node.cursor()
        letters = db.execute("SELECT stage, complaint_id, error FROM dead_letters").fetchall()
        assert stored(db) == keys(good)  # every good event around it, once
        assert in_facts(db) == registered(good)
        assert node.lag() == 0
    assert took < 10, f"{took:.1f}s for one batch"
    assert resident_mb() - memory < 300
    bad_id = json.loads(bad)["complaint_id"]
    assert [(stage, complaint) for stage, complaint, _ in letters] == [("envelope", bad_id)]
    assert "9999-12-31" in letters[0][2] and "outside the instants" in letters[0][2]


def test_finding_1_an_event_already_in_a_nodes_event_log_costs_milliseconds_when_a_read_model_is_rebuilt(
        desk: ComplaintDesk, tmp_path: Path) -> None:
    """The event log of a node an older version ran holds a year-9999 registration (and a
    year-1 one): rebuilding the SLA read model from it (a schema change) dead-letters them
    at once. Before: the calendar table was filled from 2025 to 10000 (minutes, gigabytes)."""
    good = wire_messages(desk)
    template = next(e for e in map(json.loads, good) if e["event_type"] == "Registered")
    top = max(json.loads(v)["position"] for v in good)
    bad = [forged(template, top + 1, "9999-12-31T12:00:00Z"), forged(template, top + 2, "0001-01-02T00:00:00Z")]
    path = tmp_path / "read.duckdb"
    with ReadNode(path, ListSource(good), make_projectors()) as node:
        node.catch_up()
        before = read_models(node.cursor())
        EventLog().insert_new(node.cursor(), to_batch([parse(v) for v in bad]))  # as an older version stored them
    projectors = make_projectors()
    sla = next(p for p in projectors if p.name == "sla")
    sla.schema_version += 1  # a new version of the SLA read model: rebuilt from the local event log
    node = ReadNode(path, ListSource(good), projectors)
    try:
        started = time.monotonic()
        with within(60, "rebuilding the SLA read model over an event log holding year 9999"):
            node.open()
        took = time.monotonic() - started
        db = node.cursor()
        letters = db.execute("SELECT stage, complaint_id, error FROM dead_letters ORDER BY stage, error").fetchall()
        assert read_models(db) == before
    finally:
        node.close()
    assert took < 10, f"{took:.1f}s"
    bad_ids = {json.loads(v)["complaint_id"] for v in bad}
    assert {complaint for _, complaint, _ in letters} == bad_ids
    assert {stage for stage, _, _ in letters} == {"sla"}
    assert all("occurred_at is outside the instants" in error for _, _, error in letters)


# ---------------------------------------------------------------------------- finding 2
def read_client(node: ReadNode, now: datetime = NOW + timedelta(days=8)) -> TestClient:
    assert node.db is not None
    return TestClient(create_read_app(node.db, AUTHENTICATE, clock=lambda: now, cache_seconds=0),
                      headers=bearer(), raise_server_exceptions=False)


def test_finding_2_a_year_1_registration_never_makes_an_as_of_view_fail(desk: ComplaintDesk, tmp_path: Path) -> None:
    """Before: `year 0 is out of range` in `ensure_years` for every `as_of` request, once a
    year-1 registration was in the event log."""
    good = wire_messages(desk)
    template = next(e for e in map(json.loads, good) if e["event_type"] == "Registered")
    top = max(json.loads(v)["position"] for v in good)
    path = tmp_path / "read.duckdb"
    asks = [("/dashboards/supervisor", {"as_of": "2026-12-01T00:00:00Z"}),
            ("/dashboards/executive", {"as_of": "2026-11-24T00:00:00Z", "period": "all"}),
            ("/sla", {"as_of": "2026-12-01T00:00:00Z"}),
            ("/export/sla", {"as_of": "2026-12-01T00:00:00Z", "format": "csv"})]
    with ReadNode(path, ListSource(good), make_projectors()) as node:
        node.catch_up()
        with read_client(node) as client:
            before = {path: client.get(path, params=params) for path, params in asks}
        assert {path: r.status_code for path, r in before.items()} == dict.fromkeys(before, 200)
        # An older node stored it (today's refuses it at the door: see finding 1).
        EventLog().insert_new(node.cursor(), to_batch([parse(forged(template, top + 1, "0001-01-02T00:00:00Z"))]))
        with read_client(node) as client, within(60, "as_of views"):
            after = {path: client.get(path, params=params) for path, params in asks}
    assert {path: (r.status_code, r.text[:300]) for path, r in after.items() if r.status_code != 200} == {}
    assert after["/dashboards/supervisor"].json()["counts"] == before["/dashboards/supervisor"].json()["counts"]


def test_finding_2_a_year_1_registration_reaching_a_read_node_is_dead_lettered_with_its_reason(
        desk: ComplaintDesk, tmp_path: Path) -> None:
    good = wire_messages(desk)
    template = next(e for e in map(json.loads, good) if e["event_type"] == "Registered")
    top = max(json.loads(v)["position"] for v in good)
    bad = forged(template, top + 1, "0001-01-02T00:00:00+00:00")
    with ReadNode(tmp_path / "read.duckdb", ListSource([*good[:40], bad, *good[40:]]), make_projectors()) as node:
        node.catch_up()
        db = node.cursor()
        letters = db.execute("SELECT stage, error FROM dead_letters").fetchall()
        assert in_facts(db) == registered(good)
        with read_client(node) as client:
            assert client.get("/dashboards/supervisor", params={"as_of": "2026-12-01T00:00:00Z"}).status_code == 200
    assert len(letters) == 1 and letters[0][0] == "envelope" and "0001-01-02" in letters[0][1]


@pytest.mark.parametrize("year", [1, 9999])
def test_finding_2_triage_of_a_complaint_registered_outside_the_window_is_a_409_not_a_crash(
        tmp_path: Path, year: int) -> None:
    """Before: OverflowError in aggregates/sla.py, a 500."""
    app = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=FakeClock(NOW))
    try:
        at = datetime(1, 1, 2, tzinfo=UTC) if year == 1 else datetime(9999, 12, 30, tzinfo=UTC)
        meta = Meta(actor="legacy-importer", occurred_at=at, command_id=f"legacy-{year}",
                    correlation_id=f"legacy-{year}")
        command = RegisterComplaint(channel="web", customer={"id": "C-1"},
                                    customer_personal={"name": "Li", "contact": "li@example.com"},
                                    title="old", description="stored by an older version")
        complaint = Complaint(**command.event_fields(), **meta.fields())
        app.save(complaint)  # written as an older version did, without today's checks
        with TestClient(create_app(app, AUTHENTICATE), headers=bearer(), raise_server_exceptions=False) as client:
            with within(30, "triage"):
                answer = client.post(f"/complaints/{complaint.id}/triage",
                                     json={"category": "billing", "severity": "major"})
            if year == 1:
                assert answer.status_code == 409, answer.text
                assert "SLA clocks" in answer.json()["detail"] and "outside" in answer.json()["detail"]
                # What needs no SLA arithmetic still works.
                assert client.post(f"/complaints/{complaint.id}/notes", json={"text": "seen"}).status_code == 200
            else:  # nothing can happen to it before year 9999 (events of a complaint are in order)
                assert answer.status_code == 422, answer.text
                assert answer.json()["detail"][0]["loc"] == ["body", "occurred_at"]
    finally:
        app.close()


# ---------------------------------------------------------------------------- finding 3
EXTREMES = ["0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z", "9999-12-31T23:59:59.999999-12:00",
            "1969-12-31T23:59:59Z", "2200-01-01T00:00:00Z"]


@pytest.fixture(scope="module")
def read_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    tmp = tmp_path_factory.mktemp("finding-3")
    app = open_desk(Settings(store="sqlite", sqlite_path=tmp / "events.sqlite"), clock=FakeClock(NOW))
    send_commands(app, 15, seed=8)
    complaint = next(iter(registered(wire_messages(app))))
    with ReadNode(tmp / "read.duckdb", LogSource(app.recorder, app.mapper), make_projectors()) as node:
        node.catch_up()
        with read_client(node) as client:
            yield client, complaint
    app.close()


def instant_parameters(client: TestClient) -> list[tuple[str, str]]:
    """(path, parameter) of every GET query parameter that is an instant."""
    found = []
    for path, item in client.get("/openapi.json").json()["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            schema = parameter.get("schema", {})
            options = schema.get("anyOf", [schema])
            if parameter["in"] == "query" and any(o.get("format") == "date-time" for o in options):
                found.append((path, parameter["name"]))
    return found


def test_finding_3_query_instants_at_the_ends_of_the_calendar_are_a_422_naming_the_parameter(
        read_api: tuple[TestClient, str]) -> None:
    """Before: OverflowError in `schemas.window` / `local_midnight`, a 500."""
    client, complaint = read_api
    asked = instant_parameters(client)
    assert {("/dashboards/supervisor", "as_of"), ("/sla", "start"), ("/export/{dataset}", "end")} <= set(asked)
    wrong = {}
    for path, name in asked:
        url = path.replace("{complaint_id}", complaint).replace("{dataset}", "complaints") \
            .replace("{alert_id}", str(uuid.uuid4()))
        for value in EXTREMES:
            answer = client.get(url, params={name: value})
            loc = answer.json()["detail"][0].get("loc") if answer.status_code == 422 else None
            if (answer.status_code, loc) != (422, ["query", name]):
                wrong[(path, name, value)] = (answer.status_code, answer.text[:200])
    assert wrong == {}


@pytest.mark.parametrize("path", ["/dashboards/supervisor", "/dashboards/product", "/dashboards/executive",
                                  "/sla", "/workload", "/trends", "/export/complaints"])
def test_finding_3_a_window_that_ends_before_it_starts_is_a_422(read_api: tuple[TestClient, str], path: str) -> None:
    client, _ = read_api
    for params, name in (({"start": "2026-11-20T00:00:00Z", "end": "2026-11-10T00:00:00Z"}, "end"),
                         ({"start": "2026-11-20T00:00:00Z", "as_of": "2026-11-10T00:00:00Z"}, "as_of")):
        answer = client.get(path, params=params)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["query", name]
    # The same instants the right way round are answered; a start after now is an empty window.
    for params in ({"start": "2026-11-10T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, {"start": "2199-01-01T00:00:00Z"}):
        answer = client.get(path, params=params)
        assert answer.status_code == 200, answer.text


def test_the_query_window_is_configurable(tmp_path: Path) -> None:
    from aggregates.instants import InstantWindow

    app = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=FakeClock(NOW))
    send_commands(app, 3, seed=1)
    window = InstantWindow(datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
    with ReadNode(tmp_path / "read.duckdb", LogSource(app.recorder, app.mapper), make_projectors()) as node:
        node.catch_up()
        read_app = create_read_app(node.db, AUTHENTICATE, clock=lambda: NOW, cache_seconds=0, instants=window,
                                   timezone="Europe/Berlin")
        with TestClient(read_app, headers=bearer()) as client:
            refused = client.get("/dashboards/supervisor", params={"as_of": "2019-12-31T00:00:00Z"})
            assert refused.status_code == 422 and "2020-01-01" in refused.json()["detail"][0]["msg"]
            assert client.get("/dashboards/supervisor", params={"as_of": "2026-11-24T00:00:00Z"}).status_code == 200
    app.close()


# ---------------------------------------------------------------------------- commands
def importer_register(client: TestClient, occurred_at: str) -> Any:
    return client.post("/complaints", json={
        "channel": "web", "customer": {"id": "C-9"}, "customer_personal": {"name": "Li", "contact": "li@x.cn"},
        "title": "t", "description": "d", "occurred_at": occurred_at})


def test_commands_refuse_instants_outside_the_window_with_a_422_naming_the_field(tmp_path: Path) -> None:
    from aggregates.instants import InstantWindow
    from commands.alerts import RaiseAlert
    from commands.models import InvalidCommand

    app = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=FakeClock(NOW))
    try:
        with TestClient(create_app(app, AUTHENTICATE), headers=bearer()) as client:
            for value in ("0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "9999-12-31T00:00:00Z",
                          (NOW + timedelta(days=2)).isoformat()):
                answer = importer_register(client, value)
                assert answer.status_code == 422, (value, answer.text)
                assert answer.json()["detail"][0]["loc"] == ["body", "occurred_at"]
            assert importer_register(client, "1970-01-01T00:00:00Z").status_code == 201
        alert = {"key": "k", "rule": "r", "rules_version": "1", "subject_type": "complaint", "subject": "s",
                 "severity": "warning", "title_en": "t", "title_zh": "t"}
        for due in (datetime(9999, 12, 31, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)):
            with pytest.raises(InvalidCommand) as refused:
                app.raise_alert(RaiseAlert(**alert, due_at=due), AUTOMATION)
            assert refused.value.field == "due_at"
        assert app.raise_alert(RaiseAlert(**alert, due_at=NOW + timedelta(days=3)), AUTOMATION).version == 1
    finally:
        app.close()
    # A deployment may narrow the window; the server's own clock must lie in it.
    narrow = InstantWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    app = ComplaintDesk({"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=FakeClock(NOW), instants=narrow)
    try:
        with pytest.raises(InvalidCommand) as refused:
            app.register(RegisterComplaint(channel="web", customer={"id": "C"}, customer_personal={
                "name": "a", "contact": "b"}, title="t", description="d"), OPERATOR)
        assert refused.value.field == "occurred_at" and "server's clock" in refused.value.message
    finally:
        app.close()


def test_the_window_is_configuration_checked_at_start_up() -> None:
    settings_ = Settings()
    assert (settings_.earliest_instant, settings_.latest_instant) == (
        datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
    narrowed = Settings(earliest_instant="2000-01-01T00:00:00+08:00", latest_instant="2100-01-01T00:00:00Z")
    assert narrowed.instants().earliest == datetime(1999, 12, 31, 16, tzinfo=UTC)
    for wrong in ({"earliest_instant": "1900-01-01T00:00:00Z"}, {"latest_instant": "2300-01-01T00:00:00Z"},
                  {"earliest_instant": "2100-01-01T00:00:00Z", "latest_instant": "2000-01-01T00:00:00Z"},
                  {"earliest_instant": "2000-01-01T00:00:00"}, {"clock_skew_seconds": 2 * 86_400}):
        with pytest.raises(ValueError):
            Settings(**wrong)


# ---------------------------------------------------------------------------- the domain and the calendar table
@pytest.mark.parametrize("instant", [datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
                                     datetime(9999, 12, 31, 23, 59, tzinfo=UTC), datetime(1899, 12, 30, tzinfo=UTC),
                                     datetime(2300, 1, 2, tzinfo=UTC)])
def test_business_time_refuses_instants_outside_its_limits_at_once(instant: datetime) -> None:
    from aggregates.instants import InstantOutOfRange
    from aggregates.sla import due_at, elapsed_business_seconds, load_sla_policy

    for calendar in load_sla_policy().calendars.values():
        with within(5, "business time"):
            for call in (lambda: due_at(calendar, instant, 3600),
                         lambda: elapsed_business_seconds(calendar, instant, NOW),
                         lambda: calendar.cumulative_business_seconds(instant),
                         lambda: calendar.business_windows(instant.date())):
                with pytest.raises(InstantOutOfRange):
                    call()


def test_business_time_still_counts_at_the_edges_of_the_window() -> None:
    from aggregates.instants import InstantOutOfRange
    from aggregates.sla import due_at, load_sla_policy

    for calendar in load_sla_policy().calendars.values():
        for start in (datetime(1970, 1, 1, tzinfo=UTC), datetime(2199, 12, 31, 23, 59, tzinfo=UTC)):
            due = due_at(calendar, start, 8 * 3600)
            assert start < due < start + timedelta(days=10)
            assert calendar.business_seconds_between(start, due) == pytest.approx(8 * 3600)
        # A target far past the limits is refused, not walked to year 9999.
        with within(5, "a huge target"), pytest.raises(InstantOutOfRange):
            due_at(calendar, NOW, 10**9 * 3600.0)


def test_the_calendar_table_grows_lazily_and_only_within_the_window() -> None:
    from aggregates.instants import InstantOutOfRange
    from aggregates.sla import load_sla_policy
    from projections import calendar_table

    calendars = load_sla_policy().calendars
    db = duckdb.connect()
    calendar_table.create_schema(db)
    with within(5, "refusing year 9999"), pytest.raises(InstantOutOfRange):
        calendar_table.ensure_years(db, calendars, [2026, 9999])
    with within(5, "refusing year 0"), pytest.raises(InstantOutOfRange):
        calendar_table.ensure_years(db, calendars, range(0, 3))
    assert db.execute(f"SELECT count(*) FROM {calendar_table.YEARS}").fetchall() == [(0,)]
    # Events outside the window ask for nothing; the others for their years and one either side.
    events = pa.table({"occurred_at": pa.array([datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC),
                                                datetime(2026, 11, 23, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))})
    db.register("some_events", events)
    with within(10, "covering the events' years"):
        calendar_table.ensure_for_events(db, calendars, "some_events")
    years = db.execute(f"SELECT DISTINCT year FROM {calendar_table.YEARS} ORDER BY 1").fetchall()
    assert [y for (y,) in years] == [2025, 2026, 2027]
    # An event far from the others asks for its own years only: a gap between, marked.
    far = pa.table({"occurred_at": pa.array([datetime(2199, 12, 31, 23, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))})
    db.register("far_events", far)
    started = time.monotonic()
    with within(10, "covering 2199"):
        calendar_table.ensure_for_events(db, calendars, "far_events")
    took = time.monotonic() - started
    years = db.execute(f"SELECT DISTINCT year FROM {calendar_table.YEARS} ORDER BY 1").fetchall()
    assert [y for (y,) in years] == [2025, 2026, 2027, 2198, 2199, 2200]
    assert took < 2, f"{took:.2f}s for three calendar-years"
    # The join answers the domain's figures inside the runs, and NULL in the gaps (not the
    # figure of the last window before the gap).
    inside = [datetime(2026, 3, 4, 5, 6, tzinfo=UTC), datetime(2027, 12, 31, 12, tzinfo=UTC),
              datetime(2199, 6, 1, 3, tzinfo=UTC), datetime(2025, 1, 1, 8, tzinfo=UTC)]
    gaps = [datetime(2028, 1, 1, 12, tzinfo=UTC), datetime(2100, 6, 1, tzinfo=UTC), datetime(2197, 12, 31, tzinfo=UTC),
            datetime(2201, 1, 2, tzinfo=UTC)]
    for name, calendar in calendars.items():
        points = ", ".join(f"('{name}', {calendar_table.to_us(t)})" for t in inside + gaps)
        got = dict(db.execute(f"SELECT t_us, cum_us FROM ({calendar_table.cum_sql(f'(SELECT * FROM (VALUES {points}) v(calendar, t_us))')})"
                              ).fetchall())
        assert [got[calendar_table.to_us(t)] for t in inside] == [calendar_table.cum_us(calendar, t) for t in inside]
        assert [got[calendar_table.to_us(t)] for t in gaps] == [None] * len(gaps)
    # Filling a gap later removes its marker.
    calendar_table.ensure_years(db, calendars, range(2027, 2199))
    for name, calendar in calendars.items():
        points = f"(SELECT * FROM (VALUES ('{name}', {calendar_table.to_us(gaps[1])})) v(calendar, t_us))"
        assert db.execute(f"SELECT cum_us FROM ({calendar_table.cum_sql(points)})").fetchall() == [
            (calendar_table.cum_us(calendar, gaps[1]),)]


# ---------------------------------------------------------------------------- the poison search's budget
class Slow(Counting):
    """Fails on one complaint, slowly: each apply that holds it takes `pause` seconds first."""

    def __init__(self, name: str, poison: str, pause: float) -> None:
        super().__init__(name, poison=poison)
        self.pause = pause

    def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        if self.poison in batch["complaint_id"].to_pylist():
            time.sleep(self.pause)
        super().apply(db, batch)


def test_a_poison_search_past_its_budget_sets_the_suspects_aside_and_the_node_goes_on(
        desk: ComplaintDesk, tmp_path: Path) -> None:
    from consumers.batching import PoisonBudget

    good = wire_messages(desk)
    victim = json.loads(good[30])["complaint_id"]
    slow, healthy = Slow("slow", victim, pause=0.4), Counting("healthy")
    node = ReadNode(tmp_path / "read.duckdb", ListSource(good, per_poll=len(good)), [slow, healthy],
                    poison_budget=PoisonBudget(seconds=1.0))
    with node:
        started = time.monotonic()
        node.catch_up()
        took = time.monotonic() - started
        db = node.cursor()
        letters = db.execute("SELECT stage, complaint_id, error FROM dead_letters").fetchall()
        assert healthy.counts(db) == {c: n for c, n in _counts(good).items()}
        assert victim not in slow.counts(db)
    # A budget of 1 s and one 0.4 s failing trial: the search stops early, setting aside every
    # event not cleared yet, the victim's among them, with the reason; a few seconds in all.
    assert took < 8
    assert {stage for stage, _, _ in letters} == {"slow"}
    assert victim in {complaint for _, complaint, _ in letters}
    assert all("search for it stopped" in error and "cannot count complaint" in error for _, _, error in letters)


def test_a_poison_search_within_its_budget_finds_one_event_starting_after_what_is_cleared(
        desk: ComplaintDesk, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = wire_messages(desk)
    victims = {json.loads(good[i])["complaint_id"] for i in (10, 60, 110)}

    class Picky(Counting):
        def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
            super().apply(db, batch)
            if victims & set(batch["complaint_id"].to_pylist()):
                raise ValueError("cannot count that one")

    picky = Picky("picky")
    with ReadNode(tmp_path / "read.duckdb", ListSource(good, per_poll=len(good)), [picky]) as node:
        node.catch_up()
        db = node.cursor()
        letters = db.execute("SELECT complaint_id FROM dead_letters").fetchall()
        expected = _counts(good)
        assert picky.counts(db) == {c: n for c, n in expected.items() if c not in victims}
    assert len(letters) == sum(expected[v] for v in victims)  # each of their events, one by one, nothing else
    trials = [r.args[6] for r in caplog.records if r.name == "consumers.batching" and "raises on event" in r.msg]
    assert len(trials) == len(letters)
    # Each search bisects what is not cleared yet: a logarithmic number of trials.
    assert sum(trials) < len(letters) * (len(good).bit_length() + 1)


def _counts(values: Sequence[bytes]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for envelope in map(json.loads, values):
        counts[envelope["complaint_id"]] = counts.get(envelope["complaint_id"], 0) + 1
    return counts


# ---------------------------------------------------------------------------- extreme events
# Templates of the events a read node sees, to be bent out of shape by hypothesis.
UTF_ODDITIES = ["\ud83d", "\udc00x", "\x00", "\u202eevil", "𝕏" * 3, "\ufeff", "e\u0301", "\U0010ffff", "'; DROP TABLE events; --",
                "%_\\", "\n\r\t"]


KINDS = ["occurred_at", "payload_instant", "size", "unicode", "nesting", "numbers"]


def instants() -> st.SearchStrategy[str]:
    zones = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12)),
                             timezone(timedelta(hours=5, minutes=45))])
    at = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones)
    edges = st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1969-12-31T23:59:59Z",
                             "2200-01-01T00:00:00Z", "2199-12-31T23:59:59Z", "1970-01-01T00:00:00Z",
                             "+275760-09-13T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-23T02:00:00"])
    return st.one_of(at.map(lambda t: t.isoformat()), edges)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=50), st.sampled_from(UTF_ODDITIES),
                     st.integers(1, 300_000).map(lambda n: "长" * n))


@st.composite
def extreme(draw: st.DrawFn, templates: dict[str, dict[str, Any]], max_size: int = 2_000_000,
            how: str | None = None) -> dict[str, Any]:
    """An envelope made out of shape: its dates, sizes, text or nesting (`how`: which, else any)."""
    event_type = draw(st.sampled_from(sorted(templates)))
    envelope = json.loads(json.dumps(templates[event_type]))
    payload = envelope["payload"]
    how = how or draw(st.sampled_from(KINDS))
    if how == "occurred_at":
        envelope["occurred_at"] = draw(instants())
    elif how == "payload_instant":
        for field in ("first_response_due", "resolution_due", "next_response_due", "first_response_at", "due_at"):
            if field in payload or draw(st.booleans()):
                payload[field] = draw(instants())
    elif how == "size":
        field = draw(st.sampled_from(["title", "description", "summary", "actor", "command_id", "category"]))
        (envelope if field in ("actor", "command_id") else payload)[field] = "x" * draw(st.integers(0, max_size))
    elif how == "unicode":
        for field in draw(st.lists(st.sampled_from(["title", "actor", "team", "agent", "category", "product"]),
                                   min_size=1, max_size=4)):
            (envelope if field == "actor" else payload)[field] = draw(texts())
        if draw(st.booleans()):
            payload["customer"] = {"id": draw(texts()), "tier": draw(st.sampled_from(["vip", "regular", "\x00"]))}
    elif how == "nesting":
        depth = draw(st.sampled_from([10, 100, 600, 3000]))
        payload[draw(st.sampled_from(["evidence", "customer", "title", "extra"]))] = nested(depth)
    else:
        field = draw(st.sampled_from(["csat", "nps", "level", "complaint_version", "position", "size_bytes"]))
        value = draw(st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([1e308, -0.0, 2**63, 2**31])))
        (envelope if field in ("complaint_version", "position") else payload)[field] = value
    return envelope


def templates_of(values: Sequence[bytes]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for envelope in map(json.loads, values):
        found.setdefault(envelope["event_type"], envelope)
    return found


@pytest.fixture(scope="module")
def good_stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[bytes], dict[str, Any]]]:
    """A healthy stream, with alerts, and what a node makes of it alone."""
    tmp = tmp_path_factory.mktemp("extreme")
    app = open_desk(Settings(store="sqlite", sqlite_path=tmp / "events.sqlite"), clock=FakeClock(NOW))
    send_commands(app, 40, seed=11)
    from commands.alerts import RaiseAlert

    app.raise_alert(RaiseAlert(key="k1", rule="r", rules_version="1", subject_type="complaint", subject="s",
                               severity="warning", title_en="t", title_zh="t", due_at=NOW + timedelta(days=1),
                               evidence={"n": 1}), AUTOMATION)
    values = wire_messages(app)
    app.close()
    with ReadNode(tmp / "clean.duckdb", ListSource(values), make_projectors()) as node:
        node.catch_up()
        reference = read_models(node.cursor())
    yield values, reference


READ_MODEL_TABLES = ("complaint_facts", "sla_clocks", "workload_complaints", "trend_complaints", "alerts")


def read_models(db: duckdb.DuckDBPyConnection, only: set[str] | None = None) -> dict[str, Any]:
    """Each read model's rows (of the complaints in `only`), as comparable text."""
    found = {}
    for table in READ_MODEL_TABLES:
        key = "alert_id" if table == "alerts" else "complaint_id"
        rows = db.execute(f"SELECT {key}::VARCHAR, t::VARCHAR FROM {table} t ORDER BY ALL").fetchall()
        found[table] = sorted(r[1] for r in rows if only is None or r[0] in only)
    return found


def mixed_stream(good: list[bytes], bad: list[dict[str, Any]], seed: int) -> tuple[list[bytes], list[bytes]]:
    """The good messages with the bad ones spread between them, each bad one a complaint of its own
    at a position of its own (so the good complaints' read models must come out unchanged)."""
    top = max(json.loads(v)["position"] for v in good)
    forged_values = []
    for n, envelope in enumerate(bad):
        position = envelope.get("position")
        if type(position) is int and 1 <= position <= 10**9:  # an ordinary position: one of its own
            position = top + 1 + n
        complaint = str(uuid.UUID(int=seed * 10_000 + n + 1))
        envelope = envelope | {"complaint_id": complaint, "position": position}
        try:
            forged_values.append(json.dumps(envelope, ensure_ascii=bool(n % 2)).encode("utf-8", "surrogatepass"))
        except RecursionError:
            forged_values.append(b'{"deep": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    stream = list(good)
    step = max(1, len(good) // (len(forged_values) + 1))
    for n, value in enumerate(forged_values):
        stream.insert(min(len(stream), (n + 1) * step + n), value)
    return stream, forged_values


BATCH = 64
BATCH_SECONDS = 10.0  # far above what a batch takes (tens of ms); a stalled node takes minutes


@settings(max_examples=int(os.environ.get("COMPLAINTS_EXTREME_EXAMPLES", "8")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_extreme_events_never_hold_a_read_node_back_in_process(good_stream: tuple[list[bytes], dict[str, Any]],
                                                               data: st.DataObject) -> None:
    good, reference = good_stream
    templates = templates_of(good)
    bad = data.draw(st.lists(extreme(templates), min_size=1, max_size=6), label="bad events")
    stream, forged_values = mixed_stream(good, bad, seed=data.draw(st.integers(1, 10**6), label="seed"))
    with tempfile.TemporaryDirectory() as tmp:
        with ReadNode(Path(tmp) / "read.duckdb", ListSource(stream, per_poll=BATCH), make_projectors()) as node:
            lags, slowest = [], 0.0
            while True:
                started = time.monotonic()
                with within(60, "one batch"):
                    result = node.poll_batch()
                slowest = max(slowest, time.monotonic() - started)
                lags.append(node.lag())
                if not result.messages:
                    break
            db = node.cursor()
            assert slowest < BATCH_SECONDS, f"a batch took {slowest:.1f}s"
            # The lag only ever falls, a batch at a time, to nothing.
            assert all(b <= a - min(a, BATCH) or b == 0 for a, b in zip([len(stream)] + lags, lags)), lags
            assert lags[-1] == 0
            # Every good event applied, and the good complaints' read models as without the bad ones.
            assert keys(good) <= stored(db)
            good_ids = {e["complaint_id"] for e in map(json.loads, good)}
            assert read_models(db, good_ids) == {t: sorted(rows) for t, rows in reference.items()}
            # Every bad message is accounted for: stored (weird but valid), or a dead letter with a reason.
            letters = db.execute("SELECT raw, error FROM dead_letters").fetchall()
            assert all(error for _, error in letters)
            dead = {bytes(raw) for raw, _ in letters}
            extra = stored(db) - keys(good)
            for value in forged_values:
                envelope = _loads(value)
                kept = envelope is not None and (str(envelope.get("complaint_id")), envelope.get("complaint_version")) in extra
                assert value in dead or kept, value[:300]
            # What is stored lies in the window.
            assert db.execute("SELECT count(*) FROM events WHERE occurred_at < '1970-01-01T00:00:00Z'::TIMESTAMPTZ"
                              " OR occurred_at >= '2200-01-01T00:00:00Z'::TIMESTAMPTZ").fetchall() == [(0,)]
            # And the read API answers over it, as of now and of the past, without a 5xx.
            # (The audit replay of a complaint whose stored history does not start at version 1 is
            # a 500 of its own, read_api/audit.py's: reported, not asked here.)
            versions: dict[str, set[int]] = {}
            for c, v in extra:
                versions.setdefault(c, set()).add(v)
            weird = sorted(c for c, vs in versions.items() if vs == set(range(1, max(vs) + 1)))[:5]
            with read_client(node) as client, within(120, "the read API over extreme events"):
                asks = [("/dashboards/supervisor", {}), ("/dashboards/supervisor", {"as_of": "2026-11-24T00:00:00Z"}),
                        ("/dashboards/executive", {"period": "all"}), ("/dashboards/product", {"period": "all"}),
                        ("/sla", {"period": "all"}), ("/alerts", {"status": "open"}),
                        ("/export/sla", {"as_of": "2026-11-30T00:00:00Z"}), ("/export/events", {"period": "all"})]
                asks += [(f"/audit/complaints/{c}/{what}", {}) for c in weird for what in ("history", "timeline", "sla")]
                answers = {(path, tuple(params)): client.get(path, params=params) for path, params in asks}
            assert {k: (r.status_code, r.text[:200]) for k, r in answers.items() if r.status_code >= 500} == {}


def _loads(value: bytes) -> dict[str, Any] | None:
    try:
        envelope = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return envelope if isinstance(envelope, dict) else None


# ---------------------------------------------------------------------------- through Kafka
@pytest.mark.kafka
@pytest.mark.slow
@settings(max_examples=1, deadline=None, database=None, phases=[Phase.generate],  # no shrinking over Kafka
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_extreme_events_through_kafka_keep_the_read_nodes_lag_under_a_bound(
        good_stream: tuple[list[bytes], dict[str, Any]], kafka_bootstrap: str, topic: str, tmp_path: Path,
        data: st.DataObject) -> None:
    """A producer writes good and extreme events at a steady pace; the node follows, its lag
    sampled all along, and ends with every good event applied and every bad one set aside."""
    from kafka import KafkaProducer

    from consumers.relay import ensure_topics
    from consumers.sources import KafkaSource

    good, reference = good_stream
    templates = templates_of(good)
    # Four of each kind, under the broker's 1 MB message limit.
    bad = [data.draw(extreme(templates, max_size=500_000, how=how), label=how) for how in KINDS for _ in range(4)]
    bad += [json.loads(forged(templates["Registered"], 1, at)) for at in
            ("9999-12-31T12:00:00Z", "0001-01-02T00:00:00Z", "2199-12-31T23:00:00Z")]
    stream, forged_values = mixed_stream(good, bad, seed=77)
    stream += good + good  # and the good ones twice more, as a relay redelivers: twenty seconds of traffic
    ensure_topics(kafka_bootstrap, topic, 3)
    rate = 40.0  # messages a second
    # What five seconds of traffic and a batch amount to: a node stalled for minutes by one event
    # (before the fix) falls the whole stream behind; a batch takes well under a second now.
    bound = int(rate * 5) + BATCH
    node = ReadNode(tmp_path / "read.duckdb", KafkaSource(kafka_bootstrap, topic), make_projectors(),
                    batch_size=BATCH)
    node.open()
    thread = node.start_background("extreme-node")
    lags: list[int] = []
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=8 * 2**20)
    try:
        started = time.monotonic()
        for n, value in enumerate(stream):
            key = (_loads(value) or {}).get("complaint_id", "x")
            producer.send(topic, key=str(key).encode(), value=value)
            if n % 20 == 0:
                producer.flush()
                lags.append(node.lag())
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
        producer.flush()
        deadline = time.monotonic() + 60
        while (lag := node.lag()) and time.monotonic() < deadline:
            lags.append(lag)
            time.sleep(0.2)
        lags.append(node.lag())
    finally:
        producer.close()
        node.stop()
    try:
        assert lags[-1] == 0 and max(lags) <= bound, (max(lags), bound, lags)
        assert not thread.is_alive()
        db = node.cursor()
        assert keys(good) <= stored(db)
        good_ids = {e["complaint_id"] for e in map(json.loads, good)}
        assert read_models(db, good_ids) == reference
        letters = db.execute("SELECT raw, stage, error FROM dead_letters").fetchall()
        dead = {bytes(raw) for raw, _, _ in letters}
        extra = stored(db) - keys(good)
        for value in forged_values:
            envelope = _loads(value)
            kept = envelope is not None and (str(envelope.get("complaint_id")), envelope.get("complaint_version")) in extra
            assert value in dead or kept, value[:300]
        assert any("9999-12-31" in error for _, _, error in letters)
        assert any("0001-01-02" in error for _, _, error in letters)
        print(f"lag sampled {len(lags)} times: max {max(lags)} (bound {bound}); {len(letters)} dead letters")
    finally:
        node.close()
