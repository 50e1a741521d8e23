"""The customer's status page: what a signed link shows, with no account.

`GET /s/{token}` answers from the read node's `events` table (the complaint's state as the
aggregate's own code folds it, `read_api.audit.state_at`, and its public replies), never
from the event store, and writes nothing. It shows the complaint number, the status and
what happens next in words, the promised time and our public replies (outbound public
contacts, resolution proposals, resolutions): never internal notes, contacts marked
internal, the customer's own messages, teams, agents or any actor. A survey link on a
resolved complaint also shows the satisfaction form, which `commands.customer_survey`
receives.

A forged, expired, wrong or used link answers 404 with one body for every reason (and
whatever the request's language), so the answer tells nothing about the link. Every
answer is rate-limited per client address, uncached, unindexed, and never sends the
link on as a Referer.

`CustomerPages` renders every customer-facing page (Jinja2, autoescaped, zh-CN or en), and
`address_limit` is the per-address rate limit: the composition root makes one of each and
gives them to this router and to the survey's, so both look and count alike.

(No `from __future__ import annotations`: FastAPI must see the real types.)
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import duckdb
import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from aggregates.complaint import OPEN, Status
from aggregates.customer_links import (
    PURPOSES, STATUS_PATH, SURVEY_PATH, CustomerLinks, Language, LinkClaims, LinkInvalid, choose_language,
    complaint_number, status_words,
)
from read_api import audit, figures

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Every customer page: never cached or indexed, the link never sent on as a Referer,
# nothing but our inline styles and a form posting back to us.
PRIVATE = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-robots-tag": "noindex, nofollow",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
                               " base-uri 'none'; frame-ancestors 'none'",
}

# The page's own words; the status words and next steps are `aggregates.customer_links`'.
WORDS: dict[Language, dict[str, str]] = {
    "zh-CN": {
        "heading": "投诉进度", "number": "投诉编号", "submitted": "提交时间", "status": "当前状态",
        "first_response": "首次答复时间不晚于", "resolution": "承诺解决时间", "next_step": "下一步",
        "replies": "我们的答复", "no_replies": "暂无答复，我们会尽快与您联系。",
        "reply": "答复", "proposal": "解决方案建议", "resolved": "处理结果",
        "survey": "满意度评价", "csat": "您对本次处理结果的满意度如何？", "csat_scale": "1 = 非常不满意，5 = 非常满意",
        "nps": "您向亲友推荐我们的可能性有多大？", "nps_scale": "0 = 完全不可能，10 = 非常可能",
        "effort": "解决这个问题，您花费的精力有多大？", "effort_scale": "1 = 非常轻松，7 = 非常费力",
        "comment": "其他意见", "optional": "选填", "submit": "提交评价",
        "thanks": "感谢您的评价", "thanks_text": "我们已收到您对投诉 {number} 的评价。",
        "invalid": "请检查您的评价", "back": "返回修改",
        "too_many": "请求过于频繁", "too_many_text": "请稍后再试。",
        "unavailable": "暂时无法显示", "unavailable_text": "请稍后再试。",
        "not_found": "链接无效", "not_found_text": "该链接无效或已过期。如需查询投诉进度，请联系我们。",
    },
    "en": {
        "heading": "Your complaint", "number": "Complaint number", "submitted": "Submitted", "status": "Status",
        "first_response": "We will first reply by", "resolution": "We aim to resolve it by", "next_step": "Next step",
        "replies": "Our replies", "no_replies": "No reply yet: we will be in touch soon.",
        "reply": "Reply", "proposal": "Proposed solution", "resolved": "Resolution",
        "survey": "How did we do?", "csat": "How satisfied are you with how we handled your complaint?",
        "csat_scale": "1 = very dissatisfied, 5 = very satisfied",
        "nps": "How likely are you to recommend us to a friend?", "nps_scale": "0 = not at all, 10 = extremely likely",
        "effort": "How much effort did it take you to get this resolved?",
        "effort_scale": "1 = very little, 7 = a great deal",
        "comment": "Anything else?", "optional": "optional", "submit": "Send",
        "thanks": "Thank you for your feedback", "thanks_text": "We have received your feedback on complaint {number}.",
        "invalid": "Please check your answers", "back": "Back to the form",
        "too_many": "Too many requests", "too_many_text": "Please try again later.",
        "unavailable": "Not available right now", "unavailable_text": "Please try again later.",
        "not_found": "Link not valid",
        "not_found_text": "This link is not valid or has expired. To ask about your complaint, please contact us.",
    },
}
# What each survey field asks for, when a value is missing or out of range.
FIELD_HINTS: dict[str, dict[Language, str]] = {
    "csat": {"zh-CN": "请为满意度选择 1 到 5 之间的分数。", "en": "Please rate your satisfaction from 1 to 5."},
    "nps": {"zh-CN": "推荐意愿请选择 0 到 10 之间的分数，或留空。", "en": "Recommendation must be from 0 to 10, or left empty."},
    "effort": {"zh-CN": "花费精力请选择 1 到 7 之间的分数，或留空。", "en": "Effort must be from 1 to 7, or left empty."},
    "comment": {"zh-CN": "意见过长，请精简。", "en": "Your comment is too long: please shorten it."},
    "body": {"zh-CN": "无法读取您提交的内容，请重新提交。", "en": "We could not read what was sent: please send the form again."},
}

# The request's client address: None, or the seconds to wait (the request is refused).
Limit = Callable[[Request], float | None]


class CursorSource(Protocol):
    def cursor(self) -> duckdb.DuckDBPyConnection: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def address_limit(rate: str) -> Limit:
    """A moving-window limit per client address, in memory (`rate` in limits' notation,
    e.g. "30/minute"): guessing links, or hammering the page, stops at the limit."""
    item = parse(rate)
    limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(request: Request) -> float | None:
        address = request.client.host if request.client else "unknown"
        if limiter.hit(item, "customer", address):
            return None
        reset = limiter.get_window_stats(item, "customer", address).reset_time
        return max(1.0, reset - time.time())

    return check


# ---------------------------------------------------------------------------- what is shown
@dataclass(frozen=True)
class Promise:
    kind: Literal["first_response", "resolution"]
    at: datetime


@dataclass(frozen=True)
class Reply:
    kind: Literal["reply", "proposal", "resolved"]
    at: datetime
    text: str


@dataclass(frozen=True)
class CustomerView:
    """Everything the page shows of a complaint, and nothing else (no staff, no notes)."""

    number: str
    registered_at: datetime
    status: Status
    promised: Promise | None
    replies: list[Reply]
    survey_open: bool  # a survey link on a resolved complaint: the form is shown


class LinkUsed(Exception):
    """The survey this link carries was answered already."""


# Our public replies: outbound public contacts, proposals and resolutions, in order.
REPLIES_SQL = """
    SELECT event_type, occurred_at,
           CASE event_type WHEN 'ContactRecorded' THEN json_extract_string(payload, '$.summary')
                           WHEN 'ResolutionProposed' THEN json_extract_string(payload, '$.proposal')
                           ELSE json_extract_string(payload, '$.resolution') END
    FROM events
    WHERE complaint_id = ?
      AND (event_type IN ('ResolutionProposed', 'Resolved')
           OR (event_type = 'ContactRecorded' AND json_extract_string(payload, '$.direction') = 'outbound'
               AND json_extract_string(payload, '$.visibility') = 'public'))
    ORDER BY complaint_version
