"""The Complaint aggregate driven by random command sequences (hypothesis state machine).

The model below is the lifecycle written out again as plain transitions, independently
of the aggregate's own table, so a wrong entry on either side shows up.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from eventsourcing.application import Application
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from aggregates.complaint import Complaint, DomainError, IllegalTransition, Meta, RuleViolation
from aggregates.priority import derive_priority
from aggregates.sla import load_sla_policy

POLICY = load_sla_policy()
OPEN = {"received", "triaged", "assigned", "waiting_on_customer", "resolution_proposed"}
TERMINAL = {"closed", "withdrawn", "duplicate"}


def next_status(status: str, action: str, before_wait: str | None) -> str | None:
    """The model: the status after `action`, or None where it is illegal."""
    if action == "triage":
        return {"received": "triaged", "triaged": "triaged", "assigned": "assigned"}.get(status)
    if action == "assign":
        if status == "triaged":
            return "assigned"
        return status if status in {"assigned", "waiting_on_customer", "resolution_proposed"} else None
    if action in {"add_note", "record_contact"}:
        return None if status in TERMINAL else status
    if action == "wait_on_customer":
        return "waiting_on_customer" if status in {"assigned", "resolution_proposed"} else None
    if action == "customer_replied":
        return before_wait if status == "waiting_on_customer" else None
    if action == "propose_resolution":
        return "resolution_proposed" if status == "assigned" else None
    if action == "resolve":
        return "resolved" if status in {"assigned", "resolution_proposed"} else None
    if action == "verify":
        return "verified" if status == "resolved" else None
    if action == "close":
        return "closed" if status in {"resolved", "verified"} else None
    if action == "reopen":
        return "assigned" if status in {"resolved", "verified", "closed"} else None
    if action == "escalate":
        return status if status in OPEN else None
    if action == "withdraw":
        return "withdrawn" if status in OPEN else None
    if action == "mark_duplicate":
        return "duplicate" if status in OPEN else None
    raise AssertionError(action)


class ComplaintLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.app: Application = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.now = datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
        self.steps = 0

    def meta(self) -> Meta:
        self.steps += 1
        return Meta("agent", self.now, f"cmd-{self.steps}", "conv-1")

    @initialize(tier=st.sampled_from(["vip", "regular"]), title=st.sampled_from(["Refund", "严重 fraud"]))
    def register(self, tier: str, title: str) -> None:
        self.complaint = Complaint(
            channel="web", customer={"id": "C1", "tier": tier},
            customer_personal={"name": "N", "contact": "c"}, title=title, description="d",
            product="p", region=None, order_ref=None, contract_ref=None, attachments=[], **self.meta().fields(),
        )
        self.status = "received"
        self.before_wait: str | None = None
        self.level = 0
        self.assignee: tuple[str, str] | None = None
        self.app.save(self.complaint)

    def attempt(self, action: str, call, rule_ok: bool = True) -> None:  # type: ignore[no-untyped-def]
        expected = next_status(self.status, action, self.before_wait)
        version = self.complaint.version
        try:
            call()
        except IllegalTransition as error:
            assert expected is None, f"{action} from {self.status} should be legal"
            assert (error.status, error.action) == (self.status, action)
            assert self.complaint.version == version
            assert not self.complaint.pending_events
            return
        except RuleViolation:
            assert expected is not None and not rule_ok, f"{action}: unexpected rule violation"
            assert self.complaint.version == version
            return
        assert expected is not None, f"{action} from {self.status} should be illegal"
        assert rule_ok, f"{action} should have broken a rule"
        assert self.complaint.version == version + 1
        if action == "wait_on_customer":
            self.before_wait = self.status
        self.status = expected
        self.app.save(self.complaint)

    @rule(minutes=st.integers(0, 60 * 72))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule(severity=st.sampled_from(["fatal", "major", "normal", "minor"]),
          impact=st.sampled_from(["one_user", "some_users", "all_users"]))
    def triage(self, severity: str, impact: str) -> None:
        self.attempt("triage", lambda: self.complaint.triage("billing", severity, impact, POLICY, self.meta()))  # type: ignore[arg-type]
        if self.complaint.severity == severity and self.complaint.impact == impact:
            expected, _ = derive_priority(severity, self.complaint.customer["tier"], impact,  # type: ignore[arg-type]
                                          self.complaint.title + "\n" + self.complaint.description)
            assert self.complaint.priority == expected
            assert self.complaint.first_response_due is not None
            assert self.complaint.first_response_due >= self.complaint.registered_at

    @rule(team=st.sampled_from(["t1", "t2"]), agent=st.sampled_from(["a1", "a2"]))
    def assign(self, team: str, agent: str) -> None:
        same = self.assignee == (team, agent)
        self.attempt("assign", lambda: self.complaint.assign(team, agent, self.meta()), rule_ok=not same)
        if self.complaint.team is not None:
            self.assignee = (self.complaint.team, self.complaint.agent)  # type: ignore[assignment]

    @rule()
    def add_note(self) -> None:
        self.attempt("add_note", lambda: self.complaint.add_note("n", self.meta()))

    @rule(direction=st.sampled_from(["inbound", "outbound"]), visibility=st.sampled_from(["public", "internal"]))
    def record_contact(self, direction: str, visibility: str) -> None:
        responded = self.complaint.first_responded_at
        pending = self.complaint.next_response_due
        version = self.complaint.version
        self.attempt("record_contact", lambda: self.complaint.record_contact(direction, visibility, "phone", "s", POLICY, self.meta()))  # type: ignore[arg-type]
        if responded is None and self.complaint.first_responded_at is not None:
            assert (direction, visibility) == ("outbound", "public")
        if self.complaint.version == version:
            return
        # The next-response clock: a public reply answers the customer; a customer's message
        # starts the clock where the policy has a next-response target, and the oldest
        # unanswered message keeps its due time.
        if (direction, visibility) == ("outbound", "public"):
            assert self.complaint.next_response_due is None
        elif direction == "inbound" and pending is not None:
            assert self.complaint.next_response_due == pending
        elif direction == "inbound" and self.complaint.severity is not None:
            target, _ = POLICY.target_for(self.complaint.severity, self.complaint.category)
            due = self.complaint.next_response_due
            assert (due is None) == (target.next_response_minutes is None)
            assert due is None or due > self.now
        else:
            assert self.complaint.next_response_due == pending

    @rule()
    def wait_on_customer(self) -> None:
        self.attempt("wait_on_customer", lambda: self.complaint.wait_on_customer("r", self.meta()))

    @rule()
    def customer_replied(self) -> None:
        due = self.complaint.resolution_due
        self.attempt("customer_replied", lambda: self.complaint.customer_replied("s", POLICY, self.meta()))
        if due is not None and self.complaint.resolution_due is not None:
            assert self.complaint.resolution_due >= due  # a pause never brings the due time forward

    @rule()
    def propose_resolution(self) -> None:
        self.attempt("propose_resolution", lambda: self.complaint.propose_resolution("p", self.meta()))

    @rule()
    def resolve(self) -> None:
        self.attempt("resolve", lambda: self.complaint.resolve("r", self.meta()))

    @rule(csat=st.integers(1, 5), nps=st.none() | st.integers(0, 10))
    def verify(self, csat: int, nps: int | None) -> None:
        self.attempt("verify", lambda: self.complaint.verify(csat, nps, None, None, self.meta()))

    @rule()
    def close(self) -> None:
        self.attempt("close", lambda: self.complaint.close(self.meta()))

    @rule()
    def reopen(self) -> None:
        self.attempt("reopen", lambda: self.complaint.reopen("again", self.meta()))

    @rule(level=st.integers(1, 3))
    def escalate(self, level: int) -> None:
        ok = level > self.level
        self.attempt("escalate", lambda: self.complaint.escalate(level, "x", self.meta()), rule_ok=ok)
        self.level = self.complaint.escalation_level

    @rule()
    def withdraw(self) -> None:
        self.attempt("withdraw", lambda: self.complaint.withdraw("w", self.meta()))

    @rule(itself=st.booleans())
    def mark_duplicate(self, itself: bool) -> None:
        other = self.complaint.id if itself else uuid.uuid4()
        self.attempt("mark_duplicate", lambda: self.complaint.mark_duplicate(other, self.meta()), rule_ok=not itself)

    @invariant()
    def rebuilt_from_stored_events_equals_live_state(self) -> None:
        if not hasattr(self, "complaint"):
            return
        assert self.complaint.status == self.status
        stored = self.app.repository.get(self.complaint.id)
        assert stored.state() == self.complaint.state()

    @invariant()
    def versions_strictly_increase_in_the_store(self) -> None:
        if not hasattr(self, "complaint"):
            return
        versions = [e.originator_version for e in self.app.events.get(self.complaint.id)]
        assert versions == list(range(1, self.complaint.version + 1))


ComplaintLifecycle.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_complaint_lifecycle = ComplaintLifecycle.TestCase


def test_domain_errors_name_the_state_and_the_action() -> None:
    complaint = Complaint(
        channel="web", customer={"id": "C1", "tier": "regular"},
        customer_personal={"name": "N", "contact": "c"}, title="t", description="d",
        product=None, region=None, order_ref=None, contract_ref=None, attachments=[],
        **Meta("a", datetime(2026, 1, 1, tzinfo=UTC), "c1", "c1").fields(),
    )
    try:
        complaint.close(Meta("a", datetime(2026, 1, 1, tzinfo=UTC), "c2", "c2"))
    except DomainError as error:
        assert str(error) == "cannot close a complaint that is received"
    else:
        raise AssertionError("closing a new complaint must fail")


def test_a_pause_moves_the_resolution_due_on_even_after_the_policy_changed() -> None:
    from aggregates.sla import SlaPolicy, SlaRule, SlaTarget

    start = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
    complaint = Complaint(
        channel="web", customer={"id": "C1", "tier": "regular"},
        customer_personal={"name": "N", "contact": "c"}, title="t", description="d",
        product=None, region=None, order_ref=None, contract_ref=None, attachments=[],
        **Meta("a", start, "c1", "c1").fields(),
    )
    complaint.triage("billing", "minor", "one_user", POLICY, Meta("a", start, "c2", "c2"))
    complaint.assign("t", "a", Meta("a", start, "c3", "c3"))
    due = complaint.resolution_due
    complaint.wait_on_customer("details", Meta("a", start + timedelta(hours=1), "c4", "c4"))
    # Today's policy renamed the calendar the complaint was triaged under.
    office = POLICY.calendars["business"].model_copy(update={"name": "office"})
    renamed = SlaPolicy(version="next", calendars={"office": office}, rules=[
        SlaRule(calendar="office", targets=SlaTarget(first_response_minutes=60, resolution_minutes=600)),
    ])
    complaint.customer_replied("here", renamed, Meta("c", start + timedelta(hours=4), "c5", "c5"))
    assert complaint.resolution_due is not None and due is not None
    # Paused 11:00-14:00 with lunch at 12:00-13:00: two business hours, and the due time
    # moves on by exactly that much business time.
    assert office.business_seconds_between(due, complaint.resolution_due) == 2 * 3600
