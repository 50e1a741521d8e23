"""Business-time arithmetic: properties over random calendars plus worked examples."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aggregates.sla import (
    TWENTY_FOUR_SEVEN,
    BusinessCalendar,
    due_at,
    elapsed_business_seconds,
    load_sla_policy,
)

US = timedelta(microseconds=1)
TOL = 1e-6
# Beirut and Santiago change their clocks at local midnight, so whole days shift.
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Shanghai", "UTC", "Asia/Beirut", "America/Santiago"]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# UTC instants of 2026/2027 offset changes in the zones above: starts cluster around them.
TRANSITIONS = [
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # Berlin spring forward
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Berlin fall back
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York spring forward
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York fall back
    datetime(2026, 4, 4, 16, tzinfo=UTC),  # Sydney fall back
    datetime(2026, 10, 3, 16, tzinfo=UTC),  # Sydney spring forward
    datetime(2027, 3, 28, 1, tzinfo=UTC),  # Berlin spring forward
    datetime(2026, 3, 28, 22, tzinfo=UTC),  # Beirut spring forward at midnight
    datetime(2026, 10, 24, 21, tzinfo=UTC),  # Beirut fall back at midnight
    datetime(2026, 4, 5, 3, tzinfo=UTC),  # Santiago fall back at midnight
    datetime(2026, 9, 6, 4, tzinfo=UTC),  # Santiago spring forward at midnight
]
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def day_windows(draw: st.DrawFn) -> list[str]:
    # Quarter-hour marks hit the 02:00/03:00 DST edges often; 96 marks 24:00. A zero gap
    # makes windows touch (09:00-12:00, 12:00-13:00), which a DST fold can make overlap.
    out, pos = [], 0
    for gap, length in draw(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 40)), max_size=3)):
        if pos + gap + length > 96:
            break
        out.append(f"{hhmm((pos + gap) * 15)}-{hhmm((pos + gap + length) * 15)}")
        pos += gap + length
    return out


# Days near the instants drawn below: the calendars' holidays and make-up days.
special_days = st.frozensets(
    st.one_of(
        st.dates(date(2026, 1, 1), date(2027, 12, 31)),
        st.builds(lambda t, k: t.date() + timedelta(days=k), st.sampled_from(TRANSITIONS), st.integers(-3, 3)),
    ),
    max_size=12,
)


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    # Half the calendars work the same hours Monday to Friday, so that their make-up days
    # may take those (no make_up_hours); the others must say their make-up hours.
    same_weekdays = draw(st.booleans())
    weekday = draw(day_windows())
    week = {d: weekday if same_weekdays and i < 5 else draw(day_windows()) for i, d in enumerate(DAYS)}
    assume(any(week.values()))
    holidays = draw(special_days)
    make_up = draw(special_days) - holidays
    hours = None if same_weekdays and weekday and draw(st.booleans()) else draw(day_windows())
    return BusinessCalendar(name="random", timezone=draw(st.sampled_from(ZONES)), week=week, holidays=holidays,
                            make_up_days=make_up, make_up_hours=hours)


instants = st.one_of(
    st.builds(
        lambda base, off, us: base + timedelta(seconds=off, microseconds=us),
        st.sampled_from(TRANSITIONS),
        st.integers(-4 * 86_400, 4 * 86_400),
        st.sampled_from([0, 0, 1, 999_999, 123_456]),
    ),
    st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
)
WEEKS6 = 6 * 7 * 86_400
durations = st.one_of(
    st.integers(0, WEEKS6).map(float),
    st.sampled_from([1.0, 900.0, 3600.0, 7200.0, 86_400.0, 172_800.0]),
    st.floats(0, WEEKS6, allow_nan=False),
)


def local_days_around(cal: BusinessCalendar, a: datetime, b: datetime) -> list[date]:
    tz = ZoneInfo(cal.timezone)
    first, last = a.astimezone(tz).date() - timedelta(days=1), b.astimezone(tz).date() + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def windows_between(cal: BusinessCalendar, a: datetime, b: datetime) -> float:
    """Oracle: overlap of [a, b] with the per-day windows, summed day by day."""
    total = timedelta(0)
    for d in local_days_around(cal, a, b):
        for s, e in cal.business_windows(d):
            if min(e, b) > max(s, a):
                total += min(e, b) - max(s, a)
    return total.total_seconds()


# --- an independent oracle: the local wall clock, minute by minute -------------------------
# Every zone above changes its offset on whole minutes and windows start and end on
# quarter hours, so a walk over whole minutes is exact. The semantics it spells out
# (docs/sla.md): a window runs from the first minute of its local day at which the wall
# clock shows its start or later, to the last minute at which it shows its end (in a
# fall-back fold, the second time), or, for an end the clock skips or 24:00, to the first
# minute past it; windows of one day count once where they meet.


@lru_cache(maxsize=4096)
def wall_minutes(zone: str, day: date) -> tuple[tuple[int, int], ...]:
    """(UTC minute since the epoch, wall-clock minute of the day) of the local `day`."""
    tz = ZoneInfo(zone)
    first = (date.toordinal(day) - date(1970, 1, 1).toordinal()) * 1440 - 15 * 60  # offsets are within ±15 h
    out = []
    for m in range(first, first + 54 * 60):
        local = datetime.fromtimestamp(m * 60, tz)
        if local.date() == day:
            out.append((m, local.hour * 60 + local.minute))
    return tuple(out)


def wall(t: time) -> int:
    return t.hour * 60 + t.minute


def oracle_windows(cal: BusinessCalendar, day: date) -> list[tuple[datetime, datetime]]:
    """The day's business windows as UTC instants, from the calendar's definition alone."""
    if day in cal.holidays:
        return []
    if day in cal.make_up_days:
        plan = cal.make_up_hours if cal.make_up_hours is not None else cal.week["mon"]
    else:
        plan = cal.week.get(DAYS[day.weekday()], ())  # type: ignore[call-overload]
    minutes = wall_minutes(cal.timezone, day)
    spans: list[list[int]] = []
    for w in plan:
        start, end = wall(w.start), 1440 if w.ends_at_midnight else wall(w.end)
        opened = [m for m, c in minutes if c >= start]
        shown = [m for m, c in minutes if c == end]
        past = [m for m, c in minutes if c > end] or [minutes[-1][0] + 1]
        if not opened:
            continue
        a, b = opened[0], shown[-1] if shown else past[0]
        if b <= a:
            continue
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(b, spans[-1][1])
        else:
            spans.append([a, b])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return [(epoch + timedelta(minutes=a), epoch + timedelta(minutes=b)) for a, b in spans]


def joined(windows: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Windows that touch as one (the same business time either way)."""
    out: list[tuple[datetime, datetime]] = []
    for s, e in windows:
        out[-1:] = [(out[-1][0], e)] if out and s == out[-1][1] else [*out[-1:], (s, e)]
    return out


