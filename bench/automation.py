"""The automation (issue 12): a timer sweep, timer lateness under load, alert latency.

    python -m bench.automation --help
    python -m bench.automation                      # all three, ~4-5 minutes
    python -m bench.automation --only sweep --complaints 100000

- sweep: `--complaints` complaints registered and triaged (built as aggregates and saved
  a thousand to a transaction, backdated), followed by the automation (not measured);
  then its fake clock jumps past their first-response due instant, so one timer per
  complaint comes due at once: the steps until nothing is due, in actions per second.
  The rules' ladder has one rung, `breach`, notifying the supervisor, on the first
  response and resolution clocks (the resolution timers stay pending): the sweep is
  alert raises, 1,000 per desk transaction (`Actuator`, `ComplaintDesk.raise_alerts`).
  The ceiling, in the same run and store: the desk saving pre-built Alert aggregates of
  the same shape, 1,000 a transaction (`desk.save(*alerts)`: the event store's own batch
  speed). With `--escalate-complaints N` (default 10,000; 0: skip), a second store and a
  ladder whose rung escalates instead: one `EscalateComplaint` per complaint through
  `desk.execute`, against `desk.save` of the same complaints escalated in memory.
- lateness: the automation in a thread on the real clock, beside a thread sending a
  steady `--rate` commands/s through the desk: per second `--timers-per-second`
  registrations (an importer's, backdated so that the resolution clock's `warn` rung
  comes due `--lead` seconds later and its `breach` rung a minute after that: an SLA
  policy on a 24x7 calendar with targets of 1 and 2 minutes and a 1-minute warning), their
  triage, and notes on earlier complaints for the rest. Each timer's lateness is what the
  automation records (`actions.lateness_seconds`: carried out minus due); p50/p99/max of
  the timers due in the measured `--seconds`, and of those due in a `--quiet-seconds`
  phase before it with the timers' complaints alone (no notes: the same run without the
  load).
- latency: the automation and a read node (every read model, the log followed in
  process) in threads, the read API in process (TestClient, bearer tokens verified);
  `--alerts` complaints triaged `fatal` through the desk one at a time, at least
  `--spacing` seconds apart; per complaint, the time from sending the triage to its fatal-complaint
  alert in `GET /alerts` (polled every `--poll-ms`). Interleaved with `--direct` alerts
  raised directly through the desk (no automation: the read side's own floor).
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from tqdm import tqdm

from aggregates.access import Principal
from aggregates.alert import Alert
from aggregates.complaint import Complaint, Meta
from aggregates.rules import Rules
from aggregates.sla import SlaPolicy
from commands.alerts import RaiseAlert
from commands.desk import ComplaintDesk
from commands.models import AddNote, RegisterComplaint, TriageComplaint
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.automation import ALERT_CHUNK, Automation
from consumers.sources import LogSource

IMPORTER = Principal("bench-importer", "bench importer", frozenset({"importer"}))
OPERATOR = Principal("bench-operator", "bench operator", frozenset({"department_head", "importer"}))
AUTOMATION = Principal("automation:alerts", "bench rules", frozenset({"automation"}))
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # the sweep's registrations (fake clock)
OFF = {"enabled": False}
NO_ALERT_RULES = {"fatal_complaint": OFF, "repeat_customer": OFF, "product_growth": OFF, "surge": OFF}


def rules_with(ladder: dict[str, Any], alerts: dict[str, Any] | None = None) -> Rules:
    """Rules doing only what a measurement asks: no triage, no assignment, the given ladder."""
    return Rules.model_validate({"version": "bench", "ladder": ladder, "alerts": alerts or NO_ALERT_RULES})


def register_fields(n: int, tag: str) -> dict[str, Any]:
    return RegisterComplaint.model_validate({
        "channel": "web", "customer": {"id": f"C-{tag}-{n}", "tier": "regular"},
        "customer_personal": {"name": "Bench", "contact": "bench@example.com"},
        "title": f"Bench complaint {n}", "description": "A complaint for the automation benchmark",
        "product": "router-x2", "region": "Shanghai",
    }).event_fields()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def desk_at(path: Path, clock: Callable[[], datetime] | None = None, policy: SlaPolicy | None = None) -> ComplaintDesk:
    desk = open_desk(Settings(store="sqlite", sqlite_path=path))
    if clock is not None:
        desk.clock = clock
    if policy is not None:
        desk.sla_policy = policy
    return desk


@contextmanager
def timed(totals: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - start


def wrap(totals: dict[str, float], name: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def timed_call(*args: Any, **kwargs: Any) -> Any:
        with timed(totals, name):
            return call(*args, **kwargs)
    return timed_call


# ---------------------------------------------------------------------------------------- sweep
def load_complaints(desk: ComplaintDesk, count: int, tag: str, severity: str, at: datetime) -> list[Complaint]:
    """`count` complaints registered and triaged at `at`, saved 1,000 to a transaction."""
    complaints = []
    chunk: list[Complaint] = []
    for n in tqdm(range(count), desc=f"registering and triaging {count:,} complaints", unit="complaint",
                  unit_scale=True, file=sys.stderr):
        complaint = Complaint(**register_fields(n, tag), **Meta(IMPORTER.subject, at, f"{tag}-r-{n}",
                                                               f"{tag}-r-{n}").fields())
        complaint.triage("product_defect", severity, "one_user", desk.sla_policy,  # type: ignore[arg-type]
                         Meta(IMPORTER.subject, at, f"{tag}-t-{n}", f"{tag}-r-{n}"))
        chunk.append(complaint)
        if len(chunk) == 1_000:
            desk.save(*chunk)
            complaints += chunk
            chunk = []
    if chunk:
        desk.save(*chunk)
        complaints += chunk
    return complaints


def follow_all(auto: Automation, events: int, what: str) -> float:
    """Steps until the automation has read the whole log; seconds taken."""
    start = time.perf_counter()
    with tqdm(total=events, desc=what, unit="ev", unit_scale=True, file=sys.stderr) as bar:
        while auto.lag() > 0:
            before = auto.positions.get(0, 1)
            auto.step()
            bar.update(auto.positions.get(0, 1) - before)
    return time.perf_counter() - start


def sweep_steps(auto: Automation, now: datetime) -> tuple[int, int, float]:
    """Steps until nothing is due by `now`: (actions, steps, seconds)."""
    actions = steps = 0
    start = time.perf_counter()
    while (next_timer := auto.engine.next_timer()) is not None and next_timer <= now:
        actions += len(auto.step())
        steps += 1
    return actions, steps, time.perf_counter() - start


def alerts_like(count: int, tag: str, at: datetime) -> list[Alert]:
    """Alert aggregates shaped as the sweep's (same fields, evidence and sizes)."""
    alerts = []
    for n in range(count):
        key = f"sla.first_response.breach:{tag}-{n:032d}:{at.isoformat()}"
        command = RaiseAlert(
            command_id=f"auto:{key}"[:100], key=key, rule="sla.first_response.breach", rules_version="bench",
            subject_type="complaint", subject=f"{n:032d}", complaint_id=None, team=None, severity="warning",
            title_en="SLA first response breached", title_zh="SLA 首次响应已超时",
            evidence={"clock": "first_response", "due": at.isoformat(), "rung": "breach", "instant": at.isoformat(),
                      "team": None, "agent": None, "escalation_level": 0},
            recipients=["supervisor"])
        alerts.append(Alert(**command.event_fields(), **Meta("automation:sla", at, str(command.command_id),
                                                               str(command.command_id)).fields()))
    return alerts


