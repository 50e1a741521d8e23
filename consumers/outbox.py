"""The notifier's own SQLite file: the outbox, every attempt, what it knows, its positions.

The follower (planning deliveries from the stream) and the dispatcher (sending them) each
have a connection of their own; WAL lets one write while the other reads. What the
follower planned and the positions it read to are saved in one transaction, so a crash
either plans a batch's deliveries and moves on, or does neither and reads the batch
again, planning the same delivery ids (`INSERT OR IGNORE`). One process at a time: a lock
file says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.notification_routing import Planned
from consumers.state_file import StateFile, connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,             -- the webhook-id
    subscription TEXT NOT NULL,      -- a subscription id, or customer:email / customer:sms
    kind TEXT NOT NULL, endpoint TEXT NOT NULL, type TEXT NOT NULL, position INTEGER NOT NULL,
    notice TEXT NOT NULL,            -- consumers.notices.Notice as JSON
    status TEXT NOT NULL,            -- pending, held, delivered, failed, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,  -- failed attempts since it was planned or re-sent: the schedule's step
    next_at REAL,                    -- unix seconds of the next attempt (pending only)
    created_at TEXT NOT NULL, done_at TEXT, last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (subscription, status, next_at);
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, created_at);
CREATE TABLE IF NOT EXISTS attempts (
    delivery TEXT NOT NULL, n INTEGER NOT NULL, at TEXT NOT NULL, status_code INTEGER, latency_ms REAL NOT NULL,
    outcome TEXT NOT NULL,           -- delivered, failed, gone (410), refused (SSRF guard)
    excerpt TEXT NOT NULL, PRIMARY KEY (delivery, n)
);
CREATE TABLE IF NOT EXISTS endpoints (
    subscription TEXT PRIMARY KEY, failing_since TEXT, disabled_at TEXT, reason TEXT
);
CREATE TABLE IF NOT EXISTS subjects (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY, position INTEGER NOT NULL, subscription TEXT NOT NULL, type TEXT NOT NULL,
    reason TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (source TEXT NOT NULL, partition INTEGER NOT NULL,
                                      next_position INTEGER NOT NULL, PRIMARY KEY (source, partition));
"""


@dataclass(frozen=True)
class SetAside:
    """A dead letter: a delivery no template could render, or an event the router could not read."""

    id: str  # the delivery's id, or event:<complaint id>:<version>
    position: int
    subscription: str  # "*" for an event set aside before any subscription was matched
    type: str
    reason: str


@dataclass
class Result:
    """One attempt's outcome, as the dispatcher records it."""

    delivery: str
    subscription: str
    at: datetime
    outcome: str  # delivered, failed, gone, refused, dead
    status_code: int | None
    latency_ms: float
    excerpt: str
    next_at: float | None  # failed: when to try again; None: no more tries


