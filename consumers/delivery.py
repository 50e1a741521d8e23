"""The dispatcher: sends what the outbox holds, and records every attempt.

An asyncio loop in a thread of its own, with httpx (async, timeouts) for webhooks, chat
robots and the SMS gateway, and SMTP for e-mail. A slow or dead endpoint never delays the
others: each subscription has its own bounded number of deliveries in flight and is
asked for its due deliveries separately, so a backlog at one endpoint takes none of the
others' turns. A failed attempt is tried again on the schedule (with jitter), an endpoint
answering 410 or failing for longer than allowed is disabled (by the notifier, through
the desk), and everything is recorded: status, latency, the answer's first bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import smtplib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from commands.endpoints import EndpointRefused, check_url
from commands.sealing import Sealer
from consumers.metrics import NOTIFIER_ATTEMPTS, NOTIFIER_LATENCY
from consumers.notices import Notice
from consumers.notification_routing import CUSTOMER_EMAIL, CUSTOMER_SMS
from consumers.notify_render import (
    RenderError, chat_body, chat_failure, email_message, signed_chat_request, sms_body, webhook_body, webhook_headers,
)
from consumers.outbox import Dispatch, Result

log = logging.getLogger(__name__)

CHAT_KINDS = ("wecom", "dingtalk", "feishu")


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    starttls: bool = False


@dataclass(frozen=True)
class Outbound:
    """Where things go besides the subscriptions' own URLs, and what may be reached."""

    smtp: Smtp | None
    sms_gateway: str | None
    allow_hosts: Sequence[str]  # hosts, addresses, ranges (commands.endpoints.check_url)
    allow_urls: Sequence[str] = ()  # exact endpoints let through (`complaints run`'s own receiver)


def render(kind: str, notice: Notice, endpoint: str, message_id: str, outbound: Outbound) -> Any:
    """The request body (or e-mail) of a delivery: raises RenderError for a notice no
    template can show. The notifier calls it before planning, so a poison notice goes
    to dead letters instead of the queue."""
    if kind == "webhook":
        return webhook_body(notice)
    if kind in CHAT_KINDS:
        return chat_body(kind, notice)  # type: ignore[arg-type]
    if kind == "sms":
        return [sms_body(notice, to.strip()) for to in endpoint.split(",")]
    if kind == "email":
        sender = outbound.smtp.sender if outbound.smtp else "complaints@localhost"
        return email_message(notice, sender, [a.strip() for a in endpoint.split(",")], message_id)
    raise RenderError(f"no renderer for {kind!r}")


@dataclass
class Answer:
    outcome: str  # delivered, failed, gone, refused, dead
    status_code: int | None
    excerpt: str


