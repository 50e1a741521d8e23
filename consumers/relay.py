"""The relay: follows the event store's notification log and publishes it to Kafka, in order.

At-least-once: a batch is published, Kafka's acknowledgements are awaited, and only then
is the last published position recorded (in the event store's own tracking table). A
crash between the two republishes that batch on restart; consumers drop what they have
by (complaint id, version). While Kafka is down the relay retries with a back-off and
the command side is untouched, so nothing accepted is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, Mapper, Tracking, TrackingRecorder
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from consumers.envelope import from_notification, is_complaint_event, state_decoder

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, topic: str, partitions: int) -> None:
    """Create the event topic and its dead-letter topic if they do not exist."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="complaints-admin")
    try:
        for name, count in ((topic, partitions), (f"{topic}.dead-letter", 1)):
            try:
                admin.create_topics([NewTopic(name, count, 1, topic_configs={
                    # The topic is a replayable history: keep it.
                    "retention.ms": "-1",
                    "min.insync.replicas": "1",
                })])
                log.info("created topic %s with %d partitions", name, count)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def make_producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=256 * 1024,
        compression_type=None,
        max_in_flight_requests_per_connection=5,
        delivery_timeout_ms=30_000,
        request_timeout_ms=10_000,
    )


class Relay:
    def __init__(
        self,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        tracking: TrackingRecorder,
        producer: KafkaProducer,
        topic: str,
        batch_size: int = 2_000,
    ) -> None:
        self.recorder = recorder
        self.decode = state_decoder(mapper)
        self.tracking = tracking
        self.producer = producer
        self.topic = topic
        self.batch_size = batch_size
        self.name = f"relay:{topic}"

    def position(self) -> int:
        """The last position known to be in Kafka."""
        return self.tracking.max_tracking_id(self.name) or 0

    def lag(self) -> int:
        return (self.recorder.max_notification_id() or 0) - self.position()

    def publish_next_batch(self) -> int:
        """Publish what follows the recorded position; returns how many events were sent."""
        start = self.position()
        notifications = self.recorder.select_notifications(
            start, self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        futures = []
        for notification in notifications:
            if not is_complaint_event(notification):
                continue
            envelope = from_notification(notification, self.decode)
            futures.append(self.producer.send(self.topic, key=envelope.key(), value=envelope.to_bytes()))
        self.producer.flush()
        for future in futures:
            future.get()  # raises if Kafka did not acknowledge: the position stays put
        last = notifications[-1].id
        self.tracking.insert_tracking(Tracking(self.name, last))
        return len(notifications)

    def run(self, stop: Callable[[], bool] = lambda: False, idle_sleep: float = 0.05,
            on_batch: Callable[[int, int], None] | None = None) -> None:
        """Relay until `stop()` says so; Kafka failures back off and retry, never skip."""
        backoff = 0.5
        while not stop():
            try:
                sent = self.publish_next_batch()
                backoff = 0.5
            except KafkaError as error:
                log.warning("Kafka unavailable (%s); retrying from position %d in %.1fs",
                            error, self.position(), backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if on_batch and sent:
                on_batch(sent, self.position())
            if not sent:
                time.sleep(idle_sleep)
