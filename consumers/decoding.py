"""Raw messages to a read node's Arrow batch, set-based in DuckDB, with poison set aside.

Parsing envelopes one by one in Python costs more than Kafka's own consumer spends per
message, so a poll's messages go to DuckDB as one Arrow column and one query checks and
converts them all with DuckDB's JSON functions (outside the GIL, while the next poll is
fetched): the envelope's fields, and each payload against its event type's model (the
model's JSON schema turned into SQL conditions, `payload_checks`). A message takes
this fast path only when it is unmistakably a current, well-formed envelope: exactly the
envelope's keys, strict JSON types, canonical ISO timestamps and UUIDs, a known event type
at a version no upcaster applies to, and a payload that fits its model by the strictest
reading. Everything else goes through `aggregates.envelope.parse`, which stays the
authority: what it accepts (upcast, in a looser form) is applied, what it rejects is a
dead letter with its error. The fast path only ever accepts what `parse` accepts
(tests/test_decoding.py compares them on thousands of mutated messages).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, TypeAdapter, ValidationError

from aggregates.events import PAYLOADS
from aggregates.envelope import ENVELOPE_VERSION, UPCASTERS, EventEnvelope, parse
from consumers.sources import DeadLetter, Polled
from projections.base import BATCH_SCHEMA, to_batch

# The copy execute() makes of a result to hand it over as Arrow is cheaper here than a second bind.
warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning, __name__)

FIELDS = list(EventEnvelope.model_fields)
# The envelope's `acted_as` as the relay writes it: null, or the actor's name and roles.
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_ACTED_AS = rf'null|\{{"name":{_JSON_STRING},"roles":\[(?:{_JSON_STRING}(?:,{_JSON_STRING})*)?\]\}}'
_AT = {name: i + 1 for i, name in enumerate(FIELDS)}  # 1-based, as DuckDB lists are
# Messages go to DuckDB in Arrow chunks of this many rows: its threads scan chunks in parallel.
CHUNK_ROWS = 4096
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# Canonical JSON fragments (as DuckDB writes them back from its parse) by regular expression.
_ISO = (r'"[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]'
        r'(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"')
_UUID_ANY = r'"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"'
_UUID_CANONICAL = r'"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"'
_INTEGER = r"-?(0|[1-9][0-9]{0,17})"
_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"


def _bounded(parts: list[str], cast: str, low: float | None, high: float | None) -> str:
    """`parts`, and `cast` within [low, high] where those are given, as one SQL condition."""
    if low is not None:
        parts = [*parts, f"{cast} >= {low!r}"]
    if high is not None:
        parts = [*parts, f"{cast} <= {high!r}"]
    return "(" + " AND ".join(parts) + ")"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _list(items: list[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]::VARCHAR[]"


def _fragment(value: str) -> str:
    """A JSON string as DuckDB writes it back (only plain ASCII names are compared this way)."""
    return _quote(json.dumps(value))


class Unsupported(Exception):
    """A schema the SQL translation does not know: that event type is checked by pydantic."""


class _Columns:
    """Columns computed in stages before the checks (DuckDB parses a fragment once per call)."""

    def __init__(self) -> None:
        self.stages: list[list[str]] = []

    def add(self, depth: int, expression: str) -> str:
        while len(self.stages) <= depth:
            self.stages.append([])
        for existing in self.stages[depth]:  # the same expression is computed once
            if existing.startswith(expression + " AS "):
                return existing.rsplit(" AS ", 1)[1]
        name = f"_c{sum(len(s) for s in self.stages)}"
        self.stages[depth].append(f"{expression} AS {name}")
        return name


def _condition(schema: dict[str, Any], value: str, defs: dict[str, Any], columns: _Columns, depth: int) -> str:
    """SQL that is true only if the JSON fragment `value` (canonical text) fits the schema.

    Strict: it may say false where pydantic would accept (that message takes the slow
    path), never true where pydantic would not.
    """
    schema = {k: v for k, v in schema.items() if k not in ("title", "description", "examples", "default")}
    if "$ref" in schema:
        ref = schema.pop("$ref")
        if schema or not ref.startswith("#/$defs/"):
            raise Unsupported(ref)
        return _condition(defs[ref.removeprefix("#/$defs/")], value, defs, columns, depth)
    if "anyOf" in schema:
        options = schema.pop("anyOf")
        if schema:
            raise Unsupported(f"anyOf with {sorted(schema)}")
        return "(" + " OR ".join(f"coalesce({_condition(o, value, defs, columns, depth)}, false)"
                                 for o in options) + ")"
    if not schema:
        return f"({value} IS NOT NULL)"  # Any
    kind = schema.pop("type", None)
    if kind == "null" and not schema:
        return f"({value} = 'null')"
    if kind == "boolean" and not schema:
        return f"({value} IN ('true', 'false'))"
    if kind == "string":
        if "enum" in schema:
            values = schema.pop("enum")
            if schema or not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_ .:-]*", v) for v in values):
                raise Unsupported(f"enum {values}")
            return f"({value} IN ({', '.join(_fragment(v) for v in values)}))"
        fmt = schema.pop("format", None)
        if schema:
            raise Unsupported(f"string with {sorted(schema)}")
        if fmt is None:
            return f"starts_with({value}, '\"')"
        if fmt == "date-time":
            return (f"(regexp_full_match({value}, {_quote(_ISO)}) AND "
                    f"TRY_CAST(trim({value}, '\"') AS TIMESTAMPTZ) IS NOT NULL)")
        if fmt == "uuid":
            return f"regexp_full_match({value}, {_quote(_UUID_ANY)})"
        raise Unsupported(f"string format {fmt}")
    if kind == "integer":
        low, high = schema.pop("minimum", None), schema.pop("maximum", None)
        if schema or not all(b is None or isinstance(b, int) for b in (low, high)):
            raise Unsupported(f"integer with {sorted(schema)}")
        return _bounded([f"regexp_full_match({value}, {_quote(_INTEGER)})"],
                        f"TRY_CAST({value} AS BIGINT)", low, high)
    if kind == "number":
        low, high = schema.pop("minimum", None), schema.pop("maximum", None)
        if schema:
            raise Unsupported(f"number with {sorted(schema)}")
        number = f"TRY_CAST({value}::VARCHAR AS DOUBLE)"
        return _bounded([f"regexp_full_match({value}, {_quote(_NUMBER)})", f"isfinite({number})"], number,
                        None if low is None else float(low), None if high is None else float(high))
    if kind == "array":
        items = schema.pop("items", {})
        if schema:
            raise Unsupported(f"array with {sorted(schema)}")
        element = _condition(items, "_e", defs, _NoColumns(), depth)  # elements: no staged columns
        return (f"(starts_with({value}, '[') AND coalesce(list_bool_and(list_transform("
                f"json_extract({value}, '$[*]'), lambda _e: coalesce({element}, false))), true))")
    if kind == "object":
        return _object(schema, value, defs, columns, depth)
    raise Unsupported(f"type {kind}")


class _NoColumns(_Columns):
    def add(self, depth: int, expression: str) -> str:
        raise Unsupported("an object inside an array")


def _object(schema: dict[str, Any], value: str, defs: dict[str, Any], columns: _Columns, depth: int,
            all_names: list[str] | None = None) -> str:
    """An object's condition; `all_names`: extract these properties (a superset shared by
    several schemas, so that one parse serves them all)."""
    properties: dict[str, Any] = schema.pop("properties", {})
    required: list[str] = schema.pop("required", [])
    extra = schema.pop("additionalProperties", None)
    if schema or extra not in (None, True, False) or (extra is True and properties):
        raise Unsupported(f"object with {sorted(schema)}")
    if extra is True or (not properties and extra is None):
        return f"starts_with({value}, '{{')"  # dict[str, Any]: any object
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in properties):
        raise Unsupported("property names")
    names = list(properties)
    keys = columns.add(depth, f"json_keys({value})")
    parts = [f"starts_with({value}, '{{')", f"len(list_distinct({keys})) = len({keys})"]
    if extra is False:
        parts.append(f"list_has_all({_list(names)}, {keys})")
    if required:
        parts.append(f"list_has_all({keys}, {_list(required)})")
    if names:
        extracted = all_names or names
        fragments = columns.add(depth, f"json_extract({value}, {_list(['$.' + n for n in extracted])})")
        if not set(names) <= set(extracted):
            raise Unsupported("property names")
        for name in names:
            i = extracted.index(name) + 1
            check = _condition(properties[name], f"{fragments}[{i}]", defs, columns, depth + 1)
            parts.append(check if name in required else f"({fragments}[{i}] IS NULL OR {check})")
    return "(" + " AND ".join(parts) + ")"


def _plain_schemas(payloads: dict[str, type[BaseModel]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(event type, JSON schema, its $defs) of each model whose schema says all it checks:
    a model with validators is left to pydantic."""
    for name, model in payloads.items():
        decorators = model.__pydantic_decorators__
        if decorators.field_validators or decorators.model_validators or decorators.validators:
            continue
        schema = model.model_json_schema(mode="validation")
        yield name, schema, schema.pop("$defs", {})


