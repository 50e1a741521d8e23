"""What an operator watches, through real processes: /health, /ready, /metrics, JSON logs
with the request's correlation id, and a graceful SIGTERM.

Every process is `python -m complaints.cli ...` on 127.0.0.1 and a free port, its stderr
(the log) kept apart from its stdout (what it prints for a person), with JSON logs on.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from commands.desk import ComplaintDesk
from complaints.settings import Settings
from complaints.store import open_desk
from scripts.serving import free_port
from tests.conftest import ROOT, Processes, backbone_env, send_commands, store_events
from tests.identity import bearer

HOST = "127.0.0.1"
STOP_WITHIN = 10.0  # seconds a process may take to stop on SIGTERM


# ---------------------------------------------------------------------------- helpers
class LoggedProcesses(Processes):
    """`complaints ...` subprocesses whose stderr (the log) is kept apart from stdout."""

    def start(self, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        stem = self.tmp_path / f"{name}-{len(self.started)}"
        with open(f"{stem}.err", "wb") as err, open(f"{stem}.out", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "complaints.cli", *args],
                                    cwd=ROOT, env=env, stdout=out, stderr=err)
        self.started.append((proc, Path(f"{stem}.err")))
        return proc

    def terminate(self, proc: subprocess.Popen[bytes]) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took (fails after STOP_WITHIN)."""
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(f"did not stop within {STOP_WITHIN}s of SIGTERM:\n{self.log_of(proc)[-3000:]}") from None
        return code, time.monotonic() - started


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[LoggedProcesses]:
    manager = LoggedProcesses(tmp_path)
    yield manager
    manager.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
               procs: LoggedProcesses | None = None) -> Any:
    """Poll until `predicate()` is truthy (and return it); fail after `timeout` or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except httpx.TransportError:
            found = None  # not listening yet
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            log = procs.log_of(proc)[-3000:] if procs else ""
            raise AssertionError(f"exited ({proc.returncode}) while waiting for {what}:\n{log}")
        time.sleep(0.1)
    log = procs.log_of(proc)[-3000:] if procs and proc else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log}")


def get(port: int, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"http://{HOST}:{port}{path}", timeout=5, **kwargs)


def serving(port: int) -> Callable[[], bool]:
    return lambda: get(port, "/health").status_code == 200


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics(port: int) -> Samples:
    """Every sample of /metrics: (sample name, labels) -> value."""
    response = get(port, "/metrics")
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """label value -> sample value, for the samples of `name` (one label varying)."""
    return {dict(key)[label]: v for (sample, key), v in samples.items() if sample == name and label in dict(key)}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a JSON log: each must be one JSON object with the operator's fields."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        missing = {"time", "level", "logger", "message", "correlation_id"} - set(record)
        assert not missing, f"log line without {missing}: {line}"
        lines.append(record)
    return lines


def quiet(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records, none of them an error (a stop that loses work logs one)."""
    errors = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
    assert not errors, errors
    return records


def send_garbage(port: int) -> None:
    """Bytes that are not HTTP: uvicorn logs a warning of its own (through our handler, we check)."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\x00\x01\r\n\r\n")
        try:
            sock.recv(1024)
        except OSError:
            pass


def env_for(tmp_path: Path, topic: str = "unused", bootstrap: str | None = None, **extra: str) -> dict[str, str]:
    return backbone_env(tmp_path / "events.sqlite", tmp_path / "read.duckdb", topic, bootstrap,
                        COMPLAINTS_LOG_FORMAT="json", COMPLAINTS_LOG_LEVEL="INFO", **extra)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[ComplaintDesk]:
    """The test's own desk on the SQLite store the processes use."""
    app = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"))
    yield app
    app.close()


def assert_opens_read_write(db: Path) -> int:
    """The read node's DuckDB file opens read-write right away (no process holds it); its events."""
    with duckdb.connect(str(db)) as con:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]


