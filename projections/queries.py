"""The dashboard figures, as functions of a DuckDB connection (or a `View` of one),
filters, `now` and `as_of`.

The public API (`__all__`) is what other packages use; the read API, in particular,
reads the read models through these functions and `View` only. Every figure takes as its
first argument either a `View` (several figures of one request share it) or a DuckDB
connection, with these keywords to build the view from (see `ViewOptions`):
- `now`: the instant "open", "today", "warning" and "breached" are judged at (default:
  the `as_of` instant when one is given, else the wall clock);
- `as_of`: None for the live read models, or a past point (an event position, int, or
  an instant, an aware datetime compared with `occurred_at`). The read models are then
  recomputed from the `events` table cut at that point into TEMP tables of a separate
  cursor, so the database is never written (a read-only connection is enough) and other
  readers are never blocked;
- `tz`: the time zone of days, weeks and months (default Asia/Shanghai; the composition
  root passes the configured one);
- `policy`: the SLA policy (default the packaged one; pass the configured one).
and `filters`: dimensions of the complaint (team, agent, category, product, channel,
region, severity, tier), custom field values and tags it has now, and a registration window.
Definitions of every figure: docs/read-models.md. `tests/oracle.py` computes each of
them again, the slow obvious way, and the tests demand equality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypedDict, Unpack
from zoneinfo import ZoneInfo

import duckdb

from aggregates.sla import SlaPolicy
from projections import models
from projections.calendar_table import cum_us, to_us
from projections.complaint_facts import FACTS
from projections.facts import Scope
from projections.fields import matching_sql
from projections.models import TABLE_MODEL
from projections.sla import CLOCK_EVENTS, CLOCKS, RUNNING, clock_life_sql, default_policy
from projections.trends import COMPLAINTS as TREND_COMPLAINTS, RATING_DIMENSIONS, RATINGS
from projections.workload import (
    COMPLAINTS as WORK_COMPLAINTS, HANDOVERS, INTERVALS, OPEN as WORK_OPEN, RESOLUTION_DIMENSIONS, RESOLUTIONS,
)

__all__ = [
    # the read-model tables a caller may also read itself, through `View.t`
    "FACTS", "RUNNING", "WORK_OPEN",
    # views and figures
    "AsOf", "DEFAULT_TIMEZONE", "DIMENSIONS", "Filters", "NO_FILTERS", "PERIODS", "SLA_GROUPINGS",
    "Source", "VOLUME_GROUPINGS", "View", "ViewOptions", "WOW_GROUPINGS", "agent_load", "backlog",
    "clocks_now_sql", "dashboard", "figures", "handovers", "open_complaints", "rates", "ratings",
    "sla_at_risk", "sla_attainment", "sla_clock_events", "sla_clocks", "today", "top_categories",
    "view", "volume", "week_over_week",
]

AsOf = int | datetime | None
DIMENSIONS = ("team", "agent", "category", "product", "channel", "region", "severity", "tier", "priority")
PERIODS = ("day", "week", "month")
# (upper bound in hours, label): age of an open complaint since registration
AGE_BUCKETS = ((1, "<1h"), (4, "1-4h"), (24, "4-24h"), (72, "1-3d"), (168, "3-7d"))
OLDEST_BUCKET = ">7d"
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
REPEAT_WINDOW_US = 7 * DAY_US
THROUGHPUT_DAYS = 7
TOP_CATEGORIES = 5
MICRO = "CAST(1000000 AS DOUBLE)"
# Local days, weeks and months are found per 15-minute bucket of UTC time rather than per
# row (a time zone conversion per row costs ~130 ns; every UTC offset in use today is a
# multiple of 15 minutes, so a bucket lies inside one local day). Each bucket is checked:
# when its start and end fall in different periods or under different offsets, the figure
# is computed again row by row.
BUCKET_US = 900_000_000
DEFAULT_TIMEZONE = "Asia/Shanghai"  # of days, weeks and months, when none is given


@dataclass(frozen=True)
class Filters:
    """Which complaints a figure counts. Dimensions are the complaint's current ones."""

    team: str | None = None
    agent: str | None = None
    category: str | None = None
    product: str | None = None
    channel: str | None = None
    region: str | None = None
    severity: str | None = None
    tier: str | None = None
    registered_from: datetime | None = None  # inclusive
    registered_to: datetime | None = None  # exclusive
    # (custom field, value as text) pairs and tags the complaint has now, all of them
    field_values: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()

    def where(self, alias: str, columns: dict[str, str] | None = None, *,
              t: Callable[[str], str]) -> tuple[str, list[Any]]:
        """SQL conditions on `alias` and their parameters; `columns` renames a dimension
        (or `registered_at`) to the column that holds it in that table; `t` names the
        custom field and tag tables in the view (`View.t`)."""
        columns = columns or {}
        parts, params = ["true"], []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in ("field_values", "tags"):
                continue
            if f.name == "registered_from":
                parts.append(f"{alias}.{columns.get('registered_at', 'registered_at')} >= ?")
            elif f.name == "registered_to":
                parts.append(f"{alias}.{columns.get('registered_at', 'registered_at')} < ?")
            else:
                parts.append(f"{alias}.{columns.get(f.name, f.name)} = ?")
            params.append(value)
        held, held_params = matching_sql(t, self.field_values, self.tags, lambda _: "?", f"{alias}.complaint_id")
        return " AND ".join([*parts, *held]), params + held_params


