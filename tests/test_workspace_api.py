"""The workspace's API: its queues against the write side, and what each caller may do.

The queues (`GET /queue`) are read from the read models; the oracle here is the desk's
own aggregates (status, team, agent and the SLA due times they hold), over a generated
history of complaints in every state, some past their due times and some close to them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from aggregates.complaint import OPEN, Complaint
from aggregates.priority import PRIORITIES
from commands.models import (
    AddNote, AssignComplaint, RecordContact, RegisterComplaint, ResolveComplaint, TriageComplaint,
    WithdrawComplaint,
)
from complaints.identity import DevUser
from complaints.settings import Settings
from complaints.store import open_desk
from read_api.app import create_read_app
from tests.conftest import FakeClock
from tests.identity import AUTHENTICATE, OPERATOR, bearer, principal_of
from tests.test_read_api import build_read_db

AGENTS = {"billing": ["billing-1", "billing-2"], "logistics": ["logistics-1"]}
BILLING_AGENT = DevUser("billing-1", "李娜 Li Na", ("agent",), "billing")
BILLING_LEAD = DevUser("billing-lead", "刘洋 Liu Yang", ("supervisor",), "billing")
INTAKE = DevUser("intake", "王芳 Wang Fang", ("intake",))
WARNING = timedelta(minutes=15)  # the packaged policy's warning time


class Desk:
    """Sixty complaints registered over three days, each taken some way along its life."""

    def __init__(self, settings: Settings, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.clock = FakeClock(datetime(2026, 11, 16, 1, 0, tzinfo=UTC))  # Monday 09:00 in Shanghai
        self.desk = open_desk(settings, clock=self.clock)
        self.ids: list[UUID] = []
        for n in range(60):
            self.clock.advance(minutes=rng.choice([3, 20, 50, 90]))
            cid = self.desk.register(RegisterComplaint(
                channel=rng.choice(["web", "phone", "email"]), customer={"id": f"C-{n}", "tier": "regular"},
                customer_personal={"name": f"客户{n}", "contact": f"c{n}@example.com"},
                title=f"投诉 {n}", description="空调不制冷", product=rng.choice(["空调", "router", "tv"]),
            ), OPERATOR).complaint_id
            self.ids.append(cid)
            steps = rng.randint(0, 5)
            team = rng.choice(list(AGENTS))
            commands: list[Any] = [
                TriageComplaint(category=rng.choice(["product_defect", "billing"]),
                                severity=rng.choice(["fatal", "major", "normal", "minor"])),
                AssignComplaint(team=team, agent=rng.choice([None, *AGENTS[team]])),
                RecordContact(direction="outbound", channel="phone", summary="called back"),
                AddNote(text="checked"),
                rng.choice([ResolveComplaint(resolution="fixed"), WithdrawComplaint(reason="not needed")]),
            ]
            for command in commands[:steps]:
                self.clock.advance(minutes=rng.choice([1, 10]))
                self.desk.execute(cid, command, OPERATOR)
        self.clock.advance(minutes=30)

    def complaints(self) -> list[Complaint]:
        return [self.desk.get_complaint(cid) for cid in self.ids]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    d = Desk(Settings(store="sqlite", sqlite_path=tmp_path_factory.mktemp("workspace") / "events.sqlite"))
    yield d
    d.desk.close()


@pytest.fixture(scope="module")
def client(desk: Desk) -> Iterator[TestClient]:
    db = build_read_db(desk.desk)
    app = create_read_app(db, AUTHENTICATE, clock=lambda: desk.clock.now, cache_seconds=0)
    with TestClient(app, headers=bearer()) as c:
        yield c
    db.close()


def running_dues(c: Complaint) -> list[datetime]:
    """The due times of the complaint's running clocks (no waits in this history: none paused)."""
    if c.status not in OPEN:
        return []
    dues = [c.resolution_due] if c.resolution_due else []
    if c.first_responded_at is None and c.first_response_due:
        dues.append(c.first_response_due)
    return dues


