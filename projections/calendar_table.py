"""Business calendars as a DuckDB table, so business time is a join: cum(b) - cum(a).

One row per business window: its UTC start and end (µs since the epoch) and the
calendar's cumulative business µs at its start. The cumulative business time at any
instant t is then an ASOF join on the last window starting at or before t:

    cum(t) = w.cum_us + least(t - w.start_us, w.end_us - w.start_us)

and the business time between a and b is cum(b) - cum(a), exactly (integer µs), the same
numbers `aggregates.sla` computes, because the table is written from its functions.

Coverage is kept in whole local years per calendar, grown lazily: the local years of the
events that arrive, one either side, and nothing between them. Each run of covered years
ends in a gap marker, a row of no length whose `cum_us` is NULL at the local midnight
that starts the first year not covered: an instant in a gap finds the marker, not a window
from before the gap, so the join answers NULL there instead of a wrong figure (the SLA
queries only ever ask for instants of events, whose years are covered). Each run also
starts with a marker, a row of no length with the cumulative figure at the local
midnight that starts its first year, unless a window starts right there: an instant of
that year before its first window (New Year's Day is a holiday) finds it, not nothing.
Only the years of the domain's window of instants (`aggregates.instants`: 1970 to 2200)
and one either side may be covered: an event outside the window is poison
(`projections.facts`) and asks for nothing here, and a year further out is refused
(InstantOutOfRange) before any window is computed. So one event costs at most three calendar-years per calendar, wherever it
lies: before, a year-9999 event asked for every year from the last event's to 10000
(8.6 minutes, 2.6 GB, then `year 10000 is out of range`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from functools import lru_cache
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from aggregates.instants import EARLIEST, LATEST, InstantOutOfRange
from aggregates.sla import BusinessCalendar

log = logging.getLogger(__name__)

WINDOWS = "sla_calendar_windows"
YEARS = "sla_calendar_years"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# The local years the table may cover: those of the domain's window, and one either side.
FIRST_YEAR = EARLIEST.year - 1
LAST_YEAR = (LATEST - _US).year + 1


def to_us(t: datetime) -> int:
    """An aware datetime as exact µs since the epoch."""
    return (t - _EPOCH) // _US


def cum_us(calendar: BusinessCalendar, t: datetime) -> int:
    """The calendar's cumulative business µs at t, exactly.

    `cumulative_business_seconds` returns µs / 1e6 as a float; going back through a
    Fraction (not `x * 1e6`, which rounds again) recovers the integer for any instant
    within a few centuries of 1970.
    """
    return round(Fraction(calendar.cumulative_business_seconds(t)) * 1_000_000)


@lru_cache(maxsize=64)
def fingerprint(calendar: BusinessCalendar) -> str:
    """Changes whenever the calendar's hours, zone, holidays or make-up days change,
    those its holiday source gives it included (a newer package may move a day)."""
    spec = calendar.model_dump(mode="json", exclude={"name"}) | {
        "holidays": sorted(d.isoformat() for d in calendar.all_holidays),
        "make_up_days": sorted(d.isoformat() for d in calendar.all_make_up_days),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def create_schema(db: duckdb.DuckDBPyConnection, temp: bool = False) -> None:
    kind = "TEMP TABLE" if temp else "TABLE"
    db.execute(
        f"CREATE {kind} IF NOT EXISTS {WINDOWS} ("
        " calendar VARCHAR NOT NULL, start_us BIGINT NOT NULL, end_us BIGINT NOT NULL,"
        " cum_us BIGINT)"  # NULL: a gap marker
    )
    db.execute(
        f"CREATE {kind} IF NOT EXISTS {YEARS} ("
        " calendar VARCHAR NOT NULL, year INTEGER NOT NULL, fingerprint VARCHAR NOT NULL)"
    )
    if not temp:  # a table written before gap markers: its cum_us was NOT NULL
        strict = db.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = 'cum_us'"
            " AND NOT is_nullable AND database_name <> 'temp'", [WINDOWS]).fetchall()
        if strict[0][0]:
            db.execute(f"ALTER TABLE {WINDOWS} ALTER COLUMN cum_us DROP NOT NULL")


def exists(db: duckdb.DuckDBPyConnection) -> bool:
    found = db.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [WINDOWS]).fetchone()
    return bool(found and found[0])


def _located(db: duckdb.DuckDBPyConnection, temporary: bool) -> str | None:
    """The qualified name of the windows table: this connection's TEMP one, or the
    database's own (None when there is none)."""
    found = db.execute(
        "SELECT database_name, schema_name FROM duckdb_tables() WHERE table_name = ? AND temporary = ?",
        [WINDOWS, temporary],
    ).fetchall()
    return f'"{found[0][0]}"."{found[0][1]}"' if found else None


