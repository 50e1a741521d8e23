"""The consumer runner: a read node that owns one DuckDB file and keeps its read models.

Each batch is one DuckDB transaction: the new events into the `events` table
(deduplicated by complaint id and version), only those new rows to the other projectors,
dead letters into `dead_letters`, and the source positions; then commit. A crash
anywhere before the commit leaves the file as it was, and the batch is read again from
the stored positions: exactly-once effects from an at-least-once bus.

A projector that raises on an event must not stop the others. DuckDB has no savepoints,
so the batch is rolled back, the failing event is found by bisecting the batch in trial
transactions that are always rolled back (a projector may have written half of its
work before raising), and the batch is applied again without that event for that
projector only. The event goes to the dead letters with the projector's error.

Usable as a library (`ReadNode(db_path, source, projectors).run(stop=...)`, `poll_batch()`
for one step, `start_background()` next to the API) and from the CLI (`complaints
read-node`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from consumers.decoding import Decoder
from consumers.sources import DeadLetter, Message, Polled, Source, lag
from projections.base import BATCH_SCHEMA, Projector
from projections.event_log import EventLog, as_batch

log = logging.getLogger(__name__)

Stop = Callable[[], bool] | threading.Event | None


@dataclass
class BatchResult:
    messages: int = 0  # read from the source
    new_events: int = 0  # stored in `events` for the first time
    duplicates: int = 0  # already there (the bus is at-least-once)
    dead_letters: int = 0


@dataclass
class ProjectorStatus:
    name: str
    schema_version: int
    dead_letters: int


@dataclass
class ReadModelStatus:
    """What `complaints positions` and the read API show about a read node."""

    db_path: str
    source: str
    positions: dict[int, int]  # partition -> next position to read
    lag: int | None  # events in the source not applied yet (None: source unreachable)
    events: int
    dead_letters: int
    projectors: list[ProjectorStatus] = field(default_factory=list)
    updated_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class ProjectorFailed(Exception):
    def __init__(self, projector: Projector, error: Exception) -> None:
        super().__init__(f"projector {projector.name} failed: {error}")
        self.projector = projector
        self.error = error


RUNNER_SCHEMA = """
CREATE TABLE IF NOT EXISTS read_model_meta (
    projector VARCHAR PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    built_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS consumer_positions (
    source VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    next_position BIGINT NOT NULL,   -- Kafka: the next offset; the log: last id + 1
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, partition)
);
CREATE SEQUENCE IF NOT EXISTS dead_letter_ids;
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGINT PRIMARY KEY DEFAULT nextval('dead_letter_ids'),
    source VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    source_position BIGINT NOT NULL,  -- Kafka offset, or notification id
    stage VARCHAR NOT NULL,           -- 'envelope' (unreadable), or the projector that raised
    complaint_id VARCHAR,
    complaint_version INTEGER,
    error VARCHAR NOT NULL,
    raw BLOB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
