"""The relay against a real broker: order, keys, positions recorded after acknowledgement only.

Each test has a topic of its own on the session broker (`kafka_bootstrap`).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from complaints.store import open_desk
from commands.desk import ComplaintDesk
from commands.models import RegisterComplaint
from tests.identity import OPERATOR
from complaints.settings import Settings
from aggregates.envelope import EventEnvelope, event_type_of, parse
from consumers.stored_events import _decoding_writer, wire_encoder, wire_writer
from consumers.relay import Relay, ensure_topics, make_producer
from commands.event_chain import split
from eventsourcing.persistence import Mapper, StoredEvent
from tests.conftest import FakeClock, send_commands, store_events


def read_topic(bootstrap: str, topic: str, timeout: float = 30) -> list[Any]:
    """Every record of the topic, read to its end offsets by a plain consumer."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        assert len(records) == sum(ends.values()), "could not read the topic to its end"
        return records
    finally:
        consumer.close()


def relay_for(app: ComplaintDesk, bootstrap: str, topic: str, **options: Any) -> Relay:
    ensure_topics(bootstrap, topic, 3)
    return Relay(app.recorder, app.mapper, app.factory.tracking_recorder(),
                 lambda: make_producer(bootstrap), topic, **options)


@pytest.fixture
def app(store_settings: Settings, clock: FakeClock) -> Iterator[ComplaintDesk]:
    desk = open_desk(store_settings, clock=clock)
    yield desk
    desk.close()


STORE_FIELDS = {"originator_id", "originator_version", "originator_topic", "timestamp", "occurred_at", "actor", "command_id",
                "correlation_id", "acted_as", "fingerprint"}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def domain_envelope(mapper: Any, notification: Any) -> EventEnvelope:
    """The oracle: the envelope from the domain event eventsourcing's own mapper decodes, of
    the event as stored (personal fields sealed; its chain link, the store's, taken off)."""
    stored = StoredEvent(notification.originator_id, notification.originator_version, notification.topic,
                         split(bytes(notification.state))[0])
    event = Mapper(mapper.transcoder, mapper.compressor, mapper.cipher).to_domain_event(stored)
    state = vars(event)
    payload = json.loads(json.dumps({k: v for k, v in state.items() if k not in STORE_FIELDS}, default=_plain))
    return EventEnvelope(
        event_type=event_type_of(notification.topic),
        event_version=getattr(type(event), "class_version", 1), complaint_id=event.originator_id,
        complaint_version=event.originator_version, position=notification.id, occurred_at=state["occurred_at"],
        recorded_at=event.timestamp, actor=state["actor"], acted_as=state.get("acted_as"), command_id=state["command_id"],
        correlation_id=state["correlation_id"], payload=payload,
    )


def test_wire_encoder_writes_what_the_envelope_model_reads(sqlite_settings: Settings) -> None:
    app = open_desk(sqlite_settings)
    try:
        send_commands(app, 30, seed=11)
        encode = wire_encoder(app.mapper)
        notifications = app.recorder.select_notifications(1, 10_000)
        for notification in notifications:
            assert parse(encode(notification)) == domain_envelope(app.mapper, notification)
        assert {json.loads(encode(n))["event_type"] for n in notifications} >= {"Registered", "Triaged", "Closed"}
    finally:
        app.close()


TRICKY_TEXTS = [
    'quotes " and \\ backslashes \\" and a newline\n and a tab\t',
    'unicode: 投诉 — ünïcödé 😀 and \u2028',
    '{"_type_":"datetime_iso","_data_":"2020-01-01T00:00:00+00:00"}',
    ',"actor":"mallory","occurred_at":{"_type_":"datetime_iso","_data_":"x"},"command_id":"c","correlation_id":"c"}',
    '"timestamp":"class_version":"originator_topic":',
    "",
]