def oracle_between(cal: BusinessCalendar, a: datetime, b: datetime) -> float:
    total = timedelta(0)
    for d in local_days_around(cal, a, b):
        for s, e in oracle_windows(cal, d):
            if min(e, b) > max(s, a):
                total += min(e, b) - max(s, a)
    return total.total_seconds()


# --- properties -------------------------------------------------------------------------


@SETTINGS
@given(calendars(), instants, durations)
def test_add_then_measure_gives_the_duration_back(cal: BusinessCalendar, start: datetime, d: float) -> None:
    due = cal.add_business_seconds(start, d)
    assert due.tzinfo is UTC and due >= start
    assert cal.business_seconds_between(start, due) == pytest.approx(d, abs=TOL)


@SETTINGS
@given(calendars(), instants, durations.filter(lambda d: d >= 1e-6))
def test_add_returns_the_earliest_instant(cal: BusinessCalendar, start: datetime, d: float) -> None:
    due = cal.add_business_seconds(start, d)
    # One microsecond earlier is not enough ...
    assert due - US >= start
    assert cal.business_seconds_between(start, due - US) < d - 0.5e-6
    # ... because the due instant lies inside a window or at its end, never in closed time.
    windows = [w for day in local_days_around(cal, due, due) for w in cal.business_windows(day)]
    assert any(s < due <= e for s, e in windows)


@SETTINGS
@given(calendars(), instants, st.integers(0, WEEKS6), st.integers(0, WEEKS6))
def test_additivity_and_cumulative(cal: BusinessCalendar, a: datetime, x: int, y: int) -> None:
    b, c = a + timedelta(seconds=x, microseconds=7), a + timedelta(seconds=x + y, microseconds=11)
    ab, bc, ac = (cal.business_seconds_between(*p) for p in ((a, b), (b, c), (a, c)))
    assert ab + bc == pytest.approx(ac, abs=TOL)
    assert cal.cumulative_business_seconds(c) - cal.cumulative_business_seconds(a) == pytest.approx(ac, abs=1e-5)
    assert cal.business_seconds_between(c, a) == 0.0
    # The arithmetic (weeks, holidays, DST corrections) agrees with walking the windows.
    assert ac == pytest.approx(windows_between(cal, a, c), abs=TOL)


