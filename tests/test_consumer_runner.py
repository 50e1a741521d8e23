"""The consumer runner on its own: batches, dedupe, positions, dead letters, rebuilds, status.

Fed by the in-process notification log (the embedded default) and by a list of raw
messages (to put duplicates and poison exactly where a test wants them). Kafka is tested
for real in test_relay.py and test_backbone_faults.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from complaints.store import open_desk
from commands.desk import ComplaintDesk
from complaints.settings import Settings
from aggregates.envelope import parse
from consumers.stored_events import wire_encoder
from consumers.read_node import ReadNode, load_projectors
from consumers.sources import DeadLetter, LogSource, Message, Polled
from tests.conftest import FakeClock, assert_events_equal_store, send_commands, store_events


class ListSource:
    """A source over a fixed list of messages on one partition (offset = index)."""

    name = "list"
    first_position = 0

    def __init__(self, values: Sequence[bytes], per_poll: int = 1_000) -> None:
        self.values = list(values)
        self.per_poll = per_poll
        self.next = 0

    def start(self, positions: dict[int, int]) -> None:
        self.next = positions.get(0, 0)

    def poll(self, max_records: int, timeout: float) -> Polled:
        end = min(len(self.values), self.next + min(max_records, self.per_poll))
        messages = [Message(0, i, b"k", self.values[i]) for i in range(self.next, end)]
        self.next = end
        return Polled.of(messages, {0: end} if messages else {})

    def end_positions(self) -> dict[int, int]:
        return {0: len(self.values)}

    def publish_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        pass

    def close(self) -> None:
        pass


class Counting:
    """A projector that counts events per complaint, optionally raising on one complaint.

    It writes its rows before raising, like a projector that fails half way: the runner
    must roll that back.
    """

    def __init__(self, name: str = "counting", poison: str | None = None, schema_version: int = 1,
                 droppable: bool = True) -> None:
        self.name = name
        self.schema_version = schema_version
        self.poison = poison
        if droppable:
            self.drop_schema = self._drop

    @property
    def table(self) -> str:
        return f"{self.name}_counts"

    def create_schema(self, db: duckdb.DuckDBPyConnection) -> None:
        db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (complaint_id VARCHAR PRIMARY KEY, n INTEGER)")

    def _drop(self, db: duckdb.DuckDBPyConnection) -> None:
        db.execute(f"DROP TABLE IF EXISTS {self.table}")

    def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        db.register("_counting_batch", batch)
        db.execute(f"""
            INSERT INTO {self.table} SELECT complaint_id, count(*) FROM _counting_batch GROUP BY complaint_id
            ON CONFLICT (complaint_id) DO UPDATE SET n = n + excluded.n""")
        db.unregister("_counting_batch")
        if self.poison and self.poison in batch["complaint_id"].to_pylist():
            raise ValueError(f"cannot count complaint {self.poison}")

    def counts(self, db: duckdb.DuckDBPyConnection) -> dict[str, int]:
        return dict(db.execute(f"SELECT complaint_id, n FROM {self.table}").fetchall())


@pytest.fixture
def app(sqlite_settings: Settings, clock: FakeClock) -> Iterator[ComplaintDesk]:
    desk = open_desk(sqlite_settings, clock=clock)
    yield desk
    desk.close()


@pytest.fixture
def loaded(app: ComplaintDesk) -> ComplaintDesk:
    send_commands(app, 40, seed=3)
    return app


def wire_messages(app: ComplaintDesk) -> list[bytes]:
    encode = wire_encoder(app.mapper)
    return [encode(n) for n in app.recorder.select_notifications(1, 100_000)]


def expected_counts(app: ComplaintDesk) -> dict[str, int]:
    counts: dict[str, int] = {}
    for complaint_id, _, _ in store_events(app):
        counts[complaint_id] = counts.get(complaint_id, 0) + 1
    return counts


def test_log_source_fills_the_event_log_with_every_stored_event(loaded: ComplaintDesk, tmp_path: Path) -> None:
    db_path = tmp_path / "read.duckdb"
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), batch_size=100) as node:
        applied = node.catch_up()
        assert applied == len(store_events(loaded))
        assert node.lag() == 0
        assert node.positions == {0: loaded.recorder.max_notification_id() + 1}
        # Envelopes land column for column.
        row = node.cursor().execute(
            "SELECT complaint_id::VARCHAR, event_type, payload->>'$.channel', actor FROM events ORDER BY position LIMIT 1"
        ).fetchone()
        first = parse(wire_messages(loaded)[0])
        assert row == (str(first.complaint_id), "Registered", first.payload["channel"], first.actor)
    assert_events_equal_store(db_path, loaded)


def test_positions_are_committed_with_the_batch_and_resume_after_restart(loaded: ComplaintDesk, tmp_path: Path) -> None:
    db_path = tmp_path / "read.duckdb"
    total = len(store_events(loaded))
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), batch_size=50) as node:
        node.poll_batch()
        node.poll_batch()
        assert node.count_events() == 100
    # A new process: starts at the stored position, applies only the rest.
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), batch_size=50) as node:
        assert node.positions == {0: 101}
        assert node.catch_up() == total - 100
    send_commands(loaded, 5, seed=99)
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper)) as node:
        assert node.catch_up() == len(store_events(loaded)) - total
    assert_events_equal_store(db_path, loaded)


def test_redelivered_messages_are_applied_once(loaded: ComplaintDesk, tmp_path: Path) -> None:
    values = wire_messages(loaded)
    # At-least-once: a relay crash re-sends a stretch, and a poll may hold both copies.
    redelivered = values[:30] + values[10:60] + values[50:] + values[-5:]
    counting = Counting()
    with ReadNode(tmp_path / "read.duckdb", ListSource(redelivered, per_poll=25), [counting]) as node:
        results = []
        while (result := node.poll_batch()).messages:
            results.append(result)
        assert sum(r.new_events for r in results) == len(values)
        assert sum(r.duplicates for r in results) == len(redelivered) - len(values)
        # The other projectors saw only new rows: each event counted once.
        assert counting.counts(node.cursor()) == expected_counts(loaded)


def test_poison_messages_go_to_dead_letters_and_the_rest_is_applied(loaded: ComplaintDesk, tmp_path: Path) -> None:
    values = wire_messages(loaded)
    good = json.loads(values[1])
    poison = [
        b"not json at all",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        json.dumps({**good, "complaint_version": "two"}).encode(),
        json.dumps({**good, "event_type": "Teleported"}).encode(),
        json.dumps({**good, "payload": {**good["payload"], "severity": "apocalyptic"}}).encode(),
    ]
    mixed = values[:20] + poison[:3] + values[20:40] + poison[3:] + values[40:]
    with ReadNode(tmp_path / "read.duckdb", ListSource(mixed, per_poll=30)) as node:
        node.catch_up()
        letters = node.cursor().execute(
            "SELECT source_position, stage, error, raw FROM dead_letters ORDER BY source_position").fetchall()
        status = node.status()
    assert [row[0] for row in letters] == [20, 21, 22, 43, 44, 45]
    assert {row[1] for row in letters} == {"envelope"}
    assert "not JSON" in letters[0][2]
    assert "complaint_version" in letters[3][2]
    assert "Teleported" in letters[4][2]
    assert "severity" in letters[5][2]
    assert letters[0][3] == poison[0]
    assert status.dead_letters == 6 and status.lag == 0
    assert_events_equal_store(tmp_path / "read.duckdb", loaded)


def test_a_failing_projector_loses_only_its_poison_event_and_stops_no_one(
        loaded: ComplaintDesk, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    values = wire_messages(loaded)
    victim = str(parse(values[7]).complaint_id)
    failing = Counting("failing", poison=victim)
    healthy = Counting("healthy")
    with ReadNode(tmp_path / "read.duckdb", ListSource(values, per_poll=200), [failing, healthy]) as node:
        node.catch_up()
        db = node.cursor()
        expected = expected_counts(loaded)
        assert healthy.counts(db) == expected
        # The failing projector has every other complaint, and none of its half-written rows.
        assert failing.counts(db) == {k: v for k, v in expected.items() if k != victim}
        letters = db.execute("SELECT stage, complaint_id, complaint_version, error FROM dead_letters").fetchall()
        assert {row[0] for row in letters} == {"failing"}
        assert {row[1] for row in letters} == {victim}
        assert len(letters) == expected[victim]  # each of its events, found one by one
        assert all("cannot count complaint" in row[3] for row in letters)
        # Each is logged with the correlation id of the command behind the event.
        logged = [r for r in caplog.records if r.name == "consumers.batching" and r.levelname == "ERROR"]
        assert len(logged) == len(letters)
        victims = {(e.complaint_version, e.correlation_id) for e in map(parse, values) if str(e.complaint_id) == victim}
        assert {(r.args[2], r.correlation_id) for r in logged} == victims  # type: ignore[attr-defined,index]
        status = {p.name: p.dead_letters for p in node.status().projectors}
        assert status == {"events": 0, "failing": expected[victim], "healthy": 0}
    assert_events_equal_store(tmp_path / "read.duckdb", loaded)


def test_schema_version_change_rebuilds_from_the_local_event_log(loaded: ComplaintDesk, tmp_path: Path) -> None:
    db_path = tmp_path / "read.duckdb"
    source = LogSource(loaded.recorder, loaded.mapper)
    with ReadNode(db_path, source, [Counting()]) as node:
        node.catch_up()
    # Version 2 of the projector: dropped and rebuilt from `events` on start, no source read.
    v2 = Counting(schema_version=2)
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), [v2]) as node:
        assert node.positions == {0: loaded.recorder.max_notification_id() + 1}
        assert v2.counts(node.cursor()) == expected_counts(loaded)
        versions = dict(node.cursor().execute("SELECT projector, schema_version FROM read_model_meta").fetchall())
        assert versions == {"events": 1, "counting": 2}
    # A projector added later is built from the local event log too.
    late = Counting("late")
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), [v2, late]) as node:
        assert late.counts(node.cursor()) == expected_counts(loaded)


def test_schema_change_without_drop_hook_or_of_the_event_log_rebuilds_from_the_source(
    loaded: ComplaintDesk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path = tmp_path / "read.duckdb"
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), [Counting(droppable=False)]) as node:
        node.catch_up()
    v2 = Counting(schema_version=2, droppable=False)
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), [v2]) as node:
        assert node.positions == {} and node.count_events() == 0  # everything dropped
        node.catch_up()
        assert v2.counts(node.cursor()) == expected_counts(loaded)
    from projections.event_log import EventLog

    monkeypatch.setattr(EventLog, "schema_version", 2)
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), [v2]) as node:
        assert node.positions == {} and node.count_events() == 0
        node.catch_up()
    assert_events_equal_store(db_path, loaded)


def test_background_thread_follows_new_commands(app: ComplaintDesk, tmp_path: Path) -> None:
    node = ReadNode(tmp_path / "read.duckdb", LogSource(app.recorder, app.mapper), poll_timeout=0.05)
    node.start_background()
    try:
        send_commands(app, 10, seed=5)
        expected = len(store_events(app))
        assert node.wait_for(lambda: node.count_events() == expected, timeout=20), node.status()
        send_commands(app, 3, seed=6)
        expected = len(store_events(app))
        assert node.wait_for(lambda: node.count_events() == expected, timeout=20), node.status()
        assert node.status().lag == 0
    finally:
        node.stop()
        node.close()
    assert_events_equal_store(tmp_path / "read.duckdb", app)


def test_run_stops_on_request_and_leaves_a_status_file(loaded: ComplaintDesk, tmp_path: Path) -> None:
    stop = threading.Event()
    node = ReadNode(tmp_path / "read.duckdb", LogSource(loaded.recorder, loaded.mapper), status_every=0)
    thread = threading.Thread(target=node.run, kwargs={"stop": stop})
    thread.start()
    assert node.wait_for(lambda: node.db is not None and node.positions.get(0, 0) > 1, timeout=20)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    node.close()
    status = json.loads((tmp_path / "read.duckdb.status.json").read_text())
    assert status["lag"] == 0 and status["events"] == len(store_events(loaded))


def test_load_projectors_by_name() -> None:
    (projector,) = load_projectors("projections.event_log:EventLog")
    assert projector.name == "events"
    with pytest.raises(ValueError, match="module:Class"):
        load_projectors("projections.event_log")


def test_the_event_log_inserts_in_bulk_only() -> None:
    """The projection path stays column-wise: no executemany, no per-row INSERT loops."""
    root = Path(__file__).resolve().parent.parent
    for path in ("projections/event_log.py", "consumers/batching.py", "consumers/bookkeeping.py",
                 "consumers/dead_letters.py", "consumers/decoding.py"):
        text = (root / path).read_text()
        assert "executemany" not in text, path
        assert "VALUES (?" not in text, path


def test_cli_commands_explain_themselves() -> None:
    from complaints.cli import app as cli

    runner = CliRunner()
    for command in ("relay", "read-node", "positions", "replay"):
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_replay_and_positions_cli_on_the_embedded_log(
    loaded: ComplaintDesk, tmp_path: Path, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from complaints.cli import app as cli
    from complaints.settings import get_settings

    db_path = tmp_path / "read.duckdb"
    monkeypatch.setenv("COMPLAINTS_STORE", "sqlite")
    monkeypatch.setenv("COMPLAINTS_SQLITE_PATH", str(sqlite_settings.sqlite_path))
    monkeypatch.setenv("COMPLAINTS_READ_DB", str(db_path))
    monkeypatch.delenv("COMPLAINTS_KAFKA_BOOTSTRAP", raising=False)
    get_settings.cache_clear()
    try:
        total = len(store_events(loaded))
        runner = CliRunner()
        result = runner.invoke(cli, ["replay", "--yes"])
        assert result.exit_code == 0, result.output
        assert f"replayed {total} events" in result.output
        again = runner.invoke(cli, ["replay", "--yes"])  # from scratch again: same count
        assert f"replayed {total} events" in again.output
        shown = runner.invoke(cli, ["positions", "--json"])
        assert shown.exit_code == 0, shown.output
        report = json.loads(shown.stdout)
        assert report["store"]["max_position"] == loaded.recorder.max_notification_id()
        assert report["read_node"]["events"] == total
        assert report["read_node"]["lag"] == 0
    finally:
        get_settings.cache_clear()


class Exploding(Counting):
    """Fails hard (not an event's fault) after `after` applies: a crash in the middle of a rebuild."""

    def __init__(self, after: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.after = after

    def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        if self.after <= 0:
            raise KeyboardInterrupt("simulated crash")  # BaseException: not isolated as poison
        self.after -= 1
        super().apply(db, batch)


def test_an_interrupted_rebuild_resumes_where_it_stopped(loaded: ComplaintDesk, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from projections.event_log import EventLog

    db_path = tmp_path / "read.duckdb"
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper)) as node:
        node.catch_up()
    original = EventLog.read_batches
    monkeypatch.setattr(EventLog, "read_batches",
                        staticmethod(lambda db, chunk_rows=50_000, after=0: original(db, 40, after)))
    node = ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), [Exploding(after=3)])
    with pytest.raises(KeyboardInterrupt):
        node.open()
    node.db.close()  # type: ignore[union-attr]
    with duckdb.connect(str(db_path), read_only=True) as db:
        (resume,) = db.execute(
            "SELECT next_position FROM consumer_positions WHERE source = 'rebuild:counting'").fetchone()
    assert resume and resume > 0  # three chunks committed, with how far they got
    fresh = Counting()
    with ReadNode(db_path, LogSource(loaded.recorder, loaded.mapper), [fresh]) as node:
        assert fresh.counts(node.cursor()) == expected_counts(loaded)  # resumed, nothing twice
        unfinished = node.cursor().execute(
            "SELECT count(*) FROM consumer_positions WHERE source LIKE 'rebuild:%'").fetchone()
        assert unfinished == (0,)


