#!/usr/bin/env python3
"""Readiness probe for the local Kafka broker started by ``scripts/kafka``.

"Ready" means the broker can do what the tests need, not merely that its
port accepts connections:

1. an admin client bootstraps and ``describe_cluster()`` reports a broker
   and an active controller;
2. the scratch topic ``__readiness_probe`` exists (created if missing, one
   partition, replication factor 1) and has a leader;
3. one record is produced with ``acks='all'`` (idempotent producer);
4. a consumer in a *fresh* consumer group subscribes, reads that record back
   and commits its offset synchronously (this exercises the group
   coordinator and ``__consumer_offsets``, the slowest part of a cold start),
   and the committed offset is read back.

The whole sequence is retried until it succeeds or ``--timeout`` expires.
Exit status: 0 ready, 1 not ready (reason on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid

PROBE_TOPIC = "__readiness_probe"


def _log(msg: str) -> None:
    print(f"kafka_ready: {msg}", file=sys.stderr, flush=True)


class NotReady(Exception):
    pass


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def probe_once(bootstrap: str, budget_s: float) -> str:
    """One full readiness round; returns a summary or raises."""
    # Imported lazily so that --help works without kafka-python installed.
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    deadline = time.monotonic() + budget_s

    def left_ms(cap_s: float = 30.0) -> int:
        rem = deadline - time.monotonic()
        if rem <= 0:
            raise NotReady("attempt budget exhausted")
        return max(500, int(min(rem, cap_s) * 1000))

    common = dict(
        bootstrap_servers=bootstrap, client_id="kafka-ready-probe", reconnect_backoff_max_ms=1000
    )

    admin = KafkaAdminClient(
        **common, bootstrap_timeout_ms=left_ms(5), request_timeout_ms=left_ms(10)
    )
    try:
        cluster = admin.describe_cluster()
        brokers = cluster.get("brokers") or []
        controller = cluster.get("controller_id", -1)
        if not brokers:
            raise NotReady(f"describe_cluster returned no brokers: {cluster}")
        if controller is None or controller < 0:
            raise NotReady(f"no active controller yet: {cluster}")
        cluster_id = cluster.get("cluster_id")

        try:
            admin.create_topics(
                {
                    PROBE_TOPIC: {
                        "num_partitions": 1,
                        "replication_factor": 1,
                        "configs": {"retention.ms": "3600000"},
                    }
                },
                timeout_ms=left_ms(10),
            )
        except TopicAlreadyExistsError:
            pass
        admin.wait_for_topics([PROBE_TOPIC], timeout_ms=left_ms(10))
    finally:
        admin.close()

    token = uuid.uuid4().hex.encode()
    t0 = time.monotonic()
    producer = KafkaProducer(
        **common,
        acks="all",
        enable_idempotence=True,
        bootstrap_timeout_ms=left_ms(5),
        request_timeout_ms=left_ms(10),
        max_block_ms=left_ms(10),
    )
    try:
        meta = producer.send(PROBE_TOPIC, key=b"probe", value=token).get(
            timeout=left_ms(15) / 1000
        )
        producer.flush(timeout=left_ms(5) / 1000)
    finally:
        producer.close(timeout=5)

    group_id = f"kafka-ready-{uuid.uuid4().hex[:12]}"
    tp = TopicPartition(PROBE_TOPIC, meta.partition)
    consumer = KafkaConsumer(
        **common,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        bootstrap_timeout_ms=left_ms(5),
        request_timeout_ms=left_ms(15),
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    )
    try:
        consumer.subscribe([PROBE_TOPIC])
        found = False
        while not found:
            left_ms()  # raises when the budget is gone
            batches = consumer.poll(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    if rec.value == token:
                        found = True
        consumer.commit(timeout_ms=left_ms(15))
        committed = consumer.committed(tp, timeout_ms=left_ms(10))
        if committed is None or committed <= meta.offset:
            raise NotReady(
                f"committed offset {committed} does not cover produced offset {meta.offset}"
            )
    finally:
        consumer.close(autocommit=False, timeout_ms=5000)
    rtt_ms = (time.monotonic() - t0) * 1000

    # Best effort: do not let probe groups pile up on a long-lived broker.
    try:
        admin = KafkaAdminClient(**common, bootstrap_timeout_ms=3000, request_timeout_ms=5000)
        try:
            admin.delete_groups([group_id])
        finally:
            admin.close()
    except Exception:
        pass

    return (
        f"cluster_id={cluster_id} brokers={len(brokers)} controller={controller} "
        f"round_trip_ms={rtt_ms:.0f}"
    )


def wait_ready(bootstrap: str, timeout_s: float, pid: int | None, verbose: bool) -> int:
    start = time.monotonic()
    deadline = start + timeout_s
    attempt = 0
    last_error = "no attempt made"
    while True:
        attempt += 1
        if not _pid_alive(pid):
            _log(f"broker process {pid} exited; giving up (last error: {last_error})")
            return 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            summary = probe_once(bootstrap, budget_s=remaining)
        except Exception as exc:  # any failure means "not ready yet"
            text = str(exc) or repr(exc)
            name = type(exc).__name__
            last_error = text if text.startswith(name) else f"{name}: {text}"
            if verbose:
                _log(f"attempt {attempt} failed after {time.monotonic() - start:.1f}s: {last_error}")
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            continue
        print(
            f"kafka ready at {bootstrap} after {time.monotonic() - start:.1f}s "
            f"({attempt} attempt{'s' if attempt > 1 else ''}): {summary}",
            flush=True,
        )
        return 0
    _log(
        f"Kafka at {bootstrap} not ready after {timeout_s:g}s "
        f"({attempt - 1} attempt{'' if attempt == 2 else 's'}); last error: {last_error}"
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Wait until a Kafka broker is really serving: describe_cluster, then a "
            f"produce/consume/commit round trip on topic {PROBE_TOPIC!r} with a fresh "
            "consumer group. Exit 0 when ready, 1 otherwise."
        )
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
        help="bootstrap servers HOST:PORT (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:19092)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to keep trying (default: 120)"
    )
    parser.add_argument(
        "--pid", type=int, default=None,
        help="broker process id; give up at once if it exits (used by scripts/kafka)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="report every failed attempt and show kafka-python warnings",
    )
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")

    # kafka-python logs connection-refused noise while the broker boots.
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL)
    logging.getLogger("kafka").setLevel(logging.WARNING if args.verbose else logging.CRITICAL + 1)

    try:
        import kafka  # noqa: F401
    except ImportError:
        _log(f"kafka-python is not importable by {sys.executable}; set PYTHON to the project venv")
        return 1
    return wait_ready(args.bootstrap, args.timeout, args.pid, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
