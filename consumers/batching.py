"""Applying a batch: one DuckDB transaction, and the events a projector raises on set aside.

Each batch is one DuckDB transaction: the new events into the `events` table
(deduplicated by complaint id and version), only those new rows to the other projectors,
dead letters into `dead_letters`, and the source positions; then commit. A crash
anywhere before the commit leaves the file as it was, and the batch is read again from
the stored positions: exactly-once effects from an at-least-once bus.

A projector that raises on an event must not stop the others. DuckDB has no savepoints,
so the batch is rolled back, the failing event is found, and the batch is applied again
without that event for that projector only. The event goes to the dead letters with the
projector's error. Finding it:
- a projector that names its poison (`PoisonEvent`, raised before it writes anything) is
  taken at its word: no search;
- otherwise the batch is bisected in trial transactions that are always rolled back (a
  projector may have written half of its work before raising), each search starting
  after the prefix already known to apply. The search has a budget (`PoisonBudget`: time
  and memory, per failure): a trial running past it is interrupted, and when it is spent
  the events still suspected (at most the part of the batch not yet cleared) go to the
  dead letters together, with the error and why the search stopped. One bad event never
  holds a read node back for more than its batch and that budget.

Before any of this, an event whose `occurred_at` lies outside the node's window of
instants (`aggregates.instants`, configured by the composition root) is refused as an
unreadable message: a dead letter of stage 'envelope', never stored, never projected.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from aggregates.instants import InstantWindow
from consumers.bookkeeping import set_version, store_positions
from consumers.dead_letters import insert_dead_letters, messages_for
from consumers.decoding import Decoder
from consumers.metrics import READ_NODE_APPLY_SECONDS, record_dead_letters
from consumers.sources import DeadLetter, Message, Polled, Source
from projections.base import Projector
from projections.event_log import EventLog
from projections.facts import PoisonEvent

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


@dataclass(frozen=True)
class PoisonBudget:
    """What the search for the event a projector fails on may cost, per failure: wall
    seconds, and growth of the process's resident memory (bytes; checked between trials)."""

    seconds: float = 30.0
    memory_bytes: int = 1024 * 2**20


class _Exhausted(Exception):
    """The poison search spent its budget."""


