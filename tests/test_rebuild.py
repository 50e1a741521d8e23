"""Rebuilds: from the event store (fast and slow paths), from the local events, the swap.

A rebuilt file must hold what the live read node would (and what the oracle says), be a
read node's file the consumer runner can go on with, and replace the old file atomically.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from commands.desk import ComplaintDesk
from commands.models import MarkDuplicate
from complaints.settings import Settings
from consumers.stored_events import envelopes
from projections import queries
from projections.base import to_batch
from complaints.cli import app as cli_app
from projections.event_log import EventLog
from consumers.read_node import ReadNode
from consumers.rebuild import load_events, rebuild
from consumers.sources import LogSource
from tests.histories import Clock, START, history, steps
from tests.oracle import Oracle, canonical
from tests.test_read_models import POLICY, assert_same, deliver, last_instant, projectors, read_db, rich_plan
from tests.identity import OPERATOR

TABLES = ("complaint_facts", "sla_clocks", "workload_complaints", "workload_open_intervals",
          "workload_resolutions", "workload_handovers", "trend_complaints", "trend_ratings")


def sqlite_desk(folder: Path, **env: str) -> ComplaintDesk:
    settings = Settings(store="sqlite", sqlite_path=folder / "events.sqlite")
    return ComplaintDesk(settings.eventsourcing_env() | env, clock=Clock(START), sla_policy=POLICY)


def rows(db: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return db.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def with_a_duplicate(desk: ComplaintDesk) -> None:
    """Make sure a MarkedDuplicate (a UUID in the payload) is in the store."""
    notes = desk.recorder.select_notifications(1, 10_000)
    registered = [n.originator_id for n in notes if n.topic.endswith(".Registered")]
    for candidate in reversed(registered):
        complaint = desk.get_complaint(candidate)
        if complaint.status in ("received", "triaged", "assigned", "waiting_on_customer", "resolution_proposed"):
            desk.execute(candidate, MarkDuplicate(duplicate_of=registered[0]), OPERATOR)
            return


def test_the_fast_path_stores_what_the_envelopes_carry(tmp_path: Path) -> None:
    desk = sqlite_desk(tmp_path)
    history(rich_plan(11, 120), desk)
    with_a_duplicate(desk)
    db = read_db([])
    count = load_events(db, desk)
    stored = {r[0]: r[1:] for r in db.execute(
        "SELECT position, complaint_id::VARCHAR, complaint_version, event_type, event_version, occurred_at,"
        " recorded_at, actor, command_id, correlation_id, payload FROM events").fetchall()}
    notes = desk.recorder.select_notifications(1, 100_000)
    assert count == len(notes) == len(stored)
    seen = set()
    for note in notes:
        e = envelopes(desk.mapper, [note])[0]
        row = stored[note.id]
        seen.add(e.event_type)
        assert row[:9] == (str(e.complaint_id), e.complaint_version, e.event_type, e.event_version,
                           e.occurred_at, e.recorded_at, e.actor, e.command_id, e.correlation_id)
        assert json.loads(row[9]) == e.payload, e.event_type
    assert {"Registered", "Triaged", "CustomerReplied", "Resolved", "MarkedDuplicate"} <= seen
    # The key is back: the runner's ON CONFLICT dedupe works on the rebuilt table.
    again = EventLog().insert_new(db, to_batch(envelopes(desk.mapper, notes[:1])))
    assert again.num_rows == 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps)
def test_a_rebuild_from_the_store_equals_the_oracle_and_the_live_read_models(plan) -> None:
    with tempfile.TemporaryDirectory() as folder:
        desk = sqlite_desk(Path(folder))
        _, envelopes = history(plan, desk)
        target = Path(folder) / "read.duckdb"
        report = rebuild(target, desk, policy=POLICY, progress=False)
        assert report.events == len(envelopes) and report.swapped
        live = read_db()
        deliver(live, to_batch(envelopes), projectors())
        rebuilt = duckdb.connect(str(target), read_only=True)
        for table in TABLES:
            assert rows(rebuilt, table) == rows(live, table), table
        now = last_instant(envelopes) + timedelta(hours=5)
        figures = queries.dashboard(rebuilt, now=now, policy=POLICY)
        assert_same(canonical(figures), canonical(Oracle(envelopes, now, "Asia/Shanghai", POLICY).figures()))
        rebuilt.close()
        desk.close()


def test_a_compressed_store_takes_the_slow_path_to_the_same_result(tmp_path: Path) -> None:
    desk = sqlite_desk(tmp_path, COMPRESSOR_TOPIC="eventsourcing.compressor:ZlibCompressor")
    _, envelopes = history(rich_plan(3), desk)
    target = tmp_path / "read.duckdb"
    rebuild(target, desk, policy=POLICY, progress=False)
    live = read_db()
    deliver(live, to_batch(envelopes), projectors())
    rebuilt = duckdb.connect(str(target), read_only=True)
    for table in TABLES:
        assert rows(rebuilt, table) == rows(live, table), table


def test_the_rebuilt_file_is_swapped_in_and_the_runner_goes_on_from_it(tmp_path: Path) -> None:
    desk = sqlite_desk(tmp_path)
    _, first = history(rich_plan(4), desk)
    target = tmp_path / "read.duckdb"
    old = duckdb.connect(str(target))
    old.execute("CREATE TABLE stale AS SELECT 1 AS x")
    old.close()
    report = rebuild(target, desk, policy=POLICY, progress=False)
    assert report.position == first[-1].position
    db = duckdb.connect(str(target))
    assert db.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'stale'").fetchone()[0] == 0
    assert db.execute("SELECT source, partition, next_position FROM consumer_positions").fetchall() == [
        ("log", 0, first[-1].position + 1)]
    assert {r[0] for r in db.execute("SELECT projector FROM read_model_meta").fetchall()} == {
        "events", "facts", "sla", "workload", "trends", "alerts", "fields"}
    db.close()
    assert not list(tmp_path.glob("read.duckdb.rebuild-*"))

    # More commands; a read node on the rebuilt file applies only what came after.
    from tests.histories import drive

    drive(desk, desk.clock, rich_plan(5, 40))
    node = ReadNode(target, LogSource(desk.recorder, desk.mapper), projectors(), poll_timeout=0.05)
    with node:
        node.catch_up()
        everything = envelopes(desk.mapper, desk.recorder.select_notifications(1, 100_000))
        now = last_instant(everything)
        figures = queries.dashboard(node.cursor(), now=now, policy=POLICY)
    assert_same(canonical(figures), canonical(Oracle(everything, now, "Asia/Shanghai", POLICY).figures()))


def test_the_swap_is_refused_while_another_process_writes_the_file(tmp_path: Path) -> None:
    desk = sqlite_desk(tmp_path)
    history(rich_plan(6, 30), desk)
    target = tmp_path / "read.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(target)!r});"
         " c.execute('CREATE TABLE IF NOT EXISTS x (a INT)'); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(RuntimeError, match="open in another process"):
            rebuild(target, desk, policy=POLICY, progress=False)
        assert list(tmp_path.glob("read.duckdb.rebuild-*")), "the fresh file is left for the operator"
    finally:
        holder.kill()
        holder.wait()


def test_one_read_model_is_rebuilt_from_the_local_events_the_rest_is_kept(tmp_path: Path) -> None:
    _, envelopes = history(rich_plan(8))
    target = tmp_path / "read.duckdb"
    db = duckdb.connect(str(target))
    EventLog().create_schema(db)
    models = projectors()
    for p in models:
        p.create_schema(db)
    from consumers.bookkeeping import RUNNER_SCHEMA

    db.execute(RUNNER_SCHEMA)
    deliver(db, to_batch(envelopes), models)
    db.execute("INSERT INTO consumer_positions VALUES ('log', 0, 999, now())")
    expected = {t: rows(db, t) for t in TABLES}
    db.execute("DELETE FROM sla_clocks WHERE metric = 'resolution'")  # a damaged read model
    db.execute("UPDATE trend_ratings SET csat = 1")  # ... and one that must stay as it is
    damaged_ratings = rows(db, "trend_ratings")
    db.close()

    report = rebuild(target, None, ["sla"], policy=POLICY, progress=False)
    assert report.models == ["sla"]
    db = duckdb.connect(str(target), read_only=True)
    assert rows(db, "sla_clocks") == expected["sla_clocks"]
    assert rows(db, "trend_ratings") == damaged_ratings
    assert rows(db, "complaint_facts") == expected["complaint_facts"]
    assert db.execute("SELECT next_position FROM consumer_positions").fetchall() == [(999,)]


def test_the_cli_rebuilds_and_prints_figures_as_of_a_position(tmp_path: Path, monkeypatch) -> None:
    desk = sqlite_desk(tmp_path)
    _, envelopes = history(rich_plan(9, 50), desk)
    desk.close()
    monkeypatch.setenv("COMPLAINTS_STORE", "sqlite")
    monkeypatch.setenv("COMPLAINTS_SQLITE_PATH", str(tmp_path / "events.sqlite"))
    from complaints.settings import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    target = tmp_path / "read.duckdb"
    done = runner.invoke(cli_app, ["read-models", "rebuild", "--db", str(target), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert f"from {len(envelopes):,} events" in done.output
    middle = envelopes[len(envelopes) // 2].position
    shown = runner.invoke(cli_app, ["read-models", "figures", "--db", str(target), "--as-of", str(middle),
                                    "--only", "rates"])
    assert shown.exit_code == 0, shown.output
    rates = json.loads(shown.stdout)["rates"]  # (warnings go to stderr)
    past = [e for e in envelopes if e.position <= middle]
    assert rates["complaints"] == len({e.complaint_id for e in past})
    assert runner.invoke(cli_app, ["read-models", "rebuild", "--help"]).exit_code == 0
    (tmp_path / "other.toml").write_text(OTHER_POLICY)
    compared = runner.invoke(cli_app, ["read-models", "what-if", str(tmp_path / "other.toml"), "--db", str(target),
                                       "--out", str(tmp_path / "wi.duckdb"), "--json"])
    assert compared.exit_code == 0, compared.output
    assert {r["metric"] for r in json.loads(compared.stdout)} == {
        "first_response", "resolution", "next_response"}
    get_settings.cache_clear()


OTHER_POLICY = """
version = "what-if"
warning_before_minutes = 30
[calendars.business]
timezone = "Asia/Shanghai"
holidays = ["2027-02-08..2027-02-10"]
[calendars.business.week]
mon = ["08:00-20:00"]
tue = ["08:00-20:00"]
wed = ["08:00-12:00", "14:00-20:00"]
thu = ["08:00-20:00"]
fri = ["08:00-20:00"]
sat = ["10:00-16:00"]
[calendars.always]
timezone = "UTC"
[calendars.always.week]
mon = ["00:00-24:00"]
tue = ["00:00-24:00"]
wed = ["00:00-24:00"]
thu = ["00:00-24:00"]
fri = ["00:00-24:00"]
sat = ["00:00-24:00"]
sun = ["00:00-24:00"]
[[rules]]
severity = "fatal"
calendar = "always"
targets = { first_response_minutes = 30, resolution_minutes = 300, next_response_minutes = 20 }
[[rules]]
category = "billing"
calendar = "always"
targets = { first_response_minutes = 45, resolution_minutes = 900 }
[[rules]]
calendar = "business"
targets = { first_response_minutes = 90, resolution_minutes = 1500, next_response_minutes = 180 }
"""

CLOCK_FACTS = ("complaint_id", "metric", "cycle", "started_at", "due_at", "stopped_at", "status", "paused_since",
               "paused_us", "paused_business_us", "elapsed_us", "business_us")


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_what_if_equals_the_history_lived_under_the_other_policy(tmp_path: Path, seed: int) -> None:
    """The same commands sent to a desk configured with the other policy record exactly
    the due times the what-if replay computes, and so the same SLA read model."""
    from aggregates.sla import load_sla_policy
    from projections.whatif import what_if

    (tmp_path / "other.toml").write_text(OTHER_POLICY)
    other = load_sla_policy(tmp_path / "other.toml")
    plan = rich_plan(seed, 150)
    _, lived = history(plan)  # under the actual policy
    alternative = ComplaintDesk(clock=Clock(START), sla_policy=other)
    _, imagined = history(plan, alternative)  # the same commands under the other one

    live = tmp_path / "read.duckdb"
    db = duckdb.connect(str(live))
    EventLog().create_schema(db)
    deliver(db, to_batch(lived), [])
    db.close()
    report = what_if(other, tmp_path / "what-if.duckdb", read_db=live, actual_policy=POLICY, progress=False)

    expected = read_db([])
    from projections.sla import SlaProjector

    deliver(expected, to_batch(imagined), [SlaProjector(other)])
    got = duckdb.connect(str(report.path), read_only=True)
    columns = ", ".join(CLOCK_FACTS)
    assert got.execute(f"SELECT {columns} FROM sla_clocks ORDER BY ALL").fetchall() == \
        expected.execute(f"SELECT {columns} FROM sla_clocks ORDER BY ALL").fetchall()
    # The actual side is the read model of the lived history.
    actual = read_db([])
    deliver(actual, to_batch(lived), [SlaProjector(POLICY)])
    assert got.execute(f"SELECT {columns} FROM actual_sla_clocks ORDER BY ALL").fetchall() == \
        actual.execute(f"SELECT {columns} FROM sla_clocks ORDER BY ALL").fetchall()
    changed = got.execute("""SELECT count(*) FROM sla_clocks w JOIN actual_sla_clocks a USING (complaint_id, metric, cycle)
                             WHERE w.due_at IS DISTINCT FROM a.due_at""").fetchone()[0]
    assert changed > 0, "the other policy should move some due times"
    overall = {r["metric"]: r for r in report.rows if r["by"] is None}
    assert set(overall) == {"first_response", "resolution", "next_response"}
    assert "what-if" in report.table()


def test_what_if_with_the_same_policy_changes_nothing(tmp_path: Path) -> None:
    from projections.whatif import what_if

    desk = sqlite_desk(tmp_path)
    history(rich_plan(31, 120), desk)
    report = what_if(POLICY, tmp_path / "same.duckdb", load_events=lambda db: load_events(db, desk), actual_policy=POLICY,
                     progress=False)
    for row in report.rows:
        assert (row["what_if_met"], row["what_if_counted"]) == (row["actual_met"], row["actual_counted"]), row
    got = duckdb.connect(str(report.path), read_only=True)
    columns = ", ".join(CLOCK_FACTS)
    assert got.execute(f"SELECT {columns} FROM sla_clocks EXCEPT SELECT {columns} FROM actual_sla_clocks").fetchall() == []


def test_a_changed_calendar_recomputes_the_sla_clocks_when_the_node_starts(tmp_path: Path) -> None:
    from aggregates.sla import load_sla_policy
    from projections.sla import SlaProjector

    _, envelopes = history(rich_plan(41, 120))
    db = read_db([])
    deliver(db, to_batch(envelopes), [SlaProjector(POLICY)])
    before = rows(db, "sla_clocks")
    # Same calendar names, other hours: the stored business times are stale.
    (tmp_path / "other.toml").write_text(OTHER_POLICY)
    other = load_sla_policy(tmp_path / "other.toml")
    SlaProjector(other).create_schema(db)
    expected = read_db([])
    deliver(expected, to_batch(envelopes), [SlaProjector(other)])
    assert rows(db, "sla_clocks") == rows(expected, "sla_clocks") != before
