"""Real servers for notification tests: an HTTP receiver and an SMTP sink, no mocks.

`Receiver` is uvicorn serving a tiny ASGI app on 127.0.0.1 (an ephemeral port) in a thread
of its own: one event loop holds hundreds of slow requests at once. It records every
request and answers as told, per path or for all: `ok()`, `status(n)`, `delay(s)`,
`close()` (drop the connection unanswered), `vendor_error(kind)` (a chat robot's 200 with
an error code). Several behaviours are used in turn, the last one for good:
`receiver.behave(status(500), status(500), ok())` fails twice, then takes everything.

`SmtpSink` is aiosmtpd's threaded controller, keeping each message parsed.

The verifiers check what a receiver would: Standard Webhooks signatures with the
`standardwebhooks` verifier, DingTalk's signed URL and Feishu's signed body from the
vendors' formulas (written here again, apart from the code under test).
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import parse_qs

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks import Webhook

VendorKind = Literal["wecom", "dingtalk", "feishu"]
# What each robot answers when it refuses a message (HTTP 200 all the same).
VENDOR_ERRORS: dict[VendorKind, dict[str, Any]] = {
    "wecom": {"errcode": 93000, "errmsg": "invalid webhook url, hint: [1700000000_1_abcdef]"},
    "dingtalk": {"errcode": 310000, "errmsg": "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"},
    "feishu": {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"},
}
VENDOR_CLOCK_SKEW = 3600  # seconds: DingTalk and Feishu refuse a timestamp further from now


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    received_at: datetime

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Behaviour:
    """How the receiver answers one request."""

    action: Literal["answer", "close"]
    status: int = 200
    body: bytes = b""
    seconds: float = 0.0  # wait this long first


def ok(status_code: int = 200) -> Behaviour:
    """A success: 200 with the robots' own `{"errcode": 0}`, or another 2xx, empty."""
    body = json.dumps({"errcode": 0, "errmsg": "ok"}).encode() if status_code == 200 else b""
    return Behaviour("answer", status_code, body)


def status(status_code: int) -> Behaviour:
    return Behaviour("answer", status_code, f"answered {status_code} on purpose".encode())