def year_windows(calendar: BusinessCalendar, year: int) -> list[tuple[int, int, int]]:
    """(start µs, end µs, cum µs at start) for every business window of a local year."""
    rows: list[tuple[int, int, int]] = []
    day, end = date(year, 1, 1), date(year + 1, 1, 1)
    cum: int | None = None
    while day < end:
        for start, stop in calendar.business_windows(day):
            s, e = to_us(start), to_us(stop)
            # One exact lookup per year; the rest accumulates window lengths.
            cum = cum_us(calendar, start) if cum is None else cum
            rows.append((s, e, cum))
            cum += e - s
        day += timedelta(days=1)
    return rows


def ensure_years(
    db: duckdb.DuckDBPyConnection,
    calendars: Mapping[str, BusinessCalendar],
    years: Iterable[int],
) -> int:
    """Make every calendar cover `years` (those only, with a gap marker after each run of
    covered years); returns the windows added.

    A calendar whose definition changed (fingerprint) is rewritten from scratch; the
    SLA figures computed with the old one are then stale (see `stale_calendars`).
    """
    wanted = _bounded(years)
    if not wanted:
        return 0
    have: dict[str, tuple[set[int], str]] = {}
    for name, year, fp in db.execute(f"SELECT calendar, year, fingerprint FROM {YEARS}").fetchall():
        have.setdefault(name, (set(), fp))[0].add(year)
    added: list[tuple[str, int, int, int | None]] = []
    year_rows: list[tuple[str, int, str]] = []
    grown: list[tuple[str, BusinessCalendar, set[int]]] = []
    for name, calendar in calendars.items():
        fp = fingerprint(calendar)
        covered, old_fp = have.get(name, (set(), fp))
        if old_fp != fp:
            log.warning("calendar %s changed since its table was written: rewriting it", name)
            db.execute(f"DELETE FROM {WINDOWS} WHERE calendar = ?", [name])
            db.execute(f"DELETE FROM {YEARS} WHERE calendar = ?", [name])
            covered = set()
        missing = [year for year in wanted if year not in covered]
        for year in missing:
            added.extend((name, s, e, c) for s, e, c in year_windows(calendar, year))
            year_rows.append((name, year, fp))
        if missing:
            grown.append((name, calendar, covered | set(missing)))
    if year_rows:
        for name, calendar, now_covered in grown:  # the markers around every run
            db.execute(f"DELETE FROM {WINDOWS} WHERE calendar = ? AND start_us = end_us", [name])
            added.extend((name, s, s, None) for s in gap_markers(calendar, now_covered))
            added.extend((name, s, s, c) for s, c in run_starts(calendar, now_covered))
        windows = pa.table(
            {
                "calendar": [r[0] for r in added],
                "start_us": pa.array([r[1] for r in added], pa.int64()),
                "end_us": pa.array([r[2] for r in added], pa.int64()),
                "cum_us": pa.array([r[3] for r in added], pa.int64()),
            }
        )
        years_t = pa.table(
            {
                "calendar": [r[0] for r in year_rows],
                "year": pa.array([r[1] for r in year_rows], pa.int32()),
                "fingerprint": [r[2] for r in year_rows],
            }
        )
        db.execute(f"INSERT INTO {WINDOWS} SELECT * FROM windows")
        db.execute(f"INSERT INTO {YEARS} SELECT * FROM years_t")
        log.info("calendar table: %d windows added for %d calendar-years", len(added), len(year_rows))
    return len(added)


def _bounded(years: Iterable[int]) -> list[int]:
    """`years`, sorted, if each is one the table may cover (else InstantOutOfRange)."""
    wanted = sorted(set(years))
    if wanted and (wanted[0] < FIRST_YEAR or wanted[-1] > LAST_YEAR):
        raise InstantOutOfRange("calendar years", f"{wanted[0]}..{wanted[-1]}",
                                f"calendar windows are kept for {FIRST_YEAR}..{LAST_YEAR}")
    return wanted


def gap_markers(calendar: BusinessCalendar, years: set[int]) -> list[int]:
    """µs of the local midnights starting the first year after each run of `years`."""
    zone = ZoneInfo(calendar.timezone)
    return [to_us(datetime(year + 1, 1, 1, tzinfo=zone)) for year in sorted(years) if year + 1 not in years]


