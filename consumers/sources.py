"""Where a read node's events come from: a Kafka topic, or the event store's log in-process.

Both give a read node the same thing: raw envelope messages with their source position,
and the positions to store once the batch is applied. Positions are "the next one to
read" per partition (Kafka's convention; the log is partition 0), kept by the read node in
DuckDB, the source of truth; Kafka's consumer-group offsets are never used.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aggregates.envelope import PUBLISHED_TOPIC_PREFIXES
from consumers.stored_events import NotificationRows, wire_writer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    partition: int
    offset: int  # Kafka offset, or the notification id for the log
    key: bytes | None
    value: bytes
    error: str | None = None  # set when the source could not even produce the bytes


@dataclass
class Polled:
    """One poll's messages, column-wise (cheaper than an object per message)."""

    values: list[bytes]
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    next_positions: dict[int, int]  # partition -> next position to read, after this batch
    errors: dict[int, str] = field(default_factory=dict)  # index -> why the source could not give bytes

    @classmethod
    def of(cls, messages: Sequence[Message], next_positions: dict[int, int]) -> Polled:
        return cls([m.value for m in messages], [m.partition for m in messages], [m.offset for m in messages],
                   [m.key for m in messages], next_positions,
                   {i: m.error for i, m in enumerate(messages) if m.error is not None})

    @classmethod
    def empty(cls) -> Polled:
        return cls([], [], [], [], {})

    def __len__(self) -> int:
        return len(self.values)

    def extend(self, later: Polled) -> Polled:
        """This poll followed by a later one (positions: the later one's where it has them)."""
        offset = len(self.values)
        return Polled(self.values + later.values, self.partitions + later.partitions, self.offsets + later.offsets,
                      self.keys + later.keys, self.next_positions | later.next_positions,
                      self.errors | {offset + i: e for i, e in later.errors.items()})

    def message(self, index: int) -> Message:
        return Message(self.partitions[index], self.offsets[index], self.keys[index], self.values[index],
                       self.errors.get(index))


@dataclass
class DeadLetter:
    message: Message
    stage: str  # "envelope", or the name of the projector that failed
    error: str
    complaint_id: str | None = None
    complaint_version: int | None = None


