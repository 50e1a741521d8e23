"""Audit replay: who changed what, when, and what the complaint looked like then; and
the complaint's SLA clocks with their life.

Answers from the read node's `events` table (the envelopes as they arrived), rebuilding
past states with the aggregate's own code: each row becomes the Complaint event it was,
and `mutate` applies it exactly as the write side did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import duckdb
from eventsourcing.utils import get_topic

from aggregates.complaint import Complaint
from aggregates.events import PAYLOADS
from aggregates.sealed_fields import restored
from aggregates.sla import SlaPolicy
from projections import queries

COLUMNS = "complaint_version, event_type, occurred_at, recorded_at, actor, command_id, correlation_id, payload, position"
# Fields that change with every event: they are in each history row already.
NOT_DIFFED = {"version", "modified_on", "updated_at", "updated_by", "created_on"}


# Opens an event's sealed personal fields: (sealed, complaint id, version) -> the fields, or
# None once the customer is erased; a LookupError when it cannot here (they stay sealed).
# Given only for a principal who may see personal data.
Opener = Callable[[str, UUID, int], dict[str, Any] | None]


def _event(complaint_id: UUID, row: Sequence[Any], opener: Opener | None) -> tuple[Any, dict[str, Any]]:
    """The Complaint event a row was, and its payload as shown: personal fields opened with
    `opener`, or left sealed (`[sealed]`, masked free text) without one."""
    version, event_type, occurred_at, recorded_at, actor, command_id, correlation_id, payload, _ = row
    shown = json.loads(payload)
    sealed = shown.pop("sealed", None)
    fields = PAYLOADS[event_type].model_validate(shown).model_dump()
    fields.pop("sealed", None)
    if sealed is not None and opener is not None:
        try:
            originals = opener(sealed, complaint_id, version)
        except LookupError:
            originals = {}
        restored(fields, originals)
        restored(shown, originals)
    extra = {"originator_topic": get_topic(Complaint)} if event_type == "Registered" else {}
    event = getattr(Complaint, event_type)(
        originator_id=complaint_id, originator_version=version, timestamp=recorded_at,
        actor=actor, occurred_at=occurred_at, command_id=command_id,
        correlation_id=correlation_id, acted_as=None, fingerprint=None, **fields, **extra,
    )
    return event, shown


class IncompleteHistory(Exception):
    """The read node holds this complaint's events from a later version on only (its
    registration was set aside as a dead letter): it cannot be replayed (HTTP 409)."""

    def __init__(self, complaint_id: UUID, first: int) -> None:
        super().__init__(f"the read node holds complaint {complaint_id}'s history from version {first} on only"
                         " (the events before were set aside: see the dead letters), so it cannot be replayed here")


def _rows(db: duckdb.DuckDBPyConnection, complaint_id: UUID, where: str = "", params: Iterable[Any] = ()) -> list[Any]:
    rows = db.execute(
        f"SELECT {COLUMNS} FROM events WHERE complaint_id = ? AND event_type NOT LIKE 'Alert%' {where}"
        " ORDER BY complaint_version",  # an alert's id is no complaint's
        [str(complaint_id), *params],
    ).fetchall()
    if rows and rows[0][0] != 1:
        raise IncompleteHistory(complaint_id, rows[0][0])
    return rows


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def state_at(db: duckdb.DuckDBPyConnection, complaint_id: UUID, *, version: int | None = None,
             at: datetime | None = None, opener: Opener | None = None) -> dict[str, Any] | None:
    """The complaint as it was at `version`, or at the instant `at` (None: now); its
    personal fields opened with `opener` (else as stored: sealed or masked)."""
    where, params = "", []
    if version is not None:
        where, params = "AND complaint_version <= ?", [version]
    elif at is not None:
        where, params = "AND occurred_at <= ?", [at]
    complaint = None
    for row in _rows(db, complaint_id, where, params):
        complaint = _event(complaint_id, row, opener)[0].mutate(complaint)
    return _jsonable(complaint.state()) if complaint is not None else None


def history(db: duckdb.DuckDBPyConnection, complaint_id: UUID, opener: Opener | None = None) -> list[dict[str, Any]]:
    """Every event in order, with the fields of the complaint it changed (before, after);
    personal fields opened with `opener` (else as stored: sealed or masked)."""
    entries, complaint, before = [], None, {}
    for row in _rows(db, complaint_id):
        event, shown = _event(complaint_id, row, opener)
        complaint = event.mutate(complaint)
        after = _jsonable(complaint.state())
        changes = {
            key: {"before": before.get(key), "after": value}
            for key, value in after.items()
            if key not in NOT_DIFFED and before.get(key) != value
        }
        version, event_type, occurred_at, recorded_at, actor, command_id, correlation_id, payload, position = row
        entries.append({
            "version": version, "event_type": event_type, "occurred_at": occurred_at,
            "recorded_at": recorded_at, "actor": actor, "command_id": command_id,
            "correlation_id": correlation_id, "position": position,
            "payload": shown, "changes": changes,
        })
        before = after
    return entries


def team_of(db: duckdb.DuckDBPyConnection, complaint_id: UUID) -> str | None:
    """The team the complaint is assigned to now (None: not assigned yet)."""
    row = db.execute(
        "SELECT json_extract_string(payload, '$.team') FROM events WHERE complaint_id = ?"
        " AND event_type = 'Assigned' ORDER BY complaint_version DESC LIMIT 1", [str(complaint_id)],
    ).fetchone()
    return row[0] if row else None


def like_literal(text: str) -> str:
    """`text` as a LIKE pattern that matches it literally (escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search(db: duckdb.DuckDBPyConnection, *, customer: str | None = None, order: str | None = None,
           product: str | None = None, text: str | None = None, team: str | None = None,
           limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Complaints whose registration matches every given filter (text: title or description;
    team: assigned to that team now)."""
    conditions, params = ["event_type = 'Registered'"], []
    if team is not None:
        conditions.append("complaint_id IN (SELECT complaint_id FROM events WHERE event_type = 'Assigned'"
                          " GROUP BY complaint_id HAVING arg_max(json_extract_string(payload, '$.team'),"
                          " complaint_version) = ?)")
        params.append(team)
    for path, value in (("$.customer.id", customer), ("$.order_ref", order), ("$.product", product)):
        if value is not None:
            conditions.append(f"json_extract_string(payload, '{path}') = ?")
            params.append(value)
    if text:
        # The text matches literally: `%` and `_` are LIKE's wildcards, escaped here.
        conditions.append(
            "(json_extract_string(payload, '$.title') ILIKE ? ESCAPE '\\'"
            " OR json_extract_string(payload, '$.description') ILIKE ? ESCAPE '\\')"
        )
        pattern = f"%{like_literal(text)}%"
        params += [pattern, pattern]
    rows = db.execute(
        f"""SELECT complaint_id, occurred_at,
                   json_extract_string(payload, '$.title'),
                   json_extract_string(payload, '$.customer.id'),
                   json_extract_string(payload, '$.product'),
                   json_extract_string(payload, '$.order_ref')
            FROM events WHERE {' AND '.join(conditions)}
            ORDER BY occurred_at DESC, complaint_id LIMIT ? OFFSET ?""",
        [*params, limit, offset],
    ).fetchall()
    keys = ("complaint_id", "registered_at", "title", "customer_id", "product", "order_ref")
    return [dict(zip(keys, row, strict=True)) for row in rows]


METRIC_ORDER = {"first_response": 0, "resolution": 1, "next_response": 2}


def _undone_resolutions(db: duckdb.DuckDBPyConnection, complaint_id: str, now: datetime) -> list[tuple[Any, Any]]:
    """(resolved at, reopened at) of each resolution a later reopening undid, by `now`."""
    rows = db.execute(
        "SELECT event_type, occurred_at FROM events WHERE complaint_id = ? AND occurred_at <= ?"
        " AND event_type IN ('Resolved', 'Reopened') ORDER BY complaint_version", [complaint_id, now],
    ).fetchall()
    undone, resolved_at = [], None
    for event_type, occurred_at in rows:
        if event_type == "Resolved":
            resolved_at = occurred_at
        elif resolved_at is not None:
            undone.append((resolved_at, occurred_at))
            resolved_at = None
    return undone


def clocks(db: duckdb.DuckDBPyConnection, complaint_id: UUID, now: datetime, *,
           policy: SlaPolicy | None = None, tz: str | None = None) -> list[dict[str, Any]]:
    """The complaint's SLA clocks as of `now`, each with its life so far (activated,
    paused, resumed, warned, breached, fulfilled, cancelled), judged with `policy`
    (default the packaged one)."""
    cid = str(complaint_id)
    life: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with queries.view(db, now=now, tz=tz, policy=policy) as v:
        events = queries.sla_clock_events(v, complaint_id=cid)
        found = queries.sla_clocks(v, complaint_id=cid)
    for e in events:
        life.setdefault((e["metric"], e["cycle"]), []).append({"event": e["event"], "at": e["occurred_at"]})
    # A reopening restarts the resolution clock, whose row then no longer holds the earlier
    # stop: each resolution a reopening undid stays in the clock's life, as does the reopening.
    for resolved_at, reopened_at in _undone_resolutions(db, cid, now):
        life.setdefault(("resolution", 1), []).extend(
            [{"event": "fulfilled", "at": resolved_at}, {"event": "reopened", "at": reopened_at}])
    for moments in life.values():
        moments.sort(key=lambda m: m["at"])
    rows = sorted(found, key=lambda k: (METRIC_ORDER.get(k["metric"], 9), k["cycle"]))
    return [
        {"metric": k["metric"], "cycle": k["cycle"], "status": k["status"], "started_at": k["started_at"],
         "due_at": k["due_at"], "stopped_at": k["stopped_at"], "stop_reason": k["stop_reason"],
         "business_minutes": None if k["business_seconds"] is None else k["business_seconds"] / 60,
         "paused_minutes": k["paused_seconds"] / 60, "life": life.get((k["metric"], k["cycle"]), [])}
        for k in rows
    ]
