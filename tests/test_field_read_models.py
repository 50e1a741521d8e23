"""Custom fields and tags on the read side: the read models and every filter, grouping and
figure over them equal an oracle that folds the generated history in Python.

Histories are envelopes of the shapes the write side records (`FieldsUpdated` with before
and after per field, `TagAdded` / `TagRemoved` with the normalised tag), fed to the read
node's projectors in random batch splits with redelivery; the API is the real read app.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import duckdb
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.envelope import EventEnvelope
from commands.models import (
    AddTag,
    AssignComplaint,
    RegisterComplaint,
    RemoveTag,
    TriageComplaint,
    UpdateFields,
)
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.stored_events import envelopes as envelopes_of
from projections import queries
from projections.base import to_batch
from projections.event_log import EventLog
from projections.facts import PoisonEvent
from projections.fields import FIELDS, TAGS, FieldsProjector
from projections.models import make as make_projectors
from read_api.app import create_read_app
from tests.conftest import FakeClock
from tests.identity import AUTHENTICATE, OPERATOR, bearer
from tests.test_read_api import build_read_db
from tests.test_read_models import feed

NAMESPACE = UUID("6f1c1a52-3f0b-4d53-9a5e-0d5b7c1e2f15")
# Monday 2026-11-02 09:00 in Shanghai: the history runs three weeks from here.
START = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
TEAMS = ["acme-bank", "bolt-lending", "credit-co"]
PRODUCTS = ["mortgage", "card", "loan"]
TAG_WORDS = ["vip", "refund", "fraud", "late delivery", "媒体"]
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def field_value(rng: random.Random, field: str) -> Any:
    """A value of the field's type, or None (cleared)."""
    if rng.random() < 0.12:
        return None
    return {
        "timely_response": lambda: rng.choice([True, True, True, False]),
        "disputed": lambda: rng.choice([True, False]),
        "sub_product": lambda: rng.choice(["checking", "savings", "2026-11-05"]),
        "amount": lambda: rng.choice([3, 3.5, 120, 0]),
        "received": lambda: rng.choice(["2026-10-30", "2026-11-01"]),
        "issues": lambda: rng.sample(["fees", "rates", "service"], rng.randint(0, 3)),
        "proof": lambda: {"sha256": rng.choice(["a" * 64, "b" * 64]), "name": "x.png", "size": 10,
                          "media_type": "image/png"},
        "place": lambda: {"lat": 31.23, "lon": 121.47},
    }[field]()


FIELD_NAMES = ["timely_response", "disputed", "sub_product", "amount", "received", "issues", "proof", "place"]


class History:
    """Complaints registered, triaged and assigned, then custom field changes and tags."""

    def __init__(self, seed: int, complaints: int = 24, changes: int = 160) -> None:
        rng = random.Random(seed)
        self.envelopes: list[EventEnvelope] = []
        self.versions: dict[str, int] = {}
        self.team: dict[str, str] = {}
        self.product: dict[str, str] = {}
        self.registered_at: dict[str, datetime] = {}
        at = START
        ids = []
        for n in range(complaints):
            cid = str(uuid5(NAMESPACE, f"{seed}-{n}"))
            ids.append(cid)
            at += timedelta(minutes=rng.choice([5, 40, 300]))
            self.team[cid], self.product[cid] = rng.choice(TEAMS), rng.choice(PRODUCTS)
            self.registered_at[cid] = at
            self.add(cid, "Registered", at, {"channel": "web", "customer": {"id": f"C-{n % 5}", "tier": "regular"},
                                             "product": self.product[cid], "title": f"complaint {n}"})
            self.add(cid, "Triaged", at + timedelta(minutes=1), {
                "category": "billing", "severity": "normal", "impact": "one_user", "priority": "medium",
                "sla_policy_version": "1", "sla_calendar": "always",
                "first_response_due": (at + timedelta(hours=4)).isoformat(),
                "resolution_due": (at + timedelta(days=3)).isoformat()})
            self.add(cid, "Assigned", at + timedelta(minutes=2), {"team": self.team[cid], "agent": None})
        current: dict[str, dict[str, Any]] = defaultdict(dict)
        for _ in range(changes):
            cid = rng.choice(ids)
            at += timedelta(minutes=rng.choice([1, 30, 180, 600]))
            if rng.random() < 0.35:
                tag = rng.choice(TAG_WORDS)
                self.add(cid, rng.choice(["TagAdded", "TagAdded", "TagRemoved"]), at, {"tag": tag})
                continue
            changed = {}
            for field in rng.sample(FIELD_NAMES, rng.randint(1, 3)):
                after = field_value(rng, field)
                changed[field] = {"before": current[cid].get(field), "after": after}
                current[cid][field] = after
            self.add(cid, "FieldsUpdated", at, {"changes": changed, "definitions_version": "v1"})
        self.now = at + timedelta(minutes=1)

    def add(self, cid: str, kind: str, at: datetime, payload: dict[str, Any]) -> None:
        self.versions[cid] = self.versions.get(cid, 0) + 1
        self.envelopes.append(EventEnvelope(
            event_type=kind, complaint_id=UUID(cid), complaint_version=self.versions[cid],
            position=len(self.envelopes) + 1, occurred_at=at, recorded_at=at, actor="tester",
            command_id=f"{cid}-{self.versions[cid]}", correlation_id=cid, payload=payload))


