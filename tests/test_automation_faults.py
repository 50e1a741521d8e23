"""Fault tests of the automation (docs/automation.md, "Exactly once"): real processes, real SIGKILLs.

Commands go in through a `ComplaintDesk` of the test's own on a SQLite event store;
`complaints automation` runs as subprocesses (on Kafka behind a `complaints relay`, or
on the store's log), with rules and an SLA policy made for the test so that its timers
come due within seconds of real time: registrations are backdated (the test acts as an
importer) so that the one-minute first-response target falls due 3-6 s after triage, on a
24x7 UTC calendar, and the ladder's rungs are `warn` (= due: no warning time), `breach`
and `breach` + 9 s (which also escalates).

Whatever the kills, the history in the store must show every action exactly once, none
missing, as an oracle computed from the history alone says (`check_history`). Besides:
every refusal the automation recorded is one the history explains (`check_refusals`: a
`CommandIdReused` means an action was decided differently the second time, which "decided
again the same way" rules out), an alert names the complaint's agent as it stood, and no
step of any automation failed (nothing was away). The window between carrying out
actions and saving the state that a kill must hit to make the restarted automation act
again is widened by COMPLAINTS_FAULT_AUTOMATION_PAUSE; the kill times are random
(seeded: COMPLAINTS_FAULT_SEED, and printed on failure).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from aggregates.alert import alert_id_for
from aggregates.complaint import DomainError
from aggregates.envelope import EventEnvelope
from commands.desk import ComplaintDesk, VersionConflict
from commands.models import (
    AssignComplaint, ComplaintCommand, Customer, CustomerPersonalData, RecordContact, RegisterComplaint,
    ResolveComplaint, TriageComplaint, WithdrawComplaint,
)
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.stored_events import envelopes
from tests.conftest import ROOT, Processes, backbone_env
from tests.identity import OPERATOR

KILLS = int(os.environ.get("COMPLAINTS_FAULT_KILLS", "8"))
SEED = int(os.environ.get("COMPLAINTS_FAULT_SEED", "11"))

TARGET = timedelta(minutes=1)  # first response, on the 24x7 calendar
LATE_HOURS = 0.0025  # the third rung: 9 s after the breach
RUNGS = {"warn": timedelta(0), "breach": timedelta(0), "late": timedelta(hours=LATE_HOURS)}
ESCALATING = "late"
LEAD = (3.0, 6.0)  # seconds from triage to the first-response due time
# A stop (an answer, a resolution, a withdrawal) this close to a rung's instant may go
# either way, and only then: BEFORE the instant, the stop may not have reached the
# automation yet when its clock gets there (the relay's and the poll's latency); AFTER it,
# an automation that was down at the instant (killed and not yet restarted) reads the stop
# before it fires, and a timer never fires on a complaint whose answer it has read
# (docs/automation.md, "When time acts"). The workload keeps its stops further away than
# this from every instant, so in practice every check is exact.
BEFORE, AFTER = timedelta(seconds=1.5), timedelta(seconds=5)

RULES = f"""
version = "fault-test-1"
timezone = "UTC"

[[assignment]]
id = "assign.fatal"
severity = "fatal"
team = "tech-support"
skill = "escalations"

[[assignment]]
id = "assign.billing"
category = "billing"
team = "billing"

[[assignment]]
id = "assign.logistics"
category = "logistics"
team = "logistics"

[[assignment]]
id = "assign.rest"
team = "tech-support"

[[roster]]
agent = "billing-1"
team = "billing"
capacity = 1000

[[roster]]
agent = "billing-2"
team = "billing"
capacity = 1000

[[roster]]
agent = "logistics-1"
team = "logistics"
capacity = 1000

[[roster]]
agent = "tech-1"
team = "tech-support"
skills = ["escalations"]
capacity = 1000

[[roster]]
agent = "tech-2"
team = "tech-support"
skills = ["escalations"]
capacity = 1000

[[roster]]
agent = "tech-3"
team = "tech-support"
capacity = 1000

[ladder]
clocks = ["first_response"]

[[ladder.rungs]]
id = "warn"
at = "warn"
notify = ["assignee"]
severity = "info"

[[ladder.rungs]]
id = "breach"
at = "breach"
notify = ["assignee", "supervisor"]

[[ladder.rungs]]
id = "late"
at = "breach"
hours = {LATE_HOURS}
notify = ["department_head"]
severity = "critical"
escalate = true

