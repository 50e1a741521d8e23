"""The Kafka broker the suite runs against: a real single-node KRaft broker.

The broker comes from KAFKA_BOOTSTRAP_SERVERS (set by scripts/test or CI); run alone,
the session fixture starts one itself with scripts/kafka on ports of its own (state in
.run/kafka-test, jars shared with .run/kafka/lib) and stops it at the end of the session
(KAFKA_KEEP_RUNNING=1 keeps it). A broker that cannot start fails the tests: never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.conftest import KAFKA_SCRIPT, ROOT, _fixture_broker_env


pytestmark = pytest.mark.kafka

PARTITIONS = 3
KEYS = [f"complaint-{n}" for n in range(10)]
MESSAGES = 100


def test_keyed_messages_arrive_once_and_in_order_per_key(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient

    topic = f"test-broker-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics(
            {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
            wait_for_metadata=True,
        )

        producer = KafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
        )
        sent: dict[tuple[str, int], tuple[int, int]] = {}  # (key, seq) -> (partition, offset)
        try:
            futures = []
            next_seq: Counter[str] = Counter()
            for n in range(MESSAGES):
                key = KEYS[n % len(KEYS)]
                seq = next_seq[key]
                next_seq[key] += 1
                futures.append(((key, seq), producer.send(topic, key=key.encode(), value=f"{key}:{seq}".encode())))
            producer.flush(timeout=30)
            for ident, future in futures:
                meta = future.get(timeout=30)
                sent[ident] = (meta.partition, meta.offset)
        finally:
            producer.close(timeout=10)
        assert len(sent) == MESSAGES

        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
        )
        received: list[tuple[str, int, int, int]] = []  # (key, seq, partition, offset)
        try:
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = consumer.end_offsets(partitions)
            assert sum(end.values()) == MESSAGES, end

            deadline = time.monotonic() + 30
            while len(received) < MESSAGES and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for rec in records:
                        key, _, seq = rec.value.decode().rpartition(":")
                        assert rec.key.decode() == key
                        received.append((key, int(seq), tp.partition, rec.offset))
            # Anything beyond the 100 would be a duplicate: give it a chance to show up.
            for records in consumer.poll(timeout_ms=1000).values():
                for rec in records:
                    key, _, seq = rec.value.decode().rpartition(":")
                    received.append((key, int(seq), rec.partition, rec.offset))
        finally:
            consumer.close()
    finally:
        try:
            admin.delete_topics([topic])
        except Exception:
            pass
        admin.close()

    # Exactly once: every (key, seq) produced arrives, none twice, nothing else.
    counts = Counter((key, seq) for key, seq, _, _ in received)
    duplicates = {ident: c for ident, c in counts.items() if c > 1}
    assert not duplicates, f"duplicated messages: {duplicates}"
    assert set(counts) == set(sent), (
        f"missing {sorted(set(sent) - set(counts))[:10]}, unexpected {sorted(set(counts) - set(sent))[:10]}"
    )
    assert len(received) == MESSAGES

    # Each message sits where the producer was told it was written.
    for key, seq, partition, offset in received:
        assert sent[(key, seq)] == (partition, offset)

    # Per-key order: one partition per key, and sequence numbers in production order.
    by_key: dict[str, list[int]] = defaultdict(list)
    key_partitions: dict[str, set[int]] = defaultdict(set)
    for key, seq, partition, _ in received:
        by_key[key].append(seq)
        key_partitions[key].add(partition)
    for key in KEYS:
        assert len(key_partitions[key]) == 1, f"{key} spread over {key_partitions[key]}"
        assert by_key[key] == list(range(MESSAGES // len(KEYS))), f"{key} out of order: {by_key[key]}"
    # The keys really were spread over the partitions (murmur2 of these keys is fixed).
    assert len({p for ps in key_partitions.values() for p in ps}) > 1


def test_status_reports_the_running_broker(kafka_bootstrap: str) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        # Started outside the tests (scripts/test, CI): scripts/kafka's defaults,
        # pointed at the configured port.
        env = dict(os.environ)
        env["KAFKA_PORT"] = kafka_bootstrap.split(",")[0].rpartition(":")[2]
        env.setdefault("PYTHON", sys.executable)
        state_dir = Path(env.get("KAFKA_STATE_DIR", ROOT / ".run" / "kafka"))
        if not (state_dir / "kafka.pid").exists():
            message = f"{kafka_bootstrap} is not a broker managed by scripts/kafka"
            if os.environ.get("CI"):
                pytest.fail(message)  # CI starts its broker with scripts/kafka: this must not happen
            pytest.skip(message)
    else:
        env = _fixture_broker_env()
    done = subprocess.run(
        [str(KAFKA_SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    port = kafka_bootstrap.split(",")[0].rpartition(":")[2]
    assert done.stdout.strip().splitlines()[-1] == f"127.0.0.1:{port}"


def test_readiness_probe_has_usage_text() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "kafka_ready.py"), "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--bootstrap" in done.stdout and "--timeout" in done.stdout
