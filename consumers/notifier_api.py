"""The notifier's HTTP face: subscriptions as it knows them, deliveries and their
attempts, and re-sending a delivery by hand (same `webhook-id`: receivers deduplicate).

Served beside the command API by `complaints run`, and by `complaints notifier --port`.
(No `from __future__ import annotations`: FastAPI must see the dependencies' real types.)
It reads the notifier's own SQLite file (a connection of its own); a re-send only puts
the delivery back in the queue, the dispatcher does the rest.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from aggregates.access import READ_DELIVERIES, RESEND_DELIVERY, AccessDenied, Principal
from consumers.state_file import connect

DeliveryStatus = Literal["pending", "held", "delivered", "failed", "dead"]


class Attempt(BaseModel):
    n: int
    at: str
    status_code: int | None
    latency_ms: float
    outcome: str
    excerpt: str


class DeliveryView(BaseModel):
    id: str
    subscription: str
    kind: str
    endpoint: str
    type: str
    position: int
    status: DeliveryStatus
    attempts: int
    next_at: float | None
    created_at: str
    done_at: str | None
    last_error: str | None
    history: list[Attempt] | None = None


COLUMNS = "id, subscription, kind, endpoint, type, position, status, attempts, next_at, created_at, done_at, last_error"


def notifier_router(state: Path, authenticate: Callable[..., Principal], wake: Callable[[], None] = lambda: None,
                    ) -> APIRouter:
    router = APIRouter(tags=["notifications"])
    db = connect(state)

    def allowed(permission: str) -> Callable[..., Any]:
        async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
            try:
                principal.require(permission)
            except AccessDenied as error:
                raise HTTPException(403, str(error)) from None
            return principal
        return check

    Reader = Annotated[Principal, Depends(allowed(READ_DELIVERIES))]
    Resender = Annotated[Principal, Depends(allowed(RESEND_DELIVERY))]

    @router.get("/subscriptions", summary="Subscriptions as the notifier follows them (never their secrets)")
    def subscriptions(_: Reader) -> list[dict[str, Any]]:
        rows = [json.loads(data) for (data,) in db.execute("SELECT data FROM subscriptions ORDER BY id")]
        return [{k: v for k, v in s.items() if k != "secrets"} for s in rows]

    @router.get("/deliveries", response_model=list[DeliveryView], summary="Deliveries, newest first")
    def deliveries(_: Reader, status: DeliveryStatus | None = None, subscription: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=1_000)] = 100) -> list[dict[str, Any]]:
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if subscription:
            where.append("subscription = ?")
            args.append(subscription)
        sql = f"SELECT {COLUMNS} FROM deliveries" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = db.execute(sql + " ORDER BY created_at DESC, position DESC LIMIT ?", [*args, limit]).fetchall()
        return [dict(zip(COLUMNS.split(", "), row)) for row in rows]

    @router.get("/deliveries/dead-letters", summary="What was set aside: notices no template could render,"
                " events the notifier could not read; newest first")
    def dead_letters(_: Reader, limit: Annotated[int, Query(ge=1, le=1_000)] = 100) -> list[dict[str, Any]]:
        names = ("id", "position", "subscription", "type", "reason", "at")
        rows = db.execute(f"SELECT {', '.join(names)} FROM dead_letters ORDER BY at DESC, position DESC LIMIT ?",
                          [limit]).fetchall()
        return [dict(zip(names, row)) for row in rows]

    @router.get("/deliveries/{delivery_id}", response_model=DeliveryView, summary="A delivery and every attempt")
    def delivery(delivery_id: str, _: Reader) -> dict[str, Any]:
        row = db.execute(f"SELECT {COLUMNS} FROM deliveries WHERE id = ?", [delivery_id]).fetchone()
        if row is None:
            raise HTTPException(404, f"no delivery {delivery_id}")
        history = db.execute("SELECT n, at, status_code, latency_ms, outcome, excerpt FROM attempts"
                             " WHERE delivery = ? ORDER BY n", [delivery_id]).fetchall()
        return dict(zip(COLUMNS.split(", "), row)) | {
            "history": [dict(zip(("n", "at", "status_code", "latency_ms", "outcome", "excerpt"), h)) for h in history]}

    @router.post("/deliveries/{delivery_id}/resend", response_model=DeliveryView,
                 summary="Send a delivery again (the same webhook-id), from the schedule's start")
    def resend(delivery_id: str, _: Resender) -> dict[str, Any]:
        changed = db.execute("UPDATE deliveries SET status = 'pending', retries = 0, next_at = ?, done_at = NULL"
                             " WHERE id = ? AND status != 'held'", [time.time(), delivery_id]).rowcount
        if not changed:
            held = db.execute("SELECT 1 FROM deliveries WHERE id = ?", [delivery_id]).fetchone()
            if held is None:
                raise HTTPException(404, f"no delivery {delivery_id}")
            raise HTTPException(409, "its subscription is paused or disabled: resume it, and its deliveries go out")
        wake()
        return delivery(delivery_id, _)

    return router
