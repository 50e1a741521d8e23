"""The SLA read model: one clock per complaint and metric (first response, resolution),
and one per customer message awaiting a reply (next response).

A clock starts at registration (Zammad: never reset by re-grading). Its due time is the
fact recorded by the domain: `first_response_due` from the latest Triaged event, and
`resolution_due` from the latest Triaged or CustomerReplied event (a customer reply moves
it on by the pause). The first-response clock never pauses (its due time ignores
pauses); the resolution clock pauses while waiting on the customer.

Stored status, independent of the reader's clock:
- activated: running; paused: running but waiting on the customer;
- fulfilled: stopped by a response / the (last, not reopened) resolution by the due time;
- breached: stopped after the due time, where a clock paused at the stop is judged at the
  instant the pause began (a pause before the due time moves the due time on);
- cancelled: stopped by withdrawal or duplicate marking before the due time.
Warning and breach of running clocks depend on `now`: see `projections.queries`.

Business time (elapsed, paused) comes from the calendar table: cum(b) - cum(a), in
integer µs, minus the business time inside the pauses.
"""

from __future__ import annotations

import logging

import duckdb

from aggregates.sla import SlaPolicy, load_sla_policy
from projections import calendar_table
from projections.bulk import BulkProjector
from projections.facts import Scope

log = logging.getLogger(__name__)

CLOCKS = "sla_clocks"
METRICS = ("first_response", "resolution", "next_response")
CLOCK_COLUMNS = """
    complaint_id VARCHAR, metric VARCHAR, registered_at TIMESTAMPTZ, channel VARCHAR,
    tier VARCHAR, product VARCHAR, region VARCHAR, category VARCHAR, severity VARCHAR,
    priority VARCHAR, team VARCHAR, agent VARCHAR, status_of_complaint VARCHAR,
    sla_calendar VARCHAR, sla_policy_version VARCHAR, started_at TIMESTAMPTZ,
    due_at TIMESTAMPTZ, stopped_at TIMESTAMPTZ, stop_reason VARCHAR, status VARCHAR,
    paused_since TIMESTAMPTZ, pause_count BIGINT, paused_us BIGINT, paused_business_us BIGINT,
    elapsed_us BIGINT, business_us BIGINT, start_cum_us BIGINT, paused_since_cum_us BIGINT,
    last_version INTEGER, cycle INTEGER
"""
# The running clocks only, narrow: what the supervisor's at-risk and breached lists and
# the overdue counts read (a few percent of `sla_clocks`, which they would otherwise scan).
RUNNING = "sla_running_clocks"
RUNNING_COLUMNS = """
    complaint_id VARCHAR, metric VARCHAR, cycle INTEGER, registered_at TIMESTAMPTZ,
    channel VARCHAR, tier VARCHAR, product VARCHAR, region VARCHAR, category VARCHAR,
    severity VARCHAR, priority VARCHAR, team VARCHAR, agent VARCHAR, due_at TIMESTAMPTZ,
    paused_since TIMESTAMPTZ
"""


def running_sql(clocks: str) -> str:
    """The rows of `sla_running_clocks`: the clocks of `clocks` that have not stopped."""
    names = ", ".join(line.split()[0] for line in RUNNING_COLUMNS.replace(",", "\n").split("\n") if line.strip())
    return f"SELECT {names} FROM {clocks} WHERE stopped_at IS NULL ORDER BY due_at"


# One row per moment inside a clock's life: paused, resumed, warned, breached (see
# `clock_events_sql`); its start and stop are on its `sla_clocks` row.
CLOCK_EVENTS = "sla_clock_events"
CLOCK_EVENT_COLUMNS = """
    complaint_id VARCHAR, metric VARCHAR, cycle INTEGER, event VARCHAR, occurred_at TIMESTAMPTZ
"""


