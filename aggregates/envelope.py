"""The published event envelope: one versioned JSON shape for every event on the wire.

The contract between the write side and everything that reads the stream: the relay and
the in-process follower write it (`consumers.stored_events`), read nodes and projectors
read it. Its payloads are `aggregates.events.PAYLOADS`; older payload versions are
brought up to date by `UPCASTERS` before anything else sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from aggregates.events import PAYLOADS

ENVELOPE_VERSION = 1
# The stored topics of the published events start with these; the rest is the event type.
COMPLAINT_TOPIC_PREFIX = "aggregates.complaint:Complaint."
ALERT_TOPIC_PREFIX = "aggregates.alert:Alert."
PUBLISHED_TOPIC_PREFIXES = (COMPLAINT_TOPIC_PREFIX, ALERT_TOPIC_PREFIX)


def event_type_of(topic: str) -> str:
    """The published event type of a stored event's topic (`...Complaint.Registered` ->
    `Registered`, `...Alert.AlertRaised` -> `AlertRaised`)."""
    return topic.rpartition(".")[2]


class ActedAs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    roles: list[str]


class EventEnvelope(BaseModel):
    """What consumers receive. `(complaint_id, complaint_version)` identifies an event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    envelope_version: int = Field(ENVELOPE_VERSION, description="the envelope's own schema version")
    event_type: str = Field(description="e.g. Registered, Triaged; see docs/events.md")
    event_version: int = Field(1, description="the payload's schema version")
    complaint_id: UUID = Field(description="the complaint (for Alert* events: the alert); also the Kafka message key")
    complaint_version: int = Field(ge=1, description="the complaint's (or alert's) version after this event")
    position: int = Field(ge=1, description="global position in the event store's log")
    occurred_at: datetime = Field(description="when it happened (the command's clock)")
    recorded_at: datetime = Field(description="when the event store recorded it")
    actor: str = Field(description="who did it: the subject of the token the command came with")
    acted_as: ActedAs | None = Field(None, description="the actor's display name and the roles it acted under"
                                     " (None on events from before identity)")
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
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    # v2 added `reason` (why, when a rule did it): a v1 event had none.
    ("Triaged", 1): lambda payload: {**payload, "reason": None},
    ("Assigned", 1): lambda payload: {**payload, "reason": None},
}


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
