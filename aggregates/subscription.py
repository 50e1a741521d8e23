"""The Subscription aggregate: where notifications go, and which ones.

Pure domain code, no I/O. A subscription names an endpoint of a kind (a webhook, an
e-mail address, a chat robot, an SMS gateway), filters over the stream (event types,
alert rules, roles, teams, severities, products) and, for the kinds that sign, its
secrets, kept only sealed (`commands.sealing`): the desk seals them, the notifier unseals
them, and nothing else sees them. Its events stay in the event store: they are
configuration, not the complaints' history, and are never published on the topic.

Rotating a secret keeps the previous one valid until a stated time, so a receiver can
move to the new secret while both signatures are sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from aggregates.complaint import DomainError, Meta, previous_result

SubscriptionKind = Literal["webhook", "email", "wecom", "dingtalk", "feishu", "sms"]
SubscriptionStatus = Literal["active", "paused", "disabled"]
# The kinds whose requests carry a signature (the others' credential is the URL itself).
SIGNED_KINDS: frozenset[str] = frozenset({"webhook", "dingtalk", "feishu"})
FILTERS = ("event_types", "alert_rules", "roles", "teams", "severities", "products")

SUBSCRIPTION_NAMESPACE = UUID("5b8f3c2e-9d41-4a6b-b7e0-2c6d8f1a3e95")


class SubscriptionTransition(DomainError):
    """A subscription command its status does not allow (HTTP 409)."""

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a subscription that is {status}")
        self.status = status


def subscription_id_for(command_id: str) -> UUID:
    return uuid5(SUBSCRIPTION_NAMESPACE, command_id)


class Subscription(Aggregate):
    @staticmethod
    def create_id(command_id: str) -> UUID:  # type: ignore[override]
        return subscription_id_for(command_id)

    @event("SubscriptionCreated")
    def __init__(
        self,
        name: str,
        kind: SubscriptionKind,
        endpoint: str,
        filters: dict[str, list[str]],
        language: str,
        sealed_secret: str | None,
        actor: str,
        occurred_at: datetime,
        command_id: str,
        correlation_id: str,
        acted_as: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.endpoint = endpoint
        self.filters = filters
        self.language = language
        # The current secret first; during a rotation the previous one too, with its end.
        self.secrets: list[dict[str, Any]] = [{"sealed": sealed_secret, "until": None}] if sealed_secret else []
        self.status: SubscriptionStatus = "active"
        self.status_reason: str | None = None
        self.created_at = occurred_at
        self.commands: dict[str, dict[str, Any]] = {}
        self._applied("create_subscription", actor, occurred_at, command_id, fingerprint)

    def _applied(self, action: str, actor: str, occurred_at: datetime, command_id: str,
                 fingerprint: str | None) -> None:
        version = 1 if action == "create_subscription" else self.version + 1
        self.commands[command_id] = {"action": action, "version": version, "status": self.status,
                                     "actor": actor, "fingerprint": fingerprint}
        self.updated_at = occurred_at

    def previous_result(self, command_id: str, action: str, fingerprint: str | None = None) -> int | None:
        return previous_result(self.commands, command_id, action, fingerprint)

    def secrets_at(self, now: datetime) -> list[str]:
        """The sealed secrets a request signed at `now` carries (both during a rotation)."""
        return [s["sealed"] for s in self.secrets if s["until"] is None or now < datetime.fromisoformat(s["until"])]

    # ---------------------------------------------------------------- changes
    def change(self, changes: dict[str, Any], meta: Meta) -> None:
        if self.status == "disabled":
            raise SubscriptionTransition(self.status, "change")
        before = {key: getattr(self, key) for key in changes}
        if before != changes:
            self._changed(before=before, after=changes, **meta.fields())

    @event("SubscriptionChanged")
    def _changed(self, before: dict[str, Any], after: dict[str, Any], actor: str, occurred_at: datetime,
                 command_id: str, correlation_id: str, acted_as: dict[str, Any] | None = None,
                 fingerprint: str | None = None) -> None:
        for key, value in after.items():
            setattr(self, key, value)
        self._applied("change_subscription", actor, occurred_at, command_id, fingerprint)

    def pause(self, reason: str, meta: Meta) -> None:
        if self.status != "active":
            raise SubscriptionTransition(self.status, "pause")
        self._paused(reason=reason, **meta.fields())

    @event("SubscriptionPaused")
    def _paused(self, reason: str, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
                acted_as: dict[str, Any] | None = None, fingerprint: str | None = None) -> None:
        self.status, self.status_reason = "paused", reason
        self._applied("pause_subscription", actor, occurred_at, command_id, fingerprint)

    def resume(self, meta: Meta) -> None:
        if self.status == "active":
            raise SubscriptionTransition(self.status, "resume")
        self._resumed(**meta.fields())

    @event("SubscriptionResumed")
    def _resumed(self, actor: str, occurred_at: datetime, command_id: str, correlation_id: str,
                 acted_as: dict[str, Any] | None = None, fingerprint: str | None = None) -> None:
        self.status, self.status_reason = "active", None
        self._applied("resume_subscription", actor, occurred_at, command_id, fingerprint)

    def disable(self, reason: str, automatic: bool, meta: Meta) -> None:
        if self.status == "disabled":
            raise SubscriptionTransition(self.status, "disable")
        self._disabled(reason=reason, automatic=automatic, **meta.fields())

    @event("SubscriptionDisabled")
    def _disabled(self, reason: str, automatic: bool, actor: str, occurred_at: datetime, command_id: str,
                  correlation_id: str, acted_as: dict[str, Any] | None = None,
                  fingerprint: str | None = None) -> None:
        self.status, self.status_reason = "disabled", reason
        self._applied("disable_subscription", actor, occurred_at, command_id, fingerprint)

    def check_rotation(self) -> None:
        """Only the kinds that sign have a secret to rotate (HTTP 409 for the others)."""
        if self.kind not in SIGNED_KINDS:
            raise SubscriptionTransition(f"a {self.kind} subscription (it has no secret)", "rotate the secret of")

    def rotate_secret(self, sealed_secret: str, previous_until: datetime, meta: Meta) -> None:
        self.check_rotation()
        self._secret_rotated(sealed_secret=sealed_secret, previous_until=previous_until, **meta.fields())

    @event("SecretRotated")
    def _secret_rotated(self, sealed_secret: str, previous_until: datetime, actor: str, occurred_at: datetime,
                        command_id: str, correlation_id: str, acted_as: dict[str, Any] | None = None,
                        fingerprint: str | None = None) -> None:
        # Only the current secret lives on, until `previous_until`; older ones end now.
        current = self.secrets[:1]
        self.secrets = [{"sealed": sealed_secret, "until": None}] + [
            {"sealed": s["sealed"], "until": previous_until.isoformat()} for s in current]
        self._applied("rotate_secret", actor, occurred_at, command_id, fingerprint)

    def state(self) -> dict[str, Any]:
        """What may be shown: everything but the secrets (their ends only) and the command log."""
        shown = {key: value for key, value in vars(self).items()
                 if not key.startswith("_") and key not in {"pending_events", "commands", "secrets"}}
        return shown | {"id": self.id, "version": self.version,
                        "secrets": [{"until": s["until"]} for s in self.secrets]}
