"""The published language: each Complaint event's payload, as a pydantic model.

The aggregate's `@event` methods define what is stored; these models define what goes on
the wire and what consumers may rely on. `tests/test_event_catalogue.py` keeps the two
in step, and `docs/events.md` is written from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from aggregates.alert import AlertSeverity, SubjectType
from aggregates.complaint import Channel, Direction, Visibility
from aggregates.priority import Impact, Priority, Severity, Tier

META_FIELDS = ("actor", "occurred_at", "command_id", "correlation_id", "acted_as", "fingerprint")


class Payload(BaseModel):
    """An event's own fields; the envelope carries who, when, which complaint and version."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerRef(BaseModel):
    id: str
    tier: Tier


class CustomerPersonal(BaseModel):
    name: str
    contact: str


class Registered(Payload):
    """A complaint arrived from a channel."""

    channel: Channel
    customer: CustomerRef
    customer_personal: CustomerPersonal | None = Field(
        description="personal data, kept apart so it can be encrypted and erased"
    )
    title: str
    description: str
    product: str | None
    region: str | None
    order_ref: str | None
    contract_ref: str | None
    attachments: list[dict[str, Any]]
    sealed: str | None = Field(None, description="the personal fields, sealed under the customer's key by the store"
                               " (docs/privacy.md); absent when there were none")


class Triaged(Payload):
    """Graded: category, severity, impact; the derived priority and the SLA due times."""

    category: str
    severity: Severity
    impact: Impact
    priority: Priority
    priority_reasons: list[str]
    sla_policy_version: str
    sla_calendar: str
    resolution_target_seconds: float
    first_response_due: datetime
    resolution_due: datetime
    reason: str | None = Field(None, description="why, when a rule did it (the rule and the rules version); v2")


class Assigned(Payload):
    """Assigned, or handed over (previous_team set) to a team and agent."""

    team: str
    agent: str | None
    previous_team: str | None
    previous_agent: str | None
    reason: str | None = Field(None, description="why, when a rule did it (the rule and the rules version); v2")


class NoteAdded(Payload):
    """An internal note."""

    text: str
    sealed: str | None = Field(None, description="the personal fields, sealed under the customer's key by the store"
                               " (docs/privacy.md); absent when there were none")


class ContactRecorded(Payload):
    """A contact with the customer; first_response_at is set when it was the first response."""

    direction: Direction
    visibility: Visibility
    channel: str
    summary: str
    first_response_at: datetime | None
    next_response_due: datetime | None = Field(
        description="set by a customer's message: when the next public reply is due; cleared by one"
    )
    sealed: str | None = Field(None, description="the personal fields, sealed under the customer's key by the store"
                               " (docs/privacy.md); absent when there were none")


class WaitingOnCustomer(Payload):
    """Waiting on the customer: the resolution clock pauses."""

    reason: str


class CustomerReplied(Payload):
    """The customer replied: the clock resumes, with the resolution due time moved on."""

    summary: str
    resolution_due: datetime | None
    next_response_due: datetime | None = Field(description="when the reply to this message is due")
    sealed: str | None = Field(None, description="the personal fields, sealed under the customer's key by the store"
                               " (docs/privacy.md); absent when there were none")


class ResolutionProposed(Payload):
    """A resolution was proposed to the customer."""

    proposal: str
    first_response_at: datetime | None


class Resolved(Payload):
    """Resolved."""

    resolution: str
    first_response_at: datetime | None


class Verified(Payload):
    """The customer verified the resolution and rated the service."""

    csat: int = Field(ge=1, le=5)
    nps: int | None = Field(ge=0, le=10)
    effort: int | None = Field(ge=1, le=7)
    comment: str | None


class Closed(Payload):
    """Closed (archived)."""


class Reopened(Payload):
    """Reopened by the customer's dissatisfaction."""

    reason: str


class Escalated(Payload):
    """Escalated to a higher level."""

    level: int = Field(ge=1, le=3)
    reason: str


class Withdrawn(Payload):
    """Withdrawn by the customer."""

    reason: str


class MarkedDuplicate(Payload):
    """A duplicate of another complaint."""

    duplicate_of: UUID


class PersonalDataErased(Payload):
    """The customer's personal data was erased: their key destroyed, so every sealed copy
    reads `[erased]` (docs/privacy.md)."""

    legal_basis: str


class FieldChange(BaseModel):
    before: Any = Field(description="the value it had (null: none)")
    after: Any = Field(description="the value it has now (null: cleared)")


class FieldsUpdated(Payload):
    """Custom fields set or cleared (docs/fields.md): by update-fields, or by a registration
    or triage carrying `fields` (then right after its Registered or Triaged, same command).
    Values as JSON: text, single_select and date ("YYYY-MM-DD") strings; numbers; booleans;
    multi_select lists of strings; attachment {sha256, name, size, media_type}; geolocation
    {lat, lon}."""

    changes: dict[str, FieldChange] = Field(description="by field name: the value before and after")
    definitions_version: str = Field(description="the version of the field definitions the values were checked"
                                                 " against")
    sealed: str | None = Field(None, description="the personal data in the values (free text, attachment names),"
                               " sealed under the customer's key by the store (docs/privacy.md); absent when there"
                               " was none")


class TagAdded(Payload):
    """Tagged (the tag normalised: NFKC, case folded, spaces trimmed and single)."""

    tag: str


class TagRemoved(Payload):
    """A tag taken off."""

    tag: str


class AlertRaised(Payload):
    """A rule raised an alert (the envelope's complaint_id is the alert's id; `complaint_id`
    here is the complaint it is about, if any)."""

    key: str = Field(description="the rule, subject and window: one alert per key")
    rule: str
    rules_version: str
    subject_type: SubjectType
    subject: str
    complaint_id: UUID | None
    team: str | None
    severity: AlertSeverity
    title_en: str
    title_zh: str
    evidence: dict[str, Any]
    recipients: list[str] = Field(description="the roles it is for")
    owner: str | None = Field(description="who must act on it, when it is a task")
    due_at: datetime | None


class AlertAcknowledged(Payload):
    """Someone took the alert on."""

    note: str | None


class AlertResolved(Payload):
    """Resolved by hand, or by its rule when the condition cleared (automatic)."""

    reason: str
    automatic: bool


COMPLAINT_PAYLOADS: dict[str, type[Payload]] = {
    model.__name__: model
    for model in (
        Registered, Triaged, Assigned, NoteAdded, ContactRecorded, WaitingOnCustomer,
        CustomerReplied, ResolutionProposed, Resolved, Verified, Closed, Reopened, Escalated,
        Withdrawn, MarkedDuplicate, PersonalDataErased, FieldsUpdated, TagAdded, TagRemoved,
    )
}
ALERT_PAYLOADS: dict[str, type[Payload]] = {
    model.__name__: model for model in (AlertRaised, AlertAcknowledged, AlertResolved)
}
PAYLOADS: dict[str, type[Payload]] = COMPLAINT_PAYLOADS | ALERT_PAYLOADS
# The events whose personal fields the store seals into `sealed` (commands.event_mapper).
SEALED_EVENTS = frozenset(name for name, model in PAYLOADS.items() if "sealed" in model.model_fields)
# The payload versions on the wire (1 where not listed); aggregates.envelope.UPCASTERS
# brings older ones up to date.
EVENT_VERSIONS: dict[str, int] = {"Triaged": 2, "Assigned": 2}
