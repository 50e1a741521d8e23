"""The correlation id of the request being handled, for log lines and the response.

A client may send `X-Correlation-ID` (letters, digits, `._:-`, up to 64) to find its
request in the logs; otherwise one is made. Every log line written while the request is
handled carries it, the response returns it in the same header, and a command without a
`correlation_id` of its own records it in its events, so the read side's log lines about
those events carry it too.
"""

from __future__ import annotations

import itertools
import re
import secrets
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Correlation-ID"
_HEADER_KEY = HEADER.lower().encode()
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)
# Made ids: this process's random prefix and a count (a uuid4 per request costs more).
_PREFIX = secrets.token_hex(6)
_made = itertools.count(1)


def current_correlation_id() -> str | None:
    return _current.get()


class CorrelationMiddleware:
    """Plain ASGI (not `@app.middleware("http")`, whose extra task and body streaming
    cost a quarter of the command API's throughput): the id is set for the request's
    handling and added to the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value.decode("latin-1") for key, value in scope["headers"] if key == _HEADER_KEY), "")
        correlation_id = given if _VALID.fullmatch(given) else f"{_PREFIX}-{next(_made):x}"
        header = (_HEADER_KEY, correlation_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = _current.set(correlation_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