def payload_checks(payloads: dict[str, type[BaseModel]], value: str = "payload") -> tuple[list[list[str]], dict[str, str]]:
    """Per event type, SQL true only when the payload fragment surely fits the model.

    Returns the staged columns the conditions use and the conditions; event types whose
    model cannot be translated (validators, constraints it does not know) are left out:
    pydantic checks their payloads.
    """
    columns = _Columns()
    checks = {}
    everything = list(dict.fromkeys(n for model in payloads.values() for n in model.model_fields))
    for name, schema, defs in _plain_schemas(payloads):
        if schema.pop("type", None) != "object":
            continue
        trial = _Columns()
        trial.stages = [list(s) for s in columns.stages]
        try:
            condition = _object({k: v for k, v in schema.items() if k not in ("title", "description")},
                                value, defs, trial, 0, everything)
        except Unsupported:
            continue
        columns = trial
        checks[name] = condition
    return columns.stages, checks


# The canonical form, as the relay writes it (compact, keys in order), by regular
# expressions (RE2 in DuckDB, one pass over the text). They read fragments DuckDB wrote
# back from a document it parsed, so the text is valid JSON already: they check shapes
# and types only.
_RE_STRING = r'"(?:[^"\\]|\\.)*"'
_RE_LEAP = r"[1-9][0-9](?:0[48]|[2468][048]|[13579][26])"  # leap years but centuries (those go the slow way)
_RE_DATE = (r"(?:[1-9][0-9]{3}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
            r"|(?:0[13578]|1[02])-31)|" + _RE_LEAP + r"-02-29)")
