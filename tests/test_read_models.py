"""The SLA, workload and trend read models equal the oracle, exactly.

Histories come from the real domain (tests/histories.py); the read models are fed the way
the consumer runner feeds them (insert the batch into `events`, keep the new rows, apply
those to every projector in one transaction), in random batch splits with random
redelivery of earlier events; the oracle (tests/oracle.py) folds the full event list.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.sla import load_sla_policy
from projections import calendar_table, queries
from projections.base import to_batch
from projections.complaint_facts import FactsProjector
from projections.event_log import EventLog
from projections.facts import PoisonEvent
from projections.sla import SlaProjector, running_sql
from projections.trends import TrendsProjector
from projections.workload import WorkloadProjector, open_sql
from tests.histories import START, history, steps
from tests.oracle import Oracle, canonical

POLICY = load_sla_policy()
ZONES = ["Asia/Shanghai", "UTC", "America/New_York"]
HYPOTHESIS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def projectors() -> list[Any]:
    return [FactsProjector(), SlaProjector(POLICY), WorkloadProjector(), TrendsProjector()]


def read_db(models: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    EventLog().create_schema(db)
    for p in models or projectors():
        p.create_schema(db)
    return db


def insert_new(db: duckdb.DuckDBPyConnection, batch: pa.Table) -> pa.Table:
    """The runner's first step: store the batch's unseen events, keep those rows."""
    return EventLog().insert_new(db, batch)


def deliver(db: duckdb.DuckDBPyConnection, batch: pa.Table, models: list[Any]) -> int:
    """One runner batch: events first, then every projector with the new rows, one transaction."""
    db.execute("BEGIN")
    new = insert_new(db, batch)
    for p in models:
        p.apply(db, new)
    db.execute("COMMIT")
    return new.num_rows


def feed(db: duckdb.DuckDBPyConnection, envelopes: list[Any], rng: random.Random, models: list[Any]) -> None:
    """Deliver in random splits, each batch also carrying random earlier events again."""
    i = 0
    while i < len(envelopes):
        size = rng.choice([1, 4, 12, 40])
        chunk = envelopes[i : i + size]
        again = rng.sample(envelopes[:i], min(i, rng.choice([0, 0, 1, 4, 20])))
        batch = sorted({e.position: e for e in chunk + again}.values(), key=lambda e: e.position)
        deliver(db, to_batch(batch), models)
        i += size


def assert_same(actual: Any, expected: Any, path: str = "figures") -> None:
    """Equality, with the first difference named (the dashboards are big)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        assert actual.keys() == expected.keys(), f"{path}: keys {actual.keys()} != {expected.keys()}"
        for k in expected:
            assert_same(actual[k], expected[k], f"{path}[{k!r}]")
        return
    if isinstance(expected, list) and isinstance(actual, list):
        assert len(actual) == len(expected), f"{path}: {len(actual)} rows != {len(expected)}:\n{actual}\n{expected}"
        for n, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{n}]")
        return
    assert actual == expected, f"{path}: read model {actual!r} != oracle {expected!r}"


def check_against_oracle(db: duckdb.DuckDBPyConnection, envelopes: list[Any], now: datetime, tz: str,
                         as_of: Any = None) -> None:
    figures = queries.dashboard(db, now=now, tz=tz, policy=POLICY, as_of=as_of)
    expected = Oracle(envelopes, now, tz, POLICY).figures()
    assert figures["top_categories"] == expected["top_categories"]  # ranked: order matters
    assert_same(canonical(figures), canonical(expected))
    # One week of week-over-week (what the product dashboard shows) equals that week of the grid.
    with queries.view(db, as_of, now, tz, POLICY) as v:
        for by in queries.WOW_GROUPINGS:
            grid = figures["week_over_week"][by]
            weeks = sorted({row["week"] for row in grid})
            probes = weeks[:2] + weeks[-1:] + ([weeks[0] - timedelta(days=7), weeks[-1] + timedelta(days=7)]
                                               if weeks else [])
            for week in probes:
                assert canonical(queries.week_over_week(v, by, week=week)) == canonical(
                    [row for row in grid if row["week"] == week]), (by, week)
    # The stored previous registration is the customer's previous complaint's, whatever the batches.
    stored = dict(db.execute("SELECT complaint_id, previous_registered_at FROM trend_complaints").fetchall())
    recomputed = dict(db.execute(
        "SELECT complaint_id, lag(registered_at) OVER (PARTITION BY customer_id"
        " ORDER BY registered_at, registered_position) FROM trend_complaints").fetchall())
    if as_of is None:
        assert stored == recomputed


