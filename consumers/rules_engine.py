"""What the rules decide, from the event stream and the clock: the automation's memory and mind.

No I/O. `Engine.apply(envelope)` follows one event and returns the actions it calls for;
`Engine.due(now)` returns the actions of the timers due by `now`. Each action is an
ordinary command with an id derived from what triggered it (the complaint, the rule, the
clock's due instant, the alert's key), so carrying it out twice is answered by the desk
as the same command again, never done twice. `Engine.carried_out` takes the desk's answer
back, so the next decision sees it before the stream brings the event.

What the engine knows is plain data (`Case` per complaint, `Memory` for the rest), saved
with the positions by `consumers.automation` and loaded again on start; everything else
(agents' loads, queues, timers, windows) is derived from it. The same engine replays
history for `complaints rules backtest`, on the events' own time.

The rules, in docs/automation.md:
- triage: a complaint still untriaged `after_minutes` after registration, by keywords;
- assignment: triaged with no team -> the first matching rule's team; inside it the agent
  with the skill and the fewest open complaints (ties: longest since their last
  assignment), within capacity; else the team's queue, drained as agents free up;
- the ladder: per running SLA clock, each rung once (warn, breach, hours after breach),
  a pause holding the resolution clock's rungs, a stop cancelling them;
- alerts: fatal complaint; repeat customer; product growth; surge.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections import defaultdict
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from aggregates.alert import alert_id_for
from aggregates.complaint import OPEN
from aggregates.envelope import EventEnvelope
from aggregates.rules import (
    NEVER, Rules, Rung, growth_run, mean_and_deviation, pick_agent, recipients_of, rung_instant,
)
from aggregates.sla import SlaPolicy
from commands.alerts import RaiseAlert, ResolveAlert
from commands.models import AssignComplaint, Command, EscalateComplaint, TriageComplaint

# The service identities the automation acts as, by rule family.
SUBJECTS = {"triage": "automation:triage", "assignment": "automation:assignment", "sla": "automation:sla",
            "alerts": "automation:alerts"}
SURGE_CHECK = timedelta(minutes=5)  # how often an active surge is checked for its end
STOPPED = frozenset({"resolved", "verified", "closed", "withdrawn", "duplicate"})


MAX_COMMAND_ID = 100


def command_id(prefix: str, key: str) -> str:
    """`prefix:key`, or where that is longer than a command id may be, `prefix:#` and a hash of the key."""
    whole = f"{prefix}:{key}"
    if len(whole) <= MAX_COMMAND_ID:
        return whole
    return f"{prefix}:#{hashlib.sha256(key.encode()).hexdigest()[:40]}"


@dataclass(frozen=True)
class Action:
    """One command a rule calls for."""

    rule: str  # e.g. "assign.billing", "sla.resolution.breach", "alerts.fatal_complaint"
    family: str  # which service identity carries it out (SUBJECTS)
    target: UUID  # the complaint, or the alert
    command: Command
    due: datetime | None = None  # for a timer: the instant it was due (lateness)
    # What the decision set on the case, and what was there before: taken back if the desk
    # refuses (or the decision is superseded) while the case still holds it.
    did: tuple[tuple[str, Any], ...] = ()
    undo: tuple[tuple[str, Any], ...] = ()

    @property
    def command_id(self) -> str:
        return str(self.command.command_id)


@dataclass
class Case:
    """A complaint as the rules see it."""

    version: int
    status: str
    customer: str
    tier: str
    channel: str
    product: str | None
    region: str | None
    registered_at: datetime
    triage_decision: dict[str, str] | None = None  # what the triage rule would set
    category: str | None = None
    severity: str | None = None
    calendar: str | None = None
    team: str | None = None
    agent: str | None = None
    skill: str | None = None  # what the assignment rule asks of the agent
    queued_at: datetime | None = None  # in its team's queue since
    dues: dict[str, datetime] = field(default_factory=dict)  # running clock -> due
    waiting: bool = False
    escalation: int = 0
    fired: list[str] = field(default_factory=list)  # timer ids carried out
    assignments: int = 0  # assignment decisions so far (part of their command ids)
    triaged_at: datetime | None = None  # first triage: when it counts towards a surge

    def open(self) -> bool:
        return self.status in OPEN

    def to_json(self) -> dict[str, Any]:
        # What dataclasses.asdict gives, without its recursive deep copy (most of the time of
        # saving a sweep's cases): the containers are copied; they hold strings and instants.
        data = {name: getattr(self, name) for name in _CASE_FIELDS}
        data["triage_decision"] = None if self.triage_decision is None else dict(self.triage_decision)
        data["fired"] = list(self.fired)
        for name in _INSTANTS:
            data[name] = _iso(data[name])
        data["dues"] = {k: _iso(v) for k, v in self.dues.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Case:
        data = dict(data)
        for name in _INSTANTS:
            data[name] = _at(data[name])
        data["dues"] = {k: _at(v) for k, v in data["dues"].items()}
        return cls(**data)


_INSTANTS = ("registered_at", "queued_at", "triaged_at")
_CASE_FIELDS = tuple(f.name for f in fields(Case))


@dataclass
class Memory:
    """What the rules remember besides the complaints."""

    open_alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> id, rule, complaint, clock, due
    alert_keys: dict[str, str] = field(default_factory=dict)  # alert id -> key (for events about them)
    repeat_raised: dict[str, str] = field(default_factory=dict)  # customer -> when its last task's window began
    last_assigned: dict[str, str] = field(default_factory=dict)  # agent -> when
    growth_open: dict[str, str] = field(default_factory=dict)  # product -> alert key of its run
    surge_open: dict[str, str] = field(default_factory=dict)  # "category|product" -> alert key
    next_week: str | None = None  # the next week boundary the growth rule looks at
    next_surge_check: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Everything but the alerts (saved one row per alert as they change: `alerts_dirty`).
        What dataclasses.asdict gives, without its recursive deep copy; the dicts hold strings."""
        data = {name: getattr(self, name) for name in _MEMORY_FIELDS}
        for name, value in data.items():
            if isinstance(value, dict):
                data[name] = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Memory:
        return cls(**data)


