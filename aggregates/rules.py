"""The automation's rules: versioned configuration, validated at load, and their pure parts.

Pure domain code: the only I/O is `load_rules` reading a TOML file (the packaged
`aggregates/rules.toml` unless another is given). What the rules decide from a
complaint's facts (triage by keywords, the team, the agent, a rung's instant) lives here;
when and how it is carried out is the automation's (`consumers.automation`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aggregates.alert import AlertSeverity
from aggregates.priority import Impact, Severity
from aggregates.sla import SlaPolicy

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.toml")
NEVER = datetime.min.replace(tzinfo=UTC)  # the last assignment of an agent never assigned

Clock = Literal["first_response", "resolution", "next_response"]
CLOCKS: tuple[Clock, ...] = ("first_response", "resolution", "next_response")
# Who a rung notifies: the complaint's agent, or a role.
Notify = Literal["assignee", "supervisor", "department_head", "executive", "quality"]
NOTIFY_ROLE: dict[str, str] = {"assignee": "agent", "supervisor": "supervisor", "department_head": "department_head",
                               "executive": "executive", "quality": "quality"}
Word = Annotated[str, Field(min_length=1, max_length=100)]
OneOrMany = str | list[str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriageRule(Strict):
    id: Word
    keywords: list[Word] = Field(default_factory=list)
    severity: Severity
    impact: Impact = "one_user"

    def matches(self, text: str) -> bool:
        return not self.keywords or any(k.casefold() in text for k in self.keywords)


class Triage(Strict):
    after_minutes: float = Field(0, ge=0)
    default_category: Word = "other"
    rules: list[TriageRule] = Field(min_length=1)
    categories: dict[str, list[Word]] = Field(default_factory=dict)

    @field_validator("rules")
    @classmethod
    def _catch_all(cls, rules: list[TriageRule]) -> list[TriageRule]:
        if rules[-1].keywords:
            raise ValueError("the last triage rule must have no keywords, so every complaint is triaged")
        return rules

    def decide(self, title: str, description: str) -> tuple[TriageRule, str]:
        """The rule that triages a complaint with this text, and its category."""
        text = f"{title}\n{description}".casefold()
        rule = next(r for r in self.rules if r.matches(text))
        category = next((c for c, words in self.categories.items() if any(w.casefold() in text for w in words)),
                        self.default_category)
        return rule, category


class AssignmentRule(Strict):
    """Matches when each field it names equals the complaint's (or is among those listed)."""

    id: Word
    team: Word
    skill: Word | None = None
    category: OneOrMany | None = None
    product: OneOrMany | None = None
    channel: OneOrMany | None = None
    region: OneOrMany | None = None
    severity: OneOrMany | None = None
    tier: OneOrMany | None = None

    def matches(self, facts: Mapping[str, Any]) -> bool:
        for name in ("category", "product", "channel", "region", "severity", "tier"):
            wanted = getattr(self, name)
            if wanted is None:
                continue
            if facts.get(name) not in ([wanted] if isinstance(wanted, str) else wanted):
                return False
        return True


class Agent(Strict):
    agent: Word
    team: Word
    skills: list[Word] = Field(default_factory=list)
    capacity: int = Field(ge=1, le=10_000)


class Rung(Strict):
    id: Word
    at: Literal["warn", "breach"]
    hours: float = Field(0, ge=0, description="after `at`")
    time: Literal["calendar", "business"] = "calendar"
    notify: list[Notify] = Field(default_factory=list)
    severity: AlertSeverity = "warning"
    escalate: bool = False

    @model_validator(mode="after")
    def _does_something(self) -> Rung:
        if not self.notify and not self.escalate:
            raise ValueError(f"rung {self.id!r} neither notifies nor escalates")
        if self.at == "warn" and self.hours:
            raise ValueError(f"rung {self.id!r}: hours count after a breach (at = \"breach\")")
        return self


class Ladder(Strict):
    clocks: list[Clock] = Field(default_factory=lambda: list(CLOCKS))
    rungs: list[Rung] = Field(default_factory=list)

    @field_validator("rungs")
    @classmethod
    def _unique(cls, rungs: list[Rung]) -> list[Rung]:
        ids = [r.id for r in rungs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"rung ids must be unique, got {ids}")
        return rungs


class FatalComplaint(Strict):
    enabled: bool = True
    recipients: list[Word] = Field(default_factory=lambda: ["department_head"])


class RepeatCustomer(Strict):
    enabled: bool = True
    more_than: int = Field(3, ge=1)
    days: float = Field(7, gt=0)
    owner: Word | None = "account-manager"
    due_hours: float = Field(24, gt=0)
    recipients: list[Word] = Field(default_factory=lambda: ["supervisor"])