_RE_DATETIME = (_RE_DATE + r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
                r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_RE_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_RE_INTEGER = r"-?[0-9]{1,18}"
_RE_NUMBER = r"-?[0-9]{1,17}(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?"  # finite
_RE_SCALAR = rf"(?:{_RE_STRING}|[-+.0-9A-Za-z]+)"
_RE_FLAT_OBJECT = rf"\{{(?:{_RE_STRING}:{_RE_SCALAR}(?:,{_RE_STRING}:{_RE_SCALAR})*)?\}}"


def _pattern(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A regular expression matching only canonical JSON that surely fits the schema
    (properties in the schema's order, all present, nothing else; free-form objects only
    one level deep). What it does not match is checked by `_condition` instead."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "description", "examples", "default")}
    if "$ref" in schema:
        ref = schema.pop("$ref")
        if schema or not ref.startswith("#/$defs/"):
            raise Unsupported(ref)
        return _pattern(defs[ref.removeprefix("#/$defs/")], defs)
    if "anyOf" in schema:
        options = schema.pop("anyOf")
        if schema:
            raise Unsupported("anyOf")
        return "(?:" + "|".join(_pattern(o, defs) for o in options) + ")"
    if not schema:
        raise Unsupported("Any")
    kind = schema.pop("type", None)
    if kind == "null" and not schema:
        return "null"
    if kind == "boolean" and not schema:
        return "(?:true|false)"
    if kind == "string":
        if "enum" in schema:
            values = schema.pop("enum")
            if schema or not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_ -]*", v) for v in values):
                raise Unsupported("enum")
            return '"(?:' + "|".join(values) + ')"'
        fmt = schema.pop("format", None)
        if schema:
            raise Unsupported("string")
        formats = {None: _RE_STRING, "date-time": f'"{_RE_DATETIME}"', "uuid": f'"{_RE_UUID}"'}
        if fmt not in formats:
            raise Unsupported(fmt)
        return formats[fmt]
    if kind == "integer":
        low, high = schema.pop("minimum", None), schema.pop("maximum", None)
        if schema:
            raise Unsupported("integer")
        if low is None and high is None:
            return _RE_INTEGER
        if low is None or high is None or not 0 <= high - low <= 100:
            raise Unsupported("integer bounds")
        return "(?:" + "|".join(str(v) for v in range(int(low), int(high) + 1)) + ")"
    if kind == "number" and not schema:
        return _RE_NUMBER
    if kind == "array":
        items = schema.pop("items", {})
        if schema:
            raise Unsupported("array")
        element = _RE_FLAT_OBJECT if items == {"type": "object", "additionalProperties": True} else _pattern(items, defs)
        return rf"\[(?:{element}(?:,{element})*)?\]"
    if kind == "object":
        properties: dict[str, Any] = schema.pop("properties", {})
        schema.pop("required", None)
        extra = schema.pop("additionalProperties", None)
        if schema or extra is True or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in properties):
            raise Unsupported("object")
        return r"\{" + ",".join(f'"{name}":{_pattern(sub, defs)}' for name, sub in properties.items()) + r"\}"
    raise Unsupported(f"type {kind}")


