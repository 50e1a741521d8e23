"""A read node: owns one DuckDB file and keeps its read models up to date from a source.

The node opens its file (creating its tables, rebuilding read models whose schema version
changed), seeks the source to the stored positions, and applies batch after batch, each in
one transaction with its positions (consumers.batching): a crash anywhere before a commit
leaves the file as it was, and the batch is read again from the stored positions.

Usable as a library (`ReadNode(db_path, source, projectors).run(stop=...)`, `poll_batch()`
for one step, `start_background()` next to the API) and from the CLI (`complaints
read-node`).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from aggregates.instants import InstantWindow
from consumers.batching import BatchApplier, BatchResult, PoisonBudget
from consumers.bookkeeping import RUNNER_SCHEMA, set_version, stored_positions, stored_versions
from consumers.dead_letters import delete_dead_letters
from consumers.metrics import READ_NODE_BATCH_MESSAGES, READ_NODE_EVENTS, READ_NODE_LAG, record_positions
from consumers.retrying import Backoff, when_up
from consumers.sources import Polled, Source, lag
from consumers.status import ReadModelStatus, StatusFile, read_model_status
from projections.base import Projector
from projections.event_log import EventLog, as_batch

log = logging.getLogger(__name__)

Stop = Callable[[], bool] | threading.Event | None


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
        linger: float = 0.0,
        on_commit: Callable[[pa.Table], None] | None = None,
        window: InstantWindow | None = None,
        poison_budget: PoisonBudget | None = None,
    ) -> None:
        self.db_path = str(db_path)
        self.source = source
        self.event_log = EventLog()
        # The event log is always first and always there; the others get its new rows.
        self.projectors: list[Projector] = [p for p in projectors if p.name != self.event_log.name]
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.commit_pause = commit_pause  # fault tests only: widen the window a kill must hit
        # After a batch smaller than `batch_size` (the source had no more), `run` starts the
        # next one no sooner than `linger` seconds after this one started, so that events
        # arriving meanwhile gather into it. Every batch pays a fixed cost (the touched
        # complaints recomputed, a statement per read-model table): a trickle of commands
        # applied one small batch after another kept a core busy.
        self.linger = linger
        self.on_commit = on_commit
        # `window`: events outside it are dead letters (aggregates.instants); `poison_budget`:
        # what finding the event a projector fails on may cost (consumers.batching).
        self.batches = BatchApplier(self.event_log, source, window=window, budget=poison_budget)
        self.status_file = StatusFile(self.db_path, status_every)
        self.db: duckdb.DuckDBPyConnection | None = None
        self.positions: dict[int, int] = {}
        # Held across a commit and the update of `positions`: a status read never sees
        # rows committed with positions from before them.
        self._committing = threading.Lock()
        self._pending: Polled | None = None  # a polled batch not committed yet (retried as is)
        self._stop = threading.Event()
        # Set once the node holds everything its source held when it started: readiness.
        self.caught_up = threading.Event()
        self._source_started = False
        self._thread: threading.Thread | None = None
        self.applied = 0  # new events committed since start

    # ------------------------------------------------------------------ lifecycle
    @property
    def status_path(self) -> Path | None:
        return self.status_file.path

    def open(self) -> ReadNode:
        """Open the file, rebuild what changed schema version, and seek the source."""
        if self.db is None:
            if self.db_path != ":memory:":
                Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
            self.db = duckdb.connect(self.db_path)
            self.db.execute("SET TimeZone = 'UTC'")
            self.db.execute(RUNNER_SCHEMA)
            self._check_schema_versions()
            self.positions = stored_positions(self._conn(), self.source.name)
            record_positions(self.source.name, self.positions)
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
    def all_projectors(self) -> list[Projector]:
        """The event log, then the other projectors."""
        return [self.event_log, *self.projectors]

    def _check_schema_versions(self) -> None:
        """Create missing read models; rebuild those whose schema version changed.

        The event log changing means rebuilding everything from the source's start. Another
        projector is rebuilt from the local `events` table if it can drop its tables
        (`drop_schema(db)`); if it cannot, the whole node is rebuilt from the source. A
        rebuild records how far it got with every chunk, so a crash resumes it.
        """
        db = self._conn()
        stored = stored_versions(db)
        log_version = stored.get(self.event_log.name, (None, None))[0]
        if log_version is not None and log_version != self.event_log.schema_version:
            log.warning("event log schema %s -> %s: rebuilding the read node from the start of %s",
                        log_version, self.event_log.schema_version, self.source.name)
            self.reset()
            return
        self.event_log.create_schema(db)
        set_version(db, self.event_log)
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
                delete_dead_letters(db, projector.name)
                projector.create_schema(db)
                set_version(db, projector, rebuild_position=0)
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
            _, letters = self.batches.apply(db, batch, [projector], self._commit, store_events=False,
                                            positions=None, letters=[], publish=False,
                                            rebuilding=(projector, last))
            count += batch.num_rows
            if letters:
                log.warning("%d events dead-lettered while building %s", len(letters), projector.name)
        set_version(db, projector)  # done: no rebuild position
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
            for projector in self.all_projectors():
                projector.create_schema(db)
                set_version(db, projector)
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
    def committed_positions(self) -> dict[int, int]:
        """A copy of `positions`, taken between commits (never ahead of or behind the rows)."""
        with self._committing:
            return dict(self.positions)

    def lag(self) -> int:
        """Events in the source not applied here yet (asks the source for its ends)."""
        ends = self.source.end_positions()
        positions = self.committed_positions()
        behind = lag(ends, positions, self.source.first_position)
        READ_NODE_LAG.labels(source=self.source.name).set(behind)
        return behind

    def count_events(self) -> int:
        return int(self.cursor().execute("SELECT count(*) FROM events").fetchone()[0])  # type: ignore[index]

    def status(self, known_lag: int | None = None) -> ReadModelStatus:
        """read_model_status: positions, lag (asked of the source unless `known_lag`), and
        dead letters per projector."""
        status = read_model_status(self, known_lag)
        if status.lag is not None:  # the lag gauge follows the status file (every few seconds)
            READ_NODE_LAG.labels(source=self.source.name).set(status.lag)
        return status

    def _write_status(self, force: bool = False, known_lag: int | None = None) -> None:
        """Leave the status next to the file: other processes cannot open a DuckDB file in use."""
        if self.db is None:
            return
        self.status_file.write(lambda: self.status(known_lag), force)

    # ------------------------------------------------------------------ the batch
    def poll_batch(self) -> BatchResult:
        """Read one batch from the source and apply it in one transaction (one step of run())."""
        polled = self._pending or self.source.poll(self.batch_size, self.poll_timeout)
        self._pending = polled
        if not len(polled) and all(self.positions.get(p) == n for p, n in polled.next_positions.items()):
            self._pending = None
            return BatchResult()
        result, new = self.batches.apply_polled(self._conn(), polled, self.projectors, self._commit)
        if self.on_commit is not None and new is not None:
            self.on_commit(new)
        self._pending = None
        self.applied += result.new_events
        READ_NODE_EVENTS.inc(result.new_events)
        if result.messages:
            READ_NODE_BATCH_MESSAGES.observe(result.messages)
        return result

    run_once = poll_batch

    def _commit(self, db: duckdb.DuckDBPyConnection, positions: dict[int, int] | None) -> None:
        """Commit the batch's transaction; the positions stored in it become this node's."""
        if self.commit_pause:
            time.sleep(self.commit_pause)
        with self._committing:
            db.commit()
            if positions:
                self.positions.update(positions)
        if positions:
            record_positions(self.source.name, positions)

    # ------------------------------------------------------------------ running
    def open_when_up(self, should_stop: Callable[[], bool]) -> bool:
        """`open()`, waiting with back-off while the source's server or topic is not there
        yet; False if stopped first. A duckdb.Error is the file (in use by another
        process, or not a read node's): nothing to wait for, raised at once."""
        try:
            when_up(self.open, failures=lambda error: not isinstance(error, duckdb.Error), stop=should_stop,
                    what=f"cannot start reading {self.source.name}", log=log)
        except Exception as error:
            if isinstance(error, duckdb.Error) or not should_stop():
                raise
            return False
        return True

    def run(self, stop: Stop = None, on_batch: Callable[[BatchResult], None] | None = None,
            until_caught_up: bool = False) -> None:
        """Apply batches until `stop` says so (or, with until_caught_up, until lag is 0).

        Failures (broker away, disk full, a projector failing for a reason that does not
        reproduce) are logged and retried with a back-off; the pending batch is kept.
        """
        should_stop = _stopper(stop, self._stop)
        if not self.open_when_up(should_stop):
            return
        backoff = Backoff(should_stop)
        first, targets = self.source.first_position, self.source.end_positions()
        last_report, applied_at_report, letters = time.monotonic(), self.applied, 0
        try:
            while not should_stop():
                now = time.monotonic()
                if now - last_report >= 10 and (self.applied != applied_at_report or letters):
                    log.info("applied %d new events in %.0fs (%d dead letters); positions %s",
                             self.applied - applied_at_report, now - last_report, letters, self.positions)
                    last_report, applied_at_report, letters = now, self.applied, 0
                started = time.monotonic()
                try:
                    result = self.poll_batch()
                except Exception as error:
                    log.error("batch failed, retrying in %.1fs (positions stay at %s): %s: %s",
                              backoff.seconds, self.positions, type(error).__name__, error)
                    backoff.wait()
                    continue
                backoff.reset()
                if not self.caught_up.is_set() and all(self.positions.get(p, first) >= end
                                                       for p, end in targets.items()):
                    self.caught_up.set()
                    log.info("caught up with %s: positions %s", self.source.name, self.positions)
                letters += result.dead_letters
                if result.messages and on_batch:
                    on_batch(result)
                if result.messages:
                    log.debug("batch: %s", result)
                self._write_status()
                if until_caught_up and not result.messages and self.lag() == 0:
                    break
                if 0 < result.messages < self.batch_size:
                    _pause_until(started + self.linger, should_stop)
        finally:
            self._write_status(force=True)

    def catch_up(self, progress: Callable[[BatchResult], None] | None = None, stop: Stop = None,
                 idle_timeout: float = 30.0) -> int:
        """Apply batches until the node has what the source held when this was called.

        Returns the number of new events applied. Gives up (RuntimeError) after
        `idle_timeout` seconds without any message while still behind.
        """
        should_stop = _stopper(stop, self._stop)
        if not self.open_when_up(should_stop):
            return 0
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
        if not should_stop():
            self.caught_up.set()
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


def _pause_until(deadline: float, should_stop: Callable[[], bool]) -> None:
    while not should_stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


def _stopper(stop: Stop, own: threading.Event) -> Callable[[], bool]:
    if stop is None:
        return own.is_set
    if isinstance(stop, threading.Event):
        return lambda: stop.is_set() or own.is_set()
    return lambda: stop() or own.is_set()


def load_projectors(spec: str | Sequence[str]) -> list[Projector]:
    """Projectors from "module:name" entries (comma-separated or a list).

    A name may be a projector class (instantiated), a projector instance, a function
    returning projectors (called without arguments, e.g. projections.models:make), or a
    string of further entries (e.g. projections.models:ALL_SPEC).
    """
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