def tricky_states(app: Any) -> list[tuple[Any, bytes]]:
    """Each stored state of `app`, and variations of it a splice could get wrong: every
    text replaced by a tricky one, a bumped event class, transcoded values nested in the
    payload, numbers JSON makes awkward, an unusual member order (decoded instead)."""
    transcoder = app.mapper.transcoder
    states = []
    for n in app.recorder.select_notifications(1, 10_000):
        states.append((n, n.state))
        state = transcoder.decode(n.state)
        for text in TRICKY_TEXTS:  # every string of the payload and metadata
            states.append((n, transcoder.encode({k: text if isinstance(v, str) else v for k, v in state.items()})))
        states.append((n, transcoder.encode(state | {"class_version": 3})))
        states.append((n, transcoder.encode(state | {
            "extra_id": uuid.UUID(int=n.id), "amount": Decimal("12.50"), "when": state["timestamp"],
            "nested": {"at": [state["timestamp"], {"id": uuid.UUID(int=7)}], "_type_": "x", "_data_": "y", "z": 1},
            "typed_text": {"_type_": "not a transcoding"}, "big": 2**70, "float": 1.5e300, "neg": -0.0,
        })))
        reordered = {"actor": state["actor"], **{k: v for k, v in state.items() if k != "actor"}}
        states.append((n, transcoder.encode(reordered)))
    return states




def test_the_spliced_envelope_is_byte_for_byte_the_decoded_one(sqlite_settings: Settings) -> None:
    """wire_writer cuts the envelope out of the stored JSON; decoding it and encoding the
    envelope gives the very same bytes, whatever the texts hold and whatever the shape
    of the state (shapes it does not know take the decoding path)."""
    app = open_desk(sqlite_settings)
    try:
        send_commands(app, 40, seed=5)
        write, decoded_write = wire_writer(app.mapper), _decoding_writer(app.mapper)
        states = tricky_states(app)
        shapes = set()
        for n, state in states:
            key = str(n.originator_id).encode()
            expected = decoded_write(n.topic, key, n.originator_version, n.id, state)
            assert write(n.topic, key, n.originator_version, n.id, state) == expected, state
            shapes.add(json.loads(expected)["event_version"])
        assert shapes == {1, 2, 3}  # as stored (Triaged and Assigned are at v2), and bumped
        assert len(states) > 1000
    finally:
        app.close()


def test_a_compressed_store_gives_the_same_envelopes(sqlite_settings: Settings, tmp_path: Any) -> None:
    packed = ComplaintDesk(sqlite_settings.model_copy(update={"sqlite_path": tmp_path / "packed.sqlite"})
                           .eventsourcing_env() | {"COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"})
    try:
        send_commands(packed, 10, seed=8)
        encode = wire_encoder(packed.mapper)
        notifications = packed.recorder.select_notifications(1, 10_000)
        assert notifications and all(not n.state.startswith(b"{") for n in notifications)
        for notification in notifications:
            assert parse(encode(notification)) == domain_envelope(packed.mapper, notification)
    finally:
        packed.close()


@pytest.mark.kafka
def test_relay_publishes_every_event_keyed_and_in_order(
    app: ComplaintDesk, kafka_bootstrap: str, topic: str, store_settings: Settings
) -> None:
    send_commands(app, 25, seed=1)
    relay = relay_for(app, kafka_bootstrap, topic, batch_size=40)
    while relay.publish_next_batch():
        pass
    expected = store_events(app)
    assert relay.position() == app.recorder.max_notification_id()
    assert relay.lag() == 0

    records = read_topic(kafka_bootstrap, topic)
    seen = [(str(parse(r.value).complaint_id), parse(r.value).complaint_version, parse(r.value).position)
            for r in records]
    assert sorted(seen, key=lambda e: e[2]) == expected  # each event once, nothing else
    partitions: dict[str, set[int]] = defaultdict(set)
    versions: dict[str, list[int]] = defaultdict(list)
    for record, (complaint_id, version, _) in zip(records, seen, strict=True):
        assert record.key == complaint_id.encode()
        partitions[complaint_id].add(record.partition)
        versions[complaint_id].append(version)
    assert all(len(p) == 1 for p in partitions.values()), "a complaint spread over partitions"
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values()), "out of order"
    # The relay picks partitions itself (cached murmur2): the same ones Kafka's default partitioner picks.
    probe_topic = f"{topic}-probe"
    ensure_topics(kafka_bootstrap, probe_topic, 3)
    plain = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for complaint_id in partitions:
        plain.send(probe_topic, key=complaint_id.encode(), value=b"probe")
    plain.flush()
    plain.close()
    probed = {r.key.decode(): {r.partition} for r in read_topic(kafka_bootstrap, probe_topic)}
    assert probed == dict(partitions)

    # The position sits in the event store's own tracking table.
    if store_settings.store == "sqlite":
        with sqlite3.connect(store_settings.sqlite_path) as db:
            row = db.execute("SELECT notification_id FROM tracking WHERE application_name = ?",
                             (f"relay:{topic}",)).fetchone()
    else:
        with psycopg.connect(host=store_settings.postgres_host, port=store_settings.postgres_port,
                             dbname="complaints", user="complaints", password="complaints") as db:
            row = db.execute(f"SELECT notification_id FROM {store_settings.postgres_schema}.complaints_tracking "
                             "WHERE application_name = %s", (f"relay:{topic}",)).fetchone()
    assert row == (relay.position(),)


