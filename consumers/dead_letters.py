"""Dead letters: the messages a read node could not apply, in its `dead_letters` table.

A row per message and stage: 'envelope' for a message that could not be read, or the
name of the projector that raised on the event (the other projectors applied it). The
table itself is created with the node's other tables (consumers.bookkeeping); the
source publishes the same letters where it has a place for them (Kafka: a topic).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from consumers.sources import DeadLetter, Message, Polled

_DEAD_LETTER_SCHEMA = pa.schema([
    ("source", pa.string()), ("partition", pa.int32()), ("source_position", pa.int64()),
    ("stage", pa.string()), ("complaint_id", pa.string()), ("complaint_version", pa.int32()),
    ("error", pa.string()), ("raw", pa.binary()), ("recorded_at", pa.timestamp("us", tz="UTC")),
])


def insert_dead_letters(db: duckdb.DuckDBPyConnection, source: str, letters: Sequence[DeadLetter]) -> None:
    """Insert the letters, in one statement (inside the batch's transaction)."""
    now = datetime.now(UTC)
    table = pa.table({
        "source": [source] * len(letters),
        "partition": [max(0, d.message.partition) for d in letters],
        "source_position": [d.message.offset for d in letters],
        "stage": [d.stage for d in letters],
        "complaint_id": [d.complaint_id for d in letters],
        "complaint_version": [d.complaint_version for d in letters],
        "error": [d.error for d in letters],
        "raw": [d.message.value for d in letters],
        "recorded_at": [now] * len(letters),
    }, schema=_DEAD_LETTER_SCHEMA)
    db.register("_dead_letters", table)
    try:
        db.execute("INSERT INTO dead_letters (source, partition, source_position, stage, complaint_id, "
                   "complaint_version, error, raw, recorded_at) SELECT * FROM _dead_letters")
    finally:
        db.unregister("_dead_letters")


def delete_dead_letters(db: duckdb.DuckDBPyConnection, stage: str) -> None:
    """Forget the letters of one stage (a projector rebuilt from scratch gets its chance again)."""
    db.execute("DELETE FROM dead_letters WHERE stage = ?", [stage])


def count_by_stage(cursor: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Stage -> how many dead letters it has."""
    return dict(cursor.execute("SELECT stage, count(*) FROM dead_letters GROUP BY stage").fetchall())


def messages_for(raw: Polled | None, rows: Sequence[dict[str, Any]]) -> list[Message]:
    """`message_for` of each row, reading the poll's messages once whatever their number."""
    if raw is None or len(rows) <= 1:
        return [message_for(raw, row) for row in rows]
    wanted = {row["position"] for row in rows}
    found: dict[int, Message] = {}
    for index, value in enumerate(raw.values):
        try:
            envelope = json.loads(value)
        except (ValueError, RecursionError):
            continue
        position = envelope.get("position") if isinstance(envelope, dict) else None
        if isinstance(position, int) and position in wanted and position not in found:
            found[position] = raw.message(index)
    return [found.get(row["position"]) or message_for(None, row) for row in rows]


def message_for(raw: Polled | None, row: dict[str, Any]) -> Message:
    """The raw message an event came in (only looked for when a projector failed on it).

    `raw`: the polled batch the event was decoded from; None when rebuilding from the
    local event log, where the stored row is the message.
    """
    if raw is not None:
        for index, value in enumerate(raw.values):
            try:
                envelope = json.loads(value)
            except (ValueError, RecursionError):
                continue
            if isinstance(envelope, dict) and envelope.get("position") == row["position"]:
                return raw.message(index)
    # Rebuilding from the local event log: the stored row is the message.
    text = json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()})
    return Message(0, row["position"], str(row["complaint_id"]).encode(), text.encode())