@SETTINGS
@given(calendars(), instants, st.integers(0, WEEKS6), durations)
def test_holidays_never_count(cal: BusinessCalendar, a: datetime, x: int, d: float) -> None:
    b = a + timedelta(seconds=x)
    holiday = a.astimezone(ZoneInfo(cal.timezone)).date()
    closed = cal.model_copy(update={"holidays": cal.holidays | {holiday}, "make_up_days": cal.make_up_days - {holiday}})
    assert closed.business_windows(holiday) == []
    midnight = datetime.combine(holiday, time(0), ZoneInfo(cal.timezone))
    assert closed.business_seconds_between(midnight, midnight + timedelta(days=1)) == 0.0
    assert closed.business_seconds_between(a, b) <= cal.business_seconds_between(a, b)
    assert closed.add_business_seconds(a, d) >= cal.add_business_seconds(a, d)


ORACLE_SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ORACLE_SETTINGS
@given(calendars(), instants, st.integers(0, 9 * 86_400))
def test_business_time_is_the_wall_clock_walk(cal: BusinessCalendar, a: datetime, x: int) -> None:
    """Windows per day, sums, and cumulative figures agree with the minute-by-minute walk,
    on holidays, make-up days and DST days alike."""
    b = a + timedelta(seconds=x, microseconds=x % 7)
    for day in local_days_around(cal, a, b):
        assert joined(cal.business_windows(day)) == joined(oracle_windows(cal, day)), day
    expected = oracle_between(cal, a, b)
    assert cal.business_seconds_between(a, b) == pytest.approx(expected, abs=TOL)
    assert cal.cumulative_business_seconds(b) - cal.cumulative_business_seconds(a) == pytest.approx(expected, abs=1e-5)


@ORACLE_SETTINGS
@given(calendars(), instants, st.integers(0, 3 * 86_400).map(float))
def test_due_times_are_the_wall_clock_walks(cal: BusinessCalendar, start: datetime, d: float) -> None:
    due = cal.add_business_seconds(start, d)
    assert oracle_between(cal, start, due) == pytest.approx(d, abs=TOL)
    if d:  # the earliest such instant: inside one of the walk's windows or at its end
        windows = [w for day in local_days_around(cal, due, due) for w in oracle_windows(cal, day)]
        assert any(s < due <= e for s, e in windows)


@SETTINGS
@given(calendars(), instants, st.integers(0, WEEKS6), durations)
def test_a_make_up_day_counts_its_hours(cal: BusinessCalendar, a: datetime, x: int, d: float) -> None:
    b = a + timedelta(seconds=x)
    day = b.astimezone(ZoneInfo(cal.timezone)).date()
    assume(day not in cal.holidays)
    worked = cal.model_copy(update={"make_up_days": cal.make_up_days | {day}})
    # The day now has the make-up hours (whatever its weekday) and nothing else changes.
    assert joined(worked.business_windows(day)) == joined(oracle_windows(worked, day))
    assert [worked.business_windows(n) for n in (day - timedelta(days=1), day + timedelta(days=1))] == [
        cal.business_windows(n) for n in (day - timedelta(days=1), day + timedelta(days=1))]
    on_the_day = sum((e - s).total_seconds() for s, e in worked.business_windows(day))
    was = sum((e - s).total_seconds() for s, e in cal.business_windows(day))
    start = a - timedelta(days=2)
    assert worked.business_seconds_between(start, b + timedelta(days=2)) == pytest.approx(
        cal.business_seconds_between(start, b + timedelta(days=2)) + on_the_day - was, abs=TOL)
    # Whole days later, everything has shifted by the day's difference.
    far = b + timedelta(days=30)
    assert worked.cumulative_business_seconds(far) - cal.cumulative_business_seconds(far) == pytest.approx(
        on_the_day - was, abs=1e-5)
    due = worked.add_business_seconds(a, d)
    assert worked.business_seconds_between(a, due) == pytest.approx(d, abs=TOL)


