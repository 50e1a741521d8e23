"""Priority of a complaint, derived from its grading by explicit rules.

The rules (domain brief, "Rules and alerts"):
1. Severity sets the base: fatal -> urgent, major -> high, normal -> medium, minor -> low.
2. Each of these raises the priority one step (never above urgent):
   - a VIP customer;
   - impact on all users;
   - an alarm keyword in the title or description (严重, 无法使用, 安全隐患, 欺诈, and
     their English equivalents).
The reasons are returned with the priority so the event can say why.
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["fatal", "major", "normal", "minor"]
Impact = Literal["one_user", "some_users", "all_users"]
Tier = Literal["vip", "regular"]
Priority = Literal["urgent", "high", "medium", "low"]

PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "medium", "low")
BASE_PRIORITY: dict[Severity, Priority] = {
    "fatal": "urgent",
    "major": "high",
    "normal": "medium",
    "minor": "low",
}
ALARM_KEYWORDS: tuple[str, ...] = (
    "严重",
    "无法使用",
    "安全隐患",
    "欺诈",
    "serious",
    "unusable",
    "safety hazard",
    "fraud",
)


def alarm_keywords_in(text: str) -> list[str]:
    """The alarm keywords found in `text`, case-insensitively, in rule order."""
    folded = text.casefold()
    return [k for k in ALARM_KEYWORDS if k in folded]


def derive_priority(
    severity: Severity, tier: Tier, impact: Impact, text: str
) -> tuple[Priority, list[str]]:
    """The priority and the reasons that raised it above the severity's base."""
    reasons: list[str] = []
    if tier == "vip":
        reasons.append("vip customer")
    if impact == "all_users":
        reasons.append("impact on all users")
    keywords = alarm_keywords_in(text)
    if keywords:
        reasons.append("keyword: " + ", ".join(keywords))
    rank = max(0, PRIORITIES.index(BASE_PRIORITY[severity]) - len(reasons))
    return PRIORITIES[rank], reasons
