"""A process manager's own state: a SQLite file that one process holds at a time, and the
loop (and thread) it follows the stream in.

The automation, the notifier and the knowledge drafter each keep their positions and what
they did in a file of their own (WAL, so a crash loses no committed transaction). Two
copies on one file would each act on what the other half-did: the second is refused, by
an exclusive lock on a file beside it, with what to do instead.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from aggregates.envelope import EventEnvelope, parse
from consumers.retrying import Backoff

log = logging.getLogger(__name__)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to a state file (another thread of the process may hold one too)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed transaction's effect on order
    return db


class StateFile:
    """The SQLite state at `path`, made with `schema`, held by this process until `close`."""

    def __init__(self, path: str | Path, schema: str, held_by_another: str) -> None:
        """`held_by_another`: the error's words when another process holds the file."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"{self.path} is in use by {held_by_another}") from None
        self.db = connect(self.path)
        self.db.executescript(schema)

    def close(self) -> None:
        self.db.close()
        self._lock.close()


class InBackground:
    """A process manager's loop: `step` until stopped, a failing step (the store or broker
    away) retried with a back-off from the saved state; in a daemon thread if asked."""

    thread_name = "process-manager"
    _stop: threading.Event
    _thread: threading.Thread | None = None
    _started: bool
    unreadable: int
    step: Callable[[], object]

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or self._stop
        backoff = Backoff(stop.is_set)
        while not stop.is_set():
            try:
                self.step()
                backoff.reset()
            except Exception as error:
                log.error("%s step failed, retrying in %.1fs from the saved state: %s: %s",
                          self.thread_name, backoff.seconds, type(error).__name__, error)
                self._started = False  # reload what was saved, and read again from its positions
                backoff.wait()

    def _envelopes(self, values: Sequence[bytes]) -> list[EventEnvelope]:
        """The messages as envelopes in the log's order (across Kafka's partitions); one that
        does not parse is skipped and counted (the read nodes keep it as a dead letter)."""
        envelopes = []
        for value in values:
            try:
                envelopes.append(parse(value))
            except (ValueError, ValidationError) as error:
                self.unreadable += 1
                log.warning("skipping an unreadable message: %s", str(error)[:300])
        return sorted(envelopes, key=lambda e: e.position)

    def start_background(self) -> threading.Thread:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
