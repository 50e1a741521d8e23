"""The event backbone against a real broker, each figure beside kafka-python doing the same work.

    python -m bench.backbone --help

- relay: `Relay` publishing a SQLite event store of demo events into a fresh topic,
  against kafka-python's raw producer (same producer settings) sending the same
  envelopes (bytes prepared beforehand) with the same keys into another fresh topic.
- consumer: a read node (Kafka source, the event log projector: decode, dedupe, bulk
  insert, positions, one DuckDB transaction per batch) reading that topic into a fresh
  DuckDB file, against kafka-python's raw consumer reading the same topic with the same
  fetch settings and touching every value.
- freshness: `complaints relay` and `complaints read-node` as processes; this process
  sends demo commands through `ComplaintDesk` at a steady rate; per event, the time from
  the command being accepted to its row being inserted in DuckDB `events` (`applied_at`,
  taken just before the batch's commit).

Rounds run raw then ours; medians and the median per-round ratio are reported. Results go to stdout as
markdown (and JSON with --json); --markdown FILE replaces this benchmark's section there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from commands.demo import demo_commands, load_demo
from complaints.store import open_desk
from commands.desk import ComplaintDesk
from aggregates.access import Principal
from commands.models import COMPLAINT_COMMANDS, RegisterComplaint
from complaints.settings import Settings
from consumers.stored_events import is_published, wire_encoder
from consumers.relay import Relay, ensure_topics, make_producer
from consumers.read_node import ReadNode
from consumers.sources import KafkaSource

ROOT = Path(__file__).resolve().parent.parent
CONSUMER_BATCH = Settings.model_fields["consumer_batch_size"].default
SECTION = "## Event backbone (issue 3)"


def fresh_topic(bootstrap: str, partitions: int) -> str:
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    ensure_topics(bootstrap, topic, partitions)
    return topic


def relay_rate(app: ComplaintDesk, bootstrap: str, partitions: int) -> tuple[float, str]:
    """Events/s of the relay from position 0 to the end of the store; returns the topic too."""
    topic = fresh_topic(bootstrap, partitions)
    relay = Relay(app.recorder, app.mapper, app.factory.tracking_recorder(), lambda: make_producer(bootstrap), topic)
    relay.producer = make_producer(bootstrap)  # connected before the clock starts, as the raw one
    relay.producer.partitions_for(topic)
    start = time.perf_counter()
    relay.catch_up()
    elapsed = time.perf_counter() - start
    relay.drop_producer()
    return relay.published / elapsed, topic


def raw_produce_rate(messages: list[tuple[bytes, bytes]], bootstrap: str, partitions: int) -> float:
    topic = fresh_topic(bootstrap, partitions)
    producer = make_producer(bootstrap)
    producer.partitions_for(topic)
    start = time.perf_counter()
    futures = [producer.send(topic, key=key, value=value) for key, value in messages]
    producer.flush()
    for future in futures:
        future.get()
    elapsed = time.perf_counter() - start
    producer.close()
    return len(messages) / elapsed


def read_node_rate(bootstrap: str, topic: str, expected: int, workdir: Path) -> float:
    db_path = workdir / f"consume-{uuid.uuid4().hex[:6]}.duckdb"
    source = KafkaSource(bootstrap, topic)
    with ReadNode(db_path, source, batch_size=CONSUMER_BATCH) as node:
        start = time.perf_counter()
        node.catch_up()
        elapsed = time.perf_counter() - start
        assert node.count_events() == expected, (node.count_events(), expected)
    return expected / elapsed


def raw_consume_rate(bootstrap: str, topic: str, expected: int) -> float:
    source = KafkaSource(bootstrap, topic, prefetch=False)  # the read node's consumer settings
    source.start({})
    consumer = source.consumer
    start = time.perf_counter()
    count = size = 0
    while count < expected:
        for records in consumer.poll(timeout_ms=100, max_records=CONSUMER_BATCH).values():
            for record in records:
                count += 1
                size += len(record.value)
    elapsed = time.perf_counter() - start
    source.close()
    return count / elapsed


def freshness(bootstrap: str, rate: float, seconds: float, workdir: Path) -> dict[str, Any]:
    """Command accepted -> row in DuckDB `events`, at a steady command rate, real processes."""
    store = workdir / "fresh.sqlite"
    read_db = workdir / "fresh.duckdb"
    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")} | {
        "COMPLAINTS_STORE": "sqlite", "COMPLAINTS_SQLITE_PATH": str(store), "COMPLAINTS_READ_DB": str(read_db),
        "COMPLAINTS_KAFKA_BOOTSTRAP": bootstrap, "COMPLAINTS_TOPIC": topic, "PYTHONUNBUFFERED": "1",
    }
    app = open_desk(Settings(store="sqlite", sqlite_path=store))
    app.recorder.max_notification_id()  # tables exist before the relay looks
    logs = {name: open(workdir / f"{name}.log", "wb") for name in ("relay", "read-node")}
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "complaints.cli", name], cwd=ROOT, env=env,
                               stdout=logs[name], stderr=subprocess.STDOUT)
        for name in ("relay", "read-node")
    }
    try:
        _wait_for_text(workdir / "relay.log", "relay to topic", procs["relay"])
        _wait_for_text(workdir / "read-node.log", "read node", procs["read-node"])
        total = int(rate * seconds)
        commands = list(demo_commands(max(10, total // 7), datetime.now(UTC), seed=17))[:total]
        accepted: dict[tuple[str, int], float] = {}
        ids: dict[str, uuid.UUID] = {}
        behind = 0.0
        start = time.perf_counter()
        for n, (path, fields) in enumerate(commands):
            due = start + n / rate
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            else:
                behind = max(behind, -wait)
            fields = dict(fields)
            actor = Principal(fields.pop("actor"), "bench", frozenset({"importer"}))  # the demo states its times
            if path == "register":
                result = app.register(RegisterComplaint.model_validate(fields), actor)
                ids[fields["command_id"]] = result.complaint_id
            else:
                result = app.execute(ids[fields.pop("complaint_command_id")],
                                     COMPLAINT_COMMANDS[path].model_validate(fields), actor)
            accepted[(str(result.complaint_id), result.version)] = time.time()
        sent_for = time.perf_counter() - start
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = _status(read_db)
            if status.get("events") == len(accepted):
                break
            time.sleep(0.5)
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=60)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for handle in logs.values():
            handle.close()
        app.close()
    import duckdb

    with duckdb.connect(str(read_db), read_only=True) as db:
        rows = db.execute("SELECT complaint_id::VARCHAR, complaint_version, epoch(applied_at) FROM events").fetchall()
    latencies = sorted((applied - accepted[(cid, version)]) * 1000 for cid, version, applied in rows
                       if (cid, version) in accepted)
    assert len(latencies) == len(accepted), f"{len(accepted) - len(latencies)} events never arrived"
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "commands": len(accepted), "target_rate": rate, "achieved_rate": round(len(accepted) / sent_for, 1),
        "max_behind_schedule_ms": round(behind * 1000, 1),
        "p50_ms": round(quantiles[49], 1), "p99_ms": round(quantiles[98], 1), "max_ms": round(latencies[-1], 1),
    }


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{path.name}: exited {proc.returncode}:\n{path.read_text(errors='replace')}")
        time.sleep(0.1)
    raise RuntimeError(f"{path.name}: no {text!r} within {timeout}s")


def _status(read_db: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(str(read_db) + ".status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def markdown(results: dict[str, Any], command: str) -> str:
    r, c, f = results["relay"], results["consumer"], results.get("freshness")
    lines = [
        SECTION, "",
        f"`{command}` on {results['machine']}, Kafka {results['kafka']} (single node, scripts/kafka), "
        f"{results['events']} demo events of {results['avg_bytes']} bytes on average, "
        f"{results['partitions']} partitions, {results['rounds']} rounds (raw, then ours); medians, and the median "
        "of the per-round ratios. The topic is large enough for steady state: over ~30k events the raw "
        "consumer finishes in 0.2-0.35 s, most of it waiting for its first fetch, so its figure there "
        "measures that wait (it swung 85k-160k msg/s between runs), not throughput.", "",
        "| path | ours (events/s) | kafka-python raw (msg/s) | ours / raw |",
        "|---|---|---|---|",
        f"| relay: event store -> Kafka (acks=all, idempotent) | {r['ours']:,.0f} | {r['raw']:,.0f} | {r['ratio']:.0%} |",
        f"| read node: Kafka -> DuckDB `events` | {c['ours']:,.0f} | {c['raw']:,.0f} | {c['ratio']:.0%} |",
        "",
        f"Per round, relay {r['runs']} vs raw {r['raw_runs']}; read node {c['runs']} vs raw {c['raw_runs']}.", "",
    ]
    if f:
        lines += [
            f"Freshness, command accepted -> row in DuckDB `events` (relay and read node as processes, "
            f"{f['commands']} commands at {f['target_rate']:.0f}/s, achieved {f['achieved_rate']:.0f}/s): "
            f"**p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms**, max {f['max_ms']} ms.", "",
        ]
    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    lines += [
        f"Aims of issue 3: relay >= 80% of raw: {verdict(r['ratio'] >= 0.8)}; read node >= 80% of raw: "
        f"{verdict(c['ratio'] >= 0.8)}"
        + (f"; freshness p99 <= 500 ms: {verdict(f['p99_ms'] <= 500)}." if f else "."), "",
        *([f"Load average (1 min) at the start and end of the run: {results['load'][0]:.2f}, "
            f"{results['load'][1]:.2f} (the 2 cores are shared with other work: figures are noisy, the "
            "per-round ratio is what counts).", ""] if results.get("load") else []),
        "Where the time goes (profiled separately, per event, on the same machine): kafka-python's "
        "`send` costs about 25-30 us a message; the relay adds ~5 us: reading the event store's rows as "
        "plain tuples (~1.5 us, not Notification objects) and splicing the envelope out of the stored "
        "JSON text (~3 us, no decoding), with each complaint's key and murmur2 partition computed once. "
        "The raw consumer only iterates records (~10 us a message in kafka-python, `crc32c` installed). "
        "The read node's thread polls the same way (in chunks of 2,000, merged into one batch when "
        "the runner is busy) while the runner decodes the previous batch in DuckDB: one JSON parse per "
        "message, the message compared with its fields written back, one regular expression per "
        "payload (~6-8 us a message over 4,096-row chunks that DuckDB's two threads share; no pydantic "
        "on this path), copies and order found in Arrow, then the `events` primary key insert "
        "(~1.5 us) and the commit with positions (~2 us). A decode's fixed cost is ~15-20 ms, mostly "
        "compiling the payloads' regular expressions, once per batch (`execute`, not `sql`, which "
        "binds twice). DuckDB's Python client takes the GIL between tasks, so kafka-python's record "
        "unpacking in the other thread slows it: the runner alone does ~90k events/s, beside the "
        "polling thread less. When the raw consumer has a fast round (~150k msg/s), ours stays near "
        "90-110k: those rounds' ratios are the low ones.", "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of the file (or append it), leaving the rest alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in old:
        before, _, after = old.partition(SECTION)
        rest = after.split("\n## ", 1)
        after = "\n## " + rest[1] if len(rest) > 1 else ""
        new = before + text.rstrip() + "\n" + after
    else:
        new = old.rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
                        or os.environ.get("COMPLAINTS_KAFKA_BOOTSTRAP") or "127.0.0.1:19092",
                        help="Kafka host:port (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:19092; "
                             "start one with scripts/kafka start)")
    parser.add_argument("--complaints", type=int, default=20_000,
                        help="demo complaints in the store (about 7 events each; enough that a consumer's "
                             "first fetch is a small part of its run)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of the benchmark topics")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of raw and ours, alternating")
    parser.add_argument("--rate", type=float, default=500, help="commands per second for the freshness run")
    parser.add_argument("--seconds", type=float, default=20, help="length of the freshness run")
    parser.add_argument("--skip-freshness", action="store_true", help="only the throughput runs")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--markdown", type=Path, help="write the section into this file (e.g. docs/benchmarks.md)")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="bench-backbone-") as tmp:
        workdir = Path(tmp)
        app = open_desk(Settings(store="sqlite", sqlite_path=workdir / "events.sqlite"))
        print(f"preparing {args.complaints} demo complaints ...", file=sys.stderr)
        load_demo(app, args.complaints, progress=False)
        encode = wire_encoder(app.mapper)
        notifications = [n for n in app.recorder.select_notifications(1, 10**7) if is_published(n)]
        messages = [(str(n.originator_id).encode(), encode(n)) for n in notifications]
        events = len(messages)
        load_at_start = os.getloadavg()[0]
        relay_runs, raw_produce, consumer_runs, raw_consume = [], [], [], []
        topics = []
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}: producing ...", file=sys.stderr)
            raw_produce.append(raw_produce_rate(messages, args.bootstrap, args.partitions))
            rate, topic = relay_rate(app, args.bootstrap, args.partitions)
            relay_runs.append(rate)
            topics.append(topic)
            print(f"round {round_ + 1}: consuming ...", file=sys.stderr)
            raw_consume.append(raw_consume_rate(args.bootstrap, topics[0], events))
            consumer_runs.append(read_node_rate(args.bootstrap, topics[0], events, workdir))
        app.close()
        results: dict[str, Any] = {
            "machine": f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}",
            "kafka": _kafka_version(),
            "events": events, "avg_bytes": sum(len(v) for _, v in messages) // events,
            "partitions": args.partitions, "rounds": args.rounds,
            "relay": _summary(relay_runs, raw_produce),
            "consumer": _summary(consumer_runs, raw_consume),
        }
        results["load"] = [round(load_at_start, 2), round(os.getloadavg()[0], 2)]
        if not args.skip_freshness:
            print(f"freshness: {args.rate:.0f} commands/s for {args.seconds:.0f}s ...", file=sys.stderr)
            results["freshness"] = freshness(args.bootstrap, args.rate, args.seconds, workdir)
    shown, skip = [], False
    for arg in sys.argv[1:]:  # the command as run, less where it wrote the result
        if skip or arg.startswith("--markdown"):
            skip = arg == "--markdown"
            continue
        shown.append(arg)
    command = "python -m bench.backbone " + " ".join(shown)
    text = markdown(results, command.strip())
    print(text)
    if args.json:
        print(json.dumps(results, indent=2))
    if args.markdown:
        write_section(args.markdown, text)


def _summary(ours: list[float], raw: list[float]) -> dict[str, Any]:
    """Medians of each, and the median of the per-round ratios (each round runs both back to
    back, so its ratio is the least disturbed by the machine's load changing between rounds)."""
    return {"ours": statistics.median(ours), "raw": statistics.median(raw),
            "ratio": statistics.median(o / r for o, r in zip(ours, raw, strict=True)),
            "runs": [round(x) for x in ours], "raw_runs": [round(x) for x in raw]}


def _kafka_version() -> str:
    import re

    pom = (ROOT / "scripts" / "kafka-pom.xml").read_text()
    found = re.search(r"<kafka.version>(.+?)</kafka.version>", pom)
    return found.group(1) if found else "4.x"


if __name__ == "__main__":
    main()