"""
REPLY_KINDS = {"ContactRecorded": "reply", "ResolutionProposed": "proposal", "Resolved": "resolved"}


def customer_view(db: duckdb.DuckDBPyConnection, claims: LinkClaims) -> CustomerView | None:
    """The page of the complaint a link names, or None if the read node does not know it;
    LinkUsed for a survey link whose survey was answered."""
    if claims.purpose == "survey" and _survey_answered(db, claims):
        raise LinkUsed()
    state = audit.state_at(db, claims.complaint_id)
    if state is None:
        return None
    status: Status = state["status"]
    replies = [Reply(REPLY_KINDS[kind], _utc(at), text)  # type: ignore[arg-type]
               for kind, at, text in db.execute(REPLIES_SQL, [str(claims.complaint_id)]).fetchall() if text]
    return CustomerView(
        number=complaint_number(claims.complaint_id),
        registered_at=_instant(state["registered_at"]),
        status=status,
        promised=promised(state),
        replies=replies,
        survey_open=claims.purpose == "survey" and status == "resolved",
    )


def promised(state: dict[str, Any]) -> Promise | None:
    """The time we promised: the first response while none was given, else the resolution.
    None once resolved or ended, before triage (no due times yet), and while we wait on the
    customer (the resolution clock is paused: its due time moves on when they reply)."""
    if state["status"] not in OPEN or state["status"] == "waiting_on_customer":
        return None
    if state["first_responded_at"] is None and state["first_response_due"] is not None:
        return Promise("first_response", _instant(state["first_response_due"]))
    if state["resolution_due"] is not None:
        return Promise("resolution", _instant(state["resolution_due"]))
    return None


def _survey_answered(db: duckdb.DuckDBPyConnection, claims: LinkClaims) -> bool:
    found = db.execute(
        "SELECT count(*) FROM events WHERE complaint_id = ? AND event_type = 'Verified' AND command_id = ?",
        [str(claims.complaint_id), claims.survey_command_id],
    ).fetchall()
    return bool(found[0][0])


def _instant(value: str | datetime) -> datetime:
    """A time of `audit.state_at`'s JSON-ready state (text) as an aware datetime."""
    return _utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# ---------------------------------------------------------------------------- pages
