"""Rebuild read models from scratch into a fresh DuckDB file, then swap it in atomically.

Two sources:
- the event store (`rebuild(path, store)`): every Complaint event, read in big pages, into
  a new `events` table, then every read model built from it in one bulk pass, with the
  consumer position of the in-process log source set to the last event read;
- the read node's own `events` table (`rebuild(path, None, models=[...])`): the named
  read models rebuilt from the events the node already has, everything else (events,
  positions, dead letters, other models) copied over unchanged.
(From the start of a Kafka topic: `rebuild_from_kafka`, which lets a read node
read the topic into the fresh file.)

The store's rows are read without building domain objects, in big pages, and turned
into the published envelope by the one decoder of stored events (`stored_events`, the
relay's and the in-process follower's too) in a reader thread; a page of envelopes goes
to DuckDB as Arrow, and one JSON parse per envelope gives the `events` columns.

The new file is built next to the live one and swapped in with os.replace: readers of
the old file keep being served until then (a read node in another process must be
stopped for the swap, or must reopen its file after it).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Queue
from threading import Thread
from typing import Any

import duckdb
import pyarrow as pa
from tqdm import tqdm

from aggregates.sla import SlaPolicy
from aggregates.envelope import PUBLISHED_TOPIC_PREFIXES
from consumers.bookkeeping import RUNNER_SCHEMA
from consumers.stored_events import wire_writer
from projections import models as read_models
from projections.event_log import EventLog
from projections.facts import Scope

log = logging.getLogger(__name__)

PAGE = 50_000
LOG_SOURCE = "log"  # a read node's name for the in-process event store source


@dataclass
class RebuildReport:
    path: Path
    events: int
    complaints: int
    models: list[str]
    position: int | None  # the last event position included
    seconds: float
    swapped: bool
    phases: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        where = str(self.path) if self.swapped else f"{self.path} (not swapped in)"
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in self.phases.items())
        return (f"rebuilt {', '.join(self.models)} from {self.events:,} events of "
                f"{self.complaints:,} complaints in {self.seconds:.1f}s ({phases}) -> {where}")


# ------------------------------------------------------------------------- reading the store
def _sqlite_file(recorder: Any) -> str | None:
    """The SQLite file behind an eventsourcing recorder, if that is what it is."""
    pool = getattr(getattr(recorder, "datastore", None), "pool", None)
    name = getattr(pool, "db_name", None)
    if type(recorder).__module__ != "eventsourcing.sqlite" or not name or getattr(pool, "is_sqlite_memory_mode", True):
        return None
    return str(name)


def envelope_pages(store: Any, page: int = PAGE, start: int = 1) -> Iterator[tuple[int, pa.Table]]:
    """The store's notifications from `start` on, in pages: (rows read, an Arrow table of
    the published events' envelopes as JSON text)."""
    recorder = store.recorder
    write, prefix = wire_writer(store.mapper), PUBLISHED_TOPIC_PREFIXES
    for rows in _row_pages(recorder, page, start):
        envelopes = [write(topic, (oid if type(oid) is str else str(oid)).encode(), version, position, state)
                     for position, oid, version, topic, state in rows if topic.startswith(prefix)]
        # One buffer and its offsets: several times faster than pa.array() of many bytes objects.
        offsets = pa.array(itertools.accumulate(map(len, envelopes), initial=0), pa.int64())
        column = pa.Array.from_buffers(pa.large_string(), len(envelopes),
                                       [None, offsets.buffers()[1], pa.py_buffer(b"".join(envelopes))])
        yield len(rows), pa.table([column], names=["envelope"])


def _row_pages(recorder: Any, page: int, start: int) -> Iterator[list[tuple[Any, ...]]]:
    path = _sqlite_file(recorder)
    if path is None:
        while notes := recorder.select_notifications(start, page):
            yield [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes]
            start = notes[-1].id + 1
        return
    # Plain tuples from our own read-only connection: no Row objects, no UUID parsing. (The
    # relay's `NotificationRows`, through the recorder's connection, reads a million rows
    # about 0.9 s slower: measured with bench.read_models --rebuild-child.)
    table = recorder.events_table_name
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        while rows := con.execute(
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {table}"
            " WHERE rowid >= ? ORDER BY rowid LIMIT ?", (start, page),
        ).fetchall():
            yield rows
            start = rows[-1][0] + 1
    finally:
        con.close()


_ENVELOPE_FIELDS = ["complaint_id", "complaint_version", "position", "event_type", "event_version",
                    "occurred_at", "recorded_at", "actor", "command_id", "correlation_id", "payload"]
_INSERT_ENVELOPES = f"""
    INSERT INTO events ({", ".join(_ENVELOPE_FIELDS)}, applied_at)
    SELECT m[1]::UUID, m[2]::INTEGER, m[3]::BIGINT, m[4], m[5]::INTEGER, m[6]::TIMESTAMPTZ,
           m[7]::TIMESTAMPTZ, m[8], m[9], m[10], m[11]::JSON, now()
    FROM (SELECT json_extract_string(envelope, {["$." + f for f in _ENVELOPE_FIELDS]!r}) AS m FROM _page)
"""