def next_response_sql(parsed: str) -> str:
    """One row per next-response clock: (complaint_id, cycle, started_at, due_at,
    stopped_at, stop_type).

    The domain states the next-response due time after every contact and customer reply
    (None when nothing is awaited); a proposal or a resolution answers the customer and
    a withdrawal or duplicate marking ends the complaint. A clock starts where the due
    time appears and stops at the first later event where it is gone.
    """
    return f"""
    WITH s AS (
        SELECT complaint_id, v, t, ts,
            CASE WHEN t IN ('ContactRecorded', 'CustomerReplied') THEN next_response_due END AS due
        FROM {parsed}
        WHERE t IN ('ContactRecorded', 'CustomerReplied', 'ResolutionProposed', 'Resolved',
                    'Withdrawn', 'MarkedDuplicate')
    ),
    g AS (
        SELECT *, sum(CASE WHEN due IS NOT NULL AND due IS DISTINCT FROM prev THEN 1 ELSE 0 END)
                      OVER (PARTITION BY complaint_id ORDER BY v ROWS UNBOUNDED PRECEDING) AS cycle
        FROM (SELECT *, lag(due) OVER (PARTITION BY complaint_id ORDER BY v) AS prev FROM s)
    )
    SELECT complaint_id, cycle, started_at, due_at,
        -- a due time that changes without a reply (never, today) stops the clock too
        coalesce(stopped_at, lead(started_at) OVER n) AS stopped_at,
        coalesce(stop_type, lead(start_type) OVER n) AS stop_type
    FROM (
        SELECT complaint_id, cycle, arg_min(ts, v) AS started_at, arg_min(t, v) AS start_type,
            arg_min(due, v) AS due_at,
            arg_min(ts, v) FILTER (WHERE due IS DISTINCT FROM first_due) AS stopped_at,
            arg_min(t, v) FILTER (WHERE due IS DISTINCT FROM first_due) AS stop_type
        FROM (SELECT *, first_value(due) OVER (PARTITION BY complaint_id, cycle ORDER BY v) AS first_due
              FROM g)
        WHERE cycle > 0
        GROUP BY complaint_id, cycle
    )
    WINDOW n AS (PARTITION BY complaint_id ORDER BY cycle)
    """


def pauses_sql(parsed: str) -> str:
    """Each wait on the customer: its start (`ps`, `ps_us`) and its end, the next reply
    (`pe`, `pe_us`; NULL while unanswered)."""
    return f"""
    SELECT complaint_id, ts AS ps, ts_us AS ps_us,
        CASE WHEN nt = 'CustomerReplied' THEN nts END AS pe,
        CASE WHEN nt = 'CustomerReplied' THEN nts_us END AS pe_us
    FROM (
        SELECT complaint_id, t, ts, ts_us, lead(t) OVER w AS nt, lead(ts) OVER w AS nts,
            lead(ts_us) OVER w AS nts_us
        FROM {parsed}
        WHERE problem IS NULL AND t IN ('WaitingOnCustomer', 'CustomerReplied')
        WINDOW w AS (PARTITION BY complaint_id ORDER BY v)
    ) WHERE t = 'WaitingOnCustomer'
    """


