"""The read API's published shapes: query filters and every response, as pydantic models.

Stable on purpose: dashboards and exports are consumed by scripts, so fields are only
ever added. Filters are query-parameter models, so a bad value is a 422 whose `loc`
names the parameter (e.g. `["query", "severity"]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, create_model
from pydantic import field_validator

from aggregates.alert import AlertSeverity, AlertStatus, SubjectType
from aggregates.complaint import Channel
from aggregates.instants import WINDOW, InstantWindow
from aggregates.priority import Severity, Tier
from aggregates.tags import MAX_TAG_LENGTH, normalised_tag

Period = Literal["today", "7d", "30d", "90d", "365d", "all"]
Granularity = Literal["day", "week", "month"]
FIELD_NAME = r"[\w.-]{1,64}"  # a custom field's name, as the filters and groupings take it
MAX_VOCABULARY_FILTERS = 20  # custom field and tag conditions per request
FieldFilter = Annotated[str, StringConstraints(pattern=rf"^{FIELD_NAME}:.{{1,200}}$")]  # name:value
TagFilter = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# A custom field as a dimension: `field:<name>` (projections.fields.FIELD_PREFIX).
FieldDimension = Annotated[str, StringConstraints(pattern=rf"^field:{FIELD_NAME}$")]
Dimension = Literal[
    "product", "category", "channel", "region", "severity", "priority", "tier", "team", "status"
] | FieldDimension
Order = Literal["asc", "desc"]
PERIOD_DAYS: dict[str, int] = {"7d": 7, "30d": 30, "90d": 90, "365d": 365}
EPOCH = datetime(1970, 1, 1).astimezone(ZoneInfo("UTC"))


class Filters(BaseModel):
    """What every dashboard and read model can be narrowed by.

    (An unknown query parameter is a 422 naming it: `read_api.app.refuse_unknown_parameters`.)
    """

    period: Period = Field("30d", description="window ending at `end` (or `as_of`, or now)")
    start: AwareDatetime | None = Field(None, description="explicit window start; overrides `period`")
    end: AwareDatetime | None = Field(None, description="explicit window end; defaults to `as_of` or now")
    team: str | None = Field(None, min_length=1, max_length=200)
    agent: str | None = Field(None, min_length=1, max_length=200, description="the agent assigned now")
    category: str | None = Field(None, min_length=1, max_length=200,
                                 description="one of the configured categories (aggregates/categories.toml)")
    product: str | None = Field(None, min_length=1, max_length=200)
    region: str | None = Field(None, min_length=1, max_length=200)
    channel: Channel | None = None
    severity: Severity | None = None
    tier: Tier | None = None
    field: list[FieldFilter] = Field(
        default_factory=list, max_length=MAX_VOCABULARY_FILTERS,
        description="a custom field's current value, `name:value` (e.g. `timely_response:false`); repeat it"
                    " for several: a complaint must have all (a multiple choice: each option given)")
    tag: list[TagFilter] = Field(
        default_factory=list, max_length=MAX_VOCABULARY_FILTERS,
        description="a tag the complaint has now (normalised: case, width, spaces); repeat it: all of them")
    as_of: AwareDatetime | None = Field(
        None, description="answer as the read model stood at this instant (events after it are ignored)"
    )
    tz: str = Field("Asia/Shanghai", description="IANA time zone for days, weeks and 'today'")

    instants: ClassVar[InstantWindow] = WINDOW  # the window start, end and as_of must lie in

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Asia/Shanghai") from None
        return value

    @field_validator("tag")
    @classmethod
    def _normalised_tags(cls, value: list[str]) -> list[str]:
        tags = [normalised_tag(given) for given in value]
        if not all(1 <= len(tag) <= MAX_TAG_LENGTH for tag in tags):
            raise ValueError(f"a tag has 1 to {MAX_TAG_LENGTH} characters besides spaces")
        return tags

    @property
    def field_values(self) -> tuple[tuple[str, str], ...]:
        """The custom field filters as (name, value) pairs."""
        return tuple((name, text) for name, _, text in (given.partition(":") for given in self.field))

    @field_validator("start", "end", "as_of", mode="before")
    @classmethod
    def _written_out(cls, value: Any) -> Any:
        """An instant is written out: pydantic would read a number as seconds since 1970."""
        try:
            float(value)
        except (TypeError, ValueError):
            return value
        raise ValueError("an instant is an ISO 8601 date and time with a time zone, not a number")

    @field_validator("start", "end", "as_of")
    @classmethod
    def _sane(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        """Every instant asked about lies in the window (aggregates.instants; configured by
        the composition root through `bounded`): far from it, date arithmetic ends in
        OverflowError, and nothing was ever recorded there."""
        if value is not None and value not in cls.instants:
            raise ValueError(f"{value.isoformat()} is outside the instants this system accepts"
                             f" ({cls.instants.describe()})")
        return value

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if value is not None and start is not None and value <= start:
            raise ValueError("end must be after start")
        return value

    @field_validator("as_of")
    @classmethod
    def _window_ends_after_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start")
        if value is not None and start is not None and info.data.get("end") is None and value < start:
            raise ValueError("as_of must not be before start: without `end`, the window ends at as_of")
        return value

    @classmethod
    def bounded(cls, instants: InstantWindow) -> type[Filters]:
        """These filters, refusing instants outside `instants` instead of the default window."""
        if instants == cls.instants:
            return cls
        model = create_model(cls.__name__, __base__=cls, __module__=cls.__module__)
        model.instants = instants
        return model

    @classmethod
    def of_categories(cls, categories: Sequence[str]) -> type[Filters]:
        """These filters, with `category` one of `categories` (any other is a 422 listing them,
        and the OpenAPI document shows them as the parameter's enum)."""
        described = cls.model_fields["category"].description
        return create_model(cls.__name__, __base__=cls, __module__=cls.__module__,
                            category=(Literal[tuple(categories)] | None,  # type: ignore[valid-type]
                                      Field(None, description=described)))

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) of the period, relative to `as_of` (or `now`).

        A `start` later than `now` (no `end`, no `as_of`) gives an empty window."""
        reference = self.as_of or now
        end = self.end or reference
        if self.start is not None:
            return self.start, end
        if self.period == "today":
            return self.local_midnight(end), end
        if self.period == "all":
            return EPOCH, end
        return end - timedelta(days=PERIOD_DAYS[self.period]), end

    def local_midnight(self, at: datetime) -> datetime:
        local = at.astimezone(ZoneInfo(self.tz))
        return local.replace(hour=0, minute=0, second=0, microsecond=0)


# ------------------------------------------------------------------ common pieces
class Window(BaseModel):
    start: datetime
    end: datetime
    as_of: datetime = Field(description="the instant the figures describe")
    tz: str


class Count(BaseModel):
    key: str | None
    count: int


class Share(BaseModel):
    key: str | None
    count: int
    share: float = Field(description="fraction of the total, 0..1")


class Point(BaseModel):
    bucket: date
    count: int


class ClockRef(BaseModel):
    """One SLA clock of an open complaint, in a list a supervisor reads (at-risk, breached)."""

    complaint_id: UUID
    metric: str = Field(description="first_response, resolution or next_response")
    status: str = Field(description="warning (due soon) or breached")
    due_at: datetime | None
    overdue_minutes: float | None = Field(description="minutes past due (negative: still to go)")
    team: str | None
    agent: str | None
    severity: str | None
    priority: str | None
    title: str | None


# ------------------------------------------------------------------ alerts
AlertStatusFilter = Literal["active", "open", "acknowledged", "resolved"]


class AlertFilters(BaseModel):
    """What `GET /alerts` can be narrowed by (unknown parameters are ignored)."""

    status: AlertStatusFilter = Field(
        "active", description="active (open or acknowledged, the default), open, acknowledged or resolved")
    rule: str | None = Field(None, min_length=1, max_length=100, description="the rule that raised it")
    severity: AlertSeverity | None = None
    team: str | None = Field(None, min_length=1, max_length=200,
                             description="the team it is for (team-bound roles: their own, whatever they ask)")
    subject_type: SubjectType | None = None
    subject: str | None = Field(None, min_length=1, max_length=200,
                                description="what it is about: a complaint id, customer id, product...")
    complaint_id: UUID | None = Field(None, description="alerts about this complaint")
    limit: int = Field(100, ge=1, le=1000, description="at most this many alerts")


class Alert(BaseModel):
    """An alert as it stands: what a rule noticed, for whom, and who did what about it."""

    alert_id: UUID
    key: str = Field(description="the rule, subject and window: one alert per key")
    rule: str
    rules_version: str | None
    subject_type: SubjectType
    subject: str = Field(description="what it is about: a complaint id, customer id, product...")
    complaint_id: UUID | None = Field(description="the complaint it is about, if any")
    team: str | None = Field(description="the team it is for, if any")
    severity: AlertSeverity
    title_en: str | None
    title_zh: str | None
    evidence: dict[str, Any] = Field(description="what the rule saw (figures, complaint ids...)")
    recipients: list[str] = Field(description="the roles it is for")
    owner: str | None = Field(description="who must act on it, when it is a task")
    due_at: datetime | None
    status: AlertStatus
    raised_at: datetime
    raised_by: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_reason: str | None
    resolved_automatically: bool | None = Field(description="resolved by its rule when the condition cleared")
    version: int = Field(description="the alert's version (its events so far)")


class AlertList(BaseModel):
    items: list[Alert] = Field(description="active alerts critical first, then newest first; others newest first")
    total: int = Field(description="alerts matching the filters (items holds at most `limit`)")
    limit: int


class AlertEvent(BaseModel):
    version: int
    event_type: Literal["AlertRaised", "AlertAcknowledged", "AlertResolved"]
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    command_id: str
    correlation_id: str
    position: int
    payload: dict[str, Any]


class AlertDetail(Alert):
    history: list[AlertEvent] = Field(description="the alert's events in order")


OPEN_ALERTS = ("active alerts (open or acknowledged) for {audience}, newest first, at most 20; "
               "of the `team` filter's team when one is set (team-bound roles: their own)")


# ------------------------------------------------------------------ dashboards
class SupervisorCounts(BaseModel):
    new_today: int
    resolved_today: int
    pending: int = Field(description="open complaints now (any registration date)")
    new_in_period: int
    resolved_in_period: int


class AgentLoad(BaseModel):
    team: str | None
    agent: str | None
    open: int
    waiting: int = Field(description="open and waiting on the customer")
    overdue: int = Field(description="open with a breached clock")
    resolved_today: int
    resolved_7d: int


class MetricAttainment(BaseModel):
    attainment: float | None = Field(description="met / counted, 0..1; None when nothing is counted")
    met: int
    breached: int
    counted: int = Field(description="clocks decided: fulfilled or breached")
    avg_business_minutes: float | None
    p90_business_minutes: float | None


class SlaAttainment(BaseModel):
    first_response: MetricAttainment
    resolution: MetricAttainment
    next_response: MetricAttainment = Field(description="every customer message awaiting a reply")
    target_attainment: float = Field(description="the SLA policy's target share of clocks met in time")


class DailyFlow(BaseModel):
    bucket: date
    new: int
    resolved: int


class SupervisorDashboard(BaseModel):
    window: Window
    counts: SupervisorCounts
    by_status: list[Count]
    agent_load: list[AgentLoad]
    avg_first_response_business_minutes: float | None = Field(
        description="mean business minutes to the first response, complaints registered in the period")
    sla: SlaAttainment = Field(description="clocks of complaints registered in the period")
    at_risk: list[ClockRef]
    breached: list[ClockRef]
    daily: list[DailyFlow]
    open_alerts: list[Alert] = Field(default_factory=list, description=OPEN_ALERTS.format(
        audience="agents, team leads or department heads"))


class Growth(BaseModel):
    key: str | None
    week: date = Field(description="the latest complete week (its Monday)")
    this_week: int
    last_week: int
    growth: float | None = Field(description="(this - last) / last; None when last week had none")


class DefectTrend(BaseModel):
    release: date | None
    points: list[Point]
    daily_before: float | None = Field(description="mean product defects a day before the release")
    daily_after: float | None


class ProductDashboard(BaseModel):
    window: Window
    total: int
    by_product: list[Share]
    top_categories: list[Share]
    week_over_week: list[Growth]
    defect_trend: DefectTrend
    open_alerts: list[Alert] = Field(default_factory=list, description=OPEN_ALERTS.format(audience="quality"))


class SatisfactionPoint(BaseModel):
    bucket: date
    csat: float | None = Field(description="mean CSAT, 1..5")
    nps: float | None = Field(description="promoters% - detractors%, -100..100")
    responses: int


class ExecutiveDashboard(BaseModel):
    window: Window
    total: int
    satisfaction: list[SatisfactionPoint]
    high_priority_monthly: list[Point]
    avg_handling_hours: float | None
    reopen_rate: float | None
    repeat_rate: float | None
    first_contact_resolution_rate: float | None
    open_alerts: list[Alert] = Field(default_factory=list, description=OPEN_ALERTS.format(
        audience="executives or department heads"))


# ------------------------------------------------------------------ read models
Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    total: int
    limit: int
    offset: int
    sort: str
    order: Order


class SlaRow(BaseModel):
    complaint_id: UUID
    metric: str = Field(description="first_response, resolution or next_response")
    cycle: int = Field(description="1, or the n-th customer message awaiting a reply (next_response)")
    registered_at: datetime
    team: str | None
    agent: str | None
    category: str | None
    product: str | None
    channel: str | None
    severity: str | None
    priority: str | None
    tier: str | None
    status: str = Field(description="activated | warning | paused | fulfilled | breached | cancelled")
    due_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str | None
    paused_since: datetime | None
    business_seconds: float | None


class WorkloadRow(BaseModel):
    team: str | None
    agent: str | None
    open: int
    waiting: int
    overdue: int
    resolved_today: int
    resolved_7d: int


class TrendRow(BaseModel):
    bucket: date
    key: str | None
    count: int


class AssignmentTimeRow(BaseModel):
    bucket: date = Field(description="the day, week or month of registration (in the filters' time zone)")
    team: str | None = Field(description="the complaint's team now")
    count: int = Field(description="complaints registered then and assigned since")
    p50_minutes: float = Field(description="median wall-clock minutes from registration to the first assignment")
    p90_minutes: float = Field(description="90th percentile of the same")


class AssignmentTimes(BaseModel):
    granularity: str
    window: Window
    items: list[AssignmentTimeRow]


class RateRow(BaseModel):
    key: str | None = Field(description="the group's value (null: no value, or no grouping)")
    count: int = Field(description="complaints with a true/false value in the field")
    true_count: int = Field(description="of which true")
    rate: float = Field(description="true_count / count")


class Rates(BaseModel):
    of: str = Field(description="the true/false custom field")
    by: str | None
    window: Window
    items: list[RateRow]


class TagTrend(BaseModel):
    tag: str
    this_week: int = Field(description="complaints tagged so this week (to as_of), carrying the tag now")
    last_week: int = Field(description="the same, the whole week before")
    change: int = Field(description="this_week - last_week")
    growth: float | None = Field(description="change / last_week (null when last week had none)")


class TagTrends(BaseModel):
    this_week: date = Field(description="the Monday of this week (local)")
    last_week: date
    as_of: datetime
    items: list[TagTrend]


# ------------------------------------------------------------------ audit
class Change(BaseModel):
    before: Any
    after: Any


class ChainLink(BaseModel):
    link: str | None = Field(description="the event's keyed hash (hex), as stored with it; None: from before the chain")
    intact: bool = Field(description="whether the link holds over the event's stored bytes and the link before it"
                         " (a changed event shows alone; `complaints audit verify` checks the whole log)")
    problem: str | None = Field(None, description="what is wrong, when it is not intact")


class HistoryEntry(BaseModel):
    version: int
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    command_id: str
    correlation_id: str
    position: int
    payload: dict[str, Any]
    changes: dict[str, Change] = Field(description="complaint fields this event changed")
    chain: ChainLink | None = Field(None, description="the event's link in its complaint's hash chain, checked"
                                    " against the event store (None where this node cannot reach it)")


class History(BaseModel):
    complaint_id: UUID
    events: list[HistoryEntry]


class StateAt(BaseModel):
    complaint_id: UUID
    version: int
    state: dict[str, Any] = Field(description="the complaint as rebuilt by the aggregate's own code")


class TimelineItem(BaseModel):
    version: int
    at: datetime
    actor: str
    event_type: str
    summary: str
    summary_zh: str = Field(description="the summary in Chinese (zh-CN)")
    status: str = Field(description="status after this event")
    since_registration_minutes: float
    changed: list[str]


class Timeline(BaseModel):
    complaint_id: UUID
    title: str | None
    status: str
    first_response_due: datetime | None
    resolution_due: datetime | None
    items: list[TimelineItem]


class ClockMoment(BaseModel):
    event: Literal["activated", "paused", "resumed", "warned", "breached", "fulfilled", "cancelled", "reopened"]
    at: datetime


class ComplaintClock(BaseModel):
    """One SLA clock of the complaint as of `now`, with its life so far."""

    metric: Literal["first_response", "resolution", "next_response"]
    cycle: int = Field(description="1, or the n-th customer message awaiting a reply (next_response)")
    status: str = Field(description="activated, paused, warning, breached, fulfilled or cancelled")
    started_at: datetime
    due_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str | None = Field(description="responded, resolved, withdrawn or duplicate")
    business_minutes: float | None = Field(description="business time so far, pauses excluded")
    paused_minutes: float
    life: list[ClockMoment]


class ComplaintClocks(BaseModel):
    complaint_id: UUID
    now: datetime
    clocks: list[ComplaintClock]


class SearchHit(BaseModel):
    complaint_id: UUID
    registered_at: datetime
    title: str | None
    customer_id: str | None
    product: str | None
    order_ref: str | None


class SearchResults(BaseModel):
    items: list[SearchHit]
    limit: int
    offset: int


class DimensionValues(BaseModel):
    team: list[str]
    product: list[str]
    category: list[str]
    region: list[str]


class Problem(BaseModel):
    """An error: what went wrong."""

    # Titled apart from the command API's Problem: where both are served (`complaints run`),
    # generated clients name their classes by title, and two classes cannot share one.
    model_config = ConfigDict(title="ReadProblem")

    detail: str


class QueueRow(BaseModel):
    """A complaint in a workspace list, with what orders it: its next due time and SLA state."""

    complaint_id: UUID
    title: str | None = Field(description="personal data in it masked")
    registered_at: datetime
    last_event_at: datetime | None
    version: int = Field(description="the complaint's version as the read model holds it")
    status: str
    priority: str | None
    severity: str | None
    category: str | None
    product: str | None
    channel: str | None
    region: str | None
    tier: str | None
    team: str | None
    agent: str | None
    next_due_at: datetime | None = Field(description="the earliest due time of its running SLA clocks")
    next_due_metric: str | None
    breached: bool = Field(description="a running clock is past its due time")
    at_risk: bool = Field(description="a running clock is in its warning time (and none breached)")
    age_seconds: float


class QueueAnswer(BaseModel):
    queue: str
    sort: str
    total: int
    limit: int
    offset: int
    rows: list[QueueRow]
    window: Window