@contextmanager
def _key_added_after(db: duckdb.DuckDBPyConnection, table: str) -> Iterator[None]:
    """Load `table` without its primary key, then add the key: one index build, not one
    index insertion per row (the table is new and the store holds each event once)."""
    ddl = db.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ? AND NOT temporary",
                     [table]).fetchone()[0]  # type: ignore[index]
    key = re.search(r",\s*(PRIMARY KEY\s*\([^)]*\))", ddl)
    if key is None or db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]:  # type: ignore[index]
        yield
        return
    db.execute(f"DROP TABLE {table}")
    db.execute(ddl.replace(key.group(0), ""))
    yield
    db.execute(f"ALTER TABLE {table} ADD {key.group(1)}")


def load_events(db: duckdb.DuckDBPyConnection, store: Any, page: int = PAGE,
                progress: Callable[[int], None] | None = None) -> int:
    """Copy every Complaint event of the store (anything with `recorder` and `mapper`) into
    a new `events` table; returns how many."""
    # One DuckDB thread: the other core is the reader thread's (Python, fetching pages).
    threads = db.execute("SELECT current_setting('threads')").fetchone()[0]  # type: ignore[index]
    db.execute("SET threads = 1")
    try:
        with _key_added_after(db, "events"):
            return _load_events(db, store, page, progress)
    finally:
        db.execute(f"SET threads = {int(threads)}")


def _load_events(db: duckdb.DuckDBPyConnection, store: Any, page: int,
                 progress: Callable[[int], None] | None) -> int:
    count = 0
    for read, envelopes in _prefetched(envelope_pages(store, page)):
        db.register("_page", envelopes)
        try:
            count += db.execute(_INSERT_ENVELOPES).fetchone()[0]  # type: ignore[index]
        finally:
            db.unregister("_page")
        if progress:
            progress(read)
    return count