def raw_alert_saves(desk: ComplaintDesk, count: int, at: datetime) -> float:
    """Alerts/s of the desk's own save of pre-built Alert aggregates, 1,000 a transaction."""
    alerts = alerts_like(count, "raw", at)
    start = time.perf_counter()
    for i in tqdm(range(0, count, ALERT_CHUNK), desc="ceiling: desk.save of pre-built alerts", unit="chunk",
                  file=sys.stderr):
        desk.save(*alerts[i:i + ALERT_CHUNK])
    return count / (time.perf_counter() - start)


def sweep(folder: Path, complaints: int, raw_alerts: int) -> dict[str, Any]:
    now = [T0]
    desk = desk_at(folder / "sweep.sqlite", lambda: now[0])
    rules = rules_with({"clocks": ["first_response", "resolution"],
                        "rungs": [{"id": "breach", "at": "breach", "notify": ["supervisor"]}]})
    started = time.perf_counter()
    load_complaints(desk, complaints, "s", "major", T0)
    loaded = time.perf_counter() - started
    auto = Automation(LogSource(desk.recorder, desk.mapper), desk, rules, desk.sla_policy, folder / "sweep-state.sqlite",
                      clock=lambda: now[0])
    followed = follow_all(auto, 2 * complaints, "the automation follows them")
    first_due = min(c.dues["first_response"] for c in auto.engine.cases.values())
    last_due = max(c.dues["first_response"] for c in auto.engine.cases.values())
    assert first_due > T0, "nothing may be due before the jump"
    now[0] = last_due + timedelta(seconds=1)
    totals: dict[str, float] = {}
    auto.engine.due = wrap(totals, "engine.due", auto.engine.due)  # type: ignore[method-assign]
    auto.actuator.carry_out = wrap(totals, "carry out (desk)", auto.actuator.carry_out)  # type: ignore[method-assign]
    auto.state.save = wrap(totals, "state save", auto.state.save)  # type: ignore[method-assign]
    print(f"sweep: clock jumps to {now[0].isoformat()}", file=sys.stderr)
    actions, steps, seconds = sweep_steps(auto, now[0])
    parts = dict(totals)
    assert actions == complaints, (actions, complaints)
    # Afterwards (not the sweep): the automation reads its own alerts back; no timer fires
    # until it has (it acts on time only once it has read everything there was).
    readback = follow_all(auto, actions, "the automation reads its alerts back")
    auto.close()
    raw = raw_alert_saves(desk, raw_alerts, now[0])  # the ceiling, in the same store
    desk.close()
    return {"complaints": complaints, "load_seconds": loaded, "follow_seconds": followed, "actions": actions,
            "steps": steps, "seconds": seconds, "actions_per_s": actions / seconds, "parts": parts,
            "raw_alerts_per_s": raw, "readback_seconds": readback}