def run_starts(calendar: BusinessCalendar, years: set[int]) -> list[tuple[int, int]]:
    """(µs, cum µs) of the local midnights starting each run of `years`, where no window
    starts (a window starting there answers from there itself; a marker beside it would
    tie with it in the join)."""
    zone = ZoneInfo(calendar.timezone)
    starts = []
    for year in sorted(years):
        if year - 1 in years:
            continue
        midnight = datetime(year, 1, 1, tzinfo=zone)
        first = calendar.business_windows(date(year, 1, 1))
        if not first or first[0][0] != midnight:
            starts.append((to_us(midnight), cum_us(calendar, midnight)))
    return starts


def covers(db: duckdb.DuckDBPyConnection, calendars: Mapping[str, BusinessCalendar], years: Iterable[int]) -> bool:
    """Whether the table holds every one of `years` for every calendar, as defined now."""
    wanted = set(years)
    have: dict[str, tuple[set[int], set[str]]] = {}
    for name, year, fp in db.execute(f"SELECT calendar, year, fingerprint FROM {YEARS}").fetchall():
        entry = have.setdefault(name, (set(), set()))
        entry[0].add(year)
        entry[1].add(fp)
    for name, calendar in calendars.items():
        covered, fps = have.get(name, (set(), set()))
        if fps != {fingerprint(calendar)} or not wanted <= covered:
            return False
    return True


def ensure_years_privately(
    db: duckdb.DuckDBPyConnection,
    calendars: Mapping[str, BusinessCalendar],
    years: Iterable[int],
) -> int:
    """`ensure_years` for a reader: the database's own tables are never written.

    When they already cover `years` under these calendars (the usual case: a past view of
    the events the read node has applied), they are used as they are. Otherwise this
    connection gets TEMP tables of the same names, which shadow the database's for it
    alone: a copy of the database's windows of the calendars that have not changed, and
    the missing years added there. Works on a read-only connection.
    """
    wanted = _bounded(years)
    if not wanted:
        return 0
    if _located(db, temporary=True) is None:
        live = _located(db, temporary=False)
        if live is not None and covers(db, calendars, wanted):
            return 0
        create_schema(db, temp=True)
        if live is not None:
            # The windows of the calendars whose stored definition is today's (the others
            # are computed again below, as `ensure_years` would rewrite them).
            stored = dict(db.execute(f"SELECT DISTINCT calendar, fingerprint FROM {live}.{YEARS}").fetchall())
            kept = [n for n, c in calendars.items() if stored.get(n) == fingerprint(c)]
            if kept:
                temp = _located(db, temporary=True)
                for table in (YEARS, WINDOWS):
                    db.execute(f"INSERT INTO {temp}.{table} SELECT * FROM {live}.{table}"
                               " WHERE list_contains(?, calendar)", [kept])
    return ensure_years(db, calendars, wanted)


def stale_calendars(db: duckdb.DuckDBPyConnection, calendars: Mapping[str, BusinessCalendar]) -> list[str]:
    """Calendars whose stored table no longer matches the policy's definition."""
    stored = dict(db.execute(f"SELECT DISTINCT calendar, fingerprint FROM {YEARS}").fetchall())
    return sorted(n for n, c in calendars.items() if n in stored and stored[n] != fingerprint(c))


def ensure_for_events(
    db: duckdb.DuckDBPyConnection, calendars: Mapping[str, BusinessCalendar], relation: str,
    *, private: bool = False,
) -> None:
    """Cover the years of every occurred_at in `relation` (plus one either side).

    Only instants inside the domain's window count: an event outside it is poison to every
    read model (`projections.facts`), and a view over an event log that holds one (stored
    by an older version) must not ask for year 0 or 10000.

    `private`: never write the database's own tables (see `ensure_years_privately`).
    """
    found = db.execute(
        f"SELECT DISTINCT year(occurred_at AT TIME ZONE 'UTC') FROM {relation}"
        " WHERE occurred_at >= ?::TIMESTAMPTZ AND occurred_at < ?::TIMESTAMPTZ",
        [EARLIEST, LATEST],
    ).fetchall()
    years = {year + step for (year,) in found for step in (-1, 0, 1)}
    if years:
        (ensure_years_privately if private else ensure_years)(db, calendars, years)


def cum_sql(points: str, calendar_col: str = "calendar", t_col: str = "t_us") -> str:
    """`points` with a `cum_us` column: the cumulative business µs at each point.

    NULL when the calendar is unknown or the point lies outside the table's coverage
    (before it, or in a gap: its marker's cum_us is NULL).
    """
    return (
        f"SELECT p.*, w.cum_us + least(p.{t_col} - w.start_us, w.end_us - w.start_us) AS cum_us"
        f" FROM {points} p ASOF LEFT JOIN {WINDOWS} w"
        f" ON p.{calendar_col} = w.calendar AND p.{t_col} >= w.start_us"
    )
