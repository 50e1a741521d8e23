"""The tamper-evident audit trail (issue 13): events written through the real desk, then
edited directly in the database (sqlite3 on the file, psycopg on PostgreSQL); `verify`
and `complaints audit verify` must name the first broken event and what is wrong.
Also: the signed checkpoints, a checkpointer SIGKILLed while events are written, and a
property: any single changed byte of any stored state is reported at that event or earlier.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st

from commands.event_chain import EventChain, link, split, stamp
from commands.models import AddNote, AssignComplaint, RegisterComplaint, TriageComplaint
from complaints.settings import Settings
from complaints.store import open_desk, open_store
from consumers.audit_chain import Report, checkpoint_message, links_of, log_rows, verify
from consumers.checkpoints import (
    Checkpointer, load_public_key, public_key_text, read_checkpoints, signing_key_from,
)
from tests.conftest import ROOT, FakeClock, Processes, postgres_settings
from tests.identity import OPERATOR, acting

# ---------------------------------------------------------------------------- set-up


@pytest.fixture(params=["sqlite", "postgres"])
def audit_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each store, every key and the checkpoints in this test's directory."""
    if request.param == "sqlite":
        base = Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite")
    else:
        base = postgres_settings(request.getfixturevalue("postgres_address"))
    return base.model_copy(update={
        "chain_key": tmp_path / "chain.key", "master_key": tmp_path / "master.key",
        "audit_checkpoints": tmp_path / "audit" / "checkpoints.jsonl",
        "audit_signing_key": tmp_path / "audit" / "signing.key",
        "aggregate_cache_size": 0,
    })


def populate(settings: Settings, clock: FakeClock, complaints: int = 3) -> list[UUID]:
    """Complaints registered, triaged, assigned and noted, their events interleaved:
    positions 1..n are the registrations, then each command round in turn (versions 1..4)."""
    desk = open_desk(settings, clock=clock)
    try:
        ids = [desk.register(RegisterComplaint(
            channel="wechat", customer={"id": f"C-{n}", "tier": "vip"},
            customer_personal={"name": "Zhang", "contact": "wx-zhang"}, title=f"Router {n} overheating",
            description="Smells of smoke", product="router-x2", order_ref=f"ORD-{n}",
        ), OPERATOR).complaint_id for n in range(complaints)]
        rounds = [("lead", TriageComplaint(category="product_defect", severity="major")),
                  ("lead", AssignComplaint(team="hardware", agent="ann")),
                  ("ann", AddNote(text="asked for photos"))]
        for actor, command in rounds:
            for complaint_id in ids:
                clock.advance(minutes=5)
                desk.execute(complaint_id, command, acting(actor))
    finally:
        desk.close()
    return ids


class Database:
    """Direct access to the event store's table, bypassing the application."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sqlite = settings.store == "sqlite"
        if self.sqlite:
            self.table = "stored_events"
        else:
            store = open_store(settings)
            self.table = f"{settings.postgres_schema}.{store.recorder.events_table_name}"  # type: ignore[attr-defined]
            store.close()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite:
            with sqlite3.connect(self.settings.sqlite_path) as conn:
                rows = conn.execute(sql.replace("%s", "?").replace("position", "rowid"), params).fetchall()
            conn.close()
            return rows
        s = self.settings
        with psycopg.connect(host=s.postgres_host, port=s.postgres_port, dbname=s.postgres_db, user=s.postgres_user,
                             password=s.postgres_password, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("position", "notification_id"), params)
            return cursor.fetchall() if cursor.description else []

    def _id(self, complaint_id: UUID) -> Any:
        return complaint_id.hex if self.sqlite else complaint_id

    def events(self, complaint_id: UUID) -> list[tuple[int, int, str, bytes]]:
        """(position, version, topic, state) of a complaint's events."""
        return [(r[0], r[1], r[2], bytes(r[3])) for r in self._run(
            f"SELECT position, originator_version, topic, state FROM {self.table} WHERE originator_id = %s"
            " ORDER BY originator_version", (self._id(complaint_id),))]

    def set_state(self, complaint_id: UUID, version: int, state: bytes) -> None:
        self._run(f"UPDATE {self.table} SET state = %s WHERE originator_id = %s AND originator_version = %s",
                  (state, self._id(complaint_id), version))

    def delete(self, complaint_id: UUID, version: int) -> None:
        self._run(f"DELETE FROM {self.table} WHERE originator_id = %s AND originator_version = %s",
                  (self._id(complaint_id), version))

    def insert(self, complaint_id: UUID, version: int, topic: str, state: bytes) -> int:
        self._run(f"INSERT INTO {self.table} (originator_id, originator_version, topic, state) VALUES (%s, %s, %s, %s)",
                  (self._id(complaint_id), version, topic, state))
        return self.max_position()

    def delete_after(self, position: int) -> None:
        self._run(f"DELETE FROM {self.table} WHERE position > %s", (position,))

    def max_position(self) -> int:
        return int(self._run(f"SELECT MAX(position) FROM {self.table}")[0][0])


