"""SLA policy file: loading, first-match rules and validation errors that name the field."""

from __future__ import annotations

import hashlib
import pickle
from datetime import date, time, timedelta
from functools import lru_cache
from pathlib import Path

import chinese_calendar
import pytest
from pydantic import ValidationError

from aggregates.official_days import official_days
from aggregates.sla import (
    TWENTY_FOUR_SEVEN,
    BusinessCalendar,
    SlaPolicy,
    SlaTarget,
    WorkingWindow,
    load_sla_policy,
)

VALID = """
version = "test-1"

[calendars.business]
timezone = "Asia/Shanghai"
holidays = [2027-01-01, "2027-02-06..2027-02-08"]
[calendars.business.week]
mon = ["09:00-12:00", "13:00-18:00"]

[calendars.always]
timezone = "UTC"
week = { mon = ["00:00-24:00"], sun = [{ start = "00:00", end = "24:00" }] }

[[rules]]
severity = "fatal"
calendar = "always"
targets = { first_response_minutes = 15, resolution_minutes = 240 }

[[rules]]
calendar = "business"
targets = { first_response_minutes = 120, resolution_minutes = 2880 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple, str]]:
    return [(e["loc"], e["msg"]) for e in exc.value.errors()]


def test_packaged_policy_loads() -> None:
    policy = load_sla_policy()
    assert policy.version == f"2026-12-03+chinese-calendar-{chinese_calendar.__version__}"
    assert policy.warning_before_minutes == 15
    assert set(policy.calendars) == {"business", "always"}
    business = policy.calendars["business"]
    assert business.timezone == "Asia/Shanghai" and business.name == "business"
    assert business.holidays_from == "chinese-calendar" and not business.holidays and not business.make_up_days
    # The Spring Festival of 2025: closed 01-28..02-04, the Sunday before and the
    # Saturday after worked.
    assert {date(2025, 1, 28) + timedelta(days=i) for i in range(8)} <= business.all_holidays
    assert {date(2025, 1, 26), date(2025, 2, 8)} <= business.all_make_up_days
    assert date(2026, 12, 25) not in business.all_holidays
    assert [str(w) for w in business.week["mon"]] == ["09:00-12:00", "13:00-18:00"]
    assert "sat" not in business.week
    assert policy.calendars["always"].week["sun"][0].ends_at_midnight

    target, calendar = policy.target_for("fatal", None)
    assert (target.first_response_minutes, target.resolution_minutes, target.next_response_minutes) == (15, 240, 60)
    assert calendar.name == "always"
    for severity, first, resolution in [("major", 60, 1440), ("normal", 120, 2880), ("minor", 480, 5760)]:
        target, calendar = policy.target_for(severity, "delivery")
        assert (target.first_response_minutes, target.resolution_minutes) == (first, resolution)
        assert calendar is business


def test_first_match_wins() -> None:
    policy = load_sla_policy()
    # The billing override sits above the generic normal rule, so it wins for billing only.
    assert policy.target_for("normal", "billing")[0].first_response_minutes == 60
    assert policy.target_for("normal", "delivery")[0].first_response_minutes == 120
    assert policy.target_for("normal", None)[0].first_response_minutes == 120
    assert policy.target_for("major", "billing")[0].first_response_minutes == 60  # severity differs
    # Put the same override below the generic rule and it is never reached.
    reordered = policy.model_copy(update={"rules": [r for r in policy.rules if r.category is None] + policy.rules[:1]})
    assert reordered.target_for("normal", "billing")[0].first_response_minutes == 120


def test_catch_all_rule_and_loading_from_a_path(tmp_path: Path) -> None:
    policy = load_sla_policy(write(tmp_path, VALID))
    assert policy.target_for("fatal", "x")[1].name == "always"
    assert policy.target_for("minor", None)[0].resolution_minutes == 2880
    assert policy.calendars["business"].holidays == {date(2027, 1, 1), date(2027, 2, 6), date(2027, 2, 7), date(2027, 2, 8)}
    assert load_sla_policy(str(write(tmp_path, VALID))) == policy
    with pytest.raises(ValueError, match="unknown severity 'urgent'"):
        policy.target_for("urgent", None)  # type: ignore[arg-type]


def test_missing_severity_is_rejected(tmp_path: Path) -> None:
    # The catch-all becomes a "major" rule; "normal" only gets a category-specific rule.
    text = VALID.replace('[[rules]]\ncalendar = "business"', '[[rules]]\nseverity = "major"\ncalendar = "business"')
    text += """