def escalation_sweep(folder: Path, complaints: int) -> dict[str, Any]:
    now = [T0]
    desk = desk_at(folder / "escalate.sqlite", lambda: now[0])
    rules = rules_with({"clocks": ["first_response"], "rungs": [{"id": "breach", "at": "breach", "escalate": True}]})
    load_complaints(desk, complaints, "e", "major", T0)
    auto = Automation(LogSource(desk.recorder, desk.mapper), desk, rules, desk.sla_policy,
                      folder / "escalate-state.sqlite", clock=lambda: now[0])
    follow_all(auto, 2 * complaints, "the automation follows them")
    now[0] = max(c.dues["first_response"] for c in auto.engine.cases.values()) + timedelta(seconds=1)
    actions, steps, seconds = sweep_steps(auto, now[0])
    assert actions == complaints, (actions, complaints)
    auto.close()
    desk.close()
    # Ceiling: as many complaints in a store of their own, escalated in memory and saved one
    # per transaction (what the desk adds per command: loading, checks, the command itself).
    desk = desk_at(folder / "escalate-ceiling.sqlite", lambda: now[0])
    loaded = load_complaints(desk, complaints, "c", "major", T0)
    for complaint in loaded:
        complaint.escalate(1, "ceiling", Meta("bench", now[0], f"ceiling-{complaint.id}", "ceiling"))
    start = time.perf_counter()
    for complaint in tqdm(loaded, desc="ceiling: desk.save of escalated complaints", unit="complaint",
                          unit_scale=True, file=sys.stderr):
        desk.save(complaint)
    raw = complaints / (time.perf_counter() - start)
    desk.close()
    return {"complaints": complaints, "actions": actions, "steps": steps, "seconds": seconds,
            "actions_per_s": actions / seconds, "raw_per_s": raw}


# ------------------------------------------------------------------------------------- lateness
def one_minute_policy() -> SlaPolicy:
    """Round the clock (24x7), first response in 1 minute, resolution in 2, warned 1 minute ahead."""
    return SlaPolicy.model_validate({
        "version": "bench-1min", "warning_before_minutes": 1,
        "calendars": {"24x7": {"timezone": "UTC",
                               "week": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}},
        "rules": [{"calendar": "24x7", "targets": {"first_response_minutes": 1, "resolution_minutes": 2}}],
    })