def audit(settings: Settings, checkpoints: list[dict[str, Any]] | None = None, public_key: Any = None) -> Report:
    store = open_store(settings)
    try:
        return verify(log_rows(store.recorder, batch=7), settings.chain_key.read_bytes(), checkpoints or (),
                      public_key)
    finally:
        store.close()


def make_checkpoints(settings: Settings, every: int = 4) -> list[dict[str, Any]]:
    """Checkpoints of everything in the log, as the checkpointer signs them."""
    store = open_store(settings)
    checkpointer = Checkpointer(store.recorder, settings.audit_checkpoints_file(), signing_key(settings),
                                every=every, idle_seconds=0, batch_size=5)
    try:
        assert checkpointer.open()
        while checkpointer.step():
            pass
        checkpointer.checkpoint_now()
    finally:
        checkpointer.close()
        store.close()
    return read_checkpoints(settings.audit_checkpoints_file())


def signing_key(settings: Settings) -> Any:
    from complaints.keys import load_or_create_key

    return signing_key_from(load_or_create_key(settings.audit_signing_key))


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")}
    env.update(
        COMPLAINTS_STORE=settings.store, COMPLAINTS_SQLITE_PATH=str(settings.sqlite_path),
        COMPLAINTS_POSTGRES_HOST=settings.postgres_host, COMPLAINTS_POSTGRES_PORT=str(settings.postgres_port),
        COMPLAINTS_POSTGRES_SCHEMA=settings.postgres_schema, COMPLAINTS_CHAIN_KEY=str(settings.chain_key),
        COMPLAINTS_MASTER_KEY=str(settings.master_key),
        COMPLAINTS_AUDIT_CHECKPOINTS=str(settings.audit_checkpoints_file()),
        COMPLAINTS_AUDIT_SIGNING_KEY=str(settings.audit_signing_key), PYTHONUNBUFFERED="1",
    )
    return env


def cli(settings: Settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "complaints.cli", "audit", *args], cwd=ROOT,
                          env=env or cli_env(settings), capture_output=True, text=True, timeout=120)


def assert_names(report: Report, complaint_id: UUID, version: int, position: int, *words: str) -> None:
    assert report.broken is not None, report.summary()
    broken = report.broken
    assert (broken.aggregate_id, broken.version, broken.position) == (complaint_id, version, position), str(broken)
    for word in words:
        assert word in broken.problem, str(broken)


# ---------------------------------------------------------------------------- intact


