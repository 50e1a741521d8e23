"""Stored event -> envelope bytes: the splice against decoding with json, orjson and msgspec.

    python -m bench.stored_decoding --help
    python -m bench.stored_decoding                  # 200k events, figures to stdout
    python -m bench.stored_decoding --events 1000000 --store var/bench/store-1m.sqlite

1. The event store: a SQLite file of `--events` Complaint events made once by the real
   domain (`bench.read_models.ensure_store`: demo lives saved in bulk through a desk),
   kept under var/bench and reused.
2. Its rows are read once into memory, as the relay reads them (plain tuples: position,
   originator id, version, topic, state), each complaint's key computed once (the relay
   caches it per complaint too).
3. Every row is turned into the published envelope's bytes by each writer, `--runs`
   times; the median run gives events/s and us/event:
   - splice: `consumers.stored_events.wire_writer` (regular expressions over the stored text);
   - json: `_decoding_writer` (the mapper's JSONTranscoder decode, stdlib json encode);
   - orjson: orjson.loads, transcoded values unwrapped, orjson.dumps;
   - msgspec: msgspec.json.Decoder() into dicts, unwrapped, msgspec.json.Encoder;
   - msgspec-raw: msgspec.json.Decoder(dict[str, msgspec.Raw]): the top-level members
     decoded, their values kept as raw JSON (only transcoded ones parsed), the envelope
     encoded around them (no full parse of payload strings);
   - ceiling: no parse at all, each row's stored bytes concatenated to a constant head.
4. Every writer's output is checked against the splice's for every row: equal bytes, or
   else the same `EventEnvelope` when both are parsed.

The orjson and msgspec writers live here (checked against the splice on awkward states by
tests/test_stored_decoding.py), not in the runtime: measured, msgspec's decode + encode
costs what the splice costs and orjson's a third more, so the splice stays the one decoder
(a switch would have needed a clear margin, >15%). A typed msgspec Struct is not among
them: Structs drop members they do not declare, so every payload shape (event type and
version) would need one of its own, and decoding only the metadata into one already costs
half the splice's whole envelope.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import platform
import re
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"

Writer = Callable[[str, bytes, int, int, bytes], bytes]


# ------------------------------------------------------------------------------ the writers
FALLBACKS: collections.Counter[str] = collections.Counter()  # rows a writer handed to the mapper's decoding


class _Unspliceable(Exception):
    """A state this writer does not handle itself: it takes the mapper's decoding path."""


def _unwrap(value: Any) -> Any:
    """A decoded JSON value with the store's transcoded objects replaced by their text, as
    JSONTranscoder (bottom-up object hook) and `_decoding_writer` (`_plain`) would give it."""
    if type(value) is dict:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            kind, data = value["_type_"], value["_data_"]
            if type(data) is not str or type(kind) is not str:
                raise _Unspliceable
            if kind == "datetime_iso" or kind == "decimal_str":
                return data
            if kind == "uuid_hex":
                return str(UUID(data))
            raise _Unspliceable  # unknown transcoding: the mapper raises it
        return {k: _unwrap(v) if type(v) is dict or type(v) is list else v for k, v in value.items()}
    if type(value) is list:
        return [_unwrap(v) if type(v) is dict or type(v) is list else v for v in value]
    return value


def _untranscoded(value: Any) -> str:
    """A top-level transcoded datetime's text."""
    if (type(value) is not dict or len(value) != 2 or value.get("_type_") != "datetime_iso"
            or type(value.get("_data_")) is not str):
        raise _Unspliceable
    return value["_data_"]


