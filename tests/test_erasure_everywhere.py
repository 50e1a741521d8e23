"""Crypto-shredding end to end (issue 13): once a customer is erased, their personal data is
nowhere in plain text, and before that only roles allowed to see it ever do.

The backbone runs as a deployment runs it, every part a real process on loopback: the
command API (`complaints serve`) writes to a SQLite event store, `complaints relay`
publishes it to a Kafka topic of this test's own, and `complaints read-node --serve`
consumes the topic into DuckDB and answers the read API. Customer A's name (a Chinese name
with a marker), contact, attachment name (with the name in it) and the phone numbers and
e-mail address typed into the description, a note, a contact summary and a customer's
reply go in over HTTP, and so do customer B's. A copy of A's real registration with a
corrupted field, and a message that is not JSON, are published onto the topic: the read
node sets both aside as dead letters (its table, and the dead-letter topic).

Before erasure a role with `personal_data` sees A's data through the read API's audit
views and the command API; roles without it see `[masked]` and never a byte of it. Then
A is erased over HTTP, and every copy is scanned for A's (and B's) personal data as UTF-8
and as JSON `\\u` escapes: the event store's file (and its WAL), the rows of every SQLite
file, the Kafka topics consumed raw and their log segments on the broker's disk, every
DuckDB file (raw, and every row of every table), the exports (CSV and Parquet, raw and
decoded), the dead letters (topic and table), and every other file the processes left
(logs, status files). None is found; B still reads as before; A reads `[erased]`.

PostgreSQL: the same, through the desk in-process, over a `pg_dump` of the test's schema
(bytea decoded).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import secrets
import sqlite3
import string
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from aggregates.complaint import ERASED
from commands.api import create_app
from commands.personal_data import KEY_TTL_SECONDS
from complaints.identity import DevUser
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.sources import dead_letter_topic
from scripts.serving import free_port, wait_until_serving
from tests.conftest import Processes, backbone_env, postgres_settings
from tests.identity import AUTHENTICATE, bearer
from tests.test_relay import read_topic

# Who looks. department_head may see personal data; quality (read:complaint, read:audit,
# export) and analyst (read:audit, export) may not (aggregates.access.MATRIX).
PERMITTED = DevUser("lead", "Department head", ("department_head",))
QUALITY = DevUser("qa", "Quality", ("quality",))
ANALYST = DevUser("ana", "Analyst", ("analyst",))
DPO = DevUser("dpo", "Data protection officer", ("admin",))
LEGAL_BASIS = "PIPL Art. 47: the customer withdrew consent"
ALL_TIME = {"start": "2000-01-01T00:00:00+00:00", "end": "2100-01-01T00:00:00+00:00"}
# Letters no hex digest, UUID or number is made of: a marker never found by chance.
MARKER_LETTERS = "ghjkmnpqrstvwxyz"


# ---------------------------------------------------------------------------- the customers
def _marker(n: int = 8) -> str:
    return "".join(random.choices(MARKER_LETTERS, k=n))


def _mobile() -> str:
    return "1" + random.choice("3456789") + "".join(random.choices(string.digits, k=9))


@dataclass(frozen=True)
class Person:
    """A customer, their personal data (each piece unique to this run), and where it goes."""

    id: str
    chinese_name: str
    marker: str
    contact: str
    description_phone: str
    description_email: str
    note_phone: str
    contact_phone: str
    reply_phone: str

    @classmethod
    def new(cls, label: str, chinese_name: str) -> Person:
        return cls(id=f"{label}-{_marker()}", chinese_name=chinese_name, marker=_marker(),
                   contact=f"{_marker()}.contact@example.com", description_phone=_mobile(),
                   description_email=f"{_marker()}@mail.example.org", note_phone=_mobile(),
                   contact_phone=_mobile(), reply_phone=_mobile())

    @property
    def name(self) -> str:
        return f"{self.chinese_name}{self.marker}"

    @property
    def attachment(self) -> str:
        return f"{self.name}-身份证.pdf"

    def secrets(self) -> dict[str, str]:
        """What must never be seen in plain text once sealed (what -> the text)."""
        return {"name": self.name, "the name's Chinese part": self.chinese_name, "the name's marker": self.marker,
                "contact": self.contact, "the description's phone": self.description_phone,
                "the description's e-mail": self.description_email, "the note's phone": self.note_phone,
                "the contact summary's phone": self.contact_phone, "the reply's phone": self.reply_phone}

    def registration(self, command_id: str) -> dict[str, Any]:
        return {
            "command_id": command_id, "channel": "web", "customer": {"id": self.id, "tier": "regular"},
            "customer_personal": {"name": self.name, "contact": self.contact},
            "title": "宽带费用扣了两次",
            "description": f"请回电 {self.description_phone}，或发邮件到 {self.description_email}。"
                           "订单 ORD-20260101-0001",
            "product": "broadband",
            "attachments": [{"filename": self.attachment, "content_type": "application/pdf", "size_bytes": 1000}],
        }

    def handling(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("triage", {"category": "billing", "severity": "major"}),
            ("assign", {"team": "billing", "agent": "ann"}),
            ("notes", {"text": f"customer asked to call {self.note_phone} after 6pm"}),
            ("contacts", {"direction": "outbound", "visibility": "public", "channel": "phone",
                          "summary": f"called {self.contact_phone}, asked for the invoice"}),
            ("wait-on-customer", {"reason": "waiting for the invoice"}),
            ("customer-replied", {"summary": f"the customer sent the invoice from {self.reply_phone}"}),
            ("resolve", {"resolution": "refunded the second charge"}),
        ]


def handle(client: Any, person: Person, tag: str, full: bool = True) -> tuple[str, int]:
    """Register one of the person's complaints (and take it through its life when `full`):
    its id and version."""
    registered = client.post("/complaints", json=person.registration(f"{tag}-{person.id}"))
    assert registered.status_code == 201, registered.text
    complaint_id, version = registered.json()["complaint_id"], registered.json()["version"]
    for path, body in person.handling() if full else []:
        done = client.post(f"/complaints/{complaint_id}/{path}", json=body)
        assert done.status_code == 200, f"{path}: {done.status_code} {done.text}"
        version = done.json()["version"]
    return complaint_id, version


# ---------------------------------------------------------------------------- the scan
def forms(text: str) -> set[bytes]:
    """How a text may sit in bytes: UTF-8, and as JSON escapes (lower- and upper-case hex)."""
    escaped = [text.encode()]
    for upper in (False, True):
        escaped.append("".join(c if ord(c) < 128 else (f"\\u{ord(c):04X}" if upper else f"\\u{ord(c):04x}")
                               for c in text).encode())
    return set(escaped)


def found_in(blob: bytes, people: Iterable[Person]) -> list[str]:
    """Every personal datum of `people` found in `blob`, with a little context."""
    hits = []
    for person in people:
        for what, text in person.secrets().items():
            for form in forms(text):
                at = blob.find(form)
                if at >= 0:
                    hits.append(f"{person.id}'s {what} {form!r} at byte {at}: "
                                f"{blob[max(0, at - 80):at + len(form) + 80]!r}")
    return hits


class Scan:
    """Collects where personal data was found (all places, then one assertion)."""

    def __init__(self, people: Iterable[Person]) -> None:
        self.people = list(people)
        self.hits: list[str] = []
        self.places: list[str] = []

    def bytes(self, place: str, blob: bytes) -> bytes:
        self.places.append(place)
        self.hits += [f"{place}: {hit}" for hit in found_in(blob, self.people)]
        return blob

    def check(self, when: str) -> None:
        assert not self.hits, f"personal data in plain text {when}:\n" + "\n".join(self.hits[:40])


def sqlite_rows(path: Path) -> bytes:
    """Every value of every row of every table of a SQLite file (text as UTF-8, blobs as they are)."""
    parts: list[bytes] = []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                parts += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\n".join(parts)


def duckdb_rows(path: Path) -> tuple[bytes, dict[str, int]]:
    """Every value of every row of every table of a DuckDB file, and each table's row count."""
    parts: list[bytes] = []
    counts: dict[str, int] = {}
    with duckdb.connect(str(path), read_only=True) as db:
        tables = db.execute("SELECT schema_name, table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()
        for schema, table in tables:
            rows = db.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
            counts[table] = len(rows)
            for row in rows:
                parts += [v if isinstance(v, bytes) else json.dumps(v, default=str, ensure_ascii=False).encode()
                          for v in row]
    return b"\n".join(parts), counts


def record_bytes(record: Any) -> bytes:
    return b"\n".join([record.key or b"", record.value or b"",
                       *(k.encode() + b"=" + (v or b"") for k, v in record.headers or [])])


def topics_of(bootstrap: str, topic: str) -> list[str]:
    """The topic and every topic named after it (dead letters, checkpoints)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        return sorted(t for t in consumer.topics() if t == topic or t.startswith(topic + "."))
    finally:
        consumer.close()


def message_count(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return sum(consumer.end_offsets(partitions).values()) if partitions else 0
    finally:
        consumer.close()


def segment_files(bootstrap: str, topics: list[str]) -> dict[str, dict[Path, bytes]]:
    """Topic -> every file of its partitions' folders on the broker's disk (log segments,
    indexes), found through the broker's own answer to DescribeLogDirs."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_log_dirs(topics)
    finally:
        admin.close()
    files: dict[str, dict[Path, bytes]] = {t: {} for t in topics}
    for broker in described:
        for log_dir in broker["log_dirs"]:
            for found in log_dir["topics"]:
                for partition in found["partitions"]:
                    folder = Path(log_dir["log_dir"]) / f"{found['name']}-{partition['partition_index']}"
                    assert folder.is_dir(), f"the broker keeps {found['name']} in {folder}, which is not here"
                    logs = sorted(folder.glob("*.log"))
                    assert logs, f"no log segment in {folder}"
                    assert sum(p.stat().st_size for p in logs) >= partition["partition_size"], folder
                    for path in sorted(folder.iterdir()):
                        if path.is_file():
                            files[found["name"]][path] = path.read_bytes()
    for topic, found_files in files.items():
        assert found_files, f"the broker reports no log directory for topic {topic}"
    return files


def wait_for(predicate: Callable[[], Any], timeout: float, what: Callable[[], str] | str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what() if callable(what) else what}")
        time.sleep(0.2)


def wait_ready(processes: Processes, proc: Any, url: str, timeout: float = 60) -> None:
    wait_until_serving(f"{url}/health", timeout)

    def ready() -> bool:
        assert proc.poll() is None, f"{url} exited {proc.returncode}:\n{processes.log_of(proc)[-3000:]}"
        try:
            return httpx.get(f"{url}/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout, lambda: f"{url}/ready:\n{processes.log_of(proc)[-3000:]}")


def key_files(folder: Path) -> dict[str, str]:
    """The test's own keys (never the working tree's var/): COMPLAINTS_* variables."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("master.key", "chain.key"):
        (folder / name).write_bytes(secrets.token_bytes(32))
    return {"COMPLAINTS_MASTER_KEY": str(folder / "master.key"), "COMPLAINTS_CHAIN_KEY": str(folder / "chain.key"),
            "COMPLAINTS_SECRETS_KEY": str(folder / "secrets.key"), "COMPLAINTS_LINKS_KEY": str(folder / "links.key"),
            "COMPLAINTS_AUDIT_SIGNING_KEY": str(folder / "signing.key")}


def assert_sees(text: str, person: Person, *whats: str) -> None:
    secrets_ = person.secrets()
    missing = [what for what in whats if secrets_[what] not in text]
    assert not missing, f"a permitted role does not see {person.id}'s {missing}: {text[:3000]}"


# ---------------------------------------------------------------------------- SQLite, Kafka, read node
@pytest.mark.kafka
def test_after_erasure_no_copy_anywhere_holds_the_customers_data(
    kafka_bootstrap: str, topic: str, processes: Processes, tmp_path: Path
) -> None:
    started = time.monotonic()
    a, b = Person.new("A", "王秀英"), Person.new("B", "李建国")
    store, read_db = tmp_path / "events.sqlite", tmp_path / "read.duckdb"
    env = backbone_env(store, read_db, topic, kafka_bootstrap, COMPLAINTS_SOURCE="kafka",
                       COMPLAINTS_PROJECTORS="projections.models:make", **key_files(tmp_path / "keys"))

    # ------------------------------------------------------------------ the processes
    relay_url, api_url, node_url = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
    relay = processes.start("relay", "relay", env=env | {"COMPLAINTS_METRICS_PORT": relay_url.rpartition(":")[2]})
    api = processes.start("api", "serve", "--port", api_url.rpartition(":")[2], env=env)
    wait_ready(processes, relay, relay_url)  # the topics exist: the read node may start
    node = processes.start("node", "read-node", "--serve", node_url.rpartition(":")[2], env=env)
    wait_ready(processes, api, api_url)
    wait_ready(processes, node, node_url)

    commands = httpx.Client(base_url=api_url, timeout=30, headers=bearer())
    reads = httpx.Client(base_url=node_url, timeout=30)
    try:
        # -------------------------------------------------------------- what goes in
        a1, a1_version = handle(commands, a, "life")
        a2, a2_version = handle(commands, a, "second", full=False)
        b1, b1_version = handle(commands, b, "life")
        ours = {a1: a1_version, a2: a2_version, b1: b1_version}

        # Poison: a copy of A's real registration with a corrupted field, and no JSON at all.
        def a1_registration() -> Any:
            envelopes = [(r, json.loads(r.value)) for r in read_topic(kafka_bootstrap, topic)]
            return next((r for r, e in envelopes if e["complaint_id"] == a1 and e["complaint_version"] == 1), None)

        original = wait_for(a1_registration, 30, "A's registration on the topic")
        corrupted = json.loads(original.value) | {"complaint_version": 0}
        assert str(corrupted["payload"].get("sealed", "")).startswith("pd1:"), corrupted  # sealed on the wire
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        try:
            producer.send(topic, key=original.key, value=json.dumps(corrupted, ensure_ascii=False).encode(),
                          partition=original.partition)
            producer.send(topic, key=original.key, value=b'{"envelope": not json', partition=original.partition)
            producer.flush(30)
        finally:
            producer.close()

        def history(complaint_id: str, user: DevUser) -> httpx.Response:
            return reads.get(f"/audit/complaints/{complaint_id}/history", headers=bearer(user))

        def caught_up(versions: dict[str, int]) -> bool:
            # Asked as a role that may not see personal data: no key is opened by waiting.
            for complaint_id, version in versions.items():
                answer = history(complaint_id, ANALYST)
                if answer.status_code != 200 or answer.json()["events"][-1]["version"] != version:
                    return False
            return True

        wait_for(lambda: caught_up(ours), 60,
                 lambda: f"the read node to hold {ours}:\n{processes.log_of(node)[-3000:]}")
        dead_topic = dead_letter_topic(topic)
        wait_for(lambda: message_count(kafka_bootstrap, dead_topic) == 2, 30,
                 lambda: f"2 dead letters on {dead_topic}:\n{processes.log_of(node)[-3000:]}")

        # -------------------------------------------------------------- before erasure: who sees what
        seen = history(a1, PERMITTED)
        assert seen.status_code == 200, seen.text
        assert_sees(seen.text, a, "name", "contact", "the description's phone", "the description's e-mail",
                    "the note's phone", "the contact summary's phone", "the reply's phone")
        state = reads.get(f"/audit/complaints/{a1}/state", headers=bearer(PERMITTED))
        assert state.status_code == 200 and state.json()["state"]["customer_personal"] == {"name": a.name,
                                                                                          "contact": a.contact}
        assert state.json()["state"]["attachments"][0]["filename"] == a.attachment
        assert_sees(state.text, a, "the description's phone", "the description's e-mail")
        shown = commands.get(f"/complaints/{a1}", headers=bearer(PERMITTED))
        assert shown.status_code == 200 and shown.json()["customer_personal"] == {"name": a.name, "contact": a.contact}
        assert_sees(shown.text, a, "the description's phone", "the description's e-mail")
        assert shown.json()["attachments"][0]["filename"] == a.attachment

        not_permitted = Scan([a, b])
        for user in (QUALITY, ANALYST):
            for path in (f"/audit/complaints/{a1}/history", f"/audit/complaints/{a1}/state",
                         f"/audit/complaints/{a1}/state?version=1", f"/audit/complaints/{a2}/history",
                         f"/audit/complaints/{a1}/timeline", f"/audit/complaints/{a1}/sla",
                         f"/audit/search?customer={a.id}", f"/audit/search?customer={b.id}"):
                answer = reads.get(path, headers=bearer(user))
                assert answer.status_code == 200, (user.username, path, answer.text)
                not_permitted.bytes(f"read API {path} as {user.username}", answer.content)
                if "/history" in path or "/state" in path:
                    assert "[masked]" in answer.text, (path, answer.text)
            for dataset in ("events", "complaints"):
                answer = reads.get(f"/export/{dataset}", params={"format": "csv", **ALL_TIME}, headers=bearer(user))
                assert answer.status_code == 200, (user.username, dataset, answer.text)
                not_permitted.bytes(f"read API /export/{dataset} as {user.username}", answer.content)
        for complaint_id in (a1, a2, b1):
            answer = commands.get(f"/complaints/{complaint_id}", headers=bearer(QUALITY))
            assert answer.status_code == 200, answer.text
            assert answer.json()["customer_personal"] == {"name": "[masked]", "contact": "[masked]"}
            assert answer.json()["attachments"][0]["filename"] == "[masked]"
            if complaint_id == a1:  # free text: the masked copy
                phone = a.description_phone
                assert f"{phone[:3]}****{phone[-4:]}" in answer.json()["description"], answer.text
            not_permitted.bytes(f"command API /complaints/{complaint_id} as quality", answer.content)
        not_permitted.check("in an answer to a role without personal_data")

        # -------------------------------------------------------------- the copies, sealed: before erasure
        def exports(scan: Scan, when: str) -> None:
            """Exports carry no personal data, even to a role that may see it."""
            for dataset in ("events", "complaints", "sla", "supervisor.at_risk"):
                for fmt in ("csv", "parquet"):
                    answer = reads.get(f"/export/{dataset}", params={"format": fmt, **ALL_TIME},
                                       headers=bearer(PERMITTED))
                    assert answer.status_code == 200, (dataset, fmt, answer.text)
                    scan.bytes(f"/export/{dataset}?format={fmt} {when}", answer.content)
                    if fmt == "parquet":  # compressed: its rows too
                        rows = pq.read_table(io.BytesIO(answer.content)).to_pylist()
                        decoded = json.dumps(rows, default=str, ensure_ascii=False).encode()
                        scan.bytes(f"/export/{dataset}?format=parquet {when}, decoded", decoded)
                        if dataset == "events":
                            assert a.id.encode() in decoded and a1.encode() in decoded  # the export is A's too

        def kafka(scan: Scan, when: str) -> None:
            names = topics_of(kafka_bootstrap, topic)
            assert {topic, dead_topic} <= set(names), names
            for name in names:
                records = read_topic(kafka_bootstrap, name)
                consumed = scan.bytes(f"topic {name} consumed raw {when}", b"\n".join(map(record_bytes, records)))
                if name in (topic, dead_topic):
                    assert a1.encode() in consumed and b"pd1:" in consumed, name  # A's events, sealed
            for name, files in segment_files(kafka_bootstrap, names).items():
                for path, blob in files.items():
                    scan.bytes(f"{path} {when}", blob)
                logs = b"".join(blob for path, blob in files.items() if path.suffix == ".log")
                if name == topic:
                    assert a.id.encode() in logs and a1.encode() in logs, f"{name}'s segments hold plain records"
                if name == dead_topic:
                    assert a1.encode() in logs and b"pd1:" in logs and b"not json" in logs, name

        def files(scan: Scan, when: str) -> None:
            for path in sorted(tmp_path.rglob("*")):
                try:
                    blob = path.read_bytes() if path.is_file() else None
                except FileNotFoundError:  # a draft renamed into place meanwhile (status files): read there
                    continue
                if blob is not None:
                    scan.bytes(f"{path} {when}", blob)
            stored = store.read_bytes() + (Path(f"{store}-wal").read_bytes() if Path(f"{store}-wal").exists() else b"")
            assert a.id.encode() in stored and uuid.UUID(a1).hex.encode() in stored, "the store's file holds A's events"

        before = Scan([a, b])
        exports(before, "before erasure")
        kafka(before, "before erasure")
        files(before, "before erasure")
        before.check("before erasure (sealed)")

        # -------------------------------------------------------------- the erasure
        erased = commands.post(f"/customers/{a.id}/erasure", json={"legal_basis": LEGAL_BASIS}, headers=bearer(DPO))
        assert erased.status_code == 200, erased.text
        assert sorted(erased.json()["complaints"]) == sorted([a1, a2]) and erased.json()["replayed"] is False
        ours = {a1: a1_version + 1, a2: a2_version + 1, b1: b1_version}
        wait_for(lambda: caught_up(ours), 60,
                 lambda: f"PersonalDataErased in the read node:\n{processes.log_of(node)[-3000:]}")
        assert history(a1, ANALYST).json()["events"][-1]["event_type"] == "PersonalDataErased"

        # The command API: A erased, B as it was.
        for complaint_id, version in ((a1, None), (a2, None), (a1, 1)):
            answer = commands.get(f"/complaints/{complaint_id}", params={"version": version} if version else None,
                                  headers=bearer(PERMITTED))
            assert answer.status_code == 200, answer.text
            assert answer.json()["customer_personal"] == {"name": ERASED, "contact": ERASED}, answer.text
            assert answer.json()["attachments"][0]["filename"] == ERASED
            assert not found_in(answer.content, [a]), found_in(answer.content, [a])
        answer = commands.get(f"/complaints/{b1}", headers=bearer(PERMITTED))
        assert answer.json()["customer_personal"] == {"name": b.name, "contact": b.contact}
        assert_sees(answer.text, b, "the description's phone", "the description's e-mail")
        # The read API: B as it was.
        assert_sees(history(b1, PERMITTED).text, b, "name", "contact", "the description's phone", "the note's phone",
                    "the contact summary's phone", "the reply's phone")

        after = Scan([a])
        exports(after, "after erasure")
        kafka(after, "after erasure")
        after.check("after erasure (exports, Kafka)")

        # The read node keeps an opened key KEY_TTL_SECONDS: within that, A reads [erased] there too.
        def erased_on_the_read_node() -> bool:
            answers = [history(a1, PERMITTED), history(a2, PERMITTED),
                       reads.get(f"/audit/complaints/{a1}/state", headers=bearer(PERMITTED)),
                       reads.get(f"/audit/complaints/{a1}/state?version=1", headers=bearer(PERMITTED))]
            assert all(x.status_code == 200 for x in answers), [x.text for x in answers]
            return all(not found_in(x.content, [a]) and ERASED in x.text for x in answers)

        wait_for(erased_on_the_read_node, KEY_TTL_SECONDS + 15, "A to read [erased] on the read node")
        state = reads.get(f"/audit/complaints/{a1}/state", headers=bearer(PERMITTED)).json()["state"]
        assert state["customer_personal"] == {"name": ERASED, "contact": ERASED}
        assert state["attachments"][0]["filename"] == ERASED
        assert state["personal_data_erased"]["legal_basis"] == LEGAL_BASIS
        assert_sees(history(b1, PERMITTED).text, b, "name", "contact", "the description's phone")
    finally:
        commands.close()
        reads.close()

    # ------------------------------------------------------------------ the files, every process stopped
    for proc in (api, node, relay):
        processes.stop(proc)
    files(after, "after erasure")
    for path in sorted(tmp_path.rglob("*.sqlite")):
        after.bytes(f"the rows of {path}", sqlite_rows(path))
    rows, counts = duckdb_rows(read_db)
    after.bytes(f"the rows of {read_db}", rows)
    assert a1.encode() in rows and a.id.encode() in rows, "the read node's tables hold A's events"
    assert counts["dead_letters"] == 2, counts
    with duckdb.connect(str(read_db), read_only=True) as db:
        raws = [bytes(raw) for (raw,) in db.execute("SELECT raw FROM dead_letters ORDER BY id").fetchall()]
    assert any(a1.encode() in raw and b"pd1:" in raw for raw in raws), "a dead letter holds A's sealed registration"
    after.check("after erasure (files)")
    with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        keys = dict(db.execute("SELECT customer_id, wrapped IS NOT NULL FROM personal_data_keys").fetchall())
    assert keys == {a.id: False, b.id: True}, keys
    print(f"\nerasure everywhere: {len(before.places)} places scanned before erasure, {len(after.places)} after,"
          f" in {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------------------- PostgreSQL
def pg_dump_binary() -> str:
    """Debian's pg_dump of the newest server installed (as scripts/postgres finds the binaries)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
                        key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", str(p))])
    if not candidates:
        pytest.fail("no pg_dump in /usr/lib/postgresql/*/bin (scripts/postgres start installs it)")
    return str(candidates[-1])


def pg_dump(settings: Settings) -> tuple[bytes, bytes]:
    """A plain dump of the test's schema, and its bytea values decoded (the events' state)."""
    done = subprocess.run(
        [pg_dump_binary(), "-h", settings.postgres_host, "-p", str(settings.postgres_port), "-U", "complaints",
         "-d", "complaints", "-n", settings.postgres_schema, "--no-owner"],
        capture_output=True, env=os.environ | {"PGPASSWORD": "complaints"}, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    dump = done.stdout
    decoded = [bytes.fromhex(h[: len(h) // 2 * 2].decode()) for h in re.findall(rb"\\x([0-9a-fA-F]{2,})", dump)]
    return dump, b"\n".join(decoded)


@pytest.mark.postgres
def test_after_erasure_a_pg_dump_holds_none_of_the_customers_data(
    postgres_address: tuple[str, int], tmp_path: Path
) -> None:
    a, b = Person.new("A", "王秀英"), Person.new("B", "李建国")
    keys = {name.removeprefix("COMPLAINTS_").lower(): Path(value)
            for name, value in key_files(tmp_path / "keys").items()}
    settings = postgres_settings(postgres_address).model_copy(update=keys)
    desk = open_desk(settings)
    try:
        with TestClient(create_app(desk, AUTHENTICATE), headers=bearer()) as client:
            a1, _ = handle(client, a, "life")
            a2, _ = handle(client, a, "second", full=False)
            b1, _ = handle(client, b, "life")
            shown = client.get(f"/complaints/{a1}", headers=bearer(PERMITTED)).json()
            assert shown["customer_personal"]["name"] == a.name

            before = Scan([a, b])
            dump, decoded = pg_dump(settings)
            before.bytes("pg_dump before erasure", dump)
            before.bytes("pg_dump before erasure, bytea decoded", decoded)
            assert f'"customer":{{"id":"{a.id}"'.encode() in decoded and b'"sealed":"pd1:' in decoded, \
                "the dump holds A's events"
            before.check("in a pg_dump before erasure (sealed)")

            erased = client.post(f"/customers/{a.id}/erasure", json={"legal_basis": LEGAL_BASIS}, headers=bearer(DPO))
            assert erased.status_code == 200, erased.text
            assert sorted(erased.json()["complaints"]) == sorted([a1, a2])

            after = Scan([a])
            dump, decoded = pg_dump(settings)
            after.bytes("pg_dump after erasure", dump)
            after.bytes("pg_dump after erasure, bytea decoded", decoded)
            assert f'"customer":{{"id":"{a.id}"'.encode() in decoded and b"PersonalDataErased" in dump
            after.check("in a pg_dump after erasure")

            shown = client.get(f"/complaints/{a1}", headers=bearer(PERMITTED)).json()
            assert shown["customer_personal"] == {"name": ERASED, "contact": ERASED}
            assert not found_in(json.dumps(shown, ensure_ascii=False).encode(), [a])
            other = client.get(f"/complaints/{b1}", headers=bearer(PERMITTED))
            assert other.json()["customer_personal"] == {"name": b.name, "contact": b.contact}
            assert_sees(other.text, b, "the description's phone")
        with psycopg.connect(host=settings.postgres_host, port=settings.postgres_port, dbname="complaints",
                             user="complaints", password="complaints") as db:
            keys_left = dict(db.execute(f"SELECT customer_id, wrapped IS NOT NULL FROM {settings.postgres_schema}"
                                        ".personal_data_keys").fetchall())
        assert keys_left == {a.id: False, b.id: True}, keys_left
        assert desk.get_complaint(uuid.UUID(a2)).customer_personal == {"name": ERASED, "contact": ERASED}
    finally:
        desk.close()
