"""A complaint's timeline: its history (from `read_api.audit`) told in one line per event."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _summary(event_type: str, p: dict[str, Any]) -> str:
    match event_type:
        case "Registered":
            return f"Registered via {p.get('channel')}: {p.get('title')}"
        case "Triaged":
            return (f"Triaged as {p.get('category')}, {p.get('severity')}: priority {p.get('priority')}"
                    + (f" ({'; '.join(p['priority_reasons'])})" if p.get("priority_reasons") else ""))
        case "Assigned":
            to = f"{p.get('team')}/{p.get('agent') or '-'}"
            if p.get("previous_team"):
                return f"Handed over from {p['previous_team']}/{p.get('previous_agent') or '-'} to {to}"
            return f"Assigned to {to}"
        case "NoteAdded":
            return f"Note: {p.get('text')}"
        case "ContactRecorded":
            return (f"{str(p.get('direction', '')).capitalize()} {p.get('channel')} contact"
                    f" ({p.get('visibility')}): {p.get('summary')}")
        case "WaitingOnCustomer":
            return f"Waiting on the customer: {p.get('reason')}"
        case "CustomerReplied":
            return f"Customer replied: {p.get('summary')}"
        case "ResolutionProposed":
            return f"Proposed: {p.get('proposal')}"
        case "Resolved":
            return f"Resolved: {p.get('resolution')}"
        case "Verified":
            nps = f", NPS {p['nps']}" if p.get("nps") is not None else ""
            return f"Customer rated CSAT {p.get('csat')}{nps}" + (f": {p['comment']}" if p.get("comment") else "")
        case "Closed":
            return "Closed"
        case "Reopened":
            return f"Reopened: {p.get('reason')}"
        case "Escalated":
            return f"Escalated to level {p.get('level')}: {p.get('reason')}"
        case "Withdrawn":
            return f"Withdrawn: {p.get('reason')}"
        case "MarkedDuplicate":
            return f"Marked a duplicate of {p.get('duplicate_of')}"
    return event_type


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
        items.append({
            "version": entry["version"], "at": entry["occurred_at"], "actor": entry["actor"],
            "event_type": entry["event_type"], "summary": _summary(entry["event_type"], entry["payload"]),
            "status": status,
            "since_registration_minutes": (_at(entry["occurred_at"]) - start).total_seconds() / 60,
            "changed": sorted(changes),
        })
    return {"complaint_id": complaint_id, "title": title, "status": status, **due, "items": items}
