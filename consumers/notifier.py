"""The notifier: a process manager that follows the stream and tells people.

Each step reads a batch of the stream, brings its subscriptions up to date (their events
stay in the event store, read by topic from where it last stopped), lets the router
(`consumers.notification_routing`) decide who is told what, checks that each message
renders (one that does not goes to dead letters with the reason, and the rest go on), and
saves the planned deliveries with the positions in one SQLite transaction
(`consumers.outbox`). The dispatcher (`consumers.delivery`) sends them in its own thread.

At least once: a crash before the save reads the batch again and plans the same delivery
ids, which the outbox keeps once; a crash during a send sends it again with the same
`webhook-id`, which receivers deduplicate on. The notifier acts on the write side only
to disable an endpoint that keeps failing, through the desk, with command ids derived
from the subscription and when it started failing, and by raising an alert about it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID


from aggregates.access import Principal
from aggregates.customer_links import complaint_number
from aggregates.subscription import Subscription
from commands.alerts import RaiseAlert
from commands.desk import SubscriptionNotFound
from commands.sealing import Sealer
from commands.subscriptions import DisableSubscription
from consumers.delivery import Dispatcher, Outbound, render
from consumers.metrics import NOTIFIER_LAG, NOTIFIER_PLANNED
from consumers.notification_routing import Planned, Router
from consumers.notify_render import RenderError, redacted
from consumers.outbox import Outbox, SetAside
from consumers.retrying import Backoff
from consumers.sources import Source, lag
from consumers.state_file import InBackground
from consumers.status import StatusFile

log = logging.getLogger(__name__)

SUBSCRIPTION_TOPIC_PREFIX = "aggregates.subscription:Subscription."
SUBSCRIPTION_TOPICS = [SUBSCRIPTION_TOPIC_PREFIX + name for name in (
    "SubscriptionCreated", "SubscriptionChanged", "SubscriptionPaused", "SubscriptionResumed",
    "SubscriptionDisabled", "SecretRotated")]
PRINCIPAL = Principal("notifier", "通知 notifier", frozenset({"notifier"}))
# The customers hear of what happens now: a notifier reading old history (a new one, or
# one that was down for days) does not write to them about last year's complaints.
CUSTOMER_NOTICE_MAX_AGE = timedelta(days=1)


class Desk(Protocol):
    sealer: Sealer | None

    def get_subscription(self, subscription_id: UUID) -> Subscription: ...

    def act_on_subscription(self, subscription_id: UUID, command: Any, principal: Principal) -> Any: ...

    def raise_alert(self, command: RaiseAlert, principal: Principal) -> Any: ...


@dataclass(frozen=True)
class Delivery:
    """The dispatcher's settings (`complaints.settings`: COMPLAINTS_NOTIFY_*)."""

    schedule: Sequence[float]
    disable_after: float
    timeout: float
    concurrency: int
    endpoint_concurrency: int


