"""Rebuild read models from scratch into a fresh DuckDB file, then swap it in atomically.

Two sources:
- the event store (`rebuild(path, app)`): every Complaint event, read in big pages, into
  a new `events` table, then every read model built from it in one bulk pass, with the
  consumer position of the in-process log source set to the last event read;
- the read node's own `events` table (`rebuild(path, None, models=[...])`): the named
  read models rebuilt from the events the node already has, everything else (events,
  positions, dead letters, other models) copied over unchanged.
(From the start of a Kafka topic: `rebuild_from_kafka`, which lets the consumer runner
read the topic into the fresh file.)

The fast path reads the store's rows without building domain objects: a page of raw
(position, id, version, topic, JSON state) goes to DuckDB as Arrow, and SQL turns the
stored JSON into the envelope's columns (typed values such as {"_type_": "datetime_iso",
"_data_": ...} become plain strings, store-only keys are dropped). Encrypted or
compressed stores take the slow path through `consumers.envelope.from_notification`.

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
from consumers.envelope import COMPLAINT_TOPIC_PREFIX, from_notification, state_decoder
from projections import models as read_models
from projections.base import to_batch
from projections.event_log import EventLog
from projections.facts import Scope

log = logging.getLogger(__name__)

PAGE = 50_000
LOG_SOURCE = "log"  # the runner's name for the in-process event store source
_STORE_KEYS = ("timestamp", "originator_topic", "class_version", "actor", "occurred_at",
               "command_id", "correlation_id")
_RAW_SCHEMA = pa.schema([
    ("position", pa.int64()), ("complaint_id", pa.string()), ("complaint_version", pa.int32()),
    ("topic", pa.string()), ("state", pa.large_binary()),
])


def _runner_schema() -> str:
    # The runner's own tables: a rebuilt file must be a read node's file.
    from consumers.runner import RUNNER_SCHEMA

    return RUNNER_SCHEMA


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


def raw_pages(app: Any, page: int = PAGE, start: int = 1) -> Iterator[pa.Table]:
    """The store's notifications as Arrow tables of raw rows (`_RAW_SCHEMA`), in order."""
    recorder = app.recorder
    path = _sqlite_file(recorder)
    table = getattr(recorder, "events_table_name", "stored_events")
    if path is not None:
        # Plain tuples from our own read-only connection: no Row objects, no UUID parsing.
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            while True:
                rows = con.execute(
                    f"SELECT rowid, originator_id, originator_version, topic, state FROM {table}"
                    " WHERE rowid >= ? ORDER BY rowid LIMIT ?", (start, page),
                ).fetchall()
                if not rows:
                    return
                yield _raw_table(rows)
                start = rows[-1][0] + 1
        finally:
            con.close()
    while True:
        notes = recorder.select_notifications(start, page)
        if not notes:
            return
        yield _raw_table([(n.id, str(n.originator_id), n.originator_version, n.topic, n.state) for n in notes])
        start = notes[-1].id + 1


def _raw_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    ids, originators, versions, topics, states = zip(*rows)
    if not isinstance(originators[0], str):
        originators = tuple(str(o) for o in originators)
    # One buffer and its offsets: several times faster than pa.array() of many bytes objects.
    offsets = pa.array(itertools.accumulate(map(len, states), initial=0), pa.int64())
    state = pa.Array.from_buffers(pa.large_binary(), len(states),
                                  [None, offsets.buffers()[1], pa.py_buffer(b"".join(states))])
    return pa.table(
        [pa.array(ids, pa.int64()), pa.array(originators, pa.string()),
         pa.array(versions, pa.int32()), pa.array(topics, pa.string()), state],
        schema=_RAW_SCHEMA,
    )


def _fast_decodable(app: Any) -> bool:
    """Plain JSON state (no cipher, no compressor, only the transcodings SQL can undo)."""
    mapper = app.mapper
    names = set(getattr(mapper.transcoder, "names", {}) or {})
    return (not mapper.cipher and not mapper.compressor
            and type(mapper.transcoder).__name__ == "JSONTranscoder"
            and names <= {"datetime_iso", "uuid_hex", "decimal_str"})