"""

_DEAD_LETTER_SCHEMA = pa.schema([
    ("source", pa.string()), ("partition", pa.int32()), ("source_position", pa.int64()),
    ("stage", pa.string()), ("complaint_id", pa.string()), ("complaint_version", pa.int32()),
    ("error", pa.string()), ("raw", pa.binary()), ("recorded_at", pa.timestamp("us", tz="UTC")),
])


class ReadNode:
    def __init__(
        self,
        db_path: str | Path,
        source: Source,
        projectors: Sequence[Projector] = (),
        *,
        batch_size: int = 20_000,
        poll_timeout: float = 0.1,
        status_every: float = 2.0,
        commit_pause: float = 0.0,
        on_commit: Callable[[pa.Table], None] | None = None,
    ) -> None:
        self.db_path = str(db_path)
        self.source = source
        self.event_log = EventLog()
        # The event log is always first and always there; the others get its new rows.
        self.projectors: list[Projector] = [p for p in projectors if p.name != self.event_log.name]
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.status_every = status_every
        self.commit_pause = commit_pause  # fault tests only: widen the window a kill must hit
        self.on_commit = on_commit
        self.decoder = Decoder()
        self.db: duckdb.DuckDBPyConnection | None = None
        self.positions: dict[int, int] = {}
        # Held across a commit and the update of `positions`: a status read never sees
        # rows committed with positions from before them.
        self._committing = threading.Lock()
        self._pending: Polled | None = None  # a polled batch not committed yet (retried as is)
        self._stop = threading.Event()
        self._source_started = False
        self._thread: threading.Thread | None = None
        self._last_status = 0.0
        self._last_new: pa.Table | None = None
        self._current = Polled.empty()
        self.applied = 0  # new events committed since start

    # ------------------------------------------------------------------ lifecycle
    @property
    def status_path(self) -> Path | None:
        return None if self.db_path == ":memory:" else Path(self.db_path + ".status.json")

    def open(self) -> ReadNode:
        """Open the file, rebuild what changed schema version, and seek the source."""
        if self.db is None:
            if self.db_path != ":memory:":
                Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
            self.db = duckdb.connect(self.db_path)
            self.db.execute("SET TimeZone = 'UTC'")
            self.db.execute(RUNNER_SCHEMA)
            self._check_schema_versions()
            self.positions = self._stored_positions()
        if not self._source_started:
            self.source.start(self.positions)  # may fail (broker away): open() again later
            self._source_started = True
            log.info("read node %s on %s: %d events, positions %s", self.db_path, self.source.name,
                     self.count_events(), self.positions or "from the start")
            self._write_status(force=True)  # then every `status_every` seconds of work
        return self

    def close(self) -> None:
        self._write_status(force=True)
        self.source.close()
        self._source_started = False
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> ReadNode:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for reading from another thread (DuckDB allows one writer process)."""
        return self._conn().cursor()

    def _conn(self) -> duckdb.DuckDBPyConnection:
        if self.db is None:
            raise RuntimeError("the read node is not open: call open() (or use it as a context manager)")
        return self.db

    # ------------------------------------------------------------------ schema versions
    def _all_projectors(self) -> list[Projector]:
        return [self.event_log, *self.projectors]

    def _check_schema_versions(self) -> None:
        """Create missing read models; rebuild those whose schema version changed.

        The event log changing means rebuilding everything from the source's start. Another
        projector is rebuilt from the local `events` table if it can drop its tables
        (`drop_schema(db)`); if it cannot, the whole node is rebuilt from the source. A
        rebuild records how far it got with every chunk, so a crash resumes it.
        """
        db = self._conn()
        # An unfinished rebuild keeps its place like a source: consumer_positions, 'rebuild:<name>'.
        stored = {name: (version, None if after is None else after - 1) for name, version, after in db.execute(
            "SELECT projector, schema_version, next_position FROM read_model_meta LEFT JOIN consumer_positions "
            "ON source = 'rebuild:' || projector").fetchall()}
        log_version = stored.get(self.event_log.name, (None, None))[0]
        if log_version is not None and log_version != self.event_log.schema_version:
            log.warning("event log schema %s -> %s: rebuilding the read node from the start of %s",
                        log_version, self.event_log.schema_version, self.source.name)
            self.reset()
            return
        self.event_log.create_schema(db)
        self._set_version(self.event_log)
        todo = []
        for projector in self.projectors:
            version, rebuilding = stored.get(projector.name, (None, None))
            if version == projector.schema_version:
                projector.create_schema(db)
                if rebuilding is not None:
                    todo.append((projector, version, rebuilding))  # a rebuild a crash interrupted
                continue
            droppable = callable(getattr(projector, "drop_schema", None))
            if version is not None and not droppable:
                log.warning("projector %s schema %s -> %s and it has no drop_schema(): rebuilding the "
                            "whole read node from the start of %s", projector.name, version,
                            projector.schema_version, self.source.name)
                self.reset()
                return
            todo.append((projector, version, None))
        for projector, version, resume_after in todo:
            self._rebuild_from_event_log(projector, version, resume_after)

    def _set_version(self, projector: Projector, rebuild_position: int | None = None) -> None:
        """Record the projector's schema version, and how far an unfinished rebuild got (None: done)."""
        db = self._conn()
        db.execute("INSERT OR REPLACE INTO read_model_meta SELECT ?, ?, ?",  # one row per projector
                   [projector.name, projector.schema_version, datetime.now(UTC)])
        source = f"rebuild:{projector.name}"
        if rebuild_position is None:
            db.execute("DELETE FROM consumer_positions WHERE source = ?", [source])
        else:
            db.execute("INSERT OR REPLACE INTO consumer_positions SELECT ?, 0, ?, ?",
                       [source, rebuild_position + 1, datetime.now(UTC)])

    def _rebuild_from_event_log(self, projector: Projector, old_version: int | None,
                                resume_after: int | None) -> None:
        """(Re)build one projector from the events already stored here, in position order."""
        db = self._conn()
        if resume_after is None:
            what = "new projector" if old_version is None else f"schema {old_version} -> {projector.schema_version}"
            log.info("building %s from the local event log (%s)", projector.name, what)
            db.begin()
            try:
                if callable(getattr(projector, "drop_schema", None)):
                    projector.drop_schema(db)  # type: ignore[attr-defined]  # a clean slate
                db.execute("DELETE FROM dead_letters WHERE stage = ?", [projector.name])
                projector.create_schema(db)
                self._set_version(projector, rebuild_position=0)
                db.commit()
            except Exception:
                db.rollback()
                raise
            resume_after = 0
        else:
            log.info("resuming the build of %s after position %d", projector.name, resume_after)
        count = 0
        reader = self.cursor()  # its own connection: the main one writes while this streams
        for chunk in self.event_log.read_batches(reader, after=resume_after):
            batch = as_batch(chunk)
            last = int(batch["position"][-1].as_py())
            letters = self._apply_with_isolation(batch, [projector], store_events=False, positions=None,
                                                 letters=[], publish=False, rebuilding=(projector, last))
            count += batch.num_rows
            if letters:
                log.warning("%d events dead-lettered while building %s", len(letters), projector.name)
        self._set_version(projector)  # done: no rebuild position
        log.info("built %s from %d events", projector.name, count)

    def reset(self) -> None:
        """Forget everything: drop every table of this read node, start the source from the beginning.

        One transaction: a crash leaves the node as it was, or empty.
        """
        db = self._conn()
        tables = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE'"
        ).fetchall()
        views = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'VIEW'"
        ).fetchall()
        db.begin()
        try:
            for (name,) in views:
                db.execute(f'DROP VIEW IF EXISTS "{name}"')
            for (name,) in tables:
                db.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')
            db.execute("DROP SEQUENCE IF EXISTS dead_letter_ids")
            db.execute(RUNNER_SCHEMA)
            for projector in self._all_projectors():
                projector.create_schema(db)
                self._set_version(projector)
            db.commit()
        except Exception:
            db.rollback()
            raise
        db.execute("CHECKPOINT")
        log.info("read node %s reset: dropped %d tables", self.db_path, len(tables))
        self.positions = {}
        self._pending = None

    def replay(self) -> None:
        """Reset, then read the source again from its beginning (complaints replay)."""
        self.open()
        self.reset()
        self.source.start({})

    # ------------------------------------------------------------------ positions and status
    def _stored_positions(self) -> dict[int, int]:
        rows = self._conn().execute(
            "SELECT partition, next_position FROM consumer_positions WHERE source = ?", [self.source.name]
        ).fetchall()
        return {int(p): int(n) for p, n in rows}

    def lag(self) -> int:
        """Events in the source not applied here yet."""
        ends = self.source.end_positions()
        with self._committing:
            positions = dict(self.positions)
        return lag(ends, positions, self.source.first_position)

    def count_events(self) -> int:
        return int(self.cursor().execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]

    def status(self, known_lag: int | None = None) -> ReadModelStatus:
        """read_model_status: positions, lag (asked of the source unless `known_lag`), and
        dead letters per projector."""
        cursor = self.cursor()
        current_lag: int | None = known_lag
        if current_lag is None:
            try:
                current_lag = self.lag()
            except Exception as error:  # the broker may be down: say so rather than fail
                log.debug("lag unknown: %s", error)
        by_stage = dict(cursor.execute("SELECT stage, count(*) FROM dead_letters GROUP BY stage").fetchall())
        with self._committing:
            positions = dict(self.positions)
        return ReadModelStatus(
            db_path=self.db_path,
            source=self.source.name,
            positions=positions,
            lag=current_lag,
            events=self.count_events(),
            dead_letters=sum(by_stage.values()),
            projectors=[
                ProjectorStatus(p.name, p.schema_version, by_stage.get(p.name, 0))
                for p in self._all_projectors()
            ] + ([ProjectorStatus("envelope", 0, by_stage["envelope"])] if "envelope" in by_stage else []),
            updated_at=datetime.now(UTC).isoformat(),
        )

    def _write_status(self, force: bool = False, known_lag: int | None = None) -> None:
        """Leave the status next to the file: other processes cannot open a DuckDB file in use."""
        path = self.status_path
        if path is None or self.db is None:
            return
        now = time.monotonic()
        if not force and now - self._last_status < self.status_every:
            return
        self._last_status = now
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(self.status(known_lag).to_json())
            os.replace(tmp, path)
        except Exception as error:
            log.warning("cannot write %s: %s", path, error)

    # ------------------------------------------------------------------ the batch
    def poll_batch(self) -> BatchResult:
        """Read one batch from the source and apply it in one transaction (one step of run())."""
        polled = self._pending or self.source.poll(self.batch_size, self.poll_timeout)
        self._pending = polled
        if not len(polled) and all(self.positions.get(p) == n for p, n in polled.next_positions.items()):
            self._pending = None
            return BatchResult()
        result = self._apply(polled)
        self._pending = None
        self.applied += result.new_events
        return result

    run_once = poll_batch

    def _apply(self, polled: Polled) -> BatchResult:
        db = self._conn()
        decoded = self.decoder.decode(db, polled)
        letters = list(decoded.dead_letters)
        unreadable = len(letters)
        if letters:
            log.warning("%d unreadable message(s) to the dead letters, first: %s at %s/%s",
                        len(letters), letters[0].error, letters[0].message.partition, letters[0].message.offset)
        self._current = polled
        try:
            letters = self._apply_with_isolation(decoded.batch, self.projectors, store_events=True,
                                                 positions=polled.next_positions, letters=letters)
        finally:
            self._current = Polled.empty()
        new = self._last_new
        if self.on_commit is not None and new is not None:
            self.on_commit(new)
        new_count = 0 if new is None else new.num_rows
        duplicates = len(polled) - unreadable - new_count
        return BatchResult(len(polled), new_count, duplicates, len(letters))

    def _apply_with_isolation(
        self,
        batch: pa.Table,
        projectors: Sequence[Projector],
        *,
        store_events: bool,
        positions: dict[int, int] | None,
        letters: list[DeadLetter],
        publish: bool = True,
        rebuilding: tuple[Projector, int] | None = None,
    ) -> list[DeadLetter]:
        """Apply the batch in one transaction; isolate events a projector raises on.

        Returns the dead letters committed with the batch.
        """
        db = self._conn()
        excluded: dict[str, set[int]] = {}  # projector -> positions it must not see
        while True:
            db.begin()
            try:
                new = self.event_log.insert_new(db, batch) if store_events else batch
                for projector in projectors:
                    rows = _without(new, excluded.get(projector.name))
                    if rows.num_rows:
                        try:
                            projector.apply(db, rows)
                        except Exception as error:
                            raise ProjectorFailed(projector, error) from error
                if letters:
                    self._insert_dead_letters(letters)
                if positions:
                    self._store_positions(positions)
                if rebuilding:
                    self._set_version(rebuilding[0], rebuild_position=rebuilding[1])
                if letters and publish:
                    self.source.publish_dead_letters(letters)  # before commit: at least once
                if self.commit_pause:
                    time.sleep(self.commit_pause)
                with self._committing:
                    db.commit()
                    if positions:
                        self.positions.update(positions)
                self._last_new = new if store_events else None
                return letters
            except ProjectorFailed as failure:
                db.rollback()
                position, letter = self._find_poison(batch, failure, excluded, store_events)
                excluded.setdefault(failure.projector.name, set()).add(position)
                letters.append(letter)
            except BaseException:
                db.rollback()
                raise

    def _find_poison(
        self, batch: pa.Table, failure: ProjectorFailed, excluded: dict[str, set[int]], store_events: bool
    ) -> tuple[int, DeadLetter]:
        """The first event the projector raises on (its position, its dead letter), by
        bisection in rolled-back trials.

        Assumes a projector fails the same way on the same input (deterministic); if the
        failure does not reproduce it was transient, and the whole batch is retried later.
        """
        projector = failure.projector
        db = self._conn()

        def trial(rows_count: int) -> Exception | None:
            db.begin()
            try:
                new = self.event_log.insert_new(db, batch) if store_events else batch
                rows = _without(new, excluded.get(projector.name))
                projector.apply(db, rows.slice(0, rows_count))
                return None
            except Exception as error:
                return error
            finally:
                db.rollback()

        db.begin()
        try:
            new = self.event_log.insert_new(db, batch) if store_events else batch
        finally:
            db.rollback()
        candidates = _without(new, excluded.get(projector.name))
        low, high = 1, candidates.num_rows  # invariant: the first `high` rows fail
        error = trial(high)
        if error is None:
            raise RuntimeError(f"projector {projector.name} failed once but not again: {failure.error}") from failure.error
        while low < high:
            middle = (low + high) // 2
            if (found := trial(middle)) is not None:
                high, error = middle, found
            else:
                low = middle + 1
        row = candidates.slice(high - 1, 1).to_pylist()[0]
        log.error("projector %s raises on event %s v%s (position %s): %s: %s; dead-lettered, the other "
                  "projectors apply it", projector.name, row["complaint_id"], row["complaint_version"],
                  row["position"], type(error).__name__, error)
        return row["position"], DeadLetter(self._message_for(row), projector.name,
                                           f"{type(error).__name__}: {error}", row["complaint_id"],
                                           row["complaint_version"])

    def _message_for(self, row: dict[str, Any]) -> Message:
        """The raw message an event came in (only looked for when a projector failed on it)."""
        for index, value in enumerate(self._current.values):
            try:
                envelope = json.loads(value)
            except ValueError:
                continue
            if isinstance(envelope, dict) and envelope.get("position") == row["position"]:
                return self._current.message(index)
        # Rebuilding from the local event log: the stored row is the message.
        text = json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()})
        return Message(0, row["position"], str(row["complaint_id"]).encode(), text.encode())

    def _insert_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        now = datetime.now(UTC)
        table = pa.table({
            "source": [self.source.name] * len(letters),
            "partition": [max(0, d.message.partition) for d in letters],
            "source_position": [d.message.offset for d in letters],
            "stage": [d.stage for d in letters],
            "complaint_id": [d.complaint_id for d in letters],
            "complaint_version": [d.complaint_version for d in letters],
            "error": [d.error for d in letters],
            "raw": [d.message.value for d in letters],
            "recorded_at": [now] * len(letters),
        }, schema=_DEAD_LETTER_SCHEMA)
        db = self._conn()
        db.register("_dead_letters", table)
        try:
            db.execute("INSERT INTO dead_letters (source, partition, source_position, stage, complaint_id, "
                       "complaint_version, error, raw, recorded_at) SELECT * FROM _dead_letters")
        finally:
            db.unregister("_dead_letters")

    def _store_positions(self, positions: dict[int, int]) -> None:
        table = pa.table({
            "source": [self.source.name] * len(positions),
            "partition": pa.array(list(positions), pa.int32()),
            "next_position": pa.array(list(positions.values()), pa.int64()),
        })
        db = self._conn()
        db.register("_positions", table)
        try:
            db.execute(
                """INSERT INTO consumer_positions SELECT source, partition, next_position, ? FROM _positions
                   ON CONFLICT (source, partition) DO UPDATE SET next_position = excluded.next_position,
                   updated_at = excluded.updated_at""",
                [datetime.now(UTC)],
            )
        finally:
            db.unregister("_positions")

    # ------------------------------------------------------------------ running
    def run(self, stop: Stop = None, on_batch: Callable[[BatchResult], None] | None = None,
            until_caught_up: bool = False) -> None:
        """Apply batches until `stop` says so (or, with until_caught_up, until lag is 0).

        Failures (broker away, disk full, a projector failing for a reason that does not
        reproduce) are logged and retried with a back-off; the pending batch is kept.
        """
        should_stop = _stopper(stop, self._stop)
        backoff = 0.5
        while not should_stop():
            try:
                self.open()
                break
            except duckdb.Error:
                raise  # the file: in use by another process, or not a read node's; nothing to wait for
            except Exception as error:
                log.error("cannot start reading %s (%s: %s); retrying in %.1fs",
                          self.source.name, type(error).__name__, error, backoff)
                _sleep(backoff, should_stop)
                backoff = min(backoff * 2, 10.0)
        backoff = 0.5
        last_report, applied_at_report, letters = time.monotonic(), self.applied, 0
        try:
            while not should_stop():
                now = time.monotonic()
                if now - last_report >= 10 and (self.applied != applied_at_report or letters):
                    log.info("applied %d new events in %.0fs (%d dead letters); positions %s",
                             self.applied - applied_at_report, now - last_report, letters, self.positions)
                    last_report, applied_at_report, letters = now, self.applied, 0
                try:
                    result = self.poll_batch()
                except Exception as error:
                    log.error("batch failed, retrying in %.1fs (positions stay at %s): %s: %s",
                              backoff, self.positions, type(error).__name__, error)
                    _sleep(backoff, should_stop)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.5
                letters += result.dead_letters
                if result.messages and on_batch:
                    on_batch(result)
                if result.messages:
                    log.debug("batch: %s", result)
                self._write_status()
                if until_caught_up and not result.messages and self.lag() == 0:
                    break
        finally:
            self._write_status(force=True)

    def catch_up(self, progress: Callable[[BatchResult], None] | None = None, stop: Stop = None,
                 idle_timeout: float = 30.0) -> int:
        """Apply batches until the node has what the source held when this was called.

        Returns the number of new events applied. Gives up (RuntimeError) after
        `idle_timeout` seconds without any message while still behind.
        """
        should_stop = _stopper(stop, self._stop)
        self.open()
        first = self.source.first_position
        targets = self.source.end_positions()
        applied, idle_since = 0, time.monotonic()
        while not should_stop() and any(self.positions.get(p, first) < end for p, end in targets.items()):
            result = self.poll_batch()
            applied += result.new_events
            if result.messages:
                idle_since = time.monotonic()
                if progress:
                    progress(result)
            elif time.monotonic() - idle_since > idle_timeout:
                raise RuntimeError(f"no messages for {idle_timeout:.0f}s while behind: positions "
                                   f"{self.positions}, source ends {targets}")
        # The lag is known without asking the source again: what it held when called.
        self._write_status(force=True, known_lag=lag(targets, self.positions, first))
        return applied

    def start_background(self, name: str = "read-node") -> threading.Thread:
        """Run in a daemon thread (the embedded default, next to the API); stop() ends it."""
        self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll `predicate` until true or timeout (for tests and the read-your-writes path)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


