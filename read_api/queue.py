"""The workspace's lists: the complaints an agent works on, each with its next due time.

A queue is a question about the complaints as they stand (`complaint_facts`) and their
running SLA clocks (`sla_running_clocks`):
- `mine`: open, assigned to the caller;
- `team`: open, of the caller's team (or of the `team` filter);
- `unassigned`: open, with no agent yet (a team lead also sees those of no team);
- `breached`, `at_risk`: open, with a running clock past its due time, or in its warning
  time (the SLA policy's, the same rule as the supervisor's lists);
- `all`: every complaint the filters select, open or not: the list behind a dashboard's
  bar, KPI or row (drill-through).
The filters narrow every queue; the window (`period`, `start`, `end`) applies only when the
request gives one, so "mine" is every open complaint of mine, however old; it is about the
registration, or with `dated_by=resolved` the resolution. `status=open` is every open status.
"""

from __future__ import annotations

from typing import Any, Literal

from aggregates.priority import PRIORITIES
from projections.queries import FACTS, RUNNING
from read_api.figures import Query, Request, _running_clock_status, _titles

Queue = Literal["mine", "team", "unassigned", "breached", "at_risk", "all"]
QueueSort = Literal["due", "priority", "age"]
# Which instant the window (`period`, `start`, `end`) is about: the registration, or the
# (latest) resolution, as the dashboards' "resolved today" and resolutions per day count.
DatedBy = Literal["registered", "resolved"]
OPEN_STATUS = "open"  # a status filter meaning every open status
WINDOW_FILTERS = frozenset({"period", "start", "end"})

_PRIORITY_RANK = " ".join(f"WHEN '{p}' THEN {rank}" for rank, p in enumerate(PRIORITIES))
# Each sort's order, then the complaint id: a stable order, so paging never repeats a row.
_ORDER = {
    "due": "next_due_at {order} NULLS LAST, registered_at, complaint_id",
    "priority": f"CASE priority {_PRIORITY_RANK} END {{order}} NULLS LAST, next_due_at NULLS LAST, complaint_id",
    "age": "registered_at {order}, complaint_id",
}
_DEFAULT_ORDER = {"due": "asc", "priority": "asc", "age": "asc"}


def complaint_list(r: Request, queue: Queue, *, caller: str, unassigned_of_no_team: bool = False,
                   status: str | None = None, dated_by: DatedBy = "registered", sort: QueueSort = "due",
                   order: str | None = None,
                   limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """One page of the queue, the total it has, and each row's next due time and SLA state.

    `caller` is the subject whose `mine` it is; `unassigned_of_no_team` adds complaints no
    team has yet to a team-bound caller's `unassigned` (a team lead triages and assigns them).
    """
    conditions = ["true"]
    params: dict[str, Any] = r.params() | {"caller": caller, "status": status, "limit": limit, "offset": offset}
    f = r.filters
    for name in ("product", "channel", "severity", "tier", "category", "agent", "region"):
        if getattr(f, name, None) is not None:
            conditions.append(f"f.{name} = ${name}")
            params[name] = getattr(f, name)
    if f.team is not None:
        conditions.append("(f.team = $team OR f.team IS NULL)" if queue == "unassigned" and unassigned_of_no_team
                          else "f.team = $team")
    conditions += r.held()[0]  # the custom field and tag filters (their values are in r.params())
    if WINDOW_FILTERS & f.model_fields_set:
        dated = {"registered": "f.registered_at", "resolved": "f.resolved_at"}[dated_by]
        conditions.append(f"{dated} >= $start AND {dated} < $end")
    if status == OPEN_STATUS:
        conditions.append("f.is_open")
    elif status is not None:
        conditions.append("f.status = $status")
    conditions.append({
        "mine": "f.is_open AND f.agent = $caller",
        "team": "f.is_open",
        "unassigned": "f.is_open AND f.agent IS NULL",
        "breached": "f.is_open AND c.breached",
        "at_risk": "f.is_open AND c.at_risk AND NOT c.breached",
        "all": "true",
    }[queue])
    where = " AND ".join(conditions)
    listed = f"""
        WITH c AS (
            SELECT complaint_id, min(due_at) AS next_due_at, arg_min(metric, due_at) AS next_due_metric,
                   bool_or(status_now = 'breached') AS breached, bool_or(status_now = 'warning') AS at_risk
            FROM (SELECT complaint_id, metric, due_at, {_running_clock_status(r)} AS status_now
                  FROM {r.t(RUNNING)})
            GROUP BY complaint_id)
        SELECT f.complaint_id, f.registered_at, f.last_event_at, f.last_version AS version, f.status, f.priority,
               f.severity, f.category, f.product, f.channel, f.region, f.tier, f.team, f.agent,
               c.next_due_at, c.next_due_metric, coalesce(c.breached, false) AS breached,
               coalesce(c.at_risk, false) AND NOT coalesce(c.breached, false) AS at_risk
        FROM {r.t(FACTS)} f LEFT JOIN c USING (complaint_id)
        WHERE {where}"""
    total = Query(f"SELECT count(*) AS n FROM ({listed})", params).rows(r.db)[0]["n"]
    ordering = _ORDER[sort].format(order=(order or _DEFAULT_ORDER[sort]).upper())
    rows = Query(f"{listed} ORDER BY {ordering} LIMIT $limit OFFSET $offset", params).rows(r.db)
    titles = _titles(r, rows)
    for row in rows:
        row["title"] = titles.get(row["complaint_id"])
        row["age_seconds"] = max(0.0, (r.now - row["registered_at"]).total_seconds())
    return {"queue": queue, "sort": sort, "total": total, "limit": limit, "offset": offset,
            "rows": rows, "window": r.window()}
