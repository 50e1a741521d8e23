"""The automation under test, and an oracle of what its rules should have done.

`World` puts a desk on SQLite, a fake clock both the desk and the automation read, and an
`Automation` on a state file together, and records every step (when it ran, how far the
log went when it polled, what it answered). `Oracle` reads docs/automation.md into code
of its own: from the final event history and the steps alone it works out which commands
the rules should have issued, and checks the history against that. It never calls the
rules engine (`consumers.rules_engine`) nor the rules' helpers (`aggregates.rules`
decides, picks agents and places rungs; the oracle only reads the rules' settings).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from aggregates.access import Principal
from aggregates.envelope import EventEnvelope
from aggregates.rules import Rules, load_rules
from aggregates.sla import SlaPolicy
from commands.models import CommandResult, ComplaintCommand, RegisterComplaint
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.automation import Automation, Outcome
from consumers.sources import LogSource
from consumers.stored_events import envelopes

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
INTAKE = Principal("intake", "Intake desk", frozenset({"intake"}))
IMPORTER = Principal("imp", "imp", frozenset({"importer"}))
# A person who may do everything (a department head with the importer's right to backdate).
PERSON = Principal("agent-7", "Agent Seven", frozenset({"department_head", "importer", "auditor"}))

AUTOMATION = {"triage": "automation:triage", "assignment": "automation:assignment", "sla": "automation:sla",
              "alerts": "automation:alerts"}
OPEN = frozenset({"received", "triaged", "assigned", "waiting_on_customer", "resolution_proposed"})
STOPPED = frozenset({"resolved", "verified", "closed", "withdrawn", "duplicate"})


def always_policy(targets: dict[str, tuple[int, int, int | None]] | None = None, warning: int = 15) -> SlaPolicy:
    """An SLA policy on the 24x7 UTC calendar: due times are registration + minutes.
    targets: severity -> (first response, resolution, next response) minutes."""
    targets = targets or {"fatal": (30, 120, 30), "major": (60, 240, 60), "normal": (60, 480, 60),
                          "minor": (120, 960, None)}
    return SlaPolicy.model_validate({
        "version": "test-always",
        "warning_before_minutes": warning,
        "calendars": {"always": {"timezone": "UTC", "week": {d: ["00:00-24:00"] for d in DAY_NAMES}}},
        "rules": [{"severity": severity, "calendar": "always",
                   "targets": {"first_response_minutes": fr, "resolution_minutes": res}
                   | ({"next_response_minutes": nr} if nr else {})}
                  for severity, (fr, res, nr) in targets.items()],
    })


def command_id(prefix: str, key: str) -> str:
    """The command id of docs/automation.md: prefix:key, or past 100 characters the prefix
    and a hash of the key (the hash's form is the code's; the length rule is the spec's)."""
    whole = f"{prefix}:{key}"
    return whole if len(whole) <= 100 else f"{prefix}:#{hashlib.sha256(key.encode()).hexdigest()[:40]}"


@dataclass
class StepRecord:
    at: datetime  # the automation's clock at the step
    read_to: int  # the log's last position when it polled: it followed everything up to here
    outcomes: list[Outcome]
    automation: int  # which Automation instance stepped (restarts make new ones)
    read_from: int  # the first position it read (below an earlier step's read_to: it reads again)


class World:
    """A desk, a fake clock and an automation, stepping by hand."""

    def __init__(self, root: Path, rules: Rules | str | Path, policy: SlaPolicy | None = None,
                 start: datetime = datetime(2026, 12, 2, 2, 0, tzinfo=UTC), desk: Any = None) -> None:
        self.root = root
        self.now = start
        if isinstance(rules, str):
            path = root / "rules.toml"
            path.write_text(rules)
            rules = load_rules(path)
        elif isinstance(rules, Path):
            rules = load_rules(rules)
        self.rules: Rules = rules
        self.desk = open_desk(Settings(store="sqlite", sqlite_path=root / "events.sqlite"))
        self.desk.clock = self.clock
        self.policy = policy or always_policy()
        self.desk.sla_policy = self.policy
        self.front = desk(self.desk) if desk is not None else self.desk  # what the automation talks to
        self.steps: list[StepRecord] = []
        self.instances = 0
        self.from_older_state: set[int] = set()  # instances started on an older copy of the state, or none
        self.state_path = root / "automation.sqlite"
        self.auto = self.automation(self.state_path)

    # ------------------------------------------------------------------ time and the automation
    def clock(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        assert all(v >= 0 for v in delta.values()), "the clock only moves forward"
        self.now += timedelta(**delta)
        return self.now

    def at(self, when: datetime) -> datetime:
        assert when >= self.now, f"the clock only moves forward ({self.now} -> {when})"
        self.now = when
        return when

    def automation(self, state_path: Path) -> Automation:
        self.instances += 1
        return Automation(LogSource(self.desk.recorder, self.desk.mapper), self.front, self.rules, self.policy,
                          state_path, clock=self.clock, poll_timeout=0)

    def step(self) -> list[Outcome]:
        read_to = self.desk.recorder.max_notification_id() or 0
        read_from = self.auto.open().positions.get(0, 1)
        outcomes = self.auto.step()
        self.steps.append(StepRecord(self.now, read_to, outcomes, self.instances, read_from))
        return outcomes

    def settle(self, limit: int = 10) -> None:
        """Step until a step does nothing (everything the automation did is followed)."""
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError(f"the automation did not settle in {limit} steps at {self.now}")

    def snapshot(self, name: str) -> Path:
        """A copy of the automation's state file as it is now."""
        target = self.root / f"{name}.sqlite"
        copy = sqlite3.connect(target)
        self.auto.state.db.backup(copy)
        copy.close()
        return target

    def restart(self, state_path: Path | None = None) -> None:
        """Close the automation and start a new one on `state_path` (default: the same file)."""
        self.auto.close()
        stale = self.instances in self.from_older_state and not any(s.automation == self.instances for s in self.steps)
        if stale or (state_path is not None and state_path != self.state_path):
            self.from_older_state.add(self.instances + 1)  # it decides again what was done since
        self.state_path = state_path or self.state_path
        self.auto = self.automation(self.state_path)

    def close(self) -> None:
        self.auto.close()
        self.desk.close()

    # ------------------------------------------------------------------ people
    def register(self, title: str = "热水器不出热水", description: str = "用了两天就不热了", *, customer: str = "C1",
                 tier: str = "regular", product: str | None = "heater", channel: str = "phone",
                 region: str | None = None, occurred_at: datetime | None = None) -> UUID:
        principal = IMPORTER if occurred_at is not None else INTAKE
        done = self.desk.register(RegisterComplaint(
            channel=channel, customer={"id": customer, "tier": tier},  # type: ignore[arg-type]
            customer_personal={"name": "王女士", "contact": "13800000000"},  # type: ignore[arg-type]
            title=title, description=description, product=product, region=region, occurred_at=occurred_at),
            principal)
        return done.complaint_id

    def do(self, complaint: UUID, command: ComplaintCommand, principal: Principal = PERSON) -> CommandResult:
        return self.desk.execute(complaint, command, principal)

    # ------------------------------------------------------------------ what happened
    def history(self) -> list[EventEnvelope]:
        return envelopes(self.desk.mapper, self.desk.recorder.select_notifications(1, 1_000_000))

    def by_automation(self, since: int = 0) -> list[EventEnvelope]:
        return [e for e in self.history() if e.actor.startswith("automation:") and e.position > since]

    def position(self) -> int:
        return self.desk.recorder.max_notification_id() or 0

    def outcomes(self) -> list[Outcome]:
        return [o for s in self.steps for o in s.outcomes]

    def oracle(self) -> Oracle:
        return Oracle(self.rules, self.policy, self.history(), self.steps)


def summary(events: Iterable[EventEnvelope]) -> list[tuple[str, str, str]]:
    """(event type, actor, command id) of each event: what tests compare."""
    return [(e.event_type, e.actor, e.command_id) for e in events]


# ---------------------------------------------------------------------------------------
# The oracle


@dataclass
class Fold:
    """A complaint as docs/automation.md's rules see it, folded from its events."""

    id: str
    version: int
    registered_at: datetime
    customer: str
    tier: str
    channel: str
    product: str | None
    region: str | None
    text: str
    status: str = "received"
    status_before_wait: str | None = None
    team: str | None = None
    agent: str | None = None
    severity: str | None = None
    category: str | None = None
    escalation: int = 0
    first_response_done: bool = False
    dues: dict[str, datetime] = field(default_factory=dict)  # clock -> due

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def running(self, clock: str, held: bool = True) -> datetime | None:
        """The due time of `clock` if it runs (`held`: a wait holds the resolution clock)."""
        if not self.open or clock not in self.dues:
            return None
        if held and clock == "resolution" and self.status == "waiting_on_customer":
            return None
        return self.dues[clock]


def _at(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def follow(folds: dict[str, Fold], e: EventEnvelope) -> None:
    """Apply one complaint event to the folds (the spec's reading of each event)."""
    cid, p, kind = str(e.complaint_id), e.payload, e.event_type
    if kind == "Registered":
        folds[cid] = Fold(cid, e.complaint_version, e.occurred_at, p["customer"]["id"], p["customer"]["tier"],
                          p["channel"], p.get("product"), p.get("region"), f"{p['title']}\n{p['description']}")
        return
    c = folds[cid]
    c.version = e.complaint_version
    if kind == "Triaged":
        c.severity, c.category = p["severity"], p["category"]
        if c.status == "received":
            c.status = "triaged"
        if not c.first_response_done:
            c.dues["first_response"] = _at(p["first_response_due"])  # type: ignore[assignment]
        c.dues["resolution"] = _at(p["resolution_due"])  # type: ignore[assignment]
    elif kind == "Assigned":
        c.team, c.agent = p["team"], p["agent"]
        if c.status == "triaged":
            c.status = "assigned"
    elif kind == "ContactRecorded":
        if p.get("first_response_at"):
            c.first_response_done = True
            c.dues.pop("first_response", None)
        _next_response(c, p.get("next_response_due"))
    elif kind == "WaitingOnCustomer":
        c.status_before_wait, c.status = c.status, "waiting_on_customer"
    elif kind == "CustomerReplied":
        c.status, c.status_before_wait = c.status_before_wait or "assigned", None
        if p.get("resolution_due"):
            c.dues["resolution"] = _at(p["resolution_due"])  # type: ignore[assignment]
        _next_response(c, p.get("next_response_due"))
    elif kind in ("ResolutionProposed", "Resolved"):
        if p.get("first_response_at"):
            c.first_response_done = True
            c.dues.pop("first_response", None)
        c.dues.pop("next_response", None)
        c.status = "resolution_proposed" if kind == "ResolutionProposed" else "resolved"
    elif kind == "Escalated":
        c.escalation = max(c.escalation, int(p["level"]))
    elif kind in ("Withdrawn", "MarkedDuplicate", "Verified", "Closed", "Reopened"):
        c.status = {"Withdrawn": "withdrawn", "MarkedDuplicate": "duplicate", "Verified": "verified",
                    "Closed": "closed", "Reopened": "assigned"}[kind]


def _next_response(c: Fold, due: str | None) -> None:
    if due:
        c.dues["next_response"] = _at(due)  # type: ignore[assignment]
    else:
        c.dues.pop("next_response", None)


def rung_instant(rung: Any, due: datetime, policy: SlaPolicy) -> datetime:
    """warn: due - warning_before_minutes; breach: due + hours (calendar hours; on the 24x7
    calendar business hours are the same)."""
    if rung.at == "warn":
        return due - timedelta(minutes=policy.warning_before_minutes)
    return due + timedelta(hours=rung.hours)


def triage_decision(rules: Rules, text: str) -> tuple[str, str, str, str]:
    """(rule id, severity, impact, category) for a complaint's title and description."""
    assert rules.triage is not None
    folded = text.casefold()
    rule = next(r for r in rules.triage.rules if not r.keywords or any(k.casefold() in folded for k in r.keywords))
    category = next((name for name, words in rules.triage.categories.items()
                     if any(w.casefold() in folded for w in words)), rules.triage.default_category)
    return rule.id, rule.severity, rule.impact, category


def team_rule(rules: Rules, c: Fold) -> Any:
    facts = {"category": c.category, "product": c.product, "channel": c.channel, "region": c.region,
             "severity": c.severity, "tier": c.tier}
    for rule in rules.assignment:
        wanted = {name: getattr(rule, name) for name in facts}
        if all(value is None or facts[name] in ([value] if isinstance(value, str) else value)
               for name, value in wanted.items()):
            return rule
    return None


def loads(folds: dict[str, Fold]) -> dict[str, int]:
    counted: dict[str, int] = defaultdict(int)
    for c in folds.values():
        if c.agent and c.open:
            counted[c.agent] += 1
    return counted


@dataclass
class Trigger:
    """A triage of a complaint with no team, the last of its complaint in the batch the
    automation first read it in: the rules must decide an assignment for it."""

    complaint: str
    position: int
    index: int  # of the step
    step: StepRecord
    rule: Any
    refused: list[str]  # assignment command ids of the complaint the desk refused in that step


@dataclass
class Expected:
    command_id: str
    actor: str
    at: datetime | None  # the step it is due at (None: any)
    what: str


class Oracle:
    """What the rules should have done, from the history and the steps; `check()` compares."""

    def __init__(self, rules: Rules, policy: SlaPolicy, history: list[EventEnvelope],
                 steps: list[StepRecord]) -> None:
        self.rules, self.policy, self.steps = rules, policy, steps
        self.history = sorted(history, key=lambda e: e.position)
        self.problems: list[str] = []
        self.expected: dict[str, Expected] = {}  # command id -> what must be among the events
        self.allowed: set[str] = set()  # auto command ids that may be there besides
        self.raised: dict[str, EventEnvelope] = {}  # alert key -> its AlertRaised
        self.key_of: dict[str, str] = {}  # alert id -> key
        self.triggers: dict[int, Trigger] = {}  # position of a Triaged that calls for an assignment -> it
        self.overtaken: set[int] = set()  # steps where a decision was overtaken in its batch (not sent)
        # (the automation counts an overtaken decision in the agent's load until the batch ends)
        self.escalate_to: dict[str, int] = {}  # escalation command id -> level
        self.repeat_due: dict[str, datetime] = {}  # repeat customer key -> the task's due time
        self.folds: dict[str, Fold] = {}

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def expect(self, cid: str, actor: str, at: datetime | None, what: str) -> None:
        if cid not in self.expected:
            self.expected[cid] = Expected(cid, actor, at, what)

    # ------------------------------------------------------------------ the walk
    def run(self) -> Oracle:
        rules, events = self.rules, self.history
        folds: dict[str, Fold] = {}
        fired: set[tuple[str, str, str, str]] = set()  # (complaint, clock, rung, due)
        escalated: set[tuple[str, str]] = set()
        stopped_at: dict[str, int] = {}  # complaint -> position of the event that stopped it
        by_complaint: dict[str, list[EventEnvelope]] = defaultdict(list)
        for e in events:
            by_complaint[str(e.complaint_id)].append(e)
        repeat_last: dict[str, datetime] = {}
        registrations: dict[str, list[datetime]] = defaultdict(list)
        i = 0
        for k, step in enumerate(self.steps):
            if step.read_from <= events[i - 1].position if i else False:
                self.overtaken.add(k)  # it reads again what an earlier copy followed: decisions overtaken there too
            batch = []
            while i < len(events) and events[i].position <= step.read_to:
                batch.append(events[i])
                i += 1
            refused = {o.action.command_id: o for o in step.outcomes if o.outcome == "refused"}
            for j, e in enumerate(batch):
                cid = str(e.complaint_id)
                if e.event_type.startswith("Alert"):
                    if e.event_type == "AlertRaised":
                        self.raised.setdefault(e.payload["key"], e)
                        self.key_of[cid] = e.payload["key"]
                    continue
                before = folds.get(cid)
                team_before = before.team if before else None
                severity_before = before.severity if before else None
                status_before = before.status if before else None
                follow(folds, e)
                c = folds[cid]
                if e.event_type == "Registered":
                    self._repeat_customer(c, registrations, repeat_last, step.at)
                if e.event_type == "Triaged":
                    rule = team_rule(rules, c)
                    if team_before is None and c.open and rule is not None:
                        if any(str(x.complaint_id) == cid for x in batch[j + 1:]):
                            self.overtaken.add(k)  # superseded by later events in the same batch: not sent
                        else:
                            self.triggers[e.position] = Trigger(
                                cid, e.position, k, step, rule,
                                [r for r in refused if r.startswith(f"auto:assign:{cid}:")])
                    if severity_before != "fatal" and c.severity == "fatal" and rules.alerts.fatal_complaint.enabled:
                        key = f"fatal_complaint:{cid}"
                        self.expect(command_id("auto", key), AUTOMATION["alerts"], step.at, f"fatal alert of {cid}")
                if c.status in STOPPED and status_before not in STOPPED:
                    stopped_at.setdefault(cid, e.position)
            self._timers(folds, step, fired, escalated)
        self.folds = folds
        self._alert_resolutions(by_complaint, stopped_at)
        return self

    # ------------------------------------------------------------------ triage and the ladder
    def _timers(self, folds: dict[str, Fold], step: StepRecord, fired: set[Any], escalated: set[Any]) -> None:
        rules = self.rules
        for cid, c in folds.items():
            if rules.triage is not None and c.status == "received" \
                    and c.registered_at + timedelta(minutes=rules.triage.after_minutes) <= step.at:
                self.expect(f"auto:triage:{cid}", AUTOMATION["triage"], step.at, f"triage of {cid}")
            for clock in rules.ladder.clocks:
                due = c.running(clock)
                if due is None:
                    continue
                for rung in rules.ladder.rungs:
                    if (cid, clock, rung.id, due.isoformat()) in fired \
                            or rung_instant(rung, due, self.policy) > step.at:
                        continue
                    fired.add((cid, clock, rung.id, due.isoformat()))
                    key = f"sla.{clock}.{rung.id}:{cid}:{due.isoformat()}"
                    if rung.notify:
                        self.expect(command_id("auto", key), AUTOMATION["sla"], step.at,
                                    f"rung {rung.id} of the {clock} clock of {cid} due {due.isoformat()}")
                    if rung.escalate and (cid, rung.id) not in escalated and c.escalation < 3:
                        escalated.add((cid, rung.id))
                        self.expect(f"auto:escalate:{rung.id}:{cid}", AUTOMATION["sla"], step.at,
                                    f"escalation of {cid} to level {c.escalation + 1} by rung {rung.id}")
                        self.escalate_to[f"auto:escalate:{rung.id}:{cid}"] = c.escalation + 1

    # ------------------------------------------------------------------ assignment
    def _check_assignments(self, *, fewest: bool) -> None:
        """(b): each triage of a complaint with no team is answered by one automatic
        assignment (or a refusal) to the first matching rule's team and an agent with the
        skill and room, the fewest open complaints (else the team's queue); every other
        automatic assignment drains a queue to an agent with room.

        Room and load are judged as the automation sees them when it decides: a triage's
        decision on the stream up to that triage (and the decisions of the same step before
        it), a drain on everything read and done before it."""
        rules = self.rules
        by_complaint: dict[str, list[EventEnvelope]] = defaultdict(list)
        for e in self.history:
            by_complaint[str(e.complaint_id)].append(e)
        answers: dict[int, Trigger] = {}  # position of the Assigned -> the triage it answers
        for t in self.triggers.values():
            after = [e for e in by_complaint[t.complaint] if e.position > t.position]
            nxt = after[0] if after else None
            if nxt is not None and nxt.event_type == "Assigned" and nxt.actor == AUTOMATION["assignment"] \
                    and nxt.occurred_at == t.step.at:
                answers[nxt.position] = t
            elif not t.refused:
                self.problem(f"complaint {t.complaint} triaged with no team (event {t.position}, followed at"
                             f" {t.step.at}): expected an assignment by rule {t.rule.id} to team {t.rule.team},"
                             " next event is " + (f"{nxt.event_type} by {nxt.actor} ({nxt.command_id})" if nxt else
                                                  "nothing"))
        folds: dict[str, Fold] = {}
        at_trigger: dict[int, dict[str, int]] = {}
        decided: dict[int, list[tuple[int, str]]] = defaultdict(list)  # step -> (trigger position, agent)
        for e in self.history:
            cid = str(e.complaint_id)
            if e.event_type == "Assigned" and e.actor == AUTOMATION["assignment"]:
                self._check_assignment(e, folds[cid], folds, answers.get(e.position), at_trigger, decided, fewest)
            if not e.event_type.startswith("Alert"):
                follow(folds, e)
            if e.position in self.triggers:
                at_trigger[e.position] = dict(loads(folds))
        # Liveness: nothing the rules queued waits while an agent of its team with the skill has room.
        load = loads(folds)
        for cid, c in folds.items():
            last = next((e for e in reversed(by_complaint[cid]) if e.event_type == "Assigned"), None)
            if not (c.open and c.team and c.agent is None and last and last.actor == AUTOMATION["assignment"]):
                continue
            rule = next((r for r in rules.assignment if (last.payload.get("reason") or "").startswith(f"rule {r.id} ")),
                        None)
            skill = rule.skill if rule else None
            free = [a.agent for a in rules.roster if a.team == c.team and (skill is None or skill in a.skills)
                    and load.get(a.agent, 0) < a.capacity]
            if free:
                self.problem(f"{cid} still waits in team {c.team}'s queue while {free} have room (loads {dict(load)})")

    def _check_assignment(self, e: EventEnvelope, c: Fold, folds: dict[str, Fold], trigger: Trigger | None,
                          at_trigger: dict[int, dict[str, int]], decided: dict[int, list[tuple[int, str]]],
                          fewest: bool) -> None:
        rules, cid, reason = self.rules, str(e.complaint_id), e.payload.get("reason") or ""
        team, agent = e.payload["team"], e.payload["agent"]
        if not re.match(rf"rule [\w.+-]+ \(rules {re.escape(rules.version)}\)", reason):
            self.problem(f"assignment {e.command_id}: reason {reason!r} names no rule and rules version")
        if not re.fullmatch(rf"auto:assign:{cid}:\d+", e.command_id):
            self.problem(f"assignment of {cid} has command id {e.command_id}")
        if trigger is not None:
            if team != trigger.rule.team or not reason.startswith(f"rule {trigger.rule.id} "):
                self.problem(f"{e.command_id}: team {team} by {reason!r}; the first matching rule is"
                             f" {trigger.rule.id} -> {trigger.rule.team}")
            skill = trigger.rule.skill
            load = dict(at_trigger[trigger.position])
            for position, other in decided[trigger.index]:
                if position < trigger.position:
                    load[other] = load.get(other, 0) + 1
            if agent:
                decided[trigger.index].append((trigger.position, agent))
        elif reason.startswith("rule assign.queue "):
            if not (c.team == team and c.agent is None and c.open):
                self.problem(f"{e.command_id} drains {cid} from team {team}'s queue, but it was"
                             f" {c.team}/{c.agent} {c.status}")
            skill, load = None, loads(folds)
        else:
            self.problem(f"{e.command_id}: an automatic assignment of {cid} that answers no triage of a complaint"
                         f" without a team (it had team {c.team}, agent {c.agent}, {c.status}); reason {reason!r}")
            return
        candidates = [a for a in rules.roster if a.team == team and (skill is None or skill in a.skills)]
        free = [a for a in candidates if load.get(a.agent, 0) < a.capacity]
        strict = fewest and trigger is not None and trigger.index not in self.overtaken
        if agent is None:
            if trigger is None:
                self.problem(f"{e.command_id}: a drain without an agent")
            elif free and strict:
                self.problem(f"{e.command_id}: {cid} queued in {team} though {[a.agent for a in free]} had room"
                             f" (loads {load})")
            return
        chosen = next((a for a in candidates if a.agent == agent), None)
        if chosen is None:
            self.problem(f"{e.command_id}: {agent} is not an agent of {team} with skill {skill}")
        elif load.get(agent, 0) >= chosen.capacity:
            self.problem(f"{e.command_id}: {agent} given {cid} with {load.get(agent, 0)} open complaints,"
                         f" capacity {chosen.capacity} (loads {load})")
        elif strict and load.get(agent, 0) > min(load.get(a.agent, 0) for a in free):
            self.problem(f"{e.command_id}: {agent} has {load.get(agent, 0)} open complaints, but"
                         f" {[(a.agent, load.get(a.agent, 0)) for a in free]} had room")

    # ------------------------------------------------------------------ alerts
    def _repeat_customer(self, c: Fold, registrations: dict[str, list[datetime]],
                         last: dict[str, datetime], at: datetime) -> None:
        rule = self.rules.alerts.repeat_customer
        registrations[c.customer].append(c.registered_at)
        if not rule.enabled:
            return
        window = timedelta(days=rule.days)
        recent = [t for t in registrations[c.customer] if c.registered_at - window < t <= c.registered_at]
        if len(recent) > rule.more_than and not (c.customer in last and c.registered_at < last[c.customer] + window):
            last[c.customer] = c.registered_at
            key = f"repeat_customer:{c.customer}:{c.registered_at.isoformat()}"
            self.expect(command_id("auto", key), AUTOMATION["alerts"], at, f"repeat customer task {key}")
            self.repeat_due[key] = c.registered_at + timedelta(hours=rule.due_hours)

    def _alert_resolutions(self, by_complaint: dict[str, list[EventEnvelope]], stopped_at: dict[str, int]) -> None:
        """SLA alerts resolve when their clock stops or its due moves; a fatal alert when its
        complaint stops (each only when the automation has followed that)."""
        read_to = max((s.read_to for s in self.steps), default=0)

        def first_read(position: int) -> datetime | None:
            return next((s.at for s in self.steps if s.read_to >= position), None)
        for key, raised in self.raised.items():
            rule = raised.payload["rule"]
            cid = str(raised.payload.get("complaint_id"))
            if rule.startswith("sla."):
                clock, due = raised.payload["evidence"]["clock"], raised.payload["evidence"]["due"]
                folds: dict[str, Fold] = {}
                for e in by_complaint[cid]:
                    follow(folds, e)
                    if e.position > raised.position and e.position <= read_to:
                        running = folds[cid].running(clock, held=False)
                        if running is None or running.isoformat() != due:
                            self.expect(command_id("auto:resolve", key), AUTOMATION["sla"], first_read(e.position),
                                        f"resolution of {key} ({e.event_type} stopped or moved the clock)")
                            break
            elif rule == "alerts.fatal_complaint":
                if cid in stopped_at and stopped_at[cid] <= read_to:
                    self.expect(command_id("auto:resolve", key), AUTOMATION["alerts"], first_read(stopped_at[cid]),
                                f"resolution of {key}")

    # ------------------------------------------------------------------ the check
    def check(self, *, fewest: bool = True) -> None:
        """Raise AssertionError listing every difference from what the rules say. `fewest`:
        also that each decision picked the agent with the fewest open complaints (not judged
        in a step where another decision was overtaken in its batch: the automation counts
        that one until the stream says otherwise)."""
        self.run()
        self._check_assignments(fewest=fewest)
        seen: dict[str, EventEnvelope] = {}
        for e in self.history:
            if e.command_id in seen:
                self.problem(f"command id {e.command_id} twice: events {seen[e.command_id].position} and {e.position}")
            seen[e.command_id] = e
        for e in self.history:
            if not e.command_id.startswith("auto:"):
                if e.actor.startswith("automation:"):
                    self.problem(f"event {e.position} by {e.actor} with command id {e.command_id}")
                continue
            if e.event_type == "Assigned":
                continue  # checked above
            want = self.expected.get(e.command_id)
            if want is None:
                self.problem(f"unexpected {e.event_type} {e.command_id} by {e.actor} at {e.occurred_at}")
                continue
            if e.actor != want.actor:
                self.problem(f"{e.command_id} by {e.actor}, expected {want.actor}")
            if want.at is not None and e.occurred_at != want.at:
                self.problem(f"{e.command_id} ({want.what}) at {e.occurred_at}, expected at the step at {want.at}")
            self._check_event(e)
        for cid, want in self.expected.items():
            if cid not in seen:
                self.problem(f"missing {cid}: {want.what} (due at the step at {want.at})")
        assert not self.problems, "\n".join(self.problems)

    def _check_event(self, e: EventEnvelope) -> None:
        version = self.rules.version
        p = e.payload
        if e.event_type == "AlertRaised":
            if p["rules_version"] != version or e.command_id != command_id("auto", p["key"]):
                self.problem(f"{e.command_id}: rules version {p['rules_version']}, key {p['key']}")
            if p["key"].startswith("repeat_customer:"):
                due = self.repeat_due.get(p["key"])
                if p["owner"] != self.rules.alerts.repeat_customer.owner or _at(p["due_at"]) != due:
                    self.problem(f"{p['key']}: owner {p['owner']}, due {p['due_at']}, expected due {due}")
        elif e.event_type == "AlertResolved":
            if not p.get("automatic") or f"(rules {version})" not in (p.get("reason") or ""):
                self.problem(f"{e.command_id}: automatic {p.get('automatic')}, reason {p.get('reason')!r}")
        elif e.event_type == "Escalated":
            level = self.escalate_to.get(e.command_id)
            if p["level"] != level or f"(rules {version})" not in p["reason"]:
                self.problem(f"{e.command_id}: level {p['level']} (expected {level}), reason {p['reason']!r}")
        elif e.event_type == "Triaged":
            c = self.folds[str(e.complaint_id)]
            rule, severity, impact, category = triage_decision(self.rules, c.text)
            if (p["severity"], p["impact"], p["category"]) != (severity, impact, category) \
                    or f"rule {rule} (rules {version})" not in (p.get("reason") or ""):
                self.problem(f"{e.command_id}: {p['severity']}/{p['impact']}/{p['category']} reason"
                             f" {p.get('reason')!r}; expected rule {rule}: {severity}/{impact}/{category}")
