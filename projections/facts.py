"""Per-complaint facts, computed set-based from the `events` table.

Every read model is a fold over a complaint's events. Rather than folding event by event,
each projector recomputes the complaints a batch touched from their whole history in the
`events` table, with one GROUP BY: idempotent by construction (redelivery, reordering
inside a complaint's prefix and rebuilds all give the same rows) and bulk (no row-at-a-
time writes).

Three steps, each a SQL text the projectors compose:
1. `parsed_sql`: the events of interest with their payload fields extracted once (one
   JSON parse per event) and a `problem` column naming what is wrong with a malformed
   ("poison") event, or NULL.
2. `facts_sql`: one row per complaint (status, dimensions, SLA facts, counters).
3. the projectors' own tables, selected from these.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import duckdb

from aggregates.instants import WINDOW

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "Registered", "Triaged", "Assigned", "NoteAdded", "ContactRecorded", "WaitingOnCustomer",
    "CustomerReplied", "ResolutionProposed", "Resolved", "Verified", "Closed", "Reopened",
    "Escalated", "Withdrawn", "MarkedDuplicate", "FieldsUpdated", "TagAdded", "TagRemoved",
)
NOT_A_FACT = "PersonalDataErased"
OPEN_STATUSES = ("received", "triaged", "assigned", "waiting_on_customer", "resolution_proposed")
RESOLVED_STATUSES = ("resolved", "verified", "closed")

# (column, JSON path, SQL type): every payload field a read model uses. Names are unique
# per meaning: ContactRecorded's own `channel` (the contact's) is `contact_channel`.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("channel", "$.channel", "VARCHAR"),
    ("customer_id", "$.customer.id", "VARCHAR"),
    ("tier", "$.customer.tier", "VARCHAR"),
    ("product", "$.product", "VARCHAR"),
    ("region", "$.region", "VARCHAR"),
    ("category", "$.category", "VARCHAR"),
    ("severity", "$.severity", "VARCHAR"),
    ("impact", "$.impact", "VARCHAR"),
    ("priority", "$.priority", "VARCHAR"),
    ("sla_policy_version", "$.sla_policy_version", "VARCHAR"),
    ("sla_calendar", "$.sla_calendar", "VARCHAR"),
    ("first_response_due", "$.first_response_due", "TIMESTAMPTZ"),
    ("resolution_due", "$.resolution_due", "TIMESTAMPTZ"),
    ("next_response_due", "$.next_response_due", "TIMESTAMPTZ"),
    ("team", "$.team", "VARCHAR"),
    ("agent", "$.agent", "VARCHAR"),
    ("previous_team", "$.previous_team", "VARCHAR"),
    ("previous_agent", "$.previous_agent", "VARCHAR"),
    ("direction", "$.direction", "VARCHAR"),
    ("visibility", "$.visibility", "VARCHAR"),
    ("first_response_at", "$.first_response_at", "TIMESTAMPTZ"),
    ("csat", "$.csat", "INTEGER"),
    ("nps", "$.nps", "INTEGER"),
    ("effort", "$.effort", "INTEGER"),
    ("level", "$.level", "INTEGER"),
    ("changes", "$.changes", "VARCHAR"),  # FieldsUpdated: the JSON object of the changes
    ("tag", "$.tag", "VARCHAR"),
)
_INDEX = {name: i + 1 for i, (name, _, _) in enumerate(FIELDS)}


def _raw(name: str) -> str:
    return f"j[{_INDEX[name]}]"


def _typed(name: str) -> str:
    kind = dict((n, t) for n, _, t in FIELDS)[name]
    return _raw(name) if kind == "VARCHAR" else f"TRY_CAST({_raw(name)} AS {kind})"


def _bad_optional(name: str) -> str:
    """Present but not of its type (a NULL is allowed)."""
    return f"({_raw(name)} IS NOT NULL AND {_typed(name)} IS NULL)"


def _missing(name: str) -> str:
    return f"({_typed(name)} IS NULL)"


# The domain's window of instants as SQL literals: an event outside it is poison (the SLA
# clocks could not count from it, and the calendar table covers no year of it).
_WINDOW = tuple(f"TIMESTAMPTZ '{t.isoformat()}'" for t in (WINDOW.earliest, WINDOW.latest))

# What makes an event poison: the read models would be wrong or undefined with it.
_PROBLEMS: tuple[tuple[str, str], ...] = (
    ("NOT json_valid(payload)", "payload is not valid JSON"),
    (f"event_type NOT IN {EVENT_TYPES!r}", "unknown event type"),
    ("occurred_at IS NULL", "occurred_at is missing"),
    (f"occurred_at < {_WINDOW[0]} OR occurred_at >= {_WINDOW[1]}",
     f"occurred_at is outside the instants this system accepts ({WINDOW.describe()})"),
    (f"event_type = 'Registered' AND ({_missing('channel')} OR {_missing('customer_id')})",
     "Registered without channel or customer.id"),
    (f"event_type = 'Triaged' AND ({_missing('category')} OR {_missing('severity')}"
     f" OR {_missing('sla_calendar')} OR {_missing('first_response_due')}"
     f" OR {_missing('resolution_due')})",
     "Triaged without category, severity, calendar or due times"),
    (f"event_type = 'Assigned' AND {_missing('team')}", "Assigned without team"),
    (f"event_type = 'ContactRecorded' AND ({_missing('direction')} OR {_missing('visibility')})",
     "ContactRecorded without direction or visibility"),
    (f"event_type IN ('ContactRecorded', 'ResolutionProposed', 'Resolved')"
     f" AND {_bad_optional('first_response_at')}", "first_response_at is not a timestamp"),
    (f"{_typed('first_response_at')} < {_WINDOW[0]} OR {_typed('first_response_at')} >= {_WINDOW[1]}",
     f"first_response_at is outside the instants this system accepts ({WINDOW.describe()})"),
    (f"event_type = 'CustomerReplied' AND {_bad_optional('resolution_due')}",
     "resolution_due is not a timestamp"),
    (f"event_type IN ('ContactRecorded', 'CustomerReplied') AND {_bad_optional('next_response_due')}",
     "next_response_due is not a timestamp"),
    (f"event_type = 'Verified' AND (coalesce({_typed('csat')} NOT BETWEEN 1 AND 5, true)"
     f" OR {_bad_optional('nps')} OR coalesce({_typed('nps')} NOT BETWEEN 0 AND 10, false)"
     f" OR {_bad_optional('effort')} OR coalesce({_typed('effort')} NOT BETWEEN 1 AND 7, false))",
     "Verified with csat, nps or effort out of range"),
    (f"event_type = 'Escalated' AND {_missing('level')}", "Escalated without level"),
    ("event_type = 'FieldsUpdated' AND (coalesce(json_type(payload, '$.changes'), '') <> 'OBJECT'"
     " OR NOT coalesce(list_bool_and(list_transform(json_extract(payload, '$.changes.*'),"
     " lambda change: json_type(change) = 'OBJECT')), true))",
     "FieldsUpdated without changes (an object of before and after per field)"),
    (f"event_type IN ('TagAdded', 'TagRemoved') AND coalesce({_raw('tag')}, '') = ''",
     "TagAdded or TagRemoved without tag"),
)
_PROBLEM_SQL = (
    "CASE "
    + " ".join(f"WHEN {cond} THEN '{reason}'" for cond, reason in _PROBLEMS)
    + " END"
)
_PATHS = "[" + ", ".join(f"'{p}'" for _, p, _ in FIELDS) + "]"


def parsed_sql(events: str, touched: str | None = None) -> str:
    """Events (optionally of the touched complaints only) with typed payload fields.

    Keeps poison events, with `problem` set; consumers filter on `problem IS NULL`.
    """
    # `events.complaint_id` is a UUID (projections.event_log); batches carry text. An
    # erasure of personal data is no fact of a complaint's handling: no read model sees it,
    # so every figure is the same after it (docs/privacy.md).
    where = f"WHERE event_type <> '{NOT_A_FACT}'"
    if touched:
        where += f" AND complaint_id IN (SELECT complaint_id::UUID FROM {touched})"
    cols = ", ".join(f"{_typed(n)} AS {n}" for n, _, _ in FIELDS)
    return f"""
        SELECT complaint_id::VARCHAR AS complaint_id, complaint_version AS v, position,
               event_type AS t,
               occurred_at AS ts, epoch_us(occurred_at) AS ts_us, {_PROBLEM_SQL} AS problem,
               {cols}
        FROM (
            SELECT *, CASE WHEN json_valid(payload) THEN json_extract_string(payload, {_PATHS}) END AS j
            FROM {events} {where}
        )
    """


class PoisonEvent(ValueError):
    """Events a projector cannot apply: a read node dead-letters them with this message."""

    def __init__(self, projector: str, problems: list[tuple[int, str, int, str, str]]) -> None:
        self.projector = projector
        self.problems = problems
        self.positions = [p[0] for p in problems]
        first = problems[0]
        super().__init__(
            f"{projector}: {len(problems)} poison event(s); first at position {first[0]}"
            f" (complaint {first[1]} v{first[2]} {first[3]}): {first[4]}"
        )


def batch_problems(db: duckdb.DuckDBPyConnection, batch: str) -> list[tuple[int, str, int, str, str]]:
    """(position, complaint, version, type, what is wrong) of each malformed event.

    The facts SQL ignores such events (so a poison event already in `events` never blocks
    later batches of its complaint); projectors raise PoisonEvent for them so that the
    read node dead-letters them.
    """
    return db.execute(
        f"SELECT position, complaint_id, v, t, problem FROM ({parsed_sql(batch)})"
        " WHERE problem IS NOT NULL ORDER BY position"
    ).fetchall()


def facts_sql(parsed: str) -> str:
    """One row per registered complaint: the facts every read model is built from."""
    base = (
        "'Registered', 'ResolutionProposed', 'Resolved', 'Verified', 'Closed', 'Reopened',"
        " 'Withdrawn', 'MarkedDuplicate'"
    )
    return f"""
    WITH p AS (
        SELECT *, min(v) FILTER (WHERE t = 'Resolved') OVER (PARTITION BY complaint_id)
                  AS first_resolved_v
        FROM {parsed} WHERE problem IS NULL
    ),
    a AS (
        SELECT complaint_id,
            max(v) AS last_version,
            max(position) AS last_position,
            max(ts) AS last_event_at,
            min(ts) FILTER (WHERE t = 'Registered') AS registered_at,
            min(position) FILTER (WHERE t = 'Registered') AS registered_position,
            min(channel) FILTER (WHERE t = 'Registered') AS channel,
            min(customer_id) FILTER (WHERE t = 'Registered') AS customer_id,
            min(tier) FILTER (WHERE t = 'Registered') AS tier,
            min(product) FILTER (WHERE t = 'Registered') AS product,
            min(region) FILTER (WHERE t = 'Registered') AS region,
            arg_max_null(category, v) FILTER (WHERE t = 'Triaged') AS category,
            arg_max_null(severity, v) FILTER (WHERE t = 'Triaged') AS severity,
            arg_max_null(impact, v) FILTER (WHERE t = 'Triaged') AS impact,
            arg_max_null(priority, v) FILTER (WHERE t = 'Triaged') AS priority,
            arg_max_null(sla_policy_version, v) FILTER (WHERE t = 'Triaged') AS sla_policy_version,
            arg_max_null(sla_calendar, v) FILTER (WHERE t = 'Triaged') AS sla_calendar,
            arg_max_null(first_response_due, v) FILTER (WHERE t = 'Triaged') AS first_response_due,
            -- The resolution due time is re-stated by every customer reply (pauses move it).
            arg_max_null(resolution_due, v) FILTER (WHERE t IN ('Triaged', 'CustomerReplied'))
                AS resolution_due,
            arg_max_null(team, v) FILTER (WHERE t = 'Assigned') AS team,
            arg_max_null(agent, v) FILTER (WHERE t = 'Assigned') AS agent,
            min(ts) FILTER (WHERE t = 'Assigned') AS first_assigned_at,
            count(*) FILTER (WHERE t = 'Assigned' AND previous_team IS NOT NULL) AS handovers,
            arg_min(first_response_at, v) FILTER (WHERE first_response_at IS NOT NULL)
                AS first_response_at,
            count(*) FILTER (WHERE t = 'Resolved') AS resolutions,
            min(ts) FILTER (WHERE t = 'Resolved') AS first_resolved_at,
            max(ts) FILTER (WHERE t = 'Resolved') AS last_resolved_at,
            count(*) FILTER (WHERE t = 'Reopened') AS reopen_count,
            count(*) FILTER (WHERE t = 'WaitingOnCustomer') AS waits,
            count(*) FILTER (WHERE t = 'NoteAdded') AS notes,
            count(*) FILTER (WHERE t = 'ContactRecorded') AS contacts,
            count(*) FILTER (WHERE t = 'ContactRecorded' AND direction = 'outbound'
                             AND visibility = 'public'
                             AND v < coalesce(first_resolved_v, 2147483647))
                AS responses_before_first_resolution,
            coalesce(max(level) FILTER (WHERE t = 'Escalated'), 0) AS escalation_level,
            max(ts) FILTER (WHERE t IN ('Withdrawn', 'MarkedDuplicate')) AS terminated_at,
            max(ts) FILTER (WHERE t = 'Closed') AS last_closed_at,
            -- status: the last "base" event sets it; triage, assignment and waits refine it
            arg_max(t, v) FILTER (WHERE t IN ({base})) AS base_type,
            max(v) FILTER (WHERE t IN ({base})) AS base_v,
            max(v) FILTER (WHERE t = 'WaitingOnCustomer') AS last_wait_v,
            max(ts) FILTER (WHERE t = 'WaitingOnCustomer') AS last_wait_at,
            max(v) FILTER (WHERE t = 'CustomerReplied') AS last_reply_v,
            bool_or(t = 'Triaged') AS triaged,
            bool_or(t = 'Assigned') AS assigned
        FROM p GROUP BY complaint_id
    ),
    s AS (
        SELECT *,
            coalesce(last_wait_v > coalesce(last_reply_v, 0), false) AS pause_open,
            CASE base_type
                WHEN 'Resolved' THEN 'resolved'
                WHEN 'Verified' THEN 'verified'
                WHEN 'Closed' THEN 'closed'
                WHEN 'Withdrawn' THEN 'withdrawn'
                WHEN 'MarkedDuplicate' THEN 'duplicate'
                ELSE CASE
                    WHEN last_wait_v > base_v AND last_wait_v > coalesce(last_reply_v, 0)
                        THEN 'waiting_on_customer'
                    WHEN base_type = 'ResolutionProposed' THEN 'resolution_proposed'
                    WHEN base_type = 'Reopened' OR assigned THEN 'assigned'
                    WHEN triaged THEN 'triaged'
                    ELSE 'received' END
            END AS status
        FROM a WHERE registered_at IS NOT NULL
    )
    SELECT complaint_id, registered_at, registered_position, last_version, last_position,
        last_event_at, channel, customer_id, tier, product, region, category, severity, impact,
        priority, sla_policy_version, sla_calendar, first_response_due, resolution_due, team,
        agent, first_assigned_at, handovers, first_response_at, status,
        status IN {OPEN_STATUSES!r} AS is_open,
        CASE WHEN status IN {RESOLVED_STATUSES!r} THEN last_resolved_at END AS resolved_at,
        CASE WHEN status = 'closed' THEN last_closed_at END AS closed_at,
        first_resolved_at, resolutions, reopen_count, waits, notes, contacts,
        responses_before_first_resolution, escalation_level, terminated_at,
        CASE WHEN pause_open THEN last_wait_at END AS paused_since
    FROM s
    """


FACT_COLUMNS = """
    complaint_id VARCHAR, registered_at TIMESTAMPTZ, registered_position BIGINT,
    last_version INTEGER, last_position BIGINT, last_event_at TIMESTAMPTZ, channel VARCHAR,
    customer_id VARCHAR, tier VARCHAR, product VARCHAR, region VARCHAR, category VARCHAR,
    severity VARCHAR, impact VARCHAR, priority VARCHAR, sla_policy_version VARCHAR,
    sla_calendar VARCHAR, first_response_due TIMESTAMPTZ, resolution_due TIMESTAMPTZ,
    team VARCHAR, agent VARCHAR, first_assigned_at TIMESTAMPTZ, handovers BIGINT,
    first_response_at TIMESTAMPTZ, status VARCHAR, is_open BOOLEAN, resolved_at TIMESTAMPTZ,
    closed_at TIMESTAMPTZ, first_resolved_at TIMESTAMPTZ, resolutions BIGINT,
    reopen_count BIGINT, waits BIGINT, notes BIGINT, contacts BIGINT,
    responses_before_first_resolution BIGINT, escalation_level INTEGER,
    terminated_at TIMESTAMPTZ, paused_since TIMESTAMPTZ