def check_clocks_against_oracle(db: duckdb.DuckDBPyConnection, envelopes: list[Any], now: datetime) -> None:
    """The now-dependent SLA figures only (statuses, warning, breach, business time)."""
    oracle = Oracle(envelopes, now, "UTC", POLICY)
    with queries.view(db, now=now, tz="UTC", policy=POLICY) as v:
        assert_same(canonical(queries.sla_clocks(v)), canonical(oracle.sla_clocks()), "sla_clocks")
        assert_same(canonical(queries.sla_clock_events(v)), canonical(oracle.sla_clock_events()),
                    "sla_clock_events")
        assert_same(canonical(queries.sla_at_risk(v)), canonical(oracle.sla_at_risk()), "at_risk")
        assert_same(canonical(queries.sla_attainment(v, "team")), canonical(oracle.sla_attainment("team")))


def due_times(envelopes: list[Any]) -> list[datetime]:
    keys = ("first_response_due", "resolution_due", "next_response_due")
    return [datetime.fromisoformat(e.payload[k]) for e in envelopes for k in keys if e.payload.get(k)]


def last_instant(envelopes: list[Any]) -> datetime:
    return max((e.occurred_at for e in envelopes), default=START)


@HYPOTHESIS
@given(plan=steps, seed=st.integers(0, 2**32), later=st.sampled_from([0, 1, 600, 86_400, 400_000]),
       tz=st.sampled_from(ZONES))