# Pauses as (offset from the start, length) so that they actually overlap the clock.
pause_specs = st.lists(st.tuples(st.integers(-3 * 86_400, 3 * WEEKS6 // 2), st.integers(0, 5 * 86_400)), max_size=4)


def make_pauses(start: datetime, specs: list[tuple[int, int]]) -> list[tuple[datetime, datetime]]:
    return [(start + timedelta(seconds=o), start + timedelta(seconds=o + n)) for o, n in specs]


def union_business(cal: BusinessCalendar, spans: list[tuple[datetime, datetime]], lo: datetime, hi: datetime) -> float:
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in spans if min(b, hi) > max(a, lo))
    merged: list[list[datetime]] = []
    for a, b in clipped:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return sum(cal.business_seconds_between(a, b) for a, b in merged)


@SETTINGS
@given(calendars(), instants, st.integers(0, WEEKS6), pause_specs)
def test_pauses_never_count(cal: BusinessCalendar, a: datetime, x: int, specs: list) -> None:
    b, ps = a + timedelta(seconds=x), make_pauses(a, specs)
    expected = cal.business_seconds_between(a, b) - union_business(cal, ps, a, b)
    assert elapsed_business_seconds(cal, a, b, ps) == pytest.approx(expected, abs=TOL)
    assert elapsed_business_seconds(cal, a, b, list(reversed(ps)) + ps) == pytest.approx(expected, abs=TOL)


@SETTINGS
@given(calendars(), instants, durations, pause_specs)
def test_due_at_and_elapsed_are_inverse(cal: BusinessCalendar, start: datetime, d: float, specs: list) -> None:
    ps = make_pauses(start, specs)
    due = due_at(cal, start, d, ps)
    assert due >= due_at(cal, start, d) == cal.add_business_seconds(start, d)
    assert elapsed_business_seconds(cal, start, due, ps) == pytest.approx(d, abs=TOL)
    if d >= 1e-6:  # and it is the earliest such instant
        assert elapsed_business_seconds(cal, start, due - US, ps) < d - 0.5e-6


# --- DST ----------------------------------------------------------------------------------


def one_window_calendar(zone: str, window: str) -> BusinessCalendar:
    return BusinessCalendar(name=zone, timezone=zone, week={d: [window] for d in DAYS})


def hours_on(cal: BusinessCalendar, day: date) -> float:
    tz = ZoneInfo(cal.timezone)
    lo = datetime.combine(day, time(0), tz)
    hi = datetime.combine(day + timedelta(days=1), time(0), tz)
    from_windows = sum((e - s).total_seconds() for s, e in cal.business_windows(day))
    between = cal.business_seconds_between(lo, hi)
    assert from_windows == between
    return between / 3600


@pytest.mark.parametrize(
    ("zone", "day", "full_day_hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("Europe/Berlin", date(2026, 10, 26), 24),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Australia/Sydney", date(2026, 4, 5), 25),
        ("Australia/Sydney", date(2026, 10, 4), 23),
        ("Asia/Beirut", date(2026, 3, 29), 23),  # 00:00 does not exist: the day starts at 01:00
        ("Asia/Beirut", date(2026, 10, 24), 25),  # 23:00-24:00 happens twice
        ("America/Santiago", date(2026, 9, 6), 23),
    ],
)
def test_dst_days(zone: str, day: date, full_day_hours: int) -> None:
    assert hours_on(one_window_calendar(zone, "00:00-24:00"), day) == full_day_hours
    assert hours_on(one_window_calendar(zone, "09:00-17:00"), day) == 8


def test_window_starting_in_the_spring_forward_gap_starts_at_the_transition() -> None:
    cal = one_window_calendar("Europe/Berlin", "02:30-04:00")  # 02:00-03:00 does not exist
    assert cal.business_windows(date(2026, 3, 29)) == [
        (datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 3, 29, 2, tzinfo=UTC))
    ]
    gone = one_window_calendar("Europe/Berlin", "02:00-02:45")
    assert gone.business_windows(date(2026, 3, 29)) == []
    assert hours_on(gone, date(2026, 3, 30)) == 0.75


