"""Alert commands: a rule raises an alert; people acknowledge and resolve it.

Validated by pydantic before anything runs, like the complaint commands; the desk loads,
calls and saves (`ComplaintDesk.raise_alert`, `ComplaintDesk.act_on_alert`).
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from pydantic import Field

from aggregates.access import ACKNOWLEDGE_ALERT, RAISE_ALERT, RESOLVE_ALERT
from aggregates.alert import Alert, AlertSeverity, AlertStatus, SubjectType
from aggregates.complaint import Meta
from commands.models import Command, Instant, Name, Reference, Schema, StrictBool, Text

class RaiseAlert(Command):
    """Raise an alert (rules do, through the automation's service identity)."""

    action: ClassVar[str] = RAISE_ALERT
    key: str = Field(min_length=1, max_length=500, description="rule, subject and window: one alert per key")
    rule: Reference
    rules_version: Reference
    subject_type: SubjectType
    subject: Name
    complaint_id: UUID | None = None
    team: Reference | None = None
    severity: AlertSeverity
    title_en: Text
    title_zh: Text
    evidence: dict[str, Any] = Field(default_factory=dict)
    recipients: list[Reference] = Field(default_factory=list, max_length=20)
    owner: Reference | None = None
    due_at: Instant | None = None

    def event_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"command_id", "correlation_id", "occurred_at", "expected_version"})


class AlertCommand(Command):
    """A command on an existing alert."""

    def carry_out(self, alert: Alert, meta: Meta) -> None:
        raise NotImplementedError


class AcknowledgeAlert(AlertCommand):
    """Take the alert on."""

    action: ClassVar[str] = ACKNOWLEDGE_ALERT
    note: Text | None = None

    def carry_out(self, alert: Alert, meta: Meta) -> None:
        alert.acknowledge(self.note, meta)


class ResolveAlert(AlertCommand):
    """Resolve the alert, saying why (`automatic`: the rule saw its condition clear)."""

    action: ClassVar[str] = RESOLVE_ALERT
    reason: Text
    automatic: StrictBool = False

    def carry_out(self, alert: Alert, meta: Meta) -> None:
        alert.resolve(self.reason, self.automatic, meta)


# The commands on an existing alert, by the path segment that names them over HTTP.
ALERT_COMMANDS: dict[str, type[AlertCommand]] = {"acknowledge": AcknowledgeAlert, "resolve": ResolveAlert}


class AlertResult(Schema):
    alert_id: UUID
    version: int = Field(description="the alert's version after the command")
    status: AlertStatus
    command_id: str
    replayed: bool = Field(False, description="true when this command id was seen before: nothing new was written")
