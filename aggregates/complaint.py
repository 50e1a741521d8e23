"""The Complaint aggregate: a complaint's whole life as a stream of events.

Pure domain code, no I/O. Each public method checks the rules first and only then calls
its `@event` method, because an `@event` body that raised would leave the aggregate half
changed (eventsourcing re-runs the body on replay, so it must only apply, never check).

Every event carries who did it (`actor`), when (`occurred_at`, from the caller's clock),
the command that caused it (`command_id`) and the conversation it belongs to
(`correlation_id`). Facts that depend on configuration (priority, SLA due times) are
computed here once and stored in the event, so replay never depends on today's config.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from aggregates.due_times import SlaClock, responds
from aggregates.instants import InstantOutOfRange
from aggregates.personal_text import mask_personal
from aggregates.priority import Impact, Priority, Severity, derive_priority
from aggregates.sla import SlaPolicy

if TYPE_CHECKING:  # aggregates.fields reads the statuses from here
    from aggregates.fields import FieldDefinitions

Status = Literal[
    "received",
    "triaged",
    "assigned",
    "waiting_on_customer",
    "resolution_proposed",
    "resolved",
    "verified",
    "closed",
    "withdrawn",
    "duplicate",
]
Channel = Literal[
    "phone", "wechat", "web", "app", "email", "store", "social_media", "sales_visit", "referral", "postal_mail",
    "fax", "other"
]
Direction = Literal["inbound", "outbound"]
Visibility = Literal["public", "internal"]

OPEN: frozenset[Status] = frozenset(
    {"received", "triaged", "assigned", "waiting_on_customer", "resolution_proposed"}
)
TERMINAL: frozenset[Status] = frozenset({"closed", "withdrawn", "duplicate"})
ALL_STATUSES: frozenset[Status] = OPEN | {"resolved", "verified"} | TERMINAL

# Which statuses each action may start from: the whole lifecycle in one table.
ALLOWED_FROM: dict[str, frozenset[Status]] = {
    "triage": frozenset({"received", "triaged", "assigned"}),
    "assign": frozenset({"triaged", "assigned", "waiting_on_customer", "resolution_proposed"}),
    "add_note": ALL_STATUSES - TERMINAL,
    "record_contact": ALL_STATUSES - TERMINAL,
    "wait_on_customer": frozenset({"assigned", "resolution_proposed"}),
    "customer_replied": frozenset({"waiting_on_customer"}),
    "propose_resolution": frozenset({"assigned"}),
    "resolve": frozenset({"assigned", "resolution_proposed"}),
    "verify": frozenset({"resolved"}),
    "close": frozenset({"resolved", "verified"}),
    "reopen": frozenset({"resolved", "verified", "closed"}),
    "escalate": OPEN,
    "withdraw": OPEN,
    "mark_duplicate": OPEN,
    "update_fields": ALL_STATUSES - TERMINAL,
    "add_tag": ALL_STATUSES - TERMINAL,
    "remove_tag": ALL_STATUSES - TERMINAL,
}
MAX_ESCALATION_LEVEL = 3


def actions_in(status: Status) -> list[str]:
    """The actions a complaint in `status` allows, in the lifecycle table's order."""
    return [action for action, allowed in ALLOWED_FROM.items() if status in allowed]


# What a customer's personal field reads once their key is destroyed (erasure).
ERASED = "[erased]"

# Registration is idempotent by construction: the complaint's id derives from the
# registering command's id, so registering twice collides on the same aggregate.
COMPLAINT_NAMESPACE = UUID("5b0c3f8e-6a4e-4c1a-9d8e-0c6f2f1b7a11")


def complaint_id_for(command_id: str) -> UUID:
    """The id of the complaint that the register command `command_id` creates."""
    return uuid5(COMPLAINT_NAMESPACE, command_id)


class DomainError(Exception):
    """A command the complaint's rules do not allow in its current state."""


class IllegalTransition(DomainError):
    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a complaint that is {status}")
        self.status = status
        self.action = action


class RuleViolation(DomainError):
    """A command that is legal in this status but breaks a business rule."""


