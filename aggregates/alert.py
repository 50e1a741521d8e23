"""The Alert aggregate: something a rule noticed that a person should act on.

Pure domain code, no I/O. An alert is raised by a rule (the automation's, through the
desk, like every command), acknowledged by whoever takes it on, and resolved by hand or
by the rule itself when the condition clears. Its events are published on the stream
like a complaint's (`AlertRaised`, `AlertAcknowledged`, `AlertResolved`).

An alert's id derives from its key (the rule, the subject and the window it is about),
so one condition raises one alert however often the rule sees it: redelivered events,
restarts and two copies of the automation all collide on the same id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from aggregates.complaint import DomainError, Meta, previous_result

AlertStatus = Literal["open", "acknowledged", "resolved"]
AlertSeverity = Literal["info", "warning", "critical"]
SubjectType = Literal["complaint", "customer", "product", "category_product", "subscription"]

ALERT_NAMESPACE = UUID("0e9b6d1c-3f5a-4c7e-8b2d-7a4f1e6c9d20")


class AlertTransition(DomainError):
    """An alert command its status does not allow (HTTP 409)."""

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action} an alert that is {status}")
        self.status = status


def alert_id_for(key: str) -> UUID:
    """The id of the alert about `key` (rule, subject and window)."""
    return uuid5(ALERT_NAMESPACE, key)


class Alert(Aggregate):
    @staticmethod
    def create_id(key: str) -> UUID:  # type: ignore[override]
        return alert_id_for(key)

    @event("AlertRaised")
    def __init__(
        self,
        key: str,
        rule: str,
        rules_version: str,
        subject_type: SubjectType,
        subject: str,
        complaint_id: UUID | None,
        team: str | None,
        severity: AlertSeverity,
        title_en: str,
        title_zh: str,
        evidence: dict[str, Any],
        recipients: list[str],
        owner: str | None,
        due_at: datetime | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.key = key
        self.rule = rule
        self.rules_version = rules_version
        self.subject_type = subject_type
        self.subject = subject
        self.complaint_id = complaint_id
        self.team = team
        self.severity = severity
        self.title_en = title_en
        self.title_zh = title_zh
        self.evidence = evidence
        self.recipients = recipients
        self.owner = owner
        self.due_at = due_at
        self.status: AlertStatus = "open"
        self.raised_at = occurred_at
        self.acknowledged_by: str | None = None
        self.resolved_by: str | None = None
        self.commands: dict[str, dict[str, Any]] = {}
        self._applied("raise_alert", actor, occurred_at, command_id, fingerprint)

    def _applied(self, action: str, actor: str, occurred_at: datetime, command_id: str,
                 fingerprint: str | None) -> None:
        version = 1 if action == "raise_alert" else self.version + 1
        self.commands[command_id] = {"action": action, "version": version, "status": self.status,
                                     "actor": actor, "fingerprint": fingerprint}
        self.updated_at = occurred_at

    def previous_result(self, command_id: str, action: str, fingerprint: str | None = None) -> int | None:
        """The version a command already produced, or None if it is new here."""
        return previous_result(self.commands, command_id, action, fingerprint)

    # ---------------------------------------------------------------- acknowledgement
    def acknowledge(self, note: str | None, meta: Meta) -> None:
        if self.status != "open":
            raise AlertTransition(self.status, "acknowledge")
        self._acknowledged(note=note, **meta.fields())

    @event("AlertAcknowledged")
    def _acknowledged(
        self, note: str | None, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
        acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.status = "acknowledged"
        self.acknowledged_by = actor
        self._applied("acknowledge_alert", actor, occurred_at, command_id, fingerprint)

    # ---------------------------------------------------------------- resolution
    def resolve(self, reason: str, automatic: bool, meta: Meta) -> None:
        if self.status == "resolved":
            raise AlertTransition(self.status, "resolve")
        self._resolved(reason=reason, automatic=automatic, **meta.fields())

    @event("AlertResolved")
    def _resolved(
        self, reason: str, automatic: bool, actor: str, occurred_at: datetime, command_id: str,
        correlation_id: str, acted_as: dict[str, Any] | None = None, fingerprint: str | None = None,
    ) -> None:
        self.status = "resolved"
        self.resolved_by = actor
        self._applied("resolve_alert", actor, occurred_at, command_id, fingerprint)

    def state(self) -> dict[str, Any]:
        return {
            key: value for key, value in vars(self).items()
            if not key.startswith("_") and key not in {"pending_events", "commands"}
        } | {"id": self.id, "version": self.version}