class Outbox(StateFile):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, SCHEMA, "another notifier: give this one its own COMPLAINTS_NOTIFIER_STATE")

    # ------------------------------------------------------------------ the follower's
    def load(self, source: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[int, int]]:
        subjects = {i: json.loads(d) for i, d in self.db.execute("SELECT id, data FROM subjects")}
        subscriptions = {i: json.loads(d) for i, d in self.db.execute("SELECT id, data FROM subscriptions")}
        positions = dict(self.db.execute("SELECT partition, next_position FROM positions WHERE source = ?", [source]))
        return subjects, subscriptions, positions

    def save_plan(self, source: str, positions: dict[int, int], planned: Sequence[Planned],
                  dead: Sequence[SetAside], subjects: dict[str, dict[str, Any]], now: datetime,
                  erased: Sequence[str] = ()) -> int:
        """A batch's deliveries, dead letters, subjects and positions in one transaction;
        returns how many deliveries are new. The customer deliveries of the complaints
        `erased` (their numbers) forget the customer's address, and those not made are not."""
        at = now.isoformat()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO deliveries (id, subscription, kind, endpoint, type, position, notice, status,"
                " next_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(p.id, p.subscription, p.kind, p.endpoint, p.notice.type, p.position, json.dumps(p.notice.to_json()),
                  "held" if p.held else "pending", now.timestamp(), at) for p in planned])
            new = self.db.total_changes - before
            self.db.executemany("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                                [(d.id, d.position, d.subscription, d.type, d.reason[:2_000], at) for d in dead])
            self.db.executemany("INSERT OR REPLACE INTO subjects VALUES (?, ?)",
                                [(i, json.dumps(d)) for i, d in subjects.items()])
            self.db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                                [(source, p, n) for p, n in positions.items()])
            self.db.executemany(
                "UPDATE deliveries SET endpoint = '[erased]',"
                " last_error = CASE WHEN status IN ('pending', 'held') THEN 'not sent: the customer was erased'"
                " ELSE last_error END, status = CASE WHEN status IN ('pending', 'held') THEN 'dead' ELSE status END"
                " WHERE subscription LIKE 'customer:%' AND json_extract(notice, '$.data.complaint_number') = ?",
                [(number,) for number in erased])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return new

    def save_subscriptions(self, subscriptions: Iterable[dict[str, Any]], position: int) -> None:
        """Subscriptions as they stand now, with the store position read to; deliveries of a
        paused or disabled one are held, a resumed one's go out."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for s in subscriptions:
                self.db.execute("INSERT OR REPLACE INTO subscriptions VALUES (?, ?)", [s["id"], json.dumps(s)])
                if s["status"] == "active":
                    self.db.execute("UPDATE deliveries SET status = 'pending', next_at = ? WHERE subscription = ?"
                                    " AND status = 'held'", [datetime.now(UTC).timestamp(), s["id"]])
                    self.db.execute("UPDATE endpoints SET failing_since = NULL, disabled_at = NULL, reason = NULL"
                                    " WHERE subscription = ?", [s["id"]])
                else:
                    self.db.execute("UPDATE deliveries SET status = 'held' WHERE subscription = ?"
                                    " AND status = 'pending'", [s["id"]])
            self.db.execute("INSERT OR REPLACE INTO positions VALUES ('subscriptions', 0, ?)", [position])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def subscriptions_position(self) -> int:
        row = self.db.execute("SELECT next_position FROM positions WHERE source = 'subscriptions'").fetchone()
        return row[0] if row else 0


class Dispatch:
    """The dispatcher's connection: what is due, and the attempts' outcomes."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path)

    def due(self, subscription: str, now: float, limit: int, skip: set[str]) -> list[tuple[Any, ...]]:
        rows = self.db.execute(
            "SELECT id, subscription, kind, endpoint, notice, attempts, retries FROM deliveries"
            " WHERE subscription = ? AND status = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
            [subscription, now, limit + len(skip)]).fetchall()
        return [row for row in rows if row[0] not in skip][:limit]

    def pending_subscriptions(self, now: float) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT DISTINCT subscription FROM deliveries WHERE status = 'pending' AND next_at <= ?", [now])]

    def next_due(self) -> float | None:
        row = self.db.execute("SELECT min(next_at) FROM deliveries WHERE status = 'pending'").fetchone()
        return row[0]

    def record(self, results: Sequence[Result]) -> None:
        """The attempts, the deliveries' new status and the endpoints' health, in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for r in results:
                self.db.execute(
                    "INSERT INTO attempts SELECT ?, attempts + 1, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?",
                    [r.delivery, r.at.isoformat(), r.status_code, r.latency_ms, r.outcome, r.excerpt[:500],
                     r.delivery])
                if r.outcome == "delivered":
                    self.db.execute("UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,"
                                    " done_at = ?, last_error = NULL, next_at = NULL WHERE id = ?",
                                    [r.at.isoformat(), r.delivery])
                    self.db.execute("UPDATE endpoints SET failing_since = NULL WHERE subscription = ?",
                                    [r.subscription])
                    continue
                status = "pending" if r.next_at is not None else ("dead" if r.outcome == "dead" else "failed")
                self.db.execute(
                    "UPDATE deliveries SET status = CASE WHEN status = 'held' THEN 'held' ELSE ? END,"
                    " attempts = attempts + 1, retries = retries + 1, next_at = ?, last_error = ?,"
                    " done_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END WHERE id = ?",
                    [status, r.next_at, r.excerpt[:500], status, r.at.isoformat(), r.delivery])
                if r.outcome in ("failed", "gone"):
                    self.db.execute("INSERT INTO endpoints (subscription, failing_since) VALUES (?, ?)"
                                    " ON CONFLICT (subscription) DO UPDATE SET"
                                    " failing_since = coalesce(failing_since, excluded.failing_since)",
                                    [r.subscription, r.at.isoformat()])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def failing_since(self, subscription: str) -> datetime | None:
        row = self.db.execute("SELECT failing_since FROM endpoints WHERE subscription = ?", [subscription]).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def mark_disabled(self, subscription: str, reason: str, at: datetime) -> None:
        self.db.execute("UPDATE endpoints SET disabled_at = ?, reason = ? WHERE subscription = ?",
                        [at.isoformat(), reason, subscription])
        self.db.execute("UPDATE deliveries SET status = 'held' WHERE subscription = ? AND status = 'pending'",
                        [subscription])

    def active_subscriptions(self) -> list[dict[str, Any]]:
        return [s for (data,) in self.db.execute("SELECT data FROM subscriptions")
                if (s := json.loads(data))["status"] == "active"]

    def close(self) -> None:
        self.db.close()
