"""The relay: follows the event store's notification log and publishes it to Kafka, in order.

At-least-once: a batch is published, Kafka's acknowledgements are awaited, and only then
is the last published position recorded (in the event store's own tracking table, so
the position lives and dies with the events it points into). A crash between the two
republishes that batch on restart; consumers drop what they have by (complaint id,
version). While Kafka is down the relay retries with a back-off and the command side is
untouched, so nothing accepted is lost.

Positions are read as "greater than the last one": PostgreSQL notification ids can
have gaps (a failed insert consumes sequence values), so contiguity is never assumed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    PersistenceError,
    Tracking,
    TrackingRecorder,
)
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

from aggregates.envelope import PUBLISHED_TOPIC_PREFIXES
from consumers.metrics import RELAY_LAG, RELAY_POSITION, RELAY_PUBLISHED
from consumers.sources import dead_letter_topic
from consumers.retrying import Backoff, pause, when_up
from consumers.stored_events import NotificationRows, wire_writer

log = logging.getLogger(__name__)

# The topics are a replayable history: keep everything, and never accept a write that is
# not on every in-sync replica.
TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete", "min.insync.replicas": "1"}


def ensure_topics(bootstrap: str, topic: str, partitions: int, timeout_ms: int = 30_000) -> None:
    """Create the event topic and its dead-letter topic if they do not exist.

    An existing topic is left as it is (its partition count decides which partition a
    complaint lives in: never change it under running consumers); a different count is
    logged.
    """
    # A short bootstrap: while the broker is not up, each attempt gives up soon and the
    # caller's back-off (which notices SIGTERM) decides when to try again.
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="complaints-admin",
                             request_timeout_ms=timeout_ms, bootstrap_timeout_ms=min(timeout_ms, 3_000),
                             reconnect_backoff_max_ms=1_000)
    try:
        for name, count in ((topic, partitions), (dead_letter_topic(topic), 1)):
            try:
                admin.create_topics([NewTopic(name, count, 1, topic_configs=TOPIC_CONFIG)],
                                    timeout_ms=timeout_ms)
                log.info("created topic %s with %d partition(s)", name, count)
            except TopicAlreadyExistsError:
                existing = _partition_count(admin, name)
                if name == topic and existing not in (None, count):
                    log.warning("topic %s exists with %s partitions, not %d: keeping %s",
                                name, existing, count, existing)
    finally:
        admin.close()


def ensure_topics_when_up(bootstrap: str, topic: str, partitions: int, stop: Callable[[], bool]) -> None:
    """`ensure_topics`, waiting (with back-off) for the broker to come up, or until `stop()`."""
    when_up(lambda: ensure_topics(bootstrap, topic, partitions), failures=KafkaError, stop=stop,
            what=f"Kafka at {bootstrap} is not up", log=log)


def _partition_count(admin: KafkaAdminClient, topic: str) -> int | None:
    try:
        described = admin.describe_topics([topic])
    except KafkaError:
        return None
    return len(described[0]["partitions"]) if described else None


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """The relay's producer: every write on all in-sync replicas, idempotent, ordered."""
    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        client_id="complaints-relay",
        acks="all",
        enable_idempotence=True,
        # Idempotence keeps order with up to 5 batches in flight per partition.
        max_in_flight_requests_per_connection=5,
        linger_ms=5,
        batch_size=256 * 1024,
        compression_type=None,
        delivery_timeout_ms=30_000,
        request_timeout_ms=10_000,
        max_block_ms=10_000,  # a down broker fails a send in 10 s, not 60
        bootstrap_timeout_ms=10_000,
        reconnect_backoff_max_ms=2_000,
    )
    config.update(overrides)
    return KafkaProducer(**config)