class TrickleSource(ListSource):
    """Messages that arrive one every `every` seconds from the first poll on, as a trickle
    of commands sends them; a poll returns what has arrived."""

    def __init__(self, values: Sequence[bytes], every: float) -> None:
        super().__init__(values)
        self.every = every
        self.since: float | None = None

    def poll(self, max_records: int, timeout: float) -> Polled:
        self.since = self.since or time.monotonic()
        self.per_poll = max(0, min(len(self.values), int((time.monotonic() - self.since) / self.every) + 1) - self.next)
        if not self.per_poll:
            time.sleep(min(timeout, self.every))
        return super().poll(max_records, timeout)


@pytest.mark.parametrize("linger", [0.0, 0.5])
def test_a_trickle_is_applied_a_few_batches_a_second_and_all_of_it(loaded: ComplaintDesk, tmp_path: Path,
                                                                   linger: float) -> None:
    """Each batch costs the read models a fixed time: with `linger`, events arriving 40 a
    second are gathered into a batch at most every `linger` seconds; nothing is lost."""
    values = wire_messages(loaded)[:60]  # 1.5 s of the trickle
    # The event log alone: its batches cost little, so without a linger each event would be one.
    node = ReadNode(tmp_path / "read.duckdb", TrickleSource(values, every=0.025), poll_timeout=0.05, linger=linger)
    batches: list[int] = []
    stop = threading.Event()
    thread = threading.Thread(target=node.run, kwargs={"stop": stop, "on_batch": lambda r: batches.append(r.messages)})
    started = time.monotonic()
    thread.start()
    try:
        assert node.wait_for(lambda: node.positions.get(0) == len(values), timeout=30)
        took = time.monotonic() - started
        assert node.count_events() == sum(batches) == len(values)
    finally:
        stop.set()
        thread.join(10)
        node.close()
    if linger:
        assert len(batches) <= took / linger + 1, (batches, took)
    else:  # the contrast: as they come, in many more batches
        assert len(batches) > 1.5 / 0.5 + 1, batches