def payload_patterns(payloads: dict[str, type[BaseModel]]) -> dict[str, str]:
    """Per event type, the canonical payload's regular expression (types it cannot express: left out)."""
    patterns = {}
    for name, schema, defs in _plain_schemas(payloads):
        try:
            patterns[name] = _pattern(schema, defs)
        except Unsupported:
            continue
    return patterns


def _string(fragment: str) -> str:
    """A JSON string fragment's text (unescaped only when it has escapes)."""
    return f"CASE WHEN contains({fragment}, '\\') THEN {fragment} ->> '$' ELSE trim({fragment}, '\"') END"


def _fast_path_sql(payloads: dict[str, type[BaseModel]]) -> tuple[str, str, frozenset[str]]:
    """Two queries over `_incoming`: each message, whether it is a clean current envelope, its columns.

    The first is for the canonical envelope (as the relay writes it): one JSON parse
    gives the fields, the message must be exactly those fields written back (so: exactly
    the envelope's keys, in order, compact), each is checked by a cheap string test and
    the payload by one regular expression per event type. The second, run only on what
    the first did not take, checks anything that parses as JSON field by field with
    DuckDB's JSON functions (strict types, exactly the envelope's keys, the payload
    against its model's schema).

    `ok` is true for a clean envelope whose payload surely fits, false for anything else,
    and (second query) NULL for a clean envelope whose event type's payload pydantic
    must check. The second marks copies of an event within the poll (the bus is
    at-least-once) `copy`; for the first, `_first_copies` drops them.
    """
    stages, checks = payload_checks(payloads)
    patterns = payload_patterns(payloads)
    upcast = sorted(f"{t}:{v}" for t, v in UPCASTERS if t in payloads)
    q = '"'
    f = {name: f"f[{i}]" for name, i in _AT.items()}
    types = ", ".join(_fragment(t) for t in payloads)
    not_upcast = ([f"(trim({f['event_type']}, '{q}') || ':' || {f['event_version']}) NOT IN "
                   f"({', '.join(_quote(u) for u in upcast)})"] if upcast else [])
    # The message is exactly the envelope written back from its fragments: valid JSON,
    # exactly the envelope's keys in order, once each, compact, numbers and strings in
    # their plain form. Then the fragments' own checks are cheap.
    rebuilt = " || ".join(
        ("'{" if i == 0 else "',") + f'"{name}":' + f"' || {f[name]}" for i, name in enumerate(FIELDS)) + " || '}'"
    canonical_envelope = " AND ".join([
        f"s = {rebuilt}",
        f"{f['envelope_version']} = '{ENVELOPE_VERSION}'",
        f"{f['event_type']} IN ({types})",
        *(f"TRY_CAST({f[n]} AS {t})::VARCHAR = {f[n]} AND TRY_CAST({f[n]}::VARCHAR AS {t}) >= 1"
          for n, t in (("event_version", "INTEGER"), ("complaint_version", "INTEGER"), ("position", "BIGINT"))),
        *not_upcast,
        f"regexp_full_match({f['complaint_id']}, {_quote(_UUID_CANONICAL)})",
        *(f"regexp_full_match({f[n]}, {_quote(q + _RE_DATETIME + q)})" for n in ("occurred_at", "recorded_at")),
        *(f"starts_with({f[n]}, '{q}')" for n in ("actor", "command_id", "correlation_id")),
        f"regexp_full_match({f['acted_as']}, {_quote(_ACTED_AS)})",
    ])
    payload_matched = "CASE " + f["event_type"] + " " + " ".join(
        f"WHEN {_fragment(t)} THEN regexp_full_match({f['payload']}, {_quote(p)})" for t, p in patterns.items()
    ) + " ELSE false END"
    # Anything else that is JSON: field by field.
    envelope_ok = " AND ".join([
        f"list_sort(k) = {_list(sorted(FIELDS))}",
        f"{f['envelope_version']} = '{ENVELOPE_VERSION}'",
        f"{f['event_type']} IN ({types})",
        f"regexp_full_match({f['event_version']}, '[1-9][0-9]{{0,8}}')",
        *not_upcast,
        f"regexp_full_match({f['complaint_id']}, {_quote(_UUID_CANONICAL)})",
        f"regexp_full_match({f['complaint_version']}, '[1-9][0-9]{{0,9}}')",
        f"TRY_CAST({f['complaint_version']}::VARCHAR AS BIGINT) <= {INT32_MAX}",
        f"regexp_full_match({f['position']}, '[1-9][0-9]{{0,17}}')",
        *(f"regexp_full_match({f[n]}, {_quote(_ISO)})" for n in ("occurred_at", "recorded_at")),
        *(f"TRY_CAST(trim({f[n]}, '{q}') AS TIMESTAMPTZ) IS NOT NULL" for n in ("occurred_at", "recorded_at")),
        *(f"starts_with({f[n]}, '{q}')" for n in ("actor", "command_id", "correlation_id")),
        f"regexp_full_match({f['acted_as']}, {_quote(_ACTED_AS)})",  # other forms: parse() decides
        f"starts_with({f['payload']}, '{{')",
        # DuckDB reads trailing commas that Python's json does not: such a message is read by parse().
        "NOT regexp_matches(s, ',[ \\t\\n\\r]*[\\]}]')",
    ])
    payload_ok = "CASE " + f["event_type"] + " " + " ".join(
        f"WHEN {_fragment(t)} THEN coalesce({c}, false)" for t, c in checks.items()) + " ELSE NULL END"
    staged = ""
    for n, stage in enumerate(stages):
        lazy = ", ".join(f"CASE WHEN NOT matched THEN {column.rsplit(' AS ', 1)[0]} END AS "
                         f"{column.rsplit(' AS ', 1)[1]}" for column in stage)
        staged += f", _p{n + 1} AS (SELECT *, {lazy} FROM _p{n})"

    columns = {
        "position": f"{f['position']}::VARCHAR::BIGINT",
        "complaint_id": f"trim({f['complaint_id']}, '{q}')",
        "complaint_version": f"{f['complaint_version']}::VARCHAR::INTEGER",
        "event_type": f"trim({f['event_type']}, '{q}')",
        "event_version": f"{f['event_version']}::VARCHAR::INTEGER",
        "occurred_at": f"trim({f['occurred_at']}, '{q}')::TIMESTAMPTZ",
        "recorded_at": f"trim({f['recorded_at']}, '{q}')::TIMESTAMPTZ",
        "actor": _string(f["actor"]),
        "command_id": _string(f["command_id"]),
        "correlation_id": _string(f["correlation_id"]),
        "payload": f"{f['payload']}::VARCHAR",
    }
    assert list(columns) == BATCH_SCHEMA.names
    selected = ",\n           ".join(f"CASE WHEN envelope_ok THEN {expression} END AS {name}"
                                      for name, expression in columns.items())
    extracted = f"""
        SELECT idx, s, try(json_extract(s, {_list(['$.' + n for n in FIELDS])})) AS f
        FROM (SELECT idx, try(decode(value)) AS s FROM _incoming)"""
    canonical_sql = f"""
    WITH _c AS (
        SELECT idx, coalesce({canonical_envelope} AND {payload_matched}, false) AS ok, f FROM ({extracted})
    )
    SELECT idx, ok, {selected.replace("envelope_ok", "ok")} FROM _c
    """
    checked_sql = f"""
    WITH _p0 AS (
        SELECT *, coalesce({envelope_ok}, false) AS envelope_ok
        FROM (SELECT *, false AS matched, try(json_keys(s)) AS k, f[{_AT['payload']}] AS payload FROM ({extracted}))
    ){staged}, _checked AS (
        SELECT idx, CASE WHEN envelope_ok THEN {payload_ok} ELSE false END AS ok,
               {selected}
        FROM _p{len(stages)}
    )
    SELECT *, coalesce(ok, true) AND row_number() OVER (
               PARTITION BY coalesce(ok, true), complaint_id, complaint_version ORDER BY idx) > 1 AS copy
    FROM _checked
    ORDER BY position, idx
    """
    return canonical_sql, checked_sql, frozenset(checks)