# ------------------------------------------------------------------ the oracle
def oracle_fields(envelopes: list[EventEnvelope]) -> set[tuple[Any, ...]]:
    """(complaint, field, text, number, true/false, date, updated_at) of every current value."""
    latest: dict[tuple[str, str], tuple[Any, datetime]] = {}
    for e in sorted(envelopes, key=lambda e: e.position):
        if e.event_type == "FieldsUpdated":
            for field, change in e.payload["changes"].items():
                latest[(str(e.complaint_id), field)] = (change["after"], e.occurred_at)
    rows = set()
    for (cid, field), (after, at) in latest.items():
        for value in after if isinstance(after, list) else [after]:
            if value is None:
                continue
            if isinstance(value, bool):
                row = (None, None, value, None)
            elif isinstance(value, int | float):
                row = (None, float(value), None, None)
            elif isinstance(value, dict):
                row = (value["sha256"] if "sha256" in value else f"{value['lat']},{value['lon']}", None, None, None)
            else:
                row = (value, None, None, date.fromisoformat(value) if DATE_RE.fullmatch(value) else None)
            rows.add((cid, field, *row, at))
    return rows


def oracle_tags(envelopes: list[EventEnvelope]) -> set[tuple[str, str, datetime]]:
    last: dict[tuple[str, str], EventEnvelope] = {}
    for e in sorted(envelopes, key=lambda e: e.position):
        if e.event_type in ("TagAdded", "TagRemoved"):
            last[(str(e.complaint_id), e.payload["tag"])] = e
    return {(cid, tag, e.occurred_at) for (cid, tag), e in last.items() if e.event_type == "TagAdded"}


def json_key(value: Any) -> str:
    """A JSON value as the groupings show it: its text, true/false, or its number (whole: no point)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(int(value)) if value == int(value) else str(value)
    return value


def key_of(row: tuple[Any, ...]) -> str:
    """A stored row's value as the groupings show it."""
    text, number, boolean = row[2], row[3], row[4]
    return text if text is not None else json_key(boolean if boolean is not None else number)


def stored(db: duckdb.DuckDBPyConnection, fields: str = FIELDS, tags: str = TAGS) -> tuple[set[Any], set[Any]]:
    return (set(db.execute(f"SELECT complaint_id, field, value_text, value_number, value_bool, value_date,"
                           f" updated_at FROM {fields}").fetchall()),
            set(db.execute(f"SELECT complaint_id, tag, added_at FROM {tags}").fetchall()))


def read_db() -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    EventLog().create_schema(db)
    for projector in make_projectors():
        projector.create_schema(db)
    return db


# ------------------------------------------------------------------ the read models
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), feed_seed=st.integers(0, 2**32), cut=st.floats(0, 1))
def test_field_and_tag_models_equal_the_oracle(seed: int, feed_seed: int, cut: float) -> None:
    """Whatever the batches and redeliveries; and as of any past position, built apart."""
    history = History(seed, complaints=8, changes=60)
    db = read_db()
    feed(db, history.envelopes, random.Random(feed_seed), [FieldsProjector()])
    assert stored(db) == (oracle_fields(history.envelopes), oracle_tags(history.envelopes))
    position = int(cut * len(history.envelopes))
    with queries.view(db, as_of=max(position, 1)) as v:
        past = history.envelopes[:max(position, 1)]
        assert stored(v.db, v.t(FIELDS), v.t(TAGS)) == (oracle_fields(past), oracle_tags(past))


