"""The first read model: the event log itself, one row per event, in DuckDB.

The base for audit replay and for analysts' SQL. Deduplicated by (complaint_id,
complaint_version): the bus delivers at least once, this table holds each event once.
A read node calls `insert_new` first in every batch and hands only the rows it
reports as new to the other projectors.

Example (analysts): events per type and week
    SELECT event_type, date_trunc('week', occurred_at) AS week, count(*)
    FROM events GROUP BY ALL ORDER BY week;
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from projections.base import BATCH_SCHEMA

_COLUMNS = (
    "complaint_id, complaint_version, position, event_type, event_version, occurred_at, "
    "recorded_at, actor, command_id, correlation_id, payload, applied_at"
)


class EventLog:
    name = "events"
    schema_version = 1

    def create_schema(self, db: duckdb.DuckDBPyConnection) -> None:
        db.execute(
            """
            CREATE TABLE IF NOT EXISTS events (
                complaint_id UUID NOT NULL,
                complaint_version INTEGER NOT NULL,
                position BIGINT NOT NULL,          -- global position in the event store's log
                event_type VARCHAR NOT NULL,
                event_version INTEGER NOT NULL,
                occurred_at TIMESTAMPTZ NOT NULL,
                recorded_at TIMESTAMPTZ NOT NULL,
                actor VARCHAR NOT NULL,
                command_id VARCHAR NOT NULL,
                correlation_id VARCHAR NOT NULL,
                payload JSON NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL,   -- when this read node stored it (freshness)
                PRIMARY KEY (complaint_id, complaint_version)
            )
            """
        )

    def drop_schema(self, db: duckdb.DuckDBPyConnection) -> None:
        db.execute("DROP TABLE IF EXISTS events")

    def insert_new(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> pa.Table:
        """Insert the batch's events not stored yet, in bulk; returns those rows (same schema).

        The batch must hold each (complaint_id, complaint_version) at most once.
        """
        if batch.num_rows == 0:
            return batch
        db.register("_event_log_batch", batch)
        try:
            inserted = db.execute(
                f"""
                INSERT INTO events ({_COLUMNS})
                SELECT complaint_id::UUID, complaint_version, position, event_type, event_version,
                       occurred_at, recorded_at, actor, command_id, correlation_id, payload::JSON, ?
                FROM _event_log_batch
                ON CONFLICT DO NOTHING
                RETURNING position
                """,
                [datetime.now(UTC)],
            ).fetchall()
        finally:
            db.unregister("_event_log_batch")
        if len(inserted) == batch.num_rows:
            return batch
        new_positions = pa.array([row[0] for row in inserted], pa.int64())
        return batch.filter(pc.is_in(batch["position"], value_set=new_positions))

    def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        """The Projector protocol's entry point (duplicates are ignored)."""
        self.insert_new(db, batch)

    @staticmethod
    def read_batches(db: duckdb.DuckDBPyConnection, chunk_rows: int = 50_000, after: int = 0) -> pa.RecordBatchReader:
        """Stored events after a position, in position order, in a read node's batch shape (for rebuilds)."""
        return db.sql(
            """
            SELECT position, complaint_id::VARCHAR AS complaint_id, complaint_version, event_type,
                   event_version, occurred_at, recorded_at, actor, command_id, correlation_id,
                   payload::VARCHAR AS payload
            FROM events WHERE position > $after ORDER BY position
            """,
            params={"after": after},
        ).to_arrow_reader(chunk_rows)


def as_batch(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """A table read back from DuckDB in exactly a read node's batch schema."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return table.cast(BATCH_SCHEMA)
