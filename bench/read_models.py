"""Read models (issue 4): batched apply, the bulk-insert ceiling, rebuild, one-at-a-time.

    python -m bench.read_models --help
    python -m bench.read_models                       # 1M events, figures to stdout
    python -m bench.read_models --write-docs          # ... and into docs/benchmarks.md

1. The event store: a SQLite file of `--events` Complaint events, made once by the real
   domain (demo lives: registrations over a year, triage, assignment, contacts, waits,
   reassignments, resolutions, ratings, reopenings; saved in bulk) and kept under var/bench.
2. Rebuild: `consumers.rebuild.rebuild` from that store into a fresh DuckDB file, in a
   child process so its peak memory (ru_maxrss) is its own.
3. Batched apply: the same events, in position order, in batches of `--batch`, applied the
   way the consumer runner does (one transaction: new rows into `events`, the four read
   models from those rows) into a fresh file; beside it, DuckDB's own bulk insert of the
   same batches into a plain table (the ceiling), and of all rows at once.
4. One at a time, as eventsourcing's ProjectionRunner processes events (its runner needs a
   subscription, which the SQLite recorder does not offer, so the loop is written out):
   each notification decoded by the application's mapper into a domain event, then one
   DuckDB transaction per event upserting the complaint's view row and the tracking row.
   Run on the first `--one-at-a-time` events and extrapolated to all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Read models (issue 4)"


# ------------------------------------------------------------------------------ the store
def ensure_store(path: Path, events: int, settings: Any = None) -> float:
    """Make a SQLite event store of about `events` events (once), through the desk in bulk
    saves of the demo's complaints, with `settings` (default: no aggregate cache) but for
    the file; returns seconds spent."""
    if path.exists():
        return 0.0
    from tqdm import tqdm

    from aggregates.complaint import Complaint, Meta
    from commands.demo import demo_commands
    from commands.models import COMPLAINT_COMMANDS, RegisterComplaint
    from complaints.settings import Settings
    from complaints.store import open_desk

    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    settings = settings or Settings(store="sqlite", aggregate_cache_size=0)
    desk = open_desk(settings.model_copy(update={"sqlite_path": tmp}))
    end = datetime(2026, 11, 20, tzinfo=UTC)
    written, seed = 0, 1000
    with tqdm(total=events, desc="store: events through the desk", unit="ev", unit_scale=True,
              file=sys.stderr) as bar:
        while written < events:
            lives: dict[str, Complaint] = {}
            touched: dict[int, Complaint] = {}
            for kind, fields in demo_commands(2000, end, days=365, seed=seed):
                fields = dict(fields)
                key = fields.pop("complaint_command_id", None)
                actor = fields.pop("actor")
                if kind == "register":
                    command: Any = RegisterComplaint.model_validate(fields)
                    meta = Meta(actor, command.occurred_at, command.command_id, command.command_id)
                    complaint = lives[command.command_id] = Complaint(**command.event_fields(), **meta.fields())
                else:
                    command = COMPLAINT_COMMANDS[kind].model_validate(fields)
                    complaint = lives[key]
                    command.carry_out(complaint, Meta(actor, command.occurred_at, command.command_id,
                                                      command.command_id), desk.sla_policy, desk.field_definitions)
                touched[id(complaint)] = complaint
                if len(touched) >= 1000:
                    written += _save(desk, touched, bar)
            written += _save(desk, touched, bar)
            seed += 1
    desk.close()
    os.replace(tmp, path)
    return time.perf_counter() - started


def _save(desk: Any, touched: dict[int, Any], bar: Any) -> int:
    """Save the touched complaints in one transaction; the events saved."""
    count = sum(len(c.pending_events) for c in touched.values())
    desk.save(*touched.values())
    touched.clear()
    bar.update(count)
    return count


# ------------------------------------------------------------------------------ rebuild
def rebuild_child(store: Path, out: Path) -> dict[str, Any]:
    """In this (child) process: rebuild from the store; report time, phases, memory."""
    from complaints.settings import Settings
    from complaints.store import open_store
    from consumers.rebuild import rebuild

    events = open_store(Settings(store="sqlite", sqlite_path=store))
    shutil.rmtree(out.parent, ignore_errors=True)
    report = rebuild(out, events, progress=False)
    return {"seconds": report.seconds, "phases": report.phases, "events": report.events,
            "complaints": report.complaints,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_rebuild(store: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.read_models", "--rebuild-child", str(store), str(out)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ batched apply
def measure_batched(source: Path, events: int, batch: int, work: Path) -> dict[str, Any]:
    """The runner's path, batch by batch, beside DuckDB's bulk insert of the same batches."""
    import duckdb
    import pyarrow as pa

    from projections.event_log import EventLog, as_batch
    from projections.models import make

    src = duckdb.connect(str(source), read_only=True)
    batches = [as_batch(b) for b in EventLog.read_batches(src, batch)]
    src.close()
    total = 0
    kept = []
    for b in batches:
        if total >= events:
            break
        kept.append(b)
        total += b.num_rows
    batches = kept
    target = work / "apply.duckdb"
    for stale in (target, Path(f"{target}.wal")):
        stale.unlink(missing_ok=True)
    db = duckdb.connect(str(target))
    db.execute("SET TimeZone = 'UTC'")
    log, models = EventLog(), make()
    log.create_schema(db)
    for p in models:
        p.create_schema(db)
    split = {"events table": 0.0, **{p.name: 0.0 for p in models}}
    started = time.perf_counter()
    for b in batches:
        db.execute("BEGIN")
        t = time.perf_counter()
        new = log.insert_new(db, b)
        split["events table"] += time.perf_counter() - t
        for p in models:
            t = time.perf_counter()
            p.apply(db, new)
            split[p.name] += time.perf_counter() - t
        db.execute("COMMIT")
    applied = time.perf_counter() - started
    db.close()

    ceiling = duckdb.connect(str(work / "ceiling.duckdb"))
    per_batch = insert_batches(ceiling, batches)
    ceiling.register("everything", pa.concat_tables(batches))
    ceiling.execute("CREATE OR REPLACE TABLE copy2 AS SELECT * FROM everything LIMIT 0")
    t = time.perf_counter()
    ceiling.execute("INSERT INTO copy2 SELECT * FROM everything")
    at_once = time.perf_counter() - t
    ceiling.unregister("everything")
    ceiling.close()
    return {"events": total, "batch": batch, "batches": len(batches), "seconds": applied,
            "events_per_s": total / applied, "split": split,
            "ceiling_batches_seconds": per_batch, "ceiling_batches_per_s": total / per_batch,
            "ceiling_once_seconds": at_once, "ceiling_once_per_s": total / at_once}


def insert_batches(db: Any, batches: list[Any]) -> float:
    """The ceiling: seconds DuckDB takes to insert `batches` (Arrow tables of one schema) into
    a plain table, a transaction each."""
    db.register("first", batches[0])
    db.execute("CREATE OR REPLACE TABLE copy AS SELECT * FROM first LIMIT 0")
    db.unregister("first")
    started = time.perf_counter()
    for batch in batches:
        db.register("b", batch)
        db.execute("BEGIN")
        db.execute("INSERT INTO copy SELECT * FROM b")
        db.execute("COMMIT")
        db.unregister("b")
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ one at a time
def measure_one_at_a_time(store: Path, events: int, total: int, work: Path) -> dict[str, Any]:
    """eventsourcing's way: decode each event with the mapper, one transaction per event."""
    import duckdb
    from eventsourcing.persistence import Tracking

    from complaints.settings import Settings
    from complaints.store import open_desk

    desk = open_desk(Settings(store="sqlite", sqlite_path=store))
    target = work / "one-at-a-time.duckdb"
    for stale in (target, Path(f"{target}.wal")):
        stale.unlink(missing_ok=True)
    db = duckdb.connect(str(target))
    db.execute("""CREATE TABLE view (complaint_id UUID PRIMARY KEY, version INTEGER, status VARCHAR,
                  team VARCHAR, agent VARCHAR, category VARCHAR, severity VARCHAR, updated_at TIMESTAMPTZ)""")
    db.execute("CREATE TABLE tracking (application_name VARCHAR PRIMARY KEY, notification_id BIGINT)")
    statuses = {"Registered": "received", "Triaged": "triaged", "Assigned": "assigned",
                "WaitingOnCustomer": "waiting_on_customer", "ResolutionProposed": "resolution_proposed",
                "Resolved": "resolved", "Verified": "verified", "Closed": "closed", "Reopened": "assigned",
                "Withdrawn": "withdrawn", "MarkedDuplicate": "duplicate"}
    started = time.perf_counter()
    done, start = 0, 1
    while done < events:
        page = desk.recorder.select_notifications(start, min(500, events - done))
        if not page:
            break
        for notification in page:
            event = desk.mapper.to_domain_event(notification)  # eventsourcing's own decoding
            tracking = Tracking(desk.name, notification.id)
            name = type(event).__name__
            db.execute("BEGIN")
            db.execute(
                """INSERT INTO view VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (complaint_id) DO UPDATE SET version = excluded.version,
                     status = coalesce(excluded.status, view.status), team = coalesce(excluded.team, view.team),
                     agent = coalesce(excluded.agent, view.agent), category = coalesce(excluded.category, view.category),
                     severity = coalesce(excluded.severity, view.severity), updated_at = excluded.updated_at""",
                [str(event.originator_id), event.originator_version, statuses.get(name),
                 getattr(event, "team", None), getattr(event, "agent", None), getattr(event, "category", None),
                 getattr(event, "severity", None), event.occurred_at],
            )
            db.execute("INSERT OR REPLACE INTO tracking VALUES (?, ?)",
                       [tracking.application_name, tracking.notification_id])
            db.execute("COMMIT")
            done += 1
        start = page[-1].id + 1
    seconds = time.perf_counter() - started
    db.close()
    desk.close()
    return {"events": done, "seconds": seconds, "events_per_s": done / seconds,
            "extrapolated_seconds": total / (done / seconds), "extrapolated_to": total}


