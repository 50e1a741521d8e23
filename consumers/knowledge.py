"""The knowledge drafter: a process manager that turns well-rated solutions into drafts.

It follows the stream (the event store's log in-process, or Kafka) and, for each
`Verified` event with a CSAT of 4 or more, drafts a knowledge article from the complaint
as it was at that version (its title, description and the resolution the customer
rated), through the desk, as the service identity `automation:knowledge`. People in
quality and the team leads then edit, publish or retire the drafts (docs/knowledge.md).

Exactly once: the draft's command id derives from the triggering event (`knowledge-draft:
<complaint>:v<version>`) and the article's id from the command id, so a batch read again
after a crash, a redelivered message or a second copy of the drafter collides on the
same article and the desk answers "drafted before". Its own state is a SQLite file: the
positions and the outcome of every draft, saved in one transaction after the batch was
carried out. A refusal (the complaint not found, no resolution at that version) is
recorded with its reason and never retried; anything else (the store away) fails the
step, which is retried from the saved state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from aggregates.access import AccessDenied, Principal
from aggregates.complaint import DomainError
from aggregates.envelope import EventEnvelope
from commands.desk import ComplaintNotFound
from commands.knowledge import ArticleResult, DraftArticle
from commands.models import InvalidCommand
from consumers.sources import Source, lag
from consumers.state_file import InBackground, StateFile
from consumers.status import StatusFile

log = logging.getLogger(__name__)

# A solution the customer rated this well (CSAT, 1 to 5) becomes a draft.
MIN_CSAT = 4
PRINCIPAL = Principal("automation:knowledge", "自动化 automation: knowledge drafts", frozenset({"automation"}))
REFUSALS = (DomainError, AccessDenied, InvalidCommand, ValidationError, ComplaintNotFound)


class Desk(Protocol):
    def draft(self, command: DraftArticle, principal: Principal) -> ArticleResult: ...


def calls_for_a_draft(envelope: EventEnvelope) -> bool:
    """Whether a stream event calls for a draft: a `Verified` one rated `MIN_CSAT` or better."""
    return envelope.event_type == "Verified" and (envelope.payload.get("csat") or 0) >= MIN_CSAT


def draft_command_id(envelope: EventEnvelope) -> str:
    """The draft's command id, derived from the event that calls for it."""
    return f"knowledge-draft:{envelope.complaint_id}:v{envelope.complaint_version}"


class DrafterState(StateFile):
    """The drafter's SQLite file: its positions and every draft's outcome. One process at a
    time (a lock file says so)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS positions (source TEXT NOT NULL, partition INTEGER NOT NULL,
                                          next_position INTEGER NOT NULL, PRIMARY KEY (source, partition));
    CREATE TABLE IF NOT EXISTS drafts (command_id TEXT PRIMARY KEY, complaint_id TEXT NOT NULL, article_id TEXT,
                                       outcome TEXT NOT NULL, detail TEXT NOT NULL, done_at TEXT NOT NULL);
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, self.SCHEMA, "another knowledge drafter: give this one its own --state file"
                                            " (two copies never draft twice, but each needs its own)")

    def positions(self, source: str) -> dict[int, int]:
        return {p: n for p, n in self.db.execute(
            "SELECT partition, next_position FROM positions WHERE source = ?", [source])}

    def save(self, source: str, positions: dict[int, int], outcomes: Sequence[tuple[str, str, str | None, str, str]]
             ) -> None:
        """The positions and the drafts' outcomes (command, complaint, article, outcome, detail), together."""
        now = datetime.now(UTC).isoformat()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                                [(source, p, n) for p, n in positions.items()])
            self.db.executemany("INSERT OR REPLACE INTO drafts VALUES (?, ?, ?, ?, ?, ?)",
                                [(*outcome, now) for outcome in outcomes])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def outcomes(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT outcome, count(*) FROM drafts GROUP BY outcome").fetchall())



class KnowledgeDrafter(InBackground):
    """The process manager: `step()` once, `run()` until stopped, `start_background()` in a thread."""

    thread_name = "knowledge-drafter"

    def __init__(self, source: Source, desk: Desk, state_path: str | Path, *, batch_size: int = 5_000,
                 poll_timeout: float = 0.1, status_every: float = 2.0, fault_pause: float = 0.0) -> None:
        self.source = source
        self.desk = desk
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.state = DrafterState(state_path)
        self.status_file = StatusFile(str(self.state.path), status_every)
        self.fault_pause = fault_pause  # test only: widens the window between drafting and saving
        self.positions: dict[int, int] = {}
        self.caught_up = threading.Event()
        self.unreadable = 0
        self._started = False
        self._stop = threading.Event()

    def open(self) -> KnowledgeDrafter:
        if not self._started:
            self.positions = self.state.positions(self.source.name)
            self.source.start(self.positions)
            self._started = True
            log.info("knowledge drafter on %s: positions %s", self.source.name, self.positions or "from the start")
        return self

    def close(self) -> None:
        self.write_status(force=True)
        self.source.close()
        self.state.close()

    def step(self) -> int:
        """Read a batch, draft what it calls for, save. Returns how many drafts were asked for."""
        self.open()
        polled = self.source.poll(self.batch_size, self.poll_timeout)
        outcomes = []
        for envelope in self._envelopes(polled.values):
            if calls_for_a_draft(envelope):
                outcomes.append(self._draft(envelope))
        if len(polled) < self.batch_size:
            self.caught_up.set()
        if outcomes and self.fault_pause:
            time.sleep(self.fault_pause)  # test only: a kill here drafts again after the restart
        positions = {p: n for p, n in polled.next_positions.items() if self.positions.get(p) != n}
        if outcomes or positions:
            self.state.save(self.source.name, positions, outcomes)
            self.positions.update(positions)
        self.write_status()
        return len(outcomes)

    def _draft(self, envelope: EventEnvelope) -> tuple[str, str, str | None, str, str]:
        command_id, complaint_id = draft_command_id(envelope), str(envelope.complaint_id)
        try:
            result = self.desk.draft(DraftArticle(
                complaint_id=envelope.complaint_id, complaint_version=envelope.complaint_version,
                command_id=command_id, correlation_id=envelope.correlation_id), PRINCIPAL)
        except REFUSALS as refusal:
            log.info("draft %s refused by the desk: %s", command_id, refusal)
            return command_id, complaint_id, None, "refused", f"{type(refusal).__name__}: {refusal}"
        outcome = "duplicate" if result.replayed else "accepted"
        if not result.replayed:
            log.info("drafted knowledge article %s from complaint %s", result.article_id, complaint_id)
        return command_id, complaint_id, str(result.article_id), outcome, ""

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        try:
            behind: int | None = lag(self.source.end_positions(), self.positions, self.source.first_position)
        except Exception:
            behind = None
        return {"source": self.source.name, "positions": self.positions, "lag": behind,
                "drafts": self.state.outcomes(), "unreadable_messages": self.unreadable,
                "updated_at": datetime.now(UTC).isoformat()}

    def write_status(self, force: bool = False) -> None:
        self.status_file.write(self.status, force)