@pytest.mark.kafka
def test_no_position_is_recorded_without_kafka_acknowledging(
    sqlite_settings: Settings, kafka_bootstrap: str, topic: str
) -> None:
    app = open_desk(sqlite_settings)
    try:
        send_commands(app, 5, seed=2)
        ensure_topics(kafka_bootstrap, topic, 3)
        # A broker address where nothing listens: every attempt fails, the position stays.
        dead = Relay(app.recorder, app.mapper, app.factory.tracking_recorder(),
                     lambda: make_producer("127.0.0.1:9", bootstrap_timeout_ms=500), topic)
        for _ in range(2):
            with pytest.raises(KafkaError):
                dead.publish_next_batch()
            dead.drop_producer()
        assert dead.position() == 0 and dead.lag() == app.recorder.max_notification_id()
        # The same store and tracking table with the real broker: everything goes out once.
        relay = relay_for(app, kafka_bootstrap, topic)
        while relay.publish_next_batch():
            pass
        assert relay.position() == app.recorder.max_notification_id()
        assert len(read_topic(kafka_bootstrap, topic)) == len(store_events(app))
    finally:
        app.close()


@pytest.mark.kafka
def test_a_restarted_relay_resumes_after_the_recorded_position(
    sqlite_settings: Settings, kafka_bootstrap: str, topic: str
) -> None:
    app = open_desk(sqlite_settings)
    try:
        send_commands(app, 10, seed=3)
        first = relay_for(app, kafka_bootstrap, topic, batch_size=25)
        while first.publish_next_batch():
            pass
        first.drop_producer()
        send_commands(app, 10, seed=4)
        # A new process would build a new relay: it starts from the tracking table.
        second = relay_for(app, kafka_bootstrap, topic, batch_size=25)
        assert second.position() == first.position()
        while second.publish_next_batch():
            pass
        second.drop_producer()
        records = read_topic(kafka_bootstrap, topic)
        assert sorted(parse(r.value).position for r in records) == [p for _, _, p in store_events(app)]
    finally:
        app.close()


@pytest.mark.kafka
@pytest.mark.postgres
def test_relay_reads_past_gaps_in_postgres_notification_ids(
    postgres_address: tuple[str, int], kafka_bootstrap: str, topic: str
) -> None:
    from tests.conftest import postgres_settings

    app = open_desk(postgres_settings(postgres_address))
    try:
        command = {"channel": "web", "customer": {"id": "C-1"}, "title": "x", "description": "y",
                   "customer_personal": {"name": "Li", "contact": "li@example.com"}}
        for n in range(6):
            register = RegisterComplaint.model_validate(command | {"command_id": f"gap-{n}"})
            app.register(register, OPERATOR)
            app.register(register, OPERATOR)  # a repeat collides in the insert: its sequence value is lost
        ids = [p for _, _, p in store_events(app)]
        assert ids[-1] > len(ids), f"expected gaps in {ids}"
        relay = relay_for(app, kafka_bootstrap, topic, batch_size=2)
        while relay.publish_next_batch():
            pass
        assert relay.position() == ids[-1]
        assert sorted(parse(r.value).position for r in read_topic(kafka_bootstrap, topic)) == ids
    finally:
        app.close()


@pytest.mark.kafka
def test_topics_are_created_with_partitions_and_a_dead_letter_topic(kafka_bootstrap: str, topic: str) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    ensure_topics(kafka_bootstrap, topic, 4)
    ensure_topics(kafka_bootstrap, topic, 4)  # idempotent
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2, 3}
        assert consumer.partitions_for_topic(f"{topic}.dead-letter") == {0}
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        config = {k: v["value"] for k, v in described["topic"][topic].items()}
        assert config["retention.ms"] == "-1" and config["cleanup.policy"] == "delete"
    finally:
        consumer.close()
        admin.close()