class Load:
    """A thread sending commands through the desk at a steady rate: per `every` commands one
    registration (backdated so that its resolution clock's warn rung comes due `lead`
    seconds later) and its triage; notes on earlier complaints for the rest, unless quiet."""

    def __init__(self, desk: ComplaintDesk, rate: float, timers_per_second: float, lead: float) -> None:
        self.desk, self.rate, self.lead = desk, rate, lead
        self.every = max(2, round(rate / timers_per_second))
        self.quiet_rate = 2 * timers_per_second
        self.quiet = True
        self.stop = threading.Event()
        self.sent: list[tuple[float, bool]] = []  # (monotonic time, quiet) per command
        self.ids: list[UUID] = []
        self.errors = 0
        self.thread = threading.Thread(target=self.run, name="load", daemon=True)

    def run(self) -> None:
        n, slot, start, quiet = 0, 0, time.monotonic(), self.quiet
        while not self.stop.is_set():
            if self.quiet != quiet:  # the phase changed: a new schedule from now
                n, start, quiet = 0, time.monotonic(), self.quiet
            rate = self.quiet_rate if quiet else self.rate
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n += 1
            try:
                self.command(slot, quiet)
            except Exception as error:  # counted and shown: a refused note must not stop the load
                self.errors += 1
                if self.errors < 5:
                    print(f"load: {type(error).__name__}: {error}", file=sys.stderr)
            self.sent.append((time.monotonic(), quiet))
            slot += 1

    def command(self, slot: int, quiet: bool) -> None:
        desk = self.desk
        phase = slot % (2 if quiet else self.every)
        if phase == 0:
            backdated = desk.clock() - timedelta(seconds=60 - self.lead)
            command = RegisterComplaint.model_validate(
                {**register_fields(len(self.ids), "late"), "occurred_at": backdated})
            self.ids.append(desk.register(command, OPERATOR).complaint_id)
        elif phase == 1:
            desk.execute(self.ids[-1], TriageComplaint(category="product_defect", severity="normal"), OPERATOR)
        else:
            complaint = self.ids[(slot * 7919) % len(self.ids)]
            desk.execute(complaint, AddNote(text=f"note {slot}"), OPERATOR)

    def rate_between(self, start: float, end: float) -> float:
        return sum(1 for at, _ in self.sent if start <= at < end) / (end - start)


def lateness(folder: Path, seconds: float, quiet_seconds: float, rate: float, timers_per_second: float,
             lead: float) -> dict[str, Any]:
    policy = one_minute_policy()
    desk = desk_at(folder / "lateness.sqlite", policy=policy)
    rules = rules_with({"clocks": ["resolution"],
                        "rungs": [{"id": "warn", "at": "warn", "notify": ["assignee"], "severity": "info"},
                                  {"id": "breach", "at": "breach", "notify": ["supervisor"]}]})
    state = folder / "lateness-state.sqlite"
    auto = Automation(LogSource(desk.recorder, desk.mapper), desk, rules, policy, state)
    auto.open()
    auto.start_background()
    load = Load(desk, rate, timers_per_second, lead)
    wall0, mono0 = datetime.now(UTC), time.monotonic()
    load.thread.start()
    total = quiet_seconds + seconds
    with tqdm(total=round(total), desc="lateness: quiet, then loaded", unit="s", file=sys.stderr) as bar:
        while (elapsed := time.monotonic() - mono0) < total:
            if elapsed >= quiet_seconds and load.quiet:
                load.quiet = False
                bar.set_description(f"lateness: {rate:.0f} commands/s")
            time.sleep(0.25)
            bar.update(round(elapsed) - bar.n)
    load.stop.set()
    load.thread.join(10)
    end = wall0 + timedelta(seconds=total)
    # Every timer due by the end fires before the automation stops (or 30 s go by).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (auto.engine.next_timer() or end + timedelta(1)) <= end:
        time.sleep(0.1)
    auto.stop()
    pending = sum(1 for instant, *_ in list(auto.engine._timers) if instant <= end)  # (stale ones too)
    auto.close()
    desk.close()
    db = sqlite3.connect(state)
    rows = db.execute("SELECT due, lateness_seconds FROM actions WHERE rule LIKE 'sla.%' AND outcome <> 'refused'"
                      ).fetchall()
    db.close()
    split = wall0 + timedelta(seconds=quiet_seconds)
    phases: dict[str, list[float]] = {"quiet": [], "loaded": []}
    for due_text, late in rows:
        due = datetime.fromisoformat(due_text)
        if due <= end:
            phases["quiet" if due < split else "loaded"].append(max(0.0, late))
    result: dict[str, Any] = {"pending_at_end": pending, "load_errors": load.errors,
                              "quiet_rate": load.rate_between(mono0, mono0 + quiet_seconds),
                              "loaded_rate": load.rate_between(mono0 + quiet_seconds, mono0 + total)}
    for phase, late in phases.items():
        result[phase] = ({"timers": len(late), "p50": percentile(late, 0.5), "p99": percentile(late, 0.99),
                          "max": max(late)} if late else {"timers": 0})
    return result