def _without(table: pa.Table, positions: set[int] | None) -> pa.Table:
    if not positions:
        return table
    return table.filter(pc.invert(pc.is_in(table["position"], value_set=pa.array(sorted(positions), pa.int64()))))


def _stopper(stop: Stop, own: threading.Event) -> Callable[[], bool]:
    if stop is None:
        return own.is_set
    if isinstance(stop, threading.Event):
        return lambda: stop.is_set() or own.is_set()
    return lambda: stop() or own.is_set()


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


__all__ = ["BATCH_SCHEMA", "BatchResult", "ReadModelStatus", "ReadNode"]


# ---------------------------------------------------------------------- wiring
def load_projectors(spec: str | Sequence[str]) -> list[Projector]:
    """Projectors from "module:name" entries (comma-separated or a list).

    A name may be a projector class (instantiated), a projector instance, a function
    returning projectors (called without arguments, e.g. projections.models:make), or a
    string of further entries (e.g. projections.models:ALL_SPEC).
    """
    import importlib

    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    projectors: list[Projector] = []
    for name in names:
        module_name, _, attribute = name.partition(":")
        if not attribute:
            raise ValueError(f"projector {name!r}: expected module:Class, e.g. projections.sla:SlaProjector")
        target = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, str):
            projectors += load_projectors(target)
        elif isinstance(target, type):
            projectors.append(target())
        elif callable(target) and not hasattr(target, "apply"):
            made = target()
            projectors += list(made) if isinstance(made, (list, tuple)) else [made]
        else:
            projectors.append(target)
    for projector in projectors:
        if not all(hasattr(projector, a) for a in ("name", "schema_version", "create_schema", "apply")):
            raise ValueError(f"{projector!r} is not a projector (needs name, schema_version, create_schema, apply)")
    return projectors