NO_FILTERS = Filters()

class View:
    """The tables figures read: the live ones, or TEMP ones built as of a past point.

    Never writes to the database: an as-of view builds everything it needs, calendar
    windows included, in TEMP tables of a cursor of its own (`tests/test_reads_never_write.py`).
    """

    def __init__(
        self,
        db: duckdb.DuckDBPyConnection,
        as_of: AsOf = None,
        now: datetime | None = None,
        tz: str | None = None,
        policy: SlaPolicy | None = None,
        prefix: str = "",
    ) -> None:
        self.prefix = prefix  # live tables under other names (the what-if file's actual_*)
        self.tz = tz or DEFAULT_TIMEZONE
        self.policy = policy or default_policy()
        self.as_of = as_of
        self.scope: Scope | None = None
        self.built: set[str] = set()
        if as_of is None:
            self.db = db
        else:
            # A cursor is a connection of its own: its TEMP tables are private to it.
            self.db = db.cursor()
            self.scope = Scope.as_of(self._cut(as_of))
        self.now = now or self._default_now()
        self.now_us = to_us(self.now)
        self.zone = ZoneInfo(self.tz)

    @staticmethod
    def _cut(as_of: int | datetime) -> str:
        if isinstance(as_of, datetime):
            if as_of.tzinfo is None:
                raise ValueError("as_of must be an aware datetime")
            return f"(SELECT * FROM events WHERE occurred_at <= '{as_of.isoformat()}'::TIMESTAMPTZ)"
        return f"(SELECT * FROM events WHERE position <= {int(as_of)})"

    def _default_now(self) -> datetime:
        if isinstance(self.as_of, datetime):
            return self.as_of
        if self.as_of is not None:
            found = self.db.execute(
                "SELECT max(occurred_at) FROM events WHERE position <= ?", [int(self.as_of)]
            ).fetchone()
            if found and found[0] is not None:
                return found[0].astimezone(UTC)
        return datetime.now(UTC)

    def close(self) -> None:
        if self.scope is not None:
            self.db.close()

    def t(self, table: str) -> str:
        """The physical name of a read-model table in this view (building it if as-of)."""
        if self.scope is None:
            return f"{self.prefix}{table}"
        model = TABLE_MODEL[table]
        if model not in self.built:
            projector = models.make([model], self.policy)[0]
            projector.create_schema(self.db, self.scope)
            if model == "sla":
                # The calendar windows the cut needs: the live table's when it has them,
                # else TEMP ones of this view's cursor (never a write to the database).
                projector.prepare(self.db, self.scope.events, private=True)
            projector.build(self.db, self.scope)
            self.built.add(model)
        return self.scope.table(table)

    # -- local time ---------------------------------------------------------------------
    def local_midnight(self, instant: datetime) -> datetime:
        day = instant.astimezone(self.zone).date()
        return datetime.combine(day, time(0), self.zone).astimezone(UTC)

    def today(self) -> date:
        return self.now.astimezone(self.zone).date()

    def period(self, column: str, period: str) -> str:
        if period not in PERIODS:
            raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
        return f"CAST(date_trunc('{period}', timezone('{self.tz}', {column})) AS DATE)"

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _local(self, instant: str) -> str:
        return f"timezone('{self.tz}', {instant})"

    def by_period(self, column: str, period: str, source: str, keys: dict[str, str],
                  partials: dict[str, str], finals: dict[str, str], params: list[Any] | None = None,
                  order_by: str = "",
                  ) -> list[dict[str, Any]]:
        """Rows of `source` aggregated per local `period` of `column` and `keys`.

        `keys`: output name -> expression over `source`; `partials`: name -> aggregate
        over `source` (per bucket); `finals`: output name -> aggregate of the partials per
        period (e.g. `count(*) AS n`, then `sum(n)`). Returns rows of `period`, the keys and
        the finals, in `order_by` (SQL, e.g. "ORDER BY ALL").
        Same result as grouping by `self.period(column, period)` row by row (which it
        falls back to when a bucket straddles a period or an offset change).
        """
        if period not in PERIODS:
            raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
        key_cols = "".join(f", {expr} AS {name}" for name, expr in keys.items())
        key_names = "".join(f", {name}" for name in keys)
        inner = ", ".join(f"{agg} AS {name}" for name, agg in partials.items())
        outer = ", ".join(f"{agg} AS {name}" for name, agg in finals.items())
        start = f"make_timestamptz(b * {BUCKET_US})"
        end = f"make_timestamptz(b * {BUCKET_US} + {BUCKET_US - 1})"
        fast = f"""
            WITH b AS (
                SELECT epoch_us({column}) // {BUCKET_US} AS b{key_cols}, {inner}
                FROM {source} GROUP BY ALL
            ), m AS (
                SELECT b, CAST(date_trunc('{period}', ls) AS DATE) AS period,
                    b > 0 AND date_trunc('{period}', ls) = date_trunc('{period}', le)
                    AND epoch_us(ls) - b * {BUCKET_US} = epoch_us(le) - (b * {BUCKET_US} + {BUCKET_US - 1})
                    AS exact
                FROM (SELECT b, {self._local(start)} AS ls, {self._local(end)} AS le
                      FROM (SELECT DISTINCT b FROM b))
            )
            SELECT m.period{key_names}, {outer}, bool_and(m.exact) AS exact
            FROM b JOIN m USING (b) GROUP BY ALL {order_by}"""
        found = self.rows(fast, params)
        if not all(row["exact"] for row in found):
            return self.rows(
                f"""WITH b AS (
                    SELECT {self.period(column, period)} AS period{key_cols}, {inner}
                    FROM {source} GROUP BY ALL
                )
                SELECT period{key_names}, {outer} FROM b GROUP BY ALL {order_by}""",
                params,
            )
        for row in found:
            del row["exact"]
        return found


