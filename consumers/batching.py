"""Applying a batch: one DuckDB transaction, and the events a projector raises on set aside.

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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from consumers.bookkeeping import set_version, store_positions
from consumers.dead_letters import insert_dead_letters, message_for
from consumers.decoding import Decoder
from consumers.metrics import READ_NODE_APPLY_SECONDS, record_dead_letters
from consumers.sources import DeadLetter, Polled, Source
from projections.base import Projector
from projections.event_log import EventLog

log = logging.getLogger(__name__)

# Commits the open transaction of the connection; the positions stored in it (None: none)
# become the read node's in the same step.
Commit = Callable[[duckdb.DuckDBPyConnection, dict[int, int] | None], None]


@dataclass
class BatchResult:
    messages: int = 0  # read from the source
    new_events: int = 0  # stored in `events` for the first time
    duplicates: int = 0  # already there (the bus is at-least-once)
    dead_letters: int = 0


class ProjectorFailed(Exception):
    def __init__(self, projector: Projector, error: Exception) -> None:
        super().__init__(f"projector {projector.name} failed: {error}")
        self.projector = projector
        self.error = error


class BatchApplier:
    """Applies batches for one read node: its event log first, then the projectors given.

    The node commits (`commit`): it owns the positions that readers of its status see.
    """

    def __init__(self, event_log: EventLog, source: Source) -> None:
        self.event_log = event_log
        self.source = source
        self.decoder = Decoder()

    def apply_polled(
        self, db: duckdb.DuckDBPyConnection, polled: Polled, projectors: Sequence[Projector], commit: Commit
    ) -> tuple[BatchResult, pa.Table | None]:
        """Decode a poll's messages and apply them with the poll's positions, in one transaction.

        Returns what happened and the rows new to `events` (None: nothing stored).
        """
        decoded = self.decoder.decode(db, polled)
        letters = list(decoded.dead_letters)
        unreadable = len(letters)
        if letters:
            log.warning("%d unreadable message(s) to the dead letters, first: %s at %s/%s",
                        len(letters), letters[0].error, letters[0].message.partition, letters[0].message.offset)
        new, letters = self.apply(db, decoded.batch, projectors, commit, store_events=True,
                                  positions=polled.next_positions, letters=letters, raw=polled)
        new_count = 0 if new is None else new.num_rows
        duplicates = len(polled) - unreadable - new_count
        return BatchResult(len(polled), new_count, duplicates, len(letters)), new

    def apply(
        self,
        db: duckdb.DuckDBPyConnection,
        batch: pa.Table,
        projectors: Sequence[Projector],
        commit: Commit,
        *,
        store_events: bool,
        positions: dict[int, int] | None,
        letters: list[DeadLetter],
        raw: Polled | None = None,
        publish: bool = True,
        rebuilding: tuple[Projector, int] | None = None,
    ) -> tuple[pa.Table | None, list[DeadLetter]]:
        """Apply the batch in one transaction; isolate events a projector raises on.

        `raw`: the poll the batch was decoded from (None: rows of the local event log).
        `rebuilding`: the projector being rebuilt and the batch's last position, recorded
        with the batch. Returns the rows new to `events` (None unless `store_events`) and
        the dead letters committed with the batch.
        """
        excluded: dict[str, set[int]] = {}  # projector -> positions it must not see
        clock = time.perf_counter
        while True:
            db.begin()
            timings: list[tuple[str, float]] = []  # observed once the batch commits
            try:
                if store_events:
                    started = clock()
                    new = self.event_log.insert_new(db, batch)
                    timings.append((self.event_log.name, clock() - started))
                else:
                    new = batch
                streams = _by_stream(new)
                for projector in projectors:
                    rows = _without(streams[stream_of(projector)], excluded.get(projector.name))
                    if rows.num_rows:
                        started = clock()
                        try:
                            projector.apply(db, rows)
                        except Exception as error:
                            raise ProjectorFailed(projector, error) from error
                        timings.append((projector.name, clock() - started))
                if letters:
                    insert_dead_letters(db, self.source.name, letters)
                if positions:
                    store_positions(db, self.source.name, positions)
                if rebuilding:
                    set_version(db, rebuilding[0], rebuild_position=rebuilding[1])
                if letters and publish:
                    self.source.publish_dead_letters(letters)  # before commit: at least once
                commit(db, positions)
                for name, seconds in timings:
                    READ_NODE_APPLY_SECONDS.labels(projector=name).observe(seconds)
                record_dead_letters(letters)
                return (new if store_events else None), letters
            except ProjectorFailed as failure:
                db.rollback()
                position, letter = self._find_poison(db, batch, failure, excluded, store_events, raw)
                excluded.setdefault(failure.projector.name, set()).add(position)
                letters.append(letter)
            except BaseException:
                db.rollback()
                raise

    def _find_poison(
        self, db: duckdb.DuckDBPyConnection, batch: pa.Table, failure: ProjectorFailed,
        excluded: dict[str, set[int]], store_events: bool, raw: Polled | None,
    ) -> tuple[int, DeadLetter]:
        """The first event the projector raises on (its position, its dead letter), by
        bisection in rolled-back trials.

        Assumes a projector fails the same way on the same input (deterministic); if the
        failure does not reproduce it was transient, and the whole batch is retried later.
        """
        projector = failure.projector

        def trial(rows_count: int) -> Exception | None:
            db.begin()
            try:
                new = self.event_log.insert_new(db, batch) if store_events else batch
                rows = _without(_by_stream(new)[stream_of(projector)], excluded.get(projector.name))
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
        candidates = _without(_by_stream(new)[stream_of(projector)], excluded.get(projector.name))
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
                  row["position"], type(error).__name__, error,
                  extra={"correlation_id": row["correlation_id"]})  # the command's, as the API logged it
        return row["position"], DeadLetter(message_for(raw, row), projector.name,
                                           f"{type(error).__name__}: {error}", row["complaint_id"],
                                           row["complaint_version"])


def stream_of(projector: Projector) -> str:
    """Which events a projector reads: a complaint's (the default), or an alert's (`stream = "alert"`)."""
    return getattr(projector, "stream", "complaint")


def _by_stream(table: pa.Table) -> dict[str, pa.Table]:
    """The batch's complaint events and its alert events (event types `Alert...`)."""
    if not table.num_rows:
        return {"complaint": table, "alert": table}
    alert = pc.starts_with(table["event_type"], "Alert")
    if not pc.any(alert).as_py():
        return {"complaint": table, "alert": table.slice(0, 0)}
    return {"complaint": table.filter(pc.invert(alert)), "alert": table.filter(alert)}


def _without(table: pa.Table, positions: set[int] | None) -> pa.Table:
    if not positions:
        return table
    return table.filter(pc.invert(pc.is_in(table["position"], value_set=pa.array(sorted(positions), pa.int64()))))