[alerts.fatal_complaint]
recipients = ["department_head"]

[alerts.repeat_customer]
enabled = false

[alerts.product_growth]
enabled = false

[alerts.surge]
enabled = false
"""

POLICY = """
version = "fault-test-sla"
warning_before_minutes = 0

[calendars.always]
timezone = "UTC"

[calendars.always.week]
mon = ["00:00-24:00"]
tue = ["00:00-24:00"]
wed = ["00:00-24:00"]
thu = ["00:00-24:00"]
fri = ["00:00-24:00"]
sat = ["00:00-24:00"]
sun = ["00:00-24:00"]

[[rules]]
calendar = "always"
targets = { first_response_minutes = 1, resolution_minutes = 600 }
"""


# ---------------------------------------------------------------------------- set-up
@dataclass
class Setup:
    settings: Settings
    rules: Path
    policy: Path
    desk: ComplaintDesk


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    rules, policy = tmp_path / "rules.toml", tmp_path / "sla_policy.toml"
    rules.write_text(RULES)
    policy.write_text(POLICY)
    settings = Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite", sla_policy=policy, rules=rules)
    desk = open_desk(settings)
    yield Setup(settings, rules, policy, desk)
    desk.close()


def automation_env(setup: Setup, tmp_path: Path, topic: str = "unused", bootstrap: str | None = None,
                   **extra: str) -> dict[str, str]:
    return backbone_env(setup.settings.sqlite_path, tmp_path / "unused.duckdb", topic, bootstrap,
                        COMPLAINTS_RULES=str(setup.rules), COMPLAINTS_SLA_POLICY=str(setup.policy), **extra)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status_of(state: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(str(state) + ".status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_until_caught_up(processes: Processes, proc: subprocess.Popen[bytes], state: Path, after: datetime,
                         timeout: float = 20) -> None:
    """Until the automation at `state` reports no lag in a status written after `after`;
    an automation whose step keeps failing (four times running) fails the test at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = status_of(state)
        if (status.get("lag") == 0 and "updated_at" in status
                and datetime.fromisoformat(status["updated_at"]) > after):
            return
        log = processes.log_of(proc)
        if "retrying in 4.0s" in log or proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{state.name} did not catch up (exit {proc.poll()}); its errors:\n"
                         + "\n".join(errors_of(processes, proc)[-5:]))


def errors_of(processes: Processes, proc: subprocess.Popen[bytes]) -> list[str]:
    return [line for line in processes.log_of(proc).splitlines() if " ERROR " in line or "Traceback" in line]


def start_automation(processes: Processes, env: dict[str, str], state: Path, source: str) -> subprocess.Popen[bytes]:
    proc = processes.start("automation", "automation", "--source", source, "--state", str(state), env=env)
    processes.wait_for_log(proc, "automation (rules fault-test-1)")
    return proc


def refusals(state: Path) -> list[tuple[str, str, str, str]]:
    """(command id, rule, target, detail) of what the desk refused, from the state file."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        return db.execute("SELECT command_id, rule, target, detail FROM actions WHERE outcome = 'refused'"
                          " ORDER BY done_at").fetchall()


def outcomes(state: Path) -> Counter[str]:
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        return Counter(dict(db.execute("SELECT outcome, count(*) FROM actions GROUP BY outcome").fetchall()))


def history(desk: ComplaintDesk) -> list[EventEnvelope]:
    """Every published event in the store, in the log's order."""
    found: list[EventEnvelope] = []
    start = 1
    while batch := desk.recorder.select_notifications(start, 5_000):
        found += envelopes(desk.mapper, batch)
        start = batch[-1].id + 1
    return found


