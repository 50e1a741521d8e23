"""Opening the event store, once per process, for whoever needs it.

The desk (commands) needs the whole eventsourcing application; the relay and a read node
following the log need only the recorder, the mapper and a tracking recorder, so they get
those without a desk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import (
    ApplicationRecorder, DatetimeAsISO, DecimalAsStr, InfrastructureFactory, JSONTranscoder, Mapper,
    TrackingRecorder, UUIDAsHex,
)
from eventsourcing.utils import Environment

from aggregates.sla import load_sla_policy
from commands.desk import Clock, ComplaintDesk, utc_now
from complaints.settings import Settings


@dataclass
class EventStore:
    """What reads the event store needs: its rows, their decoding, and a place for positions."""

    factory: InfrastructureFactory[Any]
    recorder: ApplicationRecorder
    mapper: Mapper[Any]
    tracking: TrackingRecorder

    def close(self) -> None:
        self.factory.close()


def open_store(settings: Settings) -> EventStore:
    """The event store as the desk writes it (same tables, same transcodings), without a desk."""
    factory = InfrastructureFactory.construct(Environment(ComplaintDesk.name, settings.eventsourcing_env()))
    transcoder = factory.transcoder()
    if isinstance(transcoder, JSONTranscoder):  # what Application.register_transcodings gives the desk
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    return EventStore(factory, factory.application_recorder(), factory.mapper(transcoder=transcoder),
                      factory.tracking_recorder())


def open_desk(settings: Settings, clock: Clock = utc_now) -> ComplaintDesk:
    """The command side's application on the configured store and SLA policy."""
    return ComplaintDesk(settings.eventsourcing_env(), clock=clock, sla_policy=load_sla_policy(settings.sla_policy))