_MEMORY_FIELDS = tuple(f.name for f in fields(Memory) if f.name not in ("open_alerts", "alert_keys"))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class Engine:
    def __init__(self, rules: Rules, policy: SlaPolicy, cases: dict[str, Case] | None = None,
                 memory: Memory | None = None) -> None:
        self.rules = rules
        self.policy = policy
        self.cases: dict[str, Case] = cases or {}
        self.memory = memory or Memory()
        self.dirty: set[str] = set()  # cases changed since the last save
        self._timers: list[tuple[datetime, str, str]] = []  # heap of (instant, timer id, case id)
        self._scheduled: set[tuple[datetime, str, str]] = set()  # what the heap holds
        self.alerts_by_case: dict[str, set[str]] = defaultdict(set)  # complaint -> keys of its open alerts
        self.load: dict[str, int] = defaultdict(int)  # agent -> open complaints
        self.queues: dict[str, set[str]] = defaultdict(set)  # team -> queued case ids
        self.by_customer: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        self.weekly: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))  # product -> week -> n
        self.surges: dict[str, list[datetime]] = defaultdict(list)  # "category|product" -> triage instants
        # complaint -> the assignment decision (command id, undo) it holds until the stream
        # says who has it: only such a decision is taken back when refused or superseded (a
        # person's assignment to the very same agent must not be taken back with it), and a
        # later triage in the same batch takes it back before deciding again.
        self._holding: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {}
        self.alerts_dirty: set[str] = set()  # alert keys raised or resolved since the last save
        for case_id, case in self.cases.items():
            self._count(case_id, case, +1)
            self._registered(case_id, case)
            self._schedule(case_id, case)
            if case.triaged_at is not None and case.category:
                bisect.insort(self.surges[_bucket(case)], case.triaged_at)
        for key, alert in self.memory.open_alerts.items():
            if alert.get("complaint"):
                self.alerts_by_case[alert["complaint"]].add(key)

    # ------------------------------------------------------------------ derived state
    def _count(self, case_id: str, case: Case, sign: int) -> None:
        """Add (or take away) the case's part in the agents' loads and the queues."""
        if case.agent and case.open():
            self.load[case.agent] += sign
        if case.team and not case.agent and case.queued_at is not None and case.open():
            (self.queues[case.team].add if sign > 0 else self.queues[case.team].discard)(case_id)

    def _registered(self, case_id: str, case: Case) -> None:
        bisect.insort(self.by_customer[case.customer], (case.registered_at, case_id))
        if case.product:
            self.weekly[case.product][self._week_of(case.registered_at)] += 1

    def _week_of(self, at: datetime) -> date:
        local = at.astimezone(self.rules.zone).date()
        return local - timedelta(days=local.weekday())

    def _change(self, case_id: str, change: Any) -> Case:
        """Apply `change(case)` keeping loads, queues and timers in step."""
        case = self.cases[case_id]
        self._count(case_id, case, -1)
        change(case)
        self._count(case_id, case, +1)
        self._schedule(case_id, case)
        self.dirty.add(case_id)
        return case

    # ------------------------------------------------------------------ timers
    def timers(self, case: Case) -> list[tuple[datetime, str, Rung | None]]:
        """The case's pending timers: (instant, timer id, rung or None for triage)."""
        found: list[tuple[datetime, str, Rung | None]] = []
        triage = self.rules.triage
        if triage and case.status == "received" and case.triage_decision is not None and "triage" not in case.fired:
            found.append((case.registered_at + timedelta(minutes=triage.after_minutes), "triage", None))
        if case.open():
            for clock in self.rules.ladder.clocks:
                due = case.dues.get(clock)
                if due is None or (clock == "resolution" and case.waiting):
                    continue
                for rung in self.rules.ladder.rungs:
                    timer = f"sla:{clock}:{rung.id}:{due.isoformat()}"
                    if timer not in case.fired:
                        found.append((rung_instant(rung, due, self.policy, case.calendar), timer, rung))
        return found

    def _schedule(self, case_id: str, case: Case) -> None:
        for instant, timer, _ in self.timers(case):
            entry = (instant, timer, case_id)
            if entry not in self._scheduled:
                self._scheduled.add(entry)
                heapq.heappush(self._timers, entry)

    def next_timer(self) -> datetime | None:
        """When the next timer is due (stale entries included: they are skipped when due)."""
        periodic = [t for t in (_at(self.memory.next_week), _at(self.memory.next_surge_check)) if t]
        head = [self._timers[0][0]] if self._timers else []
        return min(head + periodic, default=None)

    def due(self, now: datetime) -> list[Action]:
        """The actions of everything due by `now`; each timer fires once."""
        actions: list[Action] = []
        while self._timers and self._timers[0][0] <= now:
            instant, timer, case_id = entry = heapq.heappop(self._timers)
            self._scheduled.discard(entry)
            case = self.cases.get(case_id)
            if case is None or timer in case.fired:
                continue
            current = {t: (i, r) for i, t, r in self.timers(case)}
            if timer not in current or current[timer][0] != instant:
                continue  # moved or cancelled since it was scheduled
            self._change(case_id, lambda c: c.fired.append(timer))
            if timer == "triage":
                actions += self._triage(case_id, case, instant)
            else:
                rung = current[timer][1]
                assert rung is not None
                actions += self._rung(case_id, case, timer, rung, instant)
        actions += self._periodic(now)
        return actions

    def _triage(self, case_id: str, case: Case, instant: datetime) -> list[Action]:
        decision = case.triage_decision or {}
        reason = f"rule {decision['rule']} (rules {self.rules.version}): untriaged {self.rules.triage.after_minutes:g} min after registration"  # type: ignore[union-attr]
        return [Action(decision["rule"], "triage", UUID(case_id), TriageComplaint(
            command_id=f"auto:triage:{case_id}", category=decision["category"], severity=decision["severity"],  # type: ignore[arg-type]
            impact=decision["impact"], reason=reason, expected_version=case.version), instant)]  # type: ignore[arg-type]

    def _rung(self, case_id: str, case: Case, timer: str, rung: Rung, instant: datetime) -> list[Action]:
        _, clock, _, due_text = timer.split(":", 3)
        rule = f"sla.{clock}.{rung.id}"
        actions: list[Action] = []
        if rung.notify:
            actions.append(self._raise(
                rule, key=f"{rule}:{case_id}:{due_text}", subject_type="complaint", subject=case_id, case=case,
                case_id=case_id, severity=rung.severity, recipients=recipients_of(rung.notify),
                owner=case.agent if "assignee" in rung.notify else None,
                title_en=f"SLA {clock.replace('_', ' ')} {_rung_words(rung)}",
                title_zh=f"SLA {_CLOCK_ZH[clock]}{_rung_words_zh(rung)}",
                # (only what the timer fixes: a decision made again after a restart must be the
                # same command, whatever the automation has read of its own actions since)
                evidence={"clock": clock, "due": due_text, "rung": rung.id, "instant": instant.isoformat(),
                          "team": case.team, "agent": case.agent},
                clock=clock, due=instant))
        escalated = f"escalated:{rung.id}"  # once per rung, whichever clock reaches it first
        if rung.escalate and case.escalation < 3 and escalated not in case.fired:
            level = case.escalation + 1
            actions.append(Action(rule, "sla", UUID(case_id), EscalateComplaint(
                command_id=f"auto:escalate:{rung.id}:{case_id}", level=level,
                reason=f"rule {rule} (rules {self.rules.version}): {clock.replace('_', ' ')} due {due_text},"
                       f" {_rung_words(rung)}"), instant, did=(("escalation", level),),
                undo=(("escalation", case.escalation),)))

            def escalating(c: Case) -> None:
                c.escalation = level
                c.fired.append(escalated)
            self._change(case_id, escalating)
        return actions

    # ------------------------------------------------------------------ following the stream
    def apply(self, envelope: EventEnvelope) -> list[Action]:
        """Follow one event; the actions it calls for."""
        kind = envelope.event_type
        if kind.startswith("Alert"):
            self._follow_alert(envelope)
            return []
        case_id = str(envelope.complaint_id)
        payload = envelope.payload
        if kind == "Registered":
            if case_id in self.cases:
                return []
            return self._new_case(case_id, envelope)
        case = self.cases.get(case_id)
        if case is None or envelope.complaint_version <= case.version:
            return []  # an event from before this automation's memory, or seen already
        handler = getattr(self, f"_on_{kind}", None)
        before = (case.team, case.severity, case.status)
        self._change(case_id, lambda c: setattr(c, "version", envelope.complaint_version))
        if handler is not None:
            self._change(case_id, lambda c: handler(c, payload, envelope))
        actions: list[Action] = []
        if kind == "Triaged":
            actions += self._triaged(case_id, case, before, envelope)
        if case.status in STOPPED and before[2] not in STOPPED:
            actions += self._stopped(case_id, case, envelope.occurred_at)
        actions += self._clear_sla_alerts(case_id, case)
        return actions

    def _new_case(self, case_id: str, envelope: EventEnvelope) -> list[Action]:
        p = envelope.payload
        case = Case(version=envelope.complaint_version, status="received", customer=p["customer"]["id"],
                    tier=p["customer"]["tier"], channel=p["channel"], product=p.get("product"),
                    region=p.get("region"), registered_at=envelope.occurred_at)
        if self.rules.triage is not None:
            rule, category = self.rules.triage.decide(p["title"], p["description"])
            case.triage_decision = {"rule": rule.id, "severity": rule.severity, "impact": rule.impact,
                                    "category": category}
        self.cases[case_id] = case
        self.dirty.add(case_id)
        self._registered(case_id, case)
        self._schedule(case_id, case)
        return self._repeat_customer(case_id, case)

    # Each handler takes the case, the payload and the envelope, and only applies.
    def _on_Triaged(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.category, c.severity, c.calendar = p["category"], p["severity"], p["sla_calendar"]
        if c.status == "received":
            c.status = "triaged"
        if "first_response_done" not in c.fired:
            c.dues["first_response"] = _at(p["first_response_due"])  # type: ignore[assignment]
        c.dues["resolution"] = _at(p["resolution_due"])  # type: ignore[assignment]

    def _on_Assigned(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        self._holding.pop(str(e.complaint_id), None)
        c.team, c.agent = p["team"], p["agent"]
        c.queued_at = e.occurred_at if p["agent"] is None and c.queued_at is None else (
            c.queued_at if p["agent"] is None else None)
        if p["agent"]:
            self.memory.last_assigned[p["agent"]] = e.occurred_at.isoformat()
        if c.status == "triaged":
            c.status = "assigned"

    def _on_ContactRecorded(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        if p.get("first_response_at"):
            self._first_response(c)
        self._next_response(c, p.get("next_response_due"))

    def _on_WaitingOnCustomer(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.waiting, c.status = True, "waiting_on_customer"

    def _on_CustomerReplied(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.waiting = False
        c.status = "assigned" if c.agent or c.team else "triaged"
        if p.get("resolution_due") and "resolution" in c.dues:
            c.dues["resolution"] = _at(p["resolution_due"])  # type: ignore[assignment]
        self._next_response(c, p.get("next_response_due"))

    def _on_ResolutionProposed(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        if p.get("first_response_at"):
            self._first_response(c)
        c.dues.pop("next_response", None)
        c.status = "resolution_proposed"

    def _on_Resolved(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        if p.get("first_response_at"):
            self._first_response(c)
        c.dues.pop("next_response", None)
        c.status = "resolved"

    def _on_Verified(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.status = "verified"

    def _on_Closed(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.status = "closed"

    def _on_Reopened(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.status = "assigned"

    def _on_Escalated(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.escalation = max(c.escalation, int(p["level"]))
        if e.command_id.startswith("auto:escalate:"):  # a rung's escalation: done, whoever decided it
            rung = f"escalated:{e.command_id.split(':')[2]}"
            if rung not in c.fired:
                c.fired.append(rung)

    def _on_Withdrawn(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.status = "withdrawn"

    def _on_MarkedDuplicate(self, c: Case, p: dict[str, Any], e: EventEnvelope) -> None:
        c.status = "duplicate"

    @staticmethod
    def _first_response(c: Case) -> None:
        c.dues.pop("first_response", None)
        if "first_response_done" not in c.fired:
            c.fired.append("first_response_done")  # re-grading never restarts it

    @staticmethod
    def _next_response(c: Case, due: str | None) -> None:
        if due:
            c.dues["next_response"] = _at(due)  # type: ignore[assignment]
        else:
            c.dues.pop("next_response", None)

    def _follow_alert(self, envelope: EventEnvelope) -> None:
        alert_id, memory = str(envelope.complaint_id), self.memory
        if envelope.event_type == "AlertRaised":
            payload = envelope.payload
            evidence = payload.get("evidence") or {}
            if payload["key"] not in memory.open_alerts:
                self._remember(payload["key"], alert_id, payload["rule"], _str(payload.get("complaint_id")),
                               evidence.get("clock"), evidence.get("due"))
        elif envelope.event_type == "AlertResolved" and memory.alert_keys.get(alert_id) in memory.open_alerts:
            # (not when the engine resolved it itself: it forgot the alert when it decided so)
            self._forget(memory.alert_keys[alert_id])

    # ------------------------------------------------------------------ rules on events
    def _triaged(self, case_id: str, case: Case, before: tuple[Any, ...], envelope: EventEnvelope) -> list[Action]:
        actions: list[Action] = []
        held = self._holding.pop(case_id, None)
        if held is not None:  # decided on an earlier triage of this batch, never sent: this one decides

            def taken_back(c: Case) -> None:
                for name, value in held[1]:
                    setattr(c, name, value)
            self._change(case_id, taken_back)
        if case.team is None and case.open():
            actions += self._assign(case_id, case, envelope.occurred_at)
        fatal = self.rules.alerts.fatal_complaint
        if fatal.enabled and case.severity == "fatal" and before[1] != "fatal" \
                and str(alert_id_for(f"fatal_complaint:{case_id}")) not in self.memory.alert_keys:  # one alert per complaint
            actions.append(self._raise(
                "alerts.fatal_complaint", key=f"fatal_complaint:{case_id}", subject_type="complaint", subject=case_id,
                case=case, case_id=case_id, severity="critical", recipients=list(fatal.recipients), owner=None,
                title_en=f"Fatal complaint ({case.category}, {case.product or 'no product'})",
                title_zh=f"致命投诉（{case.category}，{case.product or '无产品'}）",
                evidence={"category": case.category, "product": case.product, "channel": case.channel,
                          "customer": case.customer, "tier": case.tier, "registered_at": case.registered_at.isoformat()},
                due=envelope.occurred_at))
        if case.triaged_at is None:
            self._change(case_id, lambda c: setattr(c, "triaged_at", envelope.occurred_at))
            actions += self._surge(case, envelope.occurred_at)
        return actions

    def _assign(self, case_id: str, case: Case, at: datetime) -> list[Action]:
        facts = {"category": case.category, "product": case.product, "channel": case.channel,
                 "region": case.region, "severity": case.severity, "tier": case.tier}
        rule = self.rules.team_rule(facts)
        if rule is None:
            return []
        agent = pick_agent(self.rules.agents_of(rule.team, rule.skill), self.load, self._last_assigned())
        n = case.assignments + 1
        undo = (("team", case.team), ("agent", case.agent), ("queued_at", case.queued_at), ("skill", case.skill))
        why = (f"rule {rule.id} (rules {self.rules.version}): {case.category}/{case.severity} -> team {rule.team}"
               + (f", {agent.agent} has the fewest open complaints" if agent else ", no agent free: team queue"))

        def decided(c: Case) -> None:
            c.assignments, c.team, c.skill = n, rule.team, rule.skill
            c.agent = agent.agent if agent else None
            c.queued_at = None if agent else at
        self._change(case_id, decided)
        self._holding[case_id] = (f"auto:assign:{case_id}:{n}", undo)
        if agent:
            self.memory.last_assigned[agent.agent] = at.isoformat()
        return [Action(rule.id, "assignment", UUID(case_id), AssignComplaint(
            command_id=f"auto:assign:{case_id}:{n}", team=rule.team, agent=agent.agent if agent else None,
            reason=why, expected_version=case.version),
            did=(("team", rule.team), ("agent", agent.agent if agent else None)), undo=undo)]

    def _last_assigned(self) -> dict[str, datetime]:
        return {agent: datetime.fromisoformat(at) for agent, at in self.memory.last_assigned.items()}

    def drain_queues(self, now: datetime) -> list[Action]:
        """Assign queued complaints, oldest first, to agents with room."""
        actions: list[Action] = []
        for team in sorted(self.queues):
            if not self.queues[team] or pick_agent(self.rules.agents_of(team), self.load, {}) is None:
                continue  # nobody in the team has room
            for case_id in sorted(self.queues[team], key=lambda i: (self.cases[i].queued_at or NEVER, i)):
                if case_id in self._holding:
                    continue  # queued by a decision of this step: drained once the stream has it
                case = self.cases[case_id]
                agent = pick_agent(self.rules.agents_of(team, case.skill), self.load, self._last_assigned())
                if agent is None:
                    continue
                n = case.assignments + 1
                undo = (("agent", None), ("queued_at", case.queued_at))

                def decided(c: Case, agent_id: str = agent.agent) -> None:
                    c.assignments, c.agent, c.queued_at = n, agent_id, None
                self._change(case_id, decided)
                self._holding[case_id] = (f"auto:assign:{case_id}:{n}", undo)
                self.memory.last_assigned[agent.agent] = now.isoformat()
                actions.append(Action("assign.queue", "assignment", UUID(case_id), AssignComplaint(
                    command_id=f"auto:assign:{case_id}:{n}", team=team, agent=agent.agent,
                    reason=f"rule assign.queue (rules {self.rules.version}): {agent.agent} has room in team {team}",
                    expected_version=case.version), did=(("agent", agent.agent),), undo=undo))
        return actions

    def _stopped(self, case_id: str, case: Case, at: datetime) -> list[Action]:
        """A complaint stopped: its fatal alert clears."""
        key = f"fatal_complaint:{case_id}"
        if key in self.memory.open_alerts:
            return self._resolve(key, "alerts.fatal_complaint", f"complaint {case.status}")
        return []

    def _clear_sla_alerts(self, case_id: str, case: Case) -> list[Action]:
        """SLA alerts of a clock that stopped or moved clear."""
        actions = []
        for key in sorted(self.alerts_by_case.get(case_id, ())):
            alert = self.memory.open_alerts[key]
            if not alert["rule"].startswith("sla."):
                continue
            running = case.dues.get(alert.get("clock") or "") if case.open() else None
            if running is None or running.isoformat() != alert.get("due"):
                actions += self._resolve(key, alert["rule"], f"the {alert.get('clock')} clock stopped or moved")
        return actions

    def _repeat_customer(self, case_id: str, case: Case) -> list[Action]:
        rule = self.rules.alerts.repeat_customer
        if not rule.enabled:
            return []
        at, window = case.registered_at, timedelta(days=rule.days)
        times = self.by_customer[case.customer]
        recent = [(t, i) for t, i in times[bisect.bisect_right(times, (at - window, "\uffff")):] if t <= at]
        last = _at(self.memory.repeat_raised.get(case.customer))
        if len(recent) <= rule.more_than or (last is not None and at < last + window):
            return []
        self.memory.repeat_raised[case.customer] = at.isoformat()
        return [self._raise(
            "alerts.repeat_customer", key=f"repeat_customer:{case.customer}:{at.isoformat()}",
            subject_type="customer", subject=case.customer, case=None, case_id=None, severity="warning",
            recipients=list(rule.recipients), owner=rule.owner, due_at=at + timedelta(hours=rule.due_hours),
            title_en=f"Churn risk: customer {case.customer} filed {len(recent)} complaints in {rule.days:g} days",
            title_zh=f"流失风险：客户 {case.customer} {rule.days:g} 天内投诉 {len(recent)} 次",
            evidence={"complaints": [i for _, i in recent], "count": len(recent), "days": rule.days,
                      "since": recent[0][0].isoformat()}, due=at)]

    def _surge(self, case: Case, at: datetime) -> list[Action]:
        rule = self.rules.alerts.surge
        if not rule.enabled or not case.category:
            return []
        bucket = _bucket(case)
        bisect.insort(self.surges[bucket], at)
        if bucket in self.memory.surge_open:
            return []
        count, mean, deviation = self._surge_figures(bucket, at)
        if count < rule.min_count or count <= mean + rule.sigmas * deviation:
            return []
        hour = at.replace(minute=0, second=0, microsecond=0)
        key = f"surge:{bucket}:{hour.isoformat()}"
        self.memory.surge_open[bucket] = key
        category, product = bucket.split("|", 1)
        return [self._raise(
            "alerts.surge", key=key, subject_type="category_product", subject=bucket, case=None, case_id=None,
            severity="critical", recipients=list(rule.recipients), owner=None,
            title_en=f"Surge: {count} {category} complaints about {product or 'no product'} in the last hour",
            title_zh=f"激增：过去一小时 {product or '无产品'} 的 {category} 投诉 {count} 件",
            evidence={"count": count, "baseline_mean": round(mean, 3), "baseline_sd": round(deviation, 3),
                      "sigmas": rule.sigmas, "baseline_days": rule.baseline_days, "at": at.isoformat()}, due=at)]

    def _surge_figures(self, bucket: str, at: datetime) -> tuple[int, float, float]:
        """The count in the hour up to `at`, and the mean and deviation of the same hour on
        each of the `baseline_days` days before."""
        times = self.surges[bucket]

        def in_hour(end: datetime) -> int:
            return bisect.bisect_right(times, end) - bisect.bisect_right(times, end - timedelta(hours=1))
        days = self.rules.alerts.surge.baseline_days
        mean, deviation = mean_and_deviation([in_hour(at - timedelta(days=d)) for d in range(1, days + 1)])
        return in_hour(at), mean, deviation

    # ------------------------------------------------------------------ periodic rules
    def _periodic(self, now: datetime) -> list[Action]:
        actions: list[Action] = []
        memory = self.memory
        growth = self.rules.alerts.product_growth
        if growth.enabled:
            if memory.next_week is None:
                memory.next_week = self._next_week_after(now).isoformat()
            while (boundary := datetime.fromisoformat(memory.next_week)) <= now:
                actions += self._growth(boundary)
                memory.next_week = (boundary + timedelta(days=7)).isoformat()
        if memory.surge_open and (memory.next_surge_check is None or _at(memory.next_surge_check) <= now):  # type: ignore[operator]
            actions += self._surges_ended(now)
            memory.next_surge_check = (now + SURGE_CHECK).isoformat()
        return actions

    def _next_week_after(self, at: datetime) -> datetime:
        monday = self._week_of(at) + timedelta(days=7)
        return datetime.combine(monday, time(0), self.rules.zone).astimezone(UTC)

    def _growth(self, boundary: datetime) -> list[Action]:
        """At a week boundary: products whose growth run reached `weeks`, and runs that broke."""
        rule = self.rules.alerts.product_growth
        last_week = self._week_of(boundary - timedelta(seconds=1))
        actions: list[Action] = []
        for product in sorted(set(self.weekly) | set(self.memory.growth_open)):
            weeks = [last_week - timedelta(days=7 * i) for i in range(rule.weeks + 26, -1, -1)]
            series = [self.weekly[product].get(w, 0) for w in weeks]
            run = growth_run(series, rule.growth, rule.min_weekly)
            open_key = self.memory.growth_open.get(product)
            if run >= rule.weeks:
                start = weeks[-1 - run]
                key = f"product_growth:{product}:{start.isoformat()}"
                if open_key == key:
                    continue
                self.memory.growth_open[product] = key
                recent = series[-(run + 1):]
                actions.append(self._raise(
                    "alerts.product_growth", key=key, subject_type="product", subject=product, case=None,
                    case_id=None, severity="warning", recipients=list(rule.recipients), owner=None,
                    title_en=f"{product}: complaints grew over {rule.growth:.0%} a week for {run} weeks",
                    title_zh=f"{product}：投诉量连续 {run} 周环比增长超过 {rule.growth:.0%}",
                    evidence={"weeks": [w.isoformat() for w in weeks[-(run + 1):]], "counts": recent,
                              "growth": rule.growth}, due=boundary))
            elif open_key is not None:
                del self.memory.growth_open[product]
                actions += self._resolve(open_key, "alerts.product_growth",
                                         f"the run broke in the week of {last_week.isoformat()}")
        return actions

    def _surges_ended(self, now: datetime) -> list[Action]:
        rule = self.rules.alerts.surge
        actions = []
        for bucket, key in sorted(self.memory.surge_open.items()):
            count, mean, deviation = self._surge_figures(bucket, now)
            if count <= mean + rule.clear_sigmas * deviation:
                del self.memory.surge_open[bucket]
                actions += self._resolve(key, "alerts.surge", f"{count} in the last hour: back to normal")
        return actions

    # ------------------------------------------------------------------ alerts
    def _raise(self, rule: str, *, key: str, subject_type: str, subject: str, case: Case | None,
               case_id: str | None, severity: str, recipients: list[str], owner: str | None, title_en: str,
               title_zh: str, evidence: dict[str, Any], due: datetime, due_at: datetime | None = None,
               clock: str | None = None) -> Action:
        alert_id = alert_id_for(key)
        self._remember(key, str(alert_id), rule, case_id, clock, evidence.get("due") if clock else None)
        return Action(rule, "alerts" if not rule.startswith("sla.") else "sla", alert_id, RaiseAlert(
            command_id=command_id("auto", key), key=key, rule=rule, rules_version=self.rules.version,
            subject_type=subject_type, subject=subject,  # type: ignore[arg-type]
            complaint_id=UUID(case_id) if case_id else None, team=case.team if case else None,
            severity=severity, title_en=title_en, title_zh=title_zh, evidence=evidence,  # type: ignore[arg-type]
            recipients=recipients, owner=owner, due_at=due_at), due if clock else None)

    def _remember(self, key: str, alert_id: str, rule: str, case_id: str | None, clock: str | None,
                  due: str | None) -> None:
        self.memory.alert_keys[alert_id] = key
        self.memory.open_alerts[key] = {"id": alert_id, "rule": rule, "complaint": case_id, "clock": clock, "due": due}
        self.alerts_dirty.add(key)
        if case_id:
            self.alerts_by_case[case_id].add(key)

    def _forget(self, key: str) -> dict[str, Any]:
        alert = self.memory.open_alerts.pop(key)
        self.alerts_dirty.add(key)
        if alert.get("complaint"):
            self.alerts_by_case[alert["complaint"]].discard(key)
        return alert

    def _resolve(self, key: str, rule: str, why: str) -> list[Action]:
        """Resolve the alert of `key` as its condition cleared (nothing if someone resolved it already)."""
        if key not in self.memory.open_alerts:
            return []
        alert = self._forget(key)
        return [Action(rule, "alerts" if not rule.startswith("sla.") else "sla", UUID(alert["id"]), ResolveAlert(
            command_id=command_id("auto:resolve", key), reason=f"rule {rule} (rules {self.rules.version}): {why}",
            automatic=True))]

    # ------------------------------------------------------------------ answers
    def carried_out(self, action: Action, accepted: bool) -> None:
        """The desk's answer: a refused decision is taken back from the case (the stream
        says what happened instead); nothing is tried again."""
        case = self.cases.get(str(action.target))
        if accepted or not action.undo or case is None:
            return
        if isinstance(action.command, AssignComplaint):
            held = self._holding.get(str(action.target))
            if held is None or held[0] != action.command_id:
                return  # the stream (or a later triage) has said who has it since, perhaps the very same agent
            del self._holding[str(action.target)]
        if any(getattr(case, name) != value for name, value in action.did):
            return  # the stream has said something else since

        def undone(c: Case) -> None:
            for name, value in action.undo:
                setattr(c, name, value)
        self._change(str(action.target), undone)

    def superseded(self, actions: list[Action]) -> tuple[list[Action], list[Action]]:
        """The actions still worth carrying out, and those whose complaint has moved past
        the version they expect (later events in the same batch): the desk would refuse
        them, so they are taken back instead of sent (a backlog's old decisions)."""
        keep, dropped = [], []
        for action in actions:
            expected = getattr(action.command, "expected_version", None)
            case = self.cases.get(str(action.target))
            if expected is not None and case is not None and case.version != expected:
                dropped.append(action)
            else:
                keep.append(action)
        for action in dropped:
            self.carried_out(action, accepted=False)
        return keep, dropped

    def forget_dirty(self) -> set[str]:
        dirty, self.dirty = self.dirty, set()
        return dirty


def _bucket(case: Case) -> str:
    return f"{case.category}|{case.product or ''}"


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _rung_words(rung: Rung) -> str:
    if rung.at == "warn":
        return "due soon"
    return "breached" if not rung.hours else f"overdue by {rung.hours:g} h"


def _rung_words_zh(rung: Rung) -> str:
    if rung.at == "warn":
        return "即将到期"
    return "已超时" if not rung.hours else f"超时 {rung.hours:g} 小时"


_CLOCK_ZH = {"first_response": "首次响应", "resolution": "解决", "next_response": "下次响应"}