def clocks_sql(parsed: str, facts: str) -> str:
    """The clock rows of the complaints in `facts`, with pauses from `parsed` events."""
    cum = calendar_table.cum_sql
    return f"""
    WITH f AS (SELECT * FROM {facts}),
    clk AS (
        SELECT f.*, 'first_response' AS metric, 1 AS cycle, registered_at AS clock_started_at,
            first_response_due AS due_at,
            coalesce(first_response_at, terminated_at) AS stopped_at,
            CASE WHEN first_response_at IS NOT NULL THEN 'responded'
                 WHEN terminated_at IS NOT NULL THEN status END AS stop_reason,
            NULL::TIMESTAMPTZ AS clock_paused_since
        FROM f
        UNION ALL
        SELECT f.*, 'resolution', 1, registered_at, resolution_due,
            coalesce(resolved_at, terminated_at),
            CASE WHEN resolved_at IS NOT NULL THEN 'resolved'
                 WHEN terminated_at IS NOT NULL THEN status END,
            paused_since
        FROM f
        UNION ALL
        SELECT f.*, 'next_response', n.cycle, n.started_at, n.due_at, n.stopped_at,
            CASE WHEN n.stop_type IS NULL THEN NULL WHEN n.stop_type = 'Withdrawn' THEN 'withdrawn'
                 WHEN n.stop_type = 'MarkedDuplicate' THEN 'duplicate' ELSE 'responded' END,
            NULL::TIMESTAMPTZ
        FROM f JOIN ({next_response_sql(parsed)}) n ON n.complaint_id = f.complaint_id
    ),
    c AS MATERIALIZED (
        SELECT *, epoch_us(clock_started_at) AS start_us, epoch_us(stopped_at) AS stop_us,
            epoch_us(clock_paused_since) AS open_us
        FROM clk
    ),
    pz AS ({pauses_sql(parsed)}),
    -- pauses inside each resolution clock: clipped at its stop; an open pause of a
    -- running clock is left out here (it is counted up to `now` by the queries)
    pc AS (
        SELECT c.complaint_id, c.sla_calendar AS calendar, pz.ps_us,
            CASE WHEN c.stop_us IS NULL THEN pz.pe_us
                 ELSE least(coalesce(pz.pe_us, c.stop_us), c.stop_us) END AS pe_us
        FROM pz JOIN c ON c.complaint_id = pz.complaint_id AND c.metric = 'resolution'
    ),
    pcs AS (SELECT * FROM pc WHERE pe_us IS NOT NULL),
    ps AS ({cum("pcs", t_col="ps_us")}),
    pe AS ({cum("(SELECT * EXCLUDE (cum_us), cum_us AS cum_ps FROM ps)", t_col="pe_us")}),
    pagg AS (
        SELECT complaint_id, count(*) AS closed_pauses, sum(pe_us - ps_us) AS paused_us,
            sum(cum_us - cum_ps) AS paused_business_us
        FROM pe GROUP BY complaint_id
    ),
    pcount AS (SELECT complaint_id, count(*) AS pause_count FROM pz GROUP BY complaint_id),
    pts AS (
        SELECT complaint_id, metric, cycle, sla_calendar AS calendar, 's' AS role, start_us AS t_us FROM c
        UNION ALL
        SELECT complaint_id, metric, cycle, sla_calendar, 'e', stop_us FROM c WHERE stop_us IS NOT NULL
        UNION ALL
        SELECT complaint_id, metric, cycle, sla_calendar, 'p', open_us FROM c WHERE open_us IS NOT NULL
    ),
    pcum AS (
        SELECT complaint_id, metric, cycle,
            max(cum_us) FILTER (WHERE role = 's') AS start_cum_us,
            max(cum_us) FILTER (WHERE role = 'e') AS stop_cum_us,
            max(cum_us) FILTER (WHERE role = 'p') AS open_cum_us
        FROM ({cum("pts")}) GROUP BY complaint_id, metric, cycle
    )
    SELECT c.complaint_id, c.metric, c.cycle, c.registered_at, c.channel, c.tier, c.product,
        c.region, c.category, c.severity, c.priority, c.team, c.agent,
        c.status AS status_of_complaint, c.sla_calendar, c.sla_policy_version,
        c.clock_started_at AS started_at, c.due_at, c.stopped_at, c.stop_reason,
        CASE
            WHEN c.stopped_at IS NULL THEN
                CASE WHEN c.clock_paused_since IS NOT NULL THEN 'paused' ELSE 'activated' END
            WHEN c.due_at IS NOT NULL AND coalesce(c.clock_paused_since, c.stopped_at) > c.due_at
                THEN 'breached'
            WHEN c.stop_reason IN ('responded', 'resolved') THEN 'fulfilled'
            ELSE 'cancelled'
        END AS status,
        c.clock_paused_since AS paused_since,
        CASE WHEN c.metric = 'resolution' THEN coalesce(pcount.pause_count, 0) ELSE 0 END
            AS pause_count,
        CASE WHEN c.metric = 'resolution' THEN coalesce(pagg.paused_us, 0) ELSE 0 END AS paused_us,
        CASE WHEN c.sla_calendar IS NOT NULL THEN
            CASE WHEN c.metric = 'resolution' THEN coalesce(pagg.paused_business_us, 0) ELSE 0 END
        END AS paused_business_us,
        c.stop_us - c.start_us AS elapsed_us,
        pcum.stop_cum_us - pcum.start_cum_us
            - CASE WHEN c.metric = 'resolution' THEN coalesce(pagg.paused_business_us, 0) ELSE 0 END
            AS business_us,
        pcum.start_cum_us, pcum.open_cum_us AS paused_since_cum_us,
        c.last_version
    FROM c
    LEFT JOIN pcum ON pcum.complaint_id = c.complaint_id AND pcum.metric = c.metric
        AND pcum.cycle = c.cycle
    LEFT JOIN pagg ON pagg.complaint_id = c.complaint_id AND c.metric = 'resolution'
    LEFT JOIN pcount ON pcount.complaint_id = c.complaint_id
    """


