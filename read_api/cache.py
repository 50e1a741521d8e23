"""A small response cache for the read API, invalidated by new events and by time.

Dashboards are polled every few seconds by every open page, and their figures cost tens
to hundreds of milliseconds over millions of complaints. An answer is reused while the
read node has applied no new event (its `events` table's highest position is unchanged)
and for at most `ttl` seconds (figures such as "breached" move on with the clock alone).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import duckdb


def data_version(db: duckdb.DuckDBPyConnection) -> int:
    """The highest event position the read node holds (cheap: DuckDB keeps min/max stats)."""
    found = db.execute("SELECT coalesce(max(position), 0), count(*) FROM events").fetchall()
    return hash(found[0])


class ResponseCache:
    def __init__(self, ttl: float, max_entries: int = 256) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, db: duckdb.DuckDBPyConnection, compute: Callable[[], Any]) -> Any:
        if self.ttl <= 0:
            return compute()
        version = data_version(db)
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[1] == version and now - found[0] < self.ttl:
                self._entries.move_to_end(key)
                self.hits += 1
                return found[2]
        value = compute()  # outside the lock: requests for other figures run in parallel
        with self._lock:
            self.misses += 1
            self._entries[key] = (now, version, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value