def _dict_writer(name: str, mapper: Any, loads: Callable[[bytes], Any], dumps: Callable[[Any], bytes]) -> Writer:
    """Decode the stored JSON into dicts with `loads`, build the envelope, encode it with `dumps`."""
    from eventsourcing.persistence import JSONTranscoder

    from aggregates.envelope import COMPLAINT_TOPIC_PREFIX, ENVELOPE_VERSION
    from consumers.stored_events import _STORE_FIELDS, _decoding_writer

    decode_slowly = _decoding_writer(mapper)
    transcoder = mapper.transcoder
    if mapper.cipher or mapper.compressor or not isinstance(transcoder, JSONTranscoder) \
            or set(transcoder.names) - {"datetime_iso", "uuid_hex", "decimal_str"}:
        return decode_slowly
    store_fields, prefix = frozenset(_STORE_FIELDS), COMPLAINT_TOPIC_PREFIX
    event_types: dict[str, str] = {}

    def write(topic: str, complaint_id: bytes, complaint_version: int, position: int, state: bytes) -> bytes:
        event_type = event_types.get(topic)
        if event_type is None:
            event_type = event_types[topic] = topic.removeprefix(prefix)
        try:
            decoded = loads(state)
            if type(decoded) is not dict:
                raise _Unspliceable
            event_version = decoded.get("class_version", 1)
            if type(event_version) is not int:
                raise _Unspliceable
            actor, command_id, correlation_id = decoded["actor"], decoded["command_id"], decoded["correlation_id"]
            if type(actor) is not str or type(command_id) is not str or type(correlation_id) is not str:
                raise _Unspliceable
            envelope = {
                "envelope_version": ENVELOPE_VERSION,
                "event_type": event_type,
                "event_version": event_version,
                "complaint_id": complaint_id.decode(),
                "complaint_version": complaint_version,
                "position": position,
                "occurred_at": _untranscoded(decoded["occurred_at"]),
                "recorded_at": _untranscoded(decoded["timestamp"]),
                "actor": actor,
                "acted_as": _unwrap(decoded["acted_as"]) if "acted_as" in decoded else None,
                "command_id": command_id,
                "correlation_id": correlation_id,
                "payload": {k: _unwrap(v) if type(v) is dict or type(v) is list else v
                            for k, v in decoded.items() if k not in store_fields},
            }
            return dumps(envelope)
        except (_Unspliceable, KeyError, ValueError, TypeError, OverflowError):
            FALLBACKS[name] += 1
            return decode_slowly(topic, complaint_id, complaint_version, position, state)

    return write


def orjson_writer(mapper: Any) -> Writer:
    import orjson

    return _dict_writer("orjson", mapper, orjson.loads, orjson.dumps)


def msgspec_writer(mapper: Any) -> Writer:
    import msgspec

    decoder, encoder = msgspec.json.Decoder(), msgspec.json.Encoder()

    def loads(state: bytes) -> Any:
        try:
            return decoder.decode(state)
        except msgspec.DecodeError as error:
            raise ValueError(str(error)) from None

    return _dict_writer("msgspec", mapper, loads, encoder.encode)


def msgspec_raw_writer(mapper: Any) -> Writer:
    """Only the top-level members decoded (values kept as raw JSON text); the envelope is
    encoded around those raw values, transcoded ones (seen by their text) parsed and unwrapped."""
    import msgspec
    from eventsourcing.persistence import JSONTranscoder

    from aggregates.envelope import COMPLAINT_TOPIC_PREFIX, ENVELOPE_VERSION
    from consumers.stored_events import _STORE_FIELDS, _decoding_writer

    class Transcoded(msgspec.Struct, rename={"kind": "_type_", "data": "_data_"}, forbid_unknown_fields=True):
        kind: str
        data: str

    decode_slowly = _decoding_writer(mapper)
    transcoder = mapper.transcoder
    if mapper.cipher or mapper.compressor or not isinstance(transcoder, JSONTranscoder) \
            or set(transcoder.names) - {"datetime_iso", "uuid_hex", "decimal_str"}:
        return decode_slowly
    Raw = msgspec.Raw
    members = msgspec.json.Decoder(dict[str, Raw])
    value_of = msgspec.json.Decoder()
    transcoded_of = msgspec.json.Decoder(Transcoded)
    text_of = msgspec.json.Decoder(str)
    int_of = msgspec.json.Decoder(int)
    encode = msgspec.json.Encoder().encode
    store_fields, prefix = frozenset(_STORE_FIELDS), COMPLAINT_TOPIC_PREFIX
    event_types: dict[str, str] = {}

    def datetime_text(raw: Any) -> str:
        found = transcoded_of.decode(raw)
        if found.kind != "datetime_iso":
            raise _Unspliceable
        return found.data

    def plain(raw: Any) -> Any:
        if b'"_type_"' in bytes(raw):  # (Raw is a buffer, not a bytes: no `in` of its own)
            return _unwrap(value_of.decode(raw))
        return raw

    def write(topic: str, complaint_id: bytes, complaint_version: int, position: int, state: bytes) -> bytes:
        event_type = event_types.get(topic)
        if event_type is None:
            event_type = event_types[topic] = topic.removeprefix(prefix)
        try:
            decoded = members.decode(state)
            version = decoded.get("class_version")
            text_of.decode(decoded["actor"]), text_of.decode(decoded["command_id"])
            text_of.decode(decoded["correlation_id"])  # strings, as the model requires
            envelope = {
                "envelope_version": ENVELOPE_VERSION,
                "event_type": event_type,
                "event_version": 1 if version is None else int_of.decode(version),
                "complaint_id": complaint_id.decode(),
                "complaint_version": complaint_version,
                "position": position,
                "occurred_at": datetime_text(decoded["occurred_at"]),
                "recorded_at": datetime_text(decoded["timestamp"]),
                "actor": decoded["actor"],
                "acted_as": decoded.get("acted_as", Raw(b"null")),
                "command_id": decoded["command_id"],
                "correlation_id": decoded["correlation_id"],
                # A transcoded value always has the text `"_type_"`, which JSON cannot hold inside a
                # string (its quotes are escaped); timestamp and occurred_at have the first two,
                # so with no more the payload's raw values are copied as they are.
                "payload": ({k: plain(v) for k, v in decoded.items() if k not in store_fields}
                            if state.count(b'"_type_"') > 2 else
                            {k: v for k, v in decoded.items() if k not in store_fields}),
            }
            return encode(envelope)
        except (_Unspliceable, KeyError, ValueError, TypeError, msgspec.DecodeError):
            FALLBACKS["msgspec-raw"] += 1
            return decode_slowly(topic, complaint_id, complaint_version, position, state)

    return write


