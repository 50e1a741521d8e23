"""Streamed export of any read model or dashboard section as CSV or Parquet.

DuckDB hands the query's rows over as Arrow record batches; each batch goes through
pyarrow's CSV or Parquet writer into a small buffer that is drained after every batch.
Memory stays at about one batch whatever the export's size, and the first bytes leave
before the query has finished.

A CSV opens as it should in Excel: it starts with the UTF-8 byte order mark (without one,
Excel reads UTF-8 as the system's code page and Chinese text turns to mojibake; Python's
`utf-8-sig`, pandas and DuckDB skip it), and its instants are written as the JSON answers
write them (ISO 8601 in UTC, `2026-11-17T02:00:00Z`, microseconds only when there are any),
not as Arrow's `2026-11-17 02:00:00.000000+0000`.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Format = Literal["csv", "parquet"]
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
BATCH_ROWS = 65_536


class _Chunks:
    """A write-only file the Arrow writers write into; `drain` hands over what they wrote."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _plain(schema: pa.Schema) -> pa.Schema:
    """Extension types (DuckDB's UUID, JSON) as their storage type, which every writer takes."""
    return pa.schema(
        [f.with_type(f.type.storage_type) if isinstance(f.type, pa.ExtensionType) else f for f in schema]
    )


def _csv(schema: pa.Schema) -> pa.Schema:
    """The schema a CSV is written in: instants as the text the JSON answers hold."""
    return pa.schema([f.with_type(pa.string()) if pa.types.is_timestamp(f.type) else f for f in schema])


def _as_in_json(column: pa.Array) -> pa.Array:
    """An instant column as pydantic writes instants in the JSON answers (UTC, `Z`; naive ones
    without; a fraction of a second only when not zero); other columns as they are."""
    if not pa.types.is_timestamp(column.type):
        return column
    if column.type.tz is None:
        return pc.replace_substring_regex(pc.strftime(column, format="%Y-%m-%dT%H:%M:%S"), r"\.0+$", "")
    utc = column.cast(pa.timestamp(column.type.unit, "UTC"))  # the same instants, told in UTC
    return pc.replace_substring_regex(pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ"), r"\.0+Z$", "Z")


def stream(reader: pa.RecordBatchReader, fmt: Format, close: Callable[[], None] = lambda: None) -> Iterator[bytes]:
    """Yield the rows of `reader` encoded as `fmt`, batch by batch; `close` runs at the end."""
    try:
        schema = _plain(reader.schema)
        sink = _Chunks()
        writer: Any
        if fmt == "csv":
            schema, column = _csv(schema), _as_in_json
            sink.write(codecs.BOM_UTF8)
            writer = pacsv.CSVWriter(sink, schema)
        else:
            column = _identity
            writer = pq.ParquetWriter(sink, schema, compression="zstd")
        for batch in reader:
            if batch.num_rows:
                writer.write_batch(pa.RecordBatch.from_arrays(
                    [column(_storage(c)) for c in batch.columns], schema=schema
                ))
            if chunk := sink.drain():
                yield chunk
        writer.close()
        if chunk := sink.drain():
            yield chunk
    finally:
        close()


def _storage(column: pa.Array) -> pa.Array:
    return column.storage if isinstance(column, pa.ExtensionArray) else column


def _identity(column: pa.Array) -> pa.Array:
    return column


def rows_reader(rows: list[dict[str, Any]]) -> pa.RecordBatchReader:
    """A small, already computed section (a dashboard list) as a reader."""
    table = pa.Table.from_pylist(rows) if rows else pa.table({"empty": pa.array([], pa.string())})
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=BATCH_ROWS))
