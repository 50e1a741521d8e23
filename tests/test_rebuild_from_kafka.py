"""`complaints read-models rebuild --from kafka` against a real broker.

Complaints go in through `ComplaintDesk` on a SQLite store, the relay publishes them to a
topic of the test's own, and the CLI rebuilds a read file from that topic (the consumer
runner's catch-up). It must hold what `rebuild --from store` of the same store builds:
the same events and the same read models, hence the same figures.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from commands.demo import load_demo
from complaints.store import open_desk
from commands.desk import ComplaintDesk
from complaints.settings import Settings
from consumers.relay import Relay, ensure_topics, make_producer
from projections import queries
from tests.conftest import ROOT, backbone_env, store_events
from tests.test_rebuild import TABLES, rows

pytestmark = pytest.mark.kafka

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def cli_rebuild(env: dict[str, str], source: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "complaints.cli", "read-models", "rebuild", "--from", source, "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"rebuild --from {source} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_rebuild_from_kafka_equals_a_rebuild_from_the_store(
    tmp_path: Path, kafka_bootstrap: str, topic: str
) -> None:
    store = tmp_path / "events.sqlite"
    desk = open_desk(Settings(store="sqlite", sqlite_path=store))
    try:
        load_demo(desk, 30, end=NOW, progress=False)
        expected = store_events(desk)
        ensure_topics(kafka_bootstrap, topic, 3)
        relay = Relay(desk.recorder, desk.mapper, desk.factory.tracking_recorder(),
                      lambda: make_producer(kafka_bootstrap), topic, batch_size=50)
        while relay.publish_next_batch():
            pass
        relay.drop_producer()
        assert relay.position() == desk.recorder.max_notification_id()
    finally:
        desk.close()
    assert len({cid for cid, _, _ in expected}) == 30

    from_kafka, from_store = tmp_path / "kafka.duckdb", tmp_path / "store.duckdb"
    out = cli_rebuild(backbone_env(store, from_kafka, topic, kafka_bootstrap), "kafka")
    assert f"from {len(expected):,} events of 30 complaints" in out, out
    cli_rebuild(backbone_env(store, from_store, topic), "store")

    kafka_db = duckdb.connect(str(from_kafka), read_only=True)
    store_db = duckdb.connect(str(from_store), read_only=True)
    try:
        versions = "SELECT complaint_id::VARCHAR, complaint_version FROM events ORDER BY ALL"
        kafka_events = kafka_db.execute(versions).fetchall()
        assert kafka_events == store_db.execute(versions).fetchall()
        assert kafka_events == sorted((cid, version) for cid, version, _ in expected)
        everything = "SELECT * EXCLUDE (applied_at) FROM events ORDER BY position"  # positions too
        assert kafka_db.execute(everything).fetchall() == store_db.execute(everything).fetchall()
        for table in TABLES:
            assert rows(kafka_db, table) == rows(store_db, table), table
        figures = queries.dashboard(kafka_db, now=NOW)
        assert figures == queries.dashboard(store_db, now=NOW)
        # A read node on the Kafka file goes on from the topic's end (next offsets sum to the count).
        positions = kafka_db.execute(
            "SELECT source, sum(next_position) FROM consumer_positions GROUP BY source").fetchall()
        assert positions == [(f"kafka:{topic}", len(expected))]
    finally:
        kafka_db.close()
        store_db.close()
