"""Notifications through real servers: subscriptions over HTTP, signed webhooks, retries,
rotation, pausing, disabling, re-sends, e-mail, chat robots, SMS and the notifier's CLI.

Each test runs a world of its own: a SQLite event store in a temporary directory, the
command API served by uvicorn on a local port (the development issuer of `tests.identity`,
so the tests' tokens are taken), the notifier's `/subscriptions` and `/deliveries` on the
same app (as `complaints run` mounts them), and the notifier itself following the store
in-process (`Wiring(settings).notifier(source="log")`). Settings come from the environment,
as in production (`COMPLAINTS_NOTIFY_...`), with a fast retry schedule.

What the notifier sends is received by real servers (`tests.receivers`): an HTTP receiver
answering as told (ok, 500, a dropped connection, a slow answer, a 410, a chat robot's
error code) and an aiosmtpd sink. Webhooks are verified with the `standardwebhooks`
library's own verifier, as an independent receiver would; DingTalk and Feishu signatures
with the vendors' formulas, written apart from the code under test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from standardwebhooks import WebhookVerificationError

from aggregates.access import MASK, Principal, masked
from aggregates.customer_links import CustomerLinks, complaint_number
from aggregates.envelope import parse
from commands.alerts import AcknowledgeAlert, RaiseAlert
from commands.desk import ComplaintDesk
from complaints.identity import DevUser
from complaints.keys import load_or_create_key
from complaints.settings import Settings
from complaints.wiring import Wiring
from consumers.sources import LogSource
from scripts.serving import free_port
from tests.conftest import ROOT, Processes
from tests.identity import ISSUER, ISSUER_KEY, OPERATOR_USER
from tests.receivers import (
    Received, Receiver, Recorded, SmtpSink, Behaviour, close, delay, dingtalk_signed, feishu_signed, ok, status,
    vendor_error, verified,
)

T = TypeVar("T")

ADMIN = DevUser("admin", "吴强 Wu Qiang", ("admin",))
AGENT = DevUser("billing-1", "李娜 Li Na", ("agent",), "billing")
AUDITOR = DevUser("auditor", "黄勇 Huang Yong", ("auditor",))
HEAD = Principal("head", "陈静 Chen Jing", frozenset({"department_head"}))
RULES = Principal("automation:alerts", "rules", frozenset({"automation"}))
PUBLIC_URL = "https://complaints.example.com"
TIMEOUT = 0.5  # COMPLAINTS_NOTIFY_TIMEOUT of the worlds: a receiver slower than this has failed
SCHEDULE = [0.2, 0.4]  # COMPLAINTS_NOTIFY_RETRY_SCHEDULE: three attempts in all
JITTER = 0.8  # the schedule's steps are jittered by ±20%


# ---------------------------------------------------------------------------- waiting
def eventually(check: Callable[[], T], timeout: float = 10.0, what: str = "the condition") -> T:
    """`check()`'s first truthy answer, polled; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {found!r})")
        time.sleep(0.05)


def unique(prefix: str = "") -> str:
    return prefix + uuid4().hex[:10]


