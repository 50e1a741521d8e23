"""The figures behind the dashboards and read-model endpoints: the read API's one door to
the read models.

Figures come from `projections.queries` (the read models' own definitions, checked there
against an oracle), all through one `queries.View` per request: live tables, or TEMP
tables rebuilt once as of a past instant, shared by every figure of the request. The
few figures `projections.queries` does not have (counts by status, resolutions per day,
the filters' value lists, the complaint titles of a list) are SQL over the same view's
`complaint_facts` and `events` tables, here. So are the alerts (the `alerts` read model:
the list, one alert with its events, and each dashboard's `open_alerts`).

Tabular figures come back either as rows (small: a dashboard section) or as a `Query`
(SQL and parameters, for large read models) so that exports can stream them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import duckdb

from aggregates.access import MASK
from aggregates.sla import SlaPolicy
from projections import queries
from projections.alerts import ACTIVE, ALERTS, SEVERITY_RANK
from projections.fields import FIELD_PREFIX, FIELDS, TAGS, VALUE_KEY, matching_sql
from projections.queries import FACTS, RUNNING, WORK_OPEN
from read_api.schemas import EPOCH, AlertFilters, Dimension, Filters, Granularity

DIMENSION_FILTERS = ("team", "agent", "category", "product", "region", "channel", "severity", "tier")


@dataclass
class Query:
    """SQL with named parameters; run it for JSON, or stream it for an export."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # DuckDB rejects parameters the SQL does not use: keep only the used ones.
        used = set(re.findall(r"\$([a-z_][a-z_0-9]*)", self.sql))
        self.params = {k: v for k, v in self.params.items() if k in used}

    def rows(self, db: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        cursor = db.execute(self.sql, self.params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass
class Request:
    """One request's filters resolved against the clock, and the view it reads."""

    filters: Filters
    view: queries.View
    start: datetime
    end: datetime

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        return self.view.db

    @property
    def now(self) -> datetime:
        return self.view.now

    def t(self, table: str) -> str:
        return self.view.t(table)

    def dims(self, **extra: Any) -> queries.Filters:
        """The complaint dimensions of the filters (custom fields and tags among them), in the
        read models' terms."""
        f = self.filters
        return queries.Filters(**{name: getattr(f, name) for name in DIMENSION_FILTERS}
                               | {"field_values": f.field_values, "tags": tuple(f.tag)} | extra)

    def in_window(self, **extra: Any) -> queries.Filters:
        """The dimensions, and registration inside the period."""
        return self.dims(registered_from=self.start, registered_to=self.end, **extra)

    def params(self) -> dict[str, Any]:
        f = self.filters
        return {"start": self.start, "end": self.end, "now": self.now, "tz": f.tz,
                "today": self.view.local_midnight(self.now)} | {name: getattr(f, name) for name in DIMENSION_FILTERS} \
            | {f"held_{i}": value for i, value in enumerate(self.held()[1])}

    def held(self) -> tuple[list[str], list[Any]]:
        """The conditions of the custom field and tag filters (on `complaint_id`), and their values."""
        f = self.filters
        return matching_sql(self.t, f.field_values, f.tag, lambda i: f"$held_{i}")

    def where(self) -> str:
        """SQL conditions for the dimensions, custom fields and tags that are set (only
        those: DuckDB then reads no column it need not)."""
        f = self.filters
        return " AND ".join(["true", *(f"{name} = ${name}" for name in DIMENSION_FILTERS
                                       if getattr(f, name) is not None), *self.held()[0]])

    def facts(self) -> str:
        """The filtered `complaint_facts` rows of this view, as a relation."""
        return f"(SELECT * FROM {self.t(FACTS)} WHERE {self.where()})"

    def window(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "as_of": self.now, "tz": self.filters.tz}


@contextmanager
def request(db: duckdb.DuckDBPyConnection, filters: Filters, now: datetime | None = None,
            policy: SlaPolicy | None = None) -> Iterator[Request]:
    """The view of the read models these filters ask for (as of `filters.as_of`, if given),
    with `policy` (default the packaged one) judging the SLA clocks."""
    reference = filters.as_of or now or datetime.now(UTC)
    start, end = filters.window(reference)
    with queries.view(db, as_of=filters.as_of, now=reference, tz=filters.tz, policy=policy) as v:
        yield Request(filters, v, start, end)


def has_table(db: duckdb.DuckDBPyConnection, name: str) -> bool:
    # fetchall, not fetchone: DuckDB 2 refuses new work on a cursor with an unfinished result.
    found = db.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [name]
    ).fetchall()
    return bool(found[0][0])


def _day(column: str, granularity: str = "day") -> str:
    return f"CAST(date_trunc('{granularity}', timezone($tz, {column})) AS DATE)"


def _seconds_to_minutes(value: float | None) -> float | None:
    return None if value is None else value / 60


# ------------------------------------------------------------------ own SQL figures
def by_status(r: Request) -> list[dict[str, Any]]:
    """Complaints registered in the period, plus everything still open, by status.

    Two narrow queries rather than one with an OR: the period's prunes `complaint_facts`
    by the columns' min/max per row group (registration is nearly in table order), and
    the open ones come from the few rows of `workload_open`."""
    counts: dict[str, int] = {}
    for table, condition in ((FACTS, "registered_at >= $start AND registered_at < $end"),
                             (WORK_OPEN, "registered_at < $start OR registered_at >= $end")):
        for row in Query(f"SELECT status, count(*) AS n FROM {r.t(table)} WHERE ({condition}) AND {r.where()}"
                         " GROUP BY status", r.params()).rows(r.db):
            counts[row["status"]] = counts.get(row["status"], 0) + row["n"]
    return sorted(({"key": k, "count": n} for k, n in counts.items()), key=lambda row: (-row["count"], row["key"]))


def counts_in_period(daily: list[dict[str, Any]]) -> dict[str, int]:
    """New and resolved in the period: the sums of the daily flow (the same window)."""
    return {"new_in_period": sum(d["new"] for d in daily), "resolved_in_period": sum(d["resolved"] for d in daily)}


def daily_flow(r: Request) -> list[dict[str, Any]]:
    """New and resolved complaints per local day of the period."""
    where, params = r.dims().where("f", t=r.t)
    flows: dict[date, dict[str, Any]] = {}
    for name, column in (("new", "registered_at"), ("resolved", "resolved_at")):
        for row in r.view.by_period(
                f"f.{column}", "day",
                f"{r.t(FACTS)} f WHERE f.{column} >= ? AND f.{column} < ? AND {where}", {},
                {"n": "count(*)"}, {"n": "CAST(sum(n) AS BIGINT)"}, [r.start, r.end, *params]):
            flows.setdefault(row["period"], {"bucket": row["period"], "new": 0, "resolved": 0})[name] = row["n"]
    return [flows.get(day, {"bucket": day, "new": 0, "resolved": 0}) for day in _days(r, flows)]


def _days(r: Request, with_data: Iterable[date]) -> list[date]:
    """Every local day of the window, a day without a complaint as much as one with: a chart
    must show today's zero, not end at the last day something happened. An unbounded window
    ("all") starts at the first day with data."""
    zone = r.view.zone
    first = r.start.astimezone(zone).date()
    last = (min(r.end, r.now) - timedelta(microseconds=1)).astimezone(zone).date()
    if r.start == EPOCH:
        first = min(with_data, default=last)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def dimension_values(r: Request) -> dict[str, list[str]]:
    """The values each filterable dimension takes (for the page's drop-downs)."""
    return {
        column: [row["value"] for row in Query(
            f"SELECT DISTINCT {column} AS value FROM {r.t(FACTS)} WHERE {column} IS NOT NULL ORDER BY 1"
        ).rows(r.db)]
        for column in ("team", "product", "category", "region")
    }


def _titles(r: Request, rows: list[dict[str, Any]]) -> dict[str, str]:
    """The titles of a few complaints, from their Registered events.

    Looked up by registration instant as well as id: the event log is stored in time
    order, so DuckDB skips every row group that holds none of those instants.
    """
    if not rows:
        return {}
    found = Query("""
        SELECT complaint_id::VARCHAR AS complaint_id, payload->>'$.title' AS title FROM events
        WHERE occurred_at IN (SELECT unnest($ats)) AND complaint_id IN (SELECT unnest($ids))
          AND event_type = 'Registered'""",
        {"ats": [row["registered_at"] for row in rows], "ids": [UUID(row["complaint_id"]) for row in rows]},
    ).rows(r.db)
    return {row["complaint_id"]: row["title"] for row in found}


# ------------------------------------------------------------------ dashboards
def _attainment(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    row = next((x for x in rows if x["metric"] == metric), None) or {}
    return {
        "attainment": row.get("attainment"), "met": row.get("met", 0), "breached": row.get("breached", 0),
        "counted": row.get("counted", 0),
        "avg_business_minutes": _seconds_to_minutes(row.get("avg_business_seconds")),
        "p90_business_minutes": _seconds_to_minutes(row.get("p90_business_seconds")),
    }


def _running_clock_status(r: Request) -> str:
    """Warning or breached, for a running clock at `now`.

    The same rule as `projections.queries.clocks_now_sql`, applied to the running clocks
    the SLA projector keeps apart (`sla_running_clocks`, a few percent of `sla_clocks`).
    """
    now, warn = r.view.now_us, r.view.policy.warning_before_minutes * 60_000_000
    return f"""CASE WHEN due_at IS NOT NULL AND coalesce(epoch_us(paused_since), {now}) > epoch_us(due_at)
                    THEN 'breached'
                    WHEN paused_since IS NULL AND due_at IS NOT NULL AND {now} >= epoch_us(due_at) - {warn}
                    THEN 'warning' END"""


def _running_clocks(r: Request, also: str = "true") -> str:
    return f"""(SELECT *, {_running_clock_status(r)} AS status_now FROM {r.t(RUNNING)}
        WHERE {also} AND {r.where()})"""


def clocks_due(r: Request, limit: int) -> dict[str, list[dict[str, Any]]]:
    """Running clocks in their warning time, and breached ones: the `limit` most urgent of each."""
    # First the due time of each list's last row, from the narrow columns only; then the
    # rows due by then, with their complaint ids: DuckDB reads the (wide, uncompressible)
    # ids only where such rows are, not for every running clock.
    cutoffs = Query(f"""
        SELECT status_now, max(due_at) AS cutoff FROM (
            SELECT status_now, due_at FROM {_running_clocks(r)} WHERE status_now IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY status_now ORDER BY due_at) <= $limit
        ) GROUP BY ALL""", r.params() | {"limit": limit}).rows(r.db)
    if not cutoffs:
        return {"warning": [], "breached": []}
    cutoff = max(row["cutoff"] for row in cutoffs)
    rows = Query(f"""
        SELECT complaint_id, metric, status_now AS status, due_at, team, agent, severity, priority,
               registered_at
        FROM {_running_clocks(r, "due_at <= $cutoff")} WHERE status_now IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY status_now ORDER BY due_at, complaint_id, metric) <= $limit
        ORDER BY due_at, complaint_id, metric""", r.params() | {"limit": limit, "cutoff": cutoff}).rows(r.db)
    titles = _titles(r, rows)
    lists: dict[str, list[dict[str, Any]]] = {"warning": [], "breached": []}
    for row in rows:
        lists[row["status"]].append({k: v for k, v in row.items() if k != "registered_at"} | {
            "title": titles.get(row["complaint_id"]),
            "overdue_minutes": (r.now - row["due_at"]).total_seconds() / 60 if row["due_at"] else None,
        })
    return lists


def overdue_by_agent(r: Request) -> dict[tuple[Any, Any], int]:
    """Open complaints with a breached clock, per (team, agent)."""
    rows = Query(f"""
        SELECT team, agent, count(DISTINCT complaint_id) AS overdue FROM {_running_clocks(r)}
        WHERE status_now = 'breached' GROUP BY ALL""", r.params()).rows(r.db)
    return {(row["team"], row["agent"]): row["overdue"] for row in rows}


def agent_load(r: Request) -> list[dict[str, Any]]:
    """Per agent: open now (of which waiting on the customer, and past a due time), resolved."""
    load = queries.agent_load(r.view, r.dims())
    waiting = {(row["team"], row["agent"]): row["n"] for row in Query(
        f"SELECT team, agent, count(*) AS n FROM {r.t(WORK_OPEN)} WHERE status = 'waiting_on_customer' AND "
        f"{r.where()} GROUP BY ALL", r.params()).rows(r.db)}
    overdue = overdue_by_agent(r)
    return [row | {"waiting": waiting.get((row["team"], row["agent"]), 0),
                   "overdue": overdue.get((row["team"], row["agent"]), 0)} for row in load]


def supervisor(db: duckdb.DuckDBPyConnection, filters: Filters, *, list_limit: int = 20,
               now: datetime | None = None, policy: SlaPolicy | None = None) -> dict[str, Any]:
    with request(db, filters, now, policy) as r, ThreadPoolExecutor(2) as pool:
        # The largest figures run on cursors of their own meanwhile (DuckDB releases the
        # GIL); an as-of view's TEMP tables are private to its cursor, so not then.
        def aside(figure: Any) -> Any:
            return pool.submit(_on_own_cursor, r, figure) if r.filters.as_of is None else None

        sla_later = aside(lambda q: queries.sla_attainment(q.view, None, q.in_window()))
        load_later = aside(lambda q: (agent_load(q), daily_flow(q)))
        today = queries.today(r.view, r.dims())
        due = clocks_due(r, list_limit)
        statuses = by_status(r)
        load, daily = load_later.result() if load_later else (agent_load(r), daily_flow(r))
        sla = sla_later.result() if sla_later else queries.sla_attainment(r.view, None, r.in_window())
        first = _attainment(sla, "first_response")
        return {
            "window": r.window(),
            "counts": {"new_today": today["new"], "resolved_today": today["resolved"],
                       "pending": today["pending"], **counts_in_period(daily)},
            "by_status": statuses,
            "agent_load": load,
            "avg_first_response_business_minutes": first["avg_business_minutes"],
            "sla": {"first_response": first, "resolution": _attainment(sla, "resolution"),
                    "next_response": _attainment(sla, "next_response"),
                    "target_attainment": r.view.policy.target_attainment},
            "at_risk": due["warning"],
            "breached": due["breached"],
            "daily": daily,
            "open_alerts": open_alerts(r, "supervisor"),
        }


def _on_own_cursor(r: Request, figure: Any) -> Any:
    """`figure` of the live view, computed on a new cursor (a connection of its own)."""
    cursor = r.db.cursor()
    try:
        own = Request(r.filters, queries.View(cursor, None, r.now, r.view.tz, r.view.policy), r.start, r.end)
        return figure(own)
    finally:
        cursor.close()


def _by_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Counts summed per key, with their share, largest first."""
    totals: dict[Any, int] = {}
    for row in rows:
        totals[row["key"]] = totals.get(row["key"], 0) + row["count"]
    whole = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return [{"key": k, "count": n, "share": n / whole} for k, n in ranked]


def product(db: duckdb.DuckDBPyConnection, filters: Filters, *, release: date | None = None,
            release_days: int = 14, now: datetime | None = None,
            policy: SlaPolicy | None = None) -> dict[str, Any]:
    with request(db, filters, now, policy) as r:
        by_product = _by_key(queries.volume(r.view, "month", "product", r.in_window()))
        top = queries.top_categories(r.view, filters=r.in_window())
        # The latest complete week against the one before (this week is still filling up).
        this_monday = r.view.today() - timedelta(days=r.view.today().weekday())
        week = this_monday - timedelta(days=7)
        wow = sorted(
            ({"key": row["key"], "week": row["week"], "this_week": row["count"],
              "last_week": row["previous"] or 0, "growth": row["growth"]}
             for row in queries.week_over_week(r.view, "product", r.dims(), week=week)),
            key=lambda g: (-g["this_week"], str(g["key"])))
        trend: list[dict[str, Any]] = []
        if release is not None:
            zone = r.view.zone
            first = datetime.combine(release - timedelta(days=release_days), datetime.min.time(), zone)
            last = datetime.combine(release + timedelta(days=release_days + 1), datetime.min.time(), zone)
            counts = {row["period"]: row["count"] for row in queries.volume(
                r.view, "day", None, r.dims(category="product_defect", registered_from=first, registered_to=last))}
            trend = [{"bucket": day, "count": counts.get(day, 0)}
                     for day in (release + timedelta(days=n) for n in range(-release_days, release_days + 1))]
        before = [p["count"] for p in trend if p["bucket"] < release] if release else []
        after = [p["count"] for p in trend if p["bucket"] >= release] if release else []
        return {
            "window": r.window(),
            "total": sum(row["count"] for row in by_product),
            "by_product": by_product,
            "top_categories": [{"key": row["category"], "count": row["count"], "share": row["share"]} for row in top],
            "week_over_week": wow,
            "defect_trend": {"release": release, "points": trend,
                             "daily_before": sum(before) / len(before) if before else None,
                             "daily_after": sum(after) / len(after) if after else None},
            "open_alerts": open_alerts(r, "product"),
        }


def executive(db: duckdb.DuckDBPyConnection, filters: Filters, *, granularity: Granularity = "week",
              now: datetime | None = None, policy: SlaPolicy | None = None) -> dict[str, Any]:
    with request(db, filters, now, policy) as r:
        rates = queries.rates(r.view, r.in_window())
        start_day = r.start.astimezone(r.view.zone).date()
        # Only buckets from the one holding the period's start are shown: ratings from a day
        # before it on are enough (the day's margin covers any local midnight oddity).
        since = datetime.combine(_floor(start_day, granularity) - timedelta(days=1), datetime.min.time(), UTC)
        ratings = queries.ratings(r.view, granularity, r.dims(), verified_from=since)
        high: dict[date, int] = {}
        for row in queries.volume(r.view, "month", "priority", r.in_window()):
            if row["key"] in ("urgent", "high"):
                high[row["period"]] = high.get(row["period"], 0) + row["count"]
        return {
            "window": r.window(),
            "total": rates["complaints"],
            "satisfaction": [{"bucket": row["period"], "csat": row["avg_csat"], "nps": row["nps_score"],
                              "responses": row["ratings"]} for row in ratings
                             if row["period"] is not None and row["period"] >= _floor(start_day, granularity)],
            "high_priority_monthly": [{"bucket": k, "count": n} for k, n in sorted(high.items())],
            "avg_handling_hours": None if rates["avg_handling_seconds"] is None else rates["avg_handling_seconds"] / 3600,
            "reopen_rate": rates["reopen_rate"],
            "repeat_rate": rates["repeat_rate"],
            "first_contact_resolution_rate": rates["fcr_rate"],
            "open_alerts": open_alerts(r, "executive"),
        }


def _floor(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


# ------------------------------------------------------------------ alerts
# Whose alerts each dashboard shows: those for any of these roles (an alert's `recipients`).
AUDIENCES: dict[str, tuple[str, ...]] = {
    "supervisor": ("agent", "supervisor", "department_head"),
    "product": ("quality",),
    "executive": ("executive", "department_head"),
}
DASHBOARD_ALERTS = 20
_ALERT_COLUMNS = (
    "alert_id, key, rule, rules_version, subject_type, subject, complaint_id, team, severity, title_en, "
    "title_zh, evidence::VARCHAR AS evidence, recipients, owner, due_at, status, raised_at, raised_by, "
    "acknowledged_at, acknowledged_by, acknowledge_note, resolved_at, resolved_by, resolution_reason, "
    "resolved_automatically, version")
_SEVERITY_RANK = "CASE severity " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in SEVERITY_RANK.items()) + " ELSE 9 END"


def _alert_rows(db: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = Query(sql, params).rows(db)
    for row in rows:
        row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else {}
        row["recipients"] = row["recipients"] or []
    return rows


def alerts(db: duckdb.DuckDBPyConnection, f: AlertFilters) -> tuple[list[dict[str, Any]], int]:
    """The alerts the filters pick (at most `f.limit`: active ones critical first, then
    newest first; resolved ones newest first) and how many match."""
    conditions = [f"status IN {ACTIVE!r}" if f.status == "active" else "status = $status"]
    for name in ("rule", "severity", "team", "subject_type", "subject", "complaint_id"):
        if getattr(f, name) is not None:
            conditions.append(f"{name} = ${name}")
    where = " AND ".join(conditions)
    params = f.model_dump()
    items = _alert_rows(db, f"""
        SELECT {_ALERT_COLUMNS} FROM {ALERTS} WHERE {where}
        ORDER BY CASE WHEN status IN {ACTIVE!r} THEN {_SEVERITY_RANK} ELSE 0 END,
                 raised_at DESC, alert_id LIMIT $limit""", params)
    total = Query(f"SELECT count(*) AS n FROM {ALERTS} WHERE {where}", params).rows(db)[0]["n"]
    return items, total


def alert(db: duckdb.DuckDBPyConnection, alert_id: UUID) -> dict[str, Any] | None:
    """One alert, with its events in order (from the event log), or None."""
    found = _alert_rows(db, f"SELECT {_ALERT_COLUMNS} FROM {ALERTS} WHERE alert_id = $id", {"id": alert_id})
    if not found:
        return None
    history = Query("""
        SELECT complaint_version AS version, event_type, occurred_at, recorded_at, actor, command_id,
               correlation_id, position, payload::VARCHAR AS payload
        FROM events WHERE complaint_id = $id AND event_type LIKE 'Alert%' ORDER BY complaint_version""",
        {"id": alert_id}).rows(db)
    return found[0] | {"history": [event | {"payload": json.loads(event["payload"])} for event in history]}


def open_alerts(r: Request, dashboard: str, limit: int = DASHBOARD_ALERTS) -> list[dict[str, Any]]:
    """The active alerts for the dashboard's audience, newest first: as they stand, or as
    they stood at `as_of` (from their raise, acknowledgement and resolution instants);
    of the `team` filter's team when one is set. Empty without an alerts read model."""
    if not has_table(r.db, ALERTS):
        return []
    params: dict[str, Any] = {"audience": list(AUDIENCES[dashboard]), "team": r.filters.team, "limit": limit}
    team = " AND team = $team" if r.filters.team is not None else ""
    if r.filters.as_of is None:
        return _alert_rows(r.db, f"""
            SELECT {_ALERT_COLUMNS} FROM {ALERTS}
            WHERE status IN {ACTIVE!r} AND list_has_any(recipients, $audience){team}
            ORDER BY raised_at DESC, alert_id LIMIT $limit""", params)
    # As of an instant: raised by then and not resolved yet; acknowledged if it was by then.
    rows = _alert_rows(r.db, f"""
        SELECT {_ALERT_COLUMNS} FROM {ALERTS}
        WHERE raised_at <= $at AND (resolved_at IS NULL OR resolved_at > $at)
          AND list_has_any(recipients, $audience){team}
        ORDER BY raised_at DESC, alert_id LIMIT $limit""", params | {"at": r.now})
    for row in rows:
        acknowledged = row["acknowledged_at"] is not None and row["acknowledged_at"] <= r.now
        row.update(status="acknowledged" if acknowledged else "open", version=2 if acknowledged else 1,
                   resolved_at=None, resolved_by=None, resolution_reason=None, resolved_automatically=None)
        if not acknowledged:
            row.update(acknowledged_at=None, acknowledged_by=None, acknowledge_note=None)
    return rows


# ------------------------------------------------------------------ read models
SLA_COLUMNS = ("complaint_id", "metric", "cycle", "registered_at", "team", "agent", "category", "product",
               "channel", "severity", "priority", "tier", "status", "due_at", "stopped_at",
               "stop_reason", "paused_since", "business_seconds")


def sla_rows(r: Request) -> Query:
    """The SLA clocks of each complaint registered in the period, judged at `now`."""
    return Query(f"""
        SELECT complaint_id, metric, cycle, registered_at, team, agent, category, product, channel,
               severity, priority, tier, status_now AS status, due_at, stopped_at, stop_reason,
               paused_since, business_us_now / 1e6 AS business_seconds
        FROM ({queries.clocks_now_sql(r.view)}) k
        WHERE registered_at >= $start AND registered_at < $end AND {r.where()}""",
        r.params())


WORKLOAD_COLUMNS = ("team", "agent", "open", "waiting", "overdue", "resolved_today", "resolved_7d")


def workload_rows(r: Request) -> list[dict[str, Any]]:
    return agent_load(r)


TREND_COLUMNS = ("bucket", "key", "count")


def trend_rows(r: Request, dimension: Dimension, granularity: Granularity) -> list[dict[str, Any]]:
    """New complaints per bucket and value of a dimension, registered in the period."""
    if dimension == "status":  # not a trend dimension of the read model: from the facts
        return Query(f"""
            SELECT {_day('registered_at', granularity)} AS bucket, status AS key, count(*) AS count
            FROM {r.facts()} WHERE registered_at >= $start AND registered_at < $end
            GROUP BY ALL""", r.params()).rows(r.db)
    if dimension.startswith(FIELD_PREFIX):
        joined, key, params = _grouping(r, "c", dimension)
        where, filter_params = r.in_window().where("c", t=r.t)
        return [{"bucket": row["period"], "key": row["key"], "count": row["count"]} for row in r.view.by_period(
            "c.registered_at", granularity, f"{r.t(FACTS)} c {joined} WHERE {where}", {"key": key},
            {"n": "count(*)"}, {"count": "CAST(sum(n) AS BIGINT)"}, [*params, *filter_params])]
    return [{"bucket": row["period"], "key": None if row["key"] is None else str(row["key"]), "count": row["count"]}
            for row in queries.volume(r.view, granularity, dimension, r.in_window())]


def _by_field(r: Request, alias: str, field: str) -> tuple[str, str, list[Any]]:
    """(LEFT JOIN of a custom field's values onto `alias`, the key expression, its parameters):
    a complaint without a value has the key NULL; one with several (a multiple choice)
    counts once under each."""
    joined = (f"LEFT JOIN (SELECT complaint_id, {VALUE_KEY} AS value FROM {r.t(FIELDS)} WHERE field = ?) fv"
              f" ON fv.complaint_id = {alias}.complaint_id")
    return joined, "fv.value", [field]


def _grouping(r: Request, alias: str, by: Dimension | None) -> tuple[str, str, list[Any]]:
    """(join, key expression, parameters) of a grouping: none, a complaint dimension, or a custom field."""
    if by is None:
        return "", "NULL::VARCHAR", []
    if by.startswith(FIELD_PREFIX):
        return _by_field(r, alias, by.removeprefix(FIELD_PREFIX))
    return "", f"{alias}.{by}", []


def field_kinds(r: Request, field: str) -> dict[str, int]:
    """How many of a custom field's current values are text, numbers, true/false."""
    return Query(f"""SELECT count(value_text) AS text, count(value_number) AS number, count(value_bool) AS boolean
        FROM {r.t(FIELDS)} WHERE field = $field""", {"field": field}).rows(r.db)[0]


def rates(r: Request, field: str, by: Dimension | None) -> list[dict[str, Any]]:
    """Per group of complaints registered in the period: those with a true/false value in
    the custom field (`count`), those with true (`true_count`) and the `rate`."""
    joined, key, key_params = _grouping(r, "c", by)
    where, params = r.in_window().where("c", t=r.t)
    # HAVING: without a grouping, no rows would still make one group (of count 0, rate NULL).
    return r.view.rows(f"""
        SELECT {key} AS key, count(*) AS count, count(*) FILTER (WHERE b.value_bool) AS true_count,
               CAST(true_count AS DOUBLE) / count AS rate
        FROM {r.t(FACTS)} c
        JOIN (SELECT complaint_id, value_bool FROM {r.t(FIELDS)} WHERE field = ? AND value_bool IS NOT NULL) b
            ON b.complaint_id = c.complaint_id
        {joined}
        WHERE {where} GROUP BY ALL HAVING count(*) > 0 ORDER BY key NULLS FIRST""", [field, *key_params, *params])


def assignment_times(r: Request, granularity: Granularity) -> list[dict[str, Any]]:
    """Time to first assignment (registration to the first Assigned: the CFPB's "sent to
    company"), per bucket of registration and team (the current one), of the complaints
    registered in the period that have been assigned: count, p50 and p90 in minutes."""
    return Query(f"""
        SELECT {_day('registered_at', granularity)} AS bucket, team, count(*) AS count,
               quantile_cont(minutes, 0.5) AS p50_minutes, quantile_cont(minutes, 0.9) AS p90_minutes
        FROM (SELECT registered_at, team, (epoch_us(first_assigned_at) - epoch_us(registered_at)) / 60e6 AS minutes
              FROM {r.facts()} WHERE registered_at >= $start AND registered_at < $end
                AND first_assigned_at IS NOT NULL)
        GROUP BY ALL ORDER BY bucket, team NULLS FIRST""", r.params()).rows(r.db)


def tag_trends(r: Request, limit: int) -> dict[str, Any]:
    """The tags most often added this (local) week, up to `now`, against the whole week
    before: complaints carrying the tag now, by the week it was (last) added."""
    this_week = r.view.today() - timedelta(days=r.view.today().weekday())
    last_week = this_week - timedelta(days=7)
    zone = r.view.zone
    starts = [datetime.combine(day, datetime.min.time(), zone) for day in (last_week, this_week)]
    where, params = r.dims().where("c", t=r.t)
    items = r.view.rows(f"""
        SELECT g.tag,
               count(*) FILTER (WHERE g.added_at >= ?) AS this_week,
               count(*) FILTER (WHERE g.added_at < ?) AS last_week,
               this_week - last_week AS change,
               CAST(change AS DOUBLE) / nullif(last_week, 0) AS growth
        FROM {r.t(TAGS)} g JOIN {r.t(FACTS)} c ON c.complaint_id = g.complaint_id
        WHERE g.added_at >= ? AND g.added_at <= ? AND {where}
        GROUP BY g.tag ORDER BY this_week DESC, change DESC, g.tag LIMIT ?""",
        [starts[1], starts[1], starts[0], r.now, *params, limit])
    return {"this_week": this_week, "last_week": last_week, "as_of": r.now, "items": items}


def sort_page(rows: list[dict[str, Any]], sort: str, order: str, limit: int, offset: int,
              key: tuple[str, ...]) -> list[dict[str, Any]]:
    """A page of rows in a stable order: `sort` (None last), ties by the row's key ascending."""
    def keyed(row: dict[str, Any]) -> list[tuple[int, Any]]:
        return [(1, "") if row[k] is None else (0, row[k]) for k in key]

    by_key = sorted(rows, key=keyed)
    present = [row for row in by_key if row[sort] is not None]
    present.sort(key=lambda row: row[sort], reverse=order == "desc")  # stable: ties keep key order
    return (present + [row for row in by_key if row[sort] is None])[offset:offset + limit]


def paged(query: Query, sort: str, order: str, limit: int, offset: int, key: tuple[str, ...]) -> tuple[Query, Query]:
    """(page of rows, total count) of a query, in a stable order (sort, then the key)."""
    keys = ", ".join([f"{sort} {order} NULLS LAST", *(f"{k} ASC NULLS LAST" for k in key if k != sort)])
    page = Query(f"SELECT * FROM ({query.sql}) ORDER BY {keys} LIMIT $limit OFFSET $offset",
                 query.params | {"limit": limit, "offset": offset})
    return page, Query(f"SELECT count(*) AS total FROM ({query.sql})", query.params)


def complaints_rows(r: Request) -> Query:
    """The per-complaint facts registered in the period (for export)."""
    return Query(f"SELECT * FROM {r.facts()} WHERE registered_at >= $start AND registered_at < $end"
                 " ORDER BY registered_at, complaint_id", r.params())


# A registration's personal fields masked, and no event's sealed ones: an export holds no
# personal data, not even sealed (docs/privacy.md).
MASKED_PERSONAL = json.dumps({"customer_personal": {"name": MASK, "contact": MASK}, "sealed": None})
NO_SEALED = json.dumps({"sealed": None})


def events_rows(r: Request) -> Query:
    """The event log in the period (for export), as of `now`, of the complaints the filters
    pick; no personal data (masked, free text as stored: masked)."""
    payload = ("CASE WHEN json_type(payload, '$.customer_personal') = 'OBJECT'"
               f" THEN json_merge_patch(payload, '{MASKED_PERSONAL}')::VARCHAR"
               f" ELSE json_merge_patch(payload, '{NO_SEALED}')::VARCHAR END")
    # The dimension filters (a team lead's team among them) pick the complaints.
    narrowed = f" AND complaint_id IN (SELECT complaint_id::UUID FROM {r.facts()})" if r.where() != "true" else ""
    return Query(
        "SELECT position, complaint_id::VARCHAR AS complaint_id, complaint_version, event_type,"
        " event_version, occurred_at, recorded_at, actor, command_id, correlation_id,"
        f" {payload} AS payload FROM events"
        f" WHERE occurred_at >= $start AND occurred_at < $end AND occurred_at <= $now{narrowed} ORDER BY position",
        r.params())


__all__ = ["Query", "Request", "request"]