def test_window_across_the_fall_back_fold_keeps_the_repeated_hour() -> None:
    cal = one_window_calendar("Europe/Berlin", "02:30-05:00")  # 02:00-03:00 happens twice
    assert cal.business_windows(date(2026, 10, 25)) == [
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 4, tzinfo=UTC))
    ]
    # A window ending inside the fold ends at the second 02:30 (CET), not the first (CEST).
    ends_in_fold = one_window_calendar("Europe/Berlin", "01:00-02:30")
    assert hours_on(ends_in_fold, date(2026, 10, 25)) == 2.5
    # Windows touching at an ambiguous time overlap in UTC and must count once: 25 h.
    split = BusinessCalendar(name="split", timezone="Europe/Berlin", week={"sun": ["00:00-02:30", "02:30-24:00"]})
    assert hours_on(split, date(2026, 10, 25)) == 25


def test_add_across_spring_forward_counts_real_time() -> None:
    cal = one_window_calendar("Europe/Berlin", "00:00-24:00")
    start = datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    # 3 business hours after local midnight is 04:00 local: 01:00-02:00 CET, then 03:00-04:00 CEST.
    assert cal.add_business_seconds(start, 3 * 3600) == datetime(2026, 3, 29, 2, tzinfo=UTC)


# --- worked examples on the packaged Shanghai business calendar ----------------------------

SH = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def business() -> BusinessCalendar:
    return load_sla_policy().calendars["business"]


@pytest.mark.parametrize(
    ("registered", "minutes", "due"),
    [
        (datetime(2026, 11, 6, 17, 30), 120, datetime(2026, 11, 9, 10, 30)),  # Friday evening -> Monday
        (datetime(2026, 11, 4, 11, 30), 120, datetime(2026, 11, 4, 14, 30)),  # across the lunch break
        (datetime(2026, 11, 4, 17, 0), 60, datetime(2026, 11, 4, 18, 0)),  # ends exactly at closing
        (datetime(2026, 11, 4, 12, 15), 30, datetime(2026, 11, 4, 13, 30)),  # registered over lunch
        (datetime(2026, 11, 7, 10, 0), 60, datetime(2026, 11, 9, 10, 0)),  # registered on Saturday
        (datetime(2025, 12, 31, 17, 0), 120, datetime(2026, 1, 4, 10, 0)),  # New Year holidays, then a make-up Sunday
        (datetime(2025, 1, 24, 17, 0), 120, datetime(2025, 1, 26, 10, 0)),  # make-up Sunday before the Spring Festival
        (datetime(2025, 1, 27, 17, 0), 120, datetime(2025, 2, 5, 10, 0)),  # Spring Festival closure 01-28..02-04
        (datetime(2025, 2, 7, 17, 30), 60, datetime(2025, 2, 8, 9, 30)),  # make-up Saturday after it
        (datetime(2026, 9, 30, 17, 0), 120, datetime(2026, 10, 8, 10, 0)),  # National Day 10-01..10-07
        (datetime(2026, 10, 9, 17, 0), 120, datetime(2026, 10, 10, 10, 0)),  # make-up Saturday 10-10
        (datetime(2026, 11, 2, 9, 0), 2880, datetime(2026, 11, 9, 18, 0)),  # 48 business hours = 6 days
        (datetime(2026, 11, 2, 9, 0), 12000, datetime(2026, 12, 4, 18, 0)),  # 5 weeks: Friday closing
    ],
)
def test_worked_examples(business: BusinessCalendar, registered: datetime, minutes: int, due: datetime) -> None:
    start = registered.replace(tzinfo=SH)
    got = business.add_business_seconds(start, minutes * 60)
    assert got == due.replace(tzinfo=SH) and got.tzinfo is UTC
    assert business.business_seconds_between(start, got) == minutes * 60


def test_pause_moves_the_due_time(business: BusinessCalendar) -> None:
    start = datetime(2026, 11, 4, 9, 0, tzinfo=SH)
    wait = (datetime(2026, 11, 4, 10, 0, tzinfo=SH), datetime(2026, 11, 5, 10, 0, tzinfo=SH))
    # 1 h before the pause, the clock stops for one business day, 1 h after it.
    assert due_at(business, start, 7200, [wait]) == datetime(2026, 11, 5, 11, 0, tzinfo=SH)
    assert elapsed_business_seconds(business, start, datetime(2026, 11, 5, 11, 0, tzinfo=SH), [wait]) == 7200
    # Reaching the target exactly when the clock stops: due then, not when it restarts.
    assert due_at(business, start, 3600, [wait]) == wait[0]
    # A pause that ended before the start changes nothing.
    early = (datetime(2026, 11, 3, 9, 0, tzinfo=SH), datetime(2026, 11, 3, 18, 0, tzinfo=SH))
    assert due_at(business, start, 7200, [early]) == datetime(2026, 11, 4, 11, 0, tzinfo=SH)