# Stored JSON -> the envelope's payload JSON. eventsourcing writes an event's state as
#   {"timestamp":{...}[,"originator_topic":"..."],<the payload>,"actor":"...",
#    "occurred_at":{...},"command_id":"...","correlation_id":"..."}
# (originator_topic only on a creation event), with datetimes and UUIDs as
# {"_type_":"datetime_iso"|"uuid_hex","_data_":"..."}. When a row has exactly that shape
# (its keys are checked), the payload is cut out of the text and only payloads holding a
# typed value go through the regular expressions; anything else takes the general way
# (regular expressions on the whole state, then a JSON merge patch removing the store's
# keys). Both give `from_notification`'s payload: tests/test_rebuild.py checks it.
_UUID = r'\{\s*"_type_"\s*:\s*"uuid_hex"\s*,\s*"_data_"\s*:\s*"([0-9a-f]{8})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{4})([0-9a-f]{12})"\s*\}'
_TYPED = r'\{\s*"_type_"\s*:\s*"(datetime_iso|decimal_str)"\s*,\s*"_data_"\s*:\s*("[^"]*")\s*\}'
_PATCH = "{" + ", ".join(f'"{k}": null' for k in _STORE_KEYS) + "}"
_META = ("$.occurred_at._data_", "$.timestamp._data_", "$.actor", "$.command_id",
         "$.correlation_id", "$.class_version")
_TAIL = ["actor", "occurred_at", "command_id", "correlation_id"]
_TOPIC_KEY = '"originator_topic":"'


def _untyped(text: str) -> str:
    """SQL: `text` with every typed value replaced by its plain string."""
    return (f"regexp_replace(regexp_replace({text}, '{_UUID}', '\"\\1-\\2-\\3-\\4-\\5\"', 'g'),"
            f" '{_TYPED}', '\\2', 'g')")


_TS_HEAD = '{"timestamp":{"_type_":"datetime_iso","_data_":"'


