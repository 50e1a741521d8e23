"""The sane window for every instant: what commands, events and queries may hold.

Pure domain code. Every instant the system records or is asked about lies in a window
(`InstantWindow`), 1970-01-01 to 2200-01-01 (UTC, end exclusive) unless configuration
narrows it (`complaints.settings`: `COMPLAINTS_EARLIEST_INSTANT`,
`COMPLAINTS_LATEST_INSTANT`). Why these limits:

- business time is counted from 1970-01-01 in integer µs that must stay exact through
  a float of seconds (`aggregates.sla`, `projections.calendar_table`): 230 years of a
  24x7 calendar are 7.3e15 µs, under 2**53;
- the read models' calendar table covers, without gaps, every local year between the
  earliest and the latest event (plus one either side): a bounded window keeps that a
  bounded piece of work whatever an event says (an event in year 9999 once cost a read
  node minutes and gigabytes before it failed);
- the standard library's datetimes end at years 1 and 9999: arithmetic a few days past
  them (a local midnight, a week either side) raised OverflowError.

The write side refuses commands outside (422 naming the field; `occurred_at` also at most
the clock's skew after now); a read node dead-letters events outside; the read API
answers 422 for query instants outside; the SLA arithmetic and the calendar table refuse
instants and years outside the domain's own limits below, whatever reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["EARLIEST", "LATEST", "InstantOutOfRange", "InstantWindow", "WINDOW"]

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive


class InstantOutOfRange(ValueError):
    """An instant outside the window: `field` names what held it."""

    def __init__(self, field: str, value: datetime | str, limits: str) -> None:
        shown = value.isoformat() if isinstance(value, datetime) else value
        super().__init__(f"{field}: {shown} is outside the instants this system accepts ({limits})")
        self.field = field
        self.value = value
        self.limits = limits


@dataclass(frozen=True)
class InstantWindow:
    """[earliest, latest): aware instants, within the domain's own limits."""

    earliest: datetime = EARLIEST
    latest: datetime = LATEST

    def __post_init__(self) -> None:
        for name in ("earliest", "latest"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise ValueError(f"{name} must be an aware datetime, got {value!r}")
            object.__setattr__(self, name, value.astimezone(UTC))
        if not EARLIEST <= self.earliest < self.latest <= LATEST:
            raise ValueError(f"the window {self.describe()} must be non-empty and lie within"
                             f" {EARLIEST.isoformat()} .. {LATEST.isoformat()}")

    def __contains__(self, instant: datetime) -> bool:
        return self.earliest <= instant < self.latest

    def check(self, field: str, instant: datetime) -> datetime:
        """`instant`, or InstantOutOfRange naming `field`."""
        if instant not in self:
            raise InstantOutOfRange(field, instant, self.describe())
        return instant

    def describe(self) -> str:
        return f"from {self.earliest.isoformat()} up to, not including, {self.latest.isoformat()}"

    @property
    def years(self) -> range:
        """The UTC years the window touches."""
        return range(self.earliest.year, (self.latest - timedelta(microseconds=1)).year + 1)


WINDOW = InstantWindow()
