"""A bounded soak: mixed valid and invalid traffic through the real broker.

The service runs as it does scaled out, each part a process of its own: the command API
(`complaints serve`), the relay into Kafka, and a read node consuming from Kafka that also
serves the read API (`complaints read-node --serve`). For `COMPLAINTS_SOAK_SECONDS`
(default 300 under CI=true, 30 elsewhere) clients send, concurrently and with a pause
between requests (`COMPLAINTS_SOAK_PACE` scales it; 0 for none):

- complaints' lives through the command API (register, triage, assign, contacts, notes,
  escalations, waits, resolutions, verifications, closes, reopenings, repeated command ids);
- reads of the read API: every dashboard, read model pages, alerts, search, audit history,
  `as_of` views and exports;
- the probe's catalogue of bad input (issue 14): NUL bytes, lone surrogates, 2**63,
  bodies past the limit (declared and streamed), 40,000 unknown keys, duplicate keys, NaN,
  numbers as strings, nesting 5,000 deep, bytes that are not UTF-8, unknown query
  parameters, LIKE wildcards, instants at the ends of time, forged tokens.

It ends with:
- no 5xx, and every bad request refused with the 4xx it deserves;
- no request slower than MAX_SECONDS (10 s; typically well under one);
- each process's resident memory under MAX_RSS_MB (1,024 MB; typically 150-400 MB);
- the read node's events and complaint read model equal to the event store, once it has
  caught up and stopped.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from commands.desk import ComplaintDesk
from complaints.identity import DevUser
from complaints.settings import Settings
from complaints.store import open_desk
from scripts.serving import free_port, wait_until_serving
from tests.conftest import Processes, assert_events_equal_store, backbone_env, store_events
from tests.identity import ISSUER
from tests.test_command_api import NEW_COMPLAINT

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SOAK_SECONDS = float(os.environ.get("COMPLAINTS_SOAK_SECONDS", "300" if os.environ.get("CI") == "true" else "30"))
# The clients think between requests, as people and scripts do: a soak looks for what time
# does (leaks, stalls, a read node falling behind), not for the ceiling, which the
# benchmarks measure. At full speed it took more than a core from the rest of the suite for
# its five minutes. 0 sends as fast as the servers answer.
PACE = float(os.environ.get("COMPLAINTS_SOAK_PACE", "1"))
MAX_SECONDS = 10.0  # no request slower
MAX_RSS_MB = 1024  # no process larger
SOAKER = DevUser("soaker", "Soak client", ("department_head", "importer", "auditor", "admin"))
AUTH = {"Authorization": f"Bearer {ISSUER.token(SOAKER)}"}
JSON = {"content-type": "application/json"}


@dataclass
class Record:
    """Every answer the clients got: (what, status, seconds), and the failures seen."""

    answers: list[tuple[str, int, float]] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, status: int, seconds: float, expected: Callable[[int], bool], detail: str = "") -> None:
        with self.lock:
            self.answers.append((what, status, seconds))
            if status >= 500 or not expected(status):
                self.wrong.append(f"{what}: {status} {detail[:300]}")


def timed(record: Record, what: str, expected: Callable[[int], bool], call: Callable[[], httpx.Response]) -> Any:
    started = time.monotonic()
    try:
        response = call()
    except httpx.HTTPError as error:
        record.add(what, 599, time.monotonic() - started, lambda _: False, f"{type(error).__name__}: {error}")
        return None
    record.add(what, response.status_code, time.monotonic() - started, expected, response.text)
    return response


def ok(status: int) -> bool:
    return 200 <= status < 300


def answered(status: int) -> bool:  # done, or refused by the complaint's lifecycle
    return ok(status) or status == 409


def is_(*codes: int) -> Callable[[int], bool]:
    return lambda status: status in codes


# ---------------------------------------------------------------------------- the clients
def lives(api: str, record: Record, stop: threading.Event, seed: int, ids: list[str]) -> None:
    """Complaints through their lives, one command at a time."""
    rng = random.Random(seed)
    with httpx.Client(base_url=api, headers=AUTH, timeout=60) as c:
        while not stop.is_set():
            command_id = f"soak-{seed}-{uuid.uuid4().hex[:12]}"
            body = NEW_COMPLAINT | {"command_id": command_id, "title": rng.choice(
                ["App crashes", "Charged 100% twice", "snake_case error", "路由器过热", "Late delivery 📦"]),
                "customer": {"id": f"C-{rng.randrange(300)}", "tier": rng.choice(["vip", "regular"])}}
            done = timed(record, "register", ok, lambda: c.post("/complaints", json=body))
            if done is None or not ok(done.status_code):
                continue
            cid = done.json()["complaint_id"]
            ids.append(cid)
            if rng.random() < 0.2:  # the same command again: answered as the first time
                timed(record, "register again", ok, lambda: c.post("/complaints", json=body))
            steps: list[tuple[str, dict[str, Any]]] = [
                ("triage", {"category": rng.choice(["billing", "product_defect"]),
                            "severity": rng.choice(["minor", "normal", "major", "fatal"])}),
                ("assign", {"team": rng.choice(["billing", "hardware"]), "agent": f"agent-{rng.randrange(9)}"}),
                ("contacts", {"direction": "outbound", "channel": "phone", "summary": "called back"}),
            ]
            if rng.random() < 0.3:
                steps += [("wait-on-customer", {"reason": "need a photo"}), ("customer-replied", {"summary": "sent"})]
            if rng.random() < 0.3:
                steps += [("escalate", {"level": rng.randint(1, 3), "reason": "vip"})]
            steps += [("notes", {"text": "note " + "x" * rng.randrange(2000)}), ("resolve", {"resolution": "refunded"}),
                      ("verify", {"csat": rng.randint(1, 5), "nps": rng.randint(0, 10)}), ("close", {})]
            if rng.random() < 0.2:
                steps += [("reopen", {"reason": "again"}), ("resolve", {"resolution": "replaced"})]
            for path, fields in steps[: rng.randint(1, len(steps))]:
                if stop.is_set():
                    return
                timed(record, path, answered, lambda: c.post(f"/complaints/{cid}/{path}", json=fields))
                stop.wait(PACE * rng.uniform(0.05, 0.3))
            timed(record, "get complaint", ok, lambda: c.get(f"/complaints/{cid}"))


def reads(base: str, record: Record, stop: threading.Event, seed: int, ids: list[str]) -> None:
    """The read API, as pages and scripts ask it."""
    rng = random.Random(seed)
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as c:
        while not stop.is_set():
            minute = datetime.now(UTC) - timedelta(minutes=rng.randrange(1, 30), seconds=rng.randrange(60))
            asks = [
                ("/dashboards/supervisor", {}), ("/dashboards/supervisor", {"period": "7d", "severity": "major"}),
                ("/dashboards/product", {}), ("/dashboards/executive", {"granularity": "day"}),
                ("/dashboards/supervisor", {"as_of": minute.isoformat()}),
                ("/sla", {"limit": 50, "sort": "due_at", "order": "desc"}), ("/workload", {}),
                ("/trends", {"dimension": "channel"}), ("/alerts", {}), ("/dimensions", {}),
                ("/audit/search", {"text": rng.choice(["%", "_", "100%", "crash", "路由器"])}),
                ("/export/sla", {"format": rng.choice(["csv", "parquet"]), "period": "7d"}),
            ]
            if ids:
                asks.append((f"/audit/complaints/{rng.choice(ids)}/history", {}))
            path, params = rng.choice(asks)
            # A complaint the relay has not brought to this node yet is a 404, as it should be.
            expected = ok if "/audit/complaints/" not in path else is_(200, 404)
            timed(record, f"read {path}", expected, lambda: c.get(path, params=params))
            stop.wait(PACE * rng.uniform(0.2, 0.8))


def bad_requests(cid: str) -> list[tuple[str, Callable[[int], bool], str, str, dict[str, Any]]]:
    """(what, expected, method, path, httpx arguments) of the probe's catalogue."""
    body = json.dumps(NEW_COMPLAINT)
    big_keys = json.dumps({f"k{i:06d}": 1 for i in range(40_000)})

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 65_536

    return [
        ("NUL in a title", is_(422), "POST", "/complaints", {"json": NEW_COMPLAINT | {"title": "a\x00b"}}),
        ("NUL in a customer id", is_(422), "POST", "/complaints", {"json": NEW_COMPLAINT | {"customer": {"id": "\x00"}}}),
        ("NUL in a command id", is_(422), "POST", f"/complaints/{cid}/notes", {"json": {"text": "x", "command_id": "\x00"}}),
        ("lone surrogate", is_(422), "POST", "/complaints",
         {"content": body.replace('"C-1001"', '"\\ud83d"').encode(), "headers": JSON}),
        ("surrogate in a key", is_(422), "POST", "/complaints", {"content": (body[:-1] + ', "\\udc00": 1}').encode(),
                                                                "headers": JSON}),
        ("version 2**63", is_(422), "GET", f"/complaints/{cid}", {"params": {"version": 2**63}}),
        ("expected_version 2**63", is_(422), "POST", f"/complaints/{cid}/notes",
         {"json": {"text": "x", "expected_version": 2**63}}),
        ("1.5 MB body", is_(413), "POST", "/complaints", {"content": b"{" + b" " * 1_500_000 + b"}", "headers": JSON}),
        ("streamed 2 MB body", is_(413), "POST", "/complaints", {"content": chunks(), "headers": JSON}),
        ("40,000 unknown keys", is_(422), "POST", "/complaints", {"content": big_keys.encode(), "headers": JSON}),
        ("duplicate keys", is_(422), "POST", "/complaints", {"content": (body[:-1] + ', "title": "twice"}').encode(),
                                                            "headers": JSON}),
        ("NaN", is_(422), "POST", f"/complaints/{cid}/escalate",
         {"content": b'{"level": NaN, "reason": "x"}', "headers": JSON}),
        ("level as a string", is_(422), "POST", f"/complaints/{cid}/escalate", {"json": {"level": "2", "reason": "x"}}),
        ("level as a boolean", is_(422), "POST", f"/complaints/{cid}/escalate", {"json": {"level": True, "reason": "x"}}),
        ("expected_version on register", is_(422), "POST", "/complaints", {"json": NEW_COMPLAINT | {"expected_version": 1}}),
        ("attachment of 2**70 bytes", is_(422), "POST", "/complaints",
         {"json": NEW_COMPLAINT | {"attachments": [{"filename": "a", "size_bytes": 2**70}]}}),
        ("nested 5,000 deep", is_(422), "POST", "/complaints", {"content": b"[" * 5000 + b"]" * 5000, "headers": JSON}),
        ("not UTF-8", is_(422), "POST", "/complaints", {"content": b'{"title": "\xff\xfe"}', "headers": JSON}),
        ("not JSON", is_(422), "POST", "/complaints", {"content": b'{"title": ', "headers": JSON}),
        ("occurred_at in year 9999", is_(422), "POST", f"/complaints/{cid}/notes",
         {"json": {"text": "x", "occurred_at": "9999-12-31T23:59:59Z"}}),
        ("occurred_at in year 1", is_(422), "POST", "/complaints",
         {"json": NEW_COMPLAINT | {"occurred_at": "0001-01-01T00:00:00Z"}}),
        ("forged token", is_(401), "POST", "/complaints", {"json": NEW_COMPLAINT,
                                                          "headers": {"authorization": "Bearer e30.e30.sig"}}),
    ]