def expected(desk: Desk, queue: str, caller: DevUser | None) -> set[str]:
    now = desk.clock.now
    chosen = set()
    for c in desk.complaints():
        dues = running_dues(c)
        breached = any(due < now for due in dues)
        at_risk = not breached and any(now >= due - WARNING for due in dues)
        team_of_caller = caller.team if caller else None
        if team_of_caller and not (c.team == team_of_caller or (queue == "unassigned" and c.team is None
                                                                   and "supervisor" in caller.roles)):
            continue
        if {"mine": c.status in OPEN and caller is not None and c.agent == caller.username,
            "team": c.status in OPEN,
            "unassigned": c.status in OPEN and c.agent is None,
            "breached": breached, "at_risk": at_risk, "all": True}[queue]:
            chosen.add(str(c.id))
    return chosen


def listed(client: TestClient, user: DevUser | None = None, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/queue", params=params | {"limit": 1000}, headers=bearer(user) if user else {})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == len(body["rows"])
    return body["rows"]


@pytest.mark.parametrize("queue", ["team", "unassigned", "breached", "at_risk", "all"])
def test_each_queue_lists_what_the_write_side_says(client: TestClient, desk: Desk, queue: str) -> None:
    rows = listed(client, queue=queue)
    assert {r["complaint_id"] for r in rows} == expected(desk, queue, None)
    assert rows or queue == "at_risk", "the history should put complaints in this queue"


@pytest.mark.parametrize("user", [BILLING_AGENT, BILLING_LEAD], ids=["agent", "team lead"])
@pytest.mark.parametrize("queue", ["mine", "team", "unassigned", "breached"])
def test_a_team_bound_caller_sees_its_team_only(client: TestClient, desk: Desk, user: DevUser, queue: str) -> None:
    assert {r["complaint_id"] for r in listed(client, user, queue=queue)} == expected(desk, queue, user)


def test_breached_and_at_risk_rows_say_so_with_their_next_due_time(client: TestClient, desk: Desk) -> None:
    by_id = {str(c.id): c for c in desk.complaints()}
    for row in listed(client, queue="team"):
        dues = running_dues(by_id[row["complaint_id"]])
        shown = row["next_due_at"] and datetime.fromisoformat(row["next_due_at"])
        assert shown == (min(dues) if dues else None)
        assert row["breached"] == any(due < desk.clock.now for due in dues)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sort=st.sampled_from(["due", "priority", "age"]), order=st.sampled_from(["asc", "desc"]),
       limit=st.integers(1, 25), offset=st.integers(0, 70))
def test_pages_follow_the_sort_without_repeats(client: TestClient, sort: str, order: str, limit: int,
                                               offset: int) -> None:
    """A page is the slice of the whole sorted list: pages neither repeat nor skip a row."""
    everything = listed(client, queue="all", sort=sort, order=order)
    value = {"due": lambda r: r["next_due_at"] and datetime.fromisoformat(r["next_due_at"]),
             "priority": lambda r: r["priority"] and PRIORITIES.index(r["priority"]),
             "age": lambda r: datetime.fromisoformat(r["registered_at"])}[sort]
    values = [value(r) for r in everything]
    known = [v for v in values if v is not None]
    # The sorted values first (those without one, such as no running clock, at the end).
    assert values == sorted(known, reverse=order == "desc") + [None] * (len(values) - len(known))
    page = client.get("/queue", params={"queue": "all", "sort": sort, "order": order, "limit": limit,
                                        "offset": offset}).json()
    assert [r["complaint_id"] for r in page["rows"]] == [r["complaint_id"] for r in everything[offset:offset + limit]]


