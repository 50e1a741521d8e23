"""The scaled-out topology, as a deployment runs it: every part a real process on loopback.

PostgreSQL holds the events; two `complaints serve` command APIs write to it side by side;
one `complaints relay` publishes the events to a Kafka topic of this test's own; two
`complaints read-node --serve` nodes consume that topic, each into a DuckDB file of its
own, and answer the read API. Threads send a few hundred commands over HTTP to both
command APIs, some of them racing on one complaint from both APIs with `expected_version`
(exactly one of each race may win: optimistic concurrency across processes). Then the
relay's lag must reach 0, both read nodes must hold exactly the store's events (same
positions, types and payloads; versions contiguous per complaint), agree with each other
on every read model and dashboard, every process's /metrics must report the traffic, and
every process must stop on SIGTERM with exit code 0.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregates.access import MASK
from commands.demo import demo_commands
from complaints.settings import Settings
from complaints.store import EventStore, open_store
from consumers.stored_events import envelopes
from scripts.serving import free_port, wait_until_serving
from tests.conftest import ROOT, Processes, postgres_settings
from tests.identity import ISSUER_KEY, bearer

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

DEMO_COMPLAINTS = 40  # ~290 commands of realistic lives (commands.demo)
RACED_COMPLAINTS = 24  # each: registered, then ROUNDS races of one command from each API
ROUNDS = 3
THREADS = 4
STOP_WITHIN = 15.0
# The whole history, for the read API's period filters (every event occurred before now).
ALL_TIME = {"start": "2000-01-01T00:00:00+00:00", "end": "2100-01-01T00:00:00+00:00"}
# Read-node columns that say when *this* node did something: the only ones that may differ.
NODE_LOCAL = {"events": {"applied_at"}, "read_model_meta": {"built_at"}, "consumer_positions": {"updated_at"}}


# ---------------------------------------------------------------------------- helpers
def wait_for(predicate: Callable[[], bool], timeout: float, what: Callable[[], str] | str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    if predicate():
        return
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what() if callable(what) else what}")


def wait_ready(processes: Processes, proc: subprocess.Popen[bytes], url: str, timeout: float = 60) -> None:
    """Until GET {url}/ready answers 200 (503 says why not yet); fails if the process dies."""
    wait_until_serving(f"{url}/health", timeout)
    last: list[str] = ["nothing"]

    def ready() -> bool:
        assert proc.poll() is None, f"{url} exited {proc.returncode}:\n{processes.log_of(proc)[-3000:]}"
        try:
            response = httpx.get(f"{url}/ready", timeout=5)
        except httpx.HTTPError as error:
            last[0] = repr(error)
            return False
        last[0] = f"{response.status_code} {response.text}"
        assert response.status_code in (200, 503), last[0]
        return response.status_code == 200

    wait_for(ready, timeout, lambda: f"{url}/ready (last answer: {last[0]}):\n{processes.log_of(proc)[-3000:]}")


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from a Prometheus /metrics endpoint."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def metric_sum(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    """The sum of a sample's values over the label sets matching `labels`; None if absent."""
    if name not in samples:
        return None
    return sum(value for found, value in samples[name] if all(found.get(k) == v for k, v in labels.items()))


def assert_same(left: list[Any], right: list[Any], what: str) -> None:
    """Two sorted row lists are equal; if not, say how in a few lines (not a page of rows)."""
    if left == right:
        return
    only_left = [row for row in left if row not in right]
    only_right = [row for row in right if row not in left]
    raise AssertionError(f"{what} differ: {len(left)} rows vs {len(right)}; only in the first "
                         f"{len(only_left)} (e.g. {only_left[:2]}), only in the second {len(only_right)} "
                         f"(e.g. {only_right[:2]})")