# ---------------------------------------------------------------------------- the world
@dataclass
class World:
    settings: Settings
    wiring: Wiring
    desk: ComplaintDesk
    notifier: Any | None
    http: httpx.Client

    # ------------------------------------------------------------ HTTP as someone
    def request(self, method: str, path: str, user: DevUser = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ISSUER.token(user)}"}
        return self.http.request(method, path, headers=headers, **kwargs)

    def post(self, path: str, body: dict[str, Any] | None = None, user: DevUser = ADMIN) -> httpx.Response:
        return self.request("POST", path, user, json=body if body is not None else {})

    def get(self, path: str, user: DevUser = ADMIN, **params: Any) -> httpx.Response:
        return self.request("GET", path, user, params=params)

    # ------------------------------------------------------------ subscriptions
    def subscribe(self, endpoint: str, kind: str = "webhook", **fields: Any) -> dict[str, Any]:
        body = {"name": fields.pop("name", unique("sub-")), "kind": kind, "endpoint": endpoint, **fields}
        response = self.post("/subscriptions", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        self.notifier_knows(created["subscription_id"])
        return created

    def subscription(self, subscription_id: str, user: DevUser = ADMIN) -> dict[str, Any]:
        response = self.get(f"/subscriptions/{subscription_id}", user)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def notifier_knows(self, subscription_id: str) -> dict[str, Any]:
        """Wait until the notifier follows the subscription as the store has it now (its
        version and status), and return the notifier's view of it."""
        wanted = self.subscription(subscription_id)

        def known() -> dict[str, Any] | None:
            listed = self.get("/subscriptions").json()
            return next((s for s in listed if s["id"] == subscription_id and s["version"] == wanted["version"]
                         and s["status"] == wanted["status"]), None)
        return eventually(known, what=f"the notifier to follow {subscription_id} at version {wanted['version']}")

    # ------------------------------------------------------------ complaints and alerts
    def register(self, contact: str = "nobody", product: str | None = None, title: str = "App crashes at login",
                 command_id: str | None = None) -> UUID:
        body: dict[str, Any] = {
            "channel": "web", "customer": {"id": unique("C-")}, "customer_personal": {"name": "李伟 Li Wei",
                                                                                     "contact": contact},
            "title": title, "description": "Since version 5.2 the app crashes when I sign in.",
        }
        if product:
            body["product"] = product
        if command_id:
            body["command_id"] = command_id
        response = self.post("/complaints", body, OPERATOR_USER)
        assert response.status_code == 201, response.text
        return UUID(response.json()["complaint_id"])

    def command(self, complaint_id: UUID, path: str, **body: Any) -> dict[str, Any]:
        response = self.post(f"/complaints/{complaint_id}/{path}", body, OPERATOR_USER)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def raise_alert(self, rule: str, recipients: list[str], **fields: Any) -> UUID:
        key = unique(f"{rule}:")
        command = RaiseAlert(key=key, rule=rule, rules_version="2026-12", subject_type="complaint",
                             subject=fields.pop("subject", key), severity=fields.pop("severity", "warning"),
                             title_en=fields.pop("title_en", f"Alert {key}"),
                             title_zh=fields.pop("title_zh", f"告警 {key}"), recipients=recipients, **fields)
        return self.desk.raise_alert(command, RULES).alert_id

    # ------------------------------------------------------------ deliveries
    def delivery(self, delivery_id: str, user: DevUser = ADMIN) -> dict[str, Any]:
        response = self.get(f"/deliveries/{delivery_id}", user)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def deliveries(self, subscription: str, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/deliveries", subscription=subscription, **params)
        assert response.status_code == 200, response.text
        return list(response.json())

    def settled(self, timeout: float = 10.0) -> None:
        """Wait until the notifier has read everything in the store and nothing is due or in flight."""
        assert self.notifier is not None

        def quiet() -> bool:
            if self.notifier.lag():
                return False
            pending = self.get("/deliveries", status="pending", limit=1000).json()
            return not [d for d in pending if d["next_at"] is not None and d["next_at"] <= time.time() + 1]
        eventually(quiet, timeout, "the notifier to settle")
        time.sleep(0.2)  # a receiver may still be answering the last request

    def published(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every published envelope in the store, as JSON, by (complaint or alert id, version):
        what a read node or the topic gets, read here with a source of the test's own."""
        source = LogSource(self.desk.recorder, self.wiring.store.mapper)
        source.start({})
        envelopes: dict[tuple[str, int], dict[str, Any]] = {}
        while polled := source.poll(10_000, 0):
            for value in polled.values:
                envelope = parse(value).model_dump(mode="json")
                envelopes[(envelope["complaint_id"], envelope["complaint_version"])] = envelope
        return envelopes


def settings_from_env(env: dict[str, str | None]) -> Settings:
    """Settings as a process reads them: from COMPLAINTS_* variables (and nothing else of ours)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("COMPLAINTS_"):
                patch.delenv(name)
        for name, value in env.items():
            if value is not None:
                patch.setenv(f"COMPLAINTS_{name}", value)
        return Settings()


def world_env(directory: Path, receiver: Receiver, smtp: SmtpSink, **overrides: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "STORE": "sqlite", "SQLITE_PATH": str(directory / "events.sqlite"),
        "SECRETS_KEY": str(directory / "secrets.key"), "LINKS_KEY": str(directory / "links.key"),
        "NOTIFIER_STATE": str(directory / "notifier.sqlite"), "DEV_ISSUER_KEY": str(ISSUER_KEY),
        "NOTIFY_ALLOW_HOSTS": '["127.0.0.1"]', "NOTIFY_RETRY_SCHEDULE": json.dumps(SCHEDULE),
        "NOTIFY_TIMEOUT": str(TIMEOUT), "NOTIFY_DISABLE_AFTER": "120",
        "SMTP_HOST": smtp.host, "SMTP_PORT": str(smtp.port), "SMTP_SENDER": "投诉中心 <complaints@example.com>",
        "SMS_GATEWAY": receiver.url("/sms-gateway"), "PUBLIC_URL": PUBLIC_URL, "POLL_INTERVAL": "0.02",
        "RATE_LIMIT_COMMANDS": "10000/second", "RATE_LIMIT_READS": "10000/second",
    }
    return env | overrides


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on a free local port, in a thread: its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True, name=f"api-{port}")
    thread.start()
    eventually(lambda: server.started or not thread.is_alive(), 20, "the API to start")
    assert thread.is_alive(), "the API did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def open_world(directory: Path, receiver: Receiver, smtp: SmtpSink, notifier: bool = True,
               **env: str | None) -> Iterator[World]:
    directory.mkdir(parents=True, exist_ok=True)
    settings = settings_from_env(world_env(directory, receiver, smtp, **env))
    wiring = Wiring(settings)
    with ExitStack() as stack:
        stack.callback(wiring.close)
        desk = wiring.desk()
        app = wiring.command_app(desk)
        runner = None
        if notifier:
            runner = wiring.notifier(source="log", desk=desk)
            stack.callback(runner.close)
            app.include_router(wiring.notifier_router(runner))
        url = stack.enter_context(serving(app))
        http = stack.enter_context(httpx.Client(base_url=url, timeout=20))
        if runner is not None:
            runner.start_background()
            stack.callback(runner.stop)
        yield World(settings, wiring, desk, runner, http)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def make_world(tmp_path: Path, receiver: Receiver, smtp: SmtpSink) -> Iterator[Callable[..., World]]:
    """Worlds for this test (`make_world(**COMPLAINTS_overrides)`), closed at its end."""
    with ExitStack() as stack:
        def make(notifier: bool = True, **env: str | None) -> World:
            return stack.enter_context(open_world(tmp_path / unique("world-"), receiver, smtp, notifier, **env))
        yield make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver, smtp: SmtpSink) -> Iterator[World]:
    """A command API whose SSRF guard has no allow-list (no notifier)."""
    with open_world(tmp_path_factory.mktemp("guarded"), receiver, smtp, notifier=False,
                    NOTIFY_ALLOW_HOSTS=None) as built:
        yield built


def path_for(test: str) -> str:
    return f"/hooks/{test}/{uuid4().hex[:8]}"


def errors_of(response: httpx.Response) -> list[tuple[str, ...]]:
    """The field paths a 422 names."""
    assert response.status_code == 422, response.text
    return [tuple(str(part) for part in error["loc"]) for error in response.json()["detail"]]


def history(delivery: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(a["outcome"], a["status_code"]) for a in delivery["history"]]


def attempt_times(delivery: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(a["at"]) for a in delivery["history"]]


# ============================================================================ subscriptions over HTTP
def test_a_webhook_secret_is_shown_once_and_never_again(world: World, receiver: Receiver) -> None:
    body = {"command_id": unique("crm-"), "name": "crm", "kind": "webhook", "endpoint": receiver.url(path_for("crm")),
            "filters": {"event_types": ["Registered", "Resolved", "AlertRaised"]}}
    first = world.post("/subscriptions", body)
    assert first.status_code == 201, first.text
    created = first.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert (created["status"], created["version"], created["replayed"]) == ("active", 1, False)

    again = world.post("/subscriptions", body)
    assert again.status_code in (200, 201), again.text
    assert again.json()["subscription_id"] == created["subscription_id"]
    assert again.json()["replayed"] is True and again.json()["secret"] is None
    # The same command id for another subscription is refused, not replayed.
    assert world.post("/subscriptions", body | {"name": "another"}).status_code == 409

    subscription_id = created["subscription_id"]
    shown = world.get(f"/subscriptions/{subscription_id}")
    assert shown.status_code == 200
    assert shown.json()["secrets"] == [{"until": None}]
    assert shown.json()["filters"]["event_types"] == ["Registered", "Resolved", "AlertRaised"]
    assert world.get(f"/subscriptions/{subscription_id}", AUDITOR).status_code == 200  # read:deliveries
    world.notifier_knows(subscription_id)
    listed = world.get("/subscriptions")
    assert subscription_id in {s["id"] for s in listed.json()}
    for response in (shown, listed):
        assert secret not in response.text and secret.removeprefix("whsec_") not in response.text
        assert "sealed" not in response.text
    # Nor does the event store hold it in the clear.
    stored = b"".join(p.read_bytes() for p in world.settings.sqlite_path.parent.glob("events.sqlite*"))
    assert secret.removeprefix("whsec_").encode() not in stored
    assert b"crm" in stored  # (the file read is the one with the subscription in it)


def test_rotating_a_secret_shows_the_new_one_once(world: World, receiver: Receiver) -> None:
    created = world.subscribe(receiver.url(path_for("rotate-once")))
    command = {"command_id": unique("rotate-"), "overlap_hours": 1}
    rotated = world.post(f"/subscriptions/{created['subscription_id']}/rotate-secret", command)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != created["secret"]
    replay = world.post(f"/subscriptions/{created['subscription_id']}/rotate-secret", command)
    assert replay.json()["replayed"] is True and replay.json()["secret"] is None
    secrets = world.subscription(created["subscription_id"])["secrets"]
    assert secrets[0] == {"until": None} and secrets[1]["until"] is not None and len(secrets) == 2


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "webhook", "endpoint": "crm.example.com/hooks"}, ("body", "endpoint")),
    ({"kind": "webhook", "endpoint": "ftp://crm.example.com/hooks"}, ("body", "endpoint")),
    ({"kind": "webhook", "endpoint": "https://crm.example.com/hooks",
      "filters": {"event_types": ["Registered", "ComplaintExploded"]}}, ("body", "filters", "event_types")),
    ({"kind": "email", "endpoint": "head-at-example.com"}, ("body", "endpoint")),
    ({"kind": "email", "endpoint": "head@example.com, not an address"}, ("body", "endpoint")),
    ({"kind": "sms", "endpoint": "call me maybe"}, ("body", "endpoint")),
    ({"kind": "webhook", "endpoint": "https://crm.example.com/hooks", "secret": "SEC0123456789"}, ("body", "secret")),
    ({"kind": "pigeon", "endpoint": "https://crm.example.com/hooks"}, ("body", "kind")),
])
def test_a_bad_subscription_is_a_422_naming_the_field_and_writes_nothing(
        guarded: World, body: dict[str, Any], field: tuple[str, ...]) -> None:
    before = guarded.desk.recorder.max_notification_id()
    response = guarded.post("/subscriptions", {"name": "bad", **body})
    assert field in errors_of(response)
    assert guarded.desk.recorder.max_notification_id() == before


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1", "169.254.169.254"])
def test_the_ssrf_guard_refuses_private_loopback_and_metadata_endpoints(
        guarded: World, world: World, receiver: Receiver, address: str) -> None:
    endpoint = f"http://{address}:{receiver.port}/hooks/internal"
    refused = guarded.post("/subscriptions", {"name": "internal", "kind": "webhook", "endpoint": endpoint})
    assert errors_of(refused) == [("body", "endpoint")]
    assert address in refused.json()["detail"][0]["msg"]
    assert "COMPLAINTS_NOTIFY_ALLOW_HOSTS" in refused.json()["detail"][0]["msg"]
    # Moving a subscription there is refused too.
    allowed = guarded.post("/subscriptions", {"name": "public", "kind": "webhook",
                                              "endpoint": "https://93.184.216.34/hooks"})
    assert allowed.status_code == 201, allowed.text
    moved = guarded.post(f"/subscriptions/{allowed.json()['subscription_id']}/change", {"endpoint": endpoint})
    assert errors_of(moved) == [("body", "endpoint")]
    # The world's allow-list (COMPLAINTS_NOTIFY_ALLOW_HOSTS='["127.0.0.1"]') lets loopback through, nothing else.
    accepted = world.post("/subscriptions", {"name": "internal", "kind": "webhook", "endpoint": endpoint})
    assert accepted.status_code == (201 if address == "127.0.0.1" else 422), accepted.text


def test_who_may_manage_subscriptions(world: World, receiver: Receiver) -> None:
    endpoint = receiver.url(path_for("who"))
    body = {"name": "crm", "kind": "webhook", "endpoint": endpoint}
    assert world.post("/subscriptions", body, AGENT).status_code == 403
    assert world.post("/subscriptions", body, AUDITOR).status_code == 403
    created = world.subscribe(endpoint)
    subscription_id = created["subscription_id"]
    assert world.post(f"/subscriptions/{subscription_id}/pause", {"reason": "mine now"}, AGENT).status_code == 403
    assert world.post(f"/subscriptions/{subscription_id}/rotate-secret", {}, AGENT).status_code == 403
    assert world.get(f"/subscriptions/{subscription_id}", AGENT).status_code == 403
    assert world.get("/subscriptions", AGENT).status_code == 403
    assert world.get("/deliveries", AGENT).status_code == 403
    assert world.http.get(f"/subscriptions/{subscription_id}").status_code == 401
    assert world.subscription(subscription_id)["status"] == "active"  # nothing the agent tried happened

    unknown = uuid4()
    assert world.get(f"/subscriptions/{unknown}").status_code == 404
    assert world.post(f"/subscriptions/{unknown}/pause", {"reason": "x"}).status_code == 404
    assert world.get("/deliveries/msg_0123456789abcdef").status_code == 404

    resumed = world.post(f"/subscriptions/{subscription_id}/resume", {})
    assert resumed.status_code == 409 and resumed.json()["status"] == "active", resumed.text
    assert world.post(f"/subscriptions/{subscription_id}/pause", {"reason": "maintenance"}).status_code == 200
    assert world.post(f"/subscriptions/{subscription_id}/pause", {"reason": "again"}).status_code == 409
    assert world.post(f"/subscriptions/{subscription_id}/disable", {"reason": "gone"}).status_code == 200
    assert world.post(f"/subscriptions/{subscription_id}/change", {"name": "x"}).status_code == 409
    email = world.subscribe("head@example.com", kind="email")
    assert email["secret"] is None
    # An e-mail subscription has no secret to rotate: refused, nothing written, nothing shown.
    refused = world.post(f"/subscriptions/{email['subscription_id']}/rotate-secret", {})
    assert refused.status_code == 409 and "no secret" in refused.text and "whsec_" not in refused.text, refused.text
    assert world.subscription(email["subscription_id"])["version"] == 1


# ============================================================================ webhooks
def test_webhooks_carry_the_published_envelope_signed_by_standard_webhooks(world: World, receiver: Receiver) -> None:
    path = path_for("envelope")
    created = world.subscribe(receiver.url(path), filters={"event_types": ["Registered", "Triaged"]})
    command_id = unique("register-")
    complaint_id = world.register(contact="wechat:liwei-8848", command_id=command_id, product="mobile-app")
    world.command(complaint_id, "triage", category="billing", severity="major")
    world.command(complaint_id, "assign", team="billing")  # not among the event types
    world.settled()

    requests = receiver.requests(path)
    assert len(requests) == 2
    messages = verified(requests, created["secret"])  # raises unless signed with the secret
    published = world.published()
    by_type = {m["type"]: (m, r) for m, r in zip(messages, requests, strict=True)}
    assert set(by_type) == {"complaint.registered", "complaint.triaged"}
    for version, kind in ((1, "complaint.registered"), (2, "complaint.triaged")):
        message, request = by_type[kind]
        assert set(message) == {"type", "timestamp", "data"}
        envelope = published[(str(complaint_id), version)]
        # The published envelope, the customer's personal data masked and the sealed fields
        # left out: it never leaves, not even sealed.
        expected = masked(envelope)
        expected["payload"].pop("sealed", None)
        assert message["data"] == expected and "sealed" not in request.body.decode()
        assert message["data"]["payload"].get("customer_personal") in (None, {"name": MASK, "contact": MASK})
        assert "liwei-8848" not in request.body.decode() and "李伟" not in request.body.decode()
        assert message["timestamp"] == envelope["occurred_at"].replace("+00:00", "Z")
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-signature"].startswith("v1,")
        assert " " not in request.headers["webhook-signature"]  # one secret, one signature
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
        assert request.headers["webhook-id"].startswith("msg_")
    registered = by_type["complaint.registered"][0]["data"]
    assert (registered["event_type"], registered["complaint_version"], registered["command_id"]) == (
        "Registered", 1, command_id)
    assert registered["payload"]["product"] == "mobile-app"
    # Another secret does not verify them: the signature is the subscription's own.
    with pytest.raises(WebhookVerificationError):
        verified(requests[:1], "whsec_" + base64.b64encode(b"x" * 32).decode())
    # Recorded: one attempt each, delivered.
    for request in requests:
        delivery = world.delivery(request.headers["webhook-id"])
        assert delivery["status"] == "delivered" and history(delivery) == [("delivered", 200)]
        assert delivery["subscription"] == created["subscription_id"] and delivery["kind"] == "webhook"


FAILURES: dict[str, Behaviour] = {
    "500": status(500),
    "dropped connection": close(),
    "timeout": delay(TIMEOUT * 3),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failing_receiver_is_retried_on_schedule_with_the_same_webhook_id(
        world: World, receiver: Receiver, failure: str) -> None:
    path = path_for("retry")
    receiver.behave(FAILURES[failure], FAILURES[failure], ok(), path=path)
    created = world.subscribe(receiver.url(path), filters={"event_types": ["Registered"]})
    complaint_id = world.register()

    requests = receiver.wait_for(3, path, timeout=15)
    world.settled()
    requests = receiver.requests(path)
    assert len(requests) == 3, "three attempts: two failures and a success"
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1  # the same bytes every time
    for message in verified(requests, created["secret"]):
        assert message["data"]["complaint_id"] == str(complaint_id)

    delivery = world.delivery(requests[0].headers["webhook-id"])
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    attempts = delivery["history"]
    assert [a["n"] for a in attempts] == [1, 2, 3]
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "delivered"]
    assert attempts[2]["status_code"] == 200
    failed = attempts[:2]
    if failure == "500":
        assert [a["status_code"] for a in failed] == [500, 500]
        assert all(a["excerpt"] == "answered 500 on purpose" for a in failed)
    else:
        assert [a["status_code"] for a in failed] == [None, None]
        assert all(a["excerpt"] for a in failed)
    if failure == "timeout":
        assert all("timed out" in a["excerpt"] for a in failed)
        assert all(TIMEOUT * 1000 * 0.9 <= a["latency_ms"] < TIMEOUT * 3 * 1000 for a in failed)
    assert all(a["latency_ms"] > 0 for a in attempts)
    # On schedule: each retry waits its step (jittered) after the failed attempt ended.
    at = attempt_times(delivery)
    for n, step in enumerate(SCHEDULE):
        waited = (at[n + 1] - at[n]).total_seconds() - attempts[n]["latency_ms"] / 1000
        assert waited >= step * JITTER - 0.02, f"retry {n + 1} after {waited:.3f} s, not {step} s"


def test_filters_choose_what_each_subscription_hears(world: World, receiver: Receiver) -> None:
    paths = {name: path_for(name) for name in ("resolved", "rule", "heads", "team", "product", "severity")}
    subscriptions = {
        "resolved": world.subscribe(receiver.url(paths["resolved"]), filters={"event_types": ["Resolved"]}),
        "rule": world.subscribe(receiver.url(paths["rule"]), filters={"alert_rules": ["sla_breach"]}),
        "heads": world.subscribe(receiver.url(paths["heads"]), filters={"roles": ["department_head"]}),
        "team": world.subscribe(receiver.url(paths["team"]), filters={"teams": ["logistics"]}),
        "product": world.subscribe(receiver.url(paths["product"]),
                                   filters={"products": ["ebike"], "event_types": ["Registered", "Resolved"]}),
        "severity": world.subscribe(receiver.url(paths["severity"]), filters={"severities": ["major"]}),
    }
    ours = world.register(product="ebike")
    world.command(ours, "triage", category="delivery", severity="normal")
    assigned = world.command(ours, "assign", team="logistics", agent="logistics-1")["version"]
    world.command(ours, "contacts", direction="outbound", channel="phone", summary="Called back")
    world.command(ours, "resolve", resolution="Parcel re-sent")
    theirs = world.register(product="mobile-app")
    triaged = world.command(theirs, "triage", category="billing", severity="major")["version"]
    world.command(theirs, "assign", team="billing", agent="billing-1")
    world.command(theirs, "resolve", resolution="Refunded")
    breach = world.raise_alert("sla_breach", ["supervisor"], team="billing", complaint_id=theirs)
    fatal = world.raise_alert("fatal_complaint", ["supervisor", "department_head"], severity="critical")
    world.desk.act_on_alert(fatal, AcknowledgeAlert(note="on it"), HEAD)
    world.settled()

    def heard(name: str) -> list[tuple[str, str, int]]:
        messages = verified(receiver.requests(paths[name]), subscriptions[name]["secret"])
        return sorted((m["type"], m["data"]["complaint_id"], m["data"]["complaint_version"]) for m in messages)

    resolved_versions = {cid: world.desk.get_complaint(cid).version for cid in (ours, theirs)}
    assert heard("resolved") == sorted(("complaint.resolved", str(cid), v) for cid, v in resolved_versions.items())
    assert heard("rule") == [("alert.raised", str(breach), 1)]
    assert heard("heads") == [("alert.acknowledged", str(fatal), 2), ("alert.raised", str(fatal), 1)]
    assert heard("product") == [("complaint.registered", str(ours), 1),
                                ("complaint.resolved", str(ours), resolved_versions[ours])]
    published = world.published()
    assert heard("severity") == sorted((f"complaint.{world_type(e['event_type'])}", cid, version)
                                       for (cid, version), e in published.items()
                                       if cid == str(theirs) and version >= triaged)
    expected = sorted((f"complaint.{world_type(e['event_type'])}", cid, version)
                      for (cid, version), e in published.items() if cid == str(ours) and version >= assigned)
    assert heard("team") == expected
    assert [t for t, _, _ in expected] == ["complaint.assigned", "complaint.contact_recorded", "complaint.resolved"]


def world_type(event_type: str) -> str:
    """`ContactRecorded` -> `contact_recorded` (the Standard Webhooks type's second part)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower()


# ============================================================================ rotation
def test_during_a_rotation_both_signatures_verify_and_after_it_only_the_new_one(
        world: World, receiver: Receiver) -> None:
    path = path_for("rotation")
    created = world.subscribe(receiver.url(path), filters={"event_types": ["Registered"]})
    subscription_id, old = created["subscription_id"], created["secret"]
    world.register()
    before = receiver.wait_for(1, path)[0]
    assert len(before.headers["webhook-signature"].split()) == 1
    verified([before], old)

    rotated = world.post(f"/subscriptions/{subscription_id}/rotate-secret", {"overlap_hours": 0.0005})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    # (No waiting for the notifier: an event recorded after the rotation is signed with both.)
    overlap_ends = datetime.fromisoformat(world.subscription(subscription_id)["secrets"][1]["until"])
    world.register()
    during = receiver.wait_for(2, path)[1]
    assert datetime.now(UTC) < overlap_ends, "the overlap ended before the test could look: make it longer"
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verified([during], old) == verified([during], new)  # either secret verifies on its own

    time.sleep(max(0.0, (overlap_ends - datetime.now(UTC)).total_seconds()) + 0.2)
    world.register()
    after = receiver.wait_for(3, path)[2]
    assert len(after.headers["webhook-signature"].split()) == 1
    verified([after], new)
    with pytest.raises(WebhookVerificationError):
        verified([after], old)


# ============================================================================ pause and resume
def test_a_paused_subscription_holds_its_deliveries_and_resuming_sends_them_all(
        world: World, receiver: Receiver) -> None:
    path = path_for("pause")
    created = world.subscribe(receiver.url(path), filters={"event_types": ["Registered"]})
    subscription_id = created["subscription_id"]
    paused = world.post(f"/subscriptions/{subscription_id}/pause", {"reason": "CRM maintenance tonight"})
    assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
    # (No waiting for the notifier: events recorded after the pause are held, however soon.)
    complaints = {str(world.register()) for _ in range(3)}
    world.settled()
    held = world.deliveries(subscription_id)
    assert len(held) == 3 and {d["status"] for d in held} == {"held"}
    assert {d["id"] for d in world.deliveries(subscription_id, status="held")} == {d["id"] for d in held}
    assert receiver.requests(path) == []
    # A held delivery is not re-sent by hand: resume the subscription.
    assert world.post(f"/deliveries/{held[0]['id']}/resend").status_code == 409

    resumed = world.post(f"/subscriptions/{subscription_id}/resume", {})
    assert resumed.status_code == 200 and resumed.json()["status"] == "active", resumed.text
    requests = receiver.wait_for(3, path)
    world.settled()
    assert len(receiver.requests(path)) == 3
    assert {r.headers["webhook-id"] for r in requests} == {d["id"] for d in held}
    assert {m["data"]["complaint_id"] for m in verified(requests, created["secret"])} == complaints
    assert {d["status"] for d in world.deliveries(subscription_id)} == {"delivered"}
    assert world.notifier_knows(subscription_id)["status"] == "active"


def test_a_subscription_hears_every_event_recorded_after_it_was_created_however_soon(
        world: World, receiver: Receiver) -> None:
    heard: dict[str, tuple[str, UUID]] = {}
    for n in range(8):
        path = path_for(f"soon-{n}")
        response = world.post("/subscriptions", {"name": f"soon-{n}", "kind": "webhook",
                                                 "endpoint": receiver.url(path),
                                                 "filters": {"event_types": ["Registered"]}})
        assert response.status_code == 201, response.text
        heard[path] = (response.json()["secret"], world.register())
    world.settled()
    for n, (path, (secret, _)) in enumerate(heard.items()):
        messages = verified(receiver.requests(path), secret)
        # Each hears its own complaint and the later ones, none of the earlier.
        later = [complaint_id for _, complaint_id in list(heard.values())[n:]]
        assert sorted(m["data"]["complaint_id"] for m in messages) == sorted(str(c) for c in later)


# ============================================================================ disabling
def endpoint_disabled_alerts(world: World, receiver: Receiver, path: str, secret: str,
                             subscription_id: str) -> UUID:
    """The id of the `endpoint_disabled` alert about `subscription_id`, as a subscription
    listening for that rule heard it."""
    def heard() -> list[dict[str, Any]]:
        messages = verified(receiver.requests(path), secret)
        return [m for m in messages if m["data"]["payload"].get("subject") == subscription_id]
    messages = eventually(heard, what="the endpoint_disabled alert to be delivered")
    assert [m["type"] for m in messages] == ["alert.raised"]
    return UUID(messages[0]["data"]["complaint_id"])


def test_an_endpoint_answering_410_is_disabled_at_once_and_that_is_an_alert(
        world: World, receiver: Receiver) -> None:
    gone, watch = path_for("gone"), path_for("watch")
    receiver.behave(status(410), path=gone)
    watcher = world.subscribe(receiver.url(watch), filters={"alert_rules": ["endpoint_disabled"]})
    created_name = unique("crm-")
    created = world.subscribe(receiver.url(gone), name=created_name, filters={"event_types": ["Registered"]})
    subscription_id = created["subscription_id"]
    world.register()

    disabled = eventually(lambda: (s := world.subscription(subscription_id))["status"] == "disabled" and s,
                          what="the subscription to be disabled")
    assert "410" in disabled["status_reason"]
    request = receiver.wait_for(1, gone)[0]
    delivery = world.delivery(request.headers["webhook-id"])
    assert history(delivery) == [("gone", 410)]  # not retried
    assert delivery["status"] == "held"

    alert_id = endpoint_disabled_alerts(world, receiver, watch, watcher["secret"], subscription_id)
    alert = world.desk.get_alert(alert_id)
    assert (alert.rule, alert.subject_type, alert.subject, alert.status) == (
        "endpoint_disabled", "subscription", subscription_id, "open")
    assert alert.recipients == ["admin"] and "410" in alert.evidence["reason"]
    # Only the endpoint's origin: a robot's URL carries its credential in the path or query.
    assert alert.evidence["endpoint"] == f"http://127.0.0.1:{receiver.port}/…"
    assert created_name in alert.title_en and created_name in alert.title_zh

    # Further deliveries are held, not sent.
    assert world.notifier_knows(subscription_id)["status"] == "disabled"
    world.register()
    world.settled()
    assert len(receiver.requests(gone)) == 1
    deliveries = world.deliveries(subscription_id)
    assert len(deliveries) == 2 and {d["status"] for d in deliveries} == {"held"}
    # Resumed (the receiver fixed), the held deliveries go out.
    receiver.behave(ok(), path=gone)
    assert world.post(f"/subscriptions/{subscription_id}/resume", {}).status_code == 200
    receiver.wait_for(3, gone)
    world.settled()
    assert {d["status"] for d in world.deliveries(subscription_id)} == {"delivered"}


def test_an_endpoint_failing_longer_than_allowed_is_disabled(make_world: Callable[..., World],
                                                             receiver: Receiver) -> None:
    world = make_world(NOTIFY_DISABLE_AFTER="1", NOTIFY_RETRY_SCHEDULE="[0.3, 0.6, 0.9, 1.2]")
    failing, watch = path_for("failing"), path_for("watch")
    receiver.behave(status(503), path=failing)
    watcher = world.subscribe(receiver.url(watch), filters={"alert_rules": ["endpoint_disabled"]})
    created = world.subscribe(receiver.url(failing), filters={"event_types": ["Registered"]})
    subscription_id = created["subscription_id"]
    world.register()

    disabled = eventually(lambda: (s := world.subscription(subscription_id))["status"] == "disabled" and s,
                          timeout=15, what="the subscription to be disabled")
    assert "failed every attempt" in disabled["status_reason"]
    request = receiver.requests(failing)[0]
    delivery = eventually(lambda: (d := world.delivery(request.headers["webhook-id"]))["status"] == "held" and d,
                          what="the delivery to be held")
    first, last = attempt_times(delivery)[0], attempt_times(delivery)[-1]
    assert (last - first).total_seconds() >= 1.0, "disabled before it had failed for a second"
    assert all(outcome == "failed" for outcome, _ in history(delivery))
    disabled_at = datetime.fromisoformat(disabled["updated_at"])
    assert (disabled_at - first).total_seconds() >= 1.0
    alert_id = endpoint_disabled_alerts(world, receiver, watch, watcher["secret"], subscription_id)
    assert world.desk.get_alert(alert_id).rule == "endpoint_disabled"
    attempts = len(receiver.requests(failing))
    world.register()
    world.settled()
    assert len(receiver.requests(failing)) == attempts  # nothing more is tried


# ============================================================================ re-sending by hand
def test_a_delivery_is_re_sent_by_hand_with_the_same_webhook_id(world: World, receiver: Receiver) -> None:
    path = path_for("resend")
    created = world.subscribe(receiver.url(path), filters={"event_types": ["Registered"]})
    world.register()
    first = receiver.wait_for(1, path)[0]
    delivery_id = first.headers["webhook-id"]
    eventually(lambda: world.delivery(delivery_id)["status"] == "delivered")

    assert world.post(f"/deliveries/{delivery_id}/resend", {}, AGENT).status_code == 403
    assert world.post(f"/deliveries/{delivery_id}/resend", {}, AUDITOR).status_code == 403
    assert world.post("/deliveries/msg_00000000000000000000000000000000/resend").status_code == 404
    time.sleep(0.3)
    assert len(receiver.requests(path)) == 1  # the refused re-sends sent nothing

    resent = world.post(f"/deliveries/{delivery_id}/resend")
    assert resent.status_code == 200, resent.text
    second = receiver.wait_for(2, path)[1]
    assert second.headers["webhook-id"] == delivery_id and second.body == first.body
    verified([second], created["secret"])
    delivery = eventually(lambda: (d := world.delivery(delivery_id))["attempts"] == 2 and d)
    assert delivery["status"] == "delivered" and history(delivery) == [("delivered", 200), ("delivered", 200)]
    # Readable by an auditor, not by an agent.
    assert world.get(f"/deliveries/{delivery_id}", AUDITOR).status_code == 200
    assert world.get(f"/deliveries/{delivery_id}", AGENT).status_code == 403


# ============================================================================ e-mail
def mail_to(smtp: SmtpSink, address: str, count: int, timeout: float = 10.0) -> list[Received]:
    def found() -> list[Received]:
        messages = [m for m in smtp.messages if address in m.rcpt_tos]
        return messages if len(messages) >= count else []
    return eventually(found, timeout, f"{count} e-mails to {address}")


def text_of(received: Received) -> str:
    part = received.message.get_body(("plain",))
    assert part is not None, "no text/plain part"
    return str(part.get_content())


def links_in(text: str) -> list[str]:
    return re.findall(rf"{re.escape(PUBLIC_URL)}/s/([A-Za-z0-9_\-.]+)", text)


def promised_first_response(world: World, complaint_id: UUID) -> datetime:
    """What the acknowledgement must promise: a normal complaint's first response, on its
    calendar, from the registration (the SLA policy's figures)."""
    registered_at = world.desk.get_complaint(complaint_id).registered_at
    target, calendar = world.wiring.sla_policy.target_for("normal", None)
    promised = calendar.add_business_seconds(registered_at, target.first_response_minutes * 60)
    assert promised > registered_at
    return promised.astimezone(ZoneInfo(world.settings.timezone))


def test_the_customer_gets_the_acknowledgement_in_chinese(world: World, smtp: SmtpSink) -> None:
    address = f"li.wei.{unique()}@example.com"
    complaint_id = world.register(contact=address, title="充电时冒烟")
    number = complaint_number(complaint_id)
    received = mail_to(smtp, address, 1)[0]
    message = received.message

    assert message["Subject"] == f"投诉受理回执：{number}"
    assert "complaints@example.com" in message["From"] and received.rcpt_tos == [address]
    assert message["Content-Language"] == "zh-CN"
    assert message.get_body(("html",)) is not None
    text = text_of(received)
    assert f"受理编号为 {number}" in text and "投诉主题：充电时冒烟" in text
    promised = promised_first_response(world, complaint_id)
    assert f"我们承诺在 {promised.year}年{promised.month}月{promised.day}日 {promised:%H:%M} 前首次回复您" in text
    (token,) = links_in(text)
    links = CustomerLinks(load_or_create_key(world.settings.links_key))
    claims = links.read(token, "status", datetime.now(UTC))
    assert claims.complaint_id == complaint_id
    # The Message-ID is the delivery's id: a re-sent e-mail is recognisably the same one.
    delivery_id = re.fullmatch(r"<(msg_[0-9a-f]+)@example\.com>", message["Message-ID"]).group(1)  # type: ignore[union-attr]
    delivery = world.delivery(delivery_id)
    assert (delivery["subscription"], delivery["kind"], delivery["status"]) == ("customer:email", "email", "delivered")
    assert delivery["endpoint"] == address and history(delivery) == [("delivered", 250)]


def test_an_erased_customer_is_written_to_no_more_and_their_address_is_forgotten(world: World, smtp: SmtpSink) -> None:
    address = f"erase.me.{unique()}@example.com"
    complaint_id = world.register(contact=address)
    message = mail_to(smtp, address, 1)[0].message
    delivery_id = re.fullmatch(r"<(msg_[0-9a-f]+)@example\.com>", message["Message-ID"]).group(1)  # type: ignore[union-attr]
    customer = world.desk.get_complaint(complaint_id).customer["id"]
    erased = world.post(f"/customers/{customer}/erasure", {"legal_basis": "PIPL Art. 47: the customer asked"})
    assert erased.status_code == 200, erased.text
    eventually(lambda: world.delivery(delivery_id)["endpoint"] == "[erased]", what="the delivery to forget the address")
    # A change the customer would hear of, then another customer's: once theirs arrives, the
    # notifier has passed the first one's, and wrote nothing to the erased customer.
    world.command(complaint_id, "triage", category="billing", severity="minor")
    world.command(complaint_id, "assign", team="billing", agent="billing-1")
    other = f"still.here.{unique()}@example.com"
    world.register(contact=other)
    mail_to(smtp, other, 1)
    assert len([m for m in smtp.messages if address in m.rcpt_tos]) == 1
    assert world.notifier is not None
    with sqlite3.connect(world.notifier.outbox.path) as outbox:
        assert outbox.execute("SELECT count(*) FROM deliveries WHERE endpoint = ?", [address]).fetchone() == (0,)
        assert outbox.execute("SELECT count(*) FROM subjects WHERE data LIKE ?", [f"%{address}%"]).fetchone() == (0,)


def test_the_customer_gets_the_acknowledgement_in_english_when_so_configured(
        make_world: Callable[..., World], smtp: SmtpSink) -> None:
    world = make_world(CUSTOMER_LANGUAGE="en")
    address = f"jane.{unique()}@example.com"
    complaint_id = world.register(contact=f"Jane Doe <{address}>")
    number = complaint_number(complaint_id)
    received = mail_to(smtp, address, 1)[0]
    assert received.message["Subject"] == f"We received your complaint {number}"
    assert received.message["Content-Language"] == "en"
    text = text_of(received)
    assert f"Its number is {number}" in text
    promised = promised_first_response(world, complaint_id)
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    assert f"We will reply to you by {promised.day} {months[promised.month - 1]} {promised.year} {promised:%H:%M}" in text
    (token,) = links_in(text)
    links = CustomerLinks(load_or_create_key(world.settings.links_key))
    assert links.read(token, "status", datetime.now(UTC)).complaint_id == complaint_id


def test_the_customer_hears_of_the_status_changes_that_matter_and_gets_the_survey(
        world: World, smtp: SmtpSink) -> None:
    address = f"wang.fang.{unique()}@example.com"
    complaint_id = world.register(contact=address)
    number = complaint_number(complaint_id)
    mail_to(smtp, address, 1)
    world.command(complaint_id, "triage", category="billing", severity="major")  # not news
    world.command(complaint_id, "assign", team="billing", agent="billing-1")
    world.command(complaint_id, "assign", team="logistics", agent="logistics-1")  # a handover: not news
    world.command(complaint_id, "notes", text="INTERNAL: ask the warehouse")  # not news
    world.command(complaint_id, "wait-on-customer", reason="Need the order number")
    world.command(complaint_id, "customer-replied", summary="Sent it")  # not news
    world.command(complaint_id, "resolve", resolution="Parcel re-sent")
    world.command(complaint_id, "reopen", reason="Parcel never came")
    world.settled()
    time.sleep(0.3)

    messages = [m for m in smtp.messages if address in m.rcpt_tos]
    subjects = sorted(str(m.message["Subject"]) for m in messages)
    assert subjects == sorted([
        f"投诉受理回执：{number}",
        f"您的投诉 {number}：处理中",
        f"您的投诉 {number}：等待您的回复",
        f"请评价我们的服务：投诉 {number}",
        f"您的投诉 {number}：已重新打开",
    ])
    links = CustomerLinks(load_or_create_key(world.settings.links_key))
    now = datetime.now(UTC)
    for received in messages:
        text = text_of(received)
        assert "INTERNAL" not in text and "billing-1" not in text
        (token,) = links_in(text)
        if str(received.message["Subject"]).startswith("请评价"):
            claims = links.read(token, "survey", now)
            assert claims.survey_id and "请花一分钟告诉我们您是否满意" in text
        else:
            claims = links.read(token, "status", now)
        assert claims.complaint_id == complaint_id
    waiting = next(m for m in messages if "等待您的回复" in str(m.message["Subject"]))
    assert "我们需要您补充一些信息" in text_of(waiting)


def test_an_email_subscription_for_department_heads_gets_their_alerts(world: World, smtp: SmtpSink) -> None:
    address = f"head.{unique()}@example.com"
    created = world.subscribe(f"陈静 <{address}>", kind="email", filters={"roles": ["department_head"]})
    assert created["secret"] is None
    theirs = world.raise_alert("fatal_complaint", ["supervisor", "department_head"], severity="critical",
                               title_zh="致命投诉：电池冒烟", title_en="Fatal complaint: battery smoke")
    world.raise_alert("sla_breach", ["supervisor"], title_zh="仅组长", title_en="Supervisors only")
    received = mail_to(smtp, address, 1)[0]
    world.settled()
    assert len([m for m in smtp.messages if address in m.rcpt_tos]) == 1
    assert received.message["Subject"] == "[严重] 告警触发：致命投诉：电池冒烟"
    text = text_of(received)
    assert "致命投诉：电池冒烟" in text and "规则：fatal_complaint" in text
    delivery_id = str(received.message["Message-ID"]).strip("<>").split("@")[0]
    delivery = world.delivery(delivery_id)
    assert (delivery["subscription"], delivery["type"]) == (created["subscription_id"], "alert.raised")
    assert theirs == world.desk.get_alert(theirs).id


# ============================================================================ chat robots
VENDORS: dict[str, tuple[str, str, str | None]] = {  # path, query, secret
    "wecom": ("/cgi-bin/webhook/send", "key=693a91f6-7xxx", None),
    "dingtalk": ("/robot/send", "access_token=0b5f3e2d", "SEC" + "a1b2c3d4" * 8),
    "feishu": ("/open-apis/bot/v2/hook/6d8c7e0f-1a2b", "", "qT7xY2mN9pL4vR8s"),
}
VENDOR_CODES = {"wecom": "errcode 93000", "dingtalk": "errcode 310000", "feishu": "code 19021"}


@pytest.mark.parametrize("kind", sorted(VENDORS))
def test_chat_robots_get_the_vendors_json_and_a_vendor_error_is_retried(
        world: World, receiver: Receiver, kind: str) -> None:
    vendor_path, query, secret = VENDORS[kind]
    path = f"/{unique(kind)}{vendor_path}"
    receiver.behave(vendor_error(kind), ok(), path=path)  # type: ignore[arg-type]
    endpoint = receiver.url(path) + (f"?{query}" if query else "")
    fields: dict[str, Any] = {"filters": {"event_types": ["Registered"]}}
    if secret:
        fields["secret"] = secret
    created = world.subscribe(endpoint, kind=kind, **fields)
    assert created["secret"] is None  # a vendor's secret is never shown back
    complaint_id = world.register(title="App unusable after update")
    number = complaint_number(complaint_id)

    requests = receiver.wait_for(2, path)
    world.settled()
    assert len(receiver.requests(path)) == 2
    for request in requests:
        assert request.headers["content-type"].startswith("application/json")
        body = request.json()
        if kind == "wecom":
            assert parse_qs(request.query) == parse_qs(query)
            assert set(body) == {"msgtype", "markdown"} and body["msgtype"] == "markdown"
            assert set(body["markdown"]) == {"content"} and number in body["markdown"]["content"]
        elif kind == "dingtalk":
            assert parse_qs(request.query)["access_token"] == ["0b5f3e2d"]
            assert dingtalk_signed(request, secret)  # type: ignore[arg-type]
            assert not dingtalk_signed(request, secret + "x")  # type: ignore[operator]
            assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"title", "text"}
            assert number in body["markdown"]["title"] and number in body["markdown"]["text"]
        else:
            assert feishu_signed(request, secret)  # type: ignore[arg-type]
            assert not feishu_signed(request, secret + "x")  # type: ignore[operator]
            assert body["msg_type"] == "post"
            post = body["content"]["post"]["zh_cn"]
            assert number in post["title"]
            assert all(segment["tag"] in ("text", "a") for line in post["content"] for segment in line)
        assert "App unusable after update" in json.dumps(body, ensure_ascii=False)
    # The robot's refusal (HTTP 200 with an error code) was a failed attempt, then retried.
    delivery = world.delivery(world.deliveries(created["subscription_id"])[0]["id"])
    assert delivery["status"] == "delivered"
    assert history(delivery) == [("failed", 200), ("delivered", 200)]
    assert VENDOR_CODES[kind] in delivery["history"][0]["excerpt"]


# ============================================================================ SMS
def test_a_customer_with_a_phone_number_gets_the_acknowledgement_by_sms(world: World, receiver: Receiver) -> None:
    phone = "138" + str(uuid4().int)[:8]
    complaint_id = world.register(contact=phone)
    number = complaint_number(complaint_id)

    def ours() -> list[Recorded]:
        return [r for r in receiver.requests("/sms-gateway") if phone in r.body.decode()]
    (request,) = eventually(ours, what="the SMS gateway to be asked")
    assert request.method == "POST"
    assert request.headers.get("content-type", "").startswith("application/json"), request.headers
    body = request.json()
    assert body["to"] == phone and body["language"] == "zh-CN"
    assert f"您的投诉已受理，编号 {number}" in body["text"]
    (token,) = links_in(body["text"])
    links = CustomerLinks(load_or_create_key(world.settings.links_key))
    assert links.read(token, "status", datetime.now(UTC)).complaint_id == complaint_id
    deliveries = world.deliveries("customer:sms")
    assert [d["status"] for d in deliveries if d["endpoint"] == phone] == ["delivered"]


# ============================================================================ the process
def notifier_env(world: World, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")}
    settings = world.settings
    env.update(
        COMPLAINTS_STORE="sqlite", COMPLAINTS_SQLITE_PATH=str(settings.sqlite_path),
        COMPLAINTS_SECRETS_KEY=str(settings.secrets_key), COMPLAINTS_LINKS_KEY=str(settings.links_key),
        COMPLAINTS_DEV_ISSUER_KEY=str(ISSUER_KEY), COMPLAINTS_NOTIFY_ALLOW_HOSTS='["127.0.0.1"]',
        COMPLAINTS_NOTIFY_RETRY_SCHEDULE=json.dumps(SCHEDULE), COMPLAINTS_NOTIFY_TIMEOUT=str(TIMEOUT),
        COMPLAINTS_SOURCE="log", PYTHONUNBUFFERED="1",
    )
    return env | extra


def complaints(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "complaints.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_notifier_help() -> None:
    done = complaints("notifier", "--help", env={k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")})
    assert done.returncode == 0, done.stderr
    assert "--once" in done.stdout and "--state" in done.stdout and "--port" in done.stdout


def test_notifier_once_delivers_what_is_due_and_exits(make_world: Callable[..., World], receiver: Receiver,
                                                      tmp_path: Path) -> None:
    world = make_world(notifier=False)
    path = path_for("once")
    response = world.post("/subscriptions", {"name": "crm", "kind": "webhook", "endpoint": receiver.url(path),
                                             "filters": {"event_types": ["Registered", "Triaged"]}})
    assert response.status_code == 201, response.text
    secret = response.json()["secret"]
    first = world.register()
    world.command(first, "triage", category="billing", severity="normal")
    state = tmp_path / "once" / "notifier.sqlite"
    env = notifier_env(world, COMPLAINTS_NOTIFIER_STATE=str(state))

    done = complaints("notifier", "--once", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    status_report = json.loads(done.stdout[done.stdout.index("{"):])
    assert status_report["deliveries"] == {"delivered": 2} and status_report["lag"] == 0
    requests = receiver.requests(path)
    assert sorted(m["type"] for m in verified(requests, secret)) == ["complaint.registered", "complaint.triaged"]

    # Again: nothing new, nothing sent twice; then a new event, and only it goes out.
    again = complaints("notifier", "--once", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(receiver.requests(path)) == 2
    world.register()
    third = complaints("notifier", "--once", env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert len(receiver.requests(path)) == 3
    assert json.loads(third.stdout[third.stdout.index("{"):])["deliveries"] == {"delivered": 3}


def test_a_second_notifier_on_the_same_state_file_exits_2(make_world: Callable[..., World], processes: Processes,
                                                          tmp_path: Path) -> None:
    world = make_world(notifier=False)
    state = tmp_path / "shared" / "notifier.sqlite"
    env = notifier_env(world, COMPLAINTS_NOTIFIER_STATE=str(state))
    first = processes.start("notifier", "notifier", env=env)
    processes.wait_for_log(first, "notifier on log")
    second = complaints("notifier", "--once", env=env)
    assert second.returncode == 2, (second.stdout, second.stderr)
    assert "in use by another notifier" in second.stderr
    assert first.poll() is None  # the first goes on
    assert processes.stop(first) == 0
    # Once the first is gone, the file is free again.
    assert complaints("notifier", "--once", env=env).returncode == 0


def test_the_demo_receiver_moves_with_the_port(tmp_path: Path) -> None:
    """`complaints run` on another port than last time: the demo receiver's subscription
    follows it (it used to refuse to start: the same command id with another endpoint)."""
    from aggregates.subscription import subscription_id_for
    from complaints.demo_receiver import COMMAND_ID, subscribe_demo_receiver
    from complaints.store import open_desk

    desk = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "e.sqlite",
                              secrets_key=tmp_path / "secrets.key"))
    try:
        secret = subscribe_demo_receiver(desk, "http://127.0.0.1:8000/demo/receiver", tmp_path / "secret")
        again = subscribe_demo_receiver(desk, "http://127.0.0.1:9000/demo/receiver", tmp_path / "secret")
        assert again == secret
        moved = desk.get_subscription(subscription_id_for(COMMAND_ID))
        assert moved.endpoint == "http://127.0.0.1:9000/demo/receiver"
    finally:
        desk.close()
