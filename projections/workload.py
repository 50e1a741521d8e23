"""The workload read model: who holds what, since when, and how the backlog moves.

Tables (one set of rows per complaint, recomputed from its history):
- `workload_complaints`: the complaint facts (status, team, agent, hand-overs...);
- `workload_open`: the open complaints alone, narrow (status, team, agent, dimensions): a
  few percent of the complaints, which the backlog and load figures read instead of
  scanning every complaint for the open ones;
- `workload_open_intervals`: each span a complaint was open, from registration or a
  reopening to the resolution, withdrawal or duplicate marking that ended it;
- `workload_resolutions`: each resolution with the team and agent assigned at the time,
  and the complaint's current dimensions (`complaint_team`, `complaint_agent`, category,
  product, channel, region, severity, tier, registered_at: `RESOLUTION_DIMENSIONS`) so
  that resolutions filtered by them need no join;
- `workload_handovers`: each reassignment (an Assigned event with a previous team).
The figures (open by team/agent/status/age, today's counts, load, throughput, backlog)
are computed from these by `projections.queries`, for a given `now` and time zone.
"""

from __future__ import annotations

import duckdb

from projections.bulk import BulkProjector
from projections.facts import FACT_COLUMNS, Scope

COMPLAINTS = "workload_complaints"
OPEN = "workload_open"
OPEN_COLUMNS = ("complaint_id", "registered_at", "status", "team", "agent", "category", "product", "channel",
                "region", "severity", "tier", "priority")
INTERVALS = "workload_open_intervals"
RESOLUTIONS = "workload_resolutions"
HANDOVERS = "workload_handovers"

OPENING = ("Registered", "Reopened")
CLOSING = ("Resolved", "Withdrawn", "MarkedDuplicate")


def intervals_sql(parsed: str) -> str:
    # Openings and closings alternate in a complaint's life, so each opening's closing
    # is the next event of either kind.
    return f"""
    SELECT complaint_id, ts AS opened_at,
        CASE WHEN nt IN {CLOSING!r} THEN nat END AS closed_at,
        CASE WHEN nt IN {CLOSING!r} THEN nt END AS closed_by
    FROM (
        SELECT complaint_id, t, ts, lead(t) OVER w AS nt, lead(ts) OVER w AS nat
        FROM {parsed} WHERE t IN {OPENING + CLOSING!r}
        WINDOW w AS (PARTITION BY complaint_id ORDER BY v)
    ) WHERE t IN {OPENING!r}
    """


# filter name -> column of `workload_resolutions` holding the complaint's current value
RESOLUTION_DIMENSIONS = {"team": "complaint_team", "agent": "complaint_agent", "category": "category",
                         "product": "product", "channel": "channel", "region": "region",
                         "severity": "severity", "tier": "tier", "registered_at": "registered_at"}


def resolutions_sql(parsed: str, facts: str) -> str:
    dims = ", ".join(f"f.{name} AS {column}" for name, column in RESOLUTION_DIMENSIONS.items())
    return f"""
    SELECT r.complaint_id, r.v AS version, r.ts AS resolved_at, struct_extract(r.actor_at, 'team') AS team,
        struct_extract(r.actor_at, 'agent') AS agent, {dims}
    FROM (
        SELECT complaint_id, v, t, ts,
            last_value(CASE WHEN t = 'Assigned' THEN {{'team': team, 'agent': agent}} END
                       IGNORE NULLS)
                OVER (PARTITION BY complaint_id ORDER BY v ROWS UNBOUNDED PRECEDING) AS actor_at
        FROM {parsed} WHERE t IN ('Assigned', 'Resolved')  -- the only events the window needs
    ) r JOIN {facts} f USING (complaint_id) WHERE r.t = 'Resolved'
    """


def handovers_sql(parsed: str) -> str:
    return f"""
    SELECT complaint_id, v AS version, ts AS handed_over_at, previous_team AS from_team,
        previous_agent AS from_agent, team AS to_team, agent AS to_agent
    FROM {parsed} WHERE t = 'Assigned' AND previous_team IS NOT NULL
    """


_FACT_TYPES = dict(column.split() for column in FACT_COLUMNS.split(","))


def open_sql(facts: str) -> str:
    """The rows of `workload_open`: the complaints of `facts` that are open."""
    return f"SELECT {', '.join(OPEN_COLUMNS)} FROM {facts} WHERE is_open ORDER BY registered_at"


class WorkloadProjector(BulkProjector):
    name = "workload"
    schema_version = 3  # 2: the complaint's dimensions on resolutions; 3: workload_open
    tables = {
        COMPLAINTS: FACT_COLUMNS,
        OPEN: ", ".join(f"{name} {_FACT_TYPES[name]}" for name in OPEN_COLUMNS),
        INTERVALS: "complaint_id VARCHAR, opened_at TIMESTAMPTZ, closed_at TIMESTAMPTZ,"
        " closed_by VARCHAR",
        RESOLUTIONS: "complaint_id VARCHAR, version INTEGER, resolved_at TIMESTAMPTZ,"
        " team VARCHAR, agent VARCHAR, complaint_team VARCHAR, complaint_agent VARCHAR,"
        " category VARCHAR, product VARCHAR, channel VARCHAR, region VARCHAR, severity VARCHAR,"
        " tier VARCHAR, registered_at TIMESTAMPTZ",
        HANDOVERS: "complaint_id VARCHAR, version INTEGER, handed_over_at TIMESTAMPTZ,"
        " from_team VARCHAR, from_agent VARCHAR, to_team VARCHAR, to_agent VARCHAR",
    }

    def selects(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, str]:
        parsed = scope.parsed(db)
        return {
            COMPLAINTS: f"SELECT * FROM {scope.facts(db)}",
            OPEN: open_sql(scope.facts(db)),
            INTERVALS: intervals_sql(parsed),
            RESOLUTIONS: resolutions_sql(parsed, scope.facts(db)),
            HANDOVERS: handovers_sql(parsed),
        }
