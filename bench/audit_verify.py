"""Audit chain verification (issue 13): `complaints audit verify`'s rate over SQLite, beside
the raw ceilings measured in the same run.

    python -m bench.audit_verify --help
    python -m bench.audit_verify                     # 300k events, figures to stdout
    python -m bench.audit_verify --events 1000000

1. The event store: a SQLite file of about `--events` events made once through the real
   desk (`open_desk`: its mapper seals personal data and stamps every event's chain link),
   demo lives (registrations over a year, triage, assignment, contacts, waits, resolutions,
   ratings...) saved in bulk, 1,000 complaints a transaction; kept under var/bench with its
   keys beside it (`<store>.chain.key`, `<store>.master.key`) and reused.
2. A signed checkpoint every 1,000 events, made afresh by `consumers.checkpoints.Checkpointer`
   over the store (timed: the checkpointer's own rate).
3. Each measurement `--runs` times, the best run reported (the machine is shared):
   - read: `audit_chain.log_rows` alone (the rows as plain tuples, batches of 20,000);
   - read, NotificationRows (the relay's reader: plain tuples since the note in docs/benchmarks.md);
   - hash: over the rows in memory, one HMAC-SHA256 of the link's message and one SHA-256
     of the global chain per event, nothing else (the cryptography's ceiling): with
     `hmac.digest`, and with the key's pads hashed once (`hashlib` copies, as verify does:
     OpenSSL 3 looks the digest up on every `hmac.digest` call);
   - verify, rows in memory: `audit_chain.verify` without the reading;
   - verify: `verify(log_rows(recorder), key, checkpoints, public_key)`: what the command does;
   - the command: `complaints audit verify` in a process of its own (its start included).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"


def settings_for(store: Path) -> Any:
    from complaints.settings import Settings

    return Settings(store="sqlite", sqlite_path=store, aggregate_cache_size=0,
                    chain_key=store.with_suffix(".chain.key"), master_key=store.with_suffix(".master.key"),
                    audit_checkpoints=store.with_suffix(".checkpoints.jsonl"),
                    audit_signing_key=store.with_suffix(".signing.key"))


def ensure_store(path: Path, events: int) -> float:
    """A SQLite store of about `events` events through the desk (once, as `bench.read_models`
    makes its store), chained with its own key; seconds spent."""
    from bench.read_models import ensure_store as make_store

    return make_store(path, events, settings_for(path))


def best(runs: int, measure: Callable[[], int]) -> tuple[int, float, float]:
    """(events, wall seconds, CPU seconds) of the fastest of `runs` runs (by CPU time: this
    process's, and its children's for a subprocess)."""
    results = []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), _cpu()
        events = measure()
        results.append((events, time.perf_counter() - wall, _cpu() - cpu))
    return min(results, key=lambda r: r[2])


def _cpu() -> float:
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000, help="events in the store (default 300,000)")
    parser.add_argument("--store", type=Path, help="the SQLite store (default var/bench/audit-<events>.sqlite)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement; the best is reported")
    parser.add_argument("--no-command", action="store_true", help="leave out the `complaints audit verify` run")
    args = parser.parse_args()

    from complaints.store import open_store
    from consumers.audit_chain import GENESIS, log_rows, verify
    from consumers.checkpoints import Checkpointer, read_checkpoints, signing_key_from
    from consumers.stored_events import NotificationRows

    store = args.store or VAR / f"audit-{args.events // 1000}k.sqlite"
    built = ensure_store(store, args.events)
    settings = settings_for(store)
    key = settings.chain_key.read_bytes()
    events_store = open_store(settings)
    recorder = events_store.recorder

    # Checkpoints: made afresh (timed) every run.
    checkpoints_file = settings.audit_checkpoints_file()
    checkpoints_file.unlink(missing_ok=True)
    seed_path = settings.audit_signing_key
    from complaints.keys import load_or_create_key

    signing = signing_key_from(load_or_create_key(seed_path))
    checkpointer = Checkpointer(recorder, checkpoints_file, signing, every=1000, idle_seconds=0)
    started, cpu_started = time.perf_counter(), _cpu()
    checkpointer.open()
    hashed_from = checkpointer.events
    while checkpointer.step():
        pass
    checkpointer.close()
    checkpoint_seconds, checkpoint_cpu = time.perf_counter() - started, _cpu() - cpu_started
    checkpoint_events = checkpointer.events - hashed_from
    checkpoints = read_checkpoints(checkpoints_file)
    public = signing.public_key()

    def read_tuples() -> int:
        return sum(1 for _ in log_rows(recorder))

    def read_notification_rows() -> int:
        n, after = 0, 0
        read = NotificationRows(recorder)
        while rows := read(after, 20_000):
            for _position, _oid, _version, _topic, _state in rows:
                n += 1
            after = rows[-1][0]
        return n

    rows = list(log_rows(recorder))
    total = len(rows)

    def hash_only() -> int:
        digest, sha256, g, some_id = hmac.digest, hashlib.sha256, GENESIS, bytes(16)
        topics: dict[str, bytes] = {}
        for position, _oid, version, topic, state in rows:  # the same bytes as a link's message
            tz = topics.get(topic) or topics.setdefault(topic, topic.encode() + b"\0")
            d = digest(key, b"".join((g, some_id, version.to_bytes(8, "big"), tz, state[:-76], b"}")), "sha256")
            g = sha256(g + position.to_bytes(8, "big") + d).digest()
        return total

    def hash_pads() -> int:
        from consumers.audit_chain import _hmac_pads

        inner, outer = _hmac_pads(key)
        sha256, g, some_id = hashlib.sha256, GENESIS, bytes(16)
        topics: dict[str, bytes] = {}
        for position, _oid, version, topic, state in rows:
            tz = topics.get(topic) or topics.setdefault(topic, topic.encode() + b"\0")
            h = inner()
            h.update(b"".join((g, some_id, version.to_bytes(8, "big"), tz, state[:-76], b"}")))
            o = outer()
            o.update(h.digest())
            g = sha256(g + position.to_bytes(8, "big") + o.digest()).digest()
        return total

    def verify_memory() -> int:
        report = verify(rows, key, checkpoints, public)
        assert report.ok, report.summary()
        return report.events

    def verify_store() -> int:
        report = verify(log_rows(recorder), key, checkpoints, public)
        assert report.ok, report.summary()
        return report.events

    command_own: list[tuple[float, str]] = []

    def command() -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")}
        env.update(COMPLAINTS_STORE="sqlite", COMPLAINTS_SQLITE_PATH=str(store),
                   COMPLAINTS_CHAIN_KEY=str(settings.chain_key), COMPLAINTS_MASTER_KEY=str(settings.master_key),
                   COMPLAINTS_AUDIT_CHECKPOINTS=str(checkpoints_file),
                   COMPLAINTS_AUDIT_SIGNING_KEY=str(settings.audit_signing_key))
        done = subprocess.run([sys.executable, "-m", "complaints.cli", "audit", "verify", "--no-progress"],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        own = re.search(r"\(([0-9.]+)s; ([0-9,]+) events/s\)", done.stdout)
        if own:
            command_own.append((float(own[1]), own[2]))
        return total

    measurements: list[tuple[str, Callable[[], int]]] = [
        ("read: log_rows (plain tuples)", read_tuples),
        ("read: NotificationRows (the relay's reader)", read_notification_rows),
        ("hash: hmac.digest + one SHA-256 per event, rows in memory", hash_only),
        ("hash: HMAC from precomputed pads (as verify does) + one SHA-256, rows in memory", hash_pads),
        ("verify, rows in memory", verify_memory),
        ("verify: log_rows -> verify (what the command does)", verify_store),
    ]
    if not args.no_command:
        measurements.append(("`complaints audit verify` process, start included", command))
    results = []
    for name, measure in tqdm(measurements, desc="measuring", unit="measurement", file=sys.stderr):
        results.append((name, *best(args.runs, measure)))
    events_store.close()

    load = os.getloadavg()[0]
    print(f"store {store} ({total:,} events, {len(checkpoints)} checkpoints; built in {built:.0f}s)"
          if built else f"store {store} ({total:,} events, {len(checkpoints)} checkpoints)")
    print(f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, load average {load:.1f}")
    if checkpoint_events:
        print(f"checkpointer: {checkpoint_events:,} events in {checkpoint_seconds:.2f}s ="
              f" {checkpoint_events / checkpoint_seconds:,.0f} events/s (CPU {checkpoint_cpu:.2f}s ="
              f" {checkpoint_events / checkpoint_cpu:,.0f} events/s)")
    print("| measurement | events/s (wall) | events/s (CPU) | CPU µs/event | wall seconds |")
    print("|---|---|---|---|---|")
    for name, n, wall, cpu in results:
        print(f"| {name} | {n / wall:,.0f} | {n / cpu:,.0f} | {cpu / n * 1e6:.2f} | {wall:.2f} |")
    if command_own:
        seconds, rate = min(command_own)
        print(f"the command's own figure (reading and verifying, its start excluded), best run: {seconds:.2f}s,"
              f" {rate} events/s")


if __name__ == "__main__":
    main()