def resident_bytes() -> int | None:
    """The process's resident memory (Linux /proc; None where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class ProjectorFailed(Exception):
    def __init__(self, projector: Projector, error: Exception) -> None:
        super().__init__(f"projector {projector.name} failed: {error}")
        self.projector = projector
        self.error = error


class BatchApplier:
    """Applies batches for one read node: its event log first, then the projectors given.

    The node commits (`commit`): it owns the positions that readers of its status see.
    """

    def __init__(self, event_log: EventLog, source: Source, *, window: InstantWindow | None = None,
                 budget: PoisonBudget | None = None) -> None:
        self.event_log = event_log
        self.source = source
        self.decoder = Decoder()
        self.window = window or InstantWindow()
        self.budget = budget or PoisonBudget()

    def apply_polled(
        self, db: duckdb.DuckDBPyConnection, polled: Polled, projectors: Sequence[Projector], commit: Commit
    ) -> tuple[BatchResult, pa.Table | None]:
        """Decode a poll's messages and apply them with the poll's positions, in one transaction.

        Returns what happened and the rows new to `events` (None: nothing stored).
        """
        decoded = self.decoder.decode(db, polled)
        letters = list(decoded.dead_letters)
        batch, outside = self._inside_window(decoded.batch, polled)
        letters += outside
        unreadable = len(letters)
        if letters:
            log.warning("%d unreadable message(s) to the dead letters, first: %s at %s/%s",
                        len(letters), letters[0].error, letters[0].message.partition, letters[0].message.offset)
        new, letters = self.apply(db, batch, projectors, commit, store_events=True,
                                  positions=polled.next_positions, letters=letters, raw=polled)
        new_count = 0 if new is None else new.num_rows
        duplicates = len(polled) - unreadable - new_count
        return BatchResult(len(polled), new_count, duplicates, len(letters)), new

    def _inside_window(self, batch: pa.Table, polled: Polled) -> tuple[pa.Table, list[DeadLetter]]:
        """The batch without the events whose occurred_at lies outside the window, and
        their dead letters (stage 'envelope': such a message is not a readable event)."""
        if not batch.num_rows:
            return batch, []
        at = batch["occurred_at"]
        kind = at.type
        inside = pc.and_(pc.greater_equal(at, pa.scalar(self.window.earliest, kind)),
                         pc.less(at, pa.scalar(self.window.latest, kind)))
        if pc.all(inside).as_py():
            return batch, []
        outside = batch.filter(pc.invert(inside)).to_pylist()
        letters = [DeadLetter(message, "envelope",
                              f"occurred_at {row['occurred_at'].isoformat()} is outside the instants this system"
                              f" accepts ({self.window.describe()})", row["complaint_id"], row["complaint_version"])
                   for row, message in zip(outside, messages_for(polled, outside), strict=True)]
        log.warning("%d event(s) outside the window of instants to the dead letters, first: %s v%s at %s",
                    len(letters), outside[0]["complaint_id"], outside[0]["complaint_version"],
                    outside[0]["occurred_at"].isoformat())
        return batch.filter(inside), letters

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
        cleared: dict[str, int] = {}  # projector -> leading rows it is known to apply (with those exclusions)
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
                found = self._find_poison(db, batch, failure, excluded, cleared, store_events, raw)
                excluded.setdefault(failure.projector.name, set()).update(position for position, _ in found)
                letters.extend(letter for _, letter in found)
            except BaseException:
                db.rollback()
                raise

    def _find_poison(
        self, db: duckdb.DuckDBPyConnection, batch: pa.Table, failure: ProjectorFailed,
        excluded: dict[str, set[int]], cleared: dict[str, int], store_events: bool, raw: Polled | None,
    ) -> list[tuple[int, DeadLetter]]:
        """The events to dead-letter for the projector that failed: (position, letter) each.

        Those a `PoisonEvent` names; else the first event the projector raises on, by
        bisection in rolled-back trials, within the budget (past it: every event still
        suspected). Assumes a projector fails the same way on the same input
        (deterministic); if the failure does not reproduce it was transient, and the whole
        batch is retried later.
        """
        projector = failure.projector
        error = failure.error
        if isinstance(error, PoisonEvent):
            named = {p[0]: p for p in error.problems} if error.problems else {}
            fresh = set(named) - excluded.get(projector.name, set())
            if fresh:
                rows = batch.filter(pc.is_in(batch["position"], value_set=pa.array(sorted(fresh), pa.int64())))
                listed = rows.to_pylist()
                found = [(row["position"], _letter(projector, row, f"PoisonEvent: {named[row['position']][4]}", message))
                         for row, message in zip(listed, messages_for(raw, listed), strict=True)]
                if len(found) == len(fresh):
                    log.error("projector %s names %d poison event(s), first %s v%s (position %s): %s; "
                              "dead-lettered, the other projectors apply them", projector.name, len(found),
                              found[0][1].complaint_id, found[0][1].complaint_version, found[0][0],
                              found[0][1].error, extra={"correlation_id": rows["correlation_id"][0].as_py()})
                    return found
            # Positions it does not hold: find the event the usual way.
        started = time.monotonic()
        deadline = started + self.budget.seconds
        memory_at_start = resident_bytes()
        interrupted = threading.Event()

        def check_budget() -> None:
            if time.monotonic() >= deadline:
                raise _Exhausted(f"it took longer than {self.budget.seconds:g}s")
            now = resident_bytes()
            if memory_at_start is not None and now is not None and now - memory_at_start > self.budget.memory_bytes:
                raise _Exhausted(f"memory grew by {(now - memory_at_start) / 2**20:.0f} MB, more than "
                                 f"{self.budget.memory_bytes / 2**20:.0f} MB")

        def trial(rows_count: int) -> Exception | None:
            check_budget()
            watchdog = threading.Timer(max(0.0, deadline - time.monotonic()),
                                       lambda: (interrupted.set(), db.interrupt()))
            watchdog.daemon = True
            db.begin()
            watchdog.start()
            try:
                new = self.event_log.insert_new(db, batch) if store_events else batch
                rows = _without(_by_stream(new)[stream_of(projector)], excluded.get(projector.name))
                projector.apply(db, rows.slice(0, rows_count))
                return None
            except Exception as error:
                if interrupted.is_set():
                    raise _Exhausted(f"a trial ran past {self.budget.seconds:g}s and was interrupted") from error
                return error
            finally:
                watchdog.cancel()
                db.rollback()

        db.begin()
        try:
            new = self.event_log.insert_new(db, batch) if store_events else batch
        finally:
            db.rollback()
        candidates = _without(_by_stream(new)[stream_of(projector)], excluded.get(projector.name))
        # invariant: the first `low - 1` rows apply, the first `high` rows fail
        low, high = min(cleared.get(projector.name, 0), candidates.num_rows - 1) + 1, candidates.num_rows
        trials = 0
        try:
            trials += 1
            found = trial(high)
            if found is None:
                raise RuntimeError(f"projector {projector.name} failed once but not again: {error}") from error
            error = found
            while low < high:
                middle = (low + high) // 2
                trials += 1
                if (found := trial(middle)) is not None:
                    high, error = middle, found
                else:
                    low = middle + 1
        except _Exhausted as spent:
            # Every event not cleared yet, up to the first prefix seen failing, is suspect.
            suspects = candidates.slice(low - 1, high - low + 1).to_pylist()
            reason = (f"{type(error).__name__}: {error} (one of {len(suspects)} events from position "
                      f"{suspects[0]['position']} to {suspects[-1]['position']}: the search for it stopped after "
                      f"{trials} trials in {time.monotonic() - started:.1f}s because {spent})")
            log.error("projector %s: poison search stopped (%s); %d suspected events dead-lettered for it, the "
                      "other projectors apply them", projector.name, spent, len(suspects))
            cleared[projector.name] = low - 1
            return [(row["position"], _letter(projector, row, reason, message))
                    for row, message in zip(suspects, messages_for(raw, suspects), strict=True)]
        cleared[projector.name] = high - 1  # the rows before the bad one apply; it leaves the candidates
        row = candidates.slice(high - 1, 1).to_pylist()[0]
        log.error("projector %s raises on event %s v%s (position %s): %s: %s; dead-lettered, the other "
                  "projectors apply it (found in %d trials, %.2fs)", projector.name, row["complaint_id"],
                  row["complaint_version"], row["position"], type(error).__name__, error, trials,
                  time.monotonic() - started,
                  extra={"correlation_id": row["correlation_id"]})  # the command's, as the API logged it
        return [(row["position"], _letter(projector, row, f"{type(error).__name__}: {error}",
                                          messages_for(raw, [row])[0]))]


def _letter(projector: Projector, row: dict[str, Any], error: str, message: Message) -> DeadLetter:
    return DeadLetter(message, projector.name, error, row["complaint_id"], row["complaint_version"])


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