def bad_reads() -> list[tuple[str, Callable[[int], bool], str, dict[str, Any]]]:
    return [
        ("unknown parameter", is_(422), "/dashboards/supervisor", {"_": str(random.random())}),
        ("as_of in year 9999", is_(422), "/dashboards/supervisor", {"as_of": "9999-12-31T00:00:00Z"}),
        ("as_of in year 1", is_(422), "/sla", {"as_of": "0001-01-01T00:00:00Z"}),
        ("start after end", is_(422), "/trends", {"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}),
        ("offset 2**63", is_(422), "/sla", {"offset": 2**63}),
        ("surrogate in a query", is_(200), "/audit/search?text=%ED%A0%BD", {}),
        ("LIKE wildcard", is_(200), "/audit/search", {"text": "%"}),
    ]


def abuse(api: str, reader: str, record: Record, stop: threading.Event, ids: list[str]) -> None:
    """The catalogue of bad input, round and round."""
    with httpx.Client(base_url=api, headers=AUTH, timeout=60) as c, \
            httpx.Client(base_url=reader, headers=AUTH, timeout=60) as r:
        while not stop.is_set():
            cid = ids[-1] if ids else str(uuid.uuid4())
            for what, expected, method, path, kwargs in bad_requests(cid):
                timed(record, what, expected, lambda: c.request(method, path, **kwargs))
            for what, expected, path, params in bad_reads():
                timed(record, what, expected, lambda: r.get(path, params=params))
            stop.wait(0.2 + PACE * 3)


# ---------------------------------------------------------------------------- the soak
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_status(read_db: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(Path(str(read_db) + ".status.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_soak_mixed_traffic_through_the_broker(kafka_bootstrap: str, topic: str, processes: Processes,
                                               tmp_path: Path) -> None:
    store, read_db = tmp_path / "events.sqlite", tmp_path / "read.duckdb"
    api_port, read_port = free_port(), free_port()
    env = backbone_env(store, read_db, topic, kafka_bootstrap,
                       COMPLAINTS_PROJECTORS="projections.models:make",
                       COMPLAINTS_RATE_LIMIT_COMMANDS="100000/second", COMPLAINTS_RATE_LIMIT_READS="100000/second",
                       COMPLAINTS_RATE_LIMIT_COSTLY="100000/second", COMPLAINTS_LOG_LEVEL="WARNING",
                       # A batch every second: each costs a fixed ~0.25 s here (issue 16), and a
                       # trickle applied as it came kept the read node's core busy all along.
                       COMPLAINTS_CONSUMER_LINGER_SECONDS="1",
                       COMPLAINTS_SECRETS_KEY=str(tmp_path / "secrets.key"),
                       COMPLAINTS_LINKS_KEY=str(tmp_path / "links.key"))
    api = processes.start("api", "serve", "--port", str(api_port), env=env)
    relay = processes.start("relay", "relay", env=env)
    node = processes.start("read-node", "read-node", "--serve", str(read_port), env=env)
    api_url, read_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{read_port}"
    wait_until_serving(api_url + "/health", timeout=60)
    wait_until_serving(read_url + "/health", timeout=60)

    record, stop, ids = Record(), threading.Event(), []
    clients = [threading.Thread(target=lives, args=(api_url, record, stop, seed, ids), daemon=True) for seed in (1, 2)]
    clients += [threading.Thread(target=reads, args=(read_url, record, stop, 3, ids), daemon=True),
                threading.Thread(target=abuse, args=(api_url, read_url, record, stop, ids), daemon=True)]
    for client in clients:
        client.start()
    rss: dict[str, float] = Counter()
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        for name, proc in (("api", api), ("relay", relay), ("read node", node)):
            assert proc.poll() is None, f"{name} died:\n{processes.log_of(proc)[-3000:]}"
            rss[name] = max(rss[name], rss_mb(proc.pid))
        time.sleep(1)
    stop.set()
    for client in clients:
        client.join(120)
        assert not client.is_alive(), "a client did not finish"

    # The answers: no 5xx, every bad request refused as it deserves, none too slow.
    statuses = Counter(status for _, status, _ in record.answers)
    slowest = sorted(record.answers, key=lambda a: a[2])[-5:]
    summary = (f"{len(record.answers)} requests in {SOAK_SECONDS:.0f} s, statuses {dict(statuses)}, "
               f"slowest {[(w, s, round(t, 2)) for w, s, t in slowest]}, peak RSS MB {dict(rss)}")
    print(summary)
    assert not record.wrong, f"{len(record.wrong)} wrong answers, e.g. {record.wrong[:10]}\n{summary}"
    assert len(ids) >= 10 and statuses[422] > 0 and statuses[413] > 0, summary
    assert max(seconds for _, _, seconds in record.answers) < MAX_SECONDS, summary
    assert max(rss.values()) < MAX_RSS_MB, summary

    # The read models end equal to the store.
    assert processes.stop(api) == 0
    desk: ComplaintDesk = open_desk(Settings(store="sqlite", sqlite_path=store))
    try:
        expected = store_events(desk)
        wait_for(lambda: read_status(read_db).get("events") == len(expected), 180,
                 f"{len(expected)} events in the read node (status: {read_status(read_db)})")
        assert processes.stop(node) == 0 and processes.stop(relay) == 0
        assert assert_events_equal_store(read_db, desk) == len(expected)
        with duckdb.connect(str(read_db), read_only=True) as db:
            facts = dict(db.execute("SELECT complaint_id::VARCHAR, status FROM complaint_facts").fetchall())
            dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        states = {cid: desk.get_complaint(uuid.UUID(cid)).status for cid in {c for c, _, _ in expected}}
        assert facts == states, "the complaint read model differs from the store"
        assert dead == 0, "valid traffic dead-lettered"
    finally:
        desk.close()
