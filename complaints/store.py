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
from functools import partial
from pathlib import Path

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eventsourcing.persistence import (
    ApplicationRecorder, DatetimeAsISO, DecimalAsStr, InfrastructureFactory, IntegrityError, InterfaceError, InternalError,
    JSONTranscoder, Mapper, OperationalError, TrackingRecorder, UUIDAsHex,
)
from eventsourcing.utils import Environment
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_exponential

from aggregates.fields import load_field_definitions
from aggregates.sla import load_sla_policy
from commands.access_log import AccessLog
from commands.event_chain import check_key, stored_link
from commands.personal_data import Keyring, MasterKey, MasterKeyError
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
    of views of personal data beside it, sealing personal data and chaining every event."""
    desk = ComplaintDesk(settings.eventsourcing_env(), clock=clock, sla_policy=load_sla_policy(settings.sla_policy),
                         max_clock_skew=timedelta(seconds=settings.clock_skew_seconds),
                         instants=settings.instants(), field_definitions=load_field_definitions(settings.fields),
                         access_log=open_access_log(settings),
                         sealer=Sealer(load_or_create_key(settings.secrets_key)))
    try:
        keyring = open_keyring(settings, desk.recorder) if settings.seal_personal_data else None
        desk.protect(keyring, chain_key(settings, desk.recorder))
    except Exception:
        desk.close()
        raise
    return desk


@until_the_store_opens  # its tables: the same race as the store's
def open_keyring(settings: Settings, recorder: ApplicationRecorder) -> Keyring:
    """The customers' data keys, in the event store's database (`recorder`'s), opened by the
    master key; refuses a missing master key where data keys exist (or in production) and a
    master key that does not open them."""
    datastore = recorder.datastore  # type: ignore[attr-defined]
    postgres = settings.store == "postgres"
    path = settings.master_key
    missing = not path.exists()
    if missing and settings.env == "production":
        raise MasterKeyError(f"the master key file {path} is missing: provision it (COMPLAINTS_MASTER_KEY) before"
                             " starting; see docs/privacy.md")
    try:
        keyring = Keyring(datastore.transaction, postgres=postgres, schema=getattr(datastore, "schema", ""),
                          master=MasterKey(load_or_create_key(path)),
                          retired=[_retired(p) for p in settings.retired_master_keys])
        keyring.check_master_key()
    except MasterKeyError as error:
        if missing:
            path.unlink(missing_ok=True)  # made just now: not the key the data keys need
            raise MasterKeyError(f"the master key file {path} is missing, and the store holds customers' data keys"
                                 f" wrapped by another key: restore it (COMPLAINTS_MASTER_KEY). {error}") from None
        raise
    return keyring


def _retired(path: Path) -> MasterKey:
    if not path.exists():
        raise MasterKeyError(f"the retired master key file {path} is missing (COMPLAINTS_RETIRED_MASTER_KEYS)")
    return MasterKey(path.read_bytes())


def chain_key(settings: Settings, recorder: ApplicationRecorder) -> bytes:
    """The key of every event's chain link; refused when it does not verify the stored chain."""
    missing = not settings.chain_key.exists()
    key = load_or_create_key(settings.chain_key)
    last = recorder.max_notification_id()
    try:
        check_key(key, recorder.select_notifications(last, 1)[0] if last else None,
                  partial(stored_link, recorder))
    except Exception:
        if missing:
            settings.chain_key.unlink(missing_ok=True)
        raise
    return key


@until_the_store_opens  # read nodes serving the API open it beside the APIs: the same table race
def open_access_log(settings: Settings) -> AccessLog:
    """The log of views of personal data: its own table in the event store's database (a
    file beside it, on SQLite, whose tables are not named by application)."""
    env = settings.eventsourcing_env()
    if settings.store == "sqlite":
        env["SQLITE_DBNAME"] = str(settings.sqlite_path.with_suffix(".access" + settings.sqlite_path.suffix))
    return AccessLog(env)
