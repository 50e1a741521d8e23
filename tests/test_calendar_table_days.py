"""The read model's calendar table and the domain agree on holidays and make-up days.

Random calendars (time zones with DST, holidays, make-up days with their own hours or
the weekday's) are written to the DuckDB calendar table the way a read node writes them;
the cumulative business time the table's ASOF join gives at any instant equals the
domain's, exactly, and differences equal the minute-by-minute walk of the wall clock
(tests/test_business_time.py), which knows neither.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregates.sla import BusinessCalendar, load_sla_policy
from projections import calendar_table
from tests.test_business_time import calendars, instants, oracle_between

TABLE_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def table_cum(db: duckdb.DuckDBPyConnection, name: str, points: list[datetime]) -> list[int | None]:
    values = ", ".join(f"('{name}', {calendar_table.to_us(t)})" for t in points)
    relation = f"(SELECT * FROM (VALUES {values}) v(calendar, t_us))"
    got = dict(db.execute(f"SELECT t_us, cum_us FROM ({calendar_table.cum_sql(relation)})").fetchall())
    return [got[calendar_table.to_us(t)] for t in points]


def written(calendar: BusinessCalendar, first: datetime, last: datetime) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    calendar_table.create_schema(db)
    calendar_table.ensure_years(db, {calendar.name: calendar}, range(first.year - 1, last.year + 2))
    return db


@TABLE_SETTINGS
@given(calendars(), instants, st.lists(st.integers(0, 12 * 86_400), min_size=1, max_size=6))
def test_the_table_counts_what_the_domain_and_the_wall_clock_count(
    cal: BusinessCalendar, a: datetime, offsets: list[int]
) -> None:
    points = [a] + [a + timedelta(seconds=x, microseconds=x % 11) for x in sorted(offsets)]
    db = written(cal, points[0], points[-1])
    cum = table_cum(db, cal.name, points)
    assert cum == [calendar_table.cum_us(cal, t) for t in points]
    for t, c in zip(points[1:], cum[1:]):
        assert (c - cum[0]) / 1e6 == pytest.approx(oracle_between(cal, a, t), abs=1e-6)


def test_the_packaged_calendar_table_works_china_s_make_up_days() -> None:
    business = load_sla_policy().calendars["business"]
    db = written(business, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 12, 31, tzinfo=UTC))
    # 2025-01-24 (Fri) 18:00 to 01-27 (Mon) 09:00 in Shanghai: the make-up Sunday's 8 hours.
    friday, monday = datetime(2025, 1, 24, 10, tzinfo=UTC), datetime(2025, 1, 27, 1, tzinfo=UTC)
    start, end = table_cum(db, "business", [friday, monday])
    assert end - start == 8 * 3600 * 1_000_000
    # 2025-01-27 18:00 to 02-05 09:00: the Spring Festival closure, and nothing else.
    closing, reopening = datetime(2025, 1, 27, 10, tzinfo=UTC), datetime(2025, 2, 5, 1, tzinfo=UTC)
    start, end = table_cum(db, "business", [closing, reopening])
    assert end == start


def test_make_up_days_change_the_fingerprint_and_the_table_is_rewritten() -> None:
    plain = BusinessCalendar(name="office", timezone="Europe/Berlin",
                             week={d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")})
    saturday = date(2026, 3, 28)  # the eve of Berlin's spring forward
    worked = plain.model_copy(update={"make_up_days": frozenset({saturday})})
    assert calendar_table.fingerprint(worked) != calendar_table.fingerprint(plain)
    friday_evening, monday_morning = datetime(2026, 3, 27, 17, tzinfo=UTC), datetime(2026, 3, 30, 6, tzinfo=UTC)
    db = written(plain, friday_evening, monday_morning)
    before = table_cum(db, "office", [friday_evening, monday_morning])
    assert before[1] - before[0] == 0
    assert calendar_table.stale_calendars(db, {"office": worked}) == ["office"]
    calendar_table.ensure_years(db, {"office": worked}, range(2025, 2028))
    after = table_cum(db, "office", [friday_evening, monday_morning])
    assert after[1] - after[0] == 8 * 3600 * 1_000_000
    assert after == [calendar_table.cum_us(worked, t) for t in (friday_evening, monday_morning)]


@pytest.mark.parametrize("name", ["business", "always", "berlin"])
def test_the_first_covered_year_answers_before_its_first_window(name: str) -> None:
    """New Year's Day 2025 is a holiday in China: before the run-start marker, an instant
    of the table's first year before its first window found no row and answered NULL."""
    policy = load_sla_policy()
    calendar = policy.calendars.get(name) or BusinessCalendar(
        name=name, timezone="Europe/Berlin", week={d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")})
    db = duckdb.connect()
    calendar_table.create_schema(db)
    calendar_table.ensure_years(db, {name: calendar}, [2025, 2026, 2028])  # 2028 starts on a Saturday
    zone = ZoneInfo(calendar.timezone)
    points = [datetime(2025, 1, 1, h, tzinfo=zone) for h in (0, 8, 16)] + [datetime(2025, 1, 2, 10, tzinfo=zone)] + [
        datetime(2028, 1, 1, h, tzinfo=zone) for h in (0, 12)] + [datetime(2028, 1, 3, 9, 30, tzinfo=zone)]
    got = table_cum(db, name, points)
    assert got == [calendar_table.cum_us(calendar, t) for t in points]
    # Extending the run backwards keeps every figure (the old start marker goes).
    calendar_table.ensure_years(db, {name: calendar}, [2024, 2027])
    assert table_cum(db, name, points) == got
    assert db.execute(f"SELECT count(*) FROM {calendar_table.WINDOWS} WHERE start_us = end_us AND cum_us IS NOT NULL"
                      ).fetchone() == ((1,) if name != "always" else (0,))