class Senders:
    """Sends one delivery of any kind; unseals the subscriptions' secrets as needed."""

    def __init__(self, lanes: Lanes, sealer: Sealer | None, outbound: Outbound) -> None:
        self.lanes = lanes
        self.sealer = sealer
        self.outbound = outbound
        self._checked: dict[str, tuple[float, str | None]] = {}  # URL -> (until, refusal)
        self._secrets: dict[tuple[str, str], str] = {}

    async def send(self, row: Sequence[Any], subscription: dict[str, Any] | None, now: datetime) -> Answer:
        delivery_id, subscription_id, kind, endpoint, notice_json = row[:5]
        notice = Notice.from_json(json.loads(notice_json))
        try:
            body = render(kind, notice, endpoint, delivery_id, self.outbound)
        except RenderError as error:
            return Answer("dead", None, f"RenderError: {error}")
        if kind == "email":
            return await self._email(body)
        if kind == "sms":
            if not self.outbound.sms_gateway:
                return Answer("failed", None, "no SMS gateway configured (COMPLAINTS_SMS_GATEWAY)")
            answers = [await self._post(subscription_id, self.outbound.sms_gateway, json.dumps(b).encode(),
                                         {"content-type": "application/json"}) for b in body]
            return next((a for a in answers if a.outcome != "delivered"), answers[0])
        secrets = self._unsealed(subscription, now) if subscription else []
        if kind == "webhook":
            headers = webhook_headers(delivery_id, now, body, secrets)
            return await self._post(subscription_id, endpoint, body, headers)
        url, signed = signed_chat_request(kind, endpoint, body, secrets[0] if secrets else None, now)  # type: ignore[arg-type]
        answer = await self._post(subscription_id, url, json.dumps(signed, ensure_ascii=False).encode(),
                                  {"content-type": "application/json"}, check=endpoint)
        if answer.outcome == "delivered" and (why := chat_failure(kind, answer.status_code or 0, answer.excerpt)):  # type: ignore[arg-type]
            return Answer("failed", answer.status_code, why)
        return answer

    async def _post(self, lane: str, url: str, body: bytes, headers: dict[str, str],
                    check: str | None = None) -> Answer:
        refusal = await self._refusal(check or url)
        if refusal:
            return Answer("refused", None, refusal)
        try:
            with self.lanes.client(lane) as client:
                response = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as error:
            return Answer("failed", None, f"timed out: {type(error).__name__}")
        except httpx.HTTPError as error:
            return Answer("failed", None, f"{type(error).__name__}: {error}")
        text = response.text[:500]
        if 200 <= response.status_code < 300:
            return Answer("delivered", response.status_code, text)
        return Answer("gone" if response.status_code == 410 else "failed", response.status_code, text)

    async def _refusal(self, url: str) -> str | None:
        """The SSRF guard again at send time (the address may have moved since the
        subscription was made), remembered for a minute per URL."""
        if url in self.outbound.allow_urls:
            return None
        known = self._checked.get(url)
        if known and known[0] > time.monotonic():
            return known[1]
        try:
            await asyncio.to_thread(check_url, url, self.outbound.allow_hosts)
            refusal = None
        except EndpointRefused as error:
            refusal = str(error)
        self._checked[url] = (time.monotonic() + 60, refusal)
        return refusal

    async def _email(self, message: Any) -> Answer:
        smtp = self.outbound.smtp
        if smtp is None:
            return Answer("failed", None, "no SMTP server configured (COMPLAINTS_SMTP_HOST)")
        try:
            await asyncio.to_thread(_send_mail, smtp, message)
        except smtplib.SMTPRecipientsRefused as error:
            return Answer("failed", 550, f"recipients refused: {error.recipients}")
        except (smtplib.SMTPException, OSError) as error:
            return Answer("failed", getattr(error, "smtp_code", None), f"{type(error).__name__}: {error}")
        return Answer("delivered", 250, "accepted by the SMTP server")

    def _unsealed(self, subscription: dict[str, Any], now: datetime) -> list[str]:
        if self.sealer is None:
            return []
        current = [s["sealed"] for s in subscription.get("secrets", [])
                   if s["until"] is None or now < datetime.fromisoformat(s["until"])]
        opened = []
        for sealed in current:
            key = (subscription["id"], sealed)
            if key not in self._secrets:
                self._secrets[key] = self.sealer.unseal(sealed, subscription["id"])
            opened.append(self._secrets[key])
        return opened


