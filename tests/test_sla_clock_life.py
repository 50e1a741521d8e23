"""Each SLA clock's life, worked by hand on two complaints (docs/read-models.md).

The packaged policy gives a fatal complaint the round-the-clock calendar: first response
in 15 minutes, resolution in 240, next response in 60; warnings 15 minutes ahead. With
business time equal to wall time, every expected instant below is plain arithmetic from
the minutes the commands are sent at.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from commands.desk import ComplaintDesk
from commands.models import COMPLAINT_COMMANDS, RegisterComplaint
from projections import queries
from projections.base import to_batch
from tests.histories import START, Clock, envelopes
from tests.test_read_models import POLICY, deliver, projectors, read_db
from tests.identity import AUTHENTICATE, OPERATOR, bearer


def at(minute: int) -> datetime:
    return START + timedelta(minutes=minute)


def send(desk: ComplaintDesk, clock: Clock, minute: int, complaint: UUID, path: str, **fields: Any) -> None:
    clock.now = at(minute)
    desk.execute(complaint, COMPLAINT_COMMANDS[path].model_validate({**fields}), OPERATOR)


def register(desk: ComplaintDesk, clock: Clock, minute: int, name: str) -> UUID:
    clock.now = at(minute)
    return desk.register(RegisterComplaint(
        command_id=name, channel="web", customer={"id": name, "tier": "regular"},
        customer_personal={"name": "N", "contact": "n@example.com"}, title="Service down",
        description="d", product="app", region=None,
    ), OPERATOR).complaint_id


def contact(direction: str) -> dict[str, str]:
    return {"direction": direction, "visibility": "public", "channel": "phone", "summary": "call"}


@pytest.fixture(scope="module")
def lived() -> tuple[Any, UUID, UUID, UUID]:
    clock = Clock(START)
    desk = ComplaintDesk(clock=clock, sla_policy=POLICY)
    grading = {"category": "product_defect", "severity": "fatal", "impact": "all_users"}
    # A complaint answered, paused, answered late, and written to again.
    one = register(desk, clock, 0, "one")
    send(desk, clock, 1, one, "triage", **grading)
    send(desk, clock, 2, one, "assign", team="tech", agent="ann")
    send(desk, clock, 5, one, "contacts", **contact("inbound"))  # next response due at 65
    send(desk, clock, 10, one, "contacts", **contact("outbound"))  # answers both
    send(desk, clock, 20, one, "wait-on-customer", reason="logs")
    send(desk, clock, 100, one, "customer-replied", summary="here")  # due 240 + 80; next due 160
    send(desk, clock, 200, one, "contacts", **contact("outbound"))  # 40 minutes late
    send(desk, clock, 290, one, "contacts", **contact("inbound"))  # next due 350
    # A complaint withdrawn while the customer awaits a reply.
    two = register(desk, clock, 0, "two")
    send(desk, clock, 1, two, "triage", **grading)
    send(desk, clock, 3, two, "contacts", **contact("inbound"))
    send(desk, clock, 4, two, "withdraw", reason="solved it myself")
    # A complaint paused inside its warning window: the due time moves past the resume.
    three = register(desk, clock, 0, "three")
    send(desk, clock, 1, three, "triage", **grading)
    send(desk, clock, 2, three, "assign", team="tech", agent="bob")
    send(desk, clock, 230, three, "wait-on-customer", reason="photos")  # warned at 225
    send(desk, clock, 280, three, "customer-replied", summary="sent")  # due 240 + 50 = 290
    db = read_db()
    deliver(db, to_batch(envelopes(desk)), projectors())
    return db, one, two, three


def life(db: Any, complaint: UUID, now: int) -> list[tuple[str, int, str, int]]:
    rows = queries.sla_clock_events(db, now=at(now), policy=POLICY, complaint_id=str(complaint))
    return sorted(
        (r["metric"], r["cycle"], r["event"], round((r["occurred_at"] - START).total_seconds() / 60))
        for r in rows
    )


def test_each_clock_lives_activated_paused_resumed_warned_breached_fulfilled(lived) -> None:
    db, one, *_ = lived
    assert life(db, one, now=345) == sorted([
        # 15 minutes to respond, warned from the start; answered at 10
        ("first_response", 1, "activated", 0), ("first_response", 1, "warned", 0),
        ("first_response", 1, "fulfilled", 10),
        # due at 240, paused 20..100, so due at 320: warned at 305, breached at 320
        ("resolution", 1, "activated", 0), ("resolution", 1, "paused", 20),
        ("resolution", 1, "resumed", 100), ("resolution", 1, "warned", 305),
        ("resolution", 1, "breached", 320),
        # the customer wrote at 5 and was answered at 10
        ("next_response", 1, "activated", 5), ("next_response", 1, "fulfilled", 10),
        # replied at 100, answered at 200: due at 160
        ("next_response", 2, "activated", 100), ("next_response", 2, "warned", 145),
        ("next_response", 2, "breached", 160), ("next_response", 2, "fulfilled", 200),
        # wrote at 290: due at 350, warned at 335, not yet breached
        ("next_response", 3, "activated", 290), ("next_response", 3, "warned", 335),
    ])


def test_a_running_clock_warns_and_breaches_only_once_its_moments_come(lived) -> None:
    db, one, *_ = lived
    before = {e for e in life(db, one, now=334) if e[:2] == ("next_response", 3)}
    assert before == {("next_response", 3, "activated", 290)}
    later = {e for e in life(db, one, now=351) if e[:2] == ("next_response", 3)}
    assert ("next_response", 3, "breached", 350) in later


def test_a_withdrawal_cancels_every_running_clock(lived) -> None:
    db, _, two, _ = lived
    assert life(db, two, now=400) == sorted([
        ("first_response", 1, "activated", 0), ("first_response", 1, "warned", 0),
        ("first_response", 1, "cancelled", 4),
        ("resolution", 1, "activated", 0), ("resolution", 1, "cancelled", 4),
        ("next_response", 1, "activated", 3), ("next_response", 1, "cancelled", 4),
    ])
    clocks = queries.sla_clocks(db, now=at(400), policy=POLICY)
    mine = {(k["metric"], k["cycle"]): k for k in clocks if k["complaint_id"] == str(two)}
    assert {m: k["status"] for m, k in mine.items()} == {
        ("first_response", 1): "cancelled", ("resolution", 1): "cancelled", ("next_response", 1): "cancelled"}
    assert mine[("next_response", 1)]["stop_reason"] == "withdrawn"
    assert mine[("next_response", 1)]["business_seconds"] == 60.0


def test_next_response_attainment_counts_every_reply_awaited(lived) -> None:
    db, *_ = lived
    rows = queries.sla_attainment(db, now=at(345), policy=POLICY)
    nr = next(r for r in rows if r["metric"] == "next_response")
    # met: one's first; breached: one's second (answered late) and three's (the reply at
    # 280 awaits an answer due at 340); one's third is not due until 350 and two's was
    # cancelled, so neither counts
    assert (nr["met"], nr["breached"], nr["counted"]) == (1, 2, 3)
    assert nr["avg_business_seconds"] == (5 * 60 + 100 * 60) / 2


def test_a_warning_follows_the_due_time_a_pause_moved(lived) -> None:
    """Like Zendesk's breach events, a clock's warning and breach follow its current due
    time: the warning given at 225 for the old due time (240) is superseded once the
    pause moved it to 290, and the clock warns again as it resumes inside the new window."""
    db, *_, three = lived
    assert [e for e in life(db, three, now=300) if e[0] == "resolution"] == sorted([
        ("resolution", 1, "activated", 0), ("resolution", 1, "paused", 230),
        ("resolution", 1, "resumed", 280), ("resolution", 1, "warned", 280),
        ("resolution", 1, "breached", 290),
    ])


def test_the_audit_api_shows_each_clock_and_its_life(lived) -> None:
    from fastapi.testclient import TestClient

    from read_api.app import create_read_app

    db, one, two, _ = lived
    with TestClient(create_read_app(db, AUTHENTICATE, clock=lambda: at(345)), headers=bearer()) as client:
        got = client.get(f"/audit/complaints/{one}/sla")
        assert got.status_code == 200, got.text
        clocks = {(k["metric"], k["cycle"]): k for k in got.json()["clocks"]}
        assert list(clocks) == [("first_response", 1), ("resolution", 1), ("next_response", 1),
                                ("next_response", 2), ("next_response", 3)]
        assert [m["event"] for m in clocks[("resolution", 1)]["life"]] == [
            "activated", "paused", "resumed", "warned", "breached"]
        assert clocks[("resolution", 1)]["status"] == "breached"
        assert clocks[("resolution", 1)]["paused_minutes"] == 80
        assert clocks[("next_response", 3)]["status"] == "warning"
        assert clocks[("next_response", 2)]["business_minutes"] == 100
        cancelled = client.get(f"/audit/complaints/{two}/sla").json()["clocks"]
        assert {k["status"] for k in cancelled} == {"cancelled"}
        assert client.get("/audit/complaints/00000000-0000-0000-0000-000000000000/sla").status_code == 404
        assert client.get("/audit/complaints/not-a-uuid/sla").status_code == 422
        supervisor = client.get("/dashboards/supervisor", params={"period": "all"}).json()
        assert supervisor["sla"]["next_response"]["counted"] == 3


def test_sla_pages_tell_each_next_response_clock_apart(lived) -> None:
    from fastapi.testclient import TestClient

    from read_api.app import create_read_app

    db, one, *_ = lived
    with TestClient(create_read_app(db, AUTHENTICATE, clock=lambda: at(345), cache_seconds=0), headers=bearer()) as client:
        pages = [client.get("/sla", params={"limit": 2, "offset": offset, "sort": "complaint_id"}).json()
                 for offset in range(0, 12, 2)]
    rows = [row for page in pages for row in page["items"]]
    assert pages[0]["total"] == len(rows) == 11  # 3 complaints x 2, and 5 next-response clocks
    assert len({(r["complaint_id"], r["metric"], r["cycle"]) for r in rows}) == 11
    assert sorted(r["cycle"] for r in rows if r["complaint_id"] == str(one) and r["metric"] == "next_response") \
        == [1, 2, 3]
