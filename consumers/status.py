"""What a read node reports about itself: `ReadModelStatus`, and the file it leaves for others.

Other processes cannot open a DuckDB file a read node has open, so the node writes its
status next to the file (`<db>.status.json`) when it starts, stops, and every
`status_every` seconds of work; `complaints positions` and the read API show it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumers.dead_letters import count_by_stage

if TYPE_CHECKING:
    from consumers.read_node import ReadNode

log = logging.getLogger(__name__)


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


def read_model_status(node: ReadNode, known_lag: int | None = None) -> ReadModelStatus:
    """read_model_status: positions, lag (asked of the source unless `known_lag`), and
    dead letters per projector."""
    cursor = node.cursor()
    current_lag: int | None = known_lag
    if current_lag is None:
        try:
            current_lag = node.lag()
        except Exception as error:  # the broker may be down: say so rather than fail
            log.debug("lag unknown: %s", error)
    by_stage = count_by_stage(cursor)
    positions = node.committed_positions()
    return ReadModelStatus(
        db_path=node.db_path,
        source=node.source.name,
        positions=positions,
        lag=current_lag,
        events=node.count_events(),
        dead_letters=sum(by_stage.values()),
        projectors=[
            ProjectorStatus(p.name, p.schema_version, by_stage.get(p.name, 0))
            for p in node.all_projectors()
        ] + ([ProjectorStatus("envelope", 0, by_stage["envelope"])] if "envelope" in by_stage else []),
        updated_at=datetime.now(UTC).isoformat(),
    )


class StatusFile:
    """The status a process leaves next to its state file (a read node's DuckDB file, the
    automation's or the notifier's SQLite file), at most every `every` seconds unless forced."""

    def __init__(self, db_path: str, every: float) -> None:
        self.path: Path | None = None if db_path == ":memory:" else Path(db_path + ".status.json")
        self.every = every
        self._last = 0.0

    def write(self, status: Callable[[], ReadModelStatus | dict[str, Any]], force: bool = False) -> None:
        """Write `status()` (asked only when due); a failure is logged, never raised."""
        path = self.path
        if path is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        try:
            tmp = path.with_suffix(".tmp")
            report = status()
            tmp.write_text(json.dumps(report, indent=2) if isinstance(report, dict) else report.to_json())
            os.replace(tmp, path)
        except Exception as error:
            log.warning("cannot write %s: %s", path, error)