# -------------------------------------------------------------------------------- alert latency
def alert_latency(folder: Path, alerts: int, direct: int, spacing: float, poll_ms: float) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from complaints.identity import DEV_ISSUER, DevUser, LocalIssuer, TokenVerifier, authenticator
    from consumers.read_node import ReadNode
    from projections.models import make
    from read_api.app import create_read_app

    desk = desk_at(folder / "latency.sqlite")
    rules = rules_with({"rungs": []}, NO_ALERT_RULES | {"fatal_complaint": {"enabled": True}})
    ids = [desk.register(RegisterComplaint.model_validate(register_fields(n, "fatal")), OPERATOR).complaint_id
           for n in range(alerts)]
    node = ReadNode(folder / "latency.duckdb", LogSource(desk.recorder, desk.mapper), make())
    auto = Automation(LogSource(desk.recorder, desk.mapper), desk, rules, desk.sla_policy, folder / "latency-state.sqlite")
    node.start_background()
    auto.start_background()
    issuer = LocalIssuer(folder / "issuer.pem", "complaints-api")
    app = create_read_app(node, authenticator(TokenVerifier(issuer, DEV_ISSUER, "complaints-api"), None),
                          cache_seconds=0)
    headers = {"Authorization": f"Bearer {issuer.token(DevUser('bench', 'bench', ('department_head',)))}"}
    samples: dict[str, list[float]] = {"automation": [], "direct": []}
    polls = 0
    with TestClient(app) as client:
        if not (node.caught_up.wait(60) and auto.caught_up.wait(60)):
            raise SystemExit("the read node or the automation did not catch up in 60 s")

        def visible(subject: str) -> bool:
            response = client.get("/alerts", params={"subject": subject}, headers=headers)
            response.raise_for_status()
            return response.json()["total"] > 0

        visible("warm-up")
        # Through the automation and directly, interleaved evenly.
        schedule = sorted([(i / alerts, "automation", i) for i in range(alerts)]
                          + [((j + 0.5) / max(1, direct), "direct", j) for j in range(direct)])
        next_at = time.monotonic()
        for _, kind, n in tqdm(schedule, desc="alert latency (through the automation, and direct)", unit="alert",
                               file=sys.stderr):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = time.monotonic() + spacing
            start = time.perf_counter()
            if kind == "automation":
                complaint = ids[n]
                subject = str(complaint)
                desk.execute(complaint, TriageComplaint(category="product_defect", severity="fatal"), OPERATOR)
            else:
                subject = f"direct-{n}"
                desk.raise_alert(RaiseAlert(
                    key=f"bench:{subject}", rule="bench.direct", rules_version="bench", subject_type="customer",
                    subject=subject, severity="critical", title_en="Bench", title_zh="基准",
                    recipients=["department_head"]), AUTOMATION)
            while True:
                polls += 1
                if visible(subject):
                    break
                if time.perf_counter() - start > 30:
                    raise SystemExit(f"alert for {subject} not visible after 30 s")
                time.sleep(poll_ms / 1000)
            samples[kind].append((time.perf_counter() - start) * 1000)
    auto.stop()
    node.stop()
    auto.close()
    node.close()
    desk.close()
    return {kind: {"alerts": len(s), "p50_ms": percentile(s, 0.5), "p99_ms": percentile(s, 0.99),
                   "max_ms": max(s), "mean_ms": statistics.fmean(s)} for kind, s in samples.items() if s} | {
        "polls": polls}


