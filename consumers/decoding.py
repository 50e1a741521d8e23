"""Raw messages to the runner's Arrow batch, in bulk, with poison set aside.

Parsing envelopes one by one with pydantic costs more than Kafka's own consumer spends per
message, so the common case is checked and converted column-wise by DuckDB's JSON
functions: a message takes this fast path only when it is unmistakably a current,
well-formed envelope (strict JSON types, canonical ISO timestamps, a known event type
with no upcaster). Everything else goes through `consumers.envelope.parse`, which stays
the authority: what it accepts is applied, what it rejects is a dead letter with its
error. Payloads are validated against their event type's model on both paths.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as paj
from pydantic import TypeAdapter, ValidationError

from aggregates.events import PAYLOADS
from consumers.envelope import ENVELOPE_VERSION, UPCASTERS, EventEnvelope, parse
from consumers.sources import DeadLetter, Polled
from projections.base import BATCH_SCHEMA, to_batch

_FIELDS = list(EventEnvelope.model_fields)
_AS_JSON = json.dumps({name: "JSON" for name in _FIELDS})  # one parse; fields as JSON fragments
_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})"
_INT = "('UBIGINT', 'BIGINT')"
INT32_MAX = 2**31 - 1


def _fast_path_sql() -> str:
    """One query: which messages are clean current envelopes, and their columns.

    Each message is parsed once into JSON fragments (materialised, or DuckDB re-parses
    per reference); the type checks then look at the small fragments. Duplicates within
    the poll (the bus is at-least-once) are dropped here too.
    """
    current = ", ".join(f"'{t}'" for t in PAYLOADS if (t, 1) not in UPCASTERS)
    return f"""
    WITH parts AS MATERIALIZED (
        SELECT idx, json_type(j) = 'OBJECT' AND list_has_all({_FIELDS}, json_keys(j)) AS shaped,
               unnest(from_json(j, '{_AS_JSON}'))
        FROM (SELECT idx, TRY_CAST(try(decode(value)) AS JSON) AS j FROM _incoming)
    ), checked AS (
        SELECT *, TRY_CAST(complaint_id ->> '$' AS UUID) AS cid FROM parts
        WHERE shaped
          AND json_type(event_type) = 'VARCHAR' AND (event_type ->> '$') IN ({current})
          AND coalesce(json_type(envelope_version) IN {_INT} AND envelope_version::BIGINT = {ENVELOPE_VERSION}, envelope_version IS NULL)
          AND coalesce(json_type(event_version) IN {_INT} AND event_version::BIGINT = 1, event_version IS NULL)
          AND json_type(complaint_id) = 'VARCHAR'
          AND json_type(complaint_version) IN {_INT} AND complaint_version::BIGINT BETWEEN 1 AND {INT32_MAX}
          AND json_type(position) IN {_INT} AND position::BIGINT >= 1
          AND json_type(occurred_at) = 'VARCHAR' AND json_type(recorded_at) = 'VARCHAR'
          AND json_type(actor) = 'VARCHAR' AND json_type(command_id) = 'VARCHAR'
          AND json_type(correlation_id) = 'VARCHAR' AND json_type(payload) = 'OBJECT'
          AND regexp_full_match(occurred_at ->> '$', '{_ISO}') AND regexp_full_match(recorded_at ->> '$', '{_ISO}')
    )
    SELECT idx, position::BIGINT AS position, cid::VARCHAR AS complaint_id,
           complaint_version::INTEGER AS complaint_version, event_type ->> '$' AS event_type,
           1 AS event_version, (occurred_at ->> '$')::TIMESTAMPTZ AS occurred_at,
           (recorded_at ->> '$')::TIMESTAMPTZ AS recorded_at, actor ->> '$' AS actor,
           command_id ->> '$' AS command_id, correlation_id ->> '$' AS correlation_id,
           payload::VARCHAR AS payload
    FROM checked
    WHERE cid IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY cid, complaint_version::INTEGER ORDER BY idx) = 1
    ORDER BY position
    """


# The Arrow fast path: envelope fields as Arrow parses them (strict JSON types), and from
# DuckDB the payload's JSON text and whether the keys are exactly the envelope's.
_ARROW_SCHEMA = pa.schema([
    ("envelope_version", pa.int64()), ("event_type", pa.string()), ("event_version", pa.int64()),
    ("complaint_id", pa.string()), ("complaint_version", pa.int64()), ("position", pa.int64()),
    ("occurred_at", pa.timestamp("us", tz="UTC")), ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("actor", pa.string()), ("command_id", pa.string()), ("correlation_id", pa.string()),
])
_REQUIRED = _ARROW_SCHEMA.names
_PARSE_OPTIONS = paj.ParseOptions(explicit_schema=_ARROW_SCHEMA, unexpected_field_behavior="ignore")
_READ_OPTIONS = paj.ReadOptions(use_threads=False, block_size=64 << 20)
_CURRENT_TYPES = pa.array([t for t in PAYLOADS if (t, 1) not in UPCASTERS])
_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_PAYLOAD_SQL = f"""
    SELECT idx, payload, starts_with(payload, '{{') AND list_has_all({_FIELDS}, keys) AS shaped
    FROM (SELECT idx, json_extract(s, '$.payload')::VARCHAR AS payload, json_keys(s) AS keys
          FROM (SELECT idx, try(decode(value)) AS s FROM _incoming))
    ORDER BY idx