def test_an_intact_store_verifies(audit_settings: Settings, clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    report = audit(audit_settings)
    assert report.ok, report.summary()
    assert (report.events, report.aggregates, report.chained, report.unchained) == (12, 3, 12, 0)
    checkpoints = make_checkpoints(audit_settings)
    assert [c["events"] for c in checkpoints] == [4, 8, 12]
    assert checkpoints[-1]["position"] == Database(audit_settings).max_position()
    report = audit(audit_settings, checkpoints, signing_key(audit_settings).public_key())
    assert report.ok and report.checkpoints == len(checkpoints), report.summary()
    assert report.global_hash.hex() == checkpoints[-1]["global_hash"]  # the checkpointer's chain is verify's
    store = open_store(audit_settings)
    try:
        one = verify(store.recorder, audit_settings.chain_key.read_bytes(), complaint=ids[0])
        assert one.ok and one.events == 4, one.summary()
        assert [e["intact"] for e in links_of(store.recorder, audit_settings.chain_key.read_bytes(), ids[0])] == [True] * 4
    finally:
        store.close()
    done = cli(audit_settings, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout and "12 events" in done.stdout and "signed checkpoint(s) hold" in done.stdout


# ---------------------------------------------------------------------------- tampering


def test_a_changed_payload_byte_is_named(audit_settings: Settings, clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    db = Database(audit_settings)
    position, version, _, state = db.events(ids[1])[1]  # version 2: Triaged
    assert b'"severity":"major"' in state
    db.set_state(ids[1], version, state.replace(b'"severity":"major"', b'"severity":"minor"'))
    report = audit(audit_settings)
    assert_names(report, ids[1], 2, position, "link mismatch", "stored bytes were changed")
    assert report.events == position - 1  # everything before it held
    # The CLI says the same, and exits 1.
    done = cli(audit_settings, "verify", "--no-checkpoints")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"position {position}: aggregate {ids[1]} version 2 (Complaint.Triaged)" in done.stderr
    assert "BROKEN" in done.stderr
    # One complaint's chain, and the audit view's links: that event alone.
    done = cli(audit_settings, "verify", "--complaint", str(ids[1]))
    assert done.returncode == 1 and "version 2" in done.stderr, done.stdout + done.stderr
    done = cli(audit_settings, "verify", "--complaint", str(ids[0]))
    assert done.returncode == 0, done.stdout + done.stderr
    store = open_store(audit_settings)
    try:
        links = links_of(store.recorder, audit_settings.chain_key.read_bytes(), ids[1])
    finally:
        store.close()
    assert [(e["version"], e["intact"]) for e in links] == [(1, True), (2, False), (3, True), (4, True)]
    assert links[1]["position"] == position and "changed" in links[1]["problem"]


def test_a_deleted_event_is_named(audit_settings: Settings, clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    db = Database(audit_settings)
    events = db.events(ids[0])
    db.delete(ids[0], 2)
    report = audit(audit_settings)
    assert_names(report, ids[0], 3, events[2][0], "version 2 missing: 3 follows 1", "deleted")
    # A whole aggregate's first event deleted.
    db.delete(ids[0], 1)
    report = audit(audit_settings)
    assert_names(report, ids[0], 3, events[2][0], "version 1 to 2 missing")


def test_two_swapped_events_are_named(audit_settings: Settings, clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    db = Database(audit_settings)
    events = db.events(ids[2])
    (p2, _, _, s2), (_, _, _, s3) = events[1], events[2]
    db.set_state(ids[2], 2, s3)
    db.set_state(ids[2], 3, s2)
    report = audit(audit_settings)
    assert_names(report, ids[2], 2, p2, "link mismatch", "versions 2 and 3 are swapped")
    done = cli(audit_settings, "verify", "--no-checkpoints")
    assert done.returncode == 1 and "swapped" in done.stderr and str(ids[2]) in done.stderr, done.stderr


def test_events_reordered_by_their_versions_are_named(audit_settings: Settings, clock: FakeClock) -> None:
    """Versions renumbered (3 stored at 2's position and 2 at 3's): out of order."""
    ids = populate(audit_settings, clock)
    db = Database(audit_settings)
    events = db.events(ids[0])
    db.delete(ids[0], 2)
    db.delete(ids[0], 3)
    # Re-inserted in the other order, at the log's end: version 3 first.
    db.insert(ids[0], 3, events[2][2], events[2][3])
    p2 = db.insert(ids[0], 2, events[1][2], events[1][3])
    # Version 4 (at its old position) now follows version 1 in the log.
    assert_names(audit(audit_settings), ids[0], 4, events[3][0], "versions out of order",
                 f"stored before version 2 (at position {p2})")


def test_an_inserted_event_with_a_forged_link_is_named(audit_settings: Settings, clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    db = Database(audit_settings)
    events = db.events(ids[0])
    last_position, _, topic, last_state = events[-1]
    body, last_link = split(last_state)
    assert last_link is not None
    forged_body = body.replace(b"asked for photos", b"customer withdrew")
    wrong_key = os.urandom(32)
    forged = stamp(forged_body, link(wrong_key, last_link, ids[0], 5, topic, forged_body))
    position = db.insert(ids[0], 5, topic, forged)
    report = audit(audit_settings)
    assert_names(report, ids[0], 5, position, "link mismatch", "forged")
    done = cli(audit_settings, "verify", "--no-checkpoints")
    assert done.returncode == 1 and f"aggregate {ids[0]} version 5" in done.stderr, done.stderr

    # A whole new aggregate, its first event forged.
    db.delete(ids[0], 5)
    stranger = uuid4()
    first_topic, first_state = db.events(ids[1])[0][2:]
    first_body = split(first_state)[0]
    position = db.insert(stranger, 1, first_topic, stamp(first_body, link(wrong_key, bytes(32), stranger, 1,
                                                                          first_topic, first_body)))
    assert_names(audit(audit_settings), stranger, 1, position, "link mismatch")

    # Without a link at all, pretending to be from before the chain: refused after the chain began.
    db.delete(stranger, 1)
    position = db.insert(stranger, 1, first_topic, first_body)
    assert_names(audit(audit_settings), stranger, 1, position, "no chain link", "chain began")


def test_an_inserted_event_with_a_copied_link_is_named(audit_settings: Settings, clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    db = Database(audit_settings)
    _, _, topic, other_state = db.events(ids[1])[-1]  # another complaint's last event, link and all
    position = db.insert(ids[0], 5, topic, other_state)
    assert_names(audit(audit_settings), ids[0], 5, position, "link mismatch", f"copied from aggregate {ids[1]} version 4")
    # The same complaint's previous event copied as its next one.
    db.delete(ids[0], 5)
    own_last = db.events(ids[0])[-1][3]
    position = db.insert(ids[0], 5, topic, own_last)
    assert_names(audit(audit_settings), ids[0], 5, position, "link mismatch", f"copied from aggregate {ids[0]} version 4")


def test_a_truncated_tail_after_a_checkpoint_is_named(audit_settings: Settings, clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    checkpoints = make_checkpoints(audit_settings)
    public_key = signing_key(audit_settings).public_key()
    db = Database(audit_settings)
    end = db.max_position()
    assert checkpoints[-1]["position"] == end
    db.delete_after(end - 2)  # the last two events (both complaints' last notes)
    # Every aggregate's chain still holds: only the checkpoints show it.
    assert audit(audit_settings).ok
    report = audit(audit_settings, checkpoints, public_key)
    assert report.broken is not None and report.broken.position == end, report.summary()
    assert "truncated" in report.broken.problem and f"before the signed checkpoint at position {end}" in report.broken.problem
    done = cli(audit_settings, "verify")
    assert done.returncode == 1 and "truncated" in done.stderr, done.stdout + done.stderr
    assert ids


def test_an_aggregates_last_event_removed_before_a_checkpoint_is_found(audit_settings: Settings,
                                                                        clock: FakeClock) -> None:
    ids = populate(audit_settings, clock)
    populate_more(audit_settings, clock, ids[2])  # the log goes on after ids[0]'s last event
    checkpoints = make_checkpoints(audit_settings)
    public_key = signing_key(audit_settings).public_key()
    db = Database(audit_settings)
    position = db.events(ids[0])[-1][0]
    db.delete(ids[0], 4)  # its last event: its own chain still holds
    assert audit(audit_settings).ok
    report = audit(audit_settings, checkpoints, public_key)
    assert report.broken is not None and report.broken.aggregate_id is None, report.summary()
    problem = report.broken.problem
    assert report.broken.position == checkpoints[2]["position"] and position <= report.broken.position
    assert "does not hash to the checkpoint" in problem and "1 fewer events than it counts" in problem, problem
    assert f"after position {checkpoints[1]['position']} (the last checkpoint that held)" in problem, problem


def test_what_it_cannot_see_an_aggregates_last_event_removed_after_the_last_checkpoint(
        audit_settings: Settings, clock: FakeClock) -> None:
    """The documented limit: after the last checkpoint, an aggregate's newest events (and
    the log's) can be removed without a trace by someone who can write the database."""
    ids = populate(audit_settings, clock)
    checkpoints = make_checkpoints(audit_settings)
    populate_more(audit_settings, clock, ids[1])
    Database(audit_settings).delete(ids[1], 5)
    assert audit(audit_settings, checkpoints, signing_key(audit_settings).public_key()).ok


def populate_more(settings: Settings, clock: FakeClock, complaint_id: UUID) -> None:
    desk = open_desk(settings, clock=clock)
    try:
        clock.advance(minutes=5)
        desk.execute(complaint_id, AddNote(text="called back"), acting("ann"))
    finally:
        desk.close()


def test_altered_or_foreign_checkpoints_are_refused(audit_settings: Settings, clock: FakeClock,
                                                    tmp_path: Path) -> None:
    populate(audit_settings, clock)
    checkpoints = make_checkpoints(audit_settings)
    public_key = signing_key(audit_settings).public_key()
    altered = [dict(c) for c in checkpoints]
    altered[0]["events"] = altered[0]["events"] - 1
    report = audit(audit_settings, altered, public_key)
    assert report.broken is not None and "signature does not verify" in report.broken.problem
    other = signing_key_from(os.urandom(32)).public_key()
    report = audit(audit_settings, checkpoints, other)
    assert report.broken is not None and "not by the given public key" in report.broken.problem
    # The operator's copy and public key, given on the command line (PEM and hex both read).
    copy = tmp_path / "elsewhere.jsonl"
    copy.write_text("".join(json.dumps(c) + "\n" for c in altered))
    printed = cli(audit_settings, "public-key")  # as an operator saves it: a comment line, then PEM
    assert printed.returncode == 0 and printed.stdout.startswith("# key id "), printed.stdout + printed.stderr
    (tmp_path / "public.pem").write_text(printed.stdout)
    done = cli(audit_settings, "verify", "--checkpoints", str(copy), "--public-key", str(tmp_path / "public.pem"))
    assert done.returncode == 1 and "signature does not verify" in done.stderr, done.stdout + done.stderr
    copy.write_text("".join(json.dumps(c) + "\n" for c in checkpoints))
    done = cli(audit_settings, "verify", "--checkpoints", str(copy), "--public-key", str(tmp_path / "public.pem"))
    assert done.returncode == 0 and f"{len(checkpoints)} signed checkpoint(s) hold" in done.stdout, done.stderr
    printed = cli(audit_settings, "public-key", "--hex")
    assert printed.returncode == 0 and load_public_key(printed.stdout) == public_key
    assert load_public_key(public_key_text(public_key)) == public_key


def test_events_from_before_the_chain_are_unchained_not_broken(audit_settings: Settings, clock: FakeClock) -> None:
    desk = open_desk(audit_settings, clock=clock)
    desk.protect(desk.keyring, None)  # as a desk before the chain existed
    old = desk.register(RegisterComplaint(
        channel="wechat", customer={"id": "C-9", "tier": "vip"}, customer_personal={"name": "Li", "contact": "wx-li"},
        title="old one", description="before the chain", product="router-x2", order_ref="ORD-9"),
        OPERATOR).complaint_id
    clock.advance(minutes=5)
    desk.execute(old, TriageComplaint(category="product_defect", severity="minor"), acting("lead"))
    desk.close()
    ids = populate(audit_settings, clock, complaints=2)
    desk = open_desk(audit_settings, clock=clock)
    clock.advance(minutes=5)
    desk.execute(old, AddNote(text="chained from here"), acting("ann"))  # the old complaint goes on, chained
    desk.close()
    report = audit(audit_settings)
    assert report.ok, report.summary()
    assert (report.unchained, report.chained) == (2, 9)
    store = open_store(audit_settings)
    try:
        links = links_of(store.recorder, audit_settings.chain_key.read_bytes(), old)
    finally:
        store.close()
    assert [(e["link"] is None, e["intact"]) for e in links] == [(True, True), (True, True), (False, True)]
    # An event of a chained complaint stripped of its link is broken, not "from before the chain".
    db = Database(audit_settings)
    position, _, _, state = db.events(ids[0])[1]
    db.set_state(ids[0], 2, split(state)[0])
    assert_names(audit(audit_settings), ids[0], 2, position, "no chain link, after a chained version 1")


# ---------------------------------------------------------------------------- the checkpointer


def test_the_checkpointer_resumes_after_a_torn_line_without_repeating_a_position(
        sqlite_settings: Settings, clock: FakeClock, tmp_path: Path) -> None:
    settings = sqlite_settings.model_copy(update={
        "chain_key": tmp_path / "chain.key", "master_key": tmp_path / "master.key",
        "audit_signing_key": tmp_path / "signing.key"})
    populate(settings, clock, complaints=2)
    first = make_checkpoints(settings, every=3)
    path = settings.audit_checkpoints_file()
    with open(path, "ab") as file:
        file.write(b'{"position":99,"global_ha')  # a crash in the middle of a line
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text().splitlines()[-1])
    assert read_checkpoints(path) == first  # the torn line is not a checkpoint
    populate_more(settings, clock, populate(settings, clock, complaints=1)[0])
    again = make_checkpoints(settings, every=3)
    positions = [c["position"] for c in again]
    assert again[:len(first)] == first and positions == sorted(set(positions))
    assert path.read_bytes().endswith(b"\n") and b'"global_ha\n' not in path.read_bytes()
    # A second checkpointer on the same file stands by.
    store = open_store(settings)
    one = Checkpointer(store.recorder, path, signing_key(settings))
    two = Checkpointer(store.recorder, path, signing_key(settings))
    try:
        assert one.open() and not two.open()
    finally:
        one.close()
        two.close()
        store.close()
    assert audit(settings, again, signing_key(settings).public_key()).ok


def test_the_checkpointer_in_a_thread_checkpoints_when_idle_and_when_closed(
        sqlite_settings: Settings, clock: FakeClock, tmp_path: Path) -> None:
    settings = sqlite_settings.model_copy(update={
        "chain_key": tmp_path / "chain.key", "master_key": tmp_path / "master.key",
        "audit_signing_key": tmp_path / "signing.key"})
    ids = populate(settings, clock, complaints=2)
    path = settings.audit_checkpoints_file()
    store = open_store(settings)
    checkpointer = Checkpointer(store.recorder, path, signing_key(settings), every=1000, idle_seconds=0.3,
                                poll_interval=0.05)
    try:
        checkpointer.start_background()
        deadline = time.monotonic() + 20
        while not read_checkpoints(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(c["position"], c["events"]) for c in read_checkpoints(path)] == [(8, 8)]  # idle: all 8 covered
        checkpointer.idle_seconds = 0  # from now on, only on close
        populate_more(settings, clock, ids[0])
        deadline = time.monotonic() + 20
        while checkpointer.events < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        checkpointer.close()
        store.close()
    checkpoints = read_checkpoints(path)
    assert [(c["position"], c["events"]) for c in checkpoints] == [(8, 8), (9, 9)]
    assert audit(settings, checkpoints, signing_key(settings).public_key()).ok


def test_the_checkpointer_survives_sigkill_while_events_are_written(
        sqlite_settings: Settings, tmp_path: Path, processes: Processes) -> None:
    settings = sqlite_settings.model_copy(update={
        "chain_key": tmp_path / "chain.key", "master_key": tmp_path / "master.key",
        "audit_signing_key": tmp_path / "signing.key", "aggregate_cache_size": 0})
    desk = open_desk(settings)
    stop = threading.Event()
    written = [0]

    def write() -> None:
        n = 0
        while not stop.is_set():
            complaint_id = desk.register(RegisterComplaint(
                channel="wechat", customer={"id": f"C-{n}", "tier": "vip"},
                customer_personal={"name": "Wang", "contact": "wx-wang"}, title=f"complaint {n}",
                description="load", product="router-x2", order_ref=f"ORD-{n}"), OPERATOR).complaint_id
            desk.execute(complaint_id, TriageComplaint(category="product_defect", severity="minor"), acting("lead"))
            desk.execute(complaint_id, AddNote(text=f"note {n}"), acting("ann"))
            written[0] += 3
            n += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    env = cli_env(settings) | {"COMPLAINTS_AUDIT_CHECKPOINT_EVERY": "7", "COMPLAINTS_AUDIT_CHECKPOINT_IDLE_SECONDS": "0"}
    path = settings.audit_checkpoints_file()
    rng = random.Random(13)
    try:
        for _ in range(5):
            proc = processes.start("checkpoints", "audit", "checkpoints", env=env)
            processes.wait_for_log(proc, "audit checkpointer running", timeout=60)
            time.sleep(rng.uniform(0.1, 0.8))
            processes.kill(proc)
            read_checkpoints(path)  # whole lines parse after every kill
    finally:
        stop.set()
        writer.join(30)
        desk.close()
    assert len(read_checkpoints(path)) >= 2  # the killed ones signed checkpoints while events came in
    done = subprocess.run([sys.executable, "-m", "complaints.cli", "audit", "checkpoints", "--once"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    checkpoints = read_checkpoints(path)
    positions = [c["position"] for c in checkpoints]
    assert len(checkpoints) >= 5 and positions == sorted(set(positions)), positions  # no position twice
    public_key = signing_key(settings).public_key()
    for checkpoint in checkpoints:
        public_key.verify(bytes.fromhex(checkpoint["signature"]), checkpoint_message(checkpoint))
    report = audit(settings, checkpoints, public_key)
    assert report.ok and report.checkpoints == len(checkpoints), report.summary()
    assert checkpoints[-1]["position"] == Database(settings).max_position()
    assert checkpoints[-1]["events"] == report.events == written[0] > 0


# ---------------------------------------------------------------------------- any changed byte

KEY = bytes(range(32))
TOPICS = ["aggregates.complaint:Complaint.Registered", "aggregates.complaint:Complaint.NoteAdded",
          "aggregates.alert:Alert.Raised"]


def chained_rows(sequence: list[tuple[int, int, str]]) -> list[tuple[int, str, int, str, bytes]]:
    """Rows as SQLite holds them, for a sequence of (aggregate, topic, text) events chained by
    the desk's own EventChain."""
    chain = EventChain(KEY)
    ids = [UUID(int=n + 1) for n in range(8)]
    versions: dict[int, int] = {}
    rows = []
    for position, (aggregate, topic, text) in enumerate(sequence, 1):
        version = versions[aggregate] = versions.get(aggregate, 0) + 1
        body = json.dumps({"timestamp": {"_type_": "datetime_iso", "_data_": "2026-12-01T00:00:00+00:00"},
                           "text": text, "actor": "ann"}, separators=(",", ":"), ensure_ascii=False).encode()
        rows.append((position, ids[aggregate].hex, version, TOPICS[topic],
                     chain.append(ids[aggregate], version, TOPICS[topic], body)))
    return rows


events = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2), st.text(max_size=40)), min_size=1, max_size=40)


@hypothesis_settings(max_examples=400, deadline=None)
@given(sequence=events, data=st.data())
def test_any_changed_byte_is_reported_at_its_event_or_before(sequence: list[tuple[int, int, str]],
                                                             data: st.DataObject) -> None:
    rows = chained_rows(sequence)
    assert verify(rows, KEY).ok
    index = data.draw(st.integers(0, len(rows) - 1), label="event")
    position, originator_id, version, topic, state = rows[index]
    at = data.draw(st.integers(0, len(state) - 1), label="byte")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != state[at]), label="value")
    changed = list(rows)
    changed[index] = (position, originator_id, version, topic, state[:at] + bytes([value]) + state[at + 1:])
    report = verify(changed, KEY)
    assert report.broken is not None, f"byte {at} of event {index} changed, not detected"
    assert report.broken.position is not None and report.broken.position <= position, str(report.broken)


@pytest.fixture(scope="module")
def desk_rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], bytes]]:
    """The rows of a store written by the real desk (5 complaints, 4 events each)."""
    from datetime import UTC, datetime

    directory = tmp_path_factory.mktemp("desk-rows")
    settings = Settings(store="sqlite", sqlite_path=directory / "events.sqlite", chain_key=directory / "chain.key",
                        master_key=directory / "master.key")
    populate(settings, FakeClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC)), complaints=5)
    store = open_store(settings)
    rows = list(log_rows(store.recorder))
    store.close()
    yield rows, settings.chain_key.read_bytes()


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_changed_byte_of_the_desks_events_is_reported(desk_rows: tuple[list[Any], bytes],
                                                          data: st.DataObject) -> None:
    rows, key = desk_rows
    index = data.draw(st.integers(0, len(rows) - 1), label="event")
    position, originator_id, version, topic, state = rows[index]
    at = data.draw(st.integers(0, len(state) - 1), label="byte")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != state[at]), label="value")
    changed = list(rows)
    changed[index] = (position, originator_id, version, topic, state[:at] + bytes([value]) + state[at + 1:])
    report = verify(changed, key)
    assert report.broken is not None and report.broken.position <= position, (index, at, report.summary())