def test_malformed_field_and_tag_events_are_poison() -> None:
    """Changes that are no object of changes, and a tag event without a tag, are dead-lettered
    by name before anything is written."""
    history = History(1, complaints=1, changes=0)
    cid = str(history.envelopes[0].complaint_id)
    at = history.now
    history.add(cid, "FieldsUpdated", at, {"changes": {"amount": 3}, "definitions_version": "v1"})
    history.add(cid, "FieldsUpdated", at, {"changes": "amount", "definitions_version": "v1"})
    history.add(cid, "TagAdded", at, {"tag": ""})
    db = read_db()
    with pytest.raises(PoisonEvent) as raised:
        FieldsProjector().apply(db, EventLog().insert_new(db, to_batch(history.envelopes)))
    assert raised.value.positions == [4, 5, 6]
    assert "FieldsUpdated without changes" in str(raised.value)


# ------------------------------------------------------------------ through the read API
@pytest.fixture(scope="module")
def history() -> History:
    return History(2026)


@pytest.fixture(scope="module")
def client(history: History) -> Iterator[TestClient]:
    db = read_db()
    feed(db, history.envelopes, random.Random(7), make_projectors())
    with TestClient(create_read_app(db, AUTHENTICATE, clock=lambda: history.now, cache_seconds=0),
                    headers=bearer()) as c:
        yield c
    db.close()


ALL = {"period": "all"}


def holding(history: History, field: str, value: str) -> set[str]:
    """The complaints whose current values of `field` include `value` (as the filter reads it)."""
    found = set()
    for row in oracle_fields(history.envelopes):
        if row[1] != field:
            continue
        text, number, boolean, day = row[2:6]
        matches = (text == value, boolean is not None and value == str(boolean).lower(),
                   number is not None and re.fullmatch(r"-?\d+(\.\d+)?", value) is not None and number == float(value),
                   day is not None and value == day.isoformat())
        if any(matches):
            found.add(row[0])
    return found


def tagged(history: History, tag: str) -> set[str]:
    return {cid for cid, t, _ in oracle_tags(history.envelopes) if t == tag}


@pytest.mark.parametrize("filters", [
    {"field": "timely_response:false"},
    {"field": "amount:3"},
    {"field": "amount:3.0"},
    {"field": "issues:fees"},
    {"field": ["issues:fees", "issues:rates"]},
    {"field": "received:2026-10-30"},
    {"tag": "vip"},
    {"tag": " VIP "},  # normalised as the write side stores it
    {"tag": "late  delivery"},
    {"tag": "vip", "field": "disputed:true"},
    {"field": "no_such_field:x"},
])
def test_every_list_takes_the_field_and_tag_filters(client: TestClient, history: History,
                                                    filters: dict[str, Any]) -> None:
    given = filters.get("field", [])
    pairs = [g.split(":", 1) for g in ([given] if isinstance(given, str) else given)]
    expected = set(history.team)
    for name, value in pairs:
        expected &= holding(history, name, value)
    if "tag" in filters:
        expected &= tagged(history, " ".join(filters["tag"].split()).casefold())
    params = ALL | filters

    queue = client.get("/queue", params=params | {"queue": "all", "limit": 500}).json()
    assert {row["complaint_id"] for row in queue["rows"]} == expected and queue["total"] == len(expected)

    sla = client.get("/sla", params=params | {"limit": 1000}).json()
    assert {row["complaint_id"] for row in sla["items"]} == expected
    assert Counter(row["metric"] for row in sla["items"]) == (
        {"first_response": len(expected), "resolution": len(expected)} if expected else {})

    trends = client.get("/trends", params=params | {"dimension": "team", "limit": 1000}).json()
    by_team = Counter()
    for row in trends["items"]:
        by_team[row["key"]] += row["count"]
    assert by_team == Counter(history.team[cid] for cid in expected)

    workload = client.get("/workload", params=params).json()
    assert sum(row["open"] for row in workload["items"]) == len(expected)  # all open, assigned

    supervisor = client.get("/dashboards/supervisor", params=params).json()
    assert supervisor["counts"]["pending"] == len(expected)
    executive = client.get("/dashboards/executive", params=params).json()
    assert executive["total"] == len(expected)
    product = client.get("/dashboards/product", params=params).json()
    assert product["total"] == len(expected)

    exported = csv.DictReader(io.StringIO(client.get("/export/complaints", params=params).content.decode("utf-8-sig")))
    assert {row["complaint_id"] for row in exported} == expected