# ---------------------------------------------------------------------------- the command API
REGISTER = {
    "channel": "web", "customer": {"id": "C-1"},
    "customer_personal": {"name": "Li Wei", "contact": "li@example.com"},
    "title": "Parcel lost", "description": "The parcel never arrived.",
}


def test_command_api_health_metrics_json_logs_and_sigterm(tmp_path: Path, procs: LoggedProcesses) -> None:
    port = free_port()
    # DEBUG: accepted commands are logged at DEBUG (one line each at 1,000 commands/s would
    # cost the API a tenth of its throughput); refusals at INFO.
    api = procs.start("serve", "serve", "--port", str(port), env=env_for(tmp_path) | {"COMPLAINTS_LOG_LEVEL": "DEBUG"})
    wait_until(serving(port), 30, "the command API", api, procs)
    assert get(port, "/health").json() == {"status": "ok"}
    ready = get(port, "/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})

    base = f"http://{HOST}:{port}"
    with httpx.Client(base_url=base, timeout=10, headers=bearer()) as client:
        registered = client.post("/complaints", json=REGISTER | {"command_id": "ops-1"},
                                 headers={"X-Correlation-ID": "ops-test-42"})
        assert registered.status_code == 201, registered.text
        assert registered.headers["X-Correlation-ID"] == "ops-test-42"
        complaint = registered.json()["complaint_id"]
        again = client.post("/complaints", json=REGISTER | {"command_id": "ops-1"})
        assert (again.status_code, again.json()["replayed"]) == (201, True)
        invalid = client.post("/complaints", json={"channel": "web"})
        assert invalid.status_code == 422
        noted = client.post(f"/complaints/{complaint}/notes", json={"text": "called back"})
        assert noted.status_code == 200, noted.text
        illegal = client.post(f"/complaints/{complaint}/close", json={})
        assert illegal.status_code == 409, illegal.text
        missing = client.post(f"/complaints/{uuid.uuid4()}/notes", json={"text": "hello?"})
        assert missing.status_code == 404, missing.text
        bad_path = client.post("/complaints/not-a-uuid/notes", json={"text": "x"})
        assert bad_path.status_code == 422
        assert bad_path.headers["X-Correlation-ID"]  # one is made when the client sends none
    send_garbage(port)

    samples = metrics(port)
    counts = {(dict(k)["action"], dict(k)["outcome"]): v for (name, k), v in samples.items()
              if name == "complaints_commands_total"}
    assert counts == {
        ("register", "accepted"): 1, ("register", "duplicate"): 1, ("register", "invalid"): 1,
        ("add_note", "accepted"): 1, ("add_note", "not_found"): 1, ("add_note", "invalid"): 1,
        ("close", "conflict"): 1,
    }
    # Timed: every command that reached the desk (not the 422s, refused before it).
    assert value(samples, "complaints_command_seconds_count", action="register") == 2
    assert value(samples, "complaints_command_seconds_count", action="add_note") == 2
    assert value(samples, "complaints_command_seconds_count", action="close") == 1
    assert 0 < value(samples, "complaints_command_seconds_sum", action="register") < 10  # type: ignore[operator]

    code, _ = procs.terminate(api)
    assert code == 0, procs.log_of(api)[-3000:]
    records = json_lines(procs.log_of(api))
    mine = [r for r in records if r["correlation_id"] == "ops-test-42"]
    assert any(r["level"] == "DEBUG" and r["logger"] == "commands.api" and "register accepted" in r["message"]
               for r in mine), records
    # One line per command, each with the correlation id of its request; refusals at INFO.
    per_command = [r for r in records if r["logger"] == "commands.api"]
    assert len(per_command) == 7, per_command
    assert all(r["correlation_id"] for r in per_command)
    assert {r.get("outcome") for r in per_command} == {"accepted", "duplicate", "invalid", "not_found", "conflict"}
    assert {r["level"] for r in per_command if r["outcome"] in ("invalid", "not_found", "conflict")} == {"INFO"}
    assert any("SIGTERM" in r["message"] for r in records)
    assert any(r["logger"].startswith("uvicorn") and r["level"] == "WARNING" for r in records), records
    quiet(records)


# ---------------------------------------------------------------------------- a read node with --serve
ALL_MODELS = "projections.models:ALL_SPEC"


def test_read_node_ready_after_catching_up_and_its_metrics(tmp_path: Path, procs: LoggedProcesses,
                                                           desk: ComplaintDesk) -> None:
    send_commands(desk, 25)
    events = store_events(desk)
    last = desk.recorder.max_notification_id()
    port = free_port()
    # Small batches that each pause before commit: catching up takes a few seconds.
    node = procs.start("read-node", "read-node", "--source", "log", "--projector", ALL_MODELS,
                       "--serve", str(port),
                       env=env_for(tmp_path, COMPLAINTS_CONSUMER_BATCH_SIZE="30",
                                   COMPLAINTS_FAULT_COMMIT_PAUSE="0.6"))
    wait_until(serving(port), 30, "the read node's API", node, procs)
    first = get(port, "/ready")
    assert first.status_code == 503, first.text
    assert "catch up" in " ".join(first.json()["waiting_for"])
    wait_until(lambda: get(port, "/ready").status_code == 200, 60, "the read node to be ready", node, procs)

    def settled() -> Samples | None:
        samples = metrics(port)  # the lag follows the status file, every 2 s
        return samples if value(samples, "complaints_read_node_lag", source="log") == 0 else None

    samples = wait_until(settled, 15, "the read node's lag gauge at 0", node, procs)
    assert value(samples, "complaints_read_node_events_total") == len(events)
    assert value(samples, "complaints_read_node_position", source="log", partition="0") == last + 1
    batches = value(samples, "complaints_read_node_batch_messages_count")
    assert batches is not None and batches >= len(events) / 30
    assert value(samples, "complaints_read_node_batch_messages_sum") == len(events)
    applied = labelled(samples, "complaints_read_node_apply_seconds_count", "projector")
    assert applied == {name: batches for name in ("events", "facts", "sla", "workload", "trends", "fields")}
    assert all(v > 0 for v in labelled(samples, "complaints_read_node_apply_seconds_sum", "projector").values())
    assert not labelled(samples, "complaints_dead_letters_total", "stage")

    code, _ = procs.terminate(node)
    assert code == 0, procs.log_of(node)[-3000:]
    assert assert_opens_read_write(tmp_path / "read.duckdb") == len(events)
    quiet(json_lines(procs.log_of(node)))


# ---------------------------------------------------------------------------- relay and read node on Kafka
def topic_contents(bootstrap: str, topic: str) -> tuple[int, int]:
    """(messages, the highest event store position among them) of a topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=3000, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        count, highest = 0, 0
        while count < sum(ends.values()):
            batch = consumer.poll(timeout_ms=2000)
            if not batch:
                break
            for records in batch.values():
                for record in records:
                    count += 1
                    highest = max(highest, json.loads(record.value)["position"])
        return count, highest
    finally:
        consumer.close()


@pytest.mark.kafka
def test_relay_and_read_node_on_kafka_metrics_and_sigterm(tmp_path: Path, procs: LoggedProcesses,
                                                          desk: ComplaintDesk, kafka_bootstrap: str) -> None:
    topic = f"t-ops-{uuid.uuid4().hex[:10]}"
    send_commands(desk, 20)
    relay_port, node_port = free_port(), free_port()
    # One event per batch, each acknowledgement recorded after a pause: the relay takes a
    # few seconds to catch up, so its lag is seen going down, not only at 0.
    relay = procs.start("relay", "relay", env=env_for(tmp_path, topic, kafka_bootstrap,
                                                      COMPLAINTS_METRICS_PORT=str(relay_port),
                                                      COMPLAINTS_RELAY_BATCH_SIZE="1",
                                                      COMPLAINTS_FAULT_RELAY_PAUSE="0.02"))
    node = procs.start("read-node", "read-node", env=env_for(tmp_path, topic, kafka_bootstrap,
                                                             COMPLAINTS_METRICS_PORT=str(node_port)))
    wait_until(serving(relay_port), 30, "the relay's operations port", relay, procs)
    wait_until(serving(node_port), 30, "the read node's operations port", node, procs)
    last, events = desk.recorder.max_notification_id(), len(store_events(desk))

    lags: list[float] = []

    def relay_caught_up() -> Samples | None:
        samples = metrics(relay_port)
        lags.append(value(samples, "complaints_relay_lag"))  # type: ignore[arg-type]
        done = value(samples, "complaints_relay_position") == last and lags[-1] == 0
        return samples if done else None

    samples = wait_until(relay_caught_up, 40, f"the relay at position {last}, lag 0", relay, procs)
    assert max(lags) > 0, lags  # the lag was reported while catching up, not only its final 0
    assert value(samples, "complaints_relay_published_total") == events
    assert get(relay_port, "/ready").status_code == 200

    def node_caught_up() -> Samples | None:
        samples = metrics(node_port)
        lag = value(samples, "complaints_read_node_lag", source=f"kafka:{topic}")
        return samples if lag == 0 and value(samples, "complaints_read_node_events_total") == events else None

    samples = wait_until(node_caught_up, 40, f"the read node with {events} events, lag 0", node, procs)
    positions = labelled(samples, "complaints_read_node_position", "partition")
    assert len(positions) == 3 and sum(positions.values()) == events  # offsets: one message per event
    assert value(samples, "complaints_read_node_batch_messages_sum") == events
    assert value(samples, "complaints_read_node_apply_seconds_count", projector="events")
    assert get(node_port, "/ready").status_code == 200

    # SIGTERM when caught up: what the relay recorded is all Kafka holds.
    relay_code, _ = procs.terminate(relay)
    assert relay_code == 0, procs.log_of(relay)[-3000:]
    assert relay_position(desk, topic) == topic_contents(kafka_bootstrap, topic)[1] == last

    # SIGTERM in the middle of a backlog: a relay (one event per batch, several batches in
    # flight) waits for what it sent and records what Kafka acknowledged; the read node
    # commits its batch and lets go of its file.
    send_commands(desk, 60, seed=99)
    backlog_port = free_port()
    relay = procs.start("relay", "relay", env=env_for(tmp_path, topic, kafka_bootstrap,
                                                      COMPLAINTS_METRICS_PORT=str(backlog_port),
                                                      COMPLAINTS_RELAY_BATCH_SIZE="1"))
    wait_until(lambda: value(metrics(backlog_port), "complaints_relay_position") > last, 30,  # type: ignore[operator]
               "the relay to publish the backlog", relay, procs)
    relay_code, _ = procs.terminate(relay)
    node_code, _ = procs.terminate(node)
    assert relay_code == 0, procs.log_of(relay)[-3000:]
    assert node_code == 0, procs.log_of(node)[-3000:]
    messages, highest = topic_contents(kafka_bootstrap, topic)
    assert relay_position(desk, topic) == highest, f"Kafka holds up to {highest}"
    stored = assert_opens_read_write(tmp_path / "read.duckdb")
    assert events <= stored <= messages
    for proc in procs.started:
        quiet(json_lines(procs.log_of(proc[0])))


def relay_position(desk: ComplaintDesk, topic: str) -> int:
    return desk.factory.tracking_recorder().max_tracking_id(f"relay:{topic}") or 0


@pytest.mark.kafka
def test_a_stopping_relay_records_the_batches_it_has_in_flight(desk: ComplaintDesk, kafka_bootstrap: str) -> None:
    """What `complaints relay` does after SIGTERM (Relay.run's `finally`), with batches sent
    and not yet acknowledged: a process rarely stops right then, so it is made to here."""
    from consumers.relay import Relay, ensure_topics, make_producer

    topic = f"t-ops-flight-{uuid.uuid4().hex[:10]}"
    send_commands(desk, 5)
    ensure_topics(kafka_bootstrap, topic, 3)
    relay = Relay(desk.recorder, desk.mapper, desk.factory.tracking_recorder(),
                  lambda: make_producer(kafka_bootstrap), topic, batch_size=10)
    assert relay.send_next_batch() == relay.send_next_batch() == 10
    assert relay.position() == 0  # nothing recorded before Kafka acknowledges
    relay.close()
    messages, highest = topic_contents(kafka_bootstrap, topic)
    assert relay.position() == highest == 20 and messages == 20  # ids 1..20, all complaint events


# ---------------------------------------------------------------------------- everything in one process
def test_run_is_ready_then_stops_on_sigterm(tmp_path: Path, procs: LoggedProcesses) -> None:
    port = free_port()
    # Demo complaints still loading when SIGTERM comes: the command in flight finishes
    # before the desk closes, the rest are not sent.
    run = procs.start("run", "run", "--port", str(port), "--demo-count", "300",
                      "--read-db", str(tmp_path / "run.duckdb"), env=env_for(tmp_path))
    wait_until(lambda: get(port, "/ready").status_code == 200, 40, "`complaints run` to be ready", run, procs)

    def some_events() -> bool:
        return (value(metrics(port), "complaints_read_node_events_total") or 0) > 0

    wait_until(some_events, 30, "the in-process read node to apply demo events", run, procs)
    samples = metrics(port)
    assert value(samples, "complaints_commands_total", action="register", outcome="accepted")
    # Every read model is there, not only the event log: the dashboards and the page answer.
    projectors = set(labelled(samples, "complaints_read_node_apply_seconds_count", "projector"))
    # (alerts: once the automation, which starts after the demo, has raised one)
    assert {"events", "facts", "sla", "workload", "trends"} <= projectors <= {
        "events", "facts", "sla", "workload", "trends", "alerts", "fields"}, projectors
    for path in ("/dashboards/supervisor", "/dashboards/executive", "/workload", "/dashboard"):
        assert get(port, path, headers=bearer()).status_code == 200, path
    assert get(port, "/workload").status_code == 401
    code, _ = procs.terminate(run)
    assert code == 0, procs.log_of(run)[-3000:]
    assert assert_opens_read_write(tmp_path / "run.duckdb") > 0
    records = quiet(json_lines(procs.log_of(run)))
    assert any(r["message"] == "stopped loading the demo complaints" for r in records), records


# ---------------------------------------------------------------------------- a relay without its broker
def test_relay_waiting_for_kafka_is_alive_not_ready_and_stops(tmp_path: Path, procs: LoggedProcesses) -> None:
    with socket.socket() as sock:  # an address where no broker listens
        sock.bind((HOST, 0))
        nowhere = f"{HOST}:{sock.getsockname()[1]}"
    port = free_port()
    relay = procs.start("relay", "relay", env=env_for(tmp_path, "t-nowhere", nowhere,
                                                      COMPLAINTS_METRICS_PORT=str(port)))
    wait_until(serving(port), 30, "the relay's operations port", relay, procs)
    ready = get(port, "/ready")
    assert ready.status_code == 503
    assert nowhere in " ".join(ready.json()["waiting_for"])
    assert get(port, "/metrics").status_code == 200
    send_garbage(port)
    time.sleep(1.0)  # still waiting for the broker when SIGTERM comes
    code, _ = procs.terminate(relay)
    assert code == 0, procs.log_of(relay)[-3000:]
    records = json_lines(procs.log_of(relay))
    assert any(r["logger"].startswith("uvicorn") and r["level"] == "WARNING" for r in records), records
