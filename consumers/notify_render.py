"""Shaping a `Notice` for each channel: a signed webhook, a chat robot's message, an SMS
gateway's body, an e-mail. Pure functions: the notifier does the I/O.

What a message says lives in Jinja2 templates (`consumers/templates/<template>.<language>.txt`,
blocks `subject`, `body` and, for an SMS, `short`); every channel shows the same words.
Templates run with `StrictUndefined`, so a notice missing what its template shows raises
`RenderError` at once, and the notifier dead-letters it rather than retrying something that
will never render or, worse, sending a message with a hole in it.

Signatures: webhooks are signed by the `standardwebhooks` package (the specification's
reference library); the Chinese chat robots' signatures are vendor-specific HMACs with no
library, written here from the vendors' documentation (docs/notifications.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import (
    ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined, TemplateError, pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from standardwebhooks import Webhook

from consumers.labels import Table, label
from consumers.notices import Notice, Template

ChatKind = Literal["wecom", "dingtalk", "feishu"]


class RenderError(Exception):
    """A notice that cannot be shown: its template lacks a context key, or a value is bad
    (a date that is not ISO 8601, an unknown time zone, data that is not JSON)."""


# ------------------------------------------------------------------ webhooks (Standard Webhooks)

def webhook_body(notice: Notice) -> bytes:
    """The payload `{"type", "timestamp", "data"}`: compact UTF-8 JSON with sorted keys, so
    the same notice always gives the same bytes (and the same signature on a retry)."""
    payload = {"type": notice.type, "timestamp": _iso(notice.occurred_at), "data": notice.data}
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as error:  # not JSON data, or text UTF-8 cannot carry
        raise RenderError(f"{notice.type}: the webhook body is not JSON: {error}") from error


def webhook_headers(message_id: str, timestamp: datetime, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt: one `v1,<signature>` per secret, so
    while a secret is rotated a receiver holding either the old or the new one verifies."""
    if not secrets:
        raise ValueError("a webhook is signed with at least one secret")
    moment = _utc(timestamp)
    text = body.decode()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(_unix(moment, timedelta(seconds=1))),
        "webhook-signature": " ".join(Webhook(secret).sign(message_id, moment, text) for secret in secrets),
        "content-type": "application/json",
    }




# ------------------------------------------------------------------ chat robots

# Bytes of text each robot takes in one message (WeCom's markdown is capped at 4096; the
# others cap the whole request at 20 KB).
CHAT_LIMITS: dict[ChatKind, int] = {"wecom": 4000, "dingtalk": 18000, "feishu": 18000}
# Where each vendor's JSON answer says whether it took the message: (code, message) keys.
CHAT_ERROR_KEYS: dict[ChatKind, tuple[tuple[str, str], ...]] = {
    "wecom": (("errcode", "errmsg"),),
    "dingtalk": (("errcode", "errmsg"),),
    "feishu": (("code", "msg"), ("StatusCode", "StatusMessage")),
}
FEISHU_LOCALES = {"zh-CN": "zh_cn", "en": "en_us"}


def chat_body(kind: ChatKind, notice: Notice) -> dict[str, Any]:
    """The robot's message: markdown for WeCom and DingTalk, a `post` (rich text, links
    clickable) in the notice's language for Feishu."""
    title, text = text_for(notice)
    limit = CHAT_LIMITS[kind]
    if kind == "feishu":
        lines = [[_feishu_segment(piece) for piece in _segments(line)]
                 for line in _fit(text, limit).split("\n") if line]
        locale = FEISHU_LOCALES[notice.language]
        return {"msg_type": "post", "content": {"post": {locale: {"title": title, "content": lines}}}}
    # Markdown: a hard break ("  \n") keeps the text's lines apart in DingTalk's renderer too.
    paragraphs = ("  \n".join(paragraph.split("\n")) for paragraph in text.split("\n\n"))
    markdown = _fit(f"### {title}\n\n" + "\n\n".join(paragraphs), limit)
    if kind == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": markdown}}
    return {"msgtype": "markdown", "markdown": {"title": title, "text": markdown}}


