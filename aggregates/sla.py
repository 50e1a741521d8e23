"""SLA policy and business-time arithmetic.

Pure domain code: the only I/O is `load_sla_policy` reading a TOML file.

Internally every instant is an integer count of microseconds since 1970-01-01 UTC, so
sums and differences are exact (no float drift over millions of calls); floats appear
only at the public boundary.  Per local day a calendar has a fixed list of business
windows as UTC instants; these are cached per (calendar engine, day), and the business
time before a day is computed arithmetically (whole weeks + corrections for holidays,
make-up working days and DST), so no function ever walks time second by second or, for
long spans, day by day.
"""

from __future__ import annotations

import math
import tomllib
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from aggregates.instants import EARLIEST, LATEST, InstantOutOfRange
from aggregates.official_days import HOLIDAY_SOURCES, HolidaySource, official_days

__all__ = [
    "Severity",
    "SEVERITIES",
    "WorkingWindow",
    "BusinessCalendar",
    "TWENTY_FOUR_SEVEN",
    "SlaTarget",
    "SlaRule",
    "SlaPolicy",
    "load_sla_policy",
    "due_at",
    "elapsed_business_seconds",
]

Severity = Literal["fatal", "major", "normal", "minor"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY_NAMES: tuple[str, ...] = get_args(DayName)  # index == date.weekday()

DEFAULT_POLICY_PATH = Path(__file__).with_name("sla_policy.toml")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORD = date(1970, 1, 1).toordinal()
_ONE_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
_WEEK_S = 7 * 86_400


# The instants business time is counted for: 1900 to 2300, well around the domain's window
# (aggregates.instants: 1970 to 2200, and the calendar table's year either side). Anything
# further is refused at once (InstantOutOfRange, a ValueError) instead of walking towards
# year 1 or 9999, where the standard library's datetimes end (OverflowError, after minutes).
# (Within a century or so of 1970 the cumulative µs also stay exact through a float.)
_FIRST_DAY = date(1900, 1, 1)
_LAST_DAY = date(2300, 1, 1)  # exclusive
assert _FIRST_DAY < date(EARLIEST.year - 1, 1, 1) - timedelta(days=2)
assert _LAST_DAY > date(LATEST.year + 1, 1, 1) + timedelta(days=2)
_MIN_US = (_FIRST_DAY.toordinal() - _EPOCH_ORD) * _DAY_US
_MAX_US = (_LAST_DAY.toordinal() - _EPOCH_ORD) * _DAY_US  # exclusive
_LIMITS = f"business time is counted from {_FIRST_DAY} up to {_LAST_DAY}"


def _to_us(dt: datetime) -> int:
    """Aware datetime -> exact µs since the Unix epoch (InstantOutOfRange past the limits)."""
    try:
        if dt.tzinfo is None:
            raise ValueError(f"naive datetime {dt!r}: SLA arithmetic needs timezone-aware datetimes")
        td = dt - _EPOCH
    except AttributeError:
        raise TypeError(f"expected an aware datetime, got {dt!r}") from None
    except TypeError:  # a tzinfo whose utcoffset() is None counts as naive
        raise ValueError(f"datetime {dt!r} has no UTC offset; pass an aware datetime") from None
    us = (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds  # faster than td // 1µs
    if not _MIN_US <= us < _MAX_US:
        raise InstantOutOfRange("instant", dt, _LIMITS)
    return us


def _check_day(n: int) -> int:
    """A local day's ordinal, if business time is counted on it (else InstantOutOfRange)."""
    if not _FIRST_DAY.toordinal() <= n < _LAST_DAY.toordinal():
        raise InstantOutOfRange("day", date.fromordinal(n).isoformat() if 0 < n <= date.max.toordinal() else str(n),
                                _LIMITS)
    return n


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(0, 0, us)  # positional: keyword timedelta() is ~50% slower


def _seconds_to_us(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {seconds!r}")
    return round(seconds * 1_000_000)


# ---------------------------------------------------------------------------------------
# Time-zone transitions (shared by every calendar in the same zone)


def _offset_at(tz: ZoneInfo, unix_s: int) -> timedelta | None:
    return datetime.fromtimestamp(unix_s, tz).utcoffset()


@lru_cache(maxsize=4096)
def _transition_days(tz: ZoneInfo, year: int) -> frozenset[int]:
    """Ordinals of local days in `year` that contain a UTC-offset change.

    Offsets are sampled weekly and each change is bisected to the second. That finds
    every change of every real zone; only a change and its reversal within one week
    would go unseen.
    """
    days: set[int] = set()
    lo = int((datetime(year, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()) - 2 * 86_400
    hi = int((datetime(year + 1, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()) + 2 * 86_400
    x, ox = lo, _offset_at(tz, lo)
    while x < hi:
        y = min(x + _WEEK_S, hi)
        oy = _offset_at(tz, y)
        if oy == ox:
            x = y
            continue
        a, b = x, y  # offset(a) == ox != offset(b): bisect to the first second of the change
        while b - a > 1:
            m = (a + b) // 2
            if _offset_at(tz, m) == ox:
                a = m
            else:
                b = m
        for inst in (b - 1, b):  # the day before and at the change: covers midnight changes
            d = datetime.fromtimestamp(inst, tz).date()
            if d.year == year:
                days.add(d.toordinal())
        x, ox = b, _offset_at(tz, b)
    return frozenset(days)


def _is_fixed_offset(key: str) -> bool:
    return key in ("UTC", "Etc/UTC", "Etc/UCT", "Etc/Zulu", "Etc/GMT", "GMT", "Zulu", "UCT") or (
        key.startswith("Etc/GMT")
    )


# ---------------------------------------------------------------------------------------
# The calendar engine: plain data + caches, separate from the pydantic model so that the
# hot path never touches pydantic, and so that it hashes by identity (fast lru_cache keys).

_Day = tuple[int, int, tuple[tuple[int, int], ...], int, int, int]
# (day start µs, next day start µs, business windows µs, business µs in the day,
#  cumulative business µs from the 1970-01-01 local day start to this day's start, ordinal)


_Windows = tuple[tuple[int, int], ...]  # ((start µs, end µs) wall clock from local midnight)


class _Engine:
    __slots__ = (
        "tz_key", "tz", "week", "holidays", "make_up", "make_up_windows", "nominal",
        "make_up_nominal", "week_total", "prefix7", "exc_days", "exc_prefix", "exc_epoch",
        "fixed", "guess_off", "_yd", "_S", "_S_lo", "_S_hi", "__weakref__",
    )

    def __init__(
        self, tz_key: str, week: tuple[_Windows, ...], holidays: frozenset[int],
        make_up: frozenset[int], make_up_windows: _Windows,
    ) -> None:
        self.tz_key = tz_key
        self.tz = ZoneInfo(tz_key)
        self.week = week  # per weekday (Mon=0)
        self.holidays = holidays  # day ordinals closed all day
        self.make_up = make_up  # day ordinals worked with make_up_windows, whatever the weekday
        self.make_up_windows = make_up_windows
        self.nominal = tuple(sum(e - s for s, e in w) for w in week)  # wall-clock µs/weekday
        self.make_up_nominal = sum(e - s for s, e in make_up_windows)
        self.week_total = sum(self.nominal)
        # Business µs of the first r days counted from 1970-01-01 (a Thursday, weekday 3).
        self.prefix7 = [0] * 8
        for r in range(7):
            self.prefix7[r + 1] = self.prefix7[r] + self.nominal[(3 + r) % 7]
        # The days off the weekly pattern: a holiday removes its weekday's time, a make-up
        # day has its own hours instead. Prefix sums of these signed corrections make the
        # correction before any day O(log h).
        exceptions = sorted(
            [(h, -self.nominal[(h - 1) % 7]) for h in holidays]
            + [(m, self.make_up_nominal - self.nominal[(m - 1) % 7]) for m in make_up]
        )
        self.exc_days = [n for n, _ in exceptions]
        self.exc_prefix = [0]
        for _, delta in exceptions:
            self.exc_prefix.append(self.exc_prefix[-1] + delta)
        self.exc_epoch = self.exc_prefix[bisect_left(self.exc_days, _EPOCH_ORD)]
        self.fixed = _is_fixed_offset(tz_key)
        off = datetime(2026, 1, 1, tzinfo=UTC).astimezone(self.tz).utcoffset()
        self.guess_off = (off or timedelta(0)) // _ONE_US
        self._yd: dict[int, tuple[tuple[int, int], ...]] = {}  # year -> DST (day, delta µs)
        self._S: dict[int, int] = {1970: 0}  # year -> DST delta µs from 1970-01-01 to Jan 1
        self._S_lo = self._S_hi = 1970

    def __reduce__(self) -> tuple[Any, ...]:  # pickle/deepcopy rebuild the caches
        return (_Engine, (self.tz_key, self.week, self.holidays, self.make_up, self.make_up_windows))

    def _plan(self, n: int) -> tuple[_Windows, int]:
        """Day `n`'s wall-clock windows and their nominal µs (holidays aside)."""
        if n in self.make_up:
            return self.make_up_windows, self.make_up_nominal
        return self.week[(n - 1) % 7], self.nominal[(n - 1) % 7]

    # -- local wall clock -> UTC -------------------------------------------------------

    def _resolve(self, n: int, wall_us: int, last: bool) -> int:
        """UTC µs of wall time `wall_us` after local midnight of day ordinal `n`.

        Ambiguous (fall-back) times take the first occurrence for window starts and the
        last for window ends, so a window never loses time; a non-existent (spring-forward)
        time maps to the transition itself, the first instant the wall clock reaches it.
        """
        naive = datetime.fromordinal(n) + timedelta(microseconds=wall_us)
        u = (naive.replace(tzinfo=self.tz, fold=int(last)) - _EPOCH) // _ONE_US
        if _from_us(u).astimezone(self.tz).replace(tzinfo=None) == naive:
            return u
        lo = (naive.replace(tzinfo=self.tz, fold=1) - _EPOCH) // _ONE_US  # wall < naive here
        hi = (naive.replace(tzinfo=self.tz, fold=0) - _EPOCH) // _ONE_US  # wall > naive here
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _from_us(mid).astimezone(self.tz).replace(tzinfo=None) >= naive:
                hi = mid
            else:
                lo = mid
        return hi

    def compute(self, n: int) -> tuple[int, int, tuple[tuple[int, int], ...], int]:
        start = self._resolve(n, 0, False)
        end = self._resolve(n + 1, 0, False)
        if n in self.holidays:
            return start, end, (), 0
        spec, nominal = self._plan(n)
        if end - start == _DAY_US:  # no offset change today: wall clock == elapsed time
            wins = tuple((start + s, start + e) for s, e in spec)
            return start, end, wins, nominal
        out: list[tuple[int, int]] = []
        for ws, we in spec:
            s = max(self._resolve(n, ws, False), start)
            e = min(self._resolve(n, we, True), end)
            if e <= s:
                continue  # the whole window fell into a spring-forward gap
            if out and s <= out[-1][1]:  # a fold made neighbouring windows overlap: merge
                out[-1] = (out[-1][0], max(e, out[-1][1]))
            else:
                out.append((s, e))
        return start, end, tuple(out), sum(e - s for s, e in out)

    # -- cumulative business time, arithmetically --------------------------------------

    def _year_deltas(self, year: int) -> tuple[tuple[int, int], ...]:
        r = self._yd.get(year)
        if r is None:
            found = []
            for e in sorted(_transition_days(self.tz, year)):
                if e in self.holidays:
                    continue
                delta = self.compute(e)[3] - self._plan(e)[1]
                if delta:
                    found.append((e, delta))
            r = self._yd[year] = tuple(found)
        return r

    def _dst_before_year(self, year: int) -> int:
        S = self._S
        while self._S_hi < year:
            y = self._S_hi
            S[y + 1] = S[y] + sum(d for _, d in self._year_deltas(y))
            self._S_hi = y + 1
        while self._S_lo > year:
            y = self._S_lo
            S[y - 1] = S[y] - sum(d for _, d in self._year_deltas(y - 1))
            self._S_lo = y - 1
        return S[year]

    def cum_at(self, n: int) -> int:
        """Business µs from the start of local 1970-01-01 to the start of day `n`."""
        w, r = divmod(n - _EPOCH_ORD, 7)
        c = w * self.week_total + self.prefix7[r]
        if self.exc_days:
            c += self.exc_prefix[bisect_left(self.exc_days, n)] - self.exc_epoch
        if not self.fixed:
            year = date.fromordinal(n).year
            c += self._dst_before_year(year)
            for e, d in self._year_deltas(year):
                if e >= n:
                    break
                c += d
        return c


@lru_cache(maxsize=16_384)
def _day(eng: _Engine, n: int) -> _Day:
    start, end, wins, total = eng.compute(n)
    return start, end, wins, total, eng.cum_at(n), n


def _locate(eng: _Engine, t: int) -> _Day:
    """The cached local day whose [start, next start) contains instant t."""
    n = _EPOCH_ORD + (t + eng.guess_off) // _DAY_US
    d = _day(eng, n)
    while t < d[0]:
        n -= 1
        d = _day(eng, n)
    while t >= d[1]:
        n += 1
        d = _day(eng, n)
    return d


def _cum(eng: _Engine, t: int) -> int:
    return _cum_in(_locate(eng, t), t)


def _cum_in(d: _Day, t: int) -> int:
    acc = d[4]
    for s, e in d[2]:
        if t <= s:
            break
        if t < e:
            return acc + t - s
        acc += e - s
    return acc


def _solve(d: _Day, rem: int) -> int:
    """Earliest instant in day d by which `rem` (> 0) business µs of the day have passed."""
    for s, e in d[2]:
        if rem <= e - s:
            return s + rem
        rem -= e - s
    raise AssertionError("business time bookkeeping is inconsistent")  # pragma: no cover


def _add(eng: _Engine, t: int, d_us: int) -> int:
    if d_us <= 0:
        return t
    day = _locate(eng, t)
    target = _cum_in(day, t) + d_us
    n = day[5]
    for _ in range(24):  # short targets (<= ~3 weeks): walk cached days
        if target <= day[4] + day[3]:
            return _solve(day, target - day[4])
        n += 1
        day = _day(eng, n)
    # Long targets: jump whole weeks arithmetically, then bisect on day-start cum values
    # (cum_at is pure arithmetic, so the search does not flood the day cache).
    last = _LAST_DAY.toordinal() - 1
    lo, clo = n, day[4]  # invariant: cum_at(lo) < target
    weeks = (target - clo) // eng.week_total
    if weeks > 1:
        g = lo + 7 * (weeks - 1)  # one week of slack for DST extras
        if g >= last:
            raise InstantOutOfRange("due time", f"{d_us / 1e6:.0f} business seconds after {_from_us(t)}", _LIMITS)
        if eng.cum_at(g) < target:
            lo = g
    step = 7
    hi = min(lo + step, last)
    while eng.cum_at(hi) < target:  # a target past the limits is refused, not walked to
        if hi >= last:
            raise InstantOutOfRange("due time", f"{d_us / 1e6:.0f} business seconds after {_from_us(t)}", _LIMITS)
        lo, step = hi, step * 2
        hi = min(lo + step, last)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if eng.cum_at(mid) < target:
            lo = mid
        else:
            hi = mid
    day = _day(eng, lo)
    return _solve(day, target - day[4])


# ---------------------------------------------------------------------------------------
# Models


class WorkingWindow(BaseModel):
    """A local wall-clock span [start, end); end 00:00 (written "24:00") is end of day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time
    end: time

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):  # compact TOML form "09:00-12:00"
            parts = data.split("-")
            if len(parts) != 2:
                raise ValueError(f"window {data!r} must look like 'HH:MM-HH:MM'")
            data = {"start": parts[0].strip(), "end": parts[1].strip()}
        if isinstance(data, dict) and data.get("end") in ("24:00", "24:00:00"):
            data = {**data, "end": time(0)}  # time() cannot hold 24:00; 00:00 end == midnight
        return data

    @field_validator("start", "end")
    @classmethod
    def _local(cls, v: time) -> time:
        if v.tzinfo is not None:
            raise ValueError("window times are local wall-clock times; drop the UTC offset")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> WorkingWindow:
        if self.end != time(0) and self.end <= self.start:
            raise ValueError(f"window {self}: end must be after start (write 24:00 for midnight)")
        return self

    @property
    def ends_at_midnight(self) -> bool:
        return self.end == time(0)

    @property
    def span_us(self) -> tuple[int, int]:
        """(start, end) in µs after local midnight."""

        def us(t: time) -> int:
            return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond

        return us(self.start), _DAY_US if self.ends_at_midnight else us(self.end)

    def __str__(self) -> str:
        end = "24:00" if self.ends_at_midnight else self.end.isoformat("minutes")
        return f"{self.start.isoformat('minutes')}-{end}"


def _check_windows(windows: tuple[WorkingWindow, ...]) -> tuple[WorkingWindow, ...]:
    ordered = tuple(sorted(windows, key=lambda w: w.start))
    for a, b in zip(ordered, ordered[1:]):
        if b.span_us[0] < a.span_us[1]:
            raise ValueError(f"windows {a} and {b} overlap")
    return ordered


def _expand_days(v: Any) -> Any:
    """Accept dates plus "YYYY-MM-DD..YYYY-MM-DD" ranges (inclusive)."""
    if isinstance(v, (str, date)):
        v = [v]
    if not isinstance(v, (list, tuple, set, frozenset)):
        return v
    out: list[Any] = []
    for item in v:
        if isinstance(item, str) and ".." in item:
            a, b = (date.fromisoformat(p.strip()) for p in item.split("..", 1))
            if b < a:
                raise ValueError(f"range {item!r} ends before it starts")
            out.extend(a + timedelta(days=i) for i in range((b - a).days + 1))
        else:
            out.append(item)
    return out


_DayWindows = Annotated[tuple[WorkingWindow, ...], AfterValidator(_check_windows)]


def _days_in_effect(
    source: HolidaySource | None, holidays: frozenset[date], make_up_days: frozenset[date]
) -> tuple[frozenset[date], frozenset[date]]:
    """(closed days, make-up days): the source's, where the calendar's own days do not
    say otherwise, plus the calendar's own."""
    if source is None:
        return holidays, make_up_days
    official = official_days(source)
    return (
        holidays | (official.closures - make_up_days),
        make_up_days | (official.make_up_days - holidays),
    )


class BusinessCalendar(BaseModel):
    """Time zone + weekly working windows + holidays and make-up working days (调休);
    all arithmetic is DST-correct."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    timezone: str
    week: dict[DayName, _DayWindows]
    # Public holidays and make-up days as published (aggregates.official_days), resolved
    # at load; the calendar's own `holidays` and `make_up_days` come on top and win.
    holidays_from: HolidaySource | None = None
    holidays: frozenset[date] = frozenset()
    make_up_days: frozenset[date] = frozenset()  # worked whatever their weekday
    # None: the hours of Monday to Friday, which must then be the same.
    make_up_hours: _DayWindows | None = Field(default=None, validate_default=True)

    _engine: _Engine = PrivateAttr()
    _key: tuple[Any, ...] = PrivateAttr()
    _closed: frozenset[date] = PrivateAttr()
    _worked: frozenset[date] = PrivateAttr()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as 'Asia/Shanghai')")
        return v

    @field_validator("week")
    @classmethod
    def _open_sometime(cls, v: dict[str, tuple[WorkingWindow, ...]]) -> dict:
        if not any(v.values()):
            raise ValueError("the week has no working window; the SLA clock could never run")
        return v

    @field_validator("holidays", "make_up_days", mode="before")
    @classmethod
    def _ranges(cls, v: Any) -> Any:
        return _expand_days(v)

    @field_validator("make_up_days")
    @classmethod
    def _not_also_closed(cls, v: frozenset[date], info: ValidationInfo) -> frozenset[date]:
        both = sorted(v & info.data.get("holidays", frozenset()))
        if both:
            raise ValueError(f"{', '.join(map(str, both))}: both a holiday and a make-up day; keep one")
        return v

    @field_validator("make_up_hours")
    @classmethod
    def _hours_known(cls, v: tuple[WorkingWindow, ...] | None, info: ValidationInfo) -> Any:
        if v is not None or not {"week", "holidays", "make_up_days"} <= info.data.keys():
            return v  # given, or an earlier field failed (and is reported)
        worked = _days_in_effect(info.data.get("holidays_from"), info.data["holidays"], info.data["make_up_days"])[1]
        weekdays = {info.data["week"].get(d, ()) for d in DAY_NAMES[:5]}
        if worked and (len(weekdays) != 1 or not any(weekdays)):
            raise ValueError(
                "make-up days work Monday to Friday's hours, but those differ or are closed: "
                'give the hours, e.g. make_up_hours = ["09:00-12:00", "13:00-18:00"]'
            )
        return v

    @field_serializer("holidays", "make_up_days")
    def _sorted_days(self, v: frozenset[date]) -> list[date]:
        # Set order follows date hashes, which are seeded per process: sort so that dumps
        # (and fingerprints taken from them) are stable across runs.
        return sorted(v)

    def model_post_init(self, context: Any, /) -> None:
        week = tuple(
            tuple(w.span_us for w in self.week.get(d, ())) for d in DAY_NAMES  # type: ignore[call-overload]
        )
        hours = self.make_up_hours if self.make_up_hours is not None else self.week.get("mon", ())
        make_up_windows = tuple(w.span_us for w in hours)
        self._closed, self._worked = _days_in_effect(self.holidays_from, self.holidays, self.make_up_days)
        self._key = (self.name, self.timezone, week, self._closed, self._worked, make_up_windows)
        self._engine = _Engine(
            self.timezone, week, frozenset(d.toordinal() for d in self._closed),
            frozenset(d.toordinal() for d in self._worked), make_up_windows,
        )

    @property
    def all_holidays(self) -> frozenset[date]:
        """Every day the calendar is closed: its own holidays and its source's."""
        return self._closed

    @property
    def all_make_up_days(self) -> frozenset[date]:
        """Every make-up working day: its own and its source's."""
        return self._worked

    # Frozen pydantic models hash their fields; a dict field is unhashable, so hash the
    # normalised spec instead (equal calendars share hash and equality).
    def __hash__(self) -> int:
        return hash(self.__pydantic_private__["_key"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessCalendar):
            return NotImplemented
        return self.__pydantic_private__["_key"] == other.__pydantic_private__["_key"]

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> BusinessCalendar:
        # The default model_copy(update=...) skips validation and would keep a stale engine.
        if update:
            return type(self).model_validate({**dict(self), **update})
        return self

    # -- public arithmetic --------------------------------------------------------------

    def business_windows(self, day: date) -> list[tuple[datetime, datetime]]:
        """Business windows of the local `day` as aware UTC instants (empty on holidays)."""
        wins = _day(self.__pydantic_private__["_engine"], _check_day(day.toordinal()))[2]
        return [(_from_us(s), _from_us(e)) for s, e in wins]

    def business_seconds_between(self, start: datetime, end: datetime) -> float:
        a, b = _to_us(start), _to_us(end)
        if b <= a:
            return 0.0
        eng = self.__pydantic_private__["_engine"]
        return (_cum(eng, b) - _cum(eng, a)) / 1_000_000

    def add_business_seconds(self, start: datetime, seconds: float) -> datetime:
        """Earliest instant t >= start with `seconds` of business time in [start, t]."""
        t = _to_us(start)
        d = _seconds_to_us(seconds)
        if d == 0:
            return start.astimezone(UTC)
        return _from_us(_add(self.__pydantic_private__["_engine"], t, d))

    def cumulative_business_seconds(self, t: datetime) -> float:
        """Business seconds since the start of local 1970-01-01 (negative before it)."""
        return _cum(self.__pydantic_private__["_engine"], _to_us(t)) / 1_000_000


def _eng(cal: BusinessCalendar) -> _Engine:
    # Read the private slot directly (the methods above do the same): pydantic's
    # __getattr__ path for private attributes costs ~1 µs, more than the arithmetic.
    return cal.__pydantic_private__["_engine"]  # type: ignore[index]


TWENTY_FOUR_SEVEN = BusinessCalendar(
    name="24x7",
    timezone="UTC",
    week={d: (WorkingWindow(start=time(0), end=time(0)),) for d in DAY_NAMES},  # type: ignore[misc]
)


class SlaTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    first_response_minutes: Annotated[int, Field(gt=0, strict=True)]
    resolution_minutes: Annotated[int, Field(gt=0, strict=True)]
    next_response_minutes: Annotated[int, Field(gt=0, strict=True)] | None = None


class SlaRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    severity: Severity | None = None  # None matches any severity
    category: str | None = None  # None matches any category (including none)
    calendar: str
    targets: SlaTarget

    def matches(self, severity: str, category: str | None) -> bool:
        return (self.severity is None or self.severity == severity) and (
            self.category is None or self.category == category
        )


class SlaPolicy(BaseModel):
    """Versioned SLA policy; rules are matched top-down and the first match wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1)
    warning_before_minutes: Annotated[int, Field(ge=0, strict=True)] = 15
    # The share of clocks the desk aims to meet in time: the dashboards' target line.
    target_attainment: Annotated[float, Field(gt=0, le=1)] = 0.9
    calendars: dict[str, BusinessCalendar]
    rules: list[SlaRule] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _version_names_the_days_data(cls, data: Any) -> Any:
        # A calendar whose days come from a package changes when the package does (next
        # year's days, a corrected one) while the file stays the same: the data's tag is
        # part of the version recorded at triage, so one version is one set of days.
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            return data
        calendars = data.get("calendars")
        sources = {
            c.get("holidays_from") if isinstance(c, dict) else getattr(c, "holidays_from", None)
            for c in (calendars.values() if isinstance(calendars, dict) else ())
        }
        suffix = "".join(f"+{official_days(s).tag}" for s in HOLIDAY_SOURCES if s in sources)
        if not data["version"] or data["version"].endswith(suffix):  # empty: min_length says so
            return data
        return {**data, "version": data["version"] + suffix}

    @field_validator("calendars", mode="before")
    @classmethod
    def _names_from_keys(cls, v: Any) -> Any:
        # In TOML the table key is the name; writing `name` as well is allowed if it agrees.
        if isinstance(v, dict):
            return {k: ({"name": k, **c} if isinstance(c, dict) else c) for k, c in v.items()}
        return v

    @field_validator("calendars")
    @classmethod
    def _names_agree(cls, v: dict[str, BusinessCalendar]) -> dict[str, BusinessCalendar]:
        for key, cal in v.items():
            if cal.name != key:
                raise ValueError(f"calendars.{key}.name: is {cal.name!r}, must equal its key {key!r}")
        return v

    @field_validator("rules")
    @classmethod
    def _rules_resolve(cls, v: list[SlaRule], info: ValidationInfo) -> list[SlaRule]:
        calendars = info.data.get("calendars")
        if calendars is None:  # calendars failed validation; that error is reported already
            return v
        problems = [
            f"rules.{i}.calendar: unknown calendar {r.calendar!r} "
            f"(known: {', '.join(sorted(calendars)) or 'none'})"
            for i, r in enumerate(v)
            if r.calendar not in calendars
        ]
        # A severity is always answered only by a rule that ignores the category.
        uncovered = [
            s for s in SEVERITIES
            if not any(r.category is None and r.severity in (s, None) for r in v)
        ]
        if uncovered:
            problems.append(
                "no rule matches severity "
                + ", ".join(repr(s) for s in uncovered)
                + " for every category (add a rule with that severity and no category, "
                "or a catch-all rule)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return v

    def target_for(self, severity: Severity, category: str | None) -> tuple[SlaTarget, BusinessCalendar]:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}")
        for rule in self.rules:
            if rule.matches(severity, category):
                return rule.targets, self.calendars[rule.calendar]
        raise LookupError(f"no SLA rule for {severity!r}/{category!r}")  # validation prevents it


def load_sla_policy(path: str | Path | None = None) -> SlaPolicy:
    """Read and validate a policy file; None loads the packaged aggregates/sla_policy.toml."""
    p = Path(path) if path is not None else DEFAULT_POLICY_PATH
    with p.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            e.add_note(f"while reading SLA policy {p}")
            raise
    try:
        return SlaPolicy.model_validate(data)
    except ValueError as e:  # pydantic.ValidationError; keep its type, name the file
        e.add_note(f"while loading SLA policy {p}")
        raise


# ---------------------------------------------------------------------------------------
# Pauses (waiting on the customer)


def _merged(pauses: Sequence[tuple[datetime, datetime]], lo: int, hi: int | None) -> list[tuple[int, int]]:
    """Pauses as sorted disjoint µs intervals clipped to [lo, hi]."""
    spans: list[tuple[int, int]] = []
    for ps, pe in pauses:
        a, b = _to_us(ps), _to_us(pe)
        if b < a:
            raise ValueError(f"pause ends ({pe}) before it starts ({ps})")
        a = max(a, lo)
        if hi is not None:
            b = min(b, hi)
        if b > a:
            spans.append((a, b))
    spans.sort()
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def due_at(
    calendar: BusinessCalendar,
    start: datetime,
    target_seconds: float,
    pauses: Sequence[tuple[datetime, datetime]] = (),
) -> datetime:
    """When business time since `start`, not counting paused business time, reaches the target."""
    eng = _eng(calendar)
    t = _to_us(start)
    rem = _seconds_to_us(target_seconds)
    if rem == 0:
        return start.astimezone(UTC)
    for a, b in _merged(pauses, t, None):
        before = _cum(eng, a) - _cum(eng, t)  # business time until the clock stops
        if rem <= before:
            break
        rem -= before
        t = b
    return _from_us(_add(eng, t, rem))


def elapsed_business_seconds(
    calendar: BusinessCalendar,
    start: datetime,
    end: datetime,
    pauses: Sequence[tuple[datetime, datetime]] = (),
) -> float:
    """Business seconds in [start, end] minus those inside the (merged, clipped) pauses."""
    eng = _eng(calendar)
    a, b = _to_us(start), _to_us(end)
    if b <= a:
        return 0.0
    total = _cum(eng, b) - _cum(eng, a)
    for ps, pe in _merged(pauses, a, b):
        total -= _cum(eng, pe) - _cum(eng, ps)
    return total / 1_000_000
