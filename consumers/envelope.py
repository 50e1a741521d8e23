"""The event envelope: one versioned JSON shape for every event on the wire.

Built from the event store's notifications without constructing domain objects (the
transcoder's decode is enough), so the relay and the in-process follower stay cheap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Mapper, Notification
from pydantic import BaseModel, ConfigDict, Field

from aggregates.events import META_FIELDS, PAYLOADS

ENVELOPE_VERSION = 1
COMPLAINT_TOPIC_PREFIX = "aggregates.complaint:Complaint."
# Fields eventsourcing adds to every stored event that the envelope carries elsewhere.
_STORE_FIELDS = {"timestamp", "originator_topic", "class_version", *META_FIELDS}


class EventEnvelope(BaseModel):
    """What consumers receive. `(complaint_id, complaint_version)` identifies an event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    envelope_version: int = Field(ENVELOPE_VERSION, description="the envelope's own schema version")
    event_type: str = Field(description="e.g. Registered, Triaged; see docs/events.md")
    event_version: int = Field(1, description="the payload's schema version")
    complaint_id: UUID = Field(description="the complaint; also the Kafka message key")
    complaint_version: int = Field(ge=1, description="the complaint's version after this event")
    position: int = Field(ge=1, description="global position in the event store's log")
    occurred_at: datetime = Field(description="when it happened (the command's clock)")
    recorded_at: datetime = Field(description="when the event store recorded it")
    actor: str = Field(description="who did it")
    command_id: str = Field(description="the command that caused it")
    correlation_id: str = Field(description="the conversation it belongs to")
    payload: dict[str, Any] = Field(description="the event's own fields, below")

    def validated_payload(self) -> BaseModel:
        """The payload checked against its event type's model (raises if malformed)."""
        model = PAYLOADS.get(self.event_type)
        if model is None:
            raise ValueError(f"unknown event type {self.event_type!r}")
        return model.model_validate(self.payload)

    def key(self) -> bytes:
        return str(self.complaint_id).encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# Upcasters: (event_type, from_version) -> function turning that payload into the next version.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upcast(envelope: dict[str, Any]) -> dict[str, Any]:
    """Bring an older envelope's payload up to the current version, step by step."""
    while (step := UPCASTERS.get((envelope["event_type"], envelope.get("event_version", 1)))):
        envelope = envelope | {
            "payload": step(envelope["payload"]),
            "event_version": envelope.get("event_version", 1) + 1,
        }
    return envelope


def parse(raw: bytes) -> EventEnvelope:
    """Decode and validate one message from the wire (raises on anything malformed)."""
    envelope = EventEnvelope.model_validate(upcast(json.loads(raw)))
    envelope.validated_payload()
    return envelope


def is_complaint_event(notification: Notification) -> bool:
    return notification.topic.startswith(COMPLAINT_TOPIC_PREFIX)


def state_decoder(mapper: Mapper[Any]) -> Callable[[bytes], dict[str, Any]]:
    """Decode stored event state as the store wrote it (decrypt, decompress, transcode)."""

    def decode(state: bytes) -> dict[str, Any]:
        if mapper.cipher:
            state = mapper.cipher.decrypt(state)
        if mapper.compressor:
            state = mapper.compressor.decompress(state)
        decoded: dict[str, Any] = mapper.transcoder.decode(state)
        return decoded

    return decode


def from_notification(
    notification: Notification, decode: Callable[[bytes], dict[str, Any]]
) -> EventEnvelope:
    """The envelope of one stored Complaint event."""
    state = decode(notification.state)
    payload = {k: v for k, v in state.items() if k not in _STORE_FIELDS}
    return EventEnvelope.model_construct(
        envelope_version=ENVELOPE_VERSION,
        event_type=notification.topic.removeprefix(COMPLAINT_TOPIC_PREFIX),
        event_version=state.get("class_version", 1),
        complaint_id=notification.originator_id,
        complaint_version=notification.originator_version,
        position=notification.id,
        occurred_at=state["occurred_at"],
        recorded_at=state["timestamp"],
        actor=state["actor"],
        command_id=state["command_id"],
        correlation_id=state["correlation_id"],
        payload=_jsonable(payload),
    )


# How the store's JSON transcodings look on the wire: what pydantic would write for them.
_WIRE_TRANSCODINGS: dict[str, Callable[[Any], Any]] = {
    "datetime_iso": lambda data: data,  # already ISO 8601
    "uuid_hex": lambda data: str(UUID(data)),
    "decimal_str": lambda data: data,
}


def wire_encoder(mapper: Mapper[Any]) -> Callable[..., bytes]:
    """A function giving the envelope's JSON bytes for a stored Complaint event.

    The same message as `from_notification(...).to_bytes()` (datetimes keep the store's
    ISO form). `encode(notification, complaint_id=None)`: pass the id's text when you
    have it already. See `wire_writer` for how it is built.
    """
    write = wire_writer(mapper)

    def encode(notification: Notification, complaint_id: str | None = None) -> bytes:
        return write(notification.topic, (complaint_id or str(notification.originator_id)).encode(),
                     notification.originator_version, notification.id, notification.state)

    return encode


# The JSON the store's JSONTranscoder writes (compact separators, no ASCII escaping), as
# regular expressions: a string, a transcoded value, and the parts of a stored state
# around its payload: `{"timestamp":T[,"originator_topic":S]<payload members>,"actor":S,
# "occurred_at":T,"command_id":S,"correlation_id":S[,"class_version":N]}`.
_STR = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_DATETIME = rb'\{"_type_":"datetime_iso","_data_":("[^"\\]*")\}'
_HEAD = re.compile(rb'\{"timestamp":' + _DATETIME + rb'(?:,"originator_topic":' + _STR + rb')?')
_TAIL = re.compile(rb',"actor":(' + _STR + rb'),"occurred_at":' + _DATETIME + rb',"command_id":(' + _STR
                   + rb'),"correlation_id":(' + _STR + rb')(?:,"class_version":([1-9][0-9]*))?\}')