class CustomerPages:
    """Every page the customer sees, as a response with the private headers: the status
    page, the survey's thanks and its corrections, and the not-found, too-many and
    unavailable pages. Times are shown in `timezone` with their UTC offset."""

    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)  # an unknown zone fails here, at start-up
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                      undefined=jinja2.StrictUndefined)
        # One body for every link that is not good, whatever the request: it must tell nothing.
        self._not_found = self._in_both("not_found")

    def status(self, view: CustomerView, language: Language, survey_action: str) -> Response:
        """The status page; the survey form (posting to `survey_action`) if `view` has it open."""
        label, next_step = status_words(view.status, language)
        body = self.env.get_template("customer_status.html").render(
            lang=language, t=WORDS[language], title=f"{WORDS[language]['heading']} {view.number}", view=view,
            label=label, next_step=next_step, when=self.when, survey_action=survey_action,
        )
        return _page(body, 200, language)

    def thanks(self, language: Language, number: str) -> Response:
        words = WORDS[language]
        return _page(self._message(language, words["thanks"], [words["thanks_text"].format(number=number)]),
                     200, language)

    def invalid(self, language: Language, field: str, back: str) -> Response:
        words = WORDS[language]
        hint = FIELD_HINTS.get(field, {}).get(language, field)
        return _page(self._message(language, words["invalid"], [hint], field=field, back=back,
                                   back_label=words["back"]), 422, language)

    def not_found(self) -> Response:
        return _page(self._not_found, 404)

    def too_many(self, wait: float) -> Response:
        return _page(self._in_both("too_many"), 429, headers={"retry-after": str(int(wait + 0.999))})

    def unavailable(self) -> Response:
        return _page(self._in_both("unavailable"), 503, headers={"retry-after": "5"})

    def when(self, at: datetime) -> str:
        local = at.astimezone(self.zone)
        offset = local.strftime("%z")
        return f"{local:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:]})"

    def _in_both(self, key: str) -> str:
        """A message in both languages, for answers given before the language is known."""
        zh, en = WORDS["zh-CN"], WORDS["en"]
        return self._message("zh-CN", f"{zh[key]} · {en[key]}", [zh[f"{key}_text"], en[f"{key}_text"]])

    def _message(self, language: Language, title: str, lines: Any, *, field: str | None = None,
                 back: str | None = None, back_label: str = "") -> str:
        return self.env.get_template("customer_message.html").render(
            lang=language, title=title, lines=list(lines), field=field, back=back, back_label=back_label)


def _page(body: str, status_code: int, language: Language | None = None,
          headers: dict[str, str] | None = None) -> Response:
    extra = {"content-language": language} if language else {}
    return HTMLResponse(body, status_code, headers=PRIVATE | extra | (headers or {}))


# ---------------------------------------------------------------------------- the router
def customer_page_router(node: Callable[[], CursorSource], links: CustomerLinks, *, pages: CustomerPages,
                         limit: Limit, clock: Callable[[], datetime] = utc_now) -> APIRouter:
    """`GET /s/{token}`: the status page of the complaint a link names (either purpose),
    read through cursors of `node()`; `limit` is checked before anything else."""
    router = APIRouter(include_in_schema=False)

    @router.get(STATUS_PATH, response_class=HTMLResponse)
    def status_page(token: str, request: Request, lang: str | None = None) -> Response:
        if (wait := limit(request)) is not None:
            return pages.too_many(wait)
        try:
            claims = links.read(token, PURPOSES, clock())
        except LinkInvalid:
            return pages.not_found()
        try:
            db = node().cursor()
        except Exception:  # the read node is starting or gone: nothing to tell the customer but "later"
            return pages.unavailable()
        try:
            view = customer_view(db, claims) if figures.has_table(db, "events") else None
        except LinkUsed:
            return pages.not_found()
        finally:
            db.close()
        if view is None:
            return pages.not_found()
        language = choose_language(lang, request.headers.get("accept-language"))
        action = request.scope.get("root_path", "") + SURVEY_PATH.format(token=token)
        return pages.status(view, language, action)

    return router

