"""The correlation id of the request being handled, for log lines and the response.

A client may send `X-Correlation-ID` (letters, digits, `._:-`, up to 64) to find its
request in the logs; otherwise one is made. Every log line written while the request is
handled carries it, the response returns it in the same header, and a command without a
`correlation_id` of its own records it in its events, so the read side's log lines about
those events carry it too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from fastapi import Request, Response

HEADER = "X-Correlation-ID"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def current_correlation_id() -> str | None:
    return _current.get()


async def correlation_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    given = request.headers.get(HEADER, "")
    correlation_id = given if _VALID.fullmatch(given) else uuid.uuid4().hex
    token = _current.set(correlation_id)
    try:
        response = await call_next(request)
    finally:
        _current.reset(token)
    response.headers[HEADER] = correlation_id
    return response
