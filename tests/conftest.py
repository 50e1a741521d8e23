"""Shared fixtures: a controllable clock, event stores on SQLite and PostgreSQL, the app.

PostgreSQL comes from COMPLAINTS_TEST_POSTGRES (set by scripts/test); run alone, a test
starts scripts/postgres itself. A missing server fails the test: it never skips.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from commands.api import create_app
from complaints.store import open_desk
from commands.desk import ComplaintDesk
from complaints.settings import Settings
from tests.identity import AUTHENTICATE, ISSUER_KEY, bearer

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    # A Monday morning in Shanghai, inside business hours.
    return FakeClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def postgres_address() -> tuple[str, int]:
    address = os.environ.get("COMPLAINTS_TEST_POSTGRES")
    if not address:
        done = subprocess.run(
            [str(ROOT / "scripts" / "postgres"), "start"], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"cannot start PostgreSQL (scripts/postgres start):\n{done.stderr}")
        address = done.stdout.strip().splitlines()[-1]
    host, _, port = address.rpartition(":")
    return host, int(port)


def postgres_settings(address: tuple[str, int]) -> Settings:
    """Settings for a fresh schema of its own, so tests never see each other's events."""
    host, port = address
    schema = "t_" + uuid.uuid4().hex[:12]
    try:
        with psycopg.connect(
            host=host, port=port, dbname="complaints", user="complaints",
            password="complaints", autocommit=True, connect_timeout=10,
        ) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL at {host}:{port} is not reachable: {error}")
    return Settings(
        store="postgres", postgres_host=host, postgres_port=port, postgres_schema=schema
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite")


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each event store the product supports."""
    if request.param == "sqlite":
        return Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite")
    return postgres_settings(request.getfixturevalue("postgres_address"))


@pytest.fixture
def desk(store_settings: Settings, clock: FakeClock) -> Iterator[ComplaintDesk]:
    app = open_desk(store_settings, clock=clock)
    yield app
    app.close()


@pytest.fixture
def client(desk: ComplaintDesk, store_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(desk, AUTHENTICATE), headers=bearer()) as test_client:
        yield test_client


# ---------------------------------------------------------------------------- Kafka
# The broker the suite runs against: a real single-node KRaft broker. It comes from
# KAFKA_BOOTSTRAP_SERVERS (set by scripts/test or CI); run alone, the session fixture starts
# one itself with scripts/kafka on ports of its own (state in .run/kafka-test, jars shared
# with .run/kafka/lib) and stops it at the end of the session (KAFKA_KEEP_RUNNING=1 keeps
# it). A broker that cannot start fails the tests: never skips.
KAFKA_SCRIPT = ROOT / "scripts" / "kafka"


def _fixture_broker_env() -> dict[str, str]:
    """Environment for the broker the fixture starts when none is configured."""
    env = dict(os.environ)
    env.update(
        KAFKA_PORT=os.environ.get("KAFKA_TEST_PORT", "19192"),
        KAFKA_CONTROLLER_PORT=os.environ.get("KAFKA_TEST_CONTROLLER_PORT", "19193"),
        KAFKA_STATE_DIR=str(ROOT / ".run" / "kafka-test"),
        KAFKA_LIB_DIR=os.environ.get("KAFKA_LIB_DIR", str(ROOT / ".run" / "kafka" / "lib")),
        PYTHON=os.environ.get("PYTHON", sys.executable),
    )
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a ready Kafka broker (KAFKA_BOOTSTRAP_SERVERS or scripts/kafka)."""
    address = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if address:
        yield address
        return
    env = _fixture_broker_env()
    was_running = (
        subprocess.run(
            [str(KAFKA_SCRIPT), "status"], env=env, capture_output=True, text=True
        ).returncode
        == 0
    )
    done = subprocess.run(
        [str(KAFKA_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0 or not done.stdout.strip():
        pytest.fail(
            f"cannot start Kafka (scripts/kafka start, exit {done.returncode}):\n{done.stderr}",
            pytrace=False,
        )
    yield done.stdout.strip().splitlines()[-1]
    if not was_running and os.environ.get("KAFKA_KEEP_RUNNING") != "1":
        subprocess.run([str(KAFKA_SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


# ---------------------------------------------------------------------------- event backbone
# Helpers for the relay / read node tests: real processes of the `complaints` CLI that are
# always killed at teardown, unique topics, a paced command workload, and the comparison of
# a read node's `events` table with the event store.


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name of this test's own (topics are never shared between tests)."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


class Processes:
    """`complaints ...` subprocesses with their logs in tmp_path; killed at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{name}-{len(self.started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "complaints.cli", *args],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )
        self.started.append((proc, log_path))
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        for candidate, path in self.started:
            if candidate is proc:
                return path.read_text(errors="replace")
        return ""

    def wait_for_log(self, proc: subprocess.Popen[bytes], text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_of(proc):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s (exit {proc.poll()}):\n{self.log_of(proc)[-3000:]}")

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """SIGTERM, and SIGKILL if it does not stop in time; returns the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                raise AssertionError(f"did not stop on SIGTERM:\n{self.log_of(proc)[-3000:]}") from None
        return proc.returncode

    def close(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    manager = Processes(tmp_path)
    yield manager
    manager.close()


def backbone_env(store: Path, read_db: Path, topic: str, bootstrap: str | None = None,
                 **extra: str) -> dict[str, str]:
    """Environment for `complaints relay` / `read-node` on a SQLite store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")}
    env.update(
        COMPLAINTS_STORE="sqlite",
        COMPLAINTS_SQLITE_PATH=str(store),
        COMPLAINTS_READ_DB=str(read_db),
        COMPLAINTS_TOPIC=topic,
        COMPLAINTS_PARTITIONS="3",
        COMPLAINTS_DEV_ISSUER_KEY=str(ISSUER_KEY),
        # The relay's signed checkpoints beside the test's store, never in the repository's var/.
        COMPLAINTS_AUDIT_CHECKPOINTS=str(read_db.parent / "audit-checkpoints.jsonl"),
        PYTHONUNBUFFERED="1",
    )
    if bootstrap:
        env["COMPLAINTS_KAFKA_BOOTSTRAP"] = bootstrap
    env.update(extra)
    return env


def send_commands(desk: ComplaintDesk, count: int, seed: int = 7, pause: float = 0.0,
                  until: threading.Event | None = None) -> int:
    """The demo workload of `count` complaints through the desk; `pause` s between commands.

    With `until`, the workload repeats (new seeds) until the event is set.
    """
    from commands.demo import demo_commands, send

    sent, end = 0, desk.clock()
    while True:
        ids: dict[str, uuid.UUID] = {}
        for path, fields in demo_commands(count, end, seed=seed):
            send(desk, ids, path, fields)
            sent += 1
            if pause:
                time.sleep(pause)
        if until is None or until.is_set():
            return sent
        seed += 1000


def store_events(app: ComplaintDesk) -> list[tuple[str, int, int]]:
    """(complaint_id, version, position) of every Complaint event in the store, by position."""
    found: list[tuple[str, int, int]] = []
    start = 1
    while batch := app.recorder.select_notifications(start, 5_000):
        found += [(str(n.originator_id), n.originator_version, n.id) for n in batch
                  if n.topic.startswith("aggregates.complaint:Complaint.")]
        start = batch[-1].id + 1
    return found


def assert_events_equal_store(read_db: Path, app: ComplaintDesk) -> int:
    """The read node's `events` table holds each stored event exactly once: no loss, no double."""
    import duckdb

    expected = store_events(app)
    with duckdb.connect(str(read_db), read_only=True) as db:
        rows = db.execute(
            "SELECT complaint_id::VARCHAR, complaint_version, position FROM events ORDER BY position"
        ).fetchall()
        distinct = db.execute("SELECT count(DISTINCT (complaint_id, complaint_version)) FROM events").fetchone()[0]
    assert len(rows) == distinct, "duplicated (complaint_id, version) in events"
    missing = set(expected) - set(rows)
    unexpected = set(rows) - set(expected)
    assert not missing and not unexpected, (
        f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
    )
    # A fold of both sides agrees too: every complaint's current version.
    latest: dict[str, int] = {}
    for complaint_id, version, _ in rows:
        latest[complaint_id] = max(version, latest.get(complaint_id, 0))
    for complaint_id, version in list(latest.items())[:50]:
        assert app.get_complaint(uuid.UUID(complaint_id)).version == version
    return len(rows)


@pytest.fixture(scope="session")
def keycloak():
    """The real Keycloak of the realm `complaints` (tests/keycloak.py): COMPLAINTS_TEST_KEYCLOAK,
    or scripts/keycloak started for the session. A server that cannot start fails the test."""
    from tests.keycloak import Keycloak, keycloak_url

    try:
        url = keycloak_url()
    except RuntimeError as error:
        pytest.fail(str(error))
    server = Keycloak(url)
    yield server
    server.close()


# The longest files first, the rest after them as collected: two workers take whole files in
# this order (`--dist loadfile --no-loadscope-reorder`, scripts/test), so the last file to
# start is a short one and neither worker idles long at the end. Ranked by the worker
# seconds of a full run (`scripts/test` prints the slowest tests; re-rank when they change).
LONGEST_FIRST = ("test_soak.py", "test_command_api_schemathesis.py", "test_reads_never_write.py",
                 "test_backbone_faults.py", "test_identity.py", "test_dashboard_browser.py",
                 "test_hardening_instants.py", "test_read_models.py", "test_automation_faults.py",
                 "test_audit_chain.py", "test_notifier_faults.py", "test_knowledge.py", "test_operations.py",
                 "test_notifications.py", "test_rebuild.py", "test_workspace_browser.py", "test_cfpb.py",
                 "test_cli.py", "test_api_docs_offline.py", "test_topology.py", "test_readme_walk.py",
                 "test_erasure_everywhere.py", "test_attachments.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole, in order


FILE_SECONDS: Counter[str] = Counter()  # setup, call and teardown of each test file, as reported


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    FILE_SECONDS[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The files that take longest, the ranking LONGEST_FIRST follows."""
    if FILE_SECONDS:
        terminalreporter.write_sep("=", f"slowest files (worker seconds, {sum(FILE_SECONDS.values()):.0f} in all)")
        for path, seconds in FILE_SECONDS.most_common(25):
            terminalreporter.write_line(f"{seconds:8.1f}s {path}")