def topology_env(store: Settings, bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    """One configuration for every process, as a deployment would share it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")}
    env.update(
        COMPLAINTS_STORE="postgres",
        COMPLAINTS_POSTGRES_HOST=store.postgres_host,
        COMPLAINTS_POSTGRES_PORT=str(store.postgres_port),
        COMPLAINTS_POSTGRES_SCHEMA=store.postgres_schema,
        COMPLAINTS_KAFKA_BOOTSTRAP=bootstrap,
        COMPLAINTS_TOPIC=topic,
        COMPLAINTS_PARTITIONS="3",
        COMPLAINTS_SOURCE="kafka",
        COMPLAINTS_PROJECTORS="projections.models:make",  # every read model, as compose.yaml runs them
        COMPLAINTS_DEV_ISSUER_KEY=str(ISSUER_KEY),  # the tests' tokens are good here
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def all_envelopes(store: EventStore) -> list[Any]:
    """Every Complaint event in the store, as the relay publishes it, in position order."""
    found: list[Any] = []
    start = 1
    while batch := store.recorder.select_notifications(start, 5_000):
        found += envelopes(store.mapper, batch)
        start = batch[-1].id + 1
    return found


# ---------------------------------------------------------------------------- the load
@dataclass
class Load:
    """Commands over HTTP to the two command APIs, counted per API."""

    urls: list[str]
    accepted: list[int] = field(default_factory=lambda: [0, 0])  # 2xx per API
    conflicts: list[int] = field(default_factory=lambda: [0, 0])  # 409 per API (the races' losers)
    accepted_commands: set[str] = field(default_factory=set)
    rejected_commands: set[str] = field(default_factory=set)
    races: int = 0
    raced: dict[str, int] = field(default_factory=dict)  # complaint id -> its version after the races
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, api: int) -> httpx.Client:
        clients = getattr(self.local, "clients", None)
        if clients is None:
            clients = self.local.clients = [httpx.Client(base_url=u, timeout=30, headers=bearer()) for u in self.urls]
            with self.lock:
                self.clients += clients
        return clients[api]

    def post(self, api: int, path: str, body: dict[str, Any]) -> httpx.Response:
        response = self.client(api).post(path, json=body)
        with self.lock:
            if response.is_success:
                self.accepted[api] += 1
                self.accepted_commands.add(response.json()["command_id"])
            elif response.status_code == 409:
                self.conflicts[api] += 1
                self.rejected_commands.add(body["command_id"])
        return response

    def life(self, n: int, steps: list[tuple[str, dict[str, Any]]]) -> None:
        """One demo complaint's commands in order, alternating between the two APIs."""
        complaint_id = None
        for i, (path, fields) in enumerate(steps):
            api = (n + i) % 2
            fields = {k: v for k, v in fields.items() if k != "actor"}  # the token's subject acts
            if path == "register":
                response = self.post(api, "/complaints", fields)
                assert response.status_code == 201, f"register via API {api}: {response.status_code} {response.text}"
                complaint_id = response.json()["complaint_id"]
            else:
                body = {k: v for k, v in fields.items() if k != "complaint_command_id"}
                response = self.post(api, f"/complaints/{complaint_id}/{path}", body)
                assert response.status_code == 200, f"{path} via API {api}: {response.status_code} {response.text}"

    def race(self, n: int) -> None:
        """Register a complaint, then ROUNDS times send one note from each API at once, both
        expecting the version the last winner left: exactly one may be accepted."""
        response = self.post(n % 2, "/complaints", {
            "command_id": f"race-{n}", "channel": "web",
            "customer": {"id": f"R-{n:03d}"}, "customer_personal": {"name": f"Racer {n}", "contact": f"r{n}@example.com"},
            "title": "Charged twice", "description": "Two debits for one order.", "product": "billing-portal",
        })
        assert response.status_code == 201, response.text
        complaint_id, version = response.json()["complaint_id"], 1
        barrier = threading.Barrier(2)

        def send(api: int, round_: int) -> httpx.Response:
            body = {"command_id": f"race-{n}-{round_}-api{api}",
                    "text": f"round {round_} from API {api}", "expected_version": version}
            barrier.wait(timeout=30)
            return self.post(api, f"/complaints/{complaint_id}/notes", body)

        with ThreadPoolExecutor(2) as pair:
            for round_ in range(ROUNDS):
                first, second = pair.submit(send, 0, round_), pair.submit(send, 1, round_)
                answers = [first.result(timeout=60), second.result(timeout=60)]
                codes = sorted(a.status_code for a in answers)
                assert codes == [200, 409], f"race {n} round {round_} at v{version}: " + " | ".join(
                    f"{a.status_code} {a.text}" for a in answers)
                winner = next(a for a in answers if a.status_code == 200).json()
                loser = next(a for a in answers if a.status_code == 409).json()
                assert winner["version"] == version + 1, winner
                assert loser["current_version"] in (version, version + 1), loser
                version = winner["version"]
                with self.lock:
                    self.races += 1
        with self.lock:
            self.raced[complaint_id] = version

    def run(self) -> None:
        plans: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for path, fields in demo_commands(DEMO_COMPLAINTS, datetime.now(UTC) - timedelta(minutes=1), seed=11):
            plans[fields["command_id"] if path == "register" else fields["complaint_command_id"]].append((path, fields))
        lives = list(plans.values())
        try:
            with ThreadPoolExecutor(THREADS) as pool:
                # Races interleaved with the lives, so both APIs are busy while they run.
                futures = [pool.submit(self.race, n) for n in range(RACED_COMPLAINTS)]
                futures += [pool.submit(self.life, n, steps) for n, steps in enumerate(lives)]
                for future in futures:
                    future.result(timeout=120)
        finally:
            for client in self.clients:
                client.close()


# ---------------------------------------------------------------------------- the test
def test_scaled_out_topology(
    postgres_address: tuple[str, int], kafka_bootstrap: str, topic: str, processes: Processes, tmp_path: Path
) -> None:
    started = time.monotonic()
    store_settings = postgres_settings(postgres_address)
    env = topology_env(store_settings, kafka_bootstrap, topic)

    # ------------------------------------------------------------------ start the topology
    relay_port = free_port()
    relay = processes.start("relay", "relay", env=env | {"COMPLAINTS_METRICS_PORT": str(relay_port)})
    api_ports = [free_port(), free_port()]
    apis = [processes.start(f"api{i}", "serve", "--port", str(port), env=env) for i, port in enumerate(api_ports)]
    api_urls = [f"http://127.0.0.1:{port}" for port in api_ports]
    relay_url = f"http://127.0.0.1:{relay_port}"
    wait_ready(processes, relay, relay_url)  # it has created the topic: read nodes can start
    dbs = [tmp_path / "node-a.duckdb", tmp_path / "node-b.duckdb"]
    node_ports = [free_port(), free_port()]
    nodes = [processes.start(f"node{i}", "read-node", "--db", str(db), "--serve", str(port), env=env)
             for i, (db, port) in enumerate(zip(dbs, node_ports))]
    node_urls = [f"http://127.0.0.1:{port}" for port in node_ports]
    for proc, url in [*zip(apis, api_urls), *zip(nodes, node_urls)]:
        wait_ready(processes, proc, url)
    ready_at = time.monotonic()

    # ------------------------------------------------------------------ the load
    load = Load(api_urls)
    load.run()
    loaded_at = time.monotonic()
    assert load.races == RACED_COMPLAINTS * ROUNDS
    assert sum(load.conflicts) == load.races, "every race has exactly one loser"
    assert load.accepted[0] > 0 and load.accepted[1] > 0 and load.conflicts[0] > 0 and load.conflicts[1] > 0, (
        f"both APIs accepted and rejected commands: accepted {load.accepted}, conflicts {load.conflicts}")
    # Each API answers every complaint as it stands, whichever process wrote it last.
    for complaint_id, version in list(load.raced.items())[:8]:
        for url in api_urls:
            state = httpx.get(f"{url}/complaints/{complaint_id}", timeout=10, headers=bearer()).json()
            assert state["version"] == version, (url, state)

    # ------------------------------------------------------------------ the store
    store = open_store(store_settings)
    try:
        expected = all_envelopes(store)
        max_position = store.recorder.max_notification_id()
        relay_position = lambda: store.tracking.max_tracking_id(f"relay:{topic}") or 0  # noqa: E731
        wait_for(lambda: relay_position() == max_position, 30,
                 lambda: f"the relay at {relay_position()} to reach {max_position}:\n{processes.log_of(relay)[-2000:]}")
    finally:
        store.close()
    assert expected and max_position == expected[-1].position
    # Every accepted command is in the store; no rejected one is.
    stored_commands = {e.command_id for e in expected}
    assert load.accepted_commands <= stored_commands, sorted(load.accepted_commands - stored_commands)[:5]
    assert not load.rejected_commands & stored_commands, sorted(load.rejected_commands & stored_commands)[:5]
    assert stored_commands <= load.accepted_commands, sorted(stored_commands - load.accepted_commands)[:5]
    versions: dict[str, list[int]] = defaultdict(list)
    for e in expected:
        versions[str(e.complaint_id)].append(e.complaint_version)
    assert len(versions) == DEMO_COMPLAINTS + RACED_COMPLAINTS
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values()), "versions 1..n per complaint"
    wanted = sorted((str(e.complaint_id), e.complaint_version, e.position, e.event_type, e.command_id, e.payload)
                    for e in expected)

    # ------------------------------------------------------------------ the read nodes caught up
    def node_status(db: Path) -> dict[str, Any]:
        try:
            return json.loads(Path(str(db) + ".status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    for db, proc in zip(dbs, nodes):
        wait_for(lambda: node_status(db).get("events") == len(expected), 30,
                 lambda: f"{db.name} to hold {len(expected)} events: {node_status(db)}\n{processes.log_of(proc)[-2000:]}")
        status = node_status(db)
        assert status["source"] == f"kafka:{topic}" and status["dead_letters"] == 0, status

    # ------------------------------------------------------------------ the read APIs agree, with the store
    def exported_events(url: str) -> list[tuple[Any, ...]]:
        response = httpx.get(f"{url}/export/events", params={"format": "parquet", **ALL_TIME}, timeout=30,
                             headers=bearer())
        assert response.status_code == 200, response.text
        table = pq.read_table(io.BytesIO(response.content))
        return sorted(zip(*(table.column(c).to_pylist() for c in (
            "complaint_id", "complaint_version", "position", "event_type", "command_id", "payload"))))

    exported = [exported_events(url) for url in node_urls]
    assert_same(exported[0], exported[1], "the two read nodes' /export/events")
    # An export holds no personal data: the registration's masked, nothing sealed.
    as_exported = [(*w[:5], {k: ({n: MASK for n in v} if k == "customer_personal" and v else v)
                             for k, v in w[5].items() if k != "sealed"}) for w in wanted]
    assert_same([(*row[:5], json.loads(row[5])) for row in exported[0]], as_exported,
                "/export/events and the store's events")

    as_of = datetime.now(UTC).isoformat()
    for path, params in [
        ("/dashboards/supervisor", {"as_of": as_of, "period": "90d"}),
        ("/dashboards/product", {"as_of": as_of, "period": "90d"}),
        ("/dashboards/executive", {"as_of": as_of, "period": "90d"}),
        ("/sla", {"as_of": as_of, **ALL_TIME, "limit": 1000}),
        ("/workload", {"as_of": as_of, **ALL_TIME}),
        ("/trends", {**ALL_TIME, "limit": 1000}),
        ("/dimensions", {}),
    ]:
        answers = [httpx.get(f"{url}{path}", params=params, timeout=30, headers=bearer()) for url in node_urls]
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[0].json() == answers[1].json(), f"the read nodes answer {path} differently"
    supervisor = httpx.get(f"{node_urls[0]}/dashboards/supervisor", params={"as_of": as_of, "period": "90d"}, headers=bearer(),
                           timeout=30).json()
    assert sum(c["count"] for c in supervisor["by_status"]) == DEMO_COMPLAINTS + RACED_COMPLAINTS, supervisor["by_status"]

    # ------------------------------------------------------------------ /metrics report the traffic
    # Collected, not asserted at once: the processes must still be stopped and checked.
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    api_metrics = [scrape(url) for url in api_urls]
    accepted_by_metrics = []
    for i, samples in enumerate(api_metrics):
        accepted = metric_sum(samples, "complaints_commands_total", outcome="accepted")
        accepted_by_metrics.append(accepted or 0)
        check(accepted == load.accepted[i],
              f"API {i}: complaints_commands_total{{outcome=accepted}} is {accepted}, it accepted {load.accepted[i]}")
        conflicts = metric_sum(samples, "complaints_commands_total", outcome="conflict")
        check(conflicts == load.conflicts[i],
              f"API {i}: complaints_commands_total{{outcome=conflict}} is {conflicts}, it answered {load.conflicts[i]} 409s")
        everything = metric_sum(samples, "complaints_commands_total")
        check(everything == load.accepted[i] + load.conflicts[i],
              f"API {i}: complaints_commands_total is {everything} over all outcomes, it answered "
              f"{load.accepted[i] + load.conflicts[i]} commands")
        seconds = metric_sum(samples, "complaints_command_seconds_count")
        check(bool(seconds) and seconds == load.accepted[i] + load.conflicts[i],
              f"API {i}: complaints_command_seconds_count is {seconds}, want > 0: one per command it carried out "
              f"({load.accepted[i] + load.conflicts[i]})")
    check(sum(accepted_by_metrics) == sum(load.accepted),
          f"accepted over both APIs by /metrics {sum(accepted_by_metrics)} != {sum(load.accepted)}")

    relay_metrics: dict[str, Any] = {}

    def relay_idle() -> bool:
        relay_metrics.update(scrape(relay_url))
        return metric_sum(relay_metrics, "complaints_relay_lag") == 0

    try:
        wait_for(relay_idle, 10, "complaints_relay_lag == 0 on the relay's /metrics")
    except AssertionError as error:
        problems.append(str(error))
    published = metric_sum(relay_metrics, "complaints_relay_published_total")
    check(published is not None and published >= len(expected),
          f"complaints_relay_published_total is {published}, the store holds {len(expected)} events")
    position = metric_sum(relay_metrics, "complaints_relay_position")
    check(position == max_position, f"complaints_relay_position is {position}, the store's max position {max_position}")
    for i, url in enumerate(node_urls):
        samples = scrape(url)
        events = metric_sum(samples, "complaints_read_node_events_total")
        check(events == len(expected), f"read node {i}: complaints_read_node_events_total is {events}, "
                                       f"it holds {len(expected)} events")
        letters = metric_sum(samples, "complaints_dead_letters_total")
        check(not letters, f"read node {i}: complaints_dead_letters_total is {letters}")

    # ------------------------------------------------------------------ SIGTERM: every process exits 0
    everyone = {"relay": relay, "api0": apis[0], "api1": apis[1], "node0": nodes[0], "node1": nodes[1]}
    stopping = time.monotonic()
    for proc in everyone.values():
        proc.send_signal(signal.SIGTERM)
    for name, proc in everyone.items():
        try:
            code = proc.wait(timeout=max(0.1, stopping + STOP_WITHIN - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"{name} after SIGTERM: exit {code} (None: still running after {STOP_WITHIN}s):\n" \
                          f"{processes.log_of(proc)[-3000:]}"
    stopped_in = time.monotonic() - stopping

    # ------------------------------------------------------------------ the files: identical, and equal the store
    positions = subprocess.run(
        [sys.executable, "-m", "complaints.cli", "positions", "--db", str(dbs[0]), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert positions.returncode == 0, positions.stderr
    report = json.loads(positions.stdout)
    assert report["store"]["relay_lag"] == 0 and report["store"]["relay_position"] == max_position, report
    assert report["topic"]["messages"] >= len(expected) and report["topic"]["dead_letters"] == 0, report
    assert report["read_node"]["events"] == len(expected) and report["read_node"]["lag"] == 0, report

    from aggregates.sla import load_sla_policy
    from consumers.cli import _jsonable  # what `complaints read-models figures` prints
    from projections import queries

    contents, figures = [], []
    now = datetime.now(UTC)
    for db in dbs:
        with duckdb.connect(str(db), read_only=True) as con:
            con.execute("SET TimeZone = 'UTC'")
            rows = con.execute(
                "SELECT complaint_id::VARCHAR, complaint_version, position, event_type, command_id, payload::VARCHAR"
                " FROM events ORDER BY complaint_id, complaint_version").fetchall()
            assert_same([(*r[:5], json.loads(r[5])) for r in rows], wanted, f"{db.name}'s events and the store's")
            assert con.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
            tables = [t for (t,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary"
                " ORDER BY table_name").fetchall()]
            content: dict[str, Any] = {}
            for table in tables:
                columns = [c for (c,) in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'"
                    " ORDER BY column_index", [table]).fetchall() if c not in NODE_LOCAL.get(table, set())]
                select = ", ".join(f'"{c}"' for c in columns)
                content[table] = (columns, con.execute(f'SELECT {select} FROM "{table}" ORDER BY ALL').fetchall())
            contents.append(content)
            figures.append(json.dumps(_jsonable(queries.dashboard(con, now=now, policy=load_sla_policy(None))),
                                      default=str, sort_keys=True))
    assert set(contents[0]) == set(contents[1]), "the read nodes hold different tables"
    assert {"events", "consumer_positions"} <= set(contents[0]) and len(contents[0]) > 5, sorted(contents[0])
    for table in contents[0]:
        assert contents[0][table][0] == contents[1][table][0], f"the read nodes' {table} tables have different columns"
        assert_same(contents[0][table][1], contents[1][table][1], f"the read nodes' {table} tables")
    assert figures[0] == figures[1], "the read nodes' dashboard figures (same now) differ"

    assert not problems, "/metrics:\n" + "\n".join(problems)
    print(f"\ntopology: ready in {ready_at - started:.1f}s, {sum(load.accepted)} accepted "
          f"({load.accepted}) and {sum(load.conflicts)} conflicts in {loaded_at - ready_at:.1f}s, "
          f"{len(expected)} events, stopped in {stopped_in:.1f}s, total {time.monotonic() - started:.1f}s")