def test_filters_and_window_narrow_the_list(client: TestClient, desk: Desk) -> None:
    complaints = desk.complaints()
    rows = listed(client, queue="all", product="空调", status="assigned")
    assert {r["complaint_id"] for r in rows} == {str(c.id) for c in complaints
                                                 if c.product == "空调" and c.status == "assigned"}
    # Without a period every complaint counts, however old; with one, those registered in it.
    start = (desk.clock.now - timedelta(days=1)).isoformat()
    rows = listed(client, queue="all", start=start)
    assert {r["complaint_id"] for r in rows} == {str(c.id) for c in complaints
                                                 if c.registered_at >= desk.clock.now - timedelta(days=1)}
    assert len(listed(client, queue="all")) == len(complaints)


def test_open_and_resolution_dated_lists(client: TestClient, desk: Desk) -> None:
    """`status=open` is every open status; `dated_by=resolved` puts the window on the resolution
    (a dashboard's "resolved today" and resolutions per day)."""
    complaints = desk.complaints()
    assert {r["complaint_id"] for r in listed(client, queue="all", status="open")} == {
        str(c.id) for c in complaints if c.status in OPEN}
    resolutions = sorted(c.resolved_at for c in complaints if c.resolved_at is not None)
    since = resolutions[len(resolutions) // 2]  # half of them
    rows = listed(client, queue="all", start=since.isoformat(), dated_by="resolved")
    resolved = {str(c.id) for c in complaints if c.resolved_at is not None and c.resolved_at >= since}
    assert resolved and {r["complaint_id"] for r in rows} == resolved


def test_bad_queue_parameters_are_refused(client: TestClient) -> None:
    for params in ({"queue": "everything"}, {"sort": "title"}, {"status": "done"}, {"limit": 0}, {"colour": "red"},
                   {"dated_by": "closed"}):
        answer = client.get("/queue", params=params)
        assert answer.status_code == 422, params
    assert client.get("/queue", headers={"Authorization": "Bearer nope"}).status_code == 401
    executive = DevUser("executive", "赵敏 Zhao Min", ("executive",))
    assert client.get("/queue", headers=bearer(executive)).status_code == 403


# ------------------------------------------------------------------ what each caller may do
def test_allowed_actions_follow_the_status_and_the_role(desk: Desk) -> None:
    agent, lead, intake = principal_of(BILLING_AGENT), principal_of(BILLING_LEAD), principal_of(INTAKE)
    for c in desk.complaints():
        if c.team != "billing":
            continue
        for principal in (agent, lead, intake):
            allowed = desk.desk.complaint_for(principal, c.id)["allowed_actions"]
            for action in allowed:
                assert principal.may(principal.permission_for(action, c.team, principal.subject)), (action, c.status)
            if c.status == "assigned":
                assert "resolve" in allowed if principal is not intake else "resolve" not in allowed
            assert ("reopen" in allowed) == (principal is lead and c.status in {"resolved", "verified", "closed"})


def test_an_agent_takes_a_complaint_of_its_team_and_no_other_assignment(tmp_path: Any) -> None:
    clock = FakeClock(datetime(2026, 11, 16, 1, 0, tzinfo=UTC))
    d = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=clock)
    try:
        cid = d.register(RegisterComplaint(
            channel="web", customer={"id": "C-1"}, customer_personal={"name": "n", "contact": "c@example.com"},
            title="t", description="d"), OPERATOR).complaint_id
        d.execute(cid, TriageComplaint(category="billing", severity="normal"), OPERATOR)
        d.execute(cid, AssignComplaint(team="billing"), OPERATOR)
        agent = principal_of(BILLING_AGENT)
        assert "assign" in d.complaint_for(agent, cid)["allowed_actions"]
        from aggregates.access import AccessDenied
        for other in (AssignComplaint(team="billing", agent="billing-2"), AssignComplaint(team="logistics",
                                                                                        agent="billing-1")):
            with pytest.raises(AccessDenied):
                d.execute(cid, other, agent)
        assert d.get_complaint(cid).agent is None, "a refused assignment changes nothing"
        result = d.execute(cid, AssignComplaint(team="billing", agent="billing-1"), agent)
        assert result.status == "assigned" and d.get_complaint(cid).agent == "billing-1"
    finally:
        d.close()