def signed_chat_request(kind: ChatKind, url: str, body: dict[str, Any], secret: str | None,
                        now: datetime) -> tuple[str, dict[str, Any]]:
    """The URL and body to POST, signed as the robot's security setting asks:

    - DingTalk 加签: `timestamp` (ms) and `sign` = base64(HMAC-SHA256(key=secret,
      msg=f"{timestamp}\\n{secret}")) added to the URL's query;
    - Feishu 签名校验: `timestamp` (s) and `sign` = base64(HMAC-SHA256(key=
      f"{timestamp}\\n{secret}", msg=b"")) added to the body;
    - WeCom, or no secret: unchanged (the key in the URL is the credential).
    """
    if secret is None or kind == "wecom":
        return url, body
    if kind == "dingtalk":
        millis = _unix(now, timedelta(milliseconds=1))
        sign = _hmac_base64(secret, f"{millis}\n{secret}")
        parts = urlsplit(url)
        query = "&".join(filter(None, [parts.query, urlencode({"timestamp": millis, "sign": sign})]))
        return parts._replace(query=query).geturl(), body
    if kind == "feishu":
        seconds = _unix(now, timedelta(seconds=1))
        return url, body | {"timestamp": str(seconds), "sign": _hmac_base64(f"{seconds}\n{secret}", "")}
    raise ValueError(f"unknown chat robot {kind!r}")


def chat_failure(kind: ChatKind, status_code: int, text: str) -> str | None:
    """Why the robot did not take the message, or None if it did. These vendors answer 200
    with a non-zero `errcode` (or `code`) when they refuse: that is a failure too."""
    if not 200 <= status_code < 300:
        return f"HTTP {status_code}: {_excerpt(text)}"
    if not text.strip():
        return None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return f"not a {kind} robot's answer: {_excerpt(text)}"
    for code, message in CHAT_ERROR_KEYS[kind]:
        if answer.get(code) not in (None, 0, "0"):
            return f"{code} {answer[code]}: {answer.get(message, '')}"
    return None


# ------------------------------------------------------------------ SMS and e-mail

def sms_body(notice: Notice, to: str) -> dict[str, Any]:
    """The JSON an SMS gateway takes: the number, the message's short form, its language."""
    return {"to": to, "text": _rendered(notice).short, "language": notice.language}


def email_message(notice: Notice, sender: str, to: Sequence[str], message_id: str) -> EmailMessage:
    """The e-mail: the subject (RFC 2047-encoded when not ASCII, by the default policy), a
    text/plain part and its text/html alternative. `Message-ID` comes from `message_id`, so
    every retry of one delivery is the same message to the receiving side."""
    if not _ID_LEFT.fullmatch(message_id):
        raise ValueError(f"{message_id!r} cannot be a Message-ID (letters, digits, . - _ + = only)")
    rendered = _rendered(notice)
    with _rendering(f"{notice.template}.{notice.language} (html)"):
        html = _ENV.get_template("_email.html").render(
            language=notice.language, title=rendered.subject,
            paragraphs=[[_segments(line) for line in p.split("\n")] for p in rendered.text.split("\n\n")],
        )
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(_utc(notice.occurred_at))
    message["Message-ID"] = f"<{message_id}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office robots leave it alone
    message.set_content(rendered.text)
    message.add_alternative(html, subtype="html")
    message["Content-Language"] = notice.language  # after the parts: set_content drops Content-* headers
    return message


def text_for(notice: Notice) -> tuple[str, str]:
    """The notice's title (one line) and plain text, as chat robots and e-mail show them."""
    rendered = _rendered(notice)
    return rendered.subject, rendered.text


# ------------------------------------------------------------------ templates

@dataclass(frozen=True)
class _Rendered:
    subject: str
    text: str
    short: str  # an SMS: the `short` block, else the subject


# Context keys a template may go without, and what it then sees. Every other key it shows
# is required: a missing one is a RenderError.
OPTIONAL: dict[Template, dict[str, Any]] = {
    "customer_status": {"agent_display_name": None},
    "alert": {"timezone": "UTC"},
    "event": dict.fromkeys(
        ("complaint_id", "title", "status", "product", "category", "severity", "team", "actor_name")
    ),
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@pass_context
def _label_filter(context: Context, code: Any, table: Table) -> str:
    return "" if code is None else label(table, str(code), context["language"])


@pass_context
def _when_filter(context: Context, value: str | datetime, zone: str) -> str:
    """An instant (ISO 8601 or datetime) in `zone`: 2026年12月3日 14:00 / 3 Dec 2026 14:00."""
    moment = _utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))
    local = moment.astimezone(ZoneInfo(zone))
    if context["language"] == "zh-CN":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
    return f"{local.day} {MONTHS[local.month - 1]} {local.year} {local:%H:%M}"