# ---------------------------------------------------------------------------- the workload
class Workload:
    """Complaints registered and triaged at a steady pace from a thread, as people do: some
    fatal, some handed to a team by hand right after triage (racing the automation's
    assignment), some answered, resolved or withdrawn a while before their first-response
    due time, some between the breach and the late rung, the rest left to breach."""

    def __init__(self, desk: ComplaintDesk, name: str, seed: int, pace: float) -> None:
        self.desk, self.name, self.pace = desk, name, pace
        self.rng = random.Random(seed)
        self.registering = threading.Event()
        self.registering.set()
        self.registered = 0
        self.last_instant = datetime.now(UTC)  # the latest rung instant of any complaint
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"workload-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            stops: list[tuple[datetime, int, UUID, str]] = []
            next_at = datetime.now(UTC)
            while self.registering.is_set() or stops:
                now = datetime.now(UTC)
                if self.registering.is_set() and now >= next_at:
                    self._new(now, stops)
                    next_at = now + timedelta(seconds=self.pace)
                while stops and stops[0][0] <= datetime.now(UTC):
                    _, _, complaint, kind = heapq.heappop(stops)
                    self._stop(complaint, kind)
                time.sleep(0.02)
        except BaseException as error:
            self.error = error

    def _new(self, now: datetime, stops: list[tuple[datetime, int, UUID, str]]) -> None:
        n, rng = self.registered, self.rng
        self.registered += 1
        lead = timedelta(seconds=rng.uniform(*LEAD))
        registered_at = now - TARGET + lead  # backdated: the first response falls due `lead` from now
        result = self.desk.register(RegisterComplaint(
            command_id=f"{self.name}-{n}", channel="web", customer=Customer(id=f"C-{self.name}-{n}"),
            customer_personal=CustomerPersonalData(name=f"Customer {n}", contact=f"c{n}@example.com"),
            title=f"Complaint {n}", description="Something went wrong.", product="router-x2",
            occurred_at=registered_at), OPERATOR)
        complaint = result.complaint_id
        self._execute(complaint, TriageComplaint(
            command_id=f"{self.name}-{n}-triage", category=rng.choice(["billing", "logistics", "product_defect"]),
            severity=rng.choices(["fatal", "major", "normal"], [3, 3, 4])[0]))
        if rng.random() < 0.2:
            self._execute(complaint, AssignComplaint(command_id=f"{self.name}-{n}-assign", team="front-desk",
                                                     agent="human-1"))
        due = registered_at + TARGET
        self.last_instant = max(self.last_instant, due + RUNGS["late"])
        fate = rng.choices(["early", "late", "never"], [35, 20, 45])[0]
        kind = rng.choice(["contact", "resolve", "withdraw"])
        if fate == "early":  # 2.5 s or more before the due time (and so before every rung)
            at = now + timedelta(seconds=rng.uniform(0.2, lead.total_seconds() - 2.5))
        elif fate == "late":  # 5.5 s or more after the breach, 2.5 s or more before the late rung
            at = due + timedelta(seconds=rng.uniform(5.5, RUNGS["late"].total_seconds() - 2.5))
        else:
            return
        heapq.heappush(stops, (at, n, complaint, kind))

    def _execute(self, complaint: UUID, command: ComplaintCommand) -> None:
        """As a client does: a write racing ours (the automation's, in its own process) is
        answered with a conflict, and the command is sent again."""
        for _ in range(10):
            try:
                self.desk.execute(complaint, command, OPERATOR)
                return
            except VersionConflict:
                time.sleep(0.01)
        raise AssertionError(f"{command.command_id}: conflicts ten times running")

    def _stop(self, complaint: UUID, kind: str) -> None:
        command_id = f"{self.name}-stop-{complaint}"
        if kind == "resolve":
            try:
                self._execute(complaint, ResolveComplaint(command_id=command_id, resolution="Fixed"))
                return
            except DomainError:  # not assigned (yet): withdrawn instead
                command_id += "-withdrawn"
        if kind == "contact":
            self._execute(complaint, RecordContact(command_id=command_id, direction="outbound",
                                                   channel="phone", summary="Called back"))
        else:
            self._execute(complaint, WithdrawComplaint(command_id=command_id, reason="Sorted out"))

    def stop_registering(self) -> None:
        self.registering.clear()

    def finish(self) -> None:
        """Stop registering, and wait for the planned stops."""
        self.registering.clear()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the workload did not finish"
        if self.error:
            raise self.error


# ---------------------------------------------------------------------------- the oracle
STOPS_FIRST_RESPONSE = {"Withdrawn", "MarkedDuplicate"}
STOPPED = {"Resolved", "Withdrawn", "MarkedDuplicate"}


@dataclass
class Verdict:
    complaints: int = 0
    fatal: int = 0
    assigned: int = 0
    moved_first: set[str] = field(default_factory=set)  # someone else moved the complaint right after triage
    rung_alerts: int = 0
    escalations: int = 0
    ambiguous: list[str] = field(default_factory=list)
    near_stop: set[str] = field(default_factory=set)  # complaints stopped close to an instant