[[rules]]
severity = "normal"
category = "billing"
calendar = "business"
targets = { first_response_minutes = 1, resolution_minutes = 2 }
"""
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, text))
    ((loc, msg),) = errors(exc)
    assert loc == ("rules",)
    # 'normal' has only a category rule, so an uncategorised normal complaint has no target.
    assert "no rule matches severity 'normal', 'minor'" in msg
    assert "policy.toml" in "".join(exc.value.__notes__)  # the file is named too


def test_unknown_calendar_is_rejected(tmp_path: Path) -> None:
    text = VALID.replace('calendar = "business"', 'calendar = "bussiness"')
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, text))
    ((loc, msg),) = errors(exc)
    assert loc == ("rules",)
    assert "rules.1.calendar: unknown calendar 'bussiness' (known: always, business)" in msg


def test_overlapping_windows_are_rejected(tmp_path: Path) -> None:
    text = VALID.replace('mon = ["09:00-12:00", "13:00-18:00"]', 'mon = ["13:00-18:00", "09:00-13:30"]')
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, text))
    ((loc, msg),) = errors(exc)
    assert loc == ("calendars", "business", "week", "mon")
    assert "windows 09:00-13:30 and 13:00-18:00 overlap" in msg
    # Touching windows are fine, and windows are kept sorted.
    ok = BusinessCalendar(name="c", timezone="UTC", week={"mon": ["13:00-18:00", "09:00-13:00"]})
    assert [str(w) for w in ok.week["mon"]] == ["09:00-13:00", "13:00-18:00"]


def test_invalid_timezone_is_rejected(tmp_path: Path) -> None:
    text = VALID.replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghia"')
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, text))
    ((loc, msg),) = errors(exc)
    assert loc == ("calendars", "business", "timezone")
    assert "unknown time zone 'Asia/Shanghia'" in msg


@pytest.mark.parametrize(
    ("before", "after", "loc", "message"),
    [
        ('mon = ["09:00-12:00", "13:00-18:00"]', 'mon = ["12:00-09:00"]',
         ("calendars", "business", "week", "mon", 0), "end must be after start"),
        ('mon = ["09:00-12:00", "13:00-18:00"]', 'mon = ["9-12"]',
         ("calendars", "business", "week", "mon", 0, "start"), "time"),
        ('mon = ["09:00-12:00", "13:00-18:00"]', 'funday = ["09:00-12:00"]',
         ("calendars", "business", "week", "funday", "[key]"), "Input should be"),
        ('mon = ["09:00-12:00", "13:00-18:00"]', "mon = []", ("calendars", "business", "week"), "no working window"),
        ("resolution_minutes = 240", "resolution_minutes = 0",
         ("rules", 0, "targets", "resolution_minutes"), "greater than 0"),
        ("resolution_minutes = 240", 'resolution_minutes = "240"',
         ("rules", 0, "targets", "resolution_minutes"), "valid integer"),
        ('severity = "fatal"', 'severity = "critical"', ("rules", 0, "severity"), "'fatal', 'major'"),
        ("first_response_minutes = 15,", "first_reponse_minutes = 15,", ("rules", 0, "targets", "first_reponse_minutes"), "Extra"),
        ('[calendars.always]\ntimezone = "UTC"', '[calendars.always]\nname = "other"\ntimezone = "UTC"',
         ("calendars",), "calendars.always.name"),
        ('holidays = [2027-01-01, "2027-02-06..2027-02-08"]', 'holidays = ["2027-02-08..2027-02-06"]',
         ("calendars", "business", "holidays"), "ends before it starts"),
    ],
)
def test_field_errors_name_the_path(tmp_path: Path, before: str, after: str, loc: tuple, message: str) -> None:
    assert before in VALID
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, VALID.replace(before, after, 1)))
    found = errors(exc)
    assert any(l[: len(loc)] == loc and message in m for l, m in found), found


def test_models_are_frozen_hashable_and_picklable(tmp_path: Path) -> None:
    policy = load_sla_policy()
    business = policy.calendars["business"]
    twin = BusinessCalendar.model_validate(business.model_dump())
    assert twin == business and hash(twin) == hash(business) and twin is not business
    assert twin != business.model_copy(update={"holidays_from": None})
    assert twin != business.model_copy(update={"make_up_days": frozenset({date(2026, 12, 19)})})
    with pytest.raises(ValidationError):
        business.name = "x"  # type: ignore[misc]

    @lru_cache
    def open_hours(cal: BusinessCalendar, day: date) -> int:
        return len(cal.business_windows(day))

    assert open_hours(business, date(2026, 11, 4)) == 2 and open_hours(TWENTY_FOUR_SEVEN, date(2026, 11, 4)) == 1
    clone = pickle.loads(pickle.dumps(policy))
    assert clone == policy
    assert clone.calendars["business"].business_windows(date(2026, 11, 4)) == business.business_windows(date(2026, 11, 4))
    assert WorkingWindow.model_validate("00:00-24:00").end == time(0)
    assert SlaTarget(first_response_minutes=1, resolution_minutes=2).next_response_minutes is None
    assert SlaPolicy.model_validate(policy.model_dump()) == policy
    # Dumps are stable across processes (set order is hash-seeded): days come sorted.
    own = load_sla_policy(write(tmp_path, VALID.replace(
        'holidays = [2027-01-01, "2027-02-06..2027-02-08"]',
        'holidays = [2027-01-01, "2027-02-06..2027-02-08"]\nmake_up_days = [2027-02-20, 2027-01-30]\n'
        'make_up_hours = ["09:00-12:00"]'))).calendars["business"]
    assert own.model_dump()["holidays"] == sorted(own.holidays)
    assert '"holidays":["2027-01-01","2027-02-06",' in own.model_dump_json()
    assert '"make_up_days":["2027-01-30","2027-02-20"]' in own.model_dump_json()


# --- make-up working days (调休) and holidays from chinese-calendar -------------------------


def test_the_packaged_calendar_works_the_days_china_works() -> None:
    """Every day the package covers, by its own API: open iff a working day in China."""
    business = load_sla_policy().calendars["business"]
    data = official_days("chinese-calendar")
    assert (data.first_year, data.last_year) == (2004, 2026)
    day = date(data.first_year, 1, 1)
    while day.year <= data.last_year:
        assert bool(business.business_windows(day)) == chinese_calendar.is_workday(day), day
        day += timedelta(days=1)
    # A make-up day has the weekday hours: 09:00-12:00 and 13:00-18:00 in Shanghai.
    assert [(s.hour, e.hour) for s, e in business.business_windows(date(2025, 1, 26))] == [(1, 4), (5, 10)]


# Monday is the only weekday with hours, so make-up days must say theirs.
MAKE_UP = VALID.replace('holidays = [2027-01-01, "2027-02-06..2027-02-08"]', """holidays = [2027-01-01, "2027-02-06..2027-02-08"]
make_up_days = ["2027-01-30..2027-01-31", 2027-02-20]
make_up_hours = ["10:00-12:00"]""")


def test_own_make_up_days_and_their_hours(tmp_path: Path) -> None:
    business = load_sla_policy(write(tmp_path, MAKE_UP)).calendars["business"]
    assert business.make_up_days == {date(2027, 1, 30), date(2027, 1, 31), date(2027, 2, 20)}
    assert business.all_make_up_days == business.make_up_days and business.all_holidays == business.holidays
    assert [(s.hour, e.hour) for s, e in business.business_windows(date(2027, 1, 30))] == [(2, 4)]  # 10-12 local
    assert business.business_windows(date(2027, 1, 29)) == []  # a Friday: closed in this calendar
    # Without make_up_hours they are Monday to Friday's, which must then agree.
    no_hours = MAKE_UP.replace('make_up_hours = ["10:00-12:00"]\n', "")
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, no_hours))
    ((loc, msg),) = errors(exc)
    assert loc == ("calendars", "business", "make_up_hours") and "give the hours" in msg
    weekdays = "\n".join(f'{d} = ["08:00-16:00"]' for d in ("mon", "tue", "wed", "thu", "fri"))
    office = load_sla_policy(write(tmp_path, no_hours.replace('mon = ["09:00-12:00", "13:00-18:00"]', weekdays)))
    assert [(s.hour, e.hour) for s, e in office.calendars["business"].business_windows(date(2027, 1, 30))] == [(0, 8)]


def test_a_day_both_closed_and_worked_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, MAKE_UP.replace("2027-02-20]", "2027-02-20, 2027-02-07]")))
    ((loc, msg),) = errors(exc)
    assert loc == ("calendars", "business", "make_up_days")
    assert "2027-02-07: both a holiday and a make-up day" in msg


def test_own_days_win_over_the_packages(tmp_path: Path) -> None:
    text = VALID.replace('holidays = [2027-01-01, "2027-02-06..2027-02-08"]', """holidays_from = "chinese-calendar"