# Payloads of the event types the SQL cannot check, in one call per type: a JSON array for pydantic-core.
_PAYLOAD_LISTS = {name: TypeAdapter(list[model]) for name, model in PAYLOADS.items()}


@dataclass
class Decoded:
    batch: pa.Table  # BATCH_SCHEMA, one row per (complaint_id, complaint_version), by position
    dead_letters: list[DeadLetter]


class Decoder:
    """Turns a poll's messages into a batch; needs a DuckDB connection to think with."""

    def __init__(self) -> None:
        self.canonical_sql, self.checked_sql, self.checked_in_sql = _fast_path_sql(PAYLOADS)

    def decode(self, db: duckdb.DuckDBPyConnection, polled: Polled) -> Decoded:
        dead = [DeadLetter(polled.message(i), "envelope", error) for i, error in polled.errors.items()]
        if polled.errors:
            usable = [i for i in range(len(polled)) if i not in polled.errors]
            values = [polled.values[i] for i in usable]
        else:
            usable, values = list(range(len(polled))), polled.values
        incoming = pa.table({"idx": pa.array(usable, pa.int64()), "value": pa.array(values, pa.binary())})
        incoming = pa.Table.from_batches(incoming.to_batches(max_chunksize=CHUNK_ROWS), incoming.schema)
        canonical = _query(db, self.canonical_sql, incoming)
        if pc.all(canonical["ok"]).as_py() is not False:  # every message canonical (or none at all)
            return Decoded(_batch(_first_copies(canonical)), dead)

        # The others, field by field; pydantic for payloads SQL cannot judge; then parse().
        matched = _first_copies(canonical.filter(canonical["ok"]))
        rest = canonical.filter(pc.invert(canonical["ok"]))["idx"]
        others = incoming.filter(pc.is_in(incoming["idx"], value_set=rest))
        checked = _query(db, self.checked_sql, others)
        ok = checked["ok"]
        unchecked = checked.filter(pc.and_(pc.is_null(ok), pc.invert(checked["copy"])))
        bad_payload = _bad_payloads(unchecked) if unchecked.num_rows else set()
        also = checked.filter(pc.and_(pc.fill_null(ok, True), pc.invert(checked["copy"])))
        if bad_payload:
            also = also.filter(pc.invert(pc.is_in(also["idx"], value_set=pa.array(sorted(bad_payload), pa.int64()))))
        slow_idx = sorted(set(checked.filter(pc.invert(pc.fill_null(ok, True)))["idx"].to_pylist()) | bad_payload)
        batch = _dedupe_sorted(pa.concat_tables([_batch(matched), _batch(also)]))

        # What neither query took goes through parse(), the authority.
        fast_keys = set(zip(batch["complaint_id"].to_pylist(), batch["complaint_version"].to_pylist(), strict=True))
        rows = []
        for idx in slow_idx:
            try:
                envelope = parse(polled.values[idx])
                row = to_batch([envelope])  # fails on what Arrow cannot hold (e.g. a position past int64)
            except Exception as error:  # anything parse() rejects is poison, whatever the reason
                dead.append(DeadLetter(polled.message(idx), "envelope", _describe(error)))
                continue
            key = (str(envelope.complaint_id), envelope.complaint_version)
            if key not in fast_keys:  # else: a copy of an event the fast path already has
                fast_keys.add(key)
                rows.append(row)
        if rows:
            batch = _dedupe_sorted(pa.concat_tables([batch, *rows]))
        return Decoded(batch, dead)