def check_history(events: list[EventEnvelope]) -> Verdict:
    """What the history must show, computed from the history alone."""
    verdict = Verdict()
    ids = Counter(e.command_id for e in events)
    assert not [c for c, n in ids.items() if n > 1], f"command ids twice: {[c for c, n in ids.items() if n > 1][:5]}"

    complaints: dict[str, list[EventEnvelope]] = defaultdict(list)
    raised: dict[str, list[EventEnvelope]] = defaultdict(list)  # key -> AlertRaised
    resolved: dict[str, list[EventEnvelope]] = defaultdict(list)  # alert id -> AlertResolved
    for e in events:
        if e.event_type == "AlertRaised":
            raised[e.payload["key"]].append(e)
        elif e.event_type == "AlertResolved":
            resolved[str(e.complaint_id)].append(e)
        elif not e.event_type.startswith("Alert"):
            complaints[str(e.complaint_id)].append(e)
    explained: set[str] = set()
    problems: list[str] = []

    for cid, lives in complaints.items():
        lives.sort(key=lambda e: e.complaint_version)
        assert [e.complaint_version for e in lives] == list(range(1, len(lives) + 1)), cid
        triaged = [e for e in lives if e.event_type == "Triaged"]
        if not triaged:
            continue
        verdict.complaints += 1
        triage = triaged[0]
        assert len(triaged) == 1 and not triage.actor.startswith("automation:"), "only the test triages"
        stop = next((e for e in lives if e.event_type in STOPPED), None)

        # A fatal complaint: one alert at once, resolved automatically when it stops.
        fatal_key = f"fatal_complaint:{cid}"
        if triage.payload["severity"] == "fatal":
            verdict.fatal += 1
            explained.add(fatal_key)
            if len(raised[fatal_key]) != 1:
                problems.append(f"{cid}: {len(raised[fatal_key])} fatal alerts, expected 1")
            ends = resolved.get(str(alert_id_for(fatal_key)), [])
            if len(ends) != (1 if stop else 0) or not all(e.payload["automatic"] for e in ends):
                problems.append(f"{cid}: fatal alert resolved {len(ends)} times,"
                                f" complaint {'stopped' if stop else 'open'}")

        # Triaged with no team: one automation assignment, right after the triage (its
        # expected version), unless someone else moved the complaint first.
        before = lives[:triage.complaint_version - 1]
        team = next((e.payload["team"] for e in reversed(before) if e.event_type == "Assigned"), None)
        auto = [e for e in lives if e.command_id.startswith(f"auto:assign:{cid}:")]
        following = lives[triage.complaint_version] if len(lives) > triage.complaint_version else None
        if team is not None:
            if auto:
                problems.append(f"{cid}: assigned by the automation though it had a team")
        elif following is not None and not following.actor.startswith("automation:"):
            verdict.moved_first.add(cid)
            if auto:
                problems.append(f"{cid}: assigned by the automation after {following.event_type} by {following.actor}")
        elif len(auto) != 1 or auto[0].complaint_version != triage.complaint_version + 1:
            problems.append(f"{cid}: automation assignments at versions {[e.complaint_version for e in auto]},"
                            f" expected one at {triage.complaint_version + 1}")
        else:
            verdict.assigned += 1
            if auto[0].command_id != f"auto:assign:{cid}:1" or auto[0].actor != "automation:assignment":
                problems.append(f"{cid}: assignment {auto[0].command_id} by {auto[0].actor}")

        # The first-response clock: each rung once while it runs, none after it stopped.
        due = datetime.fromisoformat(triage.payload["first_response_due"])
        answered = next((e.occurred_at for e in lives if e.event_type in STOPS_FIRST_RESPONSE
                         or (e.event_type in ("ContactRecorded", "ResolutionProposed", "Resolved")
                             and e.payload.get("first_response_at"))), None)
        for rung, offset in RUNGS.items():
            instant = due + offset
            key = f"sla.first_response.{rung}:{cid}:{due.isoformat()}"
            explained.add(key)
            alerts = raised.get(key, [])
            escalations = [e for e in lives if e.command_id == f"auto:escalate:{rung}:{cid}"]
            found = {"alerts": len(alerts)} | ({"escalations": len(escalations)} if rung == ESCALATING else {})
            if answered is None or answered > instant + AFTER:
                expected: int | None = 1
            elif answered < instant - BEFORE:
                expected = 0
            else:
                expected = None  # within the race window: either, but never twice
                verdict.near_stop.add(cid)
                verdict.ambiguous.append(f"{cid} {rung}: answered {(answered - instant).total_seconds():+.2f}s"
                                         f" from the instant, {found}")
            for what, n in found.items():
                if (expected is None and n > 1) or (expected is not None and n != expected):
                    problems.append(f"{cid}: {n} {what} of rung {rung}, expected {expected}"
                                    f" (due {due.isoformat()}, answered {answered and answered.isoformat()})")
            verdict.rung_alerts += len(alerts)
            verdict.escalations += len(escalations) if rung == ESCALATING else 0
            for alert in alerts:  # raised by the automation, about the complaint as it stood
                assigned = [e for e in lives if e.event_type == "Assigned" and e.occurred_at <= instant]
                agent = assigned[-1].payload["agent"] if assigned else None
                near = any(abs(e.occurred_at - instant) < AFTER for e in lives if e.event_type == "Assigned")
                if alert.actor != "automation:sla":
                    problems.append(f"{key}: raised by {alert.actor}")
                if rung != "late" and not near and alert.payload["owner"] != agent:
                    problems.append(f"{key}: alert for {alert.payload['owner']!r}, but the complaint's agent"
                                    f" at {instant.isoformat()} was {agent!r}")

    unexplained = sorted(set(raised) - explained)
    if unexplained:
        problems.append(f"alerts the rules do not call for: {unexplained[:5]}")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    return verdict