# ------------------------------------------------------------------------------------------ main
def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| measurement | ours | ceiling / floor, same run |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=["sweep", "lateness", "latency"],
                        help="run only this measurement (repeatable); default: all three")
    parser.add_argument("--complaints", type=int, default=100_000, help="sweep: complaints whose timers come due at once")
    parser.add_argument("--raw-alerts", type=int, default=50_000, help="sweep: pre-built alerts saved for the ceiling")
    parser.add_argument("--escalate-complaints", type=int, default=10_000,
                        help="sweep: complaints of the escalating sweep (0: skip it)")
    parser.add_argument("--seconds", type=float, default=60, help="lateness: seconds under load")
    parser.add_argument("--quiet-seconds", type=float, default=15, help="lateness: seconds before, without the notes")
    parser.add_argument("--rate", type=float, default=500, help="lateness: commands/s under load")
    parser.add_argument("--timers-per-second", type=float, default=50,
                        help="lateness: complaints registered per second, each with a timer due --lead s later")
    parser.add_argument("--lead", type=float, default=5, help="lateness: seconds from a registration to its warn timer")
    parser.add_argument("--alerts", type=int, default=200, help="latency: alerts through the automation")
    parser.add_argument("--direct", type=int, default=50, help="latency: alerts raised directly, interleaved (the floor)")
    parser.add_argument("--spacing", type=float, default=0.2,
                        help="latency: at least this many seconds from one command to the next")
    parser.add_argument("--poll-ms", type=float, default=10, help="latency: GET /alerts every this many ms until visible")
    parser.add_argument("--workdir", type=Path,
                        help="where the temporary stores go (default: the system's temporary directory)")
    args = parser.parse_args()
    only = set(args.only or ["sweep", "lateness", "latency"])
    rows: list[tuple[str, str, str]] = []
    began = time.monotonic()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
          f" load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        if "sweep" in only:
            s = sweep(folder, args.complaints, args.raw_alerts)
            parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in s["parts"].items())
            print(f"sweep: {s['complaints']:,} complaints loaded in {s['load_seconds']:.1f} s, followed in"
                  f" {s['follow_seconds']:.1f} s; sweep {s['actions']:,} actions in {s['steps']} step(s),"
                  f" {s['seconds']:.1f} s ({parts}); its alerts read back afterwards in {s['readback_seconds']:.1f} s",
                  file=sys.stderr)
            rows.append((f"sweep: {s['actions']:,} alerts raised at once (`breach` rung), actions/s",
                         f"**{s['actions_per_s']:,.0f}/s** ({s['seconds']:.1f} s)",
                         f"desk.save of pre-built alerts, 1,000 a transaction: {s['raw_alerts_per_s']:,.0f}/s"
                         f" (ours {s['actions_per_s'] / s['raw_alerts_per_s']:.0%})"))
            rows.append((f"(not the sweep) following the {2 * s['complaints']:,} registrations and triages before it",
                         f"{2 * s['complaints'] / s['follow_seconds']:,.0f} events/s ({s['follow_seconds']:.1f} s)", "-"))
            rows.append((f"(not the sweep) reading its {s['actions']:,} alerts back after it (no timer fires meanwhile)",
                         f"{s['actions'] / s['readback_seconds']:,.0f} events/s ({s['readback_seconds']:.1f} s)", "-"))
            if args.escalate_complaints:
                e = escalation_sweep(folder, args.escalate_complaints)
                rows.append((f"sweep: {e['actions']:,} escalations at once (`escalate = true`), actions/s",
                             f"**{e['actions_per_s']:,.0f}/s** ({e['seconds']:.1f} s)",
                             f"desk.save of complaints escalated in memory, one a transaction: {e['raw_per_s']:,.0f}/s"
                             f" (ours {e['actions_per_s'] / e['raw_per_s']:.0%})"))
        if "lateness" in only:
            late = lateness(folder, args.seconds, args.quiet_seconds, args.rate, args.timers_per_second, args.lead)
            q, loaded = late["quiet"], late["loaded"]

            def fmt(p: dict[str, Any]) -> str:
                if not p["timers"]:
                    return "no timers"
                return (f"p50 {p['p50'] * 1000:.0f} ms, p99 {p['p99'] * 1000:.0f} ms,"
                        f" max {p['max'] * 1000:.0f} ms ({p['timers']:,} timers)")
            rows.append((f"timer lateness, {args.rate:g} commands/s asked ({late['loaded_rate']:.0f} achieved)"
                         f" for {args.seconds:g} s", fmt(loaded),
                         f"quiet, {late['quiet_rate']:.0f} commands/s (the timers' own complaints only): {fmt(q)}"))
            if late["pending_at_end"] or late["load_errors"]:
                print(f"lateness: {late['pending_at_end']} timers due by the end not fired; {late['load_errors']}"
                      " load commands failed", file=sys.stderr)
        if "latency" in only:
            lat = alert_latency(folder, args.alerts, args.direct, args.spacing, args.poll_ms)
            a, d = lat["automation"], lat.get("direct")
            rows.append((f"alert latency, triage `fatal` -> `GET /alerts` ({a['alerts']} alerts, {args.spacing:g} s apart)",
                         f"p50 {a['p50_ms']:.0f} ms, p99 {a['p99_ms']:.0f} ms, max {a['max_ms']:.0f} ms",
                         f"{d['alerts']} alerts raised directly -> `GET /alerts`: p50 {d['p50_ms']:.0f} ms,"
                         f" p99 {d['p99_ms']:.0f} ms, max {d['max_ms']:.0f} ms" if d else "-"))
    print(table(rows))
    print(f"\n{time.monotonic() - began:.0f} s in all; load average (1 min) at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