holidays = [2025-01-26, 2025-12-24]
make_up_days = [2025-01-28]
make_up_hours = ["09:00-12:00", "13:00-18:00"]""")
    business = load_sla_policy(write(tmp_path, text)).calendars["business"]
    # 01-26 is the package's make-up Sunday, 01-28 its Spring Festival's eve: both turned round.
    assert date(2025, 1, 26) in business.all_holidays and date(2025, 1, 26) not in business.all_make_up_days
    assert date(2025, 1, 28) in business.all_make_up_days and date(2025, 1, 28) not in business.all_holidays
    assert business.business_windows(date(2025, 1, 26)) == []
    assert len(business.business_windows(date(2025, 1, 28))) == 2
    assert date(2025, 12, 24) in business.all_holidays and date(2025, 2, 8) in business.all_make_up_days


def test_unknown_holiday_source_is_rejected(tmp_path: Path) -> None:
    text = VALID.replace('holidays = [2027-01-01, "2027-02-06..2027-02-08"]', 'holidays_from = "holidays"')
    with pytest.raises(ValidationError) as exc:
        load_sla_policy(write(tmp_path, text))
    ((loc, msg),) = errors(exc)
    assert loc == ("calendars", "business", "holidays_from") and "'chinese-calendar'" in msg


# --- the version recorded at triage --------------------------------------------------------


def test_the_version_names_the_holiday_data(tmp_path: Path) -> None:
    """Days from a package change with it: its name and version are in the policy's."""
    plain = load_sla_policy(write(tmp_path, VALID))
    assert plain.version == "test-1"  # no package, nothing added
    tagged = load_sla_policy(write(tmp_path, VALID.replace(
        'timezone = "Asia/Shanghai"', 'timezone = "Asia/Shanghai"\nholidays_from = "chinese-calendar"\n'
        'make_up_hours = ["09:00-18:00"]', 1)))
    assert tagged.version == f"test-1+chinese-calendar-{chinese_calendar.__version__}"
    # Loading a dump again (a what-if, a pickle) keeps it as it is: one tag, not two.
    assert SlaPolicy.model_validate(tagged.model_dump()).version == tagged.version
    assert pickle.loads(pickle.dumps(tagged)).version == tagged.version
    assert SlaPolicy(version="v", calendars=tagged.calendars, rules=tagged.rules).version == tagged.version.replace(
        "test-1", "v")


# The packaged policy as of its version: a change to its targets, rules or calendars (the
# days its package gives included, by the tag) that keeps the version fails here. Bump
# `version` in aggregates/sla_policy.toml, then record the new pair.
PACKAGED = ("2026-12-03+chinese-calendar-1.11.0", "e1ed83bd67a2beff")


def test_the_packaged_policy_changes_only_with_its_version() -> None:
    policy = load_sla_policy()
    # Defaults left out: a new field with a default changes no policy.
    digest = hashlib.sha256(policy.model_dump_json(exclude={"version"}, exclude_defaults=True).encode()).hexdigest()[:16]
    assert (policy.version, digest) == PACKAGED, "the packaged SLA policy changed: bump its version"
