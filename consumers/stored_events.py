"""The one decoder of eventsourcing's stored events: stored rows in, envelope JSON out.

The relay, the in-process follower (`sources.LogSource`) and the rebuild all read the
event store through this module: `NotificationRows` reads the rows as plain tuples, and
`wire_writer` turns a stored Complaint event into the published envelope's bytes
(`aggregates.envelope`) without constructing domain objects.

The store already holds each event as JSON, so the envelope is spliced together from
that text (the timestamps, the metadata and the payload's members are cut out as they
are, transcoded values unwrapped). A state of another shape (a cipher, a compressor, a
custom transcoder, store keys among the payload's) is decoded by the mapper and encoded
again instead; both ways give the same bytes (tests/test_relay.py). Measured against
orjson and msgspec decoding in `bench/stored_decoding.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, JSONTranscoder, Mapper, Notification

from commands.event_chain import split
from aggregates.envelope import ENVELOPE_VERSION, PUBLISHED_TOPIC_PREFIXES, EventEnvelope, event_type_of, parse
from aggregates.events import META_FIELDS

Row = tuple[int, Any, int, str, bytes]  # (notification id, originator id, version, topic, state)
Writer = Callable[[str, bytes, int, int, bytes], bytes]

# Fields eventsourcing adds to every stored event that the envelope carries elsewhere, and
# the chain link the store adds (commands.event_chain), which is not the event's.
_STORE_FIELDS = {"timestamp", "originator_topic", "class_version", "chain", *META_FIELDS}
# The transcodings the splice knows how to unwrap (what pydantic would write for them).
_SPLICEABLE = {"datetime_iso", "uuid_hex", "decimal_str"}


def is_published(notification: Notification) -> bool:
    """Whether the stored event goes on the stream (a Complaint's or an Alert's event)."""
    return notification.topic.startswith(PUBLISHED_TOPIC_PREFIXES)


class NotificationRows:
    """`rows(after, limit)`: the notifications after a position, as plain tuples.

    The same rows as `recorder.select_notifications(after, limit, inclusive_of_start=False)`;
    on SQLite they are read with the recorder's own connection and query, without making
    a Notification and a UUID of each (a third of the relay's own time per event), and
    `convert_id` makes the stored originator id what the Notification would hold.
    """

    def __init__(self, recorder: ApplicationRecorder) -> None:
        from eventsourcing.sqlite import SQLiteApplicationRecorder

        self.recorder = recorder
        self.convert_id: Callable[[Any], Any] = lambda originator_id: originator_id
        self.statement = None
        if isinstance(recorder, SQLiteApplicationRecorder):
            self.convert_id = recorder.convert_originator_id
            self.statement = (f"SELECT rowid, originator_id, originator_version, topic, state "
                              f"FROM {recorder.events_table_name} WHERE rowid>? ORDER BY rowid LIMIT ?")

    def __call__(self, after: int, limit: int) -> list[Row]:
        if self.statement is not None:
            with self.recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
                # Plain tuples (the connection's factory makes sqlite3.Row): eventsourcing's
                # cursor wraps sqlite3's.
                cursor.sqlite_cursor.row_factory = None
                cursor.execute(self.statement, (after, limit))
                rows: list[Row] = cursor.fetchall()
                return rows
        return [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
                for n in self.recorder.select_notifications(after, limit, inclusive_of_start=False)]


# The JSON the store's JSONTranscoder writes (compact separators, no ASCII escaping), as
# regular expressions: a string, a transcoded value, and the parts of a stored state
# around its payload: `{"timestamp":T[,"originator_topic":S]<payload members>,"actor":S,
# "occurred_at":T,"command_id":S,"correlation_id":S[,"acted_as":O,"fingerprint":S]
# [,"class_version":N]}` (events from before identity have no acted_as nor fingerprint).
_STR = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_DATETIME = rb'\{"_type_":"datetime_iso","_data_":("[^"\\]*")\}'
_HEAD = re.compile(rb'\{"timestamp":' + _DATETIME + rb'(?:,"originator_topic":' + _STR + rb')?')
_ACTED_AS = rb'null|\{"name":' + _STR + rb',"roles":\[(?:' + _STR + rb'(?:,' + _STR + rb')*)?\]\}'
_TAIL = re.compile(rb',"actor":(' + _STR + rb'),"occurred_at":' + _DATETIME + rb',"command_id":(' + _STR
                   + rb'),"correlation_id":(' + _STR + rb')(?:,"acted_as":(' + _ACTED_AS + rb'),"fingerprint":(?:null|'
                   + _STR + rb'))?(?:,"class_version":([1-9][0-9]*))?\}')
_TRANSCODED = re.compile(rb'\{"_type_":"(datetime_iso|uuid_hex|decimal_str)","_data_":("[^"\\]*")\}')
_STORE_KEYS = re.compile(rb'"(?:timestamp|originator_topic|class_version|_type_)":')
_ENVELOPE = (b'{"envelope_version":%d,"event_type":%s,"event_version":%s,"complaint_id":"%s",'
             b'"complaint_version":%d,"position":%d,"occurred_at":%s,"recorded_at":%s,"actor":%s,"acted_as":%s,'
             b'"command_id":%s,"correlation_id":%s,"payload":{%s}}')


def _untranscode(match: re.Match[bytes]) -> bytes:
    if match[1] == b"uuid_hex":
        return b'"%s"' % str(UUID(match[2][1:-1].decode())).encode()
    return match[2]  # an ISO datetime or a decimal's text: the string itself


def wire_writer(mapper: Mapper[Any]) -> Writer:
    """`write(topic, complaint_id, complaint_version, position, state) -> envelope bytes`.

    `topic` is the stored event's topic, `complaint_id` the id's text (UTF-8, with dashes),
    `state` the stored bytes. Splicing costs under a third of decoding with the mapper and
    encoding again (stdlib json), and no more than msgspec's decoder and encoder (orjson's
    take a third longer): `bench/stored_decoding.py`, which checks all of them give the
    same envelope for every row.
    """
    decode_slowly = _decoding_writer(mapper)
    transcoder = mapper.transcoder
    if mapper.cipher or mapper.compressor or not isinstance(transcoder, JSONTranscoder) \
            or set(transcoder.names) - _SPLICEABLE:
        return decode_slowly
    head, tail, template = _HEAD.match, _TAIL.fullmatch, _ENVELOPE
    event_types: dict[str, bytes] = {}

    def write(topic: str, complaint_id: bytes, complaint_version: int, position: int, state: bytes) -> bytes:
        if type(state) is not bytes:
            state = bytes(state)
        state = split(state)[0]  # the chain link is the store's, not the event's
        event_type = event_types.get(topic)
        if event_type is None:
            event_type = event_types[topic] = _event_type(topic)
        start = head(state)
        at = state.rfind(b',"actor":')
        end = tail(state, at) if start is not None and at >= 0 else None
        if end is None:
            return decode_slowly(topic, complaint_id, complaint_version, position, state)
        body = state[start.end():at]
        if body:
            if body[0] != 44:  # ","
                return decode_slowly(topic, complaint_id, complaint_version, position, state)
            body = body[1:]
            if (b'"_type_":' in body or b'"timestamp":' in body or b'"originator_topic":' in body
                    or b'"class_version":' in body):
                body = _TRANSCODED.sub(_untranscode, body)
                if _STORE_KEYS.search(body):  # a store field or an unknown transcoding among the payload's
                    return decode_slowly(topic, complaint_id, complaint_version, position, state)
        return template % (ENVELOPE_VERSION, event_type, end[6] or b"1", complaint_id, complaint_version,
                           position, end[2], start[1], end[1], end[5] or b"null", end[3], end[4], body)

    return write


def _event_type(topic: str) -> bytes:
    return json.dumps(event_type_of(topic), ensure_ascii=False).encode()


def _decoding_writer(mapper: Mapper[Any]) -> Writer:
    """The envelope from the state as the mapper decodes it (decrypt, decompress, transcode):
    for the states `wire_writer` cannot splice, and the splice's oracle in the tests."""
    cipher, compressor, transcoder = mapper.cipher, mapper.compressor, mapper.transcoder
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_plain)

    def write(topic: str, complaint_id: bytes, complaint_version: int, position: int, state: bytes) -> bytes:
        if cipher:
            state = cipher.decrypt(state)
        if compressor:
            state = compressor.decompress(state)
        decoded: dict[str, Any] = transcoder.decode(split(bytes(state))[0])
        envelope = {
            "envelope_version": ENVELOPE_VERSION,
            "event_type": event_type_of(topic),
            "event_version": decoded.get("class_version", 1),
            "complaint_id": complaint_id.decode(),
            "complaint_version": complaint_version,
            "position": position,
            "occurred_at": decoded["occurred_at"],
            "recorded_at": decoded["timestamp"],
            "actor": decoded["actor"],
            "acted_as": decoded.get("acted_as"),
            "command_id": decoded["command_id"],
            "correlation_id": decoded["correlation_id"],
            "payload": {k: v for k, v in decoded.items() if k not in _STORE_FIELDS},
        }
        return encoder.encode(envelope).encode("utf8")

    return write


def _plain(value: Any) -> Any:
    """Transcoded values as the store's transcodings write their data (and pydantic would)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def wire_encoder(mapper: Mapper[Any]) -> Callable[[Notification], bytes]:
    """`encode(notification) -> envelope bytes`, for callers holding Notifications."""
    write = wire_writer(mapper)

    def encode(notification: Notification) -> bytes:
        return write(notification.topic, str(notification.originator_id).encode(),
                     notification.originator_version, notification.id, notification.state)

    return encode


def envelopes(mapper: Mapper[Any], notifications: Iterable[Notification]) -> list[EventEnvelope]:
    """The envelopes of the published events among `notifications`, as a consumer reads them."""
    encode = wire_encoder(mapper)
    return [parse(encode(n)) for n in notifications if is_published(n)]
