"""The what-if replay computes the due times the domain itself would have recorded.

Hypothesis draws complaint histories (registrations, gradings, waits on the customer and
replies, inbound and outbound contacts, public and internal, proposals, resolutions,
reopenings ...). The same history is lived twice by the `Complaint` aggregate: once under
policy B, whose events carry the domain's own due times, and once under policy A, whose
events go into a DuckDB `events` table and are recomputed under B by
`projections.whatif.due_patches`. Every event, patched, must equal B's.
"""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.complaint import ALLOWED_FROM, Complaint, DomainError, Meta
from aggregates.sla import SlaPolicy, load_sla_policy
from projections.event_log import EventLog
from projections.whatif import due_patches, renamed

POLICY_A = load_sla_policy()  # the packaged policy: Shanghai business hours and 24x7

# Another policy: a calendar of the same name with other hours, zone and holidays, a rule
# by category, a grading with no next-response target, other minutes everywhere.
POLICY_B = SlaPolicy.model_validate(tomllib.loads("""
version = "what-if-b"
[calendars.business]
timezone = "Europe/Berlin"
holidays = ["2027-02-08..2027-02-09", 2027-02-15]
[calendars.business.week]
mon = ["08:00-12:30", "13:30-20:00"]
tue = ["08:00-12:30", "13:30-20:00"]
wed = ["08:00-12:30", "13:30-20:00"]
thu = ["08:00-12:30", "13:30-20:00"]
fri = ["08:00-20:00"]
sat = ["10:00-16:00"]
[calendars.late]
timezone = "America/New_York"
[calendars.late.week]
mon = ["12:00-14:00", "15:00-23:00"]
tue = ["12:00-14:00", "15:00-23:00"]
wed = ["12:00-14:00", "15:00-23:00"]
thu = ["12:00-14:00", "15:00-23:00"]
fri = ["12:00-14:00", "15:00-23:00"]
[[rules]]
severity = "fatal"
category = "billing"
calendar = "late"
targets = { first_response_minutes = 20, resolution_minutes = 200, next_response_minutes = 30 }
[[rules]]
severity = "fatal"
calendar = "business"
targets = { first_response_minutes = 30, resolution_minutes = 300, next_response_minutes = 20 }
[[rules]]
category = "logistics"
calendar = "late"
targets = { first_response_minutes = 45, resolution_minutes = 900 }
[[rules]]
severity = "minor"
calendar = "business"
targets = { first_response_minutes = 600, resolution_minutes = 3000, next_response_minutes = 600 }
[[rules]]
calendar = "business"
targets = { first_response_minutes = 90, resolution_minutes = 1500, next_response_minutes = 180 }
"""))

# Thursday 2027-02-04 09:30 in Shanghai: its Spring Festival closes 02-06..02-12.
START = datetime(2027, 2, 4, 1, 30, tzinfo=UTC)
DELTAS = [timedelta(0), timedelta(minutes=1), timedelta(minutes=13), timedelta(minutes=50),
          timedelta(hours=3), timedelta(hours=11), timedelta(days=1, hours=2), timedelta(days=4)]
# Weighted towards the SLA steps and onwards (the choice is among the allowed ones).
ACTIONS = [*["triage"] * 2, *["assign"] * 3, *["record_contact"] * 4, *["wait_on_customer"] * 3,
           *["customer_replied"] * 4, *["propose_resolution"] * 2, *["resolve"] * 2, "verify",
           "close", "reopen", "add_note", "escalate"]
META = ("actor", "occurred_at", "command_id", "correlation_id")
MOMENTS = ("first_response_due", "resolution_due", "next_response_due", "first_response_at")

step = st.tuples(
    st.integers(0, 9),  # 0: register another complaint (up to 3); else which complaint
    st.sampled_from(ACTIONS),  # what to do, if allowed ...
    st.integers(0, 1_000),  # ... else which of the allowed actions
    st.sampled_from(DELTAS),
    st.sampled_from(["fatal", "major", "normal", "minor"]),
    st.sampled_from(["billing", "logistics", "product_defect"]),
    st.sampled_from(["inbound", "outbound"]),
    st.sampled_from(["public", "internal"]),
)
histories = st.lists(step, min_size=12, max_size=60)
Plan = list[tuple[int, str, int, timedelta, str, str, str, str]]