# ------------------------------------------------------------------------------ report
def markdown(r: dict[str, Any]) -> str:
    b, rb, one = r["batched"], r["rebuild"], r["one_at_a_time"]
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in rb["phases"].items())
    split = ", ".join(f"{k} {v:.1f} s" for k, v in b["split"].items())
    return f"""{SECTION}

Measured {r['when']} on {r['machine']} (load average {r['load']}: the machine is shared,
figures move with it; the ratios in the same run are the point). Command:
`{r['command']}`. Store: {rb['events']:,} Complaint events of {rb['complaints']:,} complaints in
SQLite (`var/bench/`, made once through the domain).

| what | events | time | events/s |
|---|---:|---:|---:|
| rebuild from the event store (read + all four read models), fresh file + swap | {rb['events']:,} | {rb['seconds']:.1f} s | {rb['events'] / rb['seconds']:,.0f} |
| applied in batches of {b['batch']:,} through the runner's path (events table + facts, sla, workload, trends) | {b['events']:,} | {b['seconds']:.1f} s | {b['events_per_s']:,.0f} |
| DuckDB's own bulk insert of the same batches, plain table (the ceiling) | {b['events']:,} | {b['ceiling_batches_seconds']:.1f} s | {b['ceiling_batches_per_s']:,.0f} |
| DuckDB's own bulk insert of all those rows at once | {b['events']:,} | {b['ceiling_once_seconds']:.1f} s | {b['ceiling_once_per_s']:,.0f} |
| one event at a time, eventsourcing's ProjectionRunner way (mapper decode + one transaction per event), on the first {one['events']:,} | {one['events']:,} | {one['seconds']:.1f} s | {one['events_per_s']:,.0f} |
| ... extrapolated to the whole store | {one['extrapolated_to']:,} | {one['extrapolated_seconds'] / 60:.0f} min | {one['events_per_s']:,.0f} |

- Rebuild phases: {phases}. Peak memory of the rebuild process (ru_maxrss): {rb['max_rss_mb']:,.0f} MB.
- Batched apply, time per step: {split}. The first projector of a batch ("facts") also pays
  for the work the four share: reading the touched complaints' whole history from `events`
  and parsing it once. Every batch recomputes those complaints set-based (DELETE +
  INSERT ... SELECT); the fixed cost per batch (query planning) is amortised by larger
  batches, and the history read is a scan of `events` (DuckDB has no late materialisation
  for a semi-join), so the cost per batch grows with the size of `events`.
- The one-at-a-time figure is measured, not assumed, on a subset ({one['events']:,} events) and
  extrapolated linearly; it only upserts one view row per event, far less than the read
  models here compute.
"""