"""

# Payloads of one event type checked in one call: a JSON array validated by pydantic-core.
_PAYLOAD_LISTS = {name: TypeAdapter(list[model]) for name, model in PAYLOADS.items()}
_GROUP_PAYLOADS = """
    SELECT event_type, list(idx ORDER BY idx), '[' || string_agg(payload, ',' ORDER BY idx) || ']'
    FROM _fast GROUP BY event_type
"""


@dataclass
class Decoded:
    batch: pa.Table  # BATCH_SCHEMA, one row per (complaint_id, complaint_version), by position
    dead_letters: list[DeadLetter]


class Decoder:
    """Turns a poll's messages into a batch; needs a DuckDB connection to think with."""

    def __init__(self) -> None:
        self.sql = _fast_path_sql()

    def decode(self, db: duckdb.DuckDBPyConnection, polled: Polled) -> Decoded:
        dead = [DeadLetter(polled.message(i), "envelope", error) for i, error in polled.errors.items()]
        if polled.errors:
            usable = [i for i in range(len(polled)) if i not in polled.errors]
            values = [polled.values[i] for i in usable]
        else:
            usable, values = list(range(len(polled))), polled.values
        incoming = pa.table({"idx": pa.array(usable, pa.int64()), "value": pa.array(values, pa.binary())})
        db.register("_incoming", incoming)
        try:
            fast = self._arrow_fast_path(db, incoming, values)
            if fast is None:  # something in the batch is not a clean envelope: row by row in SQL
                fast = db.sql(self.sql).to_arrow_table()
        finally:
            db.unregister("_incoming")
        bad_payload = self._bad_payloads(db, fast)

        # What the fast path did not take (duplicates aside) goes through parse(), the authority.
        covered = pc.is_in(incoming["idx"], value_set=fast["idx"])
        slow_idx = sorted(set(incoming.filter(pc.invert(covered))["idx"].to_pylist()) | bad_payload)
        fast_keys = set(zip(fast["complaint_id"].to_pylist(), fast["complaint_version"].to_pylist(),
                            strict=True)) if slow_idx else set()
        envelopes = []
        for idx in slow_idx:
            try:
                envelope = parse(polled.values[idx])
            except Exception as error:  # anything parse() rejects is poison, whatever the reason
                dead.append(DeadLetter(polled.message(idx), "envelope", _describe(error)))
                continue
            if idx in bad_payload or (str(envelope.complaint_id), envelope.complaint_version) not in fast_keys:
                envelopes.append(envelope)  # else: a copy of an event the fast path already has
        batch = fast.drop_columns(["idx"]).cast(BATCH_SCHEMA)
        if bad_payload:
            batch = batch.filter(pc.invert(pc.is_in(fast["idx"], value_set=pa.array(sorted(bad_payload), pa.int64()))))
        if envelopes:
            batch = _dedupe_sorted(pa.concat_tables([batch, to_batch(envelopes)]))
        return Decoded(batch, dead)

    @staticmethod
    def _arrow_fast_path(db: duckdb.DuckDBPyConnection, incoming: pa.Table, values: list[bytes]) -> pa.Table | None:
        """The whole poll parsed at once by Arrow's JSON reader (C++), for a batch of clean envelopes.

        Arrow is strict about types (a number where a string belongs fails the batch), so a
        batch it reads is checked column-wise here; the payload's exact JSON text and the
        key set come from DuckDB. Returns None when the batch cannot go this way at all;
        rows that fail a check are simply left out (the caller sends them the slow way).
        """
        if not values or any(b"\n" in v or b"\r" in v for v in values):
            return None  # one message per line, or the rows would not match the messages
        try:
            table = paj.read_json(io.BytesIO(b"\n".join(values)), read_options=_READ_OPTIONS,
                                  parse_options=_PARSE_OPTIONS)
            if table.num_rows != len(values):
                return None
            extra = db.sql(_PAYLOAD_SQL).to_arrow_table()
        except (pa.ArrowInvalid, duckdb.Error):
            return None
        if extra.num_rows != len(values) or not extra["idx"].equals(incoming["idx"]):
            return None
        ok = pc.and_kleene(extra["shaped"], pc.is_valid(extra["payload"]))
        for name in _REQUIRED:
            ok = pc.and_kleene(ok, pc.is_valid(table[name]))
        ok = pc.and_kleene(ok, pc.equal(table["envelope_version"], ENVELOPE_VERSION))
        ok = pc.and_kleene(ok, pc.equal(table["event_version"], 1))
        ok = pc.and_kleene(ok, pc.and_kleene(pc.greater_equal(table["complaint_version"], 1),
                                             pc.less_equal(table["complaint_version"], INT32_MAX)))
        ok = pc.and_kleene(ok, pc.greater_equal(table["position"], 1))
        ok = pc.and_kleene(ok, pc.is_in(table["event_type"], value_set=_CURRENT_TYPES))
        ok = pc.and_kleene(ok, pc.match_substring_regex(table["complaint_id"], _UUID))
        ok = pc.fill_null(ok, False)
        fast = pa.table({
            "idx": incoming["idx"],
            "position": table["position"],
            "complaint_id": table["complaint_id"],
            "complaint_version": pc.cast(table["complaint_version"], pa.int32(), safe=False),
            "event_type": table["event_type"],
            "event_version": pc.cast(table["event_version"], pa.int32(), safe=False),
            "occurred_at": table["occurred_at"],
            "recorded_at": table["recorded_at"],
            "actor": table["actor"],
            "command_id": table["command_id"],
            "correlation_id": table["correlation_id"],
            "payload": extra["payload"],
        }).filter(ok)
        return _first_copies(fast).sort_by("position")

    @staticmethod
    def _bad_payloads(db: duckdb.DuckDBPyConnection, fast: pa.Table) -> set[int]:
        """Indexes whose payload does not fit its event type's model (the slow path words why)."""
        if fast.num_rows == 0:
            return set()
        db.register("_fast", fast)
        try:
            groups = db.execute(_GROUP_PAYLOADS).fetchall()
        finally:
            db.unregister("_fast")
        bad: set[int] = set()
        for event_type, indexes, payloads in groups:
            try:
                _PAYLOAD_LISTS[event_type].validate_json(payloads)
            except ValidationError as error:
                bad |= {indexes[e["loc"][0]] for e in error.errors() if e["loc"] and isinstance(e["loc"][0], int)}
        return bad


def _first_copies(table: pa.Table) -> pa.Table:
    """The first copy of each (complaint_id, complaint_version) (copies come after relay crashes)."""
    groups = table.group_by(["complaint_id", "complaint_version"]).aggregate([("idx", "min")])
    if groups.num_rows == table.num_rows:
        return table
    return table.filter(pc.is_in(table["idx"], value_set=groups["idx_min"]))


def _dedupe_sorted(batch: pa.Table) -> pa.Table:
    """Each (complaint_id, complaint_version) once, ordered by position."""
    if batch.num_rows <= 1:
        return batch
    batch = batch.sort_by("position")
    keys = zip(batch["complaint_id"].to_pylist(), batch["complaint_version"].to_pylist(), strict=True)
    seen: set[tuple[str, int]] = set()
    keep = []
    for key in keys:
        keep.append(key not in seen)
        seen.add(key)
    return batch if all(keep) else batch.filter(pa.array(keep))


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in error.errors()[:5]
        )
        return f"invalid envelope: {problems}"
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON: {error}"
    return f"{type(error).__name__}: {error}"
