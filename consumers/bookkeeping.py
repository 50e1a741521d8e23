"""The read node's own tables (`RUNNER_SCHEMA`) and what it keeps in them about itself.

`consumer_positions` holds, per source and partition, the next position to read; the
positions are stored in the same transaction as the batch they follow. An unfinished
projector rebuild keeps its place there too, as the source 'rebuild:<projector>'.
`read_model_meta` holds each projector's schema version. The `dead_letters` table is
created here with the others; consumers.dead_letters writes and counts its rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from projections.base import Projector

RUNNER_SCHEMA = """
CREATE TABLE IF NOT EXISTS read_model_meta (
    projector VARCHAR PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    built_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS consumer_positions (
    source VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    next_position BIGINT NOT NULL,   -- Kafka: the next offset; the log: last id + 1
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, partition)
);
CREATE SEQUENCE IF NOT EXISTS dead_letter_ids;
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGINT PRIMARY KEY DEFAULT nextval('dead_letter_ids'),
    source VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    source_position BIGINT NOT NULL,  -- Kafka offset, or notification id
    stage VARCHAR NOT NULL,           -- 'envelope' (unreadable), or the projector that raised
    complaint_id VARCHAR,
    complaint_version INTEGER,
    error VARCHAR NOT NULL,
    raw BLOB NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);
"""


def stored_positions(db: duckdb.DuckDBPyConnection, source: str) -> dict[int, int]:
    """Partition -> the next position to read, as committed for `source`."""
    rows = db.execute(
        "SELECT partition, next_position FROM consumer_positions WHERE source = ?", [source]
    ).fetchall()
    return {int(p): int(n) for p, n in rows}


def store_positions(db: duckdb.DuckDBPyConnection, source: str, positions: dict[int, int]) -> None:
    """Upsert the next positions of `source` (inside the batch's transaction)."""
    table = pa.table({
        "source": [source] * len(positions),
        "partition": pa.array(list(positions), pa.int32()),
        "next_position": pa.array(list(positions.values()), pa.int64()),
    })
    db.register("_positions", table)
    try:
        db.execute(
            """INSERT INTO consumer_positions SELECT source, partition, next_position, ? FROM _positions
               ON CONFLICT (source, partition) DO UPDATE SET next_position = excluded.next_position,
               updated_at = excluded.updated_at""",
            [datetime.now(UTC)],
        )
    finally:
        db.unregister("_positions")


def stored_versions(db: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int | None]]:
    """Projector -> (its recorded schema version, the last position an unfinished rebuild applied)."""
    # An unfinished rebuild keeps its place like a source: consumer_positions, 'rebuild:<name>'.
    return {name: (version, None if after is None else after - 1) for name, version, after in db.execute(
        "SELECT projector, schema_version, next_position FROM read_model_meta LEFT JOIN consumer_positions "
        "ON source = 'rebuild:' || projector").fetchall()}


def set_version(db: duckdb.DuckDBPyConnection, projector: Projector, rebuild_position: int | None = None) -> None:
    """Record the projector's schema version, and how far an unfinished rebuild got (None: done)."""
    db.execute("INSERT OR REPLACE INTO read_model_meta SELECT ?, ?, ?",  # one row per projector
               [projector.name, projector.schema_version, datetime.now(UTC)])
    source = f"rebuild:{projector.name}"
    if rebuild_position is None:
        db.execute("DELETE FROM consumer_positions WHERE source = ?", [source])
    else:
        db.execute("INSERT OR REPLACE INTO consumer_positions SELECT ?, 0, ?, ?",
                   [source, rebuild_position + 1, datetime.now(UTC)])
