"""What-if SLA: the attainment the whole history would have had under another policy.

The due times in the events are facts of the policy each complaint was triaged under. To
ask "what if", this replays the domain's own due-time rules with the other policy over
every complaint's history (a fold of `aggregates.due_times.SlaClock`, the very steps
`Complaint.triage`, `Complaint.record_contact`, `Complaint.customer_replied` and the
waiting, proposal and resolution events take: targets by severity and category, the
resolution target moved on by each pause that began before it, a breach already passed
staying one, the next response due from the first unanswered customer message), writes
the events with those due times into a separate DuckDB file, builds the SLA read model
there, and builds the actual one beside it from the unchanged events
(`actual_sla_clocks`). The live read models are never touched.

The other policy's calendars are stored under "what-if:<name>", so both policies'
calendars live in one calendar table even when they share names.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from tqdm import tqdm

from aggregates.due_times import RECORDED, SlaClock
from aggregates.instants import WINDOW
from aggregates.sla import SlaPolicy
from projections import queries
from projections.event_log import EventLog
from projections.facts import Scope
from projections.sla import SlaProjector, default_policy

log = logging.getLogger(__name__)

PREFIX = "what-if:"
ACTUAL = "actual_"


@dataclass
class WhatIfReport:
    path: Path
    policy: str  # the what-if policy's version
    actual_policy: str
    now: datetime
    events: int
    seconds: float
    rows: list[dict[str, Any]]  # per metric and group: actual and what-if attainment

    def table(self) -> str:
        head = f"{'metric':<15} {'group':<20} {'actual':>21} {'what-if':>21} {'change':>8}"
        lines = [f"what-if policy {self.policy} vs actual ({self.actual_policy}), judged at {self.now.isoformat()}",
                 head, "-" * len(head)]
        for r in self.rows:
            def cell(met: int, counted: int, rate: float | None) -> str:
                return f"{met:>7}/{counted:<7} {rate * 100:5.1f}%" if rate is not None else f"{'-':>21}"
            change = (f"{(r['what_if'] - r['actual']) * 100:+7.1f}" if r["what_if"] is not None
                      and r["actual"] is not None else "")
            lines.append(f"{r['metric']:<15} {str(r['key'] if r['key'] is not None else 'all'):<20} "
                         f"{cell(r['actual_met'], r['actual_counted'], r['actual'])} "
                         f"{cell(r['what_if_met'], r['what_if_counted'], r['what_if'])} {change:>8}")
        lines.append(f"({self.events:,} events; written to {self.path} in {self.seconds:.1f}s)")
        return "\n".join(lines)


def renamed(policy: SlaPolicy, prefix: str = PREFIX) -> SlaPolicy:
    """The policy with every calendar named `prefix<name>` (so it can sit beside another)."""
    data = policy.model_dump(mode="json")
    data["calendars"] = {f"{prefix}{k}": {**v, "name": f"{prefix}{k}"} for k, v in data["calendars"].items()}
    for rule in data["rules"]:
        rule["calendar"] = f"{prefix}{rule['calendar']}"
    return SlaPolicy.model_validate(data)


def due_patches(db: duckdb.DuckDBPyConnection, policy: SlaPolicy, events: str = "events") -> pa.Table:
    """(complaint_id, complaint_version, patch): the SLA fields each Triaged,
    ContactRecorded and CustomerReplied event would have recorded under `policy`.

    Each complaint's history is folded through the domain's `SlaClock`, event by event,
    as the `Complaint` aggregate takes the same steps when the commands arrive."""
    rows = db.execute(
        f"""SELECT complaint_id::VARCHAR, complaint_version, event_type, occurred_at,
                   payload->>'severity', payload->>'category', payload->>'direction',
                   payload->>'visibility'
            FROM {events}
            WHERE event_type IN ('Registered', 'Triaged', 'WaitingOnCustomer', 'CustomerReplied',
                                 'ContactRecorded', 'ResolutionProposed', 'Resolved')
            ORDER BY complaint_id, complaint_version"""
    ).fetchall()
    ids: list[str] = []
    versions: list[int] = []
    patches: list[str] = []
    clocks: dict[str, SlaClock] = {}
    for cid, version, kind, at, severity, category, direction, visibility in rows:
        if at not in WINDOW:
            continue  # outside the window of instants an event is poison: in no read model
        if kind == "Registered":
            clocks[cid] = SlaClock(registered_at=at)
            continue
        clock = clocks.get(cid)
        if clock is None:
            continue  # no registration seen: nothing to recompute
        if kind == "Triaged":
            clock = clock.triaged(policy, severity, category)
        elif kind == "WaitingOnCustomer":
            clock = clock.waiting(at)
        elif kind == "CustomerReplied":
            clock = clock.customer_replied(policy, at)
        elif kind == "ContactRecorded":
            clock = clock.contact(policy, direction, visibility, at)
        else:  # ResolutionProposed, Resolved
            clock = clock.answered()
        clocks[cid] = clock
        if kind in RECORDED:
            ids.append(cid)
            versions.append(version)
            patches.append(_json({k: v.isoformat() if isinstance(v, datetime) else v
                                  for k, v in clock.recorded(kind).items()}))
    return pa.table({"complaint_id": ids, "complaint_version": pa.array(versions, pa.int32()),
                     "patch": patches})


def _json(patch: dict[str, Any]) -> str:
    return json.dumps(patch)


def what_if(
    policy: SlaPolicy,
    out: str | Path,
    *,
    read_db: str | Path | None = None,
    load_events: Callable[[duckdb.DuckDBPyConnection], Any] | None = None,
    actual_policy: SlaPolicy | None = None,
    now: datetime | None = None,
    by: str | None = "severity",
    progress: bool = True,
) -> WhatIfReport:
    """Recompute the SLA read model under `policy` into `out`, beside the actual one.

    Events come from a read node's file (`read_db`, opened read-only) or from
    `load_events(db)`, which fills the new file's empty `events` table (the composition
    root passes one reading the event store). `now` (default: the last event's time) judges the
    clocks still running in both.
    """
    started = time.perf_counter()
    out = Path(out)
    for stale in (out, Path(f"{out}.wal")):
        stale.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    actual_policy = actual_policy or default_policy()
    other = renamed(policy)
    db = duckdb.connect(str(out))
    try:
        db.execute("SET TimeZone = 'UTC'")
        EventLog().create_schema(db)
        steps = tqdm(total=4, desc="what-if", unit="step", disable=not progress)
        if load_events is not None:
            load_events(db)
        elif read_db is not None:
            db.execute(f"ATTACH '{read_db}' AS live (READ_ONLY)")
            db.execute("INSERT INTO events SELECT * FROM live.main.events")
            db.execute("DETACH live")
        else:
            raise ValueError("what_if needs read_db (a read node's file) or load_events (from the event store)")
        steps.update(1)
        db.register("due_patches", due_patches(db, other))
        db.execute(
            """CREATE TABLE whatif_events AS
               SELECT e.* REPLACE (coalesce(json_merge_patch(e.payload, p.patch::JSON), e.payload) AS payload)
               FROM events e LEFT JOIN due_patches p
                 ON p.complaint_id::UUID = e.complaint_id AND p.complaint_version = e.complaint_version"""
        )
        db.unregister("due_patches")
        steps.update(1)
        for projector, scope in ((SlaProjector(other), Scope(events="whatif_events")),
                                 (SlaProjector(actual_policy), Scope(events="events", prefix=ACTUAL))):
            projector.create_schema(db, scope)
            projector.prepare(db, scope.events)
            try:
                projector.build(db, scope)
            finally:
                scope.release(db)
            steps.update(1)
        steps.close()
        count, last = db.execute("SELECT count(*), max(occurred_at) FROM events").fetchone()  # type: ignore[misc]
        now = now or last
        rows = compare(db, other, actual_policy, now, by)
    finally:
        db.close()
    report = WhatIfReport(out, policy.version, actual_policy.version, now, int(count),
                          time.perf_counter() - started, rows)
    log.info("what-if %s: %d events in %.1fs -> %s", policy.version, count, report.seconds, out)
    return report


def compare(db: duckdb.DuckDBPyConnection, other: SlaPolicy, actual_policy: SlaPolicy,
            now: datetime, by: str | None) -> list[dict[str, Any]]:
    """Attainment per metric (and per `by` group): the actual beside the what-if."""
    rows: list[dict[str, Any]] = []
    for key_by in (None, by) if by else (None,):
        with queries.view(db, now=now, policy=actual_policy, prefix=ACTUAL) as v:
            actual = {(r["metric"], r["key"]): r for r in queries._sla_attainment(v, key_by)}
        with queries.view(db, now=now, policy=other) as v:
            imagined = {(r["metric"], r["key"]): r for r in queries._sla_attainment(v, key_by)}
        for metric, key in sorted(actual.keys() | imagined.keys(), key=lambda k: (k[0], str(k[1]))):
            a, w = actual.get((metric, key), {}), imagined.get((metric, key), {})
            rows.append({
                "metric": metric, "by": key_by, "key": key,
                "actual_met": a.get("met", 0), "actual_counted": a.get("counted", 0), "actual": a.get("attainment"),
                "what_if_met": w.get("met", 0), "what_if_counted": w.get("counted", 0), "what_if": w.get("attainment"),
            })
    return rows