def test_read_models_equal_the_oracle_under_redelivery(plan, seed, later, tz) -> None:
    desk, envelopes = history(plan)
    db = read_db()
    feed(db, envelopes, random.Random(seed), projectors())
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(envelopes)
    now = last_instant(envelopes) + timedelta(seconds=later)
    check_against_oracle(db, envelopes, now, tz)
    # The running clocks kept apart for the supervisor are exactly the unstopped ones.
    running = sorted(db.execute("SELECT * FROM sla_running_clocks").fetchall())
    assert running == sorted(db.execute(running_sql("sla_clocks")).fetchall())
    assert {(r[0], r[1], r[2]) for r in running} == {
        (k["complaint_id"], k["metric"], k["cycle"]) for k in Oracle(envelopes, now, tz, POLICY).sla_clocks()
        if k["stopped_at"] is None}
    # So are the open complaints kept apart for the backlog and load figures.
    assert sorted(db.execute("SELECT * FROM workload_open").fetchall()) == sorted(
        db.execute(open_sql("workload_complaints")).fetchall())
    # Around a pending due time: inside the warning window, at the due time, just after.
    pending = sorted(d for d in due_times(envelopes) if d > now)
    for due in pending[:: max(1, len(pending) // 3)][:3]:
        for at in [due + timedelta(minutes=m) for m in (-20, -15, -10, 0)] + [due + timedelta(microseconds=1)]:
            if at >= now:
                check_clocks_against_oracle(db, envelopes, at)

    # The facts agree with the aggregate itself, not only with the oracle's fold.
    for cid, status, team, agent, fr_due, res_due, handovers in db.execute(
        "SELECT complaint_id, status, team, agent, first_response_due, resolution_due, handovers"
        " FROM complaint_facts"
    ).fetchall():
        c = desk.get_complaint(cid)
        assert (status, team, agent, fr_due, res_due, handovers) == (
            c.status, c.team, c.agent, c.first_response_due, c.resolution_due, c.handovers
        )

    # Delivering everything again, in one batch, changes nothing.
    before = {t: db.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
              for t in ("complaint_facts", "sla_clocks", "workload_open_intervals", "trend_ratings")}
    assert deliver(db, to_batch(envelopes), projectors()) == 0
    for table, rows in before.items():
        assert db.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() == rows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, cut=st.floats(0, 1), later=st.sampled_from([0, 3_600, 200_000]))
def test_as_of_a_past_position_equals_a_read_model_built_up_to_it(plan, cut, later) -> None:
    _, envelopes = history(plan)
    position = envelopes[int(cut * (len(envelopes) - 1))].position
    past = [e for e in envelopes if e.position <= position]
    now = last_instant(past) + timedelta(seconds=later)

    live = read_db()
    deliver(live, to_batch(envelopes), projectors())
    tables = {t: live.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in ("sla_clocks", "trend_complaints")}
    then = queries.dashboard(live, now=now, as_of=position, policy=POLICY)

    partial = read_db()
    deliver(partial, to_batch(past), projectors())
    assert then == queries.dashboard(partial, now=now, policy=POLICY)
    assert_same(canonical(then), canonical(Oracle(past, now, "Asia/Shanghai", POLICY).figures()))
    # ... and the live tables were not touched.
    for table, rows in tables.items():
        assert live.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() == rows


def test_as_of_an_instant_cuts_by_occurred_at_and_judges_at_that_instant() -> None:
    _, envelopes = history(rich_plan(1))
    instant = envelopes[len(envelopes) // 2].occurred_at
    past = [e for e in envelopes if e.occurred_at <= instant]
    live = read_db()
    deliver(live, to_batch(envelopes), projectors())
    then = queries.dashboard(live, as_of=instant, policy=POLICY)
    assert then["now"] == instant
    assert_same(canonical(then), canonical(Oracle(past, instant, "Asia/Shanghai", POLICY).figures()))


def test_public_figures_take_filters_and_as_of() -> None:
    _, envelopes = history(rich_plan(2))
    db = read_db()
    deliver(db, to_batch(envelopes), projectors())
    now = last_instant(envelopes)
    team = db.execute("SELECT team FROM complaint_facts WHERE team IS NOT NULL LIMIT 1").fetchone()[0]
    only = queries.Filters(team=team)
    rows = queries.sla_attainment(db, "severity", now=now, policy=POLICY, filters=only)
    clocks = queries.sla_clocks(db, now=now, policy=POLICY, filters=only)
    assert clocks and all(c["team"] == team for c in clocks)
    assert sum(r["counted"] for r in rows) == sum(
        1 for c in clocks if c["status"] in ("fulfilled", "breached") and c["due_at"] is not None
    )
    assert queries.volume(db, "week", "channel", now=now, as_of=envelopes[5].position) == \
        queries.volume(db, "week", "channel", now=now, as_of=envelopes[5].position)
    assert queries.rates(db, now=now)["complaints"] == db.execute("SELECT count(*) FROM trend_complaints").fetchone()[0]


def rich_plan(seed: int, length: int = 80) -> list[tuple[int, int, timedelta, int]]:
    rng = random.Random(seed)
    deltas = [timedelta(minutes=7), timedelta(hours=3), timedelta(hours=16), timedelta(days=1)]
    return [(rng.randrange(2**16), rng.randrange(2**16), rng.choice(deltas), rng.randrange(2**16))
            for _ in range(length)]


def test_a_poison_event_is_refused_before_anything_is_written_and_never_blocks_its_complaint() -> None:
    _, envelopes = history(rich_plan(5))
    db = read_db()
    models = projectors()
    k = next(i for i, e in enumerate(envelopes) if e.complaint_version == 3)
    victim = envelopes[k]
    # Valid JSON (the events table only stores JSON) that no read model can make sense of.
    poison = to_batch([victim]).set_column(3, "event_type", pa.array(["Merged"], pa.string()))
    deliver(db, to_batch(envelopes[:k]), models)
    db.execute("BEGIN")
    new = insert_new(db, poison)
    for p in models:
        with pytest.raises(PoisonEvent) as refused:
            p.apply(db, new)
        assert refused.value.positions == [victim.position]
        assert "unknown event type" in str(refused.value)
    db.execute("COMMIT")  # the transaction stayed usable: the runner dead-letters and goes on
    # Later events of the same complaint apply; the poison event stored in `events` is ignored.
    deliver(db, to_batch(envelopes[k + 1 :]), models)
    complaints = {str(e.complaint_id) for e in envelopes}
    assert db.execute("SELECT count(*) FROM sla_clocks WHERE metric <> 'next_response'").fetchone()[0] \
        == 2 * len(complaints)
    later = [e for e in envelopes[k + 1 :] if e.complaint_id == victim.complaint_id]
    if later:
        assert db.execute(
            "SELECT last_version FROM complaint_facts WHERE complaint_id = ?", [str(victim.complaint_id)]
        ).fetchone()[0] == later[-1].complaint_version


@settings(max_examples=40, deadline=None)
@given(a=st.integers(0, 3 * 365 * 86_400), b=st.integers(0, 40 * 86_400),
       name=st.sampled_from(sorted(POLICY.calendars)))
def test_the_calendar_table_gives_the_domains_business_time(a, b, name) -> None:
    calendar = POLICY.calendars[name]
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=a, microseconds=a % 997)
    end = start + timedelta(seconds=b)
    db = duckdb.connect()
    calendar_table.create_schema(db)
    calendar_table.ensure_years(db, {name: calendar}, range(start.year - 1, end.year + 2))
    points = f"(SELECT '{name}' AS calendar, unnest([{calendar_table.to_us(start)}, {calendar_table.to_us(end)}]) AS t_us)"
    cum = dict(db.execute(f"SELECT t_us, cum_us FROM ({calendar_table.cum_sql(points)})").fetchall())
    got = (cum[calendar_table.to_us(end)] - cum[calendar_table.to_us(start)]) / 1_000_000
    assert got == calendar.business_seconds_between(start, end)


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
                                "Asia/Kathmandu", "Pacific/Chatham", "Europe/Dublin"])