@contextmanager
def view(
    db: duckdb.DuckDBPyConnection,
    as_of: AsOf = None,
    now: datetime | None = None,
    tz: str | None = None,
    policy: SlaPolicy | None = None,
    prefix: str = "",
) -> Iterator[View]:
    v = View(db, as_of, now, tz, policy, prefix)
    try:
        yield v
    finally:
        v.close()


class ViewOptions(TypedDict, total=False):
    """What a figure called with a connection builds its view with (see `View`)."""

    now: datetime | None
    as_of: AsOf
    tz: str | None
    policy: SlaPolicy | None


# A figure reads a View (several figures of one request share it), or a connection: a
# view of it is then opened, with the `ViewOptions` given, for that figure alone.
Source = View | duckdb.DuckDBPyConnection


@contextmanager
def _over(source: Source, options: ViewOptions) -> Iterator[View]:
    if isinstance(source, View):
        given = sorted(k for k, value in options.items() if value is not None)
        if given:
            raise TypeError(f"a View already fixes now, as_of, tz and policy: got {', '.join(given)}")
        yield source
        return
    with view(source, **options) as v:
        yield v


def _key(v: View, by: str | None, alias: str = "c") -> str:
    if by is None:
        return "NULL::VARCHAR"
    if by in PERIODS:
        return v.period(f"{alias}.registered_at", by)
    if by not in DIMENSIONS:
        raise ValueError(f"by must be one of {DIMENSIONS + PERIODS}, got {by!r}")
    return f"{alias}.{by}"


