"""Fault test of the notifier (issue 17, "Bad input and faults"): real processes, real SIGKILLs.

Complaint commands (the demo workload, as importers) and alerts (raised as the
automation, some acknowledged or resolved) go in through a `ComplaintDesk` of the test's
own on a SQLite event store; `complaints relay` publishes them to a real Kafka broker and
`complaints notifier` follows the topic, killed with SIGKILL at random moments (seeded:
COMPLAINTS_FAULT_SEED, printed on failure) while everything flows. Two webhook
subscriptions point at one real HTTP receiver (`tests/receivers.py`): one takes every
event, the other, created halfway through the kills, only critical alerts. The receiver
answers 500, drops the connection or answers too late now and then (its script is seeded
too), so retries are pending across the kills.

At the end a notifier runs until nothing is pending, and what arrived is judged against
an oracle computed from the event history alone (the store's published events and when
each subscription was created): every event recorded after a subscription was created
and passing its filter was taken by the receiver at least once, with a signature that
`standardwebhooks`' verifier accepts with the secret the create command showed; the
receiver's set deduplicated on `webhook-id` equals the expected set; every copy of one
event to one subscription carries the same `webhook-id`; nothing else arrived.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aggregates.access import Principal
from aggregates.alert import alert_id_for
from aggregates.envelope import EventEnvelope
from commands.alerts import AcknowledgeAlert, RaiseAlert, ResolveAlert
from commands.desk import ComplaintDesk
from commands.subscriptions import CreateSubscription, Filters
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.notification_routing import delivery_id
from consumers.stored_events import envelopes
from tests.conftest import Processes, backbone_env, send_commands
from tests.identity import OPERATOR
from tests.receivers import Behaviour, Receiver, close, delay, ok, status, verified

KILLS = int(os.environ.get("COMPLAINTS_FAULT_KILLS", "8"))
SEED = int(os.environ.get("COMPLAINTS_FAULT_SEED", "17"))

SCHEDULE = [0.2, 0.5, 1, 1, 2, 2, 2, 2]  # nine attempts in about 11 s
TIMEOUT = 1.0  # s an attempt may take
AUTOMATION = Principal("automation:fault-test", "Alerts under test", frozenset({"automation"}))
ADMIN = Principal("admin-1", "Notification admin", frozenset({"admin"}))
SUBSCRIPTION_CREATED = "aggregates.subscription:Subscription.SubscriptionCreated"


# ---------------------------------------------------------------------------- set-up
@dataclass
class Setup:
    settings: Settings
    desk: ComplaintDesk


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    settings = Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite", secrets_key=tmp_path / "secrets.key")
    desk = open_desk(settings)
    yield Setup(settings, desk)
    desk.close()


def notifier_env(setup: Setup, tmp_path: Path, topic: str, bootstrap: str) -> dict[str, str]:
    return backbone_env(
        setup.settings.sqlite_path, tmp_path / "unused.duckdb", topic, bootstrap,
        COMPLAINTS_SOURCE="kafka", COMPLAINTS_SECRETS_KEY=str(setup.settings.secrets_key),
        COMPLAINTS_NOTIFY_ALLOW_HOSTS=json.dumps(["127.0.0.1"]),
        COMPLAINTS_NOTIFY_RETRY_SCHEDULE=json.dumps(SCHEDULE), COMPLAINTS_NOTIFY_TIMEOUT=str(TIMEOUT),
        COMPLAINTS_NOTIFY_DISABLE_AFTER="3600")


def start_notifier(processes: Processes, env: dict[str, str], state: Path) -> Any:
    proc = processes.start("notifier", "notifier", "--source", "kafka", "--state", str(state), env=env)
    processes.wait_for_log(proc, "notifier on kafka:")
    return proc


def receiver_script(rng: random.Random, length: int = 6_000) -> list[Behaviour]:
    """Mostly a success after 50 ms (so that deliveries are in flight when a kill comes), now
    and then a 500, a dropped connection or an answer after the sender's timeout; a success
    at the end for good. Failures are one in five, independent: nine in a row (the schedule
    running out) happen with a chance of 5e-7 per delivery."""
    steps = []
    for _ in range(length):
        draw = rng.random()
        steps.append(status(500) if draw < 0.12 else close() if draw < 0.17
                     else delay(TIMEOUT + 0.5, status(503)) if draw < 0.20 else delay(0.05))
    return [*steps, ok()]


def taken(behaviour: Behaviour) -> bool:
    """Whether the receiver took the request (answered 2xx): a deduplicating receiver would
    have processed it."""
    return behaviour.action == "answer" and 200 <= behaviour.status < 300


class Alerts:
    """Alerts raised as the automation at a steady pace from a thread, some of them
    acknowledged (by a person) or resolved (by the rule) a little later."""

    def __init__(self, desk: ComplaintDesk, seed: int, pace: float) -> None:
        self.desk, self.pace, self.rng = desk, pace, random.Random(seed)
        self.raised = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                n, rng = self.raised, self.rng
                key = f"fault_test:{SEED}:{n}"
                self.desk.raise_alert(RaiseAlert(
                    command_id=f"fault-alert-{SEED}-{n}", key=key, rule="fault_test", rules_version="fault-test-1",
                    subject_type="product", subject=rng.choice(["router-x2", "ebike", "mobile-app"]),
                    team=rng.choice(["billing", "logistics", None]),
                    severity=rng.choice(["info", "warning", "critical"]), title_en=f"Alert {n}",
                    title_zh=f"告警 {n}", evidence={"n": n}, recipients=["department_head"]), AUTOMATION)
                self.raised += 1
                if n >= 3 and rng.random() < 0.4:
                    earlier = alert_id_for(f"fault_test:{SEED}:{n - 3}")
                    if rng.random() < 0.5:
                        self.desk.act_on_alert(earlier, AcknowledgeAlert(command_id=f"fault-ack-{SEED}-{n}"),
                                               OPERATOR)
                    else:
                        self.desk.act_on_alert(earlier, ResolveAlert(command_id=f"fault-resolve-{SEED}-{n}",
                                                                     reason="cleared", automatic=True), AUTOMATION)
                self.stop.wait(self.pace)
        except BaseException as error:
            self.error = error

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the alerts did not stop"
        if self.error:
            raise self.error


class Complaints:
    """The demo workload through the desk, paced, until stopped."""

    def __init__(self, desk: ComplaintDesk, seed: int, pause: float) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.sent = 0

        def run() -> None:
            try:
                self.sent = send_commands(desk, 40, seed=seed, pause=pause, until=self.stop)
            except BaseException as error:
                self.error = error
        self.thread = threading.Thread(target=run, name="complaints", daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the complaint workload did not stop"
        if self.error:
            raise self.error


# ---------------------------------------------------------------------------- the oracle
def history(desk: ComplaintDesk) -> tuple[list[EventEnvelope], dict[str, int]]:
    """Every published event in the store in the log's order, and the position at which
    each subscription was created."""
    found: list[EventEnvelope] = []
    created: dict[str, int] = {}
    start = 1
    while batch := desk.recorder.select_notifications(start, 5_000):
        found += envelopes(desk.mapper, batch)
        created |= {str(n.originator_id): n.id for n in batch if n.topic == SUBSCRIPTION_CREATED}
        start = batch[-1].id + 1
    return found, created


def expected_events(events: list[EventEnvelope], created_at: int, filters: dict[str, Any]) -> set[tuple[str, int]]:
    """(event id, version) of what a subscription created at position `created_at` with
    these filters must get: written here again from the filters' meaning, apart from the
    router (this test uses event types and severities only)."""
    assert set(filters) <= {"event_types", "severities"}, filters
    wanted_types, wanted_severities = filters.get("event_types"), filters.get("severities")
    expected = set()
    for e in events:
        if e.position <= created_at:
            continue
        if wanted_types and e.event_type not in wanted_types:
            continue
        if wanted_severities:
            assert wanted_types == ["AlertRaised"], "severities are judged on raised alerts only here"
            if e.payload["severity"] not in wanted_severities:
                continue
        expected.add((str(e.complaint_id), e.complaint_version))
    return expected


def outbox_counts(state: Path) -> Counter[str]:
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10) as db:
        return Counter(dict(db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()))


def status_of(state: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(str(state) + ".status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_for(predicate: Any, timeout: float, what: Any) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")


def errors_of(processes: Processes, proc: Any) -> list[str]:
    return [line for line in processes.log_of(proc).splitlines() if " ERROR " in line or "Traceback" in line]


# ---------------------------------------------------------------------------- the test
@pytest.mark.kafka
@pytest.mark.slow
def test_notifier_killed_at_random_delivers_every_notification_at_least_once_through_the_broker(
    setup: Setup, kafka_bootstrap: str, topic: str, processes: Processes, tmp_path: Path
) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    env = notifier_env(setup, tmp_path, topic, kafka_bootstrap)
    state = tmp_path / "notifier.sqlite"
    receiver = Receiver().start()
    scripts = {"/all": receiver_script(random.Random(SEED + 1)), "/critical": receiver_script(random.Random(SEED + 2))}
    for path, script in scripts.items():
        receiver.behave(*script, path=path)
    filters = {"/all": {}, "/critical": {"event_types": ["AlertRaised"], "severities": ["critical"]}}
    secrets: dict[str, str] = {}
    subscriptions: dict[str, str] = {}

    def subscribe(path: str) -> None:
        result = setup.desk.create_subscription(CreateSubscription(
            command_id=f"fault-subscription-{path}", name=f"fault test {path}", kind="webhook",
            endpoint=receiver.url(path), filters=Filters(**filters[path]), language="en"), ADMIN)
        assert result.secret and result.secret.startswith("whsec_")
        secrets[path], subscriptions[path] = result.secret, str(result.subscription_id)

    relay = processes.start("relay", "relay", env=env)
    kills: list[float] = []
    complaints = alerts = None
    try:
        processes.wait_for_log(relay, "relay to topic")
        subscribe("/all")
        complaints = Complaints(setup.desk, seed=SEED, pause=0.03)
        alerts = Alerts(setup.desk, seed=SEED, pace=0.2)
        for n in range(KILLS):
            if n == KILLS // 2:
                subscribe("/critical")  # while the notifier runs and events flow
            notifier = start_notifier(processes, env, state)
            time.sleep(pause := rng.uniform(0.5, 3.0))
            assert notifier.poll() is None, processes.log_of(notifier)[-3000:]
            processes.kill(notifier)
            kills.append(round(pause, 2))
        notifier = start_notifier(processes, env, state)
        time.sleep(1.0)  # events flow on to a notifier that was not killed
        complaints.finish()
        alerts.finish()
        assert alerts.raised >= 30 and complaints.sent >= 200, "commands and alerts were flowing during the kills"

        # The relay published everything, the notifier read it, nothing is pending.
        after = datetime.now(UTC)
        last = setup.desk.recorder.max_notification_id()
        wait_for(lambda: (setup.desk.factory.tracking_recorder().max_tracking_id(f"relay:{topic}") or 0) >= last,
                 30, "the relay to catch up")

        def settled() -> bool:
            report, counts = status_of(state), outbox_counts(state)
            return (report.get("lag") == 0 and "updated_at" in report
                    and datetime.fromisoformat(report["updated_at"]) > after
                    and counts["pending"] == 0 and counts["held"] == 0)
        wait_for(settled, 40, lambda: f"the notifier to settle: {status_of(state)}, outbox {outbox_counts(state)}"
                 f"\n{processes.log_of(notifier)[-2000:]}")
        assert processes.stop(notifier) == 0, processes.log_of(notifier)[-3000:]
        processes.stop(relay)
        counts = outbox_counts(state)
        assert set(counts) == {"delivered"}, f"deliveries not delivered: {counts}"
        failed = [line for proc, _ in processes.started if proc is not relay for line in errors_of(processes, proc)]
        assert not failed, "\n".join(failed[:10])

        # ------------------------------------------------------------ the oracle
        events, created = history(setup.desk)
        expected = {path: expected_events(events, created[subscriptions[path]], filters[path]) for path in scripts}
        assert expected["/critical"], "critical alerts were raised after the second subscription"
        alert_ids = {str(e.complaint_id) for e in events if e.event_type.startswith("Alert")}
        duplicates = 0
        for path, script in scripts.items():
            requests = receiver.requests(path)
            verified(requests, secrets[path])  # every request, with the secret shown once
            events_of: dict[str, set[tuple[str, int]]] = defaultdict(set)  # webhook-id -> events
            ids_of: dict[tuple[str, int], set[str]] = defaultdict(set)  # event -> webhook-ids
            accepted: Counter[str] = Counter()
            for i, request in enumerate(requests):
                body = request.json()
                event = (body["data"]["complaint_id"], body["data"]["complaint_version"])
                webhook_id = request.headers["webhook-id"]
                events_of[webhook_id].add(event)
                ids_of[event].add(webhook_id)
                if taken(script[min(i, len(script) - 1)]):  # the i-th request got the i-th behaviour
                    accepted[webhook_id] += 1
            arrived = set(ids_of)
            missing, unexpected = expected[path] - arrived, arrived - expected[path]
            assert not missing and not unexpected, (
                f"{path}: {len(missing)} events missing (e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected"
                f" (e.g. {sorted(unexpected)[:3]}) of {len(expected[path])}")
            assert all(len(ids) == 1 for ids in ids_of.values()), f"{path}: an event under several webhook-ids"
            assert all(len(evs) == 1 for evs in events_of.values()), f"{path}: a webhook-id for several events"
            assert len(events_of) == len(expected[path]), "deduplicated on webhook-id: the expected set"
            # The webhook-id is the delivery id of (subscription, event), as documented.
            for (event_id, version), ids in ids_of.items():
                template = "alert" if event_id in alert_ids else "event"
                assert ids == {delivery_id(subscriptions[path], f"{event_id}:{version}", template)}
            not_taken = set(events_of) - set(accepted)
            assert not not_taken, f"{path}: {len(not_taken)} events never taken (answered 2xx)"
            duplicates += sum(n - 1 for n in accepted.values())
        retried = len(receiver.requests()) - sum(len(e) for e in expected.values())
        assert duplicates > 0, f"no kill made the notifier send a delivery the receiver had taken again: {kills}"
    except AssertionError as error:
        raise AssertionError(f"{error}\n(seed {SEED}, kills after {kills})") from None
    finally:
        for workload in (complaints, alerts):
            if workload is not None:
                workload.stop.set()
        receiver.stop()
    print(f"\n{complaints.sent} commands, {alerts.raised} alerts, kills after {kills}:"
          f" {len(expected['/all'])} + {len(expected['/critical'])} notifications expected, all arrived;"
          f" {len(receiver.requests())} requests ({retried} more than expected: retries and {duplicates}"
          f" taken twice after a kill), {time.monotonic() - started:.1f}s")


def test_subscription_created_while_the_notifier_polls_misses_nothing(tmp_path: Path) -> None:
    """A subscription created after the notifier last looked at the subscriptions, and an
    event right after it, both arriving while it waits in a poll: the event is planned for
    the new subscription (the notifier brings its subscriptions up to date after the poll)."""
    from commands.models import Customer, CustomerPersonalData, RegisterComplaint
    from complaints.wiring import Wiring

    wiring = Wiring(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite", source="log",
                             secrets_key=tmp_path / "secrets.key", notifier_state=tmp_path / "notifier.sqlite",
                             notify_allow_hosts=["127.0.0.1"]))
    desk = wiring.desk()
    notifier = wiring.notifier()
    try:
        notifier.step()
        poll = notifier.source.poll

        def meanwhile(*args: Any) -> Any:
            notifier.source.poll = poll
            made = desk.create_subscription(CreateSubscription(
                command_id="while-polling", name="new", kind="webhook", endpoint="http://127.0.0.1:9/hook"), ADMIN)
            desk.register(RegisterComplaint(
                command_id="right-after", channel="web", customer=Customer(id="C-1"),
                customer_personal=CustomerPersonalData(name="Customer", contact="c@example.com"),
                title="Broken", description="It broke"), OPERATOR)
            subscription_ids.append(str(made.subscription_id))
            return poll(*args)

        subscription_ids: list[str] = []
        notifier.source.poll = meanwhile
        for _ in range(3):
            notifier.step()
        planned = notifier.outbox.db.execute("SELECT subscription, type FROM deliveries").fetchall()
        assert planned == [(subscription_ids[0], "complaint.registered")]
    finally:
        notifier.close()
        wiring.close()