class Source(Protocol):
    name: str  # identifies the stored positions, e.g. "kafka:complaints.events" or "log"
    first_position: int  # where a partition starts (Kafka offsets 0, notification ids 1)

    def start(self, positions: dict[int, int]) -> None:
        """Begin reading at the given next positions (missing partitions: from the start)."""

    def poll(self, max_records: int, timeout: float) -> Polled:
        """Up to max_records messages, waiting up to timeout seconds for the first."""

    def end_positions(self) -> dict[int, int]:
        """The next position each partition will be written at (for lag)."""

    def publish_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Copy dead letters somewhere outside the read node (or do nothing)."""

    def close(self) -> None: ...


class TopicMissing(RuntimeError):
    """The event topic does not exist (yet): the relay creates it."""


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dead-letter"


def lag(ends: dict[int, int], positions: dict[int, int], first: int = 0) -> int:
    """Messages between the stored next positions and the ends (an upper bound where ids have gaps)."""
    return sum(max(0, end - positions.get(partition, first)) for partition, end in ends.items())


class LogSource:
    """Follows the event store's notification log in-process (the embedded default).

    Reads the rows after the stored position as the relay does (plain tuples, the
    envelope spliced out of the stored JSON by `stored_events`); ids may have gaps on
    PostgreSQL, so reads are "greater than", never "next id".
    """

    name = "log"
    first_position = 1

    def __init__(self, recorder: Any, mapper: Any, idle_sleep: float = 0.05) -> None:
        self.recorder = recorder
        self.read_rows = NotificationRows(recorder)
        self.write = wire_writer(mapper)
        self.idle_sleep = idle_sleep
        self.next_id = 1
        self.woken = threading.Event()

    def start(self, positions: dict[int, int]) -> None:
        self.next_id = max(1, positions.get(0, 1))

    def wake(self) -> None:
        """Poll now rather than after the idle sleep (e.g. right after a command was saved)."""
        self.woken.set()

    def poll(self, max_records: int, timeout: float) -> Polled:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.read_rows(self.next_id - 1, max_records)
            if rows or time.monotonic() >= deadline:
                break
            self.woken.wait(min(self.idle_sleep, max(0.0, deadline - time.monotonic())))
            self.woken.clear()
        messages = []
        convert_id, prefix = self.read_rows.convert_id, PUBLISHED_TOPIC_PREFIXES
        for position, originator_id, version, topic, state in rows:
            if not topic.startswith(prefix):
                continue
            key = str(convert_id(originator_id)).encode()
            try:
                messages.append(Message(0, position, key, self.write(topic, key, version, position, state)))
            except Exception as error:  # a stored event we cannot even encode: dead letter
                messages.append(Message(0, position, key, bytes(state),
                                        error=f"cannot encode stored event: {type(error).__name__}: {error}"))
        if rows:
            self.next_id = rows[-1][0] + 1
        return Polled.of(messages, {0: self.next_id})

    def end_positions(self) -> dict[int, int]:
        return {0: (self.recorder.max_notification_id() or 0) + 1}

    def publish_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        pass  # the read node's dead_letters table is the record

    def close(self) -> None:
        pass


@dataclass
class KafkaSource:
    """Reads every partition of the topic by manual assignment, from positions it is given.

    A thread polls the next batch while the read node applies the current one (kafka-python
    unpacks records in Python; DuckDB works outside the GIL), so the two overlap. Batches
    queue in order; the read node stores positions only with the batch they belong to.
    """

    bootstrap: str
    topic: str
    client_id: str = "complaints-read-node"
    fetch_max_wait_ms: int = 50
    request_timeout_ms: int = 5_000  # lag and metadata calls: a down broker must not stall the loop
    prefetch: bool = True
    name: str = field(init=False)
    first_position: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.name = f"kafka:{self.topic}"
        self.consumer: Any = None
        self.producer: Any = None
        self.metadata: Any = None  # a consumer of its own for end offsets (clients are not thread-safe)
        self.partitions: list[Any] = []
        self.max_records = 20_000
        # The thread polls in chunks, so the read node starts on the first while the next
        # arrive, and takes whatever has queued up (up to its batch size) in one batch.
        self.prefetch_chunk = 2_000
        self._queue: queue.Queue[Polled | BaseException] = queue.Queue(maxsize=32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _new_consumer(self) -> Any:
        from kafka import KafkaConsumer

        return KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=None,  # no group: positions live in DuckDB, not in Kafka
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a stored offset gone from the log: from the start
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            reconnect_backoff_max_ms=2_000,
            bootstrap_timeout_ms=10_000,
        )

    def start(self, positions: dict[int, int]) -> None:
        from kafka import TopicPartition

        self._stop_prefetch()
        if self.consumer is None:
            self.consumer = self._new_consumer()
        if self.metadata is None:  # for end offsets (lag): connected now, not on the first ask
            self.metadata = self._new_consumer()
        numbers = self._partitions()
        self.partitions = [TopicPartition(self.topic, n) for n in numbers]
        self.consumer.assign(self.partitions)
        for tp in self.partitions:
            if tp.partition in positions:
                self.consumer.seek(tp, positions[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)
        log.info("reading %s partitions %s from %s", self.topic, numbers,
                 {n: positions.get(n, "start") for n in numbers})
        if self.prefetch:
            self._stop.clear()
            self._thread = threading.Thread(target=self._prefetch, name=f"prefetch-{self.topic}", daemon=True)
            self._thread.start()

    def _partitions(self) -> list[int]:
        # One look: a read node waits for a missing topic with the back-off of its own
        # start (ReadNode.open_when_up), which notices a stop request.
        found = self.consumer.partitions_for_topic(self.topic)
        if not found:
            raise TopicMissing(f"topic {self.topic} not found at {self.bootstrap}: start the relay "
                               "(it creates the topic) or check COMPLAINTS_TOPIC")
        return sorted(found)

    def _poll_now(self, max_records: int, timeout: float) -> Polled:
        records = self.consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        polled = Polled.empty()
        for tp, batch in records.items():
            if not batch:
                continue
            polled.values += [r.value or b"" for r in batch]
            polled.keys += [r.key for r in batch]
            polled.offsets += [r.offset for r in batch]
            polled.partitions += [tp.partition] * len(batch)
            polled.next_positions[tp.partition] = batch[-1].offset + 1
        return polled

    def _prefetch(self) -> None:
        while not self._stop.is_set():
            try:
                polled = self._poll_now(min(self.max_records, self.prefetch_chunk), 0.2)
            except BaseException as error:  # handed to the read node, which logs and retries
                polled = error  # type: ignore[assignment]
                time.sleep(0.5)
            if isinstance(polled, Polled) and not len(polled):
                continue
            while not self._stop.is_set():
                try:
                    self._queue.put(polled, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _stop_prefetch(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(30)
            self._thread = None
        while not self._queue.empty():  # polled ahead from positions that no longer hold
            self._queue.get_nowait()

    def poll(self, max_records: int, timeout: float) -> Polled:
        if not self.prefetch:
            return self._poll_now(max_records, timeout)
        self.max_records = max_records
        try:
            polled = self._queue.get(timeout=timeout)
        except queue.Empty:
            return Polled.empty()
        if isinstance(polled, BaseException):
            raise polled
        while len(polled) < max_records:  # and what else has arrived meanwhile, in order
            try:
                more = self._queue.queue[0]
            except IndexError:
                break
            if isinstance(more, BaseException) or len(polled) + len(more) > max_records:
                break
            self._queue.get_nowait()
            polled = polled.extend(more)
        return polled

    def end_positions(self) -> dict[int, int]:
        if self.metadata is None:
            self.metadata = self._new_consumer()
        ends = self.metadata.end_offsets(self.partitions, timeout_ms=self.request_timeout_ms)
        return {tp.partition: offset for tp, offset in ends.items()}

    def publish_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Copy each poison message to <topic>.dead-letter with its error in the headers."""
        if not letters:
            return
        if self.producer is None:
            from kafka import KafkaProducer

            self.producer = KafkaProducer(bootstrap_servers=self.bootstrap, client_id=f"{self.client_id}-dlq",
                                          acks="all", enable_idempotence=True, max_block_ms=10_000)
        topic = dead_letter_topic(self.topic)
        futures = [
            self.producer.send(topic, key=letter.message.key, value=letter.message.value, headers=[
                ("error", letter.error.encode()[:4000]),
                ("stage", letter.stage.encode()),
                ("source.topic", self.topic.encode()),
                ("source.partition", str(letter.message.partition).encode()),
                ("source.offset", str(letter.message.offset).encode()),
            ])
            for letter in letters
        ]
        self.producer.flush()
        for future in futures:
            future.get()  # not acknowledged: the batch is retried, the dead letter with it

    def close(self) -> None:
        self._stop_prefetch()
        for client in (self.consumer, self.metadata):
            if client is not None:
                client.close()
        self.consumer = self.metadata = None
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None