_TRANSCODED = re.compile(rb'\{"_type_":"(datetime_iso|uuid_hex|decimal_str)","_data_":("[^"\\]*")\}')
_STORE_KEYS = re.compile(rb'"(?:timestamp|originator_topic|class_version|_type_)":')
_ENVELOPE = (b'{"envelope_version":%d,"event_type":%s,"event_version":%s,"complaint_id":"%s",'
             b'"complaint_version":%d,"position":%d,"occurred_at":%s,"recorded_at":%s,"actor":%s,'
             b'"command_id":%s,"correlation_id":%s,"payload":{%s}}')


def _untranscode(match: re.Match[bytes]) -> bytes:
    if match[1] == b"uuid_hex":
        return b'"%s"' % str(UUID(match[2][1:-1].decode())).encode()
    return match[2]  # an ISO datetime or a decimal's text: the string itself


def wire_writer(mapper: Mapper[Any]) -> Callable[[str, bytes, int, int, bytes], bytes]:
    """`write(topic, complaint_id, complaint_version, position, state) -> envelope bytes`.

    `topic` is the stored event's topic, `complaint_id` the id's text (UTF-8, with dashes),
    `state` the stored bytes. The store already holds the event as JSON, so the envelope
    is spliced together from that text (the timestamps, the metadata and the payload's
    members are cut out as they are, transcoded values unwrapped) without decoding it:
    about 3x cheaper than decoding and encoding again, which the relay needs to keep up
    with Kafka's producer. The bytes are exactly what decoding the state and encoding the
    envelope with compact separators gives (tests/test_relay.py compares them); a state
    of another shape, or a transcoder other than the JSON one with the known transcodings,
    takes that decoding path instead.
    """
    transcoder = mapper.transcoder
    cipher, compressor = mapper.cipher, mapper.compressor
    if not isinstance(transcoder, JSONTranscoder) or set(transcoder.names) - set(_WIRE_TRANSCODINGS):
        decode = state_decoder(mapper)

        def write_from_model(topic: str, complaint_id: bytes, complaint_version: int, position: int,
                             state: bytes) -> bytes:
            return from_notification(Notification(id=position, originator_id=UUID(complaint_id.decode()),
                                                  originator_version=complaint_version, topic=topic,
                                                  state=state), decode).to_bytes()

        return write_from_model

    decode_slowly = _decoding_writer(mapper)
    event_types: dict[str, bytes] = {}
    head, tail, template = _HEAD.match, _TAIL.fullmatch, _ENVELOPE

    def write(topic: str, complaint_id: bytes, complaint_version: int, position: int, state: bytes) -> bytes:
        if cipher:
            state = cipher.decrypt(state)
        if compressor:
            state = compressor.decompress(state)
        if type(state) is not bytes:
            state = bytes(state)
        event_type = event_types.get(topic)
        if event_type is None:
            event_type = event_types[topic] = json.dumps(
                topic.removeprefix(COMPLAINT_TOPIC_PREFIX), ensure_ascii=False).encode()
        start = head(state)
        at = state.rfind(b',"actor":')
        end = tail(state, at) if start is not None and at >= 0 else None
        if end is None:
            return decode_slowly(event_type, complaint_id, complaint_version, position, state)
        body = state[start.end():at]
        if body:
            if body[0] != 44:  # ","
                return decode_slowly(event_type, complaint_id, complaint_version, position, state)
            body = body[1:]
            if (b'"_type_":' in body or b'"timestamp":' in body or b'"originator_topic":' in body
                    or b'"class_version":' in body):
                body = _TRANSCODED.sub(_untranscode, body)
                if _STORE_KEYS.search(body):  # a store field or an unknown transcoding among the payload's
                    return decode_slowly(event_type, complaint_id, complaint_version, position, state)
        return template % (ENVELOPE_VERSION, event_type, end[5] or b"1", complaint_id, complaint_version,
                           position, end[2], start[1], end[1], end[3], end[4], body)

    return write


def _decoding_writer(mapper: Mapper[Any]) -> Callable[[bytes, bytes, int, int, bytes], bytes]:
    """The envelope from the decoded state (for states `wire_writer` cannot splice)."""

    def hook(obj: dict[str, Any]) -> Any:
        if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
            return _WIRE_TRANSCODINGS[obj["_type_"]](obj["_data_"])
        return obj

    decoder = json.JSONDecoder(object_hook=hook)
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def write(event_type: bytes, complaint_id: bytes, complaint_version: int, position: int, state: bytes) -> bytes:
        decoded: dict[str, Any] = decoder.decode(state.decode("utf8"))
        envelope = {
            "envelope_version": ENVELOPE_VERSION,
            "event_type": json.loads(event_type),
            "event_version": decoded.get("class_version", 1),
            "complaint_id": complaint_id.decode(),
            "complaint_version": complaint_version,
            "position": position,
            "occurred_at": decoded["occurred_at"],
            "recorded_at": decoded["timestamp"],
            "actor": decoded["actor"],
            "command_id": decoded["command_id"],
            "correlation_id": decoded["correlation_id"],
            "payload": {k: v for k, v in decoded.items() if k not in _STORE_FIELDS},
        }
        return encoder.encode(envelope).encode("utf8")

    return write


def _jsonable(value: Any) -> Any:
    """Payload values as JSON types (datetimes and UUIDs as strings)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value
