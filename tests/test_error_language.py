"""The APIs' error messages for people in zh-CN and en, by Accept-Language, through a real
`complaints run` (the command API and the read API in one server): the same bad request in
each language differs in its words only, never in its status, `type`, `loc` or fields."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from complaints.error_language import negotiate
from complaints.identity import dev_user
from tests.identity import bearer
from tests.test_cli import running

INTAKE = bearer(dev_user("intake"))
REGISTER = {"channel": "web", "customer": {"id": "C-1"},
            "customer_personal": {"name": "Li Wei", "contact": "li@example.com"},
            "title": "重复扣费", "description": "同一订单扣了两次"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(tmp_path_factory.mktemp("error-language"), "--demo-count", "0") as (address, _, _):
        yield address


def both(method: str, url: str, **request: Any) -> dict[str, httpx.Response]:
    """The same request asked in Chinese and in English."""
    headers = request.pop("headers", {})
    return {language: httpx.request(method, url, headers=headers | {"Accept-Language": asked}, timeout=30, **request)
            for language, asked in (("zh-CN", "zh-CN,zh;q=0.9,en;q=0.8"), ("en", "en-US,en;q=0.9"))}


def words_only(answers: dict[str, httpx.Response], status: int) -> tuple[Any, Any]:
    """The Chinese and English words of two answers that agree in everything else."""
    zh, en = answers["zh-CN"], answers["en"]
    assert zh.status_code == en.status_code == status, (zh.text, en.text)
    assert (zh.headers["content-language"], en.headers["content-language"]) == ("zh-CN", "en")
    zh_body, en_body = zh.json(), en.json()
    if isinstance(en_body["detail"], list):
        strip = [[{k: v for k, v in e.items() if k != "msg"} for e in body["detail"]] for body in (zh_body, en_body)]
        assert strip[0] == strip[1]
        return [e["msg"] for e in zh_body["detail"]], [e["msg"] for e in en_body["detail"]]
    assert {k: v for k, v in zh_body.items() if k != "detail"} == {k: v for k, v in en_body.items() if k != "detail"}
    return zh_body["detail"], en_body["detail"]


def test_a_missing_field_is_told_in_the_asked_language(server: str) -> None:
    answers = both("POST", f"{server}/complaints", headers=INTAKE,
                   json={k: v for k, v in REGISTER.items() if k != "channel"})
    zh, en = words_only(answers, 422)
    assert answers["en"].json()["detail"][0] | {"msg": None} == {"type": "missing", "loc": ["body", "channel"],
                                                                 "msg": None}
    assert (zh, en) == (["缺少必填字段"], ["Field required"])


def test_a_version_conflict_says_someone_else_changed_it(server: str) -> None:
    made = httpx.post(f"{server}/complaints", headers=INTAKE, json=REGISTER, timeout=30).json()["complaint_id"]
    # The automation triages and assigns it within a second: asked after that, both
    # languages see the same version.
    deadline = time.monotonic() + 30
    while httpx.get(f"{server}/complaints/{made}", headers=bearer()).json()["status"] != "assigned":
        assert time.monotonic() < deadline, "the automation did not assign the complaint"
        time.sleep(0.1)
    answers = both("POST", f"{server}/complaints/{made}/triage", headers=bearer(),
                   json={"category": "billing", "severity": "major", "expected_version": 5})
    zh, en = words_only(answers, 409)
    body = answers["zh-CN"].json()
    assert (body["type"], body["current_version"]) == ("version_conflict", 3)
    assert zh == "已被他人修改：当前版本为 3，请重新加载后再决定"
    assert en.startswith(f"complaint {made} is at version 3, not version 5")


def test_not_found_forbidden_and_unauthenticated_in_both_languages(server: str) -> None:
    unknown = str(uuid.uuid4())
    zh, en = words_only(both("GET", f"{server}/complaints/{unknown}", headers=bearer()), 404)
    assert (zh, en) == (f"没有编号为 {unknown} 的投诉", f"no complaint with id {unknown}")
    # The read API's own 404, typed by its status.
    answers = both("GET", f"{server}/audit/complaints/{unknown}/history", headers=bearer())
    zh, en = words_only(answers, 404)
    assert answers["en"].json()["type"] == "not_found" and unknown in en and "找不到" in zh
    # Intake may not read the read models: 403.
    answers = both("GET", f"{server}/workload", headers=INTAKE)
    zh, en = words_only(answers, 403)
    assert answers["en"].json()["type"] == "access_denied"
    assert zh == "无权执行此操作：你的角色或团队不允许" and "may not" in en
    # No token: 401 (the authenticator's, typed by its status).
    answers = both("GET", f"{server}/complaints/{unknown}")
    zh, en = words_only(answers, 401)
    assert answers["en"].json()["type"] == "not_authenticated"
    assert zh.startswith("未登录或令牌无效") and en.startswith("sign in")


def test_pydantic_errors_are_translated_with_their_context(server: str) -> None:
    zh, en = words_only(both("POST", f"{server}/complaints", headers=INTAKE,
                             json=REGISTER | {"channel": "pigeon", "title": "", "extra": 1}), 422)
    assert zh[0].startswith("应为以下之一：") and "'web'" in zh[0] and en[0].startswith("Input should be")
    assert "至少需要 1 个字符" in zh and "不允许的多余字段" in zh
    zh, en = words_only(both("GET", f"{server}/workload", headers=bearer(), params={"limt": 5}), 422)
    assert zh[0].startswith("未知的查询参数；此接口接受：") and "limit" in zh[0] and en[0].startswith("unknown query")


@pytest.mark.parametrize(("header", "language"), [
    ("zh", "zh-CN"), ("zh-CN", "zh-CN"), ("zh-Hans", "zh-CN"), ("zh-Hans-CN", "zh-CN"),
    ("en-US,en;q=0.9", "en"), ("fr-FR, zh;q=0.5", "zh-CN"), ("zh;q=0.3, en;q=0.9", "en"),
    ("de", "en"), ("", "en"), ("*", "en"), ("zh;q=0", "en"),
])
def test_accept_language_is_negotiated(header: str, language: str) -> None:
    assert negotiate(header) == language