@pytest.mark.parametrize("period", queries.PERIODS)
def test_periods_by_bucket_equal_periods_row_by_row(tz, period) -> None:
    """Local days, weeks and months found per 15-minute bucket (with the fall-back for a
    bucket that straddles two periods or offsets: local mean time before 1901) equal the
    time zone conversion of every row."""
    db = duckdb.connect()
    rng = random.Random(f"{tz}{period}")
    starts = [datetime(1899, 12, 25, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC)]
    instants = [start + timedelta(seconds=rng.randrange(0, 40 * 86_400)) for start in starts for _ in range(3_000)]
    db.execute("CREATE TABLE t AS SELECT unnest(?) AS ts, unnest(?) AS k", [instants, [i % 3 for i in range(len(instants))]])
    with queries.view(db, now=datetime(2026, 12, 1, tzinfo=UTC), tz=tz, policy=POLICY) as v:
        for where in ("true", "ts >= '2000-01-01'"):
            fast = v.by_period("ts", period, f"t WHERE {where}", {"key": "k"}, {"n": "count(*)"},
                               {"n": "CAST(sum(n) AS BIGINT)"}, order_by="ORDER BY ALL")
            slow = v.rows(f"SELECT {v.period('ts', period)} AS period, k AS key, count(*) AS n FROM t"
                          f" WHERE {where} GROUP BY ALL ORDER BY ALL")
            assert fast == slow
