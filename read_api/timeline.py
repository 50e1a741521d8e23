"""A complaint's timeline: its history (from `read_api.audit`) told in one line per event,
in English and in Chinese (codes by their names in `aggregates.vocabulary`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aggregates.vocabulary import (
    CATEGORY,
    CHANNEL,
    EVENT_TYPE,
    PRIORITY,
    SEVERITY,
    Names,
)


def _zh(table: Names, code: Any) -> str:
    """A code's Chinese name (the code itself when the table lacks it)."""
    return table[code][1] if code in table else str(code)


def _value(value: Any) -> str:
    """A custom field's value in a line: a list joined, a file by its name, none as "-"."""
    if value is None or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return str(value.get("name") or ", ".join(f"{k} {v}" for k, v in value.items()))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _summary(event_type: str, p: dict[str, Any]) -> tuple[str, str]:
    """The event in one line: (English, Chinese)."""
    match event_type:
        case "Registered":
            return (f"Registered via {p.get('channel')}: {p.get('title')}",
                    f"经{_zh(CHANNEL, p.get('channel'))}登记：{p.get('title')}")
        case "Triaged":
            reasons = f" ({'; '.join(p['priority_reasons'])})" if p.get("priority_reasons") else ""
            return (f"Triaged as {p.get('category')}, {p.get('severity')}: priority {p.get('priority')}{reasons}",
                    (f"分级为{_zh(CATEGORY, p.get('category'))}、{_zh(SEVERITY, p.get('severity'))}："
                     f"优先级{_zh(PRIORITY, p.get('priority'))}{reasons}"))
        case "Assigned":
            to = f"{p.get('team')}/{p.get('agent') or '-'}"
            if p.get("previous_team"):
                was = f"{p['previous_team']}/{p.get('previous_agent') or '-'}"
                return f"Handed over from {was} to {to}", f"由 {was} 转交给 {to}"
            return f"Assigned to {to}", f"分派给 {to}"
        case "NoteAdded":
            return f"Note: {p.get('text')}", f"备注：{p.get('text')}"
        case "ContactRecorded":
            direction = {"inbound": "呼入", "outbound": "呼出"}.get(str(p.get("direction")), str(p.get("direction")))
            visibility = {"public": "对客户可见", "internal": "内部"}.get(str(p.get("visibility")), str(p.get("visibility")))
            return ((f"{str(p.get('direction', '')).capitalize()} {p.get('channel')} contact"
                     f" ({p.get('visibility')}): {p.get('summary')}"),
                    f"{direction}{_zh(CHANNEL, p.get('channel'))}联系（{visibility}）：{p.get('summary')}")
        case "WaitingOnCustomer":
            return f"Waiting on the customer: {p.get('reason')}", f"等待客户：{p.get('reason')}"
        case "CustomerReplied":
            return f"Customer replied: {p.get('summary')}", f"客户回复：{p.get('summary')}"
        case "ResolutionProposed":
            return f"Proposed: {p.get('proposal')}", f"提出方案：{p.get('proposal')}"
        case "Resolved":
            return f"Resolved: {p.get('resolution')}", f"已解决：{p.get('resolution')}"
        case "Verified":
            nps = f", NPS {p['nps']}" if p.get("nps") is not None else ""
            comment = f": {p['comment']}" if p.get("comment") else ""
            return (f"Customer rated CSAT {p.get('csat')}{nps}{comment}",
                    f"客户评分 CSAT {p.get('csat')}{nps.replace(', ', '，')}{comment.replace(': ', '：')}")
        case "FieldsUpdated":
            changes = p.get("changes") or {}
            shown = "; ".join(f"{name}: {_value(change.get('before'))} → {_value(change.get('after'))}"
                              for name, change in changes.items() if isinstance(change, dict))
            return f"Fields: {shown}", f"字段：{shown}"
        case "TagAdded":
            return f"Tagged {p.get('tag')}", f"添加标签：{p.get('tag')}"
        case "TagRemoved":
            return f"Untagged {p.get('tag')}", f"移除标签：{p.get('tag')}"
        case "Closed":
            return "Closed", "已关闭"
        case "Reopened":
            return f"Reopened: {p.get('reason')}", f"重开：{p.get('reason')}"
        case "Escalated":
            return f"Escalated to level {p.get('level')}: {p.get('reason')}", f"升级至 {p.get('level')} 级：{p.get('reason')}"
        case "Withdrawn":
            return f"Withdrawn: {p.get('reason')}", f"撤回：{p.get('reason')}"
        case "MarkedDuplicate":
            return f"Marked a duplicate of {p.get('duplicate_of')}", f"标记为 {p.get('duplicate_of')} 的重复投诉"
    return event_type, _zh(EVENT_TYPE, event_type)


def _at(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def timeline(complaint_id: Any, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The timeline view of a complaint's history entries (oldest first)."""
    items, status, title, due = [], "received", None, {"first_response_due": None, "resolution_due": None}
    start = _at(entries[0]["occurred_at"])
    for entry in entries:
        changes = entry["changes"]
        status = changes.get("status", {}).get("after", status)
        title = changes.get("title", {}).get("after", title)
        for key in due:
            if key in changes:
                due[key] = changes[key]["after"]
        summary, summary_zh = _summary(entry["event_type"], entry["payload"])
        items.append({
            "version": entry["version"], "at": entry["occurred_at"], "actor": entry["actor"],
            "event_type": entry["event_type"], "summary": summary, "summary_zh": summary_zh,
            "status": status,
            "since_registration_minutes": (_at(entry["occurred_at"]) - start).total_seconds() / 60,
            "changed": sorted(changes),
        })
    return {"complaint_id": complaint_id, "title": title, "status": status, **due, "items": items}