@contextmanager
def _countable() -> Iterator[None]:
    """SLA arithmetic on this complaint's instants: one outside the instants business time
    is counted for (a registration in year 1 stored by an older version) refuses the
    command with a 409, never a crash."""
    try:
        yield
    except InstantOutOfRange as error:
        raise RuleViolation(f"the SLA clocks of this complaint cannot be computed: {error}") from error


class CommandIdReused(DomainError):
    """A command id already used for a different command."""

    def __init__(self, command_id: str) -> None:
        super().__init__(
            f"command_id {command_id!r} was already used for a different command (another action,"
            " body or principal): retry with the same body to get the first answer, or give a new"
            " command a new command_id"
        )


def previous_result(commands: dict[str, dict[str, Any]], command_id: str, action: str,
                    fingerprint: str | None) -> int | None:
    """The version a command recorded in an aggregate's `commands` produced, or None if it is
    new there. A command id names one command: used again for another action or another body
    (or by another principal, whose subject is in the fingerprint) it is refused, and the
    refusal says nothing of what the first command did."""
    done = commands.get(command_id)
    if done is None:
        return None
    recorded = done.get("fingerprint")  # events from before fingerprints have none
    if done["action"] != action or (recorded and fingerprint and recorded != fingerprint):
        raise CommandIdReused(command_id)
    return int(done["version"])


@dataclass(frozen=True)
class Meta:
    """Who, when and why: carried by every event."""

    actor: str  # the principal's subject
    occurred_at: datetime
    command_id: str
    correlation_id: str
    acted_as: dict[str, Any] | None = None  # the principal's display name and roles
    fingerprint: str | None = None  # of the command's body: a reused command id must match it

    def fields(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "occurred_at": self.occurred_at,
            "command_id": self.command_id,
            "correlation_id": self.correlation_id,
            "acted_as": self.acted_as,
            "fingerprint": self.fingerprint,
        }


