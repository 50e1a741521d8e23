"""Opening the event store, once per process, for whoever needs it.

The desk (commands) needs the whole eventsourcing application; the relay and a read node
following the log need only the recorder, the mapper and a tracking recorder, so they get
those without a desk.

Opening waits (tenacity) while the database is not up yet, and retries when processes
starting together race to create the same tables in an empty PostgreSQL schema
(`CREATE TABLE IF NOT EXISTS` is not safe against itself: one of them gets a unique
violation on the catalogue).
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eventsourcing.persistence import (
    ApplicationRecorder, DatetimeAsISO, DecimalAsStr, InfrastructureFactory, IntegrityError, InterfaceError, InternalError,
    JSONTranscoder, Mapper, OperationalError, TrackingRecorder, UUIDAsHex,
)
from eventsourcing.utils import Environment
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_exponential

from aggregates.sla import load_sla_policy
from commands.access_log import AccessLog
from commands.desk import Clock, ComplaintDesk, utc_now
from commands.sealing import Sealer
from complaints.keys import load_or_create_key
from complaints.settings import Settings


log = logging.getLogger(__name__)

# Not up yet, or another process creating the same tables at this moment (a unique
# violation on the catalogue, or PostgreSQL's "tuple concurrently updated").
until_the_store_opens = retry(
    retry=retry_if_exception_type((OperationalError, InterfaceError, IntegrityError, InternalError)),
    wait=wait_exponential(multiplier=0.2, max=5), stop=stop_after_delay(60), reraise=True,
    before_sleep=before_sleep_log(log, logging.WARNING),
)


@dataclass
class EventStore:
    """What reads the event store needs: its rows, their decoding, and a place for positions."""

    factory: InfrastructureFactory[Any]
    recorder: ApplicationRecorder
    mapper: Mapper[Any]
    tracking: TrackingRecorder

    @classmethod
    def of(cls, desk: ComplaintDesk) -> EventStore:
        """The parts of an open desk (closed with it)."""
        return cls(desk.factory, desk.recorder, desk.mapper, desk.factory.tracking_recorder())

    def close(self) -> None:
        self.factory.close()


@until_the_store_opens
def open_store(settings: Settings) -> EventStore:
    """The event store as the desk writes it (same tables, same transcodings), without a desk."""
    factory = InfrastructureFactory.construct(Environment(ComplaintDesk.name, settings.eventsourcing_env()))
    transcoder = factory.transcoder()
    if isinstance(transcoder, JSONTranscoder):  # what Application.register_transcodings gives the desk
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    try:
        return EventStore(factory, factory.application_recorder(), factory.mapper(transcoder=transcoder),
                          factory.tracking_recorder())
    except Exception:
        factory.close()  # its connections, before the next attempt opens others
        raise


@until_the_store_opens
def open_desk(settings: Settings, clock: Clock = utc_now) -> ComplaintDesk:
    """The command side's application on the configured store and SLA policy, with the log
    of views of personal data beside it."""
    return ComplaintDesk(settings.eventsourcing_env(), clock=clock, sla_policy=load_sla_policy(settings.sla_policy),
                         max_clock_skew=timedelta(seconds=settings.clock_skew_seconds),
                         instants=settings.instants(),
                         access_log=open_access_log(settings),
                         sealer=Sealer(load_or_create_key(settings.secrets_key)))


@until_the_store_opens  # read nodes serving the API open it beside the APIs: the same table race
def open_access_log(settings: Settings) -> AccessLog:
    """The log of views of personal data: its own table in the event store's database (a
    file beside it, on SQLite, whose tables are not named by application)."""
    env = settings.eventsourcing_env()
    if settings.store == "sqlite":
        env["SQLITE_DBNAME"] = str(settings.sqlite_path.with_suffix(".access" + settings.sqlite_path.suffix))
    return AccessLog(env)