class Notifier(InBackground):
    thread_name = "notifier"

    def __init__(self, source: Source, recorder: Any, desk: Desk, router: Router, state_path: str | Path,
                 outbound: Outbound, delivery: Delivery, *, batch_size: int = 2_000, poll_timeout: float = 0.1,
                 status_every: float = 2.0) -> None:
        self.source = source
        self.recorder = recorder
        self.desk = desk
        self.router = router
        self.outbound = outbound
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.outbox = Outbox(state_path)
        self.dispatcher = Dispatcher(self.outbox.path, desk.sealer, outbound, on_disable=self._disable,
                                     schedule=delivery.schedule, disable_after=delivery.disable_after,
                                     timeout=delivery.timeout, concurrency=delivery.concurrency,
                                     endpoint_concurrency=delivery.endpoint_concurrency)
        self.subjects: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.positions: dict[int, int] = {}
        self.status_file = StatusFile(str(self.outbox.path), status_every)
        self._started = False
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self.unreadable = 0

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> Notifier:
        if not self._started:
            self.subjects, self.subscriptions, self.positions = self.outbox.load(self.source.name)
            self.source.start(self.positions)
            self._started = True
            log.info("notifier on %s: %d subscriptions, positions %s", self.source.name, len(self.subscriptions),
                     self.positions or "from the start")
        return self

    def close(self) -> None:
        self.write_status(force=True)
        self.source.close()
        self.outbox.close()

    # ------------------------------------------------------------------ one step
    def step(self) -> list[Planned]:
        """Read a batch, bring the subscriptions up to date, plan, save. Returns what was planned."""
        self.open()
        polled = self.source.poll(self.batch_size, self.poll_timeout)
        # After the poll: every subscription created before the batch's last event is then
        # in the store (positions are assigned in commit order), so none misses an event
        # written right after it was created.
        self.refresh_subscriptions()
        if len(polled) < self.batch_size:
            self.caught_up.set()
        now = datetime.now(UTC)
        planned: list[Planned] = []
        dead: list[SetAside] = []
        touched: dict[str, dict[str, Any]] = {}
        erased: list[str] = []
        for envelope in self._envelopes(polled.values):
            if envelope.event_type == "PersonalDataErased":
                erased.append(complaint_number(envelope.complaint_id))
            try:
                subject = self.router.follow(self.subjects, envelope)
                listening = [s for s in self.subscriptions.values() if envelope.position >= s["from_position"]]
                plans = self.router.plan(envelope, subject, listening)
            except (KeyError, TypeError, ValueError) as error:  # a payload the router cannot read
                dead.append(SetAside(f"event:{envelope.complaint_id}:{envelope.complaint_version}",
                                     envelope.position, "*", envelope.event_type, f"{type(error).__name__}: {error}"))
                log.warning("event at position %d set aside: %s", envelope.position, error)
                continue
            touched[str(envelope.complaint_id)] = subject
            for plan in plans:
                if plan.subscription.startswith("customer:") and now - envelope.occurred_at > CUSTOMER_NOTICE_MAX_AGE:
                    continue
                try:
                    render(plan.kind, plan.notice, plan.endpoint, plan.id, self.outbound)
                except (RenderError, KeyError, TypeError, ValueError) as error:
                    dead.append(SetAside(plan.id, plan.position, plan.subscription, plan.notice.type,
                                         f"{type(error).__name__}: {error}"))
                    log.warning("delivery %s of position %d to %s set aside: %s", plan.id, plan.position,
                                plan.subscription, error)
                    continue
                planned.append(plan)
        positions = {p: n for p, n in polled.next_positions.items() if self.positions.get(p) != n}
        if planned or dead or positions or erased:
            new = self.outbox.save_plan(self.source.name, positions, planned, dead, touched, now, erased)
            self.positions.update(positions)
            if new:
                for plan in planned:
                    NOTIFIER_PLANNED.labels(kind=plan.kind).inc()
                self.dispatcher.wake()
        self.write_status()
        return planned

    def refresh_subscriptions(self) -> None:
        """The subscriptions whose events the store has since last time, as they stand now."""
        while self._refresh_subscriptions(1_000) == 1_000:
            pass

    def _refresh_subscriptions(self, limit: int) -> int:
        start = self.outbox.subscriptions_position() + 1
        notes = self.recorder.select_notifications(start, limit, topics=SUBSCRIPTION_TOPICS)
        if not notes:
            return 0
        changed = []
        for subscription_id in dict.fromkeys(n.originator_id for n in notes):
            try:
                subscription = self.desk.get_subscription(subscription_id)
            except SubscriptionNotFound:
                continue
            key = str(subscription_id)
            first = next(n.id for n in notes if n.originator_id == subscription_id)
            from_position = self.subscriptions.get(key, {}).get("from_position", first)
            view = {"id": key, "name": subscription.name, "kind": subscription.kind,
                    "endpoint": subscription.endpoint, "filters": subscription.filters,
                    "language": subscription.language, "status": subscription.status,
                    "secrets": subscription.secrets, "from_position": from_position,
                    "version": subscription.version}
            self.subscriptions[key] = view
            changed.append(view)
            log.info("subscription %s (%s, %s) is %s", key, view["name"], view["kind"], view["status"])
        self.outbox.save_subscriptions(changed, notes[-1].id)
        self.dispatcher.wake()
        return len(notes)

    def _disable(self, subscription_id: str, reason: str, failing_since: datetime) -> None:
        """Disable an endpoint that keeps failing, and say so with an alert (both idempotent:
        their ids derive from the subscription and when it started failing)."""
        since = failing_since.isoformat()
        subscription = self.subscriptions.get(subscription_id, {})
        try:
            self.desk.act_on_subscription(UUID(subscription_id), DisableSubscription(
                reason=reason, automatic=True, command_id=f"notifier:disable:{subscription_id}:{since}"), PRINCIPAL)
        except Exception as error:  # disabled by hand meanwhile, or the store away: the alert still says it
            log.info("disabling %s: %s", subscription_id, error)
        name = subscription.get("name", subscription_id)
        self.desk.raise_alert(RaiseAlert(
            command_id=f"notifier:alert:{subscription_id}:{since}", key=f"endpoint_disabled:{subscription_id}:{since}",
            rule="endpoint_disabled", rules_version="notifier", subject_type="subscription", subject=subscription_id,
            severity="warning", title_en=f"Notifications to {name} stopped: {reason}",
            title_zh=f"通知订阅 {name} 已停用：端点持续失败或已失效",
            evidence={"endpoint": redacted(subscription.get("endpoint", "")), "failing_since": since, "reason": reason},
            recipients=["admin"]), PRINCIPAL)

    # ------------------------------------------------------------------ running
    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or self._stop
        backoff = Backoff(stop.is_set)
        self.dispatcher.start_background()
        try:
            while not stop.is_set():
                try:
                    self.step()
                    backoff.reset()
                except Exception as error:
                    log.error("notifier step failed, retrying in %.1fs from the saved state: %s: %s",
                              backoff.seconds, type(error).__name__, error)
                    self._started = False
                    backoff.wait()
        finally:
            self.dispatcher.stop()

    # ------------------------------------------------------------------ status
    def due_now(self) -> int:
        """Deliveries waiting for an attempt that is due (or in flight)."""
        return self.outbox.db.execute("SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_at <= ?",
                                      [time.time()]).fetchone()[0]

    def lag(self) -> int:
        behind = lag(self.source.end_positions(), self.positions, self.source.first_position)
        NOTIFIER_LAG.set(behind)
        return behind

    def status(self) -> dict[str, Any]:
        try:
            behind: int | None = self.lag()
        except Exception:
            behind = None
        db = self.outbox.db
        return {
            "source": self.source.name, "positions": self.positions, "lag": behind,
            "subscriptions": {s["id"]: {"name": s["name"], "kind": s["kind"], "status": s["status"]}
                              for s in self.subscriptions.values()},
            "deliveries": dict(db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()),
            "dead_letters": db.execute("SELECT count(*) FROM dead_letters").fetchone()[0],
            "unreadable_messages": self.unreadable,
            "updated_at": datetime.now(UTC).isoformat(),
        }

    def write_status(self, force: bool = False) -> None:
        self.status_file.write(self.status, force)