def _prefetched(pages: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Read and decode the next pages in a thread while DuckDB (which releases the GIL)
    inserts this one."""
    done = object()
    queue: Queue[Any] = Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in pages:
                queue.put(item)
            queue.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            queue.put(error)

    Thread(target=produce, name="rebuild-reader", daemon=True).start()
    while (item := queue.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


# ---------------------------------------------------------------------------------- building
def build_models(db: duckdb.DuckDBPyConnection, names: Sequence[str] | None = None,
                 policy: SlaPolicy | None = None,
                 done: Callable[[str], None] | None = None) -> list[str]:
    """Build read models from the whole `events` table in one bulk pass.

    The events are parsed and the facts computed once, for all the models.
    """
    projectors = read_models.make(names, policy)
    scope = Scope()
    try:
        for p in projectors:
            p.create_schema(db)
            p.prepare(db, "events")
            p.build(db, scope)
            _set_version(db, p.name, p.schema_version)
            if done:
                done(p.name)
    finally:
        scope.release(db)
    return [p.name for p in projectors]


def _set_version(db: duckdb.DuckDBPyConnection, name: str, version: int) -> None:
    db.execute("INSERT OR REPLACE INTO read_model_meta VALUES (?, ?, ?)", [name, version, datetime.now(UTC)])


def _fresh(path: Path) -> tuple[Path, duckdb.DuckDBPyConnection]:
    tmp = path.with_name(f"{path.name}.rebuild-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}.wal")):
        leftover.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect(str(tmp))
    db.execute("SET TimeZone = 'UTC'")
    db.execute(RUNNER_SCHEMA)  # a rebuilt file is a read node's file
    EventLog().create_schema(db)
    return tmp, db


def swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` by `tmp` atomically; refuse while another process writes `path`.

    A live file's write-ahead log would be replayed onto the new file at its next open,
    so the swap happens only when the old file is closed and checkpointed.
    """
    wal = Path(f"{path}.wal")
    if path.exists():
        try:
            old = duckdb.connect(str(path))  # fails while a read node holds the file
        except duckdb.Error as error:
            raise RuntimeError(
                f"{path} is open in another process (a running read node?): stop it and run the"
                f" rebuild again, or swap {tmp} in yourself once it is stopped ({error})"
            ) from error
        old.execute("CHECKPOINT")
        old.close()
    if wal.exists():
        raise RuntimeError(f"{wal} still exists after a checkpoint: not swapping {tmp} in")
    os.replace(tmp, path)


def rebuild(
    path: str | Path,
    source: Any | None,
    models: Sequence[str] | None = None,
    *,
    policy: SlaPolicy | None = None,
    page: int = PAGE,
    progress: bool = True,
    swap: bool = True,
    on_swap: Callable[[Callable[[], None]], None] | None = None,
) -> RebuildReport:
    """Rebuild `models` (all when None) into a fresh file and swap it in for `path`.

    `source`: the event store to read every event from (anything with `recorder` and
    `mapper`: the composition root's `EventStore`, or a desk), or None to rebuild from the `events` table already in `path`. `on_swap`, if given, is
    called with the swap function: an in-process read node closes its file, calls it and
    reopens.
    """
    path = Path(path)
    started = time.perf_counter()
    phases: dict[str, float] = {}
    tmp, db = _fresh(path)
    try:
        t = time.perf_counter()
        if source is not None:
            total = source.recorder.max_notification_id() or 0
            with tqdm(total=total, desc="reading events", unit="ev", disable=not progress,
                      unit_scale=True) as bar:
                count = load_events(db, source, page, bar.update)
            position = total or None
            names = list(models or read_models.MODELS)
            phases["read"] = time.perf_counter() - t
        else:
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist: rebuild it from the event store")
            names = list(models or read_models.MODELS)
            count, position = _copy_live(db, path, names)
            phases["copy"] = time.perf_counter() - t
        t = time.perf_counter()
        with tqdm(total=len(names), desc="building read models", unit="model", disable=not progress) as bar:
            build_models(db, names, policy, lambda _: bar.update(1))
        phases["build"] = time.perf_counter() - t
        _set_version(db, EventLog.name, EventLog.schema_version)
        if source is not None and position is not None:
            db.execute(
                "INSERT OR REPLACE INTO consumer_positions VALUES (?, 0, ?, ?)",
                [LOG_SOURCE, position + 1, datetime.now(UTC)],
            )
        complaints = db.execute("SELECT count(DISTINCT complaint_id) FROM events").fetchone()[0]  # type: ignore[index]
        db.execute("CHECKPOINT")
    finally:
        db.close()
    swapped = False
    if swap:
        if on_swap is not None:
            on_swap(lambda: swap_in(tmp, path))
        else:
            swap_in(tmp, path)
        swapped = True
    report = RebuildReport(path if swapped else tmp, count, complaints, names, position,
                           time.perf_counter() - started, swapped, phases)
    log.info("%s", report.summary())
    return report


def _copy_live(db: duckdb.DuckDBPyConnection, path: Path, rebuilt: Sequence[str]) -> tuple[int, int | None]:
    """Copy the live file's tables except the rebuilt models' (events, positions, others)."""
    skip = {t for name in rebuilt for t in read_models.MODELS[name].tables}
    db.execute(f"ATTACH '{path}' AS live (READ_ONLY)")
    try:
        tables = [r[0] for r in db.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'live' AND schema_name = 'main'"
        ).fetchall()]
        for table in tables:
            if table in skip:
                continue
            if table in ("events", "read_model_meta", "consumer_positions", "dead_letters"):
                db.execute(f"INSERT INTO main.{table} SELECT * FROM live.main.{table}")
            else:
                db.execute(f"CREATE TABLE main.{table} AS SELECT * FROM live.main.{table}")
        if "dead_letters" in tables:
            db.execute("DELETE FROM dead_letters WHERE list_contains(?, stage)", [list(rebuilt)])
            # Carry the id sequence on past the copied ids.
            top = db.execute("SELECT coalesce(max(id), 0) FROM dead_letters").fetchone()[0]  # type: ignore[index]
            db.execute("SELECT max(nextval('dead_letter_ids')) FROM range(?)", [top])
        count, position = db.execute("SELECT count(*), max(position) FROM events").fetchone()  # type: ignore[misc]
    finally:
        db.execute("DETACH live")
    return int(count), position


def rebuild_from_kafka(path: str | Path, read_node: Callable[[Path], Any], *,
                       progress: bool = True, swap: bool = True) -> RebuildReport:
    """Read the topic from its start into a fresh file through a read node, then swap.

    `read_node(path)` makes a read node on Kafka writing `path` (the composition root's).
    The node stores the Kafka positions itself, so a read node on the swapped-in file goes
    on from where the rebuild stopped.
    """
    path = Path(path)
    started = time.perf_counter()
    tmp = path.with_name(f"{path.name}.rebuild-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}.wal")):
        leftover.unlink(missing_ok=True)
    node = read_node(tmp)
    try:
        with tqdm(desc="reading the topic", unit="ev", unit_scale=True, disable=not progress) as bar:
            node.catch_up(progress=lambda result: bar.update(result.messages))
        db = node.cursor()
        count, complaints, position = db.execute(
            "SELECT count(*), count(DISTINCT complaint_id), max(position) FROM events").fetchone()  # type: ignore[misc]
        db.close()
    finally:
        node.close()
    if swap:
        swap_in(tmp, path)
    report = RebuildReport(path if swap else tmp, int(count), int(complaints),
                           [p.name for p in node.projectors], position, time.perf_counter() - started, swap)
    log.info("%s", report.summary())
    return report
