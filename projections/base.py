"""What every projector is, and the shape of the batches a read node hands it.

A batch is an Arrow table of envelopes (one row per event, ordered by `position`), already
deduplicated by (complaint_id, complaint_version) against what the read node has applied.
A read node calls `apply` inside its DuckDB transaction, together with the consumer
positions, so a batch is applied exactly once or not at all.

Two streams share the batches: a complaint's events and an alert's (event types
`Alert...`, whose `complaint_id` is the alert's id and `complaint_version` its version). A
projector reads the complaint events unless it says `stream = "alert"` (e.g.
`projections.alerts.AlertsProjector`); the read node hands each projector only the rows
of its stream (`consumers.batching.stream_of`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

import duckdb
import pyarrow as pa

from aggregates.envelope import EventEnvelope

BATCH_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("complaint_id", pa.string()),
        ("complaint_version", pa.int32()),
        ("event_type", pa.string()),
        ("event_version", pa.int32()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        ("actor", pa.string()),
        ("command_id", pa.string()),
        ("correlation_id", pa.string()),
        ("payload", pa.string()),  # JSON text; DuckDB's json_extract reads it in bulk
    ]
)


def to_batch(envelopes: Iterable[EventEnvelope]) -> pa.Table:
    """Envelopes as an Arrow batch (column-wise, for bulk inserts into DuckDB)."""
    rows = list(envelopes)
    return pa.table(
        {
            "position": [e.position for e in rows],
            "complaint_id": [str(e.complaint_id) for e in rows],
            "complaint_version": [e.complaint_version for e in rows],
            "event_type": [e.event_type for e in rows],
            "event_version": [e.event_version for e in rows],
            "occurred_at": [e.occurred_at for e in rows],
            "recorded_at": [e.recorded_at for e in rows],
            "actor": [e.actor for e in rows],
            "command_id": [e.command_id for e in rows],
            "correlation_id": [e.correlation_id for e in rows],
            "payload": [json.dumps(e.payload, ensure_ascii=False) for e in rows],
        },
        schema=BATCH_SCHEMA,
    )


class Projector(Protocol):
    name: str  # the read model's name, e.g. "sla"
    schema_version: int  # bump when the tables change: the read node rebuilds on start
    # Optional: `stream = "alert"` for a projector of the alert events (default: "complaint").

    def create_schema(self, db: duckdb.DuckDBPyConnection) -> None:
        """Create this read model's tables if they do not exist."""

    def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        """Apply a batch of new events, in bulk, inside the caller's transaction."""
