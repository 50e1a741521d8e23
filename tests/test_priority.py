"""The priority rules, one by one (domain brief: keywords, VIP and wide impact raise it)."""

from __future__ import annotations

import pytest

from aggregates.priority import alarm_keywords_in, derive_priority


@pytest.mark.parametrize(
    ("severity", "tier", "impact", "text", "priority"),
    [
        ("fatal", "regular", "one_user", "", "urgent"),
        ("major", "regular", "one_user", "", "high"),
        ("normal", "regular", "one_user", "", "medium"),
        ("minor", "regular", "one_user", "", "low"),
        ("minor", "vip", "one_user", "", "medium"),
        ("minor", "regular", "all_users", "", "medium"),
        ("minor", "regular", "some_users", "", "low"),
        ("minor", "regular", "one_user", "账户存在欺诈交易", "medium"),
        ("minor", "regular", "one_user", "App is UNUSABLE", "medium"),
        ("minor", "vip", "all_users", "安全隐患", "urgent"),
        ("normal", "vip", "all_users", "fraud", "urgent"),  # capped at urgent
        ("fatal", "vip", "one_user", "", "urgent"),
    ],
)
def test_priority_rules(severity: str, tier: str, impact: str, text: str, priority: str) -> None:
    assert derive_priority(severity, tier, impact, text)[0] == priority  # type: ignore[arg-type]


def test_reasons_say_why() -> None:
    _, reasons = derive_priority("normal", "vip", "all_users", "设备无法使用, serious")
    assert reasons == ["vip customer", "impact on all users", "keyword: 无法使用, serious"]
    assert derive_priority("normal", "regular", "one_user", "late parcel")[1] == []


def test_keywords_in_both_languages() -> None:
    assert alarm_keywords_in("严重 problem with Safety Hazard") == ["严重", "safety hazard"]
