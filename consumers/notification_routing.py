"""Who is told what: the notifier's decisions, pure (no I/O).

For each event of the stream the router updates what it knows of the complaint or alert
(the subject: number, title, team, product, severity, status, the customer's contact),
matches the subscriptions' filters, and adds the customer's own notices: the
acknowledgement on registration, the status changes that matter (assigned, waiting on
them, reopened) and the survey after resolution.

Every decision has a delivery id derived from the subscription, the event and the
message (`delivery_id`): it is the `webhook-id` receivers deduplicate on, and the
outbox's key, so a redelivered event or a restart plans the same delivery again and the
outbox keeps one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from aggregates.access import masked
from aggregates.customer_links import CustomerLinks, complaint_number, link_url
from aggregates.envelope import EventEnvelope
from aggregates.sla import SlaPolicy
from commands.endpoints import check_email
from commands.subscriptions import PHONE
from consumers.notices import Notice, Template

# Opens an event's sealed personal fields: (sealed, complaint id, version) -> the fields, or
# None once the customer is erased (the write side's keyring, given by the root).
Opener = Callable[[str, UUID, int], "dict[str, Any] | None"]

DELIVERY_NAMESPACE = UUID("8f2d7b41-6c3e-4e59-a1d0-93b5c7e2f614")
CUSTOMER_EMAIL, CUSTOMER_SMS = "customer:email", "customer:sms"  # the customer's own channels
# The customer hears of these status changes (the brief: "progress synced to the customer").
CUSTOMER_STATUS_EVENTS = {"Assigned": "assigned", "WaitingOnCustomer": "waiting_on_customer",
                          "Reopened": "reopened"}


@dataclass(frozen=True)
class Planned:
    id: str  # the webhook-id: the same on every attempt, redelivery and restart
    subscription: str  # a subscription's id, or the customer's channel
    kind: str  # webhook, email, wecom, dingtalk, feishu, sms
    endpoint: str  # a URL, e-mail addresses, or phone numbers
    notice: Notice
    position: int
    held: bool = False  # the subscription is paused or disabled: kept until it is resumed


def delivery_id(subscription: str, event: str, template: str) -> str:
    return "msg_" + uuid5(DELIVERY_NAMESPACE, f"{subscription}|{event}|{template}").hex


def webhook_type(event_type: str) -> str:
    """Standard Webhooks' dotted type: `Registered` -> `complaint.registered`,
    `AlertRaised` -> `alert.raised`, `WaitingOnCustomer` -> `complaint.waiting_on_customer`."""
    stream = "alert" if event_type.startswith("Alert") else "complaint"
    name = event_type.removeprefix("Alert") if stream == "alert" else event_type
    return f"{stream}.{re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()}"


@dataclass
class CustomerChannels:
    """How customers are reached, as configured (an e-mail server, an SMS gateway)."""

    email: bool
    sms: bool
    language: str  # the customers' language (zh-CN unless the desk says otherwise)

    def channel_for(self, contact: str | None) -> str | None:
        contact = (contact or "").strip()
        if self.email and _is_email(contact):
            return CUSTOMER_EMAIL
        if self.sms and PHONE.match(contact):
            return CUSTOMER_SMS
        return None


class Router:
    def __init__(self, policy: SlaPolicy, links: CustomerLinks, customers: CustomerChannels, *, public_url: str,
                 link_days: int, timezone: str, opener: Opener | None = None) -> None:
        self.policy = policy
        self.opener = opener
        self.links = links
        self.customers = customers
        self.public_url = public_url
        self.link_lifetime = timedelta(days=link_days)
        self.timezone = timezone

    # ------------------------------------------------------------------ subjects
    @staticmethod
    def follow(subjects: dict[str, dict[str, Any]], envelope: EventEnvelope) -> dict[str, Any]:
        """What the notices need to know of the event's complaint or alert, brought up to date."""
        key, payload, kind = str(envelope.complaint_id), envelope.payload, envelope.event_type
        subject = subjects.setdefault(key, {})
        subject["version"] = envelope.complaint_version
        if kind == "Registered":
            subject |= {"number": complaint_number(envelope.complaint_id), "title": payload["title"],
                        "product": payload.get("product"), "customer_id": payload["customer"]["id"],
                        "contact": (payload.get("customer_personal") or {}).get("contact"),
                        # Sealed (docs/privacy.md): opened only to address a notice, never kept open.
                        "sealed": [payload["sealed"], envelope.complaint_version] if payload.get("sealed") else None,
                        "status": "received", "registered_at": envelope.occurred_at.isoformat()}
        elif kind == "Triaged":
            subject |= {"category": payload["category"], "severity": payload["severity"], "status": "triaged",
                        "first_response_due": payload["first_response_due"],
                        "resolution_due": payload["resolution_due"]}
        elif kind == "Assigned":
            subject |= {"team": payload["team"], "status": "assigned"}
        elif kind == "AlertRaised":
            subject |= {k: payload[k] for k in ("rule", "severity", "team", "recipients", "title_en", "title_zh",
                                                "subject_type", "subject", "owner", "due_at", "evidence")}
            subject |= {"status": "open", "product": payload["subject"] if payload["subject_type"] == "product"
                        else None}
        elif kind == "PersonalDataErased":  # the customer is no one to write to any more
            subject |= {"contact": None, "sealed": None}
        elif kind in ("AlertAcknowledged", "AlertResolved"):
            subject["status"] = "acknowledged" if kind == "AlertAcknowledged" else "resolved"
        else:
            status = _STATUS_AFTER.get(kind)
            if status:
                subject["status"] = status
        return subject

    # ------------------------------------------------------------------ decisions
    def plan(self, envelope: EventEnvelope, subject: dict[str, Any],
             subscriptions: Iterable[dict[str, Any]]) -> list[Planned]:
        event = f"{envelope.complaint_id}:{envelope.complaint_version}"
        planned = []
        for subscription in subscriptions:
            if not matches(subscription["filters"], envelope, subject):
                continue
            template: Template = "alert" if envelope.event_type.startswith("Alert") else "event"
            # The customer's personal data never leaves in a notification: the envelope goes
            # out with it masked, as to a role without `personal_data`.
            notice = Notice(webhook_type(envelope.event_type), template, subscription["language"],
                            envelope.occurred_at, _without_personal_data(envelope),
                            self._staff_context(envelope, subject))
            planned.append(Planned(delivery_id(subscription["id"], event, template), subscription["id"],
                                   subscription["kind"], subscription["endpoint"], notice, envelope.position,
                                   held=subscription["status"] != "active"))
        planned += self._customer_notices(envelope, subject, event)
        return planned

    def _staff_context(self, envelope: EventEnvelope, subject: dict[str, Any]) -> dict[str, Any]:
        context = {"event_type": envelope.event_type, "timezone": self.timezone,
                   "actor_name": envelope.acted_as.name if envelope.acted_as else envelope.actor}
        if envelope.event_type.startswith("Alert"):
            context["alert"] = {k: subject.get(k) for k in ("title_en", "title_zh", "severity", "rule", "subject",
                                                            "status", "due_at", "evidence", "owner")}
            return context
        return context | {"complaint_id": str(envelope.complaint_id), "complaint_number": subject.get("number", ""),
                          **{k: subject.get(k) for k in ("title", "status", "product", "category", "severity",
                                                         "team")}}

    def customer_contact(self, complaint_id: UUID, subject: dict[str, Any]) -> str | None:
        """The customer's contact: opened from the registration's sealed fields (None once
        the customer is erased, or without the keyring)."""
        if not subject.get("sealed"):
            return subject.get("contact")  # registered before personal data was sealed
        if self.opener is None:
            return None
        sealed, version = subject["sealed"]
        try:
            opened = self.opener(sealed, complaint_id, version)
        except LookupError:  # a key this store does not hold
            return None
        return ((opened or {}).get("customer_personal") or {}).get("contact")

    def _customer_notices(self, envelope: EventEnvelope, subject: dict[str, Any], event: str) -> list[Planned]:
        kind = envelope.event_type
        if kind not in CUSTOMER_STATUS_EVENTS and kind not in ("Registered", "Resolved"):
            return []
        contact = self.customer_contact(envelope.complaint_id, subject)
        channel = self.customers.channel_for(contact)
        if channel is None:
            return []
        if kind == "Assigned" and envelope.payload.get("previous_team") is not None:
            return []  # a handover inside the company is not news to the customer
        complaint_id = envelope.complaint_id
        expires = envelope.occurred_at + self.link_lifetime
        context: dict[str, Any] = {
            "complaint_number": subject.get("number", ""), "title": subject.get("title", ""),
            "timezone": self.timezone,
            "status_link": link_url(self.public_url, self.links.issue(complaint_id, "status", expires)),
        }
        template: Template
        if kind == "Registered":
            template = "customer_acknowledgement"
            context["promised_at"] = self.promised_first_response(envelope.occurred_at).isoformat()
        elif kind == "Resolved":
            template = "customer_survey"
            survey = self.links.issue(complaint_id, "survey", expires, nonce=str(envelope.complaint_version))
            context |= {"status": "resolved", "survey_link": link_url(self.public_url, survey)}
        else:
            template = "customer_status"
            context["status"] = CUSTOMER_STATUS_EVENTS[kind]
        notice = Notice(f"customer.{template.removeprefix('customer_')}", template, self.customers.language,
                        envelope.occurred_at, {"complaint_number": context["complaint_number"],
                                               "status": context.get("status", "received")}, context)
        kind_ = "email" if channel == CUSTOMER_EMAIL else "sms"
        return [Planned(delivery_id(channel, event, template), channel, kind_, contact, notice,
                        envelope.position)]

    def promised_first_response(self, registered_at: datetime) -> datetime:
        """What the acknowledgement promises before triage has graded the complaint: the
        first response of a normal complaint, on its calendar."""
        target, calendar = self.policy.target_for("normal", None)
        return calendar.add_business_seconds(registered_at, target.first_response_minutes * 60)