def test_zero_target_is_the_start_itself(business: BusinessCalendar) -> None:
    start = datetime(2026, 11, 7, 10, 0, tzinfo=SH)  # Saturday, closed
    assert business.add_business_seconds(start, 0) == start
    assert business.add_business_seconds(start, 0).tzinfo is UTC
    assert due_at(business, start, 0) == start


def test_cumulative_epoch() -> None:
    assert TWENTY_FOUR_SEVEN.cumulative_business_seconds(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert TWENTY_FOUR_SEVEN.cumulative_business_seconds(datetime(1970, 1, 2, tzinfo=UTC)) == 86_400
    assert TWENTY_FOUR_SEVEN.cumulative_business_seconds(datetime(1969, 12, 31, tzinfo=UTC)) == -86_400
    berlin = one_window_calendar("Europe/Berlin", "00:00-24:00")
    assert berlin.cumulative_business_seconds(datetime(1970, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))) == 0
    # Long spans agree with plain elapsed time on an always-open calendar.
    a, b = datetime(1999, 5, 1, 12, tzinfo=UTC), datetime(2031, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert TWENTY_FOUR_SEVEN.business_seconds_between(a, b) == (b - a).total_seconds()
    assert TWENTY_FOUR_SEVEN.add_business_seconds(a, (b - a).total_seconds()) == b
    # On a DST calendar open around the clock, business time is real elapsed time too,
    # also before the epoch (New York had DST in the 1960s).
    assert berlin.business_seconds_between(a, b) == (b - a).total_seconds()
    ny = one_window_calendar("America/New_York", "00:00-24:00")
    ny_epoch = datetime(1970, 1, 1, tzinfo=ZoneInfo("America/New_York"))
    for t in (datetime(1961, 7, 4, 12, tzinfo=UTC), datetime(1975, 1, 1, tzinfo=UTC)):
        assert ny.cumulative_business_seconds(t) == (t - ny_epoch).total_seconds()


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("day", [date(2026, 1, 15), date(2026, 7, 15)])
def test_instants_next_to_local_midnight(zone: str, day: date) -> None:
    # Summer and winter offsets on both hemispheres: the instant is placed on its local day.
    cal = one_window_calendar(zone, "00:00-24:00")
    tz = ZoneInfo(zone)
    late = datetime.combine(day, time(23, 30), tz)
    early = datetime.combine(day + timedelta(days=1), time(0, 30), tz)
    assert cal.business_seconds_between(late, early) == 3600
    assert cal.cumulative_business_seconds(early) - cal.cumulative_business_seconds(late) == 3600
    assert cal.add_business_seconds(late, 3600) == early


def test_dst_corrections_before_the_epoch() -> None:
    # 00:00-01:30 gains an hour on fall-back days (01:30 is reached twice) but loses none
    # in spring (the gap is at 02:00): every year adds a net hour the arithmetic must carry.
    cal = one_window_calendar("America/New_York", "00:00-01:30")
    a, b = datetime(1966, 6, 1, tzinfo=UTC), datetime(1971, 6, 1, tzinfo=UTC)
    assert cal.business_seconds_between(a, b) == windows_between(cal, a, b)
    assert cal.business_seconds_between(a, b) != (b - a).days * 5400


def test_naive_and_bad_input_is_rejected(business: BusinessCalendar) -> None:
    naive, aware = datetime(2026, 11, 4, 9), datetime(2026, 11, 4, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="naive datetime"):
        business.business_seconds_between(naive, aware)
    with pytest.raises(ValueError, match="naive datetime"):
        business.add_business_seconds(naive, 60)
    with pytest.raises(ValueError, match="naive datetime"):
        business.cumulative_business_seconds(naive)
    with pytest.raises(ValueError, match="naive datetime"):
        due_at(business, aware, 60, [(naive, aware)])
    with pytest.raises(ValueError, match="naive datetime"):
        elapsed_business_seconds(business, aware, naive)
    with pytest.raises(ValueError, match="duration"):
        business.add_business_seconds(aware, -1)
    with pytest.raises(ValueError, match="pause ends"):
        due_at(business, aware, 60, [(aware, aware - US)])
