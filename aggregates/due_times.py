"""SLA due times: the rules that set and move a complaint's due times, in one place.

Pure domain code, no I/O. `SlaClock` holds the facts a complaint's due times depend on
(when it was registered, its grading, the target and calendar recorded at triage, the
pauses while it waited on the customer, the wait under way) and the due times themselves.
Each method is one step of the complaint's life and returns the clock after it:

- `triaged`: targets by severity and category under the policy; the first response and
  resolution clocks both count from registration (Zammad: re-grading never resets them),
  the resolution clock not counting the pauses so far;
- `waiting` / `resumed`: a wait on the customer begins / ends and becomes a pause;
- `customer_replied`: the wait ends; the pause moves the resolution target on if it began
  before it (a breach already passed stays one); the reply is a customer message;
- `customer_wrote`: the next reply is due (Zendesk's next reply time), unless an earlier
  message is still unanswered or the policy has no next-response target;
- `contact`: a public outbound message answers the customer, an inbound one is a
  customer message, an internal outbound note changes nothing;
- `answered`: a proposal or a resolution answers the customer.

`Complaint` calls these to compute what its events record (`recorded`), and the what-if
replay (`projections.whatif.due_patches`) folds the same steps under another policy, so
the rules exist once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aggregates.sla import BusinessCalendar, Severity, SlaPolicy, due_at

Pause = tuple[datetime, datetime]

# The SLA fields each event records (computed here, stored in the event).
RECORDED: dict[str, tuple[str, ...]] = {
    "Triaged": (
        "sla_policy_version",
        "sla_calendar",
        "resolution_target_seconds",
        "first_response_due",
        "resolution_due",
    ),
    "ContactRecorded": ("next_response_due",),
    "CustomerReplied": ("resolution_due", "next_response_due"),
}


def responds(direction: str, visibility: str) -> bool:
    """Whether a contact answers the customer: only customer-visible agent communication."""
    return direction == "outbound" and visibility == "public"


@dataclass(frozen=True)
class SlaClock:
    """A complaint's SLA facts and due times; every step returns a new clock."""

    registered_at: datetime
    severity: Severity | None = None
    category: str | None = None
    sla_policy_version: str | None = None
    sla_calendar: str | None = None
    resolution_target_seconds: float | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    next_response_due: datetime | None = None
    pauses: tuple[Pause, ...] = ()
    waiting_since: datetime | None = None

    def recorded(self, event_type: str) -> dict[str, Any]:
        """The SLA fields the event `event_type` records, as this clock has them."""
        return {name: getattr(self, name) for name in RECORDED[event_type]}

    def calendar(self, policy: SlaPolicy) -> BusinessCalendar:
        """The calendar recorded at triage, if `policy` still has it; else the calendar
        `policy` would choose for this grading."""
        if self.sla_calendar is not None and self.sla_calendar in policy.calendars:
            return policy.calendars[self.sla_calendar]
        return policy.target_for(self.severity or "normal", self.category)[1]

    # ------------------------------------------------------------------ steps
    def triaged(self, policy: SlaPolicy, severity: Severity, category: str | None) -> SlaClock:
        target, calendar = policy.target_for(severity, category)
        resolution_seconds = target.resolution_minutes * 60.0
        return replace(
            self,
            severity=severity,
            category=category,
            sla_policy_version=policy.version,
            sla_calendar=calendar.name,
            resolution_target_seconds=resolution_seconds,
            first_response_due=due_at(
                calendar, self.registered_at, target.first_response_minutes * 60.0
            ),
            resolution_due=due_at(calendar, self.registered_at, resolution_seconds, self.pauses),
        )

    def waiting(self, at: datetime) -> SlaClock:
        """The complaint waits on the customer from `at`."""
        return replace(self, waiting_since=at)

    def resumed(self, at: datetime) -> SlaClock:
        """The wait ends at `at` and becomes a pause (no due time moves here)."""
        if self.waiting_since is None:
            return self
        return replace(self, pauses=(*self.pauses, (self.waiting_since, at)), waiting_since=None)

    def customer_replied(self, policy: SlaPolicy, at: datetime) -> SlaClock:
        clock = self.resumed(at)
        resolution_due = self.resolution_due
        if (
            resolution_due is not None
            and self.waiting_since is not None
            and self.waiting_since < resolution_due
        ):
            # The pause moves the resolution target on; a breach already passed stays one.
            assert self.resolution_target_seconds is not None
            resolution_due = due_at(
                self.calendar(policy),
                self.registered_at,
                self.resolution_target_seconds,
                clock.pauses,
            )
        return replace(clock, resolution_due=resolution_due).customer_wrote(policy, at)

    def customer_wrote(self, policy: SlaPolicy, at: datetime) -> SlaClock:
        """A message from the customer at `at` starts the next-response clock."""
        if self.next_response_due is not None or self.severity is None:
            return self  # an earlier message is still unanswered, or nothing is graded yet
        target, _ = policy.target_for(self.severity, self.category)
        if target.next_response_minutes is None:
            return self
        return replace(
            self,
            next_response_due=due_at(
                self.calendar(policy), at, target.next_response_minutes * 60.0
            ),
        )

    def contact(
        self, policy: SlaPolicy, direction: str, visibility: str, at: datetime
    ) -> SlaClock:
        if responds(direction, visibility):
            return self.answered()
        if direction == "inbound":
            return self.customer_wrote(policy, at)
        return self

    def answered(self) -> SlaClock:
        """The customer has been answered: no next response is due."""
        return replace(self, next_response_due=None)