def test_trends_group_by_a_custom_field(client: TestClient, history: History) -> None:
    """Each current value counts its complaint once (a multiple choice once per option);
    complaints without a value are under null."""
    for field in ("issues", "amount", "timely_response", "sub_product"):
        rows = client.get("/trends", params=ALL | {"dimension": f"field:{field}", "granularity": "month",
                                                   "limit": 1000}).json()["items"]
        counts = Counter()
        for row in rows:
            counts[row["key"]] += row["count"]
        values = [row for row in oracle_fields(history.envelopes) if row[1] == field]
        expected = Counter(key_of(row) for row in values)
        expected[None] = len(set(history.team) - {row[0] for row in values})
        assert counts == +expected, field  # (+: no row for a count of 0)


def test_rates_of_a_true_false_field_by_any_dimension(client: TestClient, history: History) -> None:
    """The CFPB's timely-response rate per company (the team), and by a custom field."""
    timely = {row[0]: row[4] for row in oracle_fields(history.envelopes) if row[1] == "timely_response"}
    answer = client.get("/rates", params=ALL | {"of": "timely_response", "by": "team"}).json()
    expected = {}
    for team in TEAMS:
        values = [timely[cid] for cid in timely if history.team[cid] == team]
        if values:
            expected[team] = (len(values), sum(values), sum(values) / len(values))
    assert {row["key"]: (row["count"], row["true_count"], row["rate"]) for row in answer["items"]} == expected
    assert answer["of"] == "timely_response" and answer["by"] == "team"

    overall = client.get("/rates", params=ALL | {"of": "timely_response"}).json()["items"]
    assert [(row["key"], row["count"], row["true_count"]) for row in overall] == [
        (None, len(timely), sum(timely.values()))]

    disputed = {row[0]: row[4] for row in oracle_fields(history.envelopes) if row[1] == "disputed"}
    by_field = client.get("/rates", params=ALL | {"of": "timely_response", "by": "field:disputed"}).json()["items"]
    groups: dict[Any, list[bool]] = defaultdict(list)
    for cid, value in timely.items():
        groups[json_key(disputed[cid]) if cid in disputed else None].append(value)
    assert {row["key"]: (row["count"], row["true_count"]) for row in by_field} == {
        k: (len(v), sum(v)) for k, v in groups.items()}

    nothing = client.get("/rates", params=ALL | {"of": "timely_response", "field": "no_such_field:x"}).json()
    assert nothing["items"] == []  # no group of none, not a row of count 0

    vip = tagged(history, "vip")
    filtered = client.get("/rates", params=ALL | {"of": "timely_response", "tag": "vip"}).json()["items"]
    vip_values = [v for cid, v in timely.items() if cid in vip]
    assert [(row["count"], row["true_count"]) for row in filtered] == (
        [(len(vip_values), sum(vip_values))] if vip_values else [])


def test_tag_trends_this_week_against_last(client: TestClient, history: History) -> None:
    answer = client.get("/tags/trends", params={"limit": 3}).json()
    now = history.now
    local = (now + timedelta(hours=8)).date()
    monday = local - timedelta(days=local.weekday())
    starts = [datetime(d.year, d.month, d.day, tzinfo=UTC) - timedelta(hours=8)
              for d in (monday - timedelta(days=7), monday)]
    this, last = Counter(), Counter()
    for _, tag, at in oracle_tags(history.envelopes):
        if starts[1] <= at <= now:
            this[tag] += 1
        elif starts[0] <= at < starts[1]:
            last[tag] += 1
    expected = sorted(({"tag": t, "this_week": this[t], "last_week": last[t], "change": this[t] - last[t],
                        "growth": (this[t] - last[t]) / last[t] if last[t] else None} for t in this | last),
                      key=lambda row: (-row["this_week"], -row["change"], row["tag"]))[:3]
    assert answer["this_week"] == monday.isoformat()
    assert answer["items"] == expected
    assert expected, "the history should have tags in the last two weeks"


