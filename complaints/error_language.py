"""The language of the APIs' error messages for people: zh-CN or en, by `Accept-Language`.

The apps answer every error in English, with machine-readable parts beside the words: the
status code, `type` (a 422's per error, in pydantic's codes; every other error's for the
whole body), `loc`, `ctx` and fields such as `current_version`. `ErrorLanguage`, which the
composition root puts around each app it serves (`in_the_client_language`), rewrites only
the words: a 422's `msg`s and another error's string `detail`, from the catalog below, keyed
by `type` and filled in from the error's `ctx` or the body's fields; English stays as the
app wrote it. A body without a `type` gets the one of its status code (a 401 from the
authenticator, a 404 of the read API). Every error answer says its language in
`Content-Language`.

Both apps, and the read API mounted into the command API's process, go through the same
middleware, so neither app knows about languages (nor imports this module).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from babel import default_locale, negotiate_locale
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregates.languages import by_preference

ENGLISH, CHINESE = "en", "zh-CN"
# What Babel matches the client's tags against: zh, zh-CN, zh-Hans (and other zh-*, by
# Babel's fallback to the language) are answered in zh-CN.
_SPOKEN = ("zh-CN", "zh-Hans", "zh", "en")

# The type of a body that names none, by status code.
TYPE_OF_STATUS = {
    401: "not_authenticated", 403: "access_denied", 404: "not_found", 409: "conflict",
    413: "body_too_large", 429: "too_many_requests", 503: "not_ready",
}

# zh-CN words by error type: the first template whose names the error has ({msg}: the
# English words, where nothing better is known). Pydantic's codes, then the domain's.
CHINESE_WORDS: dict[str, tuple[str, ...]] = {
    "missing": ("缺少必填字段",),
    "extra_forbidden": ("未知的查询参数；此接口接受：{takes}", "不允许的多余字段"),
    "string_too_short": ("至少需要 {min_length} 个字符",),
    "string_too_long": ("最多 {max_length} 个字符",),
    "string_type": ("应为字符串",),
    "string_pattern_mismatch": ("格式不符，应匹配 {pattern}",),
    "string_invalid": ("文本无效（{msg}）",),
    "literal_error": ("应为以下之一：{expected}",),
    "enum": ("应为以下之一：{expected}",),
    "uuid_parsing": ("不是有效的 UUID",),
    "uuid_type": ("应为 UUID",),
    "int_parsing": ("应为整数",),
    "int_type": ("应为整数",),
    "int_from_float": ("应为整数，不能有小数部分",),
    "float_parsing": ("应为数字",),
    "float_type": ("应为数字",),
    "bool_parsing": ("应为布尔值（true 或 false）",),
    "bool_type": ("应为布尔值（true 或 false）",),
    "greater_than": ("应大于 {gt}",),
    "greater_than_equal": ("应大于或等于 {ge}",),
    "less_than": ("应小于 {lt}",),
    "less_than_equal": ("应小于或等于 {le}",),
    "too_short": ("至少需要 {min_length} 项",),
    "too_long": ("最多 {max_length} 项",),
    "dict_type": ("应为对象",),
    "model_type": ("应为对象",),
    "model_attributes_type": ("应为对象",),
    "list_type": ("应为数组",),
    "json_invalid": ("请求体不是有效的 JSON（{error}）", "请求体不是有效的 JSON"),
    "json_type": ("应为 JSON",),
    "date_parsing": ("不是有效的日期",),
    "date_from_datetime_parsing": ("不是有效的日期",),
    "datetime_parsing": ("不是有效的日期时间",),
    "datetime_from_date_parsing": ("不是有效的日期时间",),
    "datetime_type": ("时间应为带时区偏移的 ISO 8601 字符串（{msg}）",),
    "timezone_aware": ("时间必须带时区",),
    "url_parsing": ("不是有效的 URL",),
    "url_scheme": ("URL 的协议应为 {expected_schemes}",),
    "value_error": ("取值无效（{msg}）",),
    # the domain's (commands.api and read_api.app name them)
    "not_authenticated": ("未登录或令牌无效：请求须带有效的 `Authorization: Bearer <令牌>`",),
    "access_denied": ("无权执行此操作：你的角色或团队不允许",),
    "not_found": ("找不到所请求的投诉、告警或订阅",),
    "complaint_not_found": ("没有编号为 {complaint_id} 的投诉",),
    "customer_not_found": ("没有客户 {customer_id} 的投诉记录",),
    "alert_not_found": ("没有编号为 {alert_id} 的告警",),
    "subscription_not_found": ("没有编号为 {subscription_id} 的订阅",),
    "illegal_transition": ("投诉当前状态为 {status}，不能执行 {action}",),
    "alert_transition": ("告警当前状态为 {status}，不能执行此操作",),
    "subscription_transition": ("订阅当前状态为 {status}，不能执行此操作",),
    "article_not_found": ("没有编号为 {article_id} 的知识条目",),
    "article_transition": ("当前状态为 {status}，不能执行此操作（{msg}）",),
    "alert_already_raised": ("相同键的告警已经发出（{alert_id}）",),
    "version_conflict": ("已被他人修改：当前版本为 {current_version}，请重新加载后再决定",),
    "rule_violation": ("此操作违反业务规则（{msg}）",),
    "command_id_reused": ("此 command_id 已用于另一条命令：以相同的请求体重试可得到首次的答复，新命令请用新的 command_id",),
    "conflict": ("请求与当前状态冲突（{msg}）",),
    "body_too_large": ("请求体超过了服务器的上限（COMPLAINTS_MAX_BODY_BYTES）",),
    "attachment_too_large": ("附件超过了 {limit} 字节的上限（COMPLAINTS_ATTACHMENT_MAX_BYTES）",),
    "media_type_not_accepted": ("不接受媒体类型为 {media_type} 的附件（可接受的类型见 accepted）",),
    "attachment_not_found": ("投诉 {complaint_id} 没有 SHA-256 为 {sha256} 的附件",),
    "attachment_erased": ("投诉 {complaint_id} 的客户个人数据已被删除：其附件无法再打开",),
    "too_many_requests": ("请求过于频繁，请稍后再试",),
    "not_ready": ("服务尚未就绪，请稍后再试（{msg}）",),
    # custom fields (aggregates.fields)
    "field_unknown": ("未定义自定义字段 {field}（字段定义版本 {version}）；已定义的字段：{known}",),
    "field_retired": ("字段 {field} 已于版本 {retired_in} 停用：历史值仍可查看，但不能再设置",),
    "field_not_applicable": ("字段 {field} 只适用于以下类别的投诉：{categories}（此投诉：{category}）",),
    "field_required": ("投诉进入 {status} 状态前必须填写字段 {field}：请先设置（update-fields）",),
}


def negotiate(accept_language: str | None) -> str:
    """The language to answer in for an `Accept-Language` header (default en)."""
    chosen = negotiate_locale(by_preference(accept_language), _SPOKEN, sep="-")
    return CHINESE if chosen is not None and chosen.lower().startswith("zh") else ENGLISH


def system_language() -> str:
    """The language of the command line: the user's locale (LANGUAGE, LC_ALL, LC_MESSAGES, LANG)."""
    # Messages' own order (LC_CTYPE, which Python sets to C.UTF-8 where the user's locale is
    # not installed, says nothing about the language of messages).
    chosen = default_locale(("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"))
    return negotiate((chosen or "").replace("_", "-"))


