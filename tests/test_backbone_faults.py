"""Fault tests of the event backbone: real broker, real processes, real SIGKILLs.

Commands go in through `ComplaintDesk` on a SQLite store, `complaints relay` and
`complaints read-node` run as subprocesses, and the read node's `events` table must end
equal to the event store: every (complaint id, version) once, nothing else. The windows a
crash must hit are widened by the test-only fault knobs (COMPLAINTS_FAULT_RELAY_PAUSE
between Kafka's ack and recording the position, COMPLAINTS_FAULT_COMMIT_PAUSE inside the
read node's transaction); the kill times are random (seeded, and printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from complaints.store import open_desk
from commands.desk import ComplaintDesk
from complaints.settings import Settings
from consumers.read_node import ReadNode
from consumers.sources import KafkaSource
from tests.conftest import (
    KAFKA_SCRIPT,
    ROOT,
    Processes,
    assert_events_equal_store,
    backbone_env,
    send_commands,
    store_events,
)

pytestmark = pytest.mark.kafka

KILLS = int(os.environ.get("COMPLAINTS_FAULT_KILLS", "8"))


@pytest.fixture
def store(tmp_path: Path) -> Settings:
    return Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite")


@pytest.fixture
def app(store: Settings) -> Iterator[ComplaintDesk]:
    desk = open_desk(store)
    yield desk
    desk.close()


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status_of(read_db: Path) -> dict:  # type: ignore[type-arg]
    path = Path(str(read_db) + ".status.json")
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def relay_position(app: ComplaintDesk, topic: str) -> int:
    return app.factory.tracking_recorder().max_tracking_id(f"relay:{topic}") or 0


def topic_size(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, "-m", "complaints.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"complaints {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


class Writer:
    """Commands flowing from a thread until told to stop."""

    def __init__(self, app: ComplaintDesk, complaints: int, pause: float) -> None:
        self.stop = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(app, complaints, pause), daemon=True)
        self.thread.start()

    def _run(self, app: ComplaintDesk, complaints: int, pause: float) -> None:
        try:
            self.sent = send_commands(app, complaints, seed=31, pause=pause, until=self.stop)
        except BaseException as error:
            self.error = error

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the command writer did not finish"
        if self.error:
            raise self.error


def test_end_to_end_through_the_broker_with_an_independent_client(
    app: ComplaintDesk, store: Settings, kafka_bootstrap: str, topic: str, processes: Processes, tmp_path: Path
) -> None:
    read_db = tmp_path / "read.duckdb"
    env = backbone_env(store.sqlite_path, read_db, topic, kafka_bootstrap)
    relay = processes.start("relay", "relay", env=env)
    node = processes.start("read-node", "read-node", env=env)
    send_commands(app, 60, seed=21)
    expected = store_events(app)
    wait_for(lambda: status_of(read_db).get("events") == len(expected), 60, f"{len(expected)} events in the read node")

    # kafka-python's console consumer, a client of its own, reads the whole topic.
    printed = subprocess.run(
        [sys.executable, "-m", "kafka.consumer", "-b", kafka_bootstrap, "-t", topic,
         "-C", "auto_offset_reset=earliest", "-C", "consumer_timeout_ms=4000", "-f", "str"],
        capture_output=True, text=True, timeout=120,
    )
    envelopes = [json.loads(line) for line in printed.stdout.splitlines() if line.strip()]
    seen = [(e["complaint_id"], e["complaint_version"], e["position"]) for e in envelopes]
    assert len(seen) == len(set(seen)) == len(expected), "each event exactly once on the wire"
    assert set(seen) == set(expected)
    versions: dict[str, list[int]] = defaultdict(list)
    for complaint_id, version, _ in seen:
        versions[complaint_id].append(version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values()), "in order per complaint"

    assert processes.stop(node) == 0 and processes.stop(relay) == 0
    assert "relay to topic" in processes.log_of(relay)
    assert_events_equal_store(read_db, app)


@pytest.mark.slow
def test_relay_killed_between_publish_and_recording_loses_nothing(
    app: ComplaintDesk, store: Settings, kafka_bootstrap: str, topic: str, processes: Processes, tmp_path: Path
) -> None:
    read_db = tmp_path / "read.duckdb"
    env = backbone_env(store.sqlite_path, read_db, topic, kafka_bootstrap,
                       COMPLAINTS_FAULT_RELAY_PAUSE="0.15", COMPLAINTS_RELAY_BATCH_SIZE="40")
    rng = random.Random(int(os.environ.get("COMPLAINTS_FAULT_SEED", "3")))
    writer = Writer(app, 40, pause=0.01)
    kills = []
    for _ in range(KILLS):
        relay = processes.start("relay", "relay", env=env)
        processes.wait_for_log(relay, "relay to topic")
        time.sleep(delay := rng.uniform(0.05, 0.8))
        before = relay_position(app, topic)
        processes.kill(relay)
        kills.append((round(delay, 2), before, relay_position(app, topic)))
    writer.finish()
    expected = store_events(app)
    assert writer.sent > 300, "commands were flowing during the kills"

    run_cli("relay", "--once", env=backbone_env(store.sqlite_path, read_db, topic, kafka_bootstrap))
    assert relay_position(app, topic) == app.recorder.max_notification_id()
    # Kills landed after Kafka's ack and before the position: those batches went out twice.
    assert topic_size(kafka_bootstrap, topic) > len(expected), f"no kill hit the window: {kills}"
    run_cli("read-node", "--until-caught-up", env=env)
    assert assert_events_equal_store(read_db, app) == len(expected), kills


@pytest.mark.slow
def test_read_node_killed_mid_batch_applies_everything_once(
    app: ComplaintDesk, store: Settings, kafka_bootstrap: str, topic: str, processes: Processes, tmp_path: Path
) -> None:
    read_db = tmp_path / "read.duckdb"
    relay_env = backbone_env(store.sqlite_path, read_db, topic, kafka_bootstrap)
    node_env = relay_env | {"COMPLAINTS_FAULT_COMMIT_PAUSE": "0.25", "COMPLAINTS_CONSUMER_BATCH_SIZE": "60"}
    rng = random.Random(int(os.environ.get("COMPLAINTS_FAULT_SEED", "5")))
    relay = processes.start("relay", "relay", env=relay_env)
    writer = Writer(app, 40, pause=0.01)
    kills = []
    for _ in range(KILLS):
        node = processes.start("read-node", "read-node", env=node_env)
        processes.wait_for_log(node, "read node")
        time.sleep(delay := rng.uniform(0.1, 1.0))
        processes.kill(node)
        kills.append(round(delay, 2))
    writer.finish()
    expected = store_events(app)
    wait_for(lambda: relay_position(app, topic) == app.recorder.max_notification_id(), 60, "the relay to catch up")
    processes.stop(relay)
    out = run_cli("read-node", "--until-caught-up", env=relay_env)
    assert "caught up" in out
    assert assert_events_equal_store(read_db, app) == len(expected), kills
    with duckdb.connect(str(read_db), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)  # kills are not poison


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_broker(tmp_path: Path, kafka_bootstrap: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A broker of this test's own (it gets stopped and started): ports and state of its own."""
    env = dict(os.environ)
    env.update(
        KAFKA_PORT=str(_free_port()),
        KAFKA_CONTROLLER_PORT=str(_free_port()),
        KAFKA_STATE_DIR=str(tmp_path / "kafka"),
        KAFKA_LIB_DIR=os.environ.get("KAFKA_LIB_DIR", str(ROOT / ".run" / "kafka" / "lib")),
        KAFKA_HEAP_OPTS="-Xms128m -Xmx384m",
        PYTHON=sys.executable,
    )
    done = subprocess.run([str(KAFKA_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"cannot start a second broker:\n{done.stderr}"
    try:
        yield done.stdout.strip().splitlines()[-1], env
    finally:
        subprocess.run([str(KAFKA_SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_broker_stopped_while_commands_arrive_loses_nothing(
    app: ComplaintDesk, store: Settings, private_broker: tuple[str, dict[str, str]], topic: str,
    processes: Processes, tmp_path: Path,
) -> None:
    bootstrap, broker_env = private_broker
    read_db = tmp_path / "read.duckdb"
    env = backbone_env(store.sqlite_path, read_db, topic, bootstrap)
    relay = processes.start("relay", "relay", env=env)
    node = processes.start("read-node", "read-node", env=env)
    writer = Writer(app, 30, pause=0.01)
    wait_for(lambda: status_of(read_db).get("events", 0) > 50, 60, "events flowing before the outage")

    stopped = subprocess.run([str(KAFKA_SCRIPT), "stop"], env=broker_env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    accepted_before = app.recorder.max_notification_id()
    time.sleep(4)  # commands keep being accepted while the broker is away
    accepted_during = app.recorder.max_notification_id() - accepted_before
    started = subprocess.run([str(KAFKA_SCRIPT), "start"], env=broker_env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    time.sleep(1)
    writer.finish()
    assert accepted_during > 20, "commands were accepted during the outage"

    expected = store_events(app)
    wait_for(lambda: status_of(read_db).get("events") == len(expected), 120,
             f"all {len(expected)} events in the read node after the outage")
    assert processes.stop(node) == 0 and processes.stop(relay) == 0
    relay_log = processes.log_of(relay)
    # It said what happened: waiting for (or failing to get) acknowledgements, then resuming.
    assert "not acknowledged" in relay_log or "did not acknowledge" in relay_log, relay_log[-3000:]
    assert "relay resumed at position" in relay_log, relay_log[-3000:]
    assert_events_equal_store(read_db, app)


def test_malformed_messages_go_to_the_dead_letter_topic_and_table(
    app: ComplaintDesk, store: Settings, kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    from consumers.relay import Relay, ensure_topics, make_producer

    send_commands(app, 15, seed=41)
    ensure_topics(kafka_bootstrap, topic, 3)
    relay = Relay(app.recorder, app.mapper, app.factory.tracking_recorder(),
                  lambda: make_producer(kafka_bootstrap), topic, batch_size=30)
    relay.publish_next_batch()  # some events, then poison, then the rest
    poison = [b"{not json", b'{"envelope_version": 1, "event_type": "Registered"}', b"\x00\xff binary"]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for n, value in enumerate(poison):
        producer.send(topic, key=f"poison-{n}".encode(), value=value, partition=n % 3)
    producer.flush()
    producer.close()
    while relay.publish_next_batch():
        pass
    relay.drop_producer()

    with ReadNode(tmp_path / "read.duckdb", KafkaSource(kafka_bootstrap, topic), batch_size=20) as node:
        node.catch_up()
        letters = node.cursor().execute(
            "SELECT stage, error, raw, source, partition FROM dead_letters ORDER BY raw").fetchall()
        assert node.status().dead_letters == 3
    assert sorted(row[2] for row in letters) == sorted(poison)
    assert {row[0] for row in letters} == {"envelope"} and {row[3] for row in letters} == {f"kafka:{topic}"}
    assert all(row[1] for row in letters)
    assert_events_equal_store(tmp_path / "read.duckdb", app)

    # The dead-letter topic has each of them, with the error in its headers.
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    dead_topic = TopicPartition(f"{topic}.dead-letter", 0)
    consumer.assign([dead_topic])
    consumer.seek_to_beginning(dead_topic)
    dead = list(consumer)
    consumer.close()
    assert sorted(r.value for r in dead) == sorted(poison)
    headers = dict(dead[0].headers)
    assert headers["stage"] == b"envelope" and headers["error"] and headers["source.topic"] == topic.encode()
