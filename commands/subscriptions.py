"""Subscription commands: where notifications go, validated before anything runs.

Bad input is a 422 naming the field: an endpoint that is not a URL (or, for e-mail, not
addresses), an unknown event type in the filters. Whether an endpoint's address may be
reached (the SSRF guard, `commands.endpoints`) is the API's check, with the allow-list
from the settings.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import Field, ValidationInfo, field_validator

from aggregates.access import MANAGE_SUBSCRIPTIONS
from aggregates.complaint import Meta
from aggregates.events import PAYLOADS
from aggregates.subscription import Subscription, SubscriptionKind, SubscriptionStatus
from commands.models import Command, InvalidCommand, Name, Reference, Schema, StrictBool, StrictFloat, Text

PHONE = re.compile(r"^\+?[0-9][0-9 \-]{5,19}$")
Values = Annotated[list[Reference], Field(max_length=50)]
Language = Literal["zh-CN", "en"]


class Filters(Schema):
    """Which notifications a subscription gets; an empty list lets everything through."""

    event_types: Values = Field(default_factory=list, description="published event types, e.g. Registered, AlertRaised")
    alert_rules: Values = Field(default_factory=list, description="alerts of these rules only (e.g. fatal_complaint)")
    roles: Values = Field(default_factory=list, description="alerts addressed to these roles (e.g. department_head)")
    teams: Values = Field(default_factory=list)
    severities: Values = Field(default_factory=list, description="complaint severities or alert severities")
    products: Values = Field(default_factory=list)

    @field_validator("event_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PAYLOADS))
        if unknown:
            raise ValueError(f"unknown event types {unknown}: see docs/events.md")
        return value


def check_endpoint_shape(kind: str, endpoint: str) -> str:
    """The endpoint's syntax for its kind (reachability is the SSRF guard's)."""
    from commands.endpoints import check_email

    if kind == "email":
        for address in endpoint.split(","):
            check_email(address.strip())
        return endpoint
    if kind == "sms":  # phone numbers; the gateway is the desk's (COMPLAINTS_SMS_GATEWAY)
        for number in endpoint.split(","):
            if not PHONE.match(number.strip()):
                raise ValueError(f"{number.strip()!r} is not a phone number (digits, an optional leading +)")
        return endpoint
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return endpoint


class CreateSubscription(Command):
    """Subscribe an endpoint to notifications (the answer shows a webhook's secret, once)."""

    action: ClassVar[str] = "create_subscription"
    name: Name
    kind: SubscriptionKind
    endpoint: Annotated[str, Field(min_length=1, max_length=2_000,
                                   description="the URL; for e-mail addresses, for SMS phone numbers,"
                                   " separated by commas")]
    filters: Filters = Field(default_factory=Filters)
    language: Language = "zh-CN"
    secret: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        None, description="DingTalk's or Feishu's signing secret (from the vendor's console); a webhook's is generated")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str, info: ValidationInfo) -> str:
        return check_endpoint_shape(info.data.get("kind", "webhook"), value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("kind") not in {"dingtalk", "feishu"}:
            raise ValueError("only DingTalk and Feishu robots take a vendor's secret;"
                             " a webhook's is generated and shown once")
        return value

    def event_fields(self, sealed_secret: str | None) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "endpoint": self.endpoint,
                "filters": self.filters.model_dump(), "language": self.language, "sealed_secret": sealed_secret}


class SubscriptionCommand(Command):
    """A command on an existing subscription."""

    def carry_out(self, subscription: Subscription, meta: Meta) -> None:
        raise NotImplementedError


class ChangeSubscription(SubscriptionCommand):
    """Change a subscription's name, endpoint, filters or language."""

    action: ClassVar[str] = "change_subscription"
    name: Name | None = None
    endpoint: Annotated[str, Field(min_length=1, max_length=2_000)] | None = None
    filters: Filters | None = None
    language: Language | None = None

    def changes(self) -> dict[str, Any]:
        return {key: (value.model_dump() if isinstance(value, Filters) else value)
                for key in ("name", "endpoint", "filters", "language")
                if (value := getattr(self, key)) is not None}

    def carry_out(self, subscription: Subscription, meta: Meta) -> None:
        if self.endpoint is not None:
            try:
                check_endpoint_shape(subscription.kind, self.endpoint)
            except ValueError as error:
                raise InvalidCommand("endpoint", str(error)) from None
        subscription.change(self.changes(), meta)


class PauseSubscription(SubscriptionCommand):
    """Pause deliveries (they are kept and go out once it is resumed)."""

    action: ClassVar[str] = "pause_subscription"
    reason: Text

    def carry_out(self, subscription: Subscription, meta: Meta) -> None:
        subscription.pause(self.reason, meta)


class ResumeSubscription(SubscriptionCommand):
    """Resume a paused or disabled subscription: its held deliveries go out."""

    action: ClassVar[str] = "resume_subscription"

    def carry_out(self, subscription: Subscription, meta: Meta) -> None:
        subscription.resume(meta)


class DisableSubscription(SubscriptionCommand):
    """Disable a subscription (the notifier does it to an endpoint that keeps failing)."""

    action: ClassVar[str] = "disable_subscription"
    reason: Text
    automatic: StrictBool = False

    def carry_out(self, subscription: Subscription, meta: Meta) -> None:
        subscription.disable(self.reason, self.automatic, meta)


class RotateSecret(SubscriptionCommand):
    """Make a new secret (shown once); the old one stays valid for `overlap_hours`."""

    action: ClassVar[str] = "rotate_secret"
    overlap_hours: StrictFloat = Field(24, ge=0, le=24 * 30, description="how long both signatures are sent")
    secret: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        None, description="DingTalk's or Feishu's new secret; a webhook's is generated")

    def previous_until(self, now: datetime) -> datetime:
        return now + timedelta(hours=self.overlap_hours)


# The commands on an existing subscription, by the path segment that names them over HTTP.
SUBSCRIPTION_COMMANDS: dict[str, type[SubscriptionCommand]] = {
    "change": ChangeSubscription, "pause": PauseSubscription, "resume": ResumeSubscription,
    "disable": DisableSubscription, "rotate-secret": RotateSecret,
}
# Every subscription command needs this one permission (the desk checks it).
PERMISSION = MANAGE_SUBSCRIPTIONS


class SubscriptionResult(Schema):
    subscription_id: UUID
    version: int
    status: SubscriptionStatus
    command_id: str
    replayed: bool = False
    secret: str | None = Field(None, description="the new secret, shown this once (webhooks; never on a replay)")


class SubscriptionView(Schema):
    """A subscription as it stands, without its secrets."""

    id: UUID
    version: int
    name: str
    kind: SubscriptionKind
    endpoint: str
    filters: Filters
    language: str
    status: SubscriptionStatus
    status_reason: str | None
    secrets: list[dict[str, Any]] = Field(description="each secret's end (null: current); never the secret")
    created_at: datetime
    updated_at: datetime