def delay(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait `seconds`, then answer as `then` (ok)."""
    after = then or ok()
    return Behaviour(after.action, after.status, after.body, seconds)


def close() -> Behaviour:
    """Drop the connection without an answer (the sender sees a broken connection)."""
    return Behaviour("close")


def vendor_error(kind: VendorKind = "dingtalk") -> Behaviour:
    return Behaviour("answer", 200, json.dumps(VENDOR_ERRORS[kind]).encode())


@dataclass
class _Script:
    """Behaviours in turn; the last one stays."""

    steps: list[Behaviour] = field(default_factory=list)

    def next(self) -> Behaviour:
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]


class Receiver:
    """An HTTP server recording requests and answering as told (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._requests: list[Recorded] = []
        self._scripts: dict[str | None, _Script] = {None: _Script([ok()])}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -------------------------------------------------------------- control

    def start(self) -> Receiver:
        sock = _listening_socket()
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, interface="asgi3", lifespan="off", proxy_headers=False,
                                log_config=None, log_level="warning", access_log=False, backlog=4096,
                                timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"receiver-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server and self._thread:
            self._server.should_exit = self._server.force_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def behave(self, *behaviours: Behaviour, path: str | None = None) -> None:
        """Answer requests to `path` (all paths when None) with `behaviours` in turn."""
        if not behaviours:
            raise ValueError("name at least one behaviour")
        with self._lock:
            self._scripts[path] = _Script(list(behaviours))

    def requests(self, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Recorded]:
        """The requests once at least `count` have arrived; AssertionError after `timeout`."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests(path)) >= count, timeout):
                raise AssertionError(f"{len(self.requests(path))} requests to {path or 'any path'}, not {count}")
            return self.requests(path)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # -------------------------------------------------------------- the ASGI app

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender went away mid-request (killed): no receiver acts on half a body
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        request = Recorded(
            method=scope["method"], path=scope["path"], query=scope["query_string"].decode(),
            headers={name.decode().lower(): value.decode() for name, value in scope["headers"]},
            body=b"".join(chunks), received_at=datetime.now(UTC),
        )
        with self._lock:
            self._requests.append(request)
            script = self._scripts.get(request.path) or self._scripts[None]
            behaviour = script.next()
            self._lock.notify_all()
        if behaviour.seconds:
            await asyncio.sleep(behaviour.seconds)
        if behaviour.action == "close":
            await self._drop(tuple(scope["client"]))
            return
        await send({"type": "http.response.start", "status": behaviour.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(behaviour.body)).encode())]})
        await send({"type": "http.response.body", "body": behaviour.body})

    async def _drop(self, client: tuple[str, int]) -> None:
        """Abort the client's connection. ASGI has no way to say "no answer", so this finds
        uvicorn's protocol for the connection; once it has seen the connection lost, uvicorn
        sends nothing (no 500) for the request."""
        assert self._server is not None
        for connection in list(self._server.server_state.connections):
            if getattr(connection, "client", None) == client:
                connection.transport.abort()  # type: ignore[union-attr]
        for _ in range(3):
            await asyncio.sleep(0)  # let connection_lost run


def _listening_socket() -> socket.socket:
    """A TCP socket bound to an ephemeral port of 127.0.0.1. The protocol is named: asyncio
    turns Nagle's algorithm off only on sockets whose `proto` is TCP, and with it on, each
    answer written in two parts waits out the client's delayed ACK (40 ms a request)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


# ------------------------------------------------------------------ verifiers

def verified(requests: Iterable[Recorded], secret: str) -> list[Any]:
    """Each webhook request's payload, once `standardwebhooks` has verified it with `secret`
    (as an independent receiver would); WebhookVerificationError on the first that fails."""
    webhook = Webhook(secret)
    return [webhook.verify(request.body, request.headers) for request in requests]


def deduplicated(requests: Iterable[Recorded]) -> dict[str, Recorded]:
    """The first request of each `webhook-id`: what a receiver deduplicating on it keeps."""
    first: dict[str, Recorded] = {}
    for request in requests:
        first.setdefault(request.headers["webhook-id"], request)
    return first


def dingtalk_signed(request: Recorded, secret: str, now: datetime | None = None) -> bool:
    """Whether DingTalk would take this request: `timestamp` (ms, within an hour of now) and
    `sign` = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))) in the query."""
    query = parse_qs(request.query)
    timestamp, sign = query.get("timestamp", [""])[0], query.get("sign", [""])[0]
    if not timestamp.isdigit() or not _recent(int(timestamp) / 1000, now):
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(expected).decode(), sign)


def feishu_signed(request: Recorded, secret: str, now: datetime | None = None) -> bool:
    """Whether Feishu would take this request: `timestamp` (s, within an hour of now) and
    `sign` = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")) in the JSON body."""
    body = request.json()
    timestamp, sign = str(body.get("timestamp", "")), str(body.get("sign", ""))
    if not timestamp.isdigit() or not _recent(int(timestamp), now):
        return False
    expected = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(expected).decode(), sign)


def _recent(seconds: float, now: datetime | None) -> bool:
    return abs((now or datetime.now(UTC)).timestamp() - seconds) <= VENDOR_CLOCK_SKEW


# ------------------------------------------------------------------ SMTP

@dataclass(frozen=True)
class Received:
    """One message the sink took: the envelope, the raw bytes and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = bytes(envelope.original_content or envelope.content or b"")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sink._took(Received(str(envelope.mail_from), list(envelope.rcpt_tos), raw, message))
        return "250 Message accepted for delivery"


class _BoundController(Controller):
    """aiosmtpd's controller listening on a socket bound beforehand (an ephemeral port
    known before the server starts: the controller checks it is up by connecting to it)."""

    def __init__(self, handler: _Handler, sock: socket.socket) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1])
        self._sock = sock

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpSink:
    """A real SMTP server on 127.0.0.1 keeping what it receives."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._messages: list[Received] = []
        self._controller: _BoundController | None = None
        self.host, self.port = "127.0.0.1", 0

    def start(self) -> SmtpSink:
        sock = _listening_socket()
        self.port = sock.getsockname()[1]
        self._controller = _BoundController(_Handler(self), sock)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
        self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                raise AssertionError(f"{len(self._messages)} messages, not {count}")
            return list(self._messages)

    def _took(self, received: Received) -> None:
        with self._lock:
            self._messages.append(received)
            self._lock.notify_all()
