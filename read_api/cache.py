"""A small response cache for the read API, invalidated by new events and by time, with
one computation per key at a time.

Dashboards are polled every few seconds by every open page, and their figures cost tens
to hundreds of milliseconds over millions of complaints; an `as_of` view rebuilds the
read models up to its instant and costs seconds. So:

- an answer "now" is reused while the read node has applied no new event (its `events`
  table's highest position is unchanged) and for at most `ttl` seconds (figures such as
  "breached" move on with the clock alone);
- an answer `as_of` an instant does not move with the clock: it is reused until an event
  at or before that instant arrives (a backdated import), however long that takes;
- concurrent requests for the same key share one computation (single-flight): the first
  computes, the others wait for its answer, or its error.

The key is the caller's: the read API builds it from the validated parameters only (an
unknown parameter is a 422 before it gets here), and rounds `as_of` to its granularity.
At most `max_entries` answers are kept, the least recently used going first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

import duckdb


def data_version(db: duckdb.DuckDBPyConnection) -> int:
    """The highest event position the read node holds (cheap: DuckDB keeps min/max stats)."""
    found = db.execute("SELECT coalesce(max(position), 0), count(*) FROM events").fetchall()
    return hash(found[0])


def data_version_at(db: duckdb.DuckDBPyConnection, as_of: datetime) -> int:
    """What an `as_of` view reads: the events that occurred at or before `as_of` (one scan
    of the narrow `occurred_at` column, pruned by DuckDB's zone maps)."""
    found = db.execute("SELECT coalesce(max(position), 0), count(*) FROM events WHERE occurred_at <= ?",
                       [as_of]).fetchall()
    return hash(found[0])


class _Flight:
    """One computation in progress, which later callers of the same key wait for."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class ResponseCache:
    def __init__(self, ttl: float, max_entries: int = 256) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()
        self.hits = self.misses = self.shared = 0

    def get(self, key: Hashable, db: duckdb.DuckDBPyConnection, compute: Callable[[], Any], *,
            as_of: datetime | None = None) -> Any:
        """The answer for `key`: reused, shared with a computation in flight, or computed.
        `as_of`: the instant the answer describes, if not now (it then has no time to live)."""
        version = data_version(db) if as_of is None else data_version_at(db, as_of)
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[1] == version and (as_of is not None or now - found[0] < self.ttl):
                self._entries.move_to_end(key)
                self.hits += 1
                return found[2]
            flight = self._flights.get(key)
            leader = flight is None or flight.version != version
            if leader:
                flight = self._flights[key] = _Flight(version)
        assert flight is not None
        if not leader:
            flight.done.wait()
            with self._lock:
                self.shared += 1
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            # Outside the lock: requests for other keys run in parallel.
            flight.value = compute()
        except BaseException as error:
            flight.error = error
            raise
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
                if flight.error is None:
                    self.misses += 1
                    if self.ttl > 0:
                        self._entries[key] = (now, version, flight.value)
                        self._entries.move_to_end(key)
                        while len(self._entries) > self.max_entries:
                            self._entries.popitem(last=False)
            flight.done.set()
        return flight.value