# ---------------------------------------------------------------------------------- SLA
def clocks_now_sql(v: View) -> str:
    """Clocks with their status and business time as of `now` (running clocks move on)."""
    values = ", ".join(
        f"('{name}', {cum_us(cal, v.now)})" for name, cal in v.policy.calendars.items()
    )
    warn_us = v.policy.warning_before_minutes * 60_000_000
    now = v.now_us
    return f"""
    SELECT c.*,
        CASE
            WHEN c.stopped_at IS NOT NULL THEN c.status
            WHEN c.due_at IS NOT NULL
                 AND coalesce(epoch_us(c.paused_since), {now}) > epoch_us(c.due_at) THEN 'breached'
            WHEN c.paused_since IS NOT NULL THEN 'paused'
            WHEN c.due_at IS NOT NULL AND {now} >= epoch_us(c.due_at) - {warn_us} THEN 'warning'
            ELSE 'activated'
        END AS status_now,
        CASE WHEN c.stopped_at IS NOT NULL THEN c.business_us
             ELSE n.cum_now_us - c.start_cum_us - c.paused_business_us
                  - CASE WHEN c.paused_since IS NOT NULL
                         THEN n.cum_now_us - c.paused_since_cum_us ELSE 0 END
        END AS business_us_now,
        c.paused_us + CASE WHEN c.stopped_at IS NULL AND c.paused_since IS NOT NULL
                           THEN {now} - epoch_us(c.paused_since) ELSE 0 END AS paused_us_now,
        c.paused_business_us + CASE WHEN c.stopped_at IS NULL AND c.paused_since IS NOT NULL
                           THEN n.cum_now_us - c.paused_since_cum_us ELSE 0 END
            AS paused_business_us_now
    FROM {v.t(CLOCKS)} c
    LEFT JOIN (SELECT * FROM (VALUES {values}) t(calendar, cum_now_us)) n
        ON n.calendar = c.sla_calendar
    """