def _query(db: duckdb.DuckDBPyConnection, sql: str, incoming: pa.Table) -> pa.Table:
    db.register("_incoming", incoming)
    try:
        # execute() binds the query once; sql() binds it to describe the relation and again to run
        # it, and binding (regular expressions compiled) is most of a small batch's cost.
        return db.execute(sql).to_arrow_table()
    finally:
        db.unregister("_incoming")


def _first_copies(rows: pa.Table) -> pa.Table:
    """Clean envelopes by position, each (complaint_id, complaint_version) once: its first copy in the poll.

    In Arrow, not SQL: a window over the batch cost DuckDB as much as a third of the decode.
    """
    rows = rows.sort_by([("position", "ascending"), ("idx", "ascending")])
    firsts = rows.group_by(["complaint_id", "complaint_version"], use_threads=False).aggregate([("idx", "min")])
    if firsts.num_rows == rows.num_rows:
        return rows
    return rows.filter(pc.is_in(rows["idx"], value_set=firsts["idx_min"]))


def _batch(rows: pa.Table) -> pa.Table:
    return rows.drop_columns([c for c in ("idx", "ok", "copy") if c in rows.column_names]).cast(BATCH_SCHEMA)


def _bad_payloads(unchecked: pa.Table) -> set[int]:
    """Indexes whose payload does not fit its event type's model, by pydantic (the slow path words why)."""
    bad: set[int] = set()
    for event_type in pc.unique(unchecked["event_type"]).to_pylist():
        rows = unchecked.filter(pc.equal(unchecked["event_type"], event_type))
        indexes = rows["idx"].to_pylist()
        try:
            _PAYLOAD_LISTS[event_type].validate_json("[" + ",".join(rows["payload"].to_pylist()) + "]")
        except ValidationError as error:
            bad |= {indexes[e["loc"][0]] for e in error.errors() if e["loc"] and isinstance(e["loc"][0], int)}
    return bad


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