def clock_events_sql(clocks: str, parsed: str, warning_before_us: int) -> str:
    """The moments inside each clock's life, from its row in `clocks` and the pauses in
    `parsed` (its start and stop are on the clock's row: see `clock_life_sql`).

    - paused and resumed (resolution clocks) as the customer is waited on and replies;
    - warned at `warning_before_us` before the due time (at the start if that is
      earlier; at the resume if a pause covered it), if the clock was running then;
    - breached at the due time, if the clock was running then (a pause that began before
      the due time moves the due time on, so it never covers one).
    A running clock's warning and breach are scheduled: their rows exist before their
    time, and count once `occurred_at <= now` (Zendesk's breach events work the same way).
    """
    return f"""
    WITH k AS (SELECT complaint_id, metric, cycle, started_at, due_at, stopped_at, stop_reason,
                      paused_since, coalesce(paused_since, stopped_at, 'infinity'::TIMESTAMPTZ) AS ends
               FROM {clocks}),
    w AS ({pauses_sql(parsed)}),
    kp AS (
        SELECT k.complaint_id, k.metric, k.cycle, w.ps,
            CASE WHEN w.pe <= coalesce(k.stopped_at, 'infinity'::TIMESTAMPTZ) THEN w.pe END AS pe
        FROM k JOIN w ON w.complaint_id = k.complaint_id AND k.metric = 'resolution'
        WHERE w.ps <= coalesce(k.stopped_at, 'infinity'::TIMESTAMPTZ)
    ),
    t0 AS (
        SELECT *, greatest(started_at, due_at - to_microseconds({warning_before_us}::BIGINT)) AS t0
        FROM k WHERE due_at IS NOT NULL
    ),
    warn AS (
        SELECT t0.complaint_id, t0.metric, t0.cycle, t0.ends,
            coalesce(max(kp.pe), t0.t0) AS warn_at, bool_or(kp.ps IS NOT NULL AND kp.pe IS NULL) AS in_open
        FROM t0 LEFT JOIN kp ON kp.complaint_id = t0.complaint_id AND kp.metric = t0.metric
            AND kp.cycle = t0.cycle AND kp.ps <= t0.t0 AND (kp.pe IS NULL OR t0.t0 < kp.pe)
        GROUP BY t0.complaint_id, t0.metric, t0.cycle, t0.ends, t0.t0
    )
    SELECT complaint_id, metric, cycle, 'paused' AS event, ps AS occurred_at FROM kp
    UNION ALL SELECT complaint_id, metric, cycle, 'resumed', pe FROM kp WHERE pe IS NOT NULL
    UNION ALL SELECT complaint_id, metric, cycle, 'warned', warn_at FROM warn WHERE NOT in_open AND warn_at < ends
    UNION ALL SELECT complaint_id, metric, cycle, 'breached', due_at FROM k WHERE due_at < ends
    """


