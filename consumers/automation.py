"""The automation: a process manager that follows the stream and acts through the desk.

Each step reads a batch from its source (the event store's log in-process, or Kafka),
lets the rules engine (`consumers.rules_engine`) follow it, adds what the clock has made
due (only once it has read everything there was: a timer must not fire on a complaint
whose answer it has not read yet), carries the actions out through the desk as its service
identities, and then saves what it knows and the positions in one SQLite transaction.

Exactly once: a crash before the save reads the batch again and makes the same decisions
with the same command ids, which the desk answers as the same commands again; a second
copy (with a state file of its own) collides on the same ids. A refusal (409 and the
like) is recorded with its reason and never retried; anything else (the store away)
fails the step, which is retried from the saved state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from aggregates.access import AccessDenied, Principal
from aggregates.alert import alert_id_for
from aggregates.complaint import DomainError
from aggregates.rules import Rules
from aggregates.sla import SlaPolicy
from commands.alerts import AlertCommand, RaiseAlert
from commands.desk import AlertNotFound, ComplaintNotFound, VersionConflict
from commands.models import ComplaintCommand, InvalidCommand
from consumers.metrics import AUTOMATION_ACTIONS, AUTOMATION_LAG, AUTOMATION_LATENESS
from consumers.rules_engine import SUBJECTS, Action, Case, Engine, Memory
from consumers.sources import Source, lag
from consumers.state_file import InBackground, StateFile
from consumers.status import StatusFile

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# What the desk may answer that is a refusal, recorded and never retried.
REFUSALS = (DomainError, VersionConflict, AccessDenied, InvalidCommand, ValidationError, ComplaintNotFound,
            AlertNotFound)
ALERT_CHUNK = 1_000  # alerts raised per desk transaction in a sweep


class Desk(Protocol):
    def execute(self, complaint_id: Any, command: ComplaintCommand, principal: Principal) -> Any: ...

    def raise_alerts(self, commands: Sequence[RaiseAlert], principal: Principal) -> list[Any]: ...

    def act_on_alert(self, alert_id: Any, command: AlertCommand, principal: Principal) -> Any: ...


def principal_for(family: str, rules: Rules) -> Principal:
    """The service identity a rule family acts as (its name says the rules' version)."""
    return Principal(SUBJECTS[family], f"自动化规则 automation: {family} (rules {rules.version})",
                     frozenset({"automation"}))


@dataclass
class Outcome:
    action: Action
    outcome: str  # accepted, duplicate, refused
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AutomationState(StateFile):
    """The automation's own SQLite file: the cases, its memory, the positions and the record
    of every action. One process at a time (a lock file says so)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS cases (id TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS memory (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS alerts (key TEXT PRIMARY KEY, alert_id TEXT NOT NULL, open TEXT);  -- open: NULL once resolved
    CREATE TABLE IF NOT EXISTS positions (source TEXT NOT NULL, partition INTEGER NOT NULL,
                                          next_position INTEGER NOT NULL, PRIMARY KEY (source, partition));
    CREATE TABLE IF NOT EXISTS actions (command_id TEXT PRIMARY KEY, rule TEXT NOT NULL, target TEXT NOT NULL,
                                        outcome TEXT NOT NULL, detail TEXT NOT NULL, due TEXT,
                                        lateness_seconds REAL, done_at TEXT NOT NULL);
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, self.SCHEMA, "another automation process: give this one its own --state file"
                                            " (two copies never act twice, but each needs its own memory)")

    def load(self, source: str) -> tuple[dict[str, Case], Memory, dict[int, int]]:
        cases = {row[0]: Case.from_json(json.loads(row[1])) for row in self.db.execute("SELECT id, data FROM cases")}
        row = self.db.execute("SELECT data FROM memory").fetchone()
        memory = Memory.from_json(json.loads(row[0])) if row else Memory()
        for key, alert_id, open_ in self.db.execute("SELECT key, alert_id, open FROM alerts"):
            memory.alert_keys[alert_id] = key
            if open_ is not None:
                memory.open_alerts[key] = json.loads(open_)
        positions = {p: n for p, n in self.db.execute(
            "SELECT partition, next_position FROM positions WHERE source = ?", [source])}
        return cases, memory, positions

    def save(self, engine: Engine, source: str, positions: dict[int, int], outcomes: Sequence[Outcome]) -> None:
        """What the engine changed, the positions and the outcomes, in one transaction."""
        dirty = engine.forget_dirty()
        alerts, engine.alerts_dirty = engine.alerts_dirty, set()
        memory = engine.memory
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO cases VALUES (?, ?)",
                                [(i, json.dumps(engine.cases[i].to_json())) for i in dirty])
            self.db.executemany("INSERT OR REPLACE INTO alerts VALUES (?, ?, ?)", [
                (key, memory.open_alerts[key]["id"], json.dumps(memory.open_alerts[key])) if key in memory.open_alerts
                else (key, str(alert_id_for(key)), None) for key in alerts])
            self.db.execute("INSERT OR REPLACE INTO memory VALUES (1, ?)", [json.dumps(engine.memory.to_json())])
            self.db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                                [(source, p, n) for p, n in positions.items()])
            self.db.executemany("INSERT OR REPLACE INTO actions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                (o.action.command_id, o.action.rule, str(o.action.target), o.outcome, o.detail,
                 o.action.due.isoformat() if o.action.due else None, _lateness(o), o.at.isoformat())
                for o in outcomes])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            engine.dirty |= dirty
            engine.alerts_dirty |= alerts
            raise

    def actions_by_rule(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for rule, outcome, n in self.db.execute("SELECT rule, outcome, count(*) FROM actions GROUP BY rule, outcome"):
            counts.setdefault(rule, {})[outcome] = n
        return counts


def _lateness(outcome: Outcome) -> float | None:
    return None if outcome.action.due is None else (outcome.at - outcome.action.due).total_seconds()


class Actuator:
    """Carries actions out through the desk, as the automation's service identities."""

    def __init__(self, desk: Desk, rules: Rules, clock: Clock) -> None:
        self.desk = desk
        self.clock = clock
        self.principals = {family: principal_for(family, rules) for family in SUBJECTS}

    def carry_out(self, actions: Sequence[Action]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        i = 0
        while i < len(actions):
            action = actions[i]
            if isinstance(action.command, RaiseAlert):  # a run of raises goes in one transaction per family
                run = [action]
                while (i + len(run) < len(actions) and len(run) < ALERT_CHUNK
                       and isinstance(actions[i + len(run)].command, RaiseAlert)
                       and actions[i + len(run)].family == action.family):
                    run.append(actions[i + len(run)])
                try:
                    results = self.desk.raise_alerts([a.command for a in run], self.principals[action.family])  # type: ignore[misc]
                except REFUSALS as refusal:  # one alert's refusal is raised, not returned
                    results = [refusal] * len(run)
                now = self.clock()
                outcomes += [_outcome(a, r, now) for a, r in zip(run, results)]
                i += len(run)
                continue
            try:
                if isinstance(action.command, AlertCommand):
                    result = self.desk.act_on_alert(action.target, action.command, self.principals[action.family])
                else:
                    result = self.desk.execute(action.target, action.command, self.principals[action.family])  # type: ignore[arg-type]
            except REFUSALS as refusal:
                result = refusal
            outcomes.append(_outcome(action, result, self.clock()))
            i += 1
        return outcomes


def _outcome(action: Action, result: Any, at: datetime) -> Outcome:
    if isinstance(result, REFUSALS):
        return Outcome(action, "refused", f"{type(result).__name__}: {result}", at)
    if isinstance(result, BaseException):
        raise result  # not a refusal: the step fails and is retried
    return Outcome(action, "duplicate" if result.replayed else "accepted", "", at)


class Automation(InBackground):
    """The process manager: `step()` once, `run()` until stopped, `start_background()` in a thread."""

    thread_name = "automation"

    def __init__(self, source: Source, desk: Desk, rules: Rules, policy: SlaPolicy, state_path: str | Path, *,
                 clock: Clock = lambda: datetime.now(UTC), batch_size: int = 5_000, poll_timeout: float = 0.1,
                 status_every: float = 2.0, fault_pause: float = 0.0) -> None:
        self.source = source
        self.rules = rules
        self.policy = policy
        self.clock = clock
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.state = AutomationState(state_path)
        self.actuator = Actuator(desk, rules, clock)
        self.engine = Engine(rules, policy)
        self.positions: dict[int, int] = {}
        self.status_file = StatusFile(str(self.state.path), status_every)
        self.fault_pause = fault_pause  # test only: widens the window between acting and saving
        self._started = False
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self.lateness: deque[float] = deque(maxlen=10_000)  # the latest timers' lateness, for the status
        self.counts: Counter[tuple[str, str]] = Counter()  # (rule, outcome) since start
        self.unreadable = 0

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> Automation:
        if not self._started:
            cases, memory, self.positions = self.state.load(self.source.name)
            self.engine = Engine(self.rules, self.policy, cases, memory)
            self.source.start(self.positions)
            self._started = True
            log.info("automation (rules %s) on %s: %d complaints known, positions %s", self.rules.version,
                     self.source.name, len(cases), self.positions or "from the start")
        return self

    def close(self) -> None:
        self.write_status(force=True)
        self.source.close()
        self.state.close()

    # ------------------------------------------------------------------ one step
    def step(self) -> list[Outcome]:
        """Read a batch, decide, act, save. Returns what was carried out."""
        self.open()
        polled = self.source.poll(self.batch_size, self.poll_timeout)
        actions: list[Action] = []
        for envelope in self._envelopes(polled.values):
            actions += self.engine.apply(envelope)
        # Queues drain before the timers' actions are carried out: a drain expects the
        # complaint's version, which an escalation of the same step would move on.
        actions += self.engine.drain_queues(self.clock())
        if len(polled) < self.batch_size:  # read everything there was: time may act now
            self.caught_up.set()
            actions += self.engine.due(self.clock())
        actions, superseded = self.engine.superseded(actions)
        if superseded:
            log.debug("%d decisions superseded by later events of their complaints", len(superseded))
        outcomes = self.actuator.carry_out(actions)
        for outcome in outcomes:
            self.engine.carried_out(outcome.action, outcome.outcome != "refused")
            self._observe(outcome)
        if outcomes and self.fault_pause:
            time.sleep(self.fault_pause)  # test only: a crash here acts again after the restart
        positions = {p: n for p, n in polled.next_positions.items() if self.positions.get(p) != n}
        if outcomes or positions or self.engine.dirty:
            self.state.save(self.engine, self.source.name, positions, outcomes)
            self.positions.update(positions)
        self.write_status()
        return outcomes

    def _observe(self, outcome: Outcome) -> None:
        action = outcome.action
        self.counts[(action.rule, outcome.outcome)] += 1
        AUTOMATION_ACTIONS.labels(rule=action.rule, outcome=outcome.outcome).inc()
        if action.due is not None and outcome.outcome != "refused":
            late = max(0.0, (outcome.at - action.due).total_seconds())
            self.lateness.append(late)
            AUTOMATION_LATENESS.observe(late)
        if outcome.outcome == "refused":
            log.info("%s %s refused by the desk: %s", action.rule, action.command_id, outcome.detail[:300])
        elif outcome.outcome == "accepted":
            log.info("%s: %s %s", action.rule, type(action.command).__name__, action.target)

    # ------------------------------------------------------------------ status
    def lag(self) -> int:
        """Events in the source not followed yet (asks the source for its ends)."""
        behind = lag(self.source.end_positions(), self.positions, self.source.first_position)
        AUTOMATION_LAG.set(behind)
        return behind

    def status(self) -> dict[str, Any]:
        try:
            behind: int | None = self.lag()
        except Exception:
            behind = None
        late = sorted(self.lateness)
        next_timer = self.engine.next_timer()
        return {
            "rules_version": self.rules.version,
            "source": self.source.name,
            "positions": self.positions,
            "lag": behind,
            "complaints": len(self.engine.cases),
            "open_alerts": len(self.engine.memory.open_alerts),
            "queued": sum(len(q) for q in self.engine.queues.values()),
            "next_timer": next_timer.isoformat() if next_timer else None,
            "timer_lateness_seconds": {"count": len(late), "p50": _quantile(late, 0.5), "p99": _quantile(late, 0.99),
                                       "max": late[-1] if late else None},
            "actions": self.state.actions_by_rule(),
            "unreadable_messages": self.unreadable,
            "updated_at": datetime.now(UTC).isoformat(),
        }

    def write_status(self, force: bool = False) -> None:
        self.status_file.write(self.status, force)


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