class Relay:
    """Publishes the notification log after the recorded position, one acknowledged batch at a time."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        tracking: TrackingRecorder,
        producer_factory: Callable[[], KafkaProducer],
        topic: str,
        batch_size: int = 2_000,
        pause_before_tracking: float = 0.0,
    ) -> None:
        self.recorder = recorder
        self.read_rows = NotificationRows(recorder)
        self.write = wire_writer(mapper)
        self.tracking = tracking
        self.producer_factory = producer_factory
        self.producer: KafkaProducer | None = None
        self.topic = topic
        self.batch_size = batch_size
        self.name = f"relay:{topic}"
        self.pause_before_tracking = pause_before_tracking  # fault tests only
        self.published = 0  # events sent since start (re-sends after a failure included)
        self.trouble: str | None = "starting"  # what keeps it from publishing (readiness), None when it publishes
        self.ack_warning_after = 5.0  # seconds without acknowledgement before saying so
        # Per complaint (the stored originator id): its key, and its partition.
        self._complaints: dict[Any, tuple[bytes, int]] = {}
        self._partition_count = 0
        # Batches sent but not yet acknowledged: (previous position, last id, futures).
        self._in_flight: deque[tuple[int, int, list[Any]]] = deque()
        self._sent_up_to = 0
        self.max_batches_in_flight = 3
        self.lag_every = 1.0  # seconds between refreshes of the lag gauge (one max(id) query)
        self._lag_at = 0.0
        self._recorded = 0  # the last position this relay recorded (for the lag gauge)

    def position(self) -> int:
        """The last notification id known to be in Kafka (0: none yet)."""
        return self.tracking.max_tracking_id(self.name) or 0

    def lag(self) -> int:
        """Notification ids not yet confirmed by Kafka (an upper bound where ids have gaps)."""
        return max(0, (self.recorder.max_notification_id() or 0) - self.position())

    def publish_next_batch(self) -> int:
        """Publish what follows the recorded position and wait for Kafka; returns how many
        notifications it covered. Raises KafkaError when Kafka does not acknowledge (the
        position then stays put)."""
        covered = self.send_next_batch()
        self.complete(wait=True)
        return covered

    def send_next_batch(self) -> int:
        """Send what follows the last batch sent, without waiting for acknowledgements.

        Up to `max_batches_in_flight` batches are outstanding; `complete()` records their
        positions, in order, as their acknowledgements arrive. Returns notifications covered.
        """
        start = self._sent_up_to if self._in_flight else self.position()
        rows = self.read_rows(start, self.batch_size)
        if not rows:
            return 0
        producer = self.producer = self.producer or self.producer_factory()
        complaint_of = self._complaint_keys(producer)
        send, write, topic, prefix = producer.send, self.write, self.topic, PUBLISHED_TOPIC_PREFIXES
        futures = []
        for position, originator_id, version, event_topic, state in rows:
            if not event_topic.startswith(prefix):
                continue
            key, partition = complaint_of(originator_id)
            futures.append(send(topic, key=key, value=write(event_topic, key, version, position, state),
                                partition=partition))
        self._sent_up_to = rows[-1][0]
        self._in_flight.append((start, self._sent_up_to, futures))
        return len(rows)

    def complete(self, wait: bool = False, wait_oldest: bool = False) -> int:
        """Record the position of every leading batch Kafka has acknowledged; returns the new position.

        With wait, waits for all batches in flight; with wait_oldest, for the oldest one
        (the pipeline stays full). A failed acknowledgement raises KafkaError: everything
        in flight is abandoned and sent again from the recorded position (consumers drop
        the copies).
        """
        producer = self.producer
        if wait and self._in_flight and producer is not None:
            self._await_acks(producer, sum(len(f) for _, _, f in self._in_flight), self._in_flight[0][0])
        elif wait_oldest and self._in_flight:
            oldest_start, _, oldest_futures = self._in_flight[0]
            self._await_futures(oldest_start, oldest_futures)
        recorded = None
        while self._in_flight:
            _, last, futures = self._in_flight[0]
            if not wait and not all(f.is_done for f in futures):
                break
            try:
                for future in futures:
                    future.get()  # raises if Kafka did not acknowledge: the position stays put
            except KafkaError:
                self._in_flight.clear()
                raise
            self._in_flight.popleft()
            self.published += len(futures)
            RELAY_PUBLISHED.inc(len(futures))
            recorded = last
        if recorded is not None:
            if self.pause_before_tracking:
                time.sleep(self.pause_before_tracking)
            try:
                self.tracking.insert_tracking(Tracking(self.name, recorded))
            except IntegrityError:
                # Only if a second relay on the same topic got there first: harmless, but say so.
                log.warning("position %d already recorded for %s: is another relay running?", recorded, self.name)
            log.debug("Kafka acknowledged everything up to position %d", recorded)
            self._recorded = max(self._recorded, recorded)
            RELAY_POSITION.set(self._recorded)
        return recorded if recorded is not None else self.position()

    def catch_up(self, stop: Callable[[], bool] = lambda: False) -> int:
        """Publish until nothing is left, batches pipelined; returns the position reached."""
        while not stop() and self.send_next_batch():
            self.complete(wait_oldest=len(self._in_flight) >= self.max_batches_in_flight)
        position = self.complete(wait=True)
        self.report_lag(force=True)
        return position

    def report_lag(self, force: bool = False) -> None:
        """Refresh the position and lag gauges (at most every `lag_every` seconds unless forced):
        one query of the store's last id; the position is the one this relay recorded."""
        now = time.monotonic()
        if not force and now - self._lag_at < self.lag_every:
            return
        self._lag_at = now
        if force or not self._recorded:
            self._recorded = max(self._recorded, self.position())
        RELAY_POSITION.set(self._recorded)
        RELAY_LAG.set(max(0, (self.recorder.max_notification_id() or 0) - self._recorded))

    def _complaint_keys(self, producer: KafkaProducer) -> Callable[[Any], tuple[bytes, int]]:
        """A stored originator id's message key (the complaint id's text) and Kafka partition,
        computed once per complaint.

        The partition is Kafka's default for the key: the same murmur2 hash as every Kafka
        client's default partitioner (kafka-python's own function), so a complaint's
        partition is the one any producer would pick; kafka-python computes it in pure
        Python on every send, about a fifth of the cost.
        """
        partitions = sorted(producer.partitions_for(self.topic))
        if len(partitions) != self._partition_count:
            self._complaints.clear()  # the topic grew: keys move (see docs/bus.md)
            self._partition_count = len(partitions)
        cache, convert = self._complaints, self.read_rows.convert_id
        if len(cache) > 200_000:
            cache.clear()

        def complaint_of(originator_id: Any) -> tuple[bytes, int]:
            found = cache.get(originator_id)
            if found is None:
                key = str(convert(originator_id)).encode()
                found = cache[originator_id] = (key, partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)])
            return found

        return complaint_of

    def _await_futures(self, start: int, futures: list[Any]) -> None:
        """Wait for one batch's acknowledgements, saying so while Kafka keeps us waiting."""
        waited = 0.0
        for future in futures:
            while not future.is_done:
                try:
                    future.get(timeout=self.ack_warning_after)
                except KafkaTimeoutError:
                    if future.is_done:
                        break  # the send itself timed out: complete() raises it
                    waited += self.ack_warning_after
                    log.warning("Kafka has not acknowledged %d events after position %d for %.0fs; still "
                                "waiting (commands are still accepted)", len(futures), start, waited)
                except KafkaError:
                    break  # failed: complete() raises it
        if waited:
            log.info("Kafka acknowledged after %.0fs; relay resumed at position %d", waited, start)

    def _await_acks(self, producer: KafkaProducer, count: int, start: int) -> None:
        """Wait for the batch's acknowledgements, saying so while Kafka keeps us waiting.

        The producer retries by itself until its delivery timeout; then the futures fail.
        """
        waited = 0.0
        while True:
            try:
                producer.flush(timeout=self.ack_warning_after)
                break
            except KafkaTimeoutError:
                waited += self.ack_warning_after
                log.warning("Kafka has not acknowledged %d events after position %d for %.0fs; still "
                            "waiting (commands are still accepted)", count, start, waited)
        if waited:
            log.info("Kafka acknowledged after %.0fs; relay resumed at position %d", waited, start)

    def drop_producer(self) -> None:
        """Forget the producer after a failure: an idempotent producer whose batches expired
        must not carry on with stale sequence numbers, so the next attempt starts afresh."""
        self._in_flight.clear()  # resent from the recorded position
        if self.producer is not None:
            try:
                self.producer.close(timeout=1)
            except Exception as error:  # closing a broken producer may fail too
                log.debug("closing the failed producer: %s", error)
            self.producer = None

    def run(
        self,
        stop: Callable[[], bool] = lambda: False,
        idle_sleep: float = 0.05,
        on_batch: Callable[[int, int], None] | None = None,
        report_every: float = 10.0,
    ) -> None:
        """Relay until `stop()` says so; Kafka failures back off and retry, never skip."""
        backoff, failing_since = Backoff(stop), None
        self.trouble = "starting"
        last_report, sent_at_report = time.monotonic(), self.published
        self.report_lag(force=True)
        log.info("relay to topic %s starts after position %d (lag %d)", self.topic, self.position(), self.lag())
        try:
            while not stop():
                try:
                    covered = self.send_next_batch()
                    # Wait only when the pipeline is full, or when there is nothing more to send.
                    self.complete(wait=not covered, wait_oldest=len(self._in_flight) >= self.max_batches_in_flight)
                    self.report_lag()
                except KafkaError as error:
                    self.drop_producer()
                    failing_since = failing_since or time.monotonic()
                    self.trouble = f"Kafka to acknowledge ({type(error).__name__}: {error})"
                    log.warning(
                        "Kafka did not acknowledge (%s: %s); commands are still accepted, retrying "
                        "from position %d in %.1fs", type(error).__name__, error, self.position(), backoff.seconds,
                    )
                    backoff.wait()
                    continue
                except PersistenceError as error:
                    failing_since = failing_since or time.monotonic()
                    self.trouble = f"the event store ({type(error).__name__}: {error})"
                    log.warning("cannot read the event store (%s: %s); retrying in %.1fs",
                                type(error).__name__, error, backoff.seconds)
                    backoff.wait()
                    continue
                if failing_since is not None:
                    log.info("publishing again after %.1fs; relay resumed at position %d",
                             time.monotonic() - failing_since, self.position())
                    failing_since = None
                backoff.reset()
                self.trouble = None
                if on_batch and covered:
                    on_batch(covered, self.position())
                now = time.monotonic()
                if now - last_report >= report_every and self.published != sent_at_report:
                    log.info("published %d events in %.0fs; position %d, lag %d",
                             self.published - sent_at_report, now - last_report, self.position(), self.lag())
                    last_report, sent_at_report = now, self.published
                if not covered:
                    pause(idle_sleep, stop)
        finally:
            self.close()

    def close(self) -> None:
        """Wait for what is in flight, record it, close the producer."""
        if self.producer is not None:
            try:
                self.complete(wait=True)  # record what Kafka has, so a restart resends less
            except KafkaError as error:
                log.warning("stopping with unacknowledged events (%s); they are sent again on restart", error)
            self.producer.close(timeout=10)
            self.producer = None
        try:
            self.report_lag(force=True)
        except PersistenceError as error:  # the store is away: the gauges keep their last values
            log.debug("lag unknown at stop: %s", error)
        log.info("relay stopped at position %d (%d events published this run)", self.position(), self.published)