class Lanes:
    """httpx clients of one connection each, lent one per request in flight, kept per
    endpoint (at most its bound of them: the dispatcher never has more in flight).

    Not one client for all: httpcore's pool scans every connection for every queued
    request, so in one shared pool each request costs time in proportion to all endpoints'
    connections, a dead endpoint's hanging ones included. Not one client per endpoint
    either: when several requests enter a pool at once, httpcore hands them the same idle
    connection and all but one go round again (about four rounds a request at 16 in
    flight). A pool of one connection and one request has neither.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.ssl = httpx.create_ssl_context()  # httpx's default, loaded once for all the clients
        self.free: dict[str, list[httpx.AsyncClient]] = defaultdict(list)
        self.made: list[httpx.AsyncClient] = []

    @contextmanager
    def client(self, lane: str) -> Iterator[httpx.AsyncClient]:
        free = self.free[lane]
        if free:
            client = free.pop()
        else:
            client = httpx.AsyncClient(timeout=self.timeout, limits=self.limits, verify=self.ssl,
                                       follow_redirects=False)
            self.made.append(client)
        try:
            yield client
        finally:
            free.append(client)

    async def aclose(self) -> None:
        for client in self.made:
            await client.aclose()


def _send_mail(smtp: Smtp, message: Any) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=30) as client:
        if smtp.starttls:
            client.starttls()
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        client.send_message(message)


class Dispatcher:
    """Runs the sending loop in a thread; `wake()` when new deliveries are planned."""

    def __init__(self, path: Path, sealer: Sealer | None, outbound: Outbound, *, schedule: Sequence[float],
                 disable_after: float, timeout: float, concurrency: int, endpoint_concurrency: int,
                 on_disable: Callable[[str, str, datetime], None], tick: float = 0.05,
                 jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2)) -> None:
        self.path = path
        self.sealer = sealer
        self.outbound = outbound
        self.schedule = list(schedule)
        self.disable_after = timedelta(seconds=disable_after)
        self.timeout = timeout
        self.concurrency = concurrency
        self.endpoint_concurrency = endpoint_concurrency
        self.on_disable = on_disable
        self.tick = tick
        self.jitter = jitter
        self.inflight: dict[str, set[str]] = defaultdict(set)
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._disabling: set[tuple[str, str]] = set()

    def start_background(self) -> threading.Thread:
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="dispatcher", daemon=True)
        self._thread.start()
        return self._thread

    def wake(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    async def _run(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        dispatch = Dispatch(self.path)
        tasks: set[asyncio.Task[None]] = set()
        lanes = Lanes(self.timeout)
        try:
            senders = Senders(lanes, self.sealer, self.outbound)
            while not self._stop.is_set():
                try:
                    self._start_due(dispatch, senders, tasks)
                    await self._flush(dispatch)
                except Exception as error:  # the state file busy or away: try again next tick
                    log.error("dispatcher: %s: %s", type(error).__name__, error)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.tick)
                except TimeoutError:
                    pass
            if tasks:  # let the attempts in flight finish and be recorded
                await asyncio.wait(tasks, timeout=self.timeout)
            await self._flush(dispatch)
        finally:
            await lanes.aclose()
            dispatch.close()

    def _start_due(self, dispatch: Dispatch, senders: Senders, tasks: set[asyncio.Task[None]]) -> None:
        now = time.time()
        room = self.concurrency - len(tasks)
        if room <= 0:
            return
        subscriptions = {s["id"]: s for s in dispatch.active_subscriptions()}
        for subscription_id in [*subscriptions, CUSTOMER_EMAIL, CUSTOMER_SMS]:
            busy = self.inflight[subscription_id]
            free = min(self.endpoint_concurrency - len(busy), room)
            if free <= 0:
                continue
            for row in dispatch.due(subscription_id, now, free, busy):
                busy.add(row[0])
                task = asyncio.create_task(self._attempt(row, subscriptions.get(subscription_id), senders))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                room -= 1
            if room <= 0:
                return

    async def _attempt(self, row: Sequence[Any], subscription: dict[str, Any] | None, senders: Senders) -> None:
        delivery_id, subscription_id, kind = row[0], row[1], row[2]
        retries = row[6]
        started = time.perf_counter()
        now = datetime.now(UTC)
        try:
            answer = await senders.send(row, subscription, now)
        except Exception as error:  # a bug in a renderer or sender must not stop the loop
            answer = Answer("failed", None, f"{type(error).__name__}: {error}")
        latency = (time.perf_counter() - started) * 1000
        next_at = None
        # A 410 is due again too: the endpoint is disabled at once, which holds it with the
        # rest of its deliveries until someone resumes the subscription (nothing lost).
        if answer.outcome in ("failed", "refused", "gone") and retries < len(self.schedule):
            next_at = time.time() + self.schedule[retries] * self.jitter()
        NOTIFIER_ATTEMPTS.labels(kind=kind, outcome=answer.outcome).inc()
        NOTIFIER_LATENCY.labels(kind=kind).observe(latency / 1000)
        if answer.outcome != "delivered":
            log.info("delivery %s to %s: %s %s%s", delivery_id, subscription_id, answer.outcome,
                     answer.status_code or "", f" (retry in {next_at - time.time():.0f}s)" if next_at else "")
        self.results.append(Result(delivery_id, subscription_id, now, answer.outcome, answer.status_code, latency,
                                   answer.excerpt, next_at))
        self.wake()

    async def _flush(self, dispatch: Dispatch) -> None:
        if not self.results:
            return
        results, self.results = self.results, []
        try:
            dispatch.record(results)
        except BaseException:
            self.results = results + self.results
            raise
        for r in results:
            self.inflight[r.subscription].discard(r.delivery)
        for subscription_id in {r.subscription for r in results if r.outcome in ("failed", "gone")}:
            await self._maybe_disable(dispatch, subscription_id, [r for r in results if r.subscription == subscription_id])

    async def _maybe_disable(self, dispatch: Dispatch, subscription_id: str, results: list[Result]) -> None:
        if subscription_id in (CUSTOMER_EMAIL, CUSTOMER_SMS):
            return  # the customers' channels are ours: their failures are retried, never disabled
        since = dispatch.failing_since(subscription_id)
        if since is None:
            return
        if any(r.outcome == "gone" for r in results):
            reason = "the endpoint answered 410 Gone"
        elif datetime.now(UTC) - since >= self.disable_after:
            reason = f"the endpoint has failed every attempt since {since.isoformat()}"
        else:
            return
        key = (subscription_id, since.isoformat())
        if key in self._disabling:
            return
        self._disabling.add(key)
        log.warning("disabling subscription %s: %s", subscription_id, reason)
        dispatch.mark_disabled(subscription_id, reason, datetime.now(UTC))
        await asyncio.to_thread(self.on_disable, subscription_id, reason, since)
