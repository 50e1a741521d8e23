"""A webhook receiver for `complaints run`: deliveries working, without leaving the machine.

`complaints run` subscribes it to every event (a webhook subscription named
`demo receiver`) at /demo/receiver. It checks each delivery as any receiver should, with
the Standard Webhooks library's verifier (signature, timestamp), deduplicates on
`webhook-id`, and shows what it received at GET /demo/receiver. Its secret is kept in a
file beside the event store, so a restart goes on verifying.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from standardwebhooks import Webhook, WebhookVerificationError

from aggregates.access import Principal
from aggregates.complaint import CommandIdReused
from aggregates.subscription import subscription_id_for
from commands.desk import ComplaintDesk
from commands.subscriptions import ChangeSubscription, CreateSubscription, RotateSecret

PATH = "/demo/receiver"
COMMAND_ID = "demo:receiver"
ADMIN = Principal("demo", "演示 demo", frozenset({"admin"}))


def subscribe_demo_receiver(desk: ComplaintDesk, url: str, secret_file: Path) -> str:
    """Subscribe the receiver at `url` once; returns its secret (made again if its file is lost)."""
    try:
        result = desk.create_subscription(
            CreateSubscription(command_id=COMMAND_ID, name="demo receiver", kind="webhook", endpoint=url), ADMIN)
    except CommandIdReused:  # subscribed before at another address (another port): it moves here
        result = desk.act_on_subscription(subscription_id_for(COMMAND_ID), ChangeSubscription(endpoint=url), ADMIN)
    if result.secret is None and secret_file.exists():
        return secret_file.read_text().strip()
    if result.secret is None:  # subscribed before, and its secret is lost: a new one
        result = desk.act_on_subscription(result.subscription_id, RotateSecret(overlap_hours=0), ADMIN)
    assert result.secret is not None
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text(result.secret)
    secret_file.chmod(0o600)
    return result.secret


def demo_receiver_router(secret: str, keep: int = 200) -> APIRouter:
    router = APIRouter(tags=["demo"])
    verifier = Webhook(secret)
    received: OrderedDict[str, dict[str, Any]] = OrderedDict()
    counts = {"deliveries": 0, "duplicates": 0}

    @router.post(PATH, status_code=204, include_in_schema=False)
    async def receive(request: Request) -> None:
        body = await request.body()
        try:
            message = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as error:
            raise HTTPException(401, f"not a delivery of ours: {error}") from None
        counts["deliveries"] += 1
        webhook_id = request.headers["webhook-id"]
        if webhook_id in received:
            counts["duplicates"] += 1
            return
        data = message["data"]
        received[webhook_id] = {"webhook_id": webhook_id, "type": message["type"], "timestamp": message["timestamp"],
                                "complaint_id": data.get("complaint_id"), "position": data.get("position")}
        while len(received) > keep:
            received.popitem(last=False)

    @router.get(PATH, summary="What the demo receiver got (verified, deduplicated on webhook-id)")
    def shown() -> dict[str, Any]:
        return counts | {"latest": list(reversed(received.values()))[:50]}

    return router