def live(plan: Plan, policy: SlaPolicy) -> list[Any]:
    """The plan sent to Complaint aggregates under `policy`: their events, in order."""
    complaints: list[Complaint] = []
    events: list[Any] = []
    now = START
    for n, (which, wanted, pick, delta, severity, category, direction, visibility) in enumerate(plan):
        now += delta
        meta = Meta("agent", now, f"cmd-{n}", "conv")
        if not complaints or (which == 0 and len(complaints) < 3):
            complaint = Complaint(
                channel="web", customer={"id": f"C{n}", "tier": "regular"},
                customer_personal={"name": "N", "contact": "c"}, title="Broken", description="d",
                product="router", region=None, order_ref=None, contract_ref=None, attachments=[],
                **meta.fields(),
            )
            complaints.append(complaint)
        else:
            complaint = complaints[which % len(complaints)]
            allowed = [a for a in ACTIONS if complaint.status in ALLOWED_FROM[a]]
            if not allowed:
                continue
            action = wanted if wanted in allowed else allowed[pick % len(allowed)]
            try:
                if action == "triage":
                    complaint.triage(category, severity, "one_user", policy, meta)  # type: ignore[arg-type]
                elif action == "assign":
                    complaint.assign(f"team-{n}", None, meta)
                elif action == "record_contact":
                    complaint.record_contact(direction, visibility, "phone", "s", policy, meta)  # type: ignore[arg-type]
                elif action == "wait_on_customer":
                    complaint.wait_on_customer("photos", meta)
                elif action == "customer_replied":
                    complaint.customer_replied("here", policy, meta)
                elif action == "propose_resolution":
                    complaint.propose_resolution("refund", meta)
                elif action == "resolve":
                    complaint.resolve("fixed", meta)
                elif action == "verify":
                    complaint.verify(4, None, None, None, meta)
                elif action == "close":
                    complaint.close(meta)
                elif action == "reopen":
                    complaint.reopen("again", meta)
                elif action == "add_note":
                    complaint.add_note("n", meta)
                else:
                    complaint.escalate(complaint.escalation_level + 1, "slow", meta)
            except DomainError:
                continue  # e.g. escalating past the top level
        events += complaint.collect_events()
    return events


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(repr(value))


def payload(event: Any) -> dict[str, Any]:
    """The event's own fields, as the wire carries them (JSON)."""
    fields = {k: v for k, v in vars(event).items()
              if k not in ("originator_id", "originator_version", "timestamp", *META)}
    return json.loads(json.dumps(fields, default=_plain))


def event_type(event: Any) -> str:
    return type(event).__name__


_DB: list[duckdb.DuckDBPyConnection] = []  # one in-memory database for all examples


def events_table(events: list[Any]) -> duckdb.DuckDBPyConnection:
    """A read node's `events` table holding just `events`."""
    if not _DB:
        _DB.append(duckdb.connect())
        _DB[0].execute("SET TimeZone = 'UTC'")
        EventLog().create_schema(_DB[0])
    db = _DB[0]
    db.execute("DELETE FROM events")
    rows = pa.table({
        "complaint_id": [str(e.originator_id) for e in events],
        "complaint_version": pa.array([e.originator_version for e in events], pa.int32()),
        "position": pa.array(range(1, len(events) + 1), pa.int64()),
        "event_type": [event_type(e) for e in events],
        "occurred_at": pa.array([e.occurred_at for e in events], pa.timestamp("us", tz="UTC")),
        "recorded_at": pa.array([e.timestamp for e in events], pa.timestamp("us", tz="UTC")),
        "actor": [e.actor for e in events],
        "command_id": [e.command_id for e in events],
        "correlation_id": [e.correlation_id for e in events],
        "payload": [json.dumps(payload(e)) for e in events],
    })
    db.register("lived", rows)
    db.execute(
        """INSERT INTO events SELECT complaint_id::UUID, complaint_version, position, event_type, 1,
                  occurred_at, recorded_at, actor, command_id, correlation_id, payload::JSON,
                  recorded_at
           FROM lived"""
    )
    db.unregister("lived")
    return db


