"""Random complaint histories for the read-model tests, made by the real domain.

Hypothesis draws a list of steps; each step moves a controllable clock on (minutes to
days, so histories cross midnights, weekends, the 2026 Spring Festival holidays and the
make-up working Saturdays around them) and sends one command through `ComplaintDesk` to
a new or an existing complaint, chosen among the actions its current status allows. Commands the domain refuses are skipped.
The stored events become envelopes exactly as the relay would make them.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import strategies as st

from aggregates.complaint import ALLOWED_FROM, DomainError
from commands.desk import ComplaintDesk
from commands.models import COMPLAINT_COMMANDS, RegisterComplaint
from aggregates.envelope import EventEnvelope
from consumers.stored_events import envelopes as envelopes_of
from tests.identity import OPERATOR

# Thursday 2026-02-12 09:30 in Shanghai: Saturday 02-14 is worked, the Spring Festival
# closes 02-15..02-23, Saturday 02-28 is worked (aggregates/sla_policy.toml: chinese-calendar).
START = datetime(2026, 2, 12, 1, 30, tzinfo=UTC)
DELTAS = [timedelta(0), timedelta(minutes=1), timedelta(minutes=7), timedelta(minutes=40),
          timedelta(hours=3), timedelta(hours=9), timedelta(days=1), timedelta(days=2, hours=5),
          timedelta(days=5)]
ACTIONS = {  # desk path -> the aggregate action that ALLOWED_FROM names
    "triage": "triage", "assign": "assign", "notes": "add_note", "contacts": "record_contact",
    "wait-on-customer": "wait_on_customer", "customer-replied": "customer_replied",
    "propose-resolution": "propose_resolution", "resolve": "resolve", "verify": "verify",
    "close": "close", "reopen": "reopen", "escalate": "escalate", "withdraw": "withdraw",
    "mark-duplicate": "mark_duplicate",
}
# Weighted towards the happy path so that histories get far enough to matter.
WEIGHTS = {"triage": 6, "assign": 6, "contacts": 4, "resolve": 4, "verify": 3, "close": 3,
           "wait-on-customer": 3, "customer-replied": 6, "propose-resolution": 2, "reopen": 2,
           "notes": 1, "escalate": 1, "withdraw": 0.3, "mark-duplicate": 0.3}

REPEATS = {("triage", "triaged"), ("triage", "assigned"), ("assign", "assigned"),
           ("assign", "waiting_on_customer"), ("assign", "resolution_proposed")}

step = st.tuples(
    st.integers(0, 2**16),  # which complaint
    st.integers(0, 2**16),  # which allowed action
    st.sampled_from(DELTAS),
    st.integers(0, 2**16),  # seed for the command's fields
)
steps = st.lists(step, min_size=20, max_size=80)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _fields(path: str, rng: random.Random, complaint: Any, others: list[UUID]) -> dict[str, Any] | None:
    if path == "triage":
        return {"category": rng.choice(["billing", "logistics", "product_defect"]),
                "severity": rng.choice(["fatal", "major", "normal", "minor"]),
                "impact": rng.choice(["one_user", "all_users"])}
    if path == "assign":
        return {"team": rng.choice(["billing", "tech"]), "agent": rng.choice(["ann", "bob", None])}
    if path == "notes":
        return {"text": "note"}
    if path == "contacts":
        return {"direction": rng.choice(["inbound", "outbound", "outbound"]),
                "visibility": rng.choice(["public", "public", "internal"]), "channel": "phone",
                "summary": "called"}
    if path in ("wait-on-customer", "reopen", "withdraw"):
        return {"reason": "why"}
    if path == "customer-replied":
        return {"summary": "reply"}
    if path == "propose-resolution":
        return {"proposal": "refund"}
    if path == "resolve":
        return {"resolution": "fixed"}
    if path == "verify":
        return {"csat": rng.randint(1, 5), "nps": rng.choice([None, *range(11)]),
                "effort": rng.choice([None, 1, 4, 7])}
    if path == "escalate":
        if complaint.escalation_level >= 3:
            return None
        return {"level": complaint.escalation_level + 1, "reason": "slow"}
    if path == "mark-duplicate":
        candidates = [o for o in others if o != complaint.id]
        return {"duplicate_of": str(rng.choice(candidates))} if candidates else None
    return {}


def drive(desk: ComplaintDesk, clock: Clock, plan: list[tuple[int, int, timedelta, int]]) -> int:
    """Send the planned commands; returns how many the domain accepted."""
    ids: list[UUID] = []
    accepted = 0
    for n, (which, action, delta, seed) in enumerate(plan):
        clock.now += delta
        rng = random.Random(seed * 65_537 + which)
        if not ids or rng.random() < 0.15:
            tier = rng.choice(["regular", "regular", "vip"])
            customer = rng.choice(["C1", "C2", "C3"])
            result = desk.register(RegisterComplaint(
                command_id=f"reg-{n}-{seed}-{which}", channel=rng.choice(["web", "phone", "email"]),
                customer={"id": customer, "tier": tier},
                customer_personal={"name": "N", "contact": "n@example.com"},
                title=rng.choice(["Broken", "Fraud on my bill"]), description="d",
                product=rng.choice(["app", "router", None]), region=rng.choice(["Beijing", None]),
            ), OPERATOR)
            ids.append(result.complaint_id)
            accepted += 1
            continue
        complaint = desk.get_complaint(ids[which % len(ids)])
        allowed = [p for p, a in ACTIONS.items() if complaint.status in ALLOWED_FROM[a]]
        if not allowed:
            continue
        # Move lives forward: grading and assigning again are possible but rarer.
        weights = [WEIGHTS[p] * (0.1 if (p, complaint.status) in REPEATS else 1) for p in allowed]
        path = random.Random(action).choices(allowed, weights)[0]
        fields = _fields(path, rng, complaint, ids)
        if fields is None:
            continue
        command = COMPLAINT_COMMANDS[path].model_validate({**fields})
        try:
            desk.execute(complaint.id, command, OPERATOR)
            accepted += 1
        except DomainError:
            pass  # e.g. assigning to the same team and agent again
    return accepted


def envelopes(desk: ComplaintDesk) -> list[EventEnvelope]:
    out: list[EventEnvelope] = []
    start = 1
    while True:
        page = desk.recorder.select_notifications(start, 10_000)
        out += envelopes_of(desk.mapper, page)
        if len(page) < 10_000:
            return out
        start = page[-1].id + 1


def history(plan: list[tuple[int, int, timedelta, int]], desk: ComplaintDesk | None = None) -> tuple[ComplaintDesk, list[EventEnvelope]]:
    """A desk (in memory unless given) with the plan's history, and its envelopes."""
    clock = Clock(START)
    desk = desk or ComplaintDesk(clock=clock)
    desk.clock = clock
    drive(desk, clock, plan)
    return desk, envelopes(desk)