def redacted(endpoint: str) -> str:
    """An endpoint fit to show in a message or an alert: only its origin, since robots' URLs
    carry their credential in the path (Feishu) or the query (WeCom, DingTalk)."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"
    return endpoint


_PACKAGED = PackageLoader("consumers", "templates")
_ENV = Environment(
    loader=_PACKAGED,
    undefined=StrictUndefined,
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(label=_label_filter, when=_when_filter)


def use_templates(directory: Path | None) -> None:
    """Let a company's own templates (same names, in `directory`) take the place of the
    packaged ones; the process's composition root calls it once, from the settings. A
    mistake in one of them is a RenderError like any other: its notices go to dead letters."""
    _ENV.loader = ChoiceLoader([FileSystemLoader(directory), _PACKAGED]) if directory else _PACKAGED


# What a template, or the data it shows, raises when the notice is bad.
_FAILURES = (TemplateError, ValueError, TypeError, LookupError, AttributeError)


@contextmanager
def _rendering(what: str) -> Iterator[None]:
    try:
        yield
    except _FAILURES as error:
        raise RenderError(f"{what}: {type(error).__name__}: {error}") from error


def _rendered(notice: Notice) -> _Rendered:
    with _rendering(f"{notice.template}.{notice.language}"):
        template = _ENV.get_template(f"{notice.template}.{notice.language}.txt")
        values: Mapping[str, Any] = OPTIONAL.get(notice.template, {}) | notice.context | {"language": notice.language}
        blocks = {name: "".join(block(template.new_context(dict(values)))) for name, block in template.blocks.items()}
        for text in blocks.values():
            text.encode()  # lone surrogates: no channel can carry them
    subject = _one_line(blocks["subject"])
    return _Rendered(subject, _tidy(blocks["body"]), _one_line(blocks["short"]) if "short" in blocks else subject)


# ------------------------------------------------------------------ small helpers

_ID_LEFT = re.compile(r"[A-Za-z0-9._+=-]+")
_LINK = re.compile(r"https?://[^\s<>\"'，。；：！？、（）《》「」『』【】]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive one is taken as UTC already (as the event store's times are)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


def _unix(moment: datetime, unit: timedelta) -> int:
    """Whole `unit`s since the epoch, in integer arithmetic (floats drift at milliseconds)."""
    return (_utc(moment) - _EPOCH) // unit


def _hmac_base64(key: str, message: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()).decode()


def _segments(line: str) -> list[tuple[str, str | None]]:
    """A line cut into (text, link) pieces: links are http(s) URLs, less trailing punctuation."""
    pieces: list[tuple[str, str | None]] = []
    start = 0
    for match in _LINK.finditer(line):
        link = match.group().rstrip(".,;:!?)]}")
        if match.start() > start:
            pieces.append((line[start:match.start()], None))
        pieces.append((link, link))
        start = match.start() + len(link)
    if start < len(line):
        pieces.append((line[start:], None))
    return pieces


def _feishu_segment(segment: tuple[str, str | None]) -> dict[str, str]:
    text, href = segment
    return {"tag": "a", "text": text, "href": href} if href else {"tag": "text", "text": text}


def _one_line(text: str) -> str:
    """A header-safe line: control characters gone, whitespace (newlines too) collapsed."""
    return " ".join("".join(ch for ch in text if unicodedata.category(ch) != "Cc" or ch.isspace()).split())


def _tidy(text: str) -> str:
    """Template output without trailing spaces or runs of blank lines left by conditionals."""
    lines = [line.rstrip() for line in text.strip().split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _fit(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-8 bytes, on a character boundary, with an ellipsis."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def _excerpt(text: str, size: int = 200) -> str:
    return text if len(text) <= size else text[:size] + "…"