def _insert_raw_sql(raw: str) -> str:
    n = len(_TOPIC_KEY)
    # m: occurred_at, recorded_at, actor, command_id, correlation_id, class_version. For the
    # usual shape they come from the short tail and the head's fixed offset (the whole
    # state is parsed only for the others).
    return f"""
    INSERT INTO events (complaint_id, complaint_version, position, event_type, event_version,
        occurred_at, recorded_at, actor, command_id, correlation_id, payload, applied_at)
    SELECT complaint_id::UUID, complaint_version, position, event_type,
        coalesce(TRY_CAST(m[6] AS INTEGER), 1), CAST(m[1] AS TIMESTAMPTZ), CAST(m[2] AS TIMESTAMPTZ),
        m[3], m[4], m[5],
        CAST(CASE
            WHEN NOT usual THEN json_merge_patch({_untyped('x')}, '{_PATCH}')
            WHEN contains(cut, '"_type_"') THEN {_untyped('cut')}
            ELSE cut END AS JSON),
        now()
    FROM (
        SELECT *,
            CASE WHEN usual
                 THEN list_concat(
                     json_extract_string(tj, ['$.occurred_at._data_']),
                     [substr(x, {len(_TS_HEAD) + 1}, after_ts - {len(_TS_HEAD) + 4})],
                     json_extract_string(tj, ['$.actor', '$.command_id', '$.correlation_id']),
                     [NULL])
                 ELSE json_extract_string(x, {list(_META)!r}) END AS m
        FROM (
            SELECT *, '{{' || substr(x, start, greatest(tail - start, 0)) || '}}' AS cut,
                starts_with(x, '{_TS_HEAD}') AND tail > 0
                    AND json_keys(tj) = {_TAIL!r}
                    AND NOT contains(x, '"class_version"') AS usual
            FROM (
                SELECT *, strpos(x, ',"actor":') AS tail,
                    CASE WHEN strpos(x, ',"actor":') > 0 THEN '{{' || substr(x, strpos(x, ',"actor":') + 1) END AS tj,
                    -- after the timestamp object, and after originator_topic's value if present
                    CASE WHEN starts_with(rest, '{_TOPIC_KEY}')
                         THEN after_ts + {n} + strpos(substr(rest, {n + 1}), '"') + 1
                         ELSE after_ts END AS start
                FROM (
                    SELECT *, strpos(x, '"}},') + 3 AS after_ts, substr(x, strpos(x, '"}},') + 3) AS rest
                    FROM (
                        SELECT position, complaint_id, complaint_version,
                            substr(topic, {len(COMPLAINT_TOPIC_PREFIX) + 1}) AS event_type,
                            decode(state) AS x
                        FROM {raw} WHERE starts_with(topic, '{COMPLAINT_TOPIC_PREFIX}')
                    )
                )
            )
        )
    )
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


def load_events(db: duckdb.DuckDBPyConnection, app: Any, page: int = PAGE,
                progress: Callable[[int], None] | None = None) -> int:
    """Copy every Complaint event of the store into a new `events` table; returns how many."""
    # One DuckDB thread: the other core is the reader thread's (Python, fetching pages).
    threads = db.execute("SELECT current_setting('threads')").fetchone()[0]  # type: ignore[index]
    db.execute("SET threads = 1")
    try:
        with _key_added_after(db, "events"):
            return _load_events(db, app, page, progress)
    finally:
        db.execute(f"SET threads = {int(threads)}")


def _load_events(db: duckdb.DuckDBPyConnection, app: Any, page: int,
                 progress: Callable[[int], None] | None) -> int:
    fast = _fast_decodable(app)
    decode = None if fast else state_decoder(app.mapper)
    if not fast:
        log.info("event store is encrypted, compressed or custom-transcoded: decoding in Python")
    count = 0
    sql = _insert_raw_sql("_raw_page")
    for raw in _prefetched(raw_pages(app, page)):
        if fast:
            db.register("_raw_page", raw)
            try:
                count += db.execute(sql).fetchone()[0]  # type: ignore[index]
            finally:
                db.unregister("_raw_page")
        else:
            assert decode is not None
            rows = raw.to_pylist()
            envelopes = [from_notification(_Note(**r), decode) for r in rows
                         if r["topic"].startswith(COMPLAINT_TOPIC_PREFIX)]
            db.register("_slow_page", to_batch(envelopes))
            try:
                count += db.execute(
                    "INSERT INTO events (complaint_id, complaint_version, position, event_type,"
                    " event_version, occurred_at, recorded_at, actor, command_id, correlation_id,"
                    " payload, applied_at) SELECT complaint_id::UUID, complaint_version, position,"
                    " event_type, event_version, occurred_at, recorded_at, actor, command_id,"
                    " correlation_id, payload::JSON, now() FROM _slow_page"
                ).fetchone()[0]  # type: ignore[index]
            finally:
                db.unregister("_slow_page")
        if progress:
            progress(raw.num_rows)
    return count


def _prefetched(pages: Iterator[pa.Table], depth: int = 2) -> Iterator[pa.Table]:
    """Read the next pages in a thread while DuckDB (which releases the GIL) inserts this one."""
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


@dataclass
class _Note:
    """Enough of an eventsourcing Notification for `from_notification`."""

    position: int
    complaint_id: str
    complaint_version: int
    topic: str
    state: bytes

    @property
    def id(self) -> int:
        return self.position

    @property
    def originator_id(self) -> Any:
        from uuid import UUID

        return UUID(self.complaint_id)

    @property
    def originator_version(self) -> int:
        return self.complaint_version


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
    db.execute(_runner_schema())
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

    `source`: an eventsourcing application (the ComplaintDesk) to read every event from,
    or None to rebuild from the `events` table already in `path`. `on_swap`, if given, is
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


def rebuild_from_kafka(path: str | Path, models: Sequence[str] | None = None, *,
                       progress: bool = True, swap: bool = True) -> RebuildReport:
    """Read the topic from its start into a fresh file through the consumer runner, then swap.

    The runner stores the Kafka positions itself, so a read node on the swapped-in file
    goes on from where the rebuild stopped.
    """
    from commands.settings import get_settings
    from consumers.runner import read_node_from_settings
    from consumers.settings import get_bus_settings

    path = Path(path)
    started = time.perf_counter()
    tmp = path.with_name(f"{path.name}.rebuild-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}.wal")):
        leftover.unlink(missing_ok=True)
    node, _ = read_node_from_settings(get_settings(), get_bus_settings(), db_path=tmp, source="kafka",
                                      projectors=read_models.make(models))
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