def check_refusals(states: list[Path], verdict: Verdict) -> list[tuple[str, str, str, str]]:
    """Every refusal the automation recorded is one the history explains: an assignment of a
    complaint someone else moved first (409), or an action on a complaint stopped close to
    an instant. Never a command id reused with another body (a decision made differently
    the second time)."""
    found = [r for state in states for r in refusals(state)]
    unexplained = []
    for command_id, rule, target, detail in found:
        if rule.startswith("assign.") and "VersionConflict" in detail and target in verdict.moved_first:
            continue
        if rule.startswith("sla.") and target in verdict.near_stop and "CommandIdReused" not in detail:
            continue
        unexplained.append((command_id, rule, target, detail))
    assert not unexplained, "refusals the history does not explain:\n" + "\n".join(map(str, unexplained[:20]))
    return found


# ---------------------------------------------------------------------------- the tests
@pytest.mark.kafka
@pytest.mark.slow
def test_automation_killed_at_random_acts_exactly_once_through_the_broker(
    setup: Setup, kafka_bootstrap: str, topic: str, processes: Processes, tmp_path: Path
) -> None:
    started = time.monotonic()
    env = automation_env(setup, tmp_path, topic, kafka_bootstrap, COMPLAINTS_FAULT_AUTOMATION_PAUSE="0.2")
    state = tmp_path / "automation.sqlite"
    relay = processes.start("relay", "relay", env=env)
    processes.wait_for_log(relay, "relay to topic")
    rng = random.Random(SEED)
    workload = Workload(setup.desk, "k", seed=SEED, pace=0.25)
    kills = []
    try:
        for _ in range(KILLS):
            automation = start_automation(processes, env, state, "kafka")
            time.sleep(delay := rng.uniform(0.3, 3.0))
            assert automation.poll() is None, processes.log_of(automation)[-3000:]
            processes.kill(automation)
            kills.append(round(delay, 2))
        workload.stop_registering()
        automation = start_automation(processes, env, state, "kafka")
        workload.finish()
        assert workload.registered >= 40, "commands were flowing during the kills"

        # Every timer had its time, the relay published everything, and the automation read it.
        done = workload.last_instant + timedelta(seconds=1)
        time.sleep(max(0.0, (done - datetime.now(UTC)).total_seconds()))
        wait_for(lambda: (setup.desk.factory.tracking_recorder().max_tracking_id(f"relay:{topic}") or 0)
                 == setup.desk.recorder.max_notification_id(), 30, "the relay to catch up")
        wait_until_caught_up(processes, automation, state, done)
        assert processes.stop(automation) == 0, processes.log_of(automation)[-3000:]
        processes.stop(relay)

        verdict = check_history(history(setup.desk))
        found = check_refusals([state], verdict)
        # Nothing was away: no step of any of them failed.
        failed = [line for proc, _ in processes.started if proc is not relay for line in errors_of(processes, proc)]
        assert not failed, "\n".join(failed[:10])
        # The kills did something: a restarted automation acted again on what it had done.
        assert outcomes(state)["duplicate"] > 0, f"no kill made the automation act twice: {kills}"
    except AssertionError as error:
        raise AssertionError(f"{error}\n(seed {SEED}, kills after {kills})") from None
    print(f"\n{workload.registered} complaints, kills after {kills}: {verdict.fatal} fatal, {verdict.assigned}"
          f" assigned, {len(verdict.moved_first)} moved first, {verdict.rung_alerts} rung alerts,"
          f" {verdict.escalations} escalations, {len(found)} refusals, ambiguous {verdict.ambiguous},"
          f" {outcomes(state)}, {time.monotonic() - started:.1f}s")