def words(kind: str, known: Mapping[str, Any], english: str, language: str) -> str:
    """The words for an error of type `kind` in `language`; `known`: its ctx or fields."""
    if language == ENGLISH:
        return english
    names = {**known, "msg": english.removeprefix("Value error, ")}
    for template in CHINESE_WORDS.get(kind, ()):
        try:
            return template.format_map(names)
        except (KeyError, IndexError, ValueError):
            continue
    return english


def translated(answer: Any, status: int, language: str) -> Any:
    """An error body with its words in `language` (and a `type` where it had none)."""
    if not isinstance(answer, dict) or "detail" not in answer:
        return answer
    detail = answer["detail"]
    if isinstance(detail, list):
        return answer | {"detail": [
            error | {"msg": words(str(error.get("type")), error.get("ctx") or {}, error["msg"], language)}
            if isinstance(error, dict) and isinstance(error.get("msg"), str) else error
            for error in detail]}
    if isinstance(detail, str):
        kind = answer.get("type") or TYPE_OF_STATUS.get(status)
        if kind is None:
            return answer
        return answer | {"type": kind, "detail": words(kind, answer, detail, language)}
    return answer


class ErrorLanguage:
    """ASGI middleware: error answers (status >= 400, JSON) in the client's language."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        language = negotiate(_header(scope, b"accept-language"))
        held: Message | None = None
        body = bytearray()

        async def in_language(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400 \
                    and (_value(message, b"content-type") or b"").startswith(b"application/json"):
                held = message  # sent with the translated body, whose length differs
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            try:
                answer = json.dumps(translated(json.loads(body), held["status"], language),
                                    ensure_ascii=False, separators=(",", ":")).encode()
            except ValueError:  # not JSON after all: as it was
                answer = bytes(body)
            headers = [(k, v) for k, v in held["headers"] if k.lower() not in (b"content-length", b"content-language")]
            headers += [(b"content-length", str(len(answer)).encode()), (b"content-language", language.encode()),
                        (b"vary", b"Accept-Language")]
            await send(held | {"headers": headers})
            await send({"type": "http.response.body", "body": answer, "more_body": False})

        await self.app(scope, receive, in_language)


def in_the_client_language(app: FastAPI) -> FastAPI:
    """`app` with its error answers in the client's language (outermost: every error passes)."""
    app.add_middleware(ErrorLanguage)
    return app


def _header(scope: Scope, name: bytes) -> str | None:
    value = next((v for k, v in scope["headers"] if k.lower() == name), None)
    return value.decode("latin-1") if value is not None else None


def _value(message: Message, name: bytes) -> bytes | None:
    return next((v for k, v in message.get("headers", ()) if k.lower() == name), None)