class Complaint(Aggregate):
    @staticmethod
    def create_id(command_id: str) -> UUID:  # type: ignore[override]
        return complaint_id_for(command_id)

    # ---------------------------------------------------------------- registration
    @event("Registered")
    def __init__(
        self,
        channel: str,
        customer: dict[str, Any],
        customer_personal: dict[str, Any],
        title: str,
        description: str,
        product: str | None,
        region: str | None,
        order_ref: str | None,
        contract_ref: str | None,
        attachments: list[dict[str, Any]],
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.channel = channel
        # Personal data sits in its own group so it can be encrypted per customer and
        # erased without touching anything else.
        self.customer = customer
        self.customer_personal = customer_personal
        self.title = title
        self.description = description
        self.product = product
        self.region = region
        self.order_ref = order_ref
        self.contract_ref = contract_ref
        self.attachments = attachments
        self.registered_at = occurred_at
        self.status: Status = "received"
        self.category: str | None = None
        self.severity: Severity | None = None
        self.impact: Impact | None = None
        self.priority: Priority | None = None
        self.priority_reasons: list[str] = []
        self.sla_policy_version: str | None = None
        self.sla_calendar: str | None = None
        self.resolution_target_seconds: float | None = None
        self.first_response_due: datetime | None = None
        self.resolution_due: datetime | None = None
        self.first_responded_at: datetime | None = None
        self.next_response_due: datetime | None = None
        self.team: str | None = None
        self.agent: str | None = None
        self.handovers = 0
        self.notes = 0
        self.contacts = 0
        self.waiting_since: datetime | None = None
        self.status_before_wait: Status | None = None
        self.pauses: list[tuple[datetime, datetime]] = []
        self.proposed_resolution: str | None = None
        self.resolution: str | None = None
        self.resolved_at: datetime | None = None
        self.verification: dict[str, Any] | None = None
        self.closed_at: datetime | None = None
        self.reopen_count = 0
        self.escalation_level = 0
        self.withdrawal_reason: str | None = None
        self.duplicate_of: UUID | None = None
        self.personal_data_erased: dict[str, Any] | None = None
        self.fields: dict[str, Any] = {}  # custom fields (aggregates.fields): name -> value as JSON holds it
        self.tags: list[str] = []  # normalised (aggregates.tags), in the order added
        self.commands: dict[str, dict[str, Any]] = {}
        self._applied("register", actor, occurred_at, command_id, fingerprint)

    def _applied(self, action: str, actor: str, occurred_at: datetime, command_id: str,
                 fingerprint: str | None) -> None:
        """Book-keeping shared by every event: idempotency and last change."""
        # An event body runs before eventsourcing bumps the version (except at creation).
        version = 1 if action == "register" else self.version + 1
        done = self.commands.get(command_id)
        if done is not None and done["version"] == self.version:
            action = done["action"]  # a further event of the same command (fields given at registration or triage)
        self.commands[command_id] = {"action": action, "version": version, "status": self.status,
                                     "actor": actor, "fingerprint": fingerprint}
        self.updated_at = occurred_at
        self.updated_by = actor

    # ---------------------------------------------------------------- rule checks
    def check(self, action: str) -> None:
        """Raise IllegalTransition unless `action` is allowed in the current status."""
        if self.status not in ALLOWED_FROM[action]:
            raise IllegalTransition(self.status, action)

    def previous_result(self, command_id: str, action: str, fingerprint: str | None = None) -> int | None:
        """The version a command already produced, or None if it is new here."""
        return previous_result(self.commands, command_id, action, fingerprint)

    def sla_clock(self) -> SlaClock:
        """The complaint's SLA facts and due times, for the rules in aggregates.due_times."""
        return SlaClock(
            registered_at=self.registered_at,
            severity=self.severity,
            category=self.category,
            sla_policy_version=self.sla_policy_version,
            sla_calendar=self.sla_calendar,
            resolution_target_seconds=self.resolution_target_seconds,
            first_response_due=self.first_response_due,
            resolution_due=self.resolution_due,
            next_response_due=self.next_response_due,
            pauses=tuple(self.pauses),
            waiting_since=self.waiting_since,
        )

    def _follow(self, clock: SlaClock) -> None:
        """Take on the SLA facts of `clock` (from an event body: applies, never checks)."""
        self.severity = clock.severity
        self.category = clock.category
        self.sla_policy_version = clock.sla_policy_version
        self.sla_calendar = clock.sla_calendar
        self.resolution_target_seconds = clock.resolution_target_seconds
        self.first_response_due = clock.first_response_due
        self.resolution_due = clock.resolution_due
        self.next_response_due = clock.next_response_due
        self.pauses = list(clock.pauses)
        self.waiting_since = clock.waiting_since

    def _fulfil_first_response(self, at: datetime) -> datetime | None:
        """The first response instant this event sets, if it is the first."""
        return at if self.first_responded_at is None else None

    # ---------------------------------------------------------------- triage
    def triage(
        self, category: str, severity: Severity, impact: Impact, policy: SlaPolicy, meta: Meta,
        reason: str | None = None, fields: dict[str, Any] | None = None,
        definitions: FieldDefinitions | None = None,
    ) -> None:
        self.check("triage")
        # Fields given with triage are checked for the category it gives, before anything is applied.
        changes = definitions.changes(self.fields, fields, category) if fields and definitions else {}
        priority, reasons = derive_priority(
            severity, self.customer["tier"], impact, f"{self.title}\n{self.description}"
        )
        # Zammad's rule: the first response clock counts from registration and is never
        # reset by re-grading; the resolution clock also starts at registration.
        with _countable():
            clock = self.sla_clock().triaged(policy, severity, category)
        self._triaged(
            category=category,
            severity=severity,
            impact=impact,
            priority=priority,
            priority_reasons=reasons,
            **clock.recorded("Triaged"),
            reason=reason,
            **meta.fields(),
        )
        if changes:
            assert definitions is not None
            self._fields_updated(changes=changes, definitions_version=definitions.version, **meta.fields())

    @event("Triaged")
    def _triaged(
        self,
        category: str,
        severity: Severity,
        impact: Impact,
        priority: Priority,
        priority_reasons: list[str],
        sla_policy_version: str,
        sla_calendar: str,
        resolution_target_seconds: float,
        first_response_due: datetime,
        resolution_due: datetime,
        reason: str | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.category = category
        self.severity = severity
        self.impact = impact
        self.priority = priority
        self.priority_reasons = priority_reasons
        self.sla_policy_version = sla_policy_version
        self.sla_calendar = sla_calendar
        self.resolution_target_seconds = resolution_target_seconds
        self.first_response_due = first_response_due
        self.resolution_due = resolution_due
        if self.status == "received":
            self.status = "triaged"
        self._applied("triage", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- assignment
    def assign(self, team: str, agent: str | None, meta: Meta, reason: str | None = None) -> None:
        self.check("assign")
        if (team, agent) == (self.team, self.agent):
            raise RuleViolation(f"complaint is already assigned to {team}/{agent}")
        self._assigned(
            team=team,
            agent=agent,
            previous_team=self.team,
            previous_agent=self.agent,
            reason=reason,
            **meta.fields(),
        )

    @event("Assigned")
    def _assigned(
        self,
        team: str,
        agent: str | None,
        previous_team: str | None,
        previous_agent: str | None,
        reason: str | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if self.team is not None:
            self.handovers += 1
        self.team = team
        self.agent = agent
        if self.status == "triaged":
            self.status = "assigned"
        self._applied("assign", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- handling
    def add_note(self, text: str, meta: Meta) -> None:
        self.check("add_note")
        self._note_added(text=text, **meta.fields())

    @event("NoteAdded")
    def _note_added(
        self, text: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        # An internal note never stops an SLA clock.
        self.notes += 1
        self._applied("add_note", actor, occurred_at, command_id, fingerprint)

    def record_contact(
        self,
        direction: Direction,
        visibility: Visibility,
        channel: str,
        summary: str,
        policy: SlaPolicy,
        meta: Meta,
    ) -> None:
        self.check("record_contact")
        # Only customer-visible agent communication counts as a response; a message from
        # the customer starts the next-response clock.
        with _countable():
            clock = self.sla_clock().contact(policy, direction, visibility, meta.occurred_at)
        self._contact_recorded(
            direction=direction,
            visibility=visibility,
            channel=channel,
            summary=summary,
            first_response_at=(
                self._fulfil_first_response(meta.occurred_at)
                if responds(direction, visibility)
                else None
            ),
            **clock.recorded("ContactRecorded"),
            **meta.fields(),
        )

    @event("ContactRecorded")
    def _contact_recorded(
        self,
        direction: Direction,
        visibility: Visibility,
        channel: str,
        summary: str,
        first_response_at: datetime | None,
        next_response_due: datetime | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.contacts += 1
        if first_response_at is not None:
            self.first_responded_at = first_response_at
        self.next_response_due = next_response_due
        self._applied("record_contact", actor, occurred_at, command_id, fingerprint)

    def wait_on_customer(self, reason: str, meta: Meta) -> None:
        self.check("wait_on_customer")
        self._waiting_on_customer(reason=reason, **meta.fields())

    @event("WaitingOnCustomer")
    def _waiting_on_customer(
        self, reason: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.status_before_wait = self.status
        self.status = "waiting_on_customer"
        self._follow(self.sla_clock().waiting(occurred_at))
        self._applied("wait_on_customer", actor, occurred_at, command_id, fingerprint)

    def customer_replied(self, summary: str, policy: SlaPolicy, meta: Meta) -> None:
        self.check("customer_replied")
        assert self.waiting_since is not None
        # The pause moves the resolution target on (a breach already passed stays one),
        # on the calendar recorded at triage if today's policy still has it.
        with _countable():
            clock = self.sla_clock().customer_replied(policy, meta.occurred_at)
        self._customer_replied(
            summary=summary,
            **clock.recorded("CustomerReplied"),
            **meta.fields(),
        )

    @event("CustomerReplied")
    def _customer_replied(
        self,
        summary: str,
        resolution_due: datetime | None,
        next_response_due: datetime | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        assert self.waiting_since is not None and self.status_before_wait is not None
        self._follow(self.sla_clock().resumed(occurred_at))  # the wait becomes a pause
        self.next_response_due = next_response_due
        self.resolution_due = resolution_due
        self.status = self.status_before_wait
        self.status_before_wait = None
        self._applied("customer_replied", actor, occurred_at, command_id, fingerprint)

    def propose_resolution(self, proposal: str, meta: Meta) -> None:
        self.check("propose_resolution")
        self._resolution_proposed(
            proposal=proposal,
            first_response_at=self._fulfil_first_response(meta.occurred_at),
            **meta.fields(),
        )

    @event("ResolutionProposed")
    def _resolution_proposed(
        self,
        proposal: str,
        first_response_at: datetime | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.proposed_resolution = proposal
        self._follow(self.sla_clock().answered())  # the proposal answers the customer
        if first_response_at is not None:
            self.first_responded_at = first_response_at
        self.status = "resolution_proposed"
        self._applied("propose_resolution", actor, occurred_at, command_id, fingerprint)

    def resolve(self, resolution: str, meta: Meta) -> None:
        self.check("resolve")
        self._resolved(
            resolution=resolution,
            first_response_at=self._fulfil_first_response(meta.occurred_at),
            **meta.fields(),
        )

    @event("Resolved")
    def _resolved(
        self,
        resolution: str,
        first_response_at: datetime | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.resolution = resolution
        self.resolved_at = occurred_at
        self._follow(self.sla_clock().answered())
        if first_response_at is not None:
            self.first_responded_at = first_response_at
        self.status = "resolved"
        self._applied("resolve", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- verification
    def verify(
        self,
        csat: int,
        nps: int | None,
        effort: int | None,
        comment: str | None,
        meta: Meta,
    ) -> None:
        self.check("verify")
        if not 1 <= csat <= 5:
            raise RuleViolation("csat must be between 1 and 5")
        if nps is not None and not 0 <= nps <= 10:
            raise RuleViolation("nps must be between 0 and 10")
        if effort is not None and not 1 <= effort <= 7:
            raise RuleViolation("effort must be between 1 and 7")
        self._verified(csat=csat, nps=nps, effort=effort, comment=comment, **meta.fields())

    @event("Verified")
    def _verified(
        self,
        csat: int,
        nps: int | None,
        effort: int | None,
        comment: str | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.verification = {"csat": csat, "nps": nps, "effort": effort, "comment": comment}
        self.status = "verified"
        self._applied("verify", actor, occurred_at, command_id, fingerprint)

    def close(self, meta: Meta) -> None:
        self.check("close")
        self._closed(**meta.fields())

    @event("Closed")
    def _closed(
        self, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.closed_at = occurred_at
        self.status = "closed"
        self._applied("close", actor, occurred_at, command_id, fingerprint)

    def reopen(self, reason: str, meta: Meta) -> None:
        self.check("reopen")
        self._reopened(reason=reason, **meta.fields())

    @event("Reopened")
    def _reopened(
        self, reason: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.reopen_count += 1
        self.resolution = None
        self.resolved_at = None
        self.closed_at = None
        self.verification = None
        self.status = "assigned"
        self._applied("reopen", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- escalation, exits
    def escalate(self, level: int, reason: str, meta: Meta) -> None:
        self.check("escalate")
        if not self.escalation_level < level <= MAX_ESCALATION_LEVEL:
            raise RuleViolation(
                f"escalation level must be above the current {self.escalation_level}"
                f" and at most {MAX_ESCALATION_LEVEL}, got {level}"
            )
        self._escalated(level=level, reason=reason, **meta.fields())

    @event("Escalated")
    def _escalated(
        self,
        level: int,
        reason: str,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.escalation_level = level
        self._applied("escalate", actor, occurred_at, command_id, fingerprint)

    def withdraw(self, reason: str, meta: Meta) -> None:
        self.check("withdraw")
        self._withdrawn(reason=reason, **meta.fields())

    @event("Withdrawn")
    def _withdrawn(
        self, reason: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.withdrawal_reason = reason
        self.status = "withdrawn"
        self._applied("withdraw", actor, occurred_at, command_id, fingerprint)

    def mark_duplicate(self, duplicate_of: UUID, meta: Meta) -> None:
        self.check("mark_duplicate")
        if duplicate_of == self.id:
            raise RuleViolation("a complaint cannot be a duplicate of itself")
        self._marked_duplicate(duplicate_of=duplicate_of, **meta.fields())

    @event("MarkedDuplicate")
    def _marked_duplicate(
        self,
        duplicate_of: UUID,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.duplicate_of = duplicate_of
        self.status = "duplicate"
        self._applied("mark_duplicate", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- custom fields and tags
    def update_fields(self, values: dict[str, Any], definitions: FieldDefinitions, meta: Meta) -> None:
        """Set custom fields (null clears one); values equal to the current ones change nothing."""
        self.check("update_fields")
        changes = definitions.changes(self.fields, values, self.category)
        if changes:
            self._fields_updated(changes=changes, definitions_version=definitions.version, **meta.fields())

    @event("FieldsUpdated")
    def _fields_updated(
        self,
        changes: dict[str, dict[str, Any]],
        definitions_version: str,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        fields = dict(self.fields)  # a new dict: copies of the aggregate share none of its state
        for name, change in changes.items():
            if change["after"] is None:
                fields.pop(name, None)
            else:
                fields[name] = change["after"]
        self.fields = fields
        self._applied("update_fields", actor, occurred_at, command_id, fingerprint)

    def add_tag(self, tag: str, meta: Meta) -> None:
        """Tag the complaint (`tag` normalised: aggregates.tags); a tag it has changes nothing."""
        self.check("add_tag")
        if tag not in self.tags:
            self._tag_added(tag=tag, **meta.fields())

    @event("TagAdded")
    def _tag_added(
        self, tag: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.tags = [*self.tags, tag]
        self._applied("add_tag", actor, occurred_at, command_id, fingerprint)

    def remove_tag(self, tag: str, meta: Meta) -> None:
        """Take a tag off; a tag it does not have changes nothing."""
        self.check("remove_tag")
        if tag in self.tags:
            self._tag_removed(tag=tag, **meta.fields())

    @event("TagRemoved")
    def _tag_removed(
        self, tag: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.tags = [t for t in self.tags if t != tag]
        self._applied("remove_tag", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- erasure
    def erase_personal_data(self, legal_basis: str, meta: Meta) -> None:
        """Record that the customer's personal data was erased (their key destroyed): in
        any status, closed complaints too; once only."""
        if self.personal_data_erased is not None:
            raise RuleViolation("this complaint's personal data was erased already")
        if not legal_basis.strip():
            raise RuleViolation("an erasure states its legal basis")
        self._personal_data_erased(legal_basis=legal_basis, **meta.fields())

    @event("PersonalDataErased")
    def _personal_data_erased(
        self, legal_basis: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.customer_personal = {name: ERASED for name in self.customer_personal or {"name": 0, "contact": 0}}
        self.title = mask_personal(self.title)
        self.description = mask_personal(self.description)
        self.attachments = [{**a, "filename": ERASED} if a.get("filename") else a for a in self.attachments]
        self.fields = hidden_field_values(self.fields, ERASED)
        self.personal_data_erased = {"at": occurred_at, "legal_basis": legal_basis}
        self._applied("erase_personal_data", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- views
    def state(self) -> dict[str, Any]:
        """The complaint as plain data (for the API and for equality checks in tests)."""
        return {
            key: value
            for key, value in vars(self).items()
            if not key.startswith("_") and key not in {"pending_events", "commands"}
        } | {"id": self.id, "version": self.version, "created_on": self.created_on}


def hidden_field_values(values: dict[str, Any], placeholder: str) -> dict[str, Any]:
    """Custom field values without their personal data: free text masked, an attachment's
    file name `placeholder` (`[erased]` once the customer is erased, the access rule's mask
    for whoever may not see it; aggregates.sealed_fields seals the same parts)."""
    return {name: mask_personal(value) if isinstance(value, str)
            else {**value, "name": placeholder} if isinstance(value, dict) and "name" in value
            else value for name, value in values.items()}


# Version 2 of Triaged and Assigned added `reason` (why, when a rule did it): stored
# version-1 events are read as having none.
def _no_reason(state: dict[str, Any]) -> None:
    state["reason"] = None


for _changed in (Complaint.Triaged, Complaint.Assigned):  # type: ignore[attr-defined]
    _changed.class_version = 2
    _changed.upcast_v1_v2 = staticmethod(_no_reason)