def normal(p: dict[str, Any]) -> dict[str, Any]:
    """Compare instants as instants; a JSON merge patch's null removes a key."""
    return {k: datetime.fromisoformat(v) if k in MOMENTS and v is not None else v
            for k, v in p.items() if v is not None}


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 for flat patches, as DuckDB's json_merge_patch applies them in what_if."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def recomputed(lived: list[Any], policy: SlaPolicy) -> tuple[dict[tuple[str, int], dict[str, Any]], int]:
    """Each event lived under another policy, patched by the what-if replay under `policy`."""
    db = events_table(lived)
    patches = due_patches(db, policy).to_pylist()
    by_key = {(p["complaint_id"], p["complaint_version"]): json.loads(p["patch"]) for p in patches}
    assert len(by_key) == len(patches), "one patch per event at most"
    out = {}
    for e in lived:
        key = (str(e.originator_id), e.originator_version)
        out[key] = merge(payload(e), by_key.get(key, {}))
    return out, len(patches)


def assert_replay_is_the_domain(plan: Plan, policy: SlaPolicy) -> tuple[list[Any], list[Any]]:
    imagined = live(plan, policy)  # (a) the domain's own due times under `policy`
    lived = live(plan, POLICY_A)  # (b) the same history under A ...
    assert [(e.originator_id, e.originator_version, event_type(e)) for e in lived] == \
        [(e.originator_id, e.originator_version, event_type(e)) for e in imagined]
    patched, count = recomputed(lived, policy)  # ... recomputed under `policy`
    assert count == sum(event_type(e) in ("Triaged", "ContactRecorded", "CustomerReplied") for e in lived)
    for e in imagined:
        key = (str(e.originator_id), e.originator_version)
        assert normal(patched[key]) == normal(payload(e)), (event_type(e), key)
    return lived, imagined


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_what_if_due_times_are_the_domains_own(plan: Plan) -> None:
    assert_replay_is_the_domain(plan, POLICY_B)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_the_renamed_policy_of_what_if_gives_the_same_instants(plan: Plan) -> None:
    """what_if replays under the policy with its calendars renamed: same rules, same times."""
    assert_replay_is_the_domain(plan, renamed(POLICY_B))


def test_a_worked_history_moves_every_due_time() -> None:
    """A history that touches every rule: the two policies really differ on it, and the
    replay under the same policy patches nothing into anything else."""
    m = timedelta(minutes=1)
    plan: Plan = [
        (0, "triage", 0, 0 * m, "major", "billing", "inbound", "public"),  # registered
        (1, "triage", 0, 5 * m, "major", "billing", "inbound", "public"),
        (1, "record_contact", 0, 9 * m, "major", "billing", "inbound", "public"),  # next due
        (1, "assign", 0, 30 * m, "major", "billing", "inbound", "public"),
        (1, "record_contact", 0, 20 * m, "major", "billing", "outbound", "internal"),  # still
        (1, "record_contact", 0, 20 * m, "major", "billing", "outbound", "public"),  # answered
        (1, "wait_on_customer", 0, 60 * m, "major", "billing", "inbound", "public"),
        (1, "customer_replied", 0, 2 * 24 * 60 * m, "major", "billing", "inbound", "public"),
        (1, "record_contact", 0, 3 * m, "major", "billing", "inbound", "public"),
        (1, "propose_resolution", 0, 10 * m, "major", "billing", "inbound", "public"),
    ]
    lived, imagined = assert_replay_is_the_domain(plan, POLICY_B)
    kinds = [event_type(e) for e in lived]
    assert kinds == ["Registered", "Triaged", "ContactRecorded", "Assigned", "ContactRecorded",
                     "ContactRecorded", "WaitingOnCustomer", "CustomerReplied", "ContactRecorded",
                     "ResolutionProposed"], kinds
    for a, b in zip(lived, imagined):
        for field in ("first_response_due", "resolution_due", "next_response_due"):
            if getattr(a, field, None) is not None:
                assert getattr(a, field) != getattr(b, field), (event_type(a), field)
    same, _ = recomputed(lived, POLICY_A)
    assert [normal(same[(str(e.originator_id), e.originator_version)]) for e in lived] == \
        [normal(payload(e)) for e in lived]