class ProductGrowth(Strict):
    enabled: bool = True
    growth: float = Field(0.20, gt=0)
    weeks: int = Field(3, ge=1, le=26)
    min_weekly: int = Field(5, ge=1)
    recipients: list[Word] = Field(default_factory=lambda: ["quality", "executive"])


class Surge(Strict):
    enabled: bool = True
    baseline_days: int = Field(28, ge=1, le=366)
    sigmas: float = Field(4.0, gt=0)
    clear_sigmas: float = Field(2.0, ge=0)
    min_count: int = Field(5, ge=1)
    recipients: list[Word] = Field(default_factory=lambda: ["quality", "department_head"])

    @model_validator(mode="after")
    def _hysteresis(self) -> Surge:
        if self.clear_sigmas > self.sigmas:
            raise ValueError("clear_sigmas must not be above sigmas (a surge would end before it began)")
        return self


class Alerts(Strict):
    fatal_complaint: FatalComplaint = FatalComplaint()
    repeat_customer: RepeatCustomer = RepeatCustomer()
    product_growth: ProductGrowth = ProductGrowth()
    surge: Surge = Surge()


class Rules(Strict):
    version: Word
    timezone: str = "Asia/Shanghai"
    triage: Triage | None = None
    assignment: list[AssignmentRule] = Field(default_factory=list)
    roster: list[Agent] = Field(default_factory=list)
    ladder: Ladder = Ladder()
    alerts: Alerts = Alerts()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Asia/Shanghai')") from None
        return value

    @field_validator("roster")
    @classmethod
    def _agents_once(cls, roster: list[Agent]) -> list[Agent]:
        seen: set[str] = set()
        for agent in roster:
            if agent.agent in seen:
                raise ValueError(f"agent {agent.agent!r} is listed twice")
            seen.add(agent.agent)
        return roster

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def team_rule(self, facts: Mapping[str, Any]) -> AssignmentRule | None:
        """The first assignment rule matching the complaint's facts."""
        return next((rule for rule in self.assignment if rule.matches(facts)), None)

    def agents_of(self, team: str, skill: str | None = None) -> list[Agent]:
        return [a for a in self.roster if a.team == team and (skill is None or skill in a.skills)]


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the bad key."""


def load_rules(path: str | Path | None = None) -> Rules:
    """Read and validate a rules file; None loads the packaged aggregates/rules.toml."""
    p = Path(path) if path is not None else DEFAULT_RULES_PATH
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RulesError(f"rules {p}: {error}") from None
    try:
        return Rules.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(part) for part in e['loc']) or '(top)'}: {e['msg']}"
                             for e in error.errors())
        raise RulesError(f"rules {p}: {problems}") from None


# ------------------------------------------------------------------ pure decisions
def pick_agent(candidates: Sequence[Agent], load: Mapping[str, int], last_assigned: Mapping[str, datetime],
               ) -> Agent | None:
    """The candidate with room and the fewest open complaints; ties go to the one who has
    waited longest since their last assignment (never assigned: longest of all), then by name."""
    free = [a for a in candidates if load.get(a.agent, 0) < a.capacity]
    if not free:
        return None
    return min(free, key=lambda a: (load.get(a.agent, 0), last_assigned.get(a.agent, NEVER), a.agent))


def rung_instant(rung: Rung, due: datetime, policy: SlaPolicy, calendar: str | None) -> datetime:
    """When a rung of a clock due at `due` comes due."""
    if rung.at == "warn":
        return due - timedelta(minutes=policy.warning_before_minutes)
    if not rung.hours:
        return due
    if rung.time == "business" and calendar in policy.calendars:
        return policy.calendars[calendar].add_business_seconds(due, rung.hours * 3600)
    return due + timedelta(hours=rung.hours)


def recipients_of(notify: Iterable[str]) -> list[str]:
    """The roles a rung's alert is for."""
    return sorted({NOTIFY_ROLE[n] for n in notify})


def mean_and_deviation(samples: Sequence[int]) -> tuple[float, float]:
    """The mean and the population standard deviation of `samples` (0, 0 when empty)."""
    if not samples:
        return 0.0, 0.0
    mean = sum(samples) / len(samples)
    return mean, (sum((s - mean) ** 2 for s in samples) / len(samples)) ** 0.5


def growth_run(weekly: Sequence[int], growth: float, min_weekly: int) -> int:
    """How many week-over-week growths above `growth` end the series (the last week last):
    weekly = [.., w3, w2, w1] -> the number of consecutive i from the end with
    w_i > w_{i-1} * (1 + growth) and w_i >= min_weekly."""
    run = 0
    for later, earlier in zip(reversed(weekly[1:]), reversed(weekly[:-1])):
        if earlier > 0 and later >= min_weekly and later > earlier * (1 + growth):
            run += 1
        else:
            break
    return run