"""


@dataclass
class Scope:
    """Where a build reads and writes, and the intermediate tables it shares.

    `events` is the event relation (the live `events` table, or a subquery of it for
    time travel); `touched` a relation of complaint ids to recompute (None = all);
    `prefix` is prepended to every read-model table name (time travel builds into
    TEMP tables with a unique prefix and so never touches the live ones).

    The parsed events and the facts of the scope are materialised once, as TEMP tables,
    and shared by every projector built in it (parsing and planning dominate the cost
    of a small batch).
    """

    events: str = "events"
    touched: str | None = None
    prefix: str = ""
    temp: bool = False
    batch: str | None = None  # the batch being applied: its poison events are reported
    problems: list[tuple[int, str, int, str, str]] = field(default_factory=list)
    _parsed: str | None = field(default=None, repr=False)
    _facts: str | None = field(default=None, repr=False)

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @classmethod
    def as_of(cls, events: str) -> Scope:
        return cls(events=events, prefix=f"asof_{uuid.uuid4().hex[:8]}_", temp=True)

    def parsed(self, db: duckdb.DuckDBPyConnection) -> str:
        """The scope's valid events with typed payload fields (a TEMP table)."""
        if self._parsed is None:
            name = f"rm_parsed_{uuid.uuid4().hex[:8]}"
            db.execute(f"CREATE TEMP TABLE {name} AS {parsed_sql(self.events, self.touched)}")
            if self.batch is not None:
                self.problems = db.execute(
                    f"SELECT position, complaint_id, v, t, problem FROM {name}"
                    f" WHERE problem IS NOT NULL AND position IN (SELECT position FROM {self.batch})"
                    " ORDER BY position"
                ).fetchall()
            # Poison events, and complaints without a valid registration, take no part.
            db.execute(
                f"DELETE FROM {name} WHERE problem IS NOT NULL OR complaint_id NOT IN"
                f" (SELECT complaint_id FROM {name} WHERE t = 'Registered' AND problem IS NULL)"
            )
            self._parsed = name
        return self._parsed

    def facts(self, db: duckdb.DuckDBPyConnection) -> str:
        """One row per complaint of the scope (a TEMP table, see `facts_sql`)."""
        if self._facts is None:
            name = f"rm_facts_{uuid.uuid4().hex[:8]}"
            db.execute(f"CREATE TEMP TABLE {name} AS {facts_sql(self.parsed(db))}")
            self._facts = name
        return self._facts

    def exists(self, db: duckdb.DuckDBPyConnection) -> bool:
        """Whether the shared TEMP tables survived (a rollback removes them)."""
        names = [n for n in (self._parsed, self._facts) if n]
        if not names:
            return True
        found = db.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE temporary AND list_contains(?, table_name)",
            [names],
        ).fetchone()
        return bool(found) and found[0] == len(names)

    def release(self, db: duckdb.DuckDBPyConnection) -> None:
        for name in (self._parsed, self._facts):
            if name is not None:
                db.execute(f"DROP TABLE IF EXISTS {name}")
        self._parsed = self._facts = None

    def delete_touched(self, db: duckdb.DuckDBPyConnection, table: str) -> None:
        """Remove the rows the build is about to recompute."""
        if self.touched is None:
            db.execute(f"DELETE FROM {self.table(table)}")
        else:
            db.execute(
                f"DELETE FROM {self.table(table)}"
                f" WHERE complaint_id IN (SELECT complaint_id FROM {self.touched})"
            )

    def create(self, db: duckdb.DuckDBPyConnection, name: str, columns: str) -> None:
        kind = "TEMP TABLE" if self.temp else "TABLE"
        db.execute(f"CREATE {kind} IF NOT EXISTS {self.table(name)} ({columns})")