def ceiling_writer(mapper: Any) -> Writer:
    """No parse: the stored bytes after a constant head (what any writer must at least copy)."""
    head = b'{"envelope_version":1,"payload":'

    def write(topic: str, complaint_id: bytes, complaint_version: int, position: int, state: bytes) -> bytes:
        return head + state

    return write


def writers(mapper: Any) -> dict[str, Writer]:
    from consumers.stored_events import _decoding_writer, wire_writer

    return {
        "splice": wire_writer(mapper),
        "json": _decoding_writer(mapper),
        "orjson": orjson_writer(mapper),
        "msgspec": msgspec_writer(mapper),
        "msgspec-raw": msgspec_raw_writer(mapper),
        "ceiling": ceiling_writer(mapper),
    }


EXACT = ("json", "orjson", "msgspec", "msgspec-raw")  # must give the splice's envelope


# ------------------------------------------------------------------------------ the store
class _ProgressLines(io.TextIOBase):
    """Turns ensure_store's `store: N events` lines into a tqdm bar."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def write(self, text: str) -> int:
        for found in re.findall(r"store: ([\d,]+) events", text):
            self.bar.update(int(found.replace(",", "")) - self.bar.n)
        return len(text)


def ensure_store(path: Path, events: int) -> None:
    """The store of bench.read_models (made once, reused), with a progress bar."""
    from bench.read_models import ensure_store as make

    if path.exists():
        return
    with tqdm(total=events, desc=f"making {path.name}", unit="ev", unit_scale=True, file=sys.__stderr__) as bar, \
            contextlib.redirect_stderr(_ProgressLines(bar)):
        seconds = make(path, events)
    print(f"made {path} in {seconds:.0f}s", file=sys.stderr)


def read_rows(path: Path, events: int) -> list[tuple[str, bytes, int, int, bytes]]:
    """The first `events` Complaint events' (topic, key, version, position, state), as the
    relay hands them to its writer (the key is the complaint id's text, once per complaint)."""
    from aggregates.envelope import COMPLAINT_TOPIC_PREFIX

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = con.execute("SELECT rowid, originator_id, originator_version, topic, state "
                             "FROM stored_events ORDER BY rowid")
        keys: dict[Any, bytes] = {}
        rows = []
        with tqdm(total=events, desc="reading rows", unit="ev", unit_scale=True) as bar:
            while len(rows) < events and (page := cursor.fetchmany(10_000)):
                for position, oid, version, topic, state in page:
                    if topic.startswith(COMPLAINT_TOPIC_PREFIX) and len(rows) < events:
                        key = keys.get(oid)
                        if key is None:
                            key = keys[oid] = str(UUID(str(oid))).encode()
                        rows.append((topic, key, version, position, state))
                bar.update(min(events, len(rows)) - bar.n)
        return rows
    finally:
        con.close()


# ------------------------------------------------------------------------------ measuring
def time_writer(write: Writer, rows: list[tuple[str, bytes, int, int, bytes]]) -> tuple[float, list[bytes]]:
    started = time.perf_counter()
    out = [write(topic, key, version, position, state) for topic, key, version, position, state in rows]
    return time.perf_counter() - started, out


def splice_fallbacks(rows: list[tuple[str, bytes, int, int, bytes]]) -> int:
    """Rows whose state the splice's patterns do not accept (it decodes those instead)."""
    from consumers.stored_events import _HEAD, _TAIL

    return sum(1 for *_, state in rows
               if not (_HEAD.match(state) and _TAIL.fullmatch(state, max(0, state.rfind(b',"actor":')))))


def check_exact(name: str, reference: list[bytes], produced: list[bytes]) -> dict[str, int]:
    """Every row: the same bytes as the splice, or the same EventEnvelope once parsed."""
    from aggregates.envelope import parse

    same_bytes = 0
    for want, got in tqdm(zip(reference, produced, strict=True), total=len(reference),
                          desc=f"checking {name}", unit="ev", unit_scale=True, leave=False):
        if want == got:
            same_bytes += 1
        else:
            assert parse(got) == parse(want), (name, want, got)
    return {"same_bytes": same_bytes, "same_envelope": len(reference) - same_bytes}


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="Complaint events to encode (default 200k)")
    parser.add_argument("--store", type=Path, default=None,
                        help="the SQLite store (default var/bench/store-<N>.sqlite; made if missing)")
    parser.add_argument("--runs", type=int, default=3, help="rounds (each writer once per round); the median is reported")
    parser.add_argument("--only", nargs="*", default=None, help="only these writers (splice is always run)")
    parser.add_argument("--make-store", action="store_true", help="only make the store, then stop")
    parser.add_argument("--no-check", action="store_true", help="skip the every-row comparison with the splice")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    from complaints.settings import Settings
    from complaints.store import open_store

    store = args.store or VAR / f"store-{args.events}.sqlite"
    ensure_store(store, args.events)
    if args.make_store:
        return
    rows = read_rows(store, args.events)
    if len(rows) < args.events:
        print(f"the store holds only {len(rows):,} Complaint events", file=sys.stderr)
    mapper = open_store(Settings(store="sqlite", sqlite_path=store)).mapper
    chosen = writers(mapper)
    checks: dict[str, dict[str, int]] = {}
    reference: list[bytes] = []
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k == "splice" or k in args.only}

    # Rounds of every writer in turn (not all runs of one, then the next): the machine is
    # shared, and a change of load then falls on every writer alike.
    timings: dict[str, list[tuple[float, float, float]]] = {name: [] for name in chosen}
    sizes: dict[str, int] = {}
    fallbacks: dict[str, int] = {}
    for round_ in range(args.runs):
        for name, write in tqdm(chosen.items(), desc=f"round {round_ + 1} of {args.runs}", unit="writer",
                                leave=False):
            at_load = os.getloadavg()[0]
            cpu = time.process_time()
            seconds, out = time_writer(write, rows)
            timings[name].append((seconds, time.process_time() - cpu, at_load))
            if round_ == 0:
                sizes[name] = sum(map(len, out))
                fallbacks[name] = (splice_fallbacks(rows) if name == "splice" else len(rows) if name == "json"
                                  else FALLBACKS[name])
                if name == "splice":
                    reference = out
                elif name in EXACT and not args.no_check:
                    checks[name] = check_exact(name, reference, out)
            del out
    results: dict[str, Any] = {}
    for name, runs in timings.items():
        median = statistics.median(t for t, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        results[name] = {"runs": [round(t, 4) for t, _, _ in runs], "seconds": median, "cpu_seconds": cpu,
                         "events_per_s": len(rows) / median, "us_per_event": median / len(rows) * 1e6,
                         "cpu_us_per_event": cpu / len(rows) * 1e6,
                         "load_1min": max(x for _, _, x in runs), "bytes": sizes[name],
                         "fallbacks": fallbacks[name]}
        if name in checks:
            results[name]["check"] = checks[name]

    splice = results["splice"]["seconds"]
    command = "python -m bench.stored_decoding " + " ".join(sys.argv[1:])
    print(f"\n`{command.strip()}`: {len(rows):,} Complaint events, "
          f"{results['splice']['bytes'] / len(rows):.0f} envelope bytes on average; "
          f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}; "
          f"median of {args.runs} rounds (every writer in turn); load average now {load()}\n")
    print("| writer | events | events/s | us/event | CPU us/event | vs splice | load (1 min, max) | decoded by the mapper | exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        check = r.get("check")
        exact = ("reference" if name == "splice" else
                 f"yes ({check['same_bytes']:,} same bytes, {check['same_envelope']:,} same envelope)" if check
                 else "-")
        print(f"| {name} | {len(rows):,} | {r['events_per_s']:,.0f} | {r['us_per_event']:.2f} | "
              f"{r['cpu_us_per_event']:.2f} | {splice / r['seconds']:.2f}x | {r['load_1min']:.2f} | "
              f"{r['fallbacks']:,} | {exact} |")
    if args.json:
        args.json.write_text(json.dumps({"command": command, "events": len(rows), "load": load(),
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
