"""What the customer is given of a complaint: signed links, the complaint number, the words.

The customer has no account: a link is the only credential, so it is signed (HS256 with a
key only the system holds), says what it is for (`status`: the status page; `survey`: the
page with the satisfaction form) and expires. A survey link also names the survey it
belongs to (`jti`, derived from the complaint and a nonce the notifier chooses, e.g. the
complaint's version at resolution), so the answer is recorded once (the command id
`survey:<jti>`) and a later re-resolution gets a survey of its own. The notifier makes
the links (`issue`, `link_url`); the status page and the survey form read them (`read`).

The complaint number, the status words and the next steps are defined here once so the
notifier's messages and the customer's page say the same thing.

Pure: no I/O, no clock (the caller says what "now" is), no key files (the composition root
loads the key).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from uuid import UUID, uuid5

import jwt

from aggregates.complaint import Status
from aggregates.languages import by_preference

Purpose = Literal["status", "survey"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
Language = Literal["zh-CN", "en"]
LANGUAGES: tuple[Language, ...] = get_args(Language)

# Where the links point, below the public address (the routers serve these paths).
STATUS_PATH = "/s/{token}"
SURVEY_PATH = "/s/{token}/survey"

ALGORITHM = "HS256"
MIN_KEY_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
MAX_TOKEN_CHARS = 1024  # ours are about 200; anything much longer is not ours


class LinkInvalid(Exception):
    """Forged, expired, malformed or for another purpose: the caller answers 404 and says no more."""


@dataclass(frozen=True)
class LinkClaims:
    complaint_id: UUID
    purpose: Purpose
    expires_at: datetime
    survey_id: str | None = None  # the `jti` of a survey link

    @property
    def survey_command_id(self) -> str:
        """The command id the survey's answer is recorded under: one answer per survey."""
        if self.survey_id is None:
            raise ValueError("a status link carries no survey")
        return f"survey:{self.survey_id}"


class CustomerLinks:
    """Issues and reads the customers' signed links with one symmetric key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a link key needs at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    def issue(self, complaint_id: UUID, purpose: Purpose, expires_at: datetime, nonce: str = "") -> str:
        """A compact token for `complaint_id`: the same arguments always give the same token,
        so a notification delivered twice carries the same link."""
        if purpose not in PURPOSES:
            raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
        claims: dict[str, Any] = {"sub": str(complaint_id), "purpose": purpose, "exp": int(expires_at.timestamp())}
        if purpose == "survey":
            claims["jti"] = survey_id(complaint_id, nonce)
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"typ": None})

    def read(self, token: str, purpose: Purpose | Iterable[Purpose], now: datetime) -> LinkClaims:
        """The claims of a token this key signed for (one of) `purpose`, not expired at `now`;
        LinkInvalid otherwise, whatever the reason."""
        wanted = {purpose} if isinstance(purpose, str) else set(purpose)
        if len(token) > MAX_TOKEN_CHARS or not _canonical(token):
            raise LinkInvalid()
        try:
            # The expiry is checked against the caller's `now` below, not the machine's clock.
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM],
                                options={"require": ["sub", "exp"], "verify_exp": False})
            expires_at = datetime.fromtimestamp(claims["exp"], UTC)
            complaint_id = UUID(claims["sub"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError, OSError):
            raise LinkInvalid() from None
        found = claims.get("purpose")
        jti = claims.get("jti")
        if found not in wanted or expires_at <= now:
            raise LinkInvalid()
        if found == "survey" and not (isinstance(jti, str) and jti):
            raise LinkInvalid()
        return LinkClaims(complaint_id, found, expires_at, jti if found == "survey" else None)


def survey_id(complaint_id: UUID, nonce: str) -> str:
    """The survey's id: one per complaint and nonce (32 hex digits)."""
    return uuid5(complaint_id, f"survey:{nonce}").hex


