"""The HTTP edge every served app shares: a limit on the request body.

A request whose body is larger than `max_bytes` is answered **413** before anything parses
it: at once when its Content-Length says so, or as soon as a streamed (chunked) body
passes the limit. Only a body someone reads is refused: `/health` with a body it never
reads still answers, and a route that reads none costs nothing. The answer closes the
connection. What the client is still sending is read and thrown away first, up to
`DRAIN_BYTES` (32 MiB) in all, unparsed, so that an ordinary client gets to read the 413
instead of a reset connection; a larger body, or one announced with `Expect:
100-continue`, is not waited for.

The composition root wraps each app it serves (`Wiring.command_app`, `read_app`, the
notifier's); `COMPLAINTS_MAX_BODY_BYTES` sets the limit (default 1 MiB: a command is a few
kilobytes, its longest text 20,000 characters).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DRAIN_BYTES = 32 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised where the body is read: FastAPI passes HTTPExceptions on, and its handler
    answers them (this module answers any that reach it unanswered)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes, the limit of this server"
                              " (COMPLAINTS_MAX_BODY_BYTES)", headers={"connection": "close"})


class BodyLimit:
    """Plain ASGI middleware (no task, no buffering): counts the body as it is received."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES, own_limits: Sequence[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.own_limits = frozenset(own_limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.own_limits:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _header(scope, b"content-length")
        waits = _header(scope, b"expect") == b"100-continue"
        received = 0
        started = False

        async def drain(more: bool) -> None:
            """Read the rest of the body and drop it, up to DRAIN_BYTES in all."""
            nonlocal received
            if waits or (declared is not None and declared.isdigit() and int(declared) > DRAIN_BYTES):
                return
            while more and received <= DRAIN_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                received += len(message.get("body", b""))
                more = message.get("more_body", False)

        async def limited() -> Message:
            nonlocal received
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await drain(True)
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    await drain(message.get("more_body", False))
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except BodyTooLarge as error:
            if started:
                raise
            await JSONResponse({"detail": error.detail}, 413, headers=error.headers)(scope, receive, send)


def limit_bodies(app: FastAPI, max_bytes: int, own_limits: Sequence[str] = ()) -> FastAPI:
    """`app` with its bodies limited, except on the paths in `own_limits`, whose routes hold
    their bodies to limits of their own (an attachment's upload)."""
    app.add_middleware(BodyLimit, max_bytes=max_bytes, own_limits=own_limits)
    return app


def _header(scope: Scope, name: bytes) -> bytes | None:
    """A request header's value (the server has refused a malformed Content-Length)."""
    return next((value.strip().lower() for key, value in scope["headers"] if key == name), None)