def clock_life_sql(clocks: str, moments: str) -> str:
    """Each clock's whole life: its start and stop from its row in `clocks`, and the
    moments in between from `moments` (the `sla_clock_events` table)."""
    return f"""
    SELECT complaint_id, metric, cycle, 'activated' AS event, started_at AS occurred_at FROM {clocks}
    UNION ALL
    SELECT complaint_id, metric, cycle,
        CASE WHEN stop_reason IN ('responded', 'resolved') THEN 'fulfilled' ELSE 'cancelled' END,
        stopped_at
    FROM {clocks} WHERE stopped_at IS NOT NULL
    UNION ALL
    SELECT complaint_id, metric, cycle, event, occurred_at FROM {moments}
    """


def default_policy() -> SlaPolicy:
    """The packaged SLA policy (`aggregates/sla_policy.toml`).

    A configured one (the composition root's settings) is passed to whoever needs it:
    `SlaProjector(policy)`, `queries.view(..., policy=)`, `create_read_app(..., policy=)`.
    """
    return load_sla_policy(None)


class SlaProjector(BulkProjector):
    """Projector for the SLA read model (`sla_clocks`)."""

    name = "sla"
    schema_version = 4
    tables = {CLOCKS: CLOCK_COLUMNS, RUNNING: RUNNING_COLUMNS, CLOCK_EVENTS: CLOCK_EVENT_COLUMNS}

    def __init__(self, policy: SlaPolicy | None = None) -> None:
        self.policy = policy or default_policy()

    def create_schema(self, db: duckdb.DuckDBPyConnection, scope: Scope | None = None) -> None:
        super().create_schema(db, scope)
        # A time-travel scope (TEMP tables, maybe a read-only file) reads the live calendar
        # table, or a TEMP one of its own when the file has none or it does not cover the
        # scope (see `prepare(..., private=True)`): it never writes the live one.
        temp = scope is not None and scope.temp
        if not temp or not calendar_table.exists(db):
            calendar_table.create_schema(db, temp=temp)
        if not temp and (scope is None or not scope.prefix):
            self._recompute_if_calendars_changed(db)

    def _recompute_if_calendars_changed(self, db: duckdb.DuckDBPyConnection) -> None:
        """Business time depends on the calendars: a changed calendar means every clock is
        recomputed (the due times are facts of the events and do not change)."""
        stale = calendar_table.stale_calendars(db, self.policy.calendars)
        has_events = db.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'events' AND NOT temporary"
        ).fetchone()
        if not stale or not (has_events and has_events[0]):
            return
        log.warning("calendar(s) %s changed in the SLA policy: recomputing every SLA clock", stale)
        self.prepare(db, "events")  # rewrites the changed calendars' windows
        scope = Scope()
        try:
            self.build(db, scope)
        finally:
            scope.release(db)

    def prepare(self, db: duckdb.DuckDBPyConnection, events: str, *, private: bool = False) -> None:
        """Make the calendar table cover every year the events touch.

        `private` (a reader's view, such as an as-of one): never write the database's own
        calendar tables; what they lack is computed into TEMP tables of this connection
        (`calendar_table.ensure_years_privately`).
        """
        calendar_table.ensure_for_events(db, self.policy.calendars, events, private=private)

    def selects(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, str]:
        touched = "" if scope.touched is None else f"WHERE complaint_id IN (SELECT complaint_id FROM {scope.touched})"
        return {
            CLOCKS: clocks_sql(scope.parsed(db), scope.facts(db)),
            # these two from the clock rows just written (`build` runs them in order)
            RUNNING: running_sql(f"(SELECT * FROM {scope.table(CLOCKS)} {touched})"),
            CLOCK_EVENTS: clock_events_sql(
                f"(SELECT * FROM {scope.table(CLOCKS)} {touched})", scope.parsed(db),
                self.policy.warning_before_minutes * 60_000_000,
            ),
        }
