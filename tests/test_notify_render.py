"""The renderers, judged as the other side would judge them: webhooks POSTed to a real
receiver and verified with `standardwebhooks`; chat robots' bodies in the vendors' shapes
with signatures recomputed from the vendors' formulas; e-mails sent over SMTP to a real
server and read back; templates that lack a key refusing to render."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import smtplib
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from commands.sealing import new_webhook_secret as new_secret
from consumers.notices import Language, Notice, Template
from consumers.notify_render import (
    ChatKind,
    RenderError,
    chat_body,
    chat_failure,
    email_message,
    redacted,
    signed_chat_request,
    sms_body,
    text_for,
    webhook_body,
    webhook_headers,
)
from tests.receivers import (
    Receiver,
    SmtpSink,
    close,
    deduplicated,
    delay,
    dingtalk_signed,
    feishu_signed,
    ok,
    status,
    verified,
    vendor_error,
)

LINK = "https://complaints.example.com/s/eyJjIjoiQy0yMDI2LTAwMDEyMyJ9.sig"
SURVEY = "https://complaints.example.com/survey/eyJjIjoiQy0yMDI2LTAwMDEyMyJ9.sig"
NUMBER = "C-2026-000123"
# A full context for each template: every key it shows.
CONTEXTS: dict[str, dict[str, Any]] = {
    "customer_acknowledgement": {
        "complaint_number": NUMBER, "title": "电动车电池有安全隐患", "promised_at": "2026-12-03T06:00:00+00:00",
        "timezone": "Asia/Shanghai", "status_link": LINK,
    },
    "customer_status": {
        "status": "waiting_on_customer", "complaint_number": NUMBER, "status_link": LINK,
        "agent_display_name": "小李",
    },
    "customer_survey": {"complaint_number": NUMBER, "survey_link": SURVEY},
    "alert": {
        "event_type": "AlertRaised", "timezone": "Asia/Shanghai",
        "alert": {
            "title_en": "Fatal complaint", "title_zh": "致命投诉", "severity": "critical",
            "rule": "alerts.fatal_complaint", "subject": NUMBER, "status": "open",
            "due_at": "2026-12-03T06:00:00Z", "evidence": {"keyword": "安全隐患"}, "owner": "director",
        },
    },
    "event": {
        "event_type": "Triaged", "complaint_number": NUMBER, "complaint_id": "0b7c6c1e-2f7e-4a53-9a47-3f1f0e2d9c11",
        "title": "App unusable after update", "status": "triaged", "product": "mobile-app",
        "category": "billing", "severity": "major", "team": "billing", "actor_name": "Zhang San",
    },
}
# The keys a template cannot do without (the others may be left out).
REQUIRED: dict[str, list[str]] = {
    "customer_acknowledgement": ["complaint_number", "title", "promised_at", "timezone", "status_link"],
    "customer_status": ["status", "complaint_number", "status_link"],
    "customer_survey": ["complaint_number", "survey_link"],
    "alert": ["event_type", "alert"],
    "event": ["event_type", "complaint_number"],
}
LANGUAGES: list[Language] = ["zh-CN", "en"]
CHATS: list[ChatKind] = ["wecom", "dingtalk", "feishu"]


def notice(template: Template = "customer_acknowledgement", language: Language = "zh-CN", *,
           occurred_at: datetime | None = None, **context: Any) -> Notice:
    return Notice(
        type="complaint.registered", template=template, language=language,
        occurred_at=occurred_at or datetime.now(UTC),
        data={"event_type": "Registered", "complaint_id": "0b7c6c1e", "payload": {"title": "电动车电池有安全隐患"}},
        context=CONTEXTS[template] | context,
    )


@pytest.fixture(scope="module")
def receiver() -> Any:
    with Receiver() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(receiver: Receiver) -> None:
    receiver.clear()
    receiver.behave(ok())


def deliver(receiver: Receiver, path: str, message_id: str, the_notice: Notice, secrets: list[str],
            at: datetime | None = None) -> httpx.Response:
    body = webhook_body(the_notice)
    headers = webhook_headers(message_id, at or datetime.now(UTC), body, secrets)
    return httpx.post(receiver.url(path), content=body, headers=headers)


# ------------------------------------------------------------------ webhooks

def test_a_webhook_delivery_verifies_with_the_standardwebhooks_verifier(receiver: Receiver) -> None:
    secret = new_secret()
    the_notice = notice()
    assert deliver(receiver, "/hooks", "msg_1", the_notice, [secret]).status_code == 200
    [request] = receiver.requests("/hooks")
    [payload] = verified([request], secret)
    assert payload == {"type": "complaint.registered", "timestamp": payload["timestamp"], "data": the_notice.data}
    assert datetime.fromisoformat(payload["timestamp"]) == the_notice.occurred_at
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["webhook-signature"].startswith("v1,")


def test_retries_keep_the_webhook_id_so_the_receiver_keeps_one(receiver: Receiver) -> None:
    secret = new_secret()
    receiver.behave(status(500), close(), ok())
    the_notice, other = notice(), notice(title="second")
    for attempt in range(3):  # the same delivery, signed again at each attempt
        try:
            at = datetime.now(UTC) + timedelta(seconds=attempt)
            deliver(receiver, "/hooks", "msg_retry", the_notice, [secret], at)
        except httpx.HTTPError:
            pass
    deliver(receiver, "/hooks", "msg_other", other, [secret])
    requests = receiver.requests("/hooks")
    assert len(requests) == 4
    assert len({r.headers["webhook-signature"] for r in requests[:3]}) == 3  # a new timestamp each time
    kept = deduplicated(requests)
    assert sorted(kept) == ["msg_other", "msg_retry"]
    assert [p["data"] for p in verified(kept.values(), secret)] == [the_notice.data, other.data]


def test_during_a_rotation_either_secret_verifies_and_no_other(receiver: Receiver) -> None:
    old, new = new_secret(), new_secret()
    deliver(receiver, "/rotating", "msg_rot", notice(), [old, new])
    [request] = receiver.requests("/rotating")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert verified([request], old) == verified([request], new)
    with pytest.raises(WebhookVerificationError):
        verified([request], new_secret())


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp"])
def test_a_tampered_delivery_fails_verification(receiver: Receiver, tamper: str) -> None:
    secret = new_secret()
    body = webhook_body(notice())
    headers = webhook_headers("msg_t", datetime.now(UTC), body, [secret])
    if tamper == "body":
        body = body.replace("安全隐患".encode(), "一切正常".encode())
    elif tamper == "id":
        headers["webhook-id"] = "msg_other"
    else:
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    httpx.post(receiver.url("/t"), content=body, headers=headers)
    with pytest.raises(WebhookVerificationError):
        verified(receiver.requests("/t"), secret)


def test_the_signed_timestamp_is_the_instant_whatever_its_time_zone(receiver: Receiver) -> None:
    """An aware time in +08:00 is the same instant: the header and the signature must say so."""
    secret = new_secret()
    shanghai_now = datetime.now(ZoneInfo("Asia/Shanghai"))
    deliver(receiver, "/tz", "msg_tz", notice(), [secret], at=shanghai_now)
    [request] = receiver.requests("/tz")
    assert int(request.headers["webhook-timestamp"]) == int(shanghai_now.timestamp())
    verified([request], secret)


def test_the_body_is_compact_utf8_json_with_a_utc_timestamp_and_the_same_bytes_each_time() -> None:
    at = datetime(2026, 12, 3, 14, 0, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
    the_notice = notice(occurred_at=at)
    body = webhook_body(the_notice)
    assert body == webhook_body(Notice.from_json(json.loads(json.dumps(the_notice.to_json()))))
    assert "安全隐患".encode() in body and b" " not in body.replace("电动车电池有安全隐患".encode(), b"")
    assert json.loads(body)["timestamp"] == "2026-12-03T06:00:05Z"
    assert list(json.loads(body)) == ["data", "timestamp", "type"]


def test_data_that_is_not_json_cannot_render() -> None:
    bad = Notice(type="x", template="event", language="en", occurred_at=datetime.now(UTC),
                 data={"when": datetime.now(UTC)})
    with pytest.raises(RenderError):
        webhook_body(bad)


def test_a_new_secret_is_32_random_bytes_the_verifier_accepts() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        Webhook(secret)


def test_a_webhook_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        webhook_headers("msg", datetime.now(UTC), b"{}", [])


# ------------------------------------------------------------------ chat robots

@pytest.mark.parametrize("language", LANGUAGES)
def test_wecom_gets_markdown_and_no_signature(receiver: Receiver, language: Language) -> None:
    body = chat_body("wecom", notice(language=language))
    assert set(body) == {"msgtype", "markdown"} and body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"content"}
    assert NUMBER in body["markdown"]["content"] and LINK in body["markdown"]["content"]
    url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"
    assert signed_chat_request("wecom", url, body, "ignored", datetime.now(UTC)) == (url, body)


@pytest.mark.parametrize("language", LANGUAGES)
def test_dingtalk_gets_markdown_with_a_signed_url_it_would_accept(receiver: Receiver, language: Language) -> None:
    secret = "SEC" + "0123456789abcdef" * 4
    body = chat_body("dingtalk", notice(language=language))
    assert body["msgtype"] == "markdown" and set(body["markdown"]) == {"title", "text"}
    assert NUMBER in body["markdown"]["title"] and LINK in body["markdown"]["text"]
    url, signed = signed_chat_request("dingtalk", receiver.url("/robot/send?access_token=T"), body, secret,
                                      datetime.now(UTC))
    assert signed == body
    assert httpx.post(url, json=signed).status_code == 200
    [request] = receiver.requests("/robot/send")
    assert request.query.startswith("access_token=T&timestamp=")
    assert dingtalk_signed(request, secret)
    assert not dingtalk_signed(request, secret + "x")
    assert request.json() == body


def test_the_dingtalk_signature_follows_the_documented_formula() -> None:
    now = datetime(2026, 12, 3, 6, 0, 0, 123000, tzinfo=UTC)
    secret = "SECthis-is-a-secret"
    timestamp = "1796277600123"
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    expected = quote_plus(base64.b64encode(digest))
    url, _ = signed_chat_request("dingtalk", "https://oapi.dingtalk.com/robot/send?access_token=T", {}, secret, now)
    assert url == f"https://oapi.dingtalk.com/robot/send?access_token=T&timestamp={timestamp}&sign={expected}"
    bare, _ = signed_chat_request("dingtalk", "https://robot.example.com/send", {}, secret, now)
    assert bare == f"https://robot.example.com/send?timestamp={timestamp}&sign={expected}"


@pytest.mark.parametrize(("language", "locale"), [("zh-CN", "zh_cn"), ("en", "en_us")])
def test_feishu_gets_a_post_with_a_signed_body_it_would_accept(receiver: Receiver, language: Language, locale: str) -> None:
    secret = "feishu-secret"
    body = chat_body("feishu", notice(language=language))
    assert body["msg_type"] == "post" and list(body["content"]["post"]) == [locale]
    post = body["content"]["post"][locale]
    assert NUMBER in post["title"]
    pieces = [piece for line in post["content"] for piece in line]
    assert {piece["tag"] for piece in pieces} == {"text", "a"}
    assert {"tag": "a", "text": LINK, "href": LINK} in pieces
    url, signed = signed_chat_request("feishu", receiver.url("/open-apis/bot/v2/hook/TOKEN"), body, secret,
                                      datetime.now(UTC))
    assert signed == body | {"timestamp": signed["timestamp"], "sign": signed["sign"]}
    assert "sign" not in body  # the caller's body is left alone
    httpx.post(url, json=signed)
    [request] = receiver.requests("/open-apis/bot/v2/hook/TOKEN")
    assert feishu_signed(request, secret)
    assert not feishu_signed(request, "another")


def test_the_feishu_signature_follows_the_documented_formula() -> None:
    now = datetime(2026, 12, 3, 6, 0, 0, 999999, tzinfo=UTC)
    _, signed = signed_chat_request("feishu", "https://open.feishu.cn/open-apis/bot/v2/hook/T", {"msg_type": "text"},
                                    "s3cret", now)
    digest = hmac.new(b"1796277600\ns3cret", b"", hashlib.sha256).digest()
    assert signed == {"msg_type": "text", "timestamp": "1796277600", "sign": base64.b64encode(digest).decode()}


@pytest.mark.parametrize("kind", CHATS)
def test_no_secret_leaves_a_robot_request_unsigned(kind: ChatKind) -> None:
    body = chat_body(kind, notice())
    assert signed_chat_request(kind, "https://robot.example.com/x?k=1", body, None, datetime.now(UTC)) == (
        "https://robot.example.com/x?k=1", body)


@pytest.mark.parametrize("kind", CHATS)
def test_a_robot_that_answers_200_with_an_error_code_has_failed(receiver: Receiver, kind: ChatKind) -> None:
    receiver.behave(vendor_error(kind), path="/refuses")
    refused = httpx.post(receiver.url("/refuses"), json={})
    assert refused.status_code == 200
    reason = chat_failure(kind, refused.status_code, refused.text)
    assert reason and ("310000" in reason or "19021" in reason or "93000" in reason)
    took = httpx.post(receiver.url("/takes"), json={})
    assert chat_failure(kind, took.status_code, took.text) is None
    receiver.behave(status(502), path="/down")
    down = httpx.post(receiver.url("/down"), json={})
    assert chat_failure(kind, down.status_code, down.text) == "HTTP 502: answered 502 on purpose"


@pytest.mark.parametrize(("kind", "status_code", "text", "failed"), [
    ("feishu", 200, '{"code":0,"msg":"success","data":{}}', False),
    ("feishu", 200, '{"StatusCode":0,"StatusMessage":"success"}', False),
    ("feishu", 200, '{"code":9499,"msg":"Bad Request"}', True),
    ("dingtalk", 200, '{"errcode":0,"errmsg":"ok"}', False),
    ("wecom", 200, '{"errcode":45009,"errmsg":"api freq out of limit"}', True),
    ("wecom", 204, "", False),
    ("dingtalk", 200, "<html>captive portal</html>", True),
    ("dingtalk", 302, "", True),
])
def test_robot_answers(kind: ChatKind, status_code: int, text: str, failed: bool) -> None:
    assert (chat_failure(kind, status_code, text) is not None) == failed


def test_a_long_message_is_cut_to_what_the_robot_takes() -> None:
    body = chat_body("wecom", notice(title="投诉" * 5000))
    content = body["markdown"]["content"]
    assert len(content.encode()) <= 4096 and content.endswith("…")


# ------------------------------------------------------------------ SMS

@pytest.mark.parametrize("language", LANGUAGES)
def test_sms_is_short_with_the_number_and_the_link(language: Language) -> None:
    body = sms_body(notice(language=language), "+8613800000000")
    assert set(body) == {"to", "text", "language"}
    assert body["to"] == "+8613800000000" and body["language"] == language
    assert NUMBER in body["text"] and LINK in body["text"] and "\n" not in body["text"]
    assert len(body["text"]) < 200


# ------------------------------------------------------------------ e-mail

@pytest.fixture(scope="module")
def smtp() -> Any:
    with SmtpSink() as sink:
        yield sink


def send(sink: SmtpSink, message: EmailMessage) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.send_message(message)


@pytest.mark.parametrize(("language", "subject", "promise"), [
    ("zh-CN", f"投诉受理回执：{NUMBER}", "2026年12月3日 14:00"),
    ("en", f"We received your complaint {NUMBER}", "3 Dec 2026 14:00"),
])
def test_the_acknowledgement_email_arrives_whole(smtp: SmtpSink, language: Language, subject: str, promise: str) -> None:
    before = len(smtp.messages)
    message = email_message(notice(language=language), "投诉中心 <complaints@example.com>", ["li.wei@example.com"],
                            f"ack-{language}-1")
    send(smtp, message)
    received = smtp.wait_for(before + 1)[-1]
    assert received.mail_from == "complaints@example.com" and received.rcpt_tos == ["li.wei@example.com"]
    raw_subject = next(line for line in received.raw.split(b"\r\n") if line.startswith(b"Subject:"))
    if language == "zh-CN":
        assert raw_subject.startswith(b"Subject: =?utf-8?")  # RFC 2047, not raw UTF-8
    got = received.message
    assert got["Subject"] == subject
    assert got["Message-ID"] == f"<ack-{language}-1@example.com>"
    assert got["Content-Language"] == language and got["Auto-Submitted"] == "auto-generated"
    assert got.get_content_type() == "multipart/alternative"
    plain, html = got.get_body(("plain",)), got.get_body(("html",))
    assert plain is not None and html is not None
    for part in (plain.get_content(), html.get_content()):
        assert NUMBER in part and promise in part
    assert LINK in plain.get_content() and f'<a href="{LINK}">' in html.get_content()


def test_a_retried_email_keeps_its_message_id(smtp: SmtpSink) -> None:
    first = email_message(notice(), "complaints@example.com", ["a@example.com"], "delivery-42")
    again = email_message(notice(), "complaints@example.com", ["a@example.com"], "delivery-42")
    assert first["Message-ID"] == again["Message-ID"] == "<delivery-42@example.com>"
    with pytest.raises(ValueError):
        email_message(notice(), "complaints@example.com", ["a@example.com"], "bad id>\r\nBcc: x@example.com")


@pytest.mark.parametrize("template", list(CONTEXTS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_goes_out_by_email(smtp: SmtpSink, template: Template, language: Language) -> None:
    before = len(smtp.messages)
    send(smtp, email_message(notice(template, language), "complaints@example.com", ["ops@example.com"],
                             f"{template}-{language}"))
    got = smtp.wait_for(before + 1)[-1].message
    title, text = text_for(notice(template, language))
    assert got["Subject"] == title
    assert got.get_body(("plain",)).get_content().replace("\r\n", "\n").strip() == text


def test_the_html_part_escapes_what_people_typed() -> None:
    message = email_message(notice(title='<script>alert("x")</script> & co'), "c@example.com", ["a@example.com"], "m1")
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; co" in html
    assert '<script>alert("x")</script> & co' in message.get_body(("plain",)).get_content()


# ------------------------------------------------------------------ what the templates say

@pytest.mark.parametrize("template", list(CONTEXTS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_template_renders_for_every_channel(template: Template, language: Language) -> None:
    the_notice = notice(template, language)
    title, text = text_for(the_notice)
    assert title and "\n" not in title and text
    for kind in CHATS:
        json.dumps(chat_body(kind, the_notice))
    assert sms_body(the_notice, "+86")["text"]
    email_message(the_notice, "c@example.com", ["a@example.com"], "m").as_bytes()


@pytest.mark.parametrize("template", list(REQUIRED))
@pytest.mark.parametrize("language", LANGUAGES)
def test_a_missing_context_key_is_a_render_error(template: Template, language: Language) -> None:
    for key in REQUIRED[template]:
        context = {k: v for k, v in CONTEXTS[template].items() if k != key}
        bad = Notice(type="x", template=template, language=language, occurred_at=datetime.now(UTC),
                     data={}, context=context)
        with pytest.raises(RenderError, match=key):
            text_for(bad)
        with pytest.raises(RenderError):
            email_message(bad, "c@example.com", ["a@example.com"], "m")
        with pytest.raises(RenderError):
            chat_body("feishu", bad)


@pytest.mark.parametrize(("template", "context"), [
    ("customer_acknowledgement", {"promised_at": "next Tuesday"}),
    ("customer_acknowledgement", {"timezone": "Mars/Olympus_Mons"}),
    ("alert", {"alert": CONTEXTS["alert"]["alert"] | {"evidence": ["not", "a", "dict"]}}),
    ("alert", {"alert": {"title_en": "t", "title_zh": "t"}}),  # an alert without its severity, rule, ...
])
def test_bad_data_is_a_render_error(template: Template, context: dict[str, Any]) -> None:
    with pytest.raises(RenderError):
        text_for(notice(template, "zh-CN", **context))
    with pytest.raises(RenderError):
        sms_body(notice(template, "en", **context), "+86")


def test_text_no_channel_can_carry_is_a_render_error() -> None:
    """A lone surrogate (JSON can smuggle one in) cannot be UTF-8: refused, not sent broken."""
    with pytest.raises(RenderError):
        text_for(notice(title="bad \ud800 title"))
    with pytest.raises(RenderError):
        webhook_body(Notice(type="x", template="event", language="en", occurred_at=datetime.now(UTC),
                            data={"title": "\udc00"}))


def test_an_unknown_language_is_a_render_error() -> None:
    bad = Notice(type="x", template="event", language="fr", occurred_at=datetime.now(UTC), data={},
                 context=CONTEXTS["event"])
    with pytest.raises(RenderError):
        text_for(bad)


def test_a_staff_event_needs_only_its_type_and_number() -> None:
    for language in LANGUAGES:
        bare = Notice(type="x", template="event", language=language, occurred_at=datetime.now(UTC),
                      data={}, context={"event_type": "Escalated", "complaint_number": NUMBER})
        title, text = text_for(bare)
        assert NUMBER in title and ("已升级" if language == "zh-CN" else "escalated") in text
        assert "None" not in text


@pytest.mark.parametrize(("language", "words"), [
    ("zh-CN", ["已收到您的投诉", "2026年12月3日 14:00", "电动车电池有安全隐患"]),
    ("en", ["received your complaint", "3 Dec 2026 14:00", "电动车电池有安全隐患"]),
])
def test_the_acknowledgement_tells_the_number_the_promise_in_the_customers_zone_and_the_link(
        language: Language, words: list[str]) -> None:
    title, text = text_for(notice(language=language))
    assert NUMBER in title
    for word in [NUMBER, LINK, *words]:
        assert word in title + text


def test_an_acknowledgement_without_a_promise_says_as_soon_as_we_can() -> None:
    _, zh = text_for(notice(promised_at=None))
    _, en = text_for(notice(language="en", promised_at=None))
    assert "尽快" in zh and "as soon as" in en


@pytest.mark.parametrize(("status", "zh", "en"), [
    ("assigned", "处理中", "being handled"),
    ("waiting_on_customer", "等待您的回复", "waiting for your reply"),
    ("resolved", "已解决", "resolved"),
    ("reopened", "已重新打开", "reopened"),
])
def test_a_status_change_is_told_in_words_with_what_happens_next(status: str, zh: str, en: str) -> None:
    for language, words in (("zh-CN", zh), ("en", en)):
        title, text = text_for(notice("customer_status", language, status=status))
        assert words in title and words in text and LINK in text and NUMBER in text


def test_the_customer_sees_the_display_name_and_nothing_internal() -> None:
    staff = {"agent": "billing-7", "agent_name": "Zhang San (billing-7)", "internal_notes": "VIP, handle with care"}
    for language in LANGUAGES:
        the_notice = notice("customer_status", language, **staff)
        shown = [*text_for(the_notice), sms_body(the_notice, "+86")["text"],
                 email_message(the_notice, "c@example.com", ["a@example.com"], "m").as_string(),
                 json.dumps(chat_body("feishu", the_notice), ensure_ascii=False)]
        assert any("小李" in part for part in shown)
        for part in shown:
            assert not any(secret in part for secret in staff.values())
        _, text = text_for(notice("customer_status", language, agent_display_name=None))
        assert "小李" not in text and "None" not in text


def test_the_survey_carries_its_link_and_the_number() -> None:
    for language in LANGUAGES:
        title, text = text_for(notice("customer_survey", language))
        assert NUMBER in title and SURVEY in text


@pytest.mark.parametrize(("event_type", "zh", "en"), [
    ("AlertRaised", "告警触发", "alert raised"), ("AlertResolved", "告警已解除", "alert resolved")])
def test_an_alert_tells_its_title_severity_due_time_and_evidence(event_type: str, zh: str, en: str) -> None:
    zh_title, zh_text = text_for(notice("alert", "zh-CN", event_type=event_type))
    en_title, en_text = text_for(notice("alert", "en", event_type=event_type))
    assert zh_title == f"[严重] {zh}：致命投诉" and en_title == f"[critical] {en}: Fatal complaint"
    assert "2026年12月3日 14:00" in zh_text and "3 Dec 2026 14:00" in en_text
    assert "安全隐患" in zh_text and "director" in en_text and "alerts.fatal_complaint" in en_text


def test_an_endpoint_is_shown_without_its_credential() -> None:
    for endpoint in ("https://open.feishu.cn/open-apis/bot/v2/hook/SECRET-TOKEN",
                     "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRET-TOKEN",
                     "https://user:SECRET-TOKEN@example.com/hooks"):
        shown = redacted(endpoint)
        assert "SECRET-TOKEN" not in shown and shown.startswith("https://") and "." in shown


# ------------------------------------------------------------------ anything people type

printable_or_not = st.text(max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(list(CONTEXTS)), language=st.sampled_from(LANGUAGES),
       title=printable_or_not, name=printable_or_not, number=st.text(min_size=1, max_size=40))
def test_arbitrary_unicode_never_breaks_a_renderer(template: Template, language: Language, title: str, name: str,
                                                   number: str) -> None:
    context = dict(CONTEXTS[template])
    for key, value in (("title", title), ("complaint_number", number), ("agent_display_name", name),
                       ("actor_name", name), ("reason", title)):
        if key in context:
            context[key] = value
    if template == "alert":
        context["alert"] = context["alert"] | {"title_en": title, "title_zh": title, "owner": name,
                                               "evidence": {name: title}}
    the_notice = Notice(type="complaint.x", template=template, language=language,
                        occurred_at=datetime.now(UTC), data={"title": title, name: [number]}, context=context)
    subject, text = text_for(the_notice)
    assert "\n" not in subject and "\r" not in subject
    assert json.loads(webhook_body(the_notice))["data"] == the_notice.data
    for kind in CHATS:
        json.dumps(chat_body(kind, the_notice))
    sms_body(the_notice, "+86")
    raw = email_message(the_notice, "c@example.com", ["a@example.com"], "m").as_bytes()
    # Spaces between two encoded words are dropped by RFC 2047 decoding: compare the rest.
    assert "".join(email.message_from_bytes(raw, policy=email.policy.default)["Subject"].split()) == "".join(
        subject.split())


# ------------------------------------------------------------------ the receiver itself

def test_the_receiver_answers_as_told_per_path_and_in_turn(receiver: Receiver) -> None:
    receiver.behave(status(500), status(410), ok(204), path="/flaky")
    answers = [httpx.post(receiver.url("/flaky"), content=b"x").status_code for _ in range(4)]
    assert answers == [500, 410, 204, 204]
    assert httpx.post(receiver.url("/other")).status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        receiver.behave(close(), path="/gone")
        httpx.post(receiver.url("/gone"), content=b"x")
    assert [r.path for r in receiver.requests()] == ["/flaky"] * 4 + ["/other", "/gone"]


def test_the_receiver_holds_hundreds_of_slow_requests_at_once(receiver: Receiver) -> None:
    """250 requests each answered after 0.5 s all take about 0.5 s together. The client is
    plain asyncio streams: httpx's connection pool, not the receiver, is slow at this width."""
    receiver.behave(delay(0.5), path="/slow")

    async def post(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        writer.write(f"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: {len(str(i))}\r\n"
                     f"Connection: close\r\n\r\n{i}".encode())
        answer = await reader.read()
        writer.close()
        return answer.split(b"\r\n", 1)[0]

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(post(i) for i in range(250)))

    started = time.monotonic()
    assert asyncio.run(burst()) == [b"HTTP/1.1 200 OK"] * 250
    assert time.monotonic() - started < 2.5  # together, not one after another (250 x 0.5 s)
    assert sorted(int(r.body) for r in receiver.requests("/slow")) == list(range(250))


def test_a_delivery_to_a_stopped_receiver_fails_to_connect() -> None:
    with Receiver() as short_lived:
        url = short_lived.url("/x")
        assert httpx.post(url).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.post(url)
