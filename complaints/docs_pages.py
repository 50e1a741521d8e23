"""The API documentation pages (/docs, /redoc) load nothing from another origin.

Their scripts and styles are served by the app itself (fastapi-offline); but ReDoc's
bundle still draws its menu's logo from cdn.redoc.ly. This Content-Security-Policy keeps
the browser on the page's own origin, so opening the docs asks no third party for
anything (offline, or behind a firewall, the page is the same: ReDoc hides a logo that
does not load).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOC_PAGES = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
# Inline scripts and styles: FastAPI's pages start Swagger UI and ReDoc inline, and both
# style themselves inline; ReDoc searches in a worker it makes from a blob.
POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
          " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self';"
          " frame-ancestors 'none'")


class DocsPagesPolicy:
    """Plain ASGI middleware: the policy header on the documentation pages' answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOC_PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"content-security-policy", POLICY.encode())]}
            await send(message)

        await self.app(scope, receive, with_policy)


def same_origin_docs(app: FastAPI) -> FastAPI:
    app.add_middleware(DocsPagesPolicy)
    return app
