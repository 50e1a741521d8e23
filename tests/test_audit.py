"""Audit replay over the read node's events: past states equal the write side's own."""

from __future__ import annotations

import json
from datetime import timedelta

import duckdb

from complaints.store import open_desk
from commands.desk import ComplaintDesk
from commands.models import (
    AddNote, AssignComplaint, RegisterComplaint, ResolveComplaint, TriageComplaint, WaitOnCustomer,
    CustomerReplied,
)
from consumers.stored_events import envelopes
from projections.base import to_batch
from read_api.audit import IncompleteHistory, history, search, state_at
from tests.conftest import FakeClock
from tests.identity import OPERATOR, acting


def events_db(desk: ComplaintDesk) -> duckdb.DuckDBPyConnection:
    batch = to_batch(envelopes(desk.mapper, desk.recorder.select_notifications(None, 10_000)))
    db = duckdb.connect()
    db.register("batch", batch)
    db.execute("CREATE TABLE events AS SELECT * FROM batch")
    return db


def as_json(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def test_past_states_and_history(sqlite_settings, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    desk = open_desk(sqlite_settings, clock=clock)
    cid = desk.register(RegisterComplaint(
        channel="wechat", customer={"id": "C-42", "tier": "vip"},
        customer_personal={"name": "Zhang", "contact": "wx-zhang"}, title="Router 严重 overheating",
        description="Smells of smoke", product="router-x2", order_ref="ORD-9",
    ), OPERATOR).complaint_id
    commands = [
        ("lead", TriageComplaint(category="product_defect", severity="major")),
        ("lead", AssignComplaint(team="hardware", agent="ann")),
        ("ann", AddNote(text="asked for photos")),
        ("ann", WaitOnCustomer(reason="photos")),
        ("zhang", CustomerReplied(summary="photos sent")),
        ("lead", AssignComplaint(team="hardware", agent="bob")),
        ("bob", ResolveComplaint(resolution="replaced")),
    ]
    instants = [clock.now]
    for actor, command in commands:
        clock.advance(hours=5)
        instants.append(clock.now)
        desk.execute(cid, command, acting(actor))
    db = events_db(desk)
    for version in range(1, len(commands) + 2):
        # Opened with the keyring (as for a role that may see personal data), it is the desk's.
        assert state_at(db, cid, version=version, opener=desk.keyring.open) == as_json(
            desk.get_complaint(cid, version).state())
    # At an instant between two events, the state is the earlier one's.
    assert state_at(db, cid, at=instants[3] + timedelta(minutes=1))["version"] == 4
    assert state_at(db, cid, at=instants[0] - timedelta(minutes=1)) is None

    entries = history(db, cid)
    assert [e["event_type"] for e in entries] == [
        "Registered", "Triaged", "Assigned", "NoteAdded", "WaitingOnCustomer", "CustomerReplied",
        "Assigned", "Resolved",
    ]
    handover = entries[6]
    assert handover["actor"] == "lead"
    assert handover["changes"]["agent"] == {"before": "ann", "after": "bob"}
    assert handover["changes"]["handovers"] == {"before": 0, "after": 1}
    assert entries[1]["changes"]["priority"] == {"before": None, "after": "urgent"}
    assert "status" not in entries[3]["changes"]  # a note changes no status


def test_search_by_customer_order_product_and_text(sqlite_settings) -> None:  # type: ignore[no-untyped-def]
    desk = open_desk(sqlite_settings)
    for n, (customer, product, title) in enumerate(
        [("C-1", "tv-box", "No picture"), ("C-2", "tv-box", "Remote broken"), ("C-1", "router", "Slow wifi")]
    ):
        desk.register(RegisterComplaint(
            channel="web", customer={"id": customer},
            customer_personal={"name": "N", "contact": "c"}, title=title, description="...",
            product=product, order_ref=f"ORD-{n}",
        ), OPERATOR)
    db = events_db(desk)
    assert {r["title"] for r in search(db, customer="C-1")} == {"No picture", "Slow wifi"}
    assert [r["title"] for r in search(db, order="ORD-1")] == ["Remote broken"]
    assert {r["title"] for r in search(db, product="tv-box")} == {"No picture", "Remote broken"}
    assert [r["title"] for r in search(db, text="wifi")] == ["Slow wifi"]
    assert search(db, customer="C-1", product="tv-box")[0]["title"] == "No picture"
    assert search(db, text="nothing like this") == []


def test_a_history_without_its_beginning_is_refused_not_replayed(sqlite_settings, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    """A read node whose registration of a complaint went to dead letters holds its later
    events only: replaying them is refused with the reason (HTTP 409), never a crash."""
    desk = open_desk(sqlite_settings, clock=clock)
    cid = desk.register(RegisterComplaint(
        channel="web", customer={"id": "C-9"}, customer_personal={"name": "Li", "contact": "li@example.com"},
        title="Broken", description="It broke"), OPERATOR).complaint_id
    clock.advance(hours=1)
    desk.execute(cid, TriageComplaint(category="billing", severity="normal"), acting("lead"))
    db = events_db(desk)
    db.execute("DELETE FROM events WHERE complaint_version = 1")  # as if set aside
    for replay in (lambda: history(db, cid), lambda: state_at(db, cid)):
        try:
            replay()
        except IncompleteHistory as error:
            assert "from version 2 on only" in str(error)
        else:
            raise AssertionError("replayed a history without its registration")