def _canonical(token: str) -> bool:
    """Whether each part of the token is base64url exactly as an encoder writes it.

    Python's base64 decoder ignores the unused low bits of a part's last character, so a
    signature with its last character changed (say `I` for `J`) decodes to the same bytes:
    the same link would have several spellings, and a changed link would be accepted.
    Recent PyJWT refuses those too ("Invalid crypto padding"); checked here so the rule
    does not depend on the version installed.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return False
    for part in parts:
        try:
            decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            return False
        if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != part:
            return False
    return True


def link_url(public_url: str, token: str) -> str:
    """Where the customer opens a link of either purpose: the same page, whose survey form
    only a survey link shows."""
    return public_url.rstrip("/") + STATUS_PATH.format(token=token)


def complaint_number(complaint_id: UUID) -> str:
    """The number the customer quotes: the id's first 8 hex digits, upper case (e.g. 3F2A9C1B)."""
    return complaint_id.hex[:8].upper()


# ---------------------------------------------------------------------------- languages
def choose_language(requested: str | None, accept_language: str | None) -> Language:
    """zh-CN or en: what the link asks for (`?lang=`), else the first of the two the browser
    prefers (Accept-Language, by q-value). No header at all: zh-CN (the customers' language
    by default); a header naming other languages only: en (more likely read there)."""
    if requested:
        asked = _language_of(requested)
        if asked is not None:
            return asked
    if not accept_language or not accept_language.strip():
        return "zh-CN"
    for tag in by_preference(accept_language):
        chosen = _language_of(tag)
        if chosen is not None:
            return chosen
    return "en"


def _language_of(tag: str) -> Language | None:
    primary = tag.strip().lower().split("-")[0].split("_")[0]
    return {"zh": "zh-CN", "en": "en"}.get(primary)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- words
# Per status: (en, zh-CN) of what it is called, then of what happens next.
STATUS_WORDS: dict[Status, tuple[str, str]] = {
    "received": ("Received", "已受理"),
    "triaged": ("Being reviewed", "审核中"),
    "assigned": ("In progress", "处理中"),
    "waiting_on_customer": ("Waiting for your reply", "等待您的回复"),
    "resolution_proposed": ("Solution proposed", "已提出解决方案"),
    "resolved": ("Resolved", "已解决"),
    "verified": ("Resolved, feedback received", "已解决，已收到您的评价"),
    "closed": ("Closed", "已结案"),
    "withdrawn": ("Withdrawn", "已撤回"),
    "duplicate": ("Merged with another complaint", "已与另一投诉合并处理"),
}
NEXT_STEPS: dict[Status, tuple[str, str]] = {
    "received": ("We are reviewing your complaint and will assign it to a specialist shortly.",
                 "我们正在审核您的投诉，将尽快安排专人处理。"),
    "triaged": ("We are reviewing your complaint and will assign it to a specialist shortly.",
                "我们正在审核您的投诉，将尽快安排专人处理。"),
    "assigned": ("A specialist is working on your complaint and will reply by the promised time.",
                 "专人正在处理您的投诉，将在承诺时间前答复您。"),
    "waiting_on_customer": ("We need more information from you: please reply to our latest message.",
                            "我们需要您提供更多信息，请回复我们最近的消息。"),
    "resolution_proposed": ("We have proposed a solution: please tell us whether it works for you.",
                            "我们已提出解决方案，请告诉我们您是否接受。"),
    "resolved": ("Your complaint is resolved. If anything is still wrong, please contact us.",
                 "您的投诉已解决。如仍有问题，请联系我们。"),
    "verified": ("Thank you for your feedback. We will close the complaint.",
                 "感谢您的评价，我们将为您结案。"),
    "closed": ("The complaint is closed: nothing more is needed from you.", "投诉已结案，您无需再做任何操作。"),
    "withdrawn": ("The complaint was withdrawn: nothing more is needed from you.", "投诉已撤回，您无需再做任何操作。"),
    "duplicate": ("It is being handled together with your other complaint.", "该投诉将与您的另一投诉一并处理。"),
}


def status_words(status: Status, language: Language) -> tuple[str, str]:
    """(what the status is called, what happens next) in `language`."""
    pick = 1 if language == "zh-CN" else 0
    return STATUS_WORDS[status][pick], NEXT_STEPS[status][pick]
