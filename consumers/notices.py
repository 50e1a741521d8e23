"""What one notification tells, before it is shaped for a channel.

The notifier (`consumers.notifier`) decides who is told what and makes a `Notice`; the
renderers (`consumers.notify_render`) shape it for a webhook, an e-mail, a chat robot or
an SMS gateway. A notice is plain data, so the outbox can keep it as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

Language = Literal["zh-CN", "en"]
# The messages people read, one template each (consumers/templates/<template>.<language>.*).
Template = Literal[
    "event",  # a complaint event for a subscription (chat robots, e-mail)
    "alert",  # an alert raised, acknowledged or resolved
    "customer_acknowledgement",  # 受理回执: the complaint number, the promised first response, the status link
    "customer_status",  # assigned, waiting on the customer, resolved, reopened
    "customer_survey",  # after resolution: the survey link
]


@dataclass(frozen=True)
class Notice:
    type: str  # Standard Webhooks event type: "complaint.registered", "alert.raised", "subscription.disabled"
    template: Template
    language: Language
    occurred_at: datetime
    data: dict[str, Any]  # what a webhook carries as `data`: the published envelope (JSON), or the notice's facts
    context: dict[str, Any] = field(default_factory=dict)  # what the templates show (see docs/notifications.md)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"occurred_at": self.occurred_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notice:
        return cls(**(data | {"occurred_at": datetime.fromisoformat(data["occurred_at"])}))