def test_field_filters_as_of_the_past(client: TestClient, history: History) -> None:
    """A filter as of an instant reads the values the complaints had then."""
    middle = history.envelopes[len(history.envelopes) // 2].occurred_at
    past = [e for e in history.envelopes if e.occurred_at <= middle]
    expected = {row[0] for row in oracle_fields(past) if row[1] == "timely_response" and row[4] is False}
    rows = client.get("/queue", params=ALL | {"queue": "all", "limit": 500, "field": "timely_response:false",
                                              "as_of": middle.isoformat()}).json()["rows"]
    assert {row["complaint_id"] for row in rows} == expected


@pytest.mark.parametrize(("path", "params", "loc"), [
    ("/queue", {"field": "timely_response"}, "field"),
    ("/queue", {"field": "bad name:x"}, "field"),
    ("/queue", {"field": "amount:"}, "field"),
    ("/sla", {"tag": "   "}, "tag"),
    ("/trends", {"dimension": "field:"}, "dimension"),
    ("/trends", {"dimension": "field:a b"}, "dimension"),
    ("/rates", {}, "of"),
    ("/rates", {"of": "sub_product"}, "of"),
    ("/rates", {"of": "timely_response", "by": "colour"}, "by"),
    ("/tags/trends", {"limit": 0}, "limit"),
    ("/queue", {"field.timely_response": "true"}, "field.timely_response"),
    ("/tags/trends", {"as_of": "0.025"}, "as_of"),  # not seconds since 1970, as pydantic would read it
    ("/dashboards/supervisor", {"start": "1800000000"}, "start"),
])
def test_bad_field_and_tag_parameters_are_422s_naming_them(client: TestClient, path: str,
                                                           params: dict[str, Any], loc: str) -> None:
    answer = client.get(path, params=params)
    assert answer.status_code == 422, answer.text
    assert any(error["loc"][-1] == loc or loc in error["loc"] for error in answer.json()["detail"]), answer.json()


# ------------------------------------------------------------------ through the desk
def test_the_desks_own_commands_make_the_read_models(tmp_path: Path) -> None:
    """Fields given at registration, at triage and by update-fields, tags added and removed
    (in any spelling), through the real desk: the read models hold what the aggregates hold,
    and `/rates` and the tag filter answer from them."""
    rng = random.Random(15)
    clock = FakeClock(START)
    desk = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=clock)
    ids = []
    for n in range(12):
        clock.advance(minutes=30)
        billing = n % 3 != 0
        ids.append(desk.register(RegisterComplaint(
            channel="web", customer={"id": f"C-{n}"}, customer_personal={"name": "N", "contact": "n@example.com"},
            title="t", description="d", fields={"store": rng.choice(["online", "sh-xuhui"])}), OPERATOR).complaint_id)
        desk.execute(ids[-1], TriageComplaint(
            category="billing" if billing else "product_defect", severity="normal",
            fields={"purchase_date": "2026-10-0" + str(1 + n % 9)}), OPERATOR)
        desk.execute(ids[-1], AssignComplaint(team=rng.choice(TEAMS)), OPERATOR)
        clock.advance(minutes=5)
        desk.execute(ids[-1], UpdateFields(fields={"refund_issued": rng.random() < 0.6, "amount_disputed": n * 10}
                                           if billing else {"symptoms": rng.sample(["smoke", "noise", "crash"], 2)}),
                     OPERATOR)
        desk.execute(ids[-1], AddTag(tag=rng.choice([" ＶＩＰ ", "vip", "Late  Delivery"])), OPERATOR)
        if n % 4 == 0:
            desk.execute(ids[-1], UpdateFields(fields={"store": None}), OPERATOR)
            desk.execute(ids[-1], RemoveTag(tag="VIP"), OPERATOR)
    db = build_read_db(desk)
    complaints = {str(cid): desk.get_complaint(cid) for cid in ids}
    envelopes = list(envelopes_of(desk.mapper, desk.recorder.select_notifications(1, 10_000)))
    desk.close()

    fields, tags = stored(db)
    assert fields == oracle_fields(envelopes) and tags == oracle_tags(envelopes)
    # ... and the oracle's values are the aggregates' own.
    assert {(row[0], row[1], key_of(row)) for row in fields} == {
        (cid, name, json_key(option)) for cid, c in complaints.items() for name, value in c.fields.items()
        if value is not None for option in (value if isinstance(value, list) else [value])}
    assert {(cid, tag) for cid, tag, _ in tags} == {(cid, tag) for cid, c in complaints.items() for tag in c.tags}

    with TestClient(create_read_app(db, AUTHENTICATE, clock=lambda: clock.now, cache_seconds=0),
                    headers=bearer()) as client:
        rates = client.get("/rates", params=ALL | {"of": "refund_issued", "by": "team"}).json()["items"]
        expected: dict[str, list[bool]] = defaultdict(list)
        for c in complaints.values():
            if c.fields.get("refund_issued") is not None:
                expected[c.team].append(c.fields["refund_issued"])
        assert {row["key"]: (row["count"], row["true_count"]) for row in rates} == {
            team: (len(values), sum(values)) for team, values in expected.items()}
        vip = client.get("/queue", params=ALL | {"queue": "all", "tag": "ｖｉｐ", "limit": 100}).json()["rows"]
        assert {row["complaint_id"] for row in vip} == {cid for cid, c in complaints.items() if "vip" in c.tags}
    db.close()