def _without_personal_data(envelope: EventEnvelope) -> dict[str, Any]:
    """The envelope as a staff notice carries it: masked, and without the sealed fields."""
    data: dict[str, Any] = masked(envelope.model_dump(mode="json"))  # type: ignore[assignment]
    data["payload"].pop("sealed", None)
    return data


def _is_email(contact: str) -> bool:
    try:
        check_email(contact)
    except ValueError:
        return False
    return True


def matches(filters: dict[str, list[str]], envelope: EventEnvelope, subject: dict[str, Any]) -> bool:
    """Whether an event passes a subscription's filters (an empty filter lets all through)."""
    is_alert = envelope.event_type.startswith("Alert")
    checks: list[tuple[str, Callable[[], Iterable[Any]]]] = [
        ("event_types", lambda: [envelope.event_type]),
        ("alert_rules", lambda: [subject.get("rule")] if is_alert else []),
        ("roles", lambda: subject.get("recipients") or [] if is_alert else []),
        ("teams", lambda: [subject.get("team")]),
        ("severities", lambda: [subject.get("severity")]),
        ("products", lambda: [subject.get("product")]),
    ]
    for name, values in checks:
        wanted = filters.get(name) or []
        if wanted and not set(wanted) & set(values()):
            return False
    return True


_STATUS_AFTER = {"WaitingOnCustomer": "waiting_on_customer", "CustomerReplied": "assigned",
                 "ResolutionProposed": "resolution_proposed", "Resolved": "resolved", "Verified": "resolved",
                 "Closed": "closed", "Reopened": "reopened", "Withdrawn": "withdrawn",
                 "MarkedDuplicate": "duplicate"}
