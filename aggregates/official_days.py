"""Public holidays and make-up working days (调休) as a government publishes them.

A business calendar names its source (`holidays_from = "chinese-calendar"` in the SLA
policy) instead of listing the days by hand; the days are resolved when the policy is
loaded. The source is a maintained package of pure data: importing it reads its own
modules and nothing else, so the domain stays free of I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Literal, get_args

import chinese_calendar

__all__ = ["HolidaySource", "HOLIDAY_SOURCES", "OfficialDays", "official_days"]

HolidaySource = Literal["chinese-calendar"]
HOLIDAY_SOURCES: tuple[str, ...] = get_args(HolidaySource)


@dataclass(frozen=True)
class OfficialDays:
    closures: frozenset[date]  # every day off of a holiday period, weekends inside it too
    make_up_days: frozenset[date]  # weekends worked in exchange for a holiday's bridge days
    first_year: int
    last_year: int  # later years have no official days until the package publishes them
    # Names the data exactly (source and package version): recorded with the policy's
    # version, because a newer package may move or add days.
    tag: str


def _chinese_calendar() -> OfficialDays:
    closures = frozenset(chinese_calendar.holidays)
    make_up = frozenset(chinese_calendar.workdays)
    years = [d.year for d in closures | make_up]
    return OfficialDays(closures, make_up, min(years), max(years), f"chinese-calendar-{chinese_calendar.__version__}")


_READERS = {"chinese-calendar": _chinese_calendar}
assert set(_READERS) == set(HOLIDAY_SOURCES)  # every source a policy may name can be read


@cache
def official_days(source: HolidaySource) -> OfficialDays:
    return _READERS[source]()