def read_node_from_settings(settings: Any, bus: Any, *, db_path: str | Path | None = None,
                            source: str | None = None, projectors: Sequence[Projector] | None = None,
                            **options: Any) -> tuple[ReadNode, Any]:
    """A read node as configured: Kafka when COMPLAINTS_KAFKA_BOOTSTRAP is set, else the log.

    (`settings`: commands.settings.Settings, `bus`: consumers.settings.BusSettings.) Returns
    the node and the event store application it follows (None for Kafka).
    """
    from consumers.sources import KafkaSource, LogSource

    if source is not None:
        bus = bus.model_copy(update={"source": source})
    app = None
    chosen: Source
    if bus.use_kafka():
        chosen = KafkaSource(bus.kafka_bootstrap, bus.topic)
    else:
        from commands.desk import ComplaintDesk

        app = ComplaintDesk.from_settings(settings)
        chosen = LogSource(app.recorder, app.mapper, idle_sleep=bus.poll_interval)
    if projectors is None:
        projectors = load_projectors(bus.projectors)
    options.setdefault("batch_size", bus.consumer_batch_size)
    options.setdefault("commit_pause", bus.fault_commit_pause)
    node = ReadNode(db_path or bus.read_db, chosen, projectors, **options)
    return node, app


def embedded_read_node(app: Any, db_path: str | Path, projectors: Sequence[Projector] = (),
                       **options: Any) -> ReadNode:
    """The embedded default: a read node following `app`'s notification log in this process.

    `embedded_read_node(desk, "var/read.duckdb", projectors).start_background()` runs it in
    a thread next to the API; `node.cursor()` reads from it.
    """
    from consumers.sources import LogSource

    options.setdefault("poll_timeout", 0.05)
    return ReadNode(db_path, LogSource(app.recorder, app.mapper), projectors, **options)
