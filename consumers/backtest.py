"""Backtest: what a rules file would have done over a stretch of history, issuing nothing.

The event history is replayed through the rules engine on the events' own time (before
each event, whatever was due by its instant fires, as it would have live), and every
action the rules call for is taken as accepted. The report says, per rule, how many
actions would have fired in [from, to), and how that compares with what was done:
actions with the same command id in the history (the automation did it), assignments
whose team agrees with the one people chose, and escalations that people made.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aggregates.envelope import EventEnvelope
from aggregates.rules import Rules
from aggregates.sla import SlaPolicy
from commands.alerts import RaiseAlert
from commands.models import AssignComplaint, EscalateComplaint
from consumers.rules_engine import Action, Engine


@dataclass
class RuleReport:
    would_fire: int = 0
    done_by_automation: int = 0  # the history holds an event with the action's command id
    first: str | None = None
    last: str | None = None
    examples: list[str] = field(default_factory=list)


@dataclass
class Backtest:
    rules_version: str
    start: datetime | None
    end: datetime | None
    events: int = 0
    complaints: int = 0
    rules: dict[str, RuleReport] = field(default_factory=lambda: defaultdict(RuleReport))
    # Assignments: of the complaints the rules would have assigned, how many people put in that team.
    assignments_compared: int = 0
    assignments_same_team: int = 0
    escalations_by_people: int = 0
    escalations_predicted: int = 0
    alerts_by_severity: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules_version": self.rules_version, "from": _iso(self.start), "to": _iso(self.end),
            "events": self.events, "complaints": self.complaints,
            "rules": {name: vars(report) for name, report in sorted(self.rules.items())},
            "assignments": {"compared": self.assignments_compared, "same_team_as_people": self.assignments_same_team},
            "escalations": {"by_people": self.escalations_by_people, "predicted": self.escalations_predicted},
            "alerts_by_severity": dict(self.alerts_by_severity),
        }

    def text(self) -> str:
        lines = [f"rules {self.rules_version}, {self.events} events of {self.complaints} complaints,"
                 f" from {_iso(self.start) or 'the start'} to {_iso(self.end) or 'the end'}", "",
                 f"{'rule':34} {'would fire':>10} {'done':>6}  first .. last"]
        for name, report in sorted(self.rules.items()):
            lines.append(f"{name:34} {report.would_fire:>10} {report.done_by_automation:>6}  "
                         f"{(report.first or '')[:16]} .. {(report.last or '')[:16]}")
        if self.assignments_compared:
            share = self.assignments_same_team / self.assignments_compared
            lines += ["", f"assignment: the rules' team agrees with the people's in {self.assignments_same_team}"
                          f" of {self.assignments_compared} complaints ({share:.0%})"]
        lines.append(f"escalation: people escalated {self.escalations_by_people} times; the ladder would have"
                     f" {self.escalations_predicted} times")
        if self.alerts_by_severity:
            lines.append("alerts by severity: " + ", ".join(f"{k} {v}" for k, v in sorted(self.alerts_by_severity.items())))
        return "\n".join(lines)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def backtest(envelopes: Iterable[EventEnvelope], rules: Rules, policy: SlaPolicy,
             start: datetime | None = None, end: datetime | None = None) -> Backtest:
    """Replay `envelopes` (in log order) through `rules`; report the actions in [start, end)."""
    engine = Engine(rules, policy)
    report = Backtest(rules.version, start, end)
    done_ids: set[str] = set()
    predicted_team: dict[str, str] = {}
    people_team: dict[str, str] = {}
    actions: list[tuple[datetime, Action]] = []
    now: datetime | None = None

    def within(at: datetime) -> bool:
        return (start is None or at >= start) and (end is None or at < end)

    for envelope in envelopes:
        at = envelope.occurred_at
        if end is not None and at >= end:
            break
        if now is None or at > now:
            now = at
            actions += [(a.due or at, a) for a in engine.due(at)]
        report.events += 1
        done_ids.add(envelope.command_id)
        if envelope.event_type == "Registered":
            report.complaints += 1
        if envelope.event_type == "Assigned" and not envelope.actor.startswith("automation:") \
                and envelope.payload.get("previous_team") is None:
            people_team[str(envelope.complaint_id)] = envelope.payload["team"]
        if envelope.event_type == "Escalated" and not envelope.actor.startswith("automation:") and within(at):
            report.escalations_by_people += 1
        actions += [(at, a) for a in engine.apply(envelope)]
        actions += [(at, a) for a in engine.drain_queues(at)]
    for at, action in actions:
        if not within(at):
            continue
        entry = report.rules[action.rule]
        entry.would_fire += 1
        entry.done_by_automation += action.command_id in done_ids
        entry.first = min(entry.first or at.isoformat(), at.isoformat())
        entry.last = max(entry.last or "", at.isoformat())
        if len(entry.examples) < 3:
            entry.examples.append(f"{at.isoformat()} {type(action.command).__name__} {action.target}")
        if isinstance(action.command, AssignComplaint) and action.rule != "assign.queue":
            predicted_team.setdefault(str(action.target), action.command.team)
        if isinstance(action.command, EscalateComplaint):
            report.escalations_predicted += 1
        if isinstance(action.command, RaiseAlert):
            report.alerts_by_severity[action.command.severity] += 1
    compared = [c for c in predicted_team if c in people_team]
    report.assignments_compared = len(compared)
    report.assignments_same_team = sum(predicted_team[c] == people_team[c] for c in compared)
    report.rules = dict(report.rules)  # type: ignore[assignment]
    return report