def write_docs(text: str) -> None:
    current = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        current = pattern.sub(text.rstrip() + "\n\n", current)
    else:
        current = current.rstrip() + "\n\n" + text.rstrip() + "\n"
    DOCS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the store (default 1M)")
    parser.add_argument("--batch", type=int, default=5_000, help="events per batch for the batched apply")
    parser.add_argument("--apply-events", type=int, default=None, help="events for the batched apply (default all)")
    parser.add_argument("--one-at-a-time", type=int, default=5_000, help="events for the one-at-a-time run")
    parser.add_argument("--store", type=Path, default=None, help="the SQLite store (default var/bench/store-<N>.sqlite)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--write-docs", action="store_true", help="write the section into docs/benchmarks.md")
    parser.add_argument("--render", type=Path, default=None,
                        help="only render a JSON result of an earlier run (with --write-docs: into the docs)")
    parser.add_argument("--rebuild-child", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        text = markdown(json.loads(args.render.read_text()))
        print(text)
        if args.write_docs:
            write_docs(text)
        return
    if args.rebuild_child:
        print(json.dumps(rebuild_child(Path(args.rebuild_child[0]), Path(args.rebuild_child[1]))))
        return

    store = args.store or VAR / f"store-{args.events}.sqlite"
    work = VAR / "read-models"
    work.mkdir(parents=True, exist_ok=True)
    made = ensure_store(store, args.events)
    if made:
        print(f"made the store in {made:.0f}s", file=sys.stderr)
    print("rebuild ...", file=sys.stderr, flush=True)
    rebuilt = measure_rebuild(store, work / "rebuilt" / "read.duckdb")
    print(f"  {rebuilt}", file=sys.stderr)
    print("batched apply ...", file=sys.stderr, flush=True)
    batched = measure_batched(work / "rebuilt" / "read.duckdb", args.apply_events or rebuilt["events"],
                              args.batch, work)
    print(f"  {batched}", file=sys.stderr)
    print("one at a time ...", file=sys.stderr, flush=True)
    one = measure_one_at_a_time(store, args.one_at_a_time, rebuilt["events"], work)
    print(f"  {one}", file=sys.stderr)
    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "python -m bench.read_models " + " ".join(sys.argv[1:]),
        "rebuild": rebuilt, "batched": batched, "one_at_a_time": one,
    }
    text = markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.write_docs:
        write_docs(text)
        print(f"written to {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