@pytest.mark.slow
def test_two_copies_on_one_stream_act_once(setup: Setup, processes: Processes, tmp_path: Path) -> None:
    env = automation_env(setup, tmp_path, COMPLAINTS_SOURCE="log")
    states = [tmp_path / "one.sqlite", tmp_path / "two.sqlite"]
    workload = Workload(setup.desk, "two", seed=SEED + 1, pace=0.15)
    copies = [start_automation(processes, env, state, "log") for state in states]
    time.sleep(6)
    workload.finish()
    done = workload.last_instant + timedelta(seconds=1)
    time.sleep(max(0.0, (done - datetime.now(UTC)).total_seconds()))
    for copy, state in zip(copies, states):
        wait_until_caught_up(processes, copy, state, done)
    for copy in copies:
        assert processes.stop(copy) == 0, processes.log_of(copy)[-3000:]

    verdict = check_history(history(setup.desk))
    found = check_refusals(states, verdict)
    failed = [line for copy in copies for line in errors_of(processes, copy)]
    assert not failed, "\n".join(failed[:10])
    assert verdict.fatal and verdict.assigned and verdict.rung_alerts and verdict.escalations
    # Both acted: the desk answered one of them with what the other had done.
    counts = [outcomes(state) for state in states]
    assert sum(c["duplicate"] for c in counts) > 0, counts
    print(f"\n{workload.registered} complaints: {verdict.fatal} fatal, {verdict.assigned} assigned,"
          f" {len(verdict.moved_first)} moved first, {verdict.rung_alerts} rung alerts, {verdict.escalations}"
          f" escalations, {len(found)} refusals, {counts}")


def test_second_process_on_the_same_state_file_refuses_to_start(
    setup: Setup, processes: Processes, tmp_path: Path
) -> None:
    env = automation_env(setup, tmp_path)
    state = tmp_path / "automation.sqlite"
    first = start_automation(processes, env, state, "log")
    second = subprocess.run([sys.executable, "-m", "complaints.cli", "automation", "--source", "log",
                             "--state", str(state)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"{state} is in use by another automation process" in second.stderr
    assert "--state" in second.stderr  # says what to do: a state file of its own
    assert first.poll() is None, "the first one keeps running"
    assert processes.stop(first) == 0


def test_invalid_rules_file_refuses_to_start_and_writes_nothing(setup: Setup, tmp_path: Path) -> None:
    setup.desk.register(RegisterComplaint(
        command_id="before-bad-rules", channel="web", customer=Customer(id="C-1"),
        customer_personal=CustomerPersonalData(name="Customer", contact="c@example.com"),
        title="A complaint", description="Something went wrong."), OPERATOR)
    bad = tmp_path / "bad.toml"
    bad.write_text(RULES.replace('at = "breach"\nnotify = ["assignee", "supervisor"]',
                                 'at = "soon"\nnotify = ["assignee", "supervisor"]'))
    assert 'at = "soon"' in bad.read_text()
    setup.desk.close()  # everything it wrote is in the file

    def snapshot() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp_path.glob("events*"))}

    before = snapshot()
    env = automation_env(setup, tmp_path) | {"COMPLAINTS_RULES": str(bad)}
    state = tmp_path / "automation.sqlite"
    done = subprocess.run([sys.executable, "-m", "complaints.cli", "automation", "--source", "log",
                           "--state", str(state), "--once"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"rules {bad}: ladder.rungs.1.at: Input should be 'warn' or 'breach'" in done.stderr, done.stderr
    assert snapshot() == before, "nothing written to the store"
    assert not state.exists(), "no state file either"
    desk = open_desk(setup.settings)
    try:
        assert desk.recorder.max_notification_id() == 1
    finally:
        desk.close()
    setup.desk = open_desk(setup.settings)  # the fixture closes it