def sla_clocks(
    source: Source, filters: Filters = NO_FILTERS, complaint_id: str | None = None,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    with _over(source, options) as v:
        where, params = filters.where("k", t=v.t)
        if complaint_id is not None:
            where, params = f"{where} AND k.complaint_id = ?", [*params, complaint_id]
        return v.rows(
            f"""SELECT complaint_id, metric, cycle, team, agent, severity, category, channel,
                started_at, due_at, stopped_at, stop_reason, status_now AS status, paused_since,
                business_us_now / {MICRO} AS business_seconds,
                paused_us_now / {MICRO} AS paused_seconds,
                paused_business_us_now / {MICRO} AS paused_business_seconds
            FROM ({clocks_now_sql(v)}) k WHERE {where}
            ORDER BY complaint_id, metric, cycle""",
            params,
        )


def sla_attainment(
    source: Source, by: str | None = None, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    """Per group and metric: clocks decided (met or breached), met, breached, and the
    business time of those stopped by a response or resolution (mean, p90).

    A stopped clock's status never changes, so it is read as stored; only the running
    clocks (`sla_running_clocks`, a few percent) are judged at `now`, and only a breach
    counts among them."""
    with _over(source, options) as v:
        where, params = filters.where("k", t=v.t)
        breached_now = (f"k.due_at IS NOT NULL AND coalesce(epoch_us(k.paused_since), {v.now_us})"
                        " > epoch_us(k.due_at)")
        done = "stop_reason IN ('responded', 'resolved') AND business_us IS NOT NULL"
        return v.rows(
            f"""WITH k AS (
                SELECT {_key(v, by, 'k')} AS key, k.metric, k.status, k.due_at, k.stop_reason, k.business_us
                FROM {v.t(CLOCKS)} k WHERE k.stopped_at IS NOT NULL AND {where}
                UNION ALL
                SELECT {_key(v, by, 'k')}, k.metric, CASE WHEN {breached_now} THEN 'breached' END, k.due_at,
                    NULL, NULL
                FROM {v.t(RUNNING)} k WHERE {where}
            )
            SELECT key, metric,
                count(*) FILTER (WHERE status IN ('fulfilled', 'breached') AND due_at IS NOT NULL)
                    AS counted,
                count(*) FILTER (WHERE status = 'fulfilled' AND due_at IS NOT NULL) AS met,
                count(*) FILTER (WHERE status = 'breached') AS breached,
                CAST(met AS DOUBLE) / nullif(counted, 0) AS attainment,
                count(*) FILTER (WHERE {done}) AS timed,
                CAST(sum(business_us) FILTER (WHERE {done}) AS DOUBLE) / nullif(timed, 0) / {MICRO}
                    AS avg_business_seconds,
                quantile_disc(business_us, 0.9) FILTER (WHERE {done}) / {MICRO}
                    AS p90_business_seconds
            FROM k GROUP BY ALL ORDER BY key NULLS FIRST, metric""",
            [*params, *params],
        )


def sla_at_risk(
    source: Source, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    with _over(source, options) as v:
        where, params = filters.where("k", t=v.t)
        return v.rows(
            f"""SELECT complaint_id, metric, status_now AS status, due_at, team, agent, severity
            FROM ({clocks_now_sql(v)}) k
            WHERE stopped_at IS NULL AND status_now IN ('warning', 'breached') AND {where}
            ORDER BY due_at, complaint_id, metric""",
            params,
        )


def sla_clock_events(
    source: Source, filters: Filters = NO_FILTERS, complaint_id: str | None = None,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    """Each clock's life up to `now`: activated, paused, resumed, warned, breached,
    fulfilled, cancelled (a running clock's warning and breach count once they happen)."""
    with _over(source, options) as v:
        where, params = filters.where("k", t=v.t)
        if complaint_id is not None:  # DuckDB pushes this filter into both sides of the union
            where, params = f"{where} AND e.complaint_id = ?", [*params, complaint_id]
        return v.rows(
            f"""SELECT e.complaint_id, e.metric, e.cycle, e.event, e.occurred_at, k.due_at, k.team,
                k.agent, k.severity
            FROM ({clock_life_sql(v.t(CLOCKS), v.t(CLOCK_EVENTS))}) e
            JOIN {v.t(CLOCKS)} k USING (complaint_id, metric, cycle)
            WHERE e.occurred_at <= ? AND {where}
            ORDER BY e.occurred_at, e.complaint_id, e.metric, e.cycle, e.event""",
            [v.now, *params],
        )


# ------------------------------------------------------------------------------ workload
def _age_bucket(column: str) -> str:
    cases = " ".join(f"WHEN {column} < {hours * HOUR_US} THEN '{label}'" for hours, label in AGE_BUCKETS)
    return f"CASE {cases} ELSE '{OLDEST_BUCKET}' END"


def open_complaints(
    source: Source, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        age = f"({v.now_us} - epoch_us(c.registered_at))"
        return v.rows(
            f"""SELECT c.team, c.agent, c.status, {_age_bucket(age)} AS age_bucket, count(*) AS count
            FROM {v.t(WORK_OPEN)} c WHERE {where}
            GROUP BY ALL ORDER BY ALL NULLS FIRST""",
            params,
        )


def today(
    source: Source, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> dict[str, Any]:
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        # Resolutions carry their complaint's current dimensions: no join.
        r_where, r_params = filters.where("r", RESOLUTION_DIMENSIONS, t=v.t)
        start = v.local_midnight(v.now)
        row = v.rows(
            f"""SELECT
                (SELECT count(*) FROM {v.t(WORK_COMPLAINTS)} c
                 WHERE c.registered_at >= ? AND c.registered_at <= ? AND {where}) AS new,
                (SELECT count(*) FROM {v.t(WORK_OPEN)} c WHERE {where}) AS pending,
                (SELECT count(DISTINCT r.complaint_id) FROM {v.t(RESOLUTIONS)} r
                 WHERE r.resolved_at >= ? AND r.resolved_at <= ? AND {r_where}) AS resolved""",
            [start, v.now, *params, *params, start, v.now, *r_params],
        )[0]
        return {"day": v.today(), **row}


def agent_load(
    source: Source, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        r_where, r_params = filters.where("r", RESOLUTION_DIMENSIONS, t=v.t)
        start = v.local_midnight(v.now)
        since = v.now - timedelta(days=THROUGHPUT_DAYS)
        return v.rows(
            f"""WITH l AS (
                SELECT c.team, c.agent, count(*) AS open FROM {v.t(WORK_OPEN)} c
                WHERE c.team IS NOT NULL AND {where} GROUP BY ALL
            ), r AS (
                SELECT r.team, r.agent,
                    count(*) FILTER (WHERE r.resolved_at >= ? AND r.resolved_at <= ?) AS resolved_today,
                    count(*) FILTER (WHERE r.resolved_at >= ? AND r.resolved_at <= ?) AS resolved_7d
                -- Only resolutions inside either window can count (groups with no count are
                -- dropped below anyway); they carry the complaint's current dimensions: no join.
                FROM {v.t(RESOLUTIONS)} r
                WHERE r.resolved_at >= ? AND r.resolved_at <= ? AND {r_where} GROUP BY ALL
            )
            SELECT coalesce(l.team, r.team) AS team, coalesce(l.agent, r.agent) AS agent,
                coalesce(l.open, 0) AS open, coalesce(r.resolved_today, 0) AS resolved_today,
                coalesce(r.resolved_7d, 0) AS resolved_7d
            FROM l FULL JOIN r ON l.team = r.team AND l.agent IS NOT DISTINCT FROM r.agent
            WHERE coalesce(l.open, 0) > 0 OR coalesce(r.resolved_7d, 0) > 0
            ORDER BY team, agent NULLS FIRST""",
            [*params, start, v.now, since, v.now, min(start, since), v.now, *r_params],
        )


def handovers(
    source: Source, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        return v.rows(
            f"""SELECT h.from_team, h.to_team, count(*) AS count
            FROM {v.t(HANDOVERS)} h JOIN {v.t(WORK_COMPLAINTS)} c USING (complaint_id)
            WHERE {where} GROUP BY ALL ORDER BY ALL""",
            params,
        )


def backlog(
    source: Source, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    """Open complaints at the end of each local day, first registration day to today."""
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        tz = v.tz
        return v.rows(
            f"""WITH i AS (
                SELECT CAST(timezone('{tz}', i.opened_at) AS DATE) AS od,
                       CAST(timezone('{tz}', i.closed_at) AS DATE) AS cd
                FROM {v.t(INTERVALS)} i JOIN {v.t(WORK_COMPLAINTS)} c USING (complaint_id)
                WHERE {where}
            ), d AS (
                SELECT od AS day, 1 AS delta FROM i
                UNION ALL SELECT cd, -1 FROM i WHERE cd IS NOT NULL
            ), days AS (
                SELECT CAST(generate_series AS DATE) AS day
                FROM generate_series(CAST((SELECT min(od) FROM i) AS TIMESTAMP), CAST(? AS TIMESTAMP),
                                     INTERVAL 1 DAY)
            )
            SELECT days.day, CAST(sum(coalesce(x.delta, 0)) OVER (ORDER BY days.day) AS BIGINT) AS open
            FROM days LEFT JOIN (SELECT day, sum(delta) AS delta FROM d GROUP BY day) x USING (day)
            ORDER BY days.day""",
            [*params, v.today()],
        )


# -------------------------------------------------------------------------------- trends
def volume(
    source: Source, period: str = "day", by: str | None = None, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        return v.by_period("c.registered_at", period, f"{v.t(TREND_COMPLAINTS)} c WHERE {where}",
                           {"key": _key(v, by)}, {"n": "count(*)"}, {"count": "CAST(sum(n) AS BIGINT)"},
                           params, "ORDER BY ALL NULLS FIRST")


def week_over_week(
    source: Source, by: str | None = None, filters: Filters = NO_FILTERS,
        week: date | None = None,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    """Weekly volume with the previous week's and the growth, over a gap-free week grid
    (from the first week with a complaint to the last, for every key that has one).

    `week`: only that week's rows (the same rows the full grid has for it), computed from
    that week and the one before instead of every week.
    """
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        table = f"{v.t(TREND_COMPLAINTS)} c"
        key = _key(v, by)
        if week is None:
            counts = {(row["period"], row["key"]): row["n"] for row in v.by_period(
                "c.registered_at", "week", f"{table} WHERE {where}", {"key": key}, {"n": "count(*)"},
                {"n": "CAST(sum(n) AS BIGINT)"}, params)}
            if not counts:
                return []
            first, last = min(w for w, _ in counts), max(w for w, _ in counts)
            keys = {k for _, k in counts}
            grid = [first + timedelta(days=7 * i) for i in range((last - first).days // 7 + 1)]
        else:
            found = v.rows(
                f"""SELECT {key} AS key, min(c.registered_at) AS lo, max(c.registered_at) AS hi
                FROM {table} WHERE {where} GROUP BY ALL""", params)
            if not found:
                return []
            bounds = v.rows(
                f"SELECT {v.period('min(lo)', 'week')} AS first, {v.period('max(hi)', 'week')} AS last"
                " FROM (SELECT unnest(?) AS lo, unnest(?) AS hi)",
                [[row["lo"] for row in found], [row["hi"] for row in found]])[0]
            first, last = bounds["first"], bounds["last"]
            if not first <= week <= last:
                return []
            keys = {row["key"] for row in found}
            grid = [w for w in (week - timedelta(days=7), week) if w >= first]
            # Two weeks of registrations, with a margin: the buckets decide the local weeks.
            lo = datetime.combine(grid[0] - timedelta(days=2), time(0), UTC)
            hi = datetime.combine(week + timedelta(days=9), time(0), UTC)
            counts = {(row["period"], row["key"]): row["n"] for row in v.by_period(
                "c.registered_at", "week",
                f"{table} WHERE c.registered_at >= ? AND c.registered_at < ? AND {where}",
                {"key": key}, {"n": "count(*)"}, {"n": "CAST(sum(n) AS BIGINT)"}, [lo, hi, *params])}
        out = []
        for k in keys:
            previous = None
            for w in grid:
                n = counts.get((w, k), 0)
                if week is None or w == week:
                    out.append({"week": w, "key": k, "count": n, "previous": previous,
                                "growth": (n - previous) / previous if previous else None})
                previous = n
        out.sort(key=lambda row: (row["key"] is not None, row["key"] or "", row["week"]))
        return out


def top_categories(
    source: Source, n: int = TOP_CATEGORIES, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    """The n largest categories and their share of all categorised complaints."""
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        return v.rows(
            f"""WITH k AS (
                SELECT c.category, count(*) AS count FROM {v.t(TREND_COMPLAINTS)} c
                WHERE c.category IS NOT NULL AND {where} GROUP BY ALL
            )
            SELECT category, count, CAST(count AS DOUBLE) / (SELECT sum(count) FROM k) AS share
            FROM k ORDER BY count DESC, category LIMIT {int(n)}""",
            params,
        )


RATING_PARTIALS = {
    "n": "count(*)", "csat_sum": "sum(r.csat)", "csat_n": "count(r.csat)", "nps_sum": "sum(r.nps)",
    "nps_n": "count(r.nps)", "promoters": "count(*) FILTER (WHERE r.nps >= 9)",
    "detractors": "count(*) FILTER (WHERE r.nps <= 6)", "effort_sum": "sum(r.effort)",
    "effort_n": "count(r.effort)",
}
RATING_FINALS = {
    "ratings": "CAST(sum(n) AS BIGINT)",
    "avg_csat": "CAST(sum(csat_sum) AS DOUBLE) / sum(csat_n)",
    "avg_nps": "CAST(sum(nps_sum) AS DOUBLE) / nullif(sum(nps_n), 0)",
    "nps_score": "CAST(100 AS DOUBLE) * (sum(promoters) - sum(detractors)) / nullif(sum(nps_n), 0)",
    "avg_effort": "CAST(sum(effort_sum) AS DOUBLE) / nullif(sum(effort_n), 0)",
}


def ratings(
    source: Source, period: str | None = None, filters: Filters = NO_FILTERS,
        verified_from: datetime | None = None,
    **options: Unpack[ViewOptions],
) -> list[dict[str, Any]]:
    """Ratings of the filtered complaints per period of verification (`verified_from`:
    only ratings verified at or after that instant)."""
    with _over(source, options) as v:
        # Each rating carries its complaint's current dimensions and registration time
        # (projections.trends.RATING_DIMENSIONS), so the filters need no join.
        where, params = filters.where("r", t=v.t)
        if verified_from is not None:
            where, params = f"{where} AND r.verified_at >= ?", [*params, verified_from]
        source = f"{v.t(RATINGS)} r WHERE {where}"
        if period is None:
            partials = ", ".join(f"{agg} AS {name}" for name, agg in RATING_PARTIALS.items())
            finals = ", ".join(f"{agg} AS {name}" for name, agg in RATING_FINALS.items())
            return v.rows(
                f"""SELECT period, {finals} FROM (
                    SELECT NULL::DATE AS period, {partials} FROM {source} GROUP BY ALL HAVING count(*) > 0
                ) GROUP BY period""", params)
        return v.by_period("r.verified_at", period, source, {}, RATING_PARTIALS, RATING_FINALS, params,
                           "ORDER BY ALL")


def rates(
    source: Source, filters: Filters = NO_FILTERS,
    **options: Unpack[ViewOptions],
) -> dict[str, Any]:
    """First-contact resolution, reopen, repeat-complaint rates and handling time."""
    with _over(source, options) as v:
        where, params = filters.where("c", t=v.t)
        return v.rows(
            # `previous_registered_at`: the customer's previous complaint's registration, kept
            # by the trends projector over all complaints (so whatever the filters).
            f"""WITH c AS (
                SELECT *, coalesce(epoch_us(registered_at) - epoch_us(previous_registered_at)
                                   <= {REPEAT_WINDOW_US}, false) AS is_repeat
                FROM {v.t(TREND_COMPLAINTS)}
            )
            SELECT count(*) AS complaints,
                count(*) FILTER (WHERE resolutions > 0) AS resolved,
                count(*) FILTER (WHERE resolutions > 0 AND reopen_count = 0 AND handovers = 0
                                 AND waits = 0 AND responses_before_first_resolution <= 1)
                    AS first_contact_resolved,
                CAST(first_contact_resolved AS DOUBLE) / nullif(resolved, 0) AS fcr_rate,
                count(*) FILTER (WHERE reopen_count > 0) AS reopened,
                CAST(reopened AS DOUBLE) / nullif(resolved, 0) AS reopen_rate,
                count(*) FILTER (WHERE is_repeat) AS repeats,
                CAST(repeats AS DOUBLE) / nullif(complaints, 0) AS repeat_rate,
                count(resolved_at) AS handled,
                CAST(sum(epoch_us(resolved_at) - epoch_us(registered_at)) AS DOUBLE)
                    / nullif(handled, 0) / {MICRO} AS avg_handling_seconds
            FROM c WHERE {where}""",
            params,
        )[0]


# ------------------------------------------------------------------------- dashboard
SLA_GROUPINGS: tuple[str | None, ...] = (None, "team", "agent", "severity", "category", "channel", "priority", *PERIODS)
VOLUME_GROUPINGS: tuple[str | None, ...] = (None, "category", "product", "channel", "region", "severity", "tier")
WOW_GROUPINGS: tuple[str | None, ...] = (None, "product", "category")


def dashboard(source: Source, filters: Filters = NO_FILTERS, **options: Unpack[ViewOptions]) -> dict[str, Any]:
    """Every dashboard figure, as one dictionary (what the oracle recomputes); one view
    (one as-of build) serves them all."""
    with _over(source, options) as v:
        return _figures(v, filters)


def _figures(v: View, filters: Filters) -> dict[str, Any]:
    return {
        "now": v.now,
        "sla_clocks": sla_clocks(v, filters),
        "sla_attainment": {by: sla_attainment(v, by, filters) for by in SLA_GROUPINGS},
        "sla_at_risk": sla_at_risk(v, filters),
        "open_complaints": open_complaints(v, filters),
        "today": today(v, filters),
        "agent_load": agent_load(v, filters),
        "handovers": handovers(v, filters),
        "backlog": backlog(v, filters),
        "volume": {
            (period, by): volume(v, period, by, filters)
            for period in PERIODS for by in VOLUME_GROUPINGS
        },
        "week_over_week": {by: week_over_week(v, by, filters) for by in WOW_GROUPINGS},
        "top_categories": top_categories(v, filters=filters),
        "ratings": {period: ratings(v, period, filters) for period in (None, *PERIODS)},
        "rates": rates(v, filters),
    }


figures = dashboard  # its former name, for a View

# `projections.whatif` calls the attainment by its former private name.
_sla_attainment = sla_attainment

