"""The trend read model: volumes, ratings and outcome rates over time and dimensions.

Tables:
- `trend_complaints`: the complaint facts (dimensions, first/last resolution, reopenings,
  hand-overs, waits, responses before the first resolution...), and
  `previous_registered_at`: when the same customer's previous complaint was registered
  (ordered by registration time, then log position; NULL for a customer's first). The
  repeat-complaint rate is then a filtered count instead of a window over every
  complaint per request;
- `trend_ratings`: every verification (CSAT, NPS, effort) with its time: a complaint
  verified, reopened and verified again has two ratings, both facts. Each row carries the
  complaint's current dimensions and registration time (`RATING_DIMENSIONS`) so that
  ratings filtered by them need no join.
Figures (volume by period and dimension, week-over-week growth, top categories, rating
trends, first-contact resolution, reopen, repeat-complaint and handling time) are
computed from these by `projections.queries`.

A complaint's previous registration depends on the customer's other complaints: each
build recomputes it for every complaint of every customer the build touched (a new
complaint can become the previous one of a complaint registered later, whichever
arrives first), set-based.
"""

from __future__ import annotations

import duckdb

from projections.bulk import BulkProjector
from projections.facts import FACT_COLUMNS, Scope

COMPLAINTS = "trend_complaints"
RATINGS = "trend_ratings"
# The complaint's current values copied on each rating (the filters of every figure).
RATING_DIMENSIONS = ("registered_at", "team", "agent", "category", "product", "channel", "region",
                     "severity", "tier")


def ratings_sql(parsed: str, facts: str) -> str:
    dims = ", ".join(f"f.{d}" for d in RATING_DIMENSIONS)
    return f"""
    SELECT r.complaint_id, r.v AS version, r.ts AS verified_at, r.csat, r.nps, r.effort, {dims}
    FROM {parsed} r JOIN {facts} f USING (complaint_id) WHERE r.t = 'Verified'
    """


def previous_sql(complaints: str) -> str:
    """(complaint_id, previous_registered_at) of every complaint of `complaints`, a relation
    holding all complaints of each customer in it."""
    return f"""
    SELECT complaint_id, lag(registered_at) OVER (
        PARTITION BY customer_id ORDER BY registered_at, registered_position) AS previous_registered_at
    FROM {complaints}
    """


def set_previous_sql(table: str, customers: str | None = None) -> str:
    """Recompute `previous_registered_at` in `table` for the customers of `customers` (a
    relation with a customer_id column; None: all), writing only the rows that change."""
    scope = f"(SELECT * FROM {table} WHERE customer_id IN (SELECT customer_id FROM {customers}))" \
        if customers else table
    return f"""
    UPDATE {table} t SET previous_registered_at = p.previous_registered_at
    FROM ({previous_sql(scope)}) p
    WHERE t.complaint_id = p.complaint_id
      AND t.previous_registered_at IS DISTINCT FROM p.previous_registered_at
    """


class TrendsProjector(BulkProjector):
    name = "trends"
    schema_version = 2  # 2: previous_registered_at; dimensions on ratings
    tables = {
        COMPLAINTS: FACT_COLUMNS + ", previous_registered_at TIMESTAMPTZ",
        RATINGS: "complaint_id VARCHAR, version INTEGER, verified_at TIMESTAMPTZ,"
        " csat INTEGER, nps INTEGER, effort INTEGER, registered_at TIMESTAMPTZ, team VARCHAR,"
        " agent VARCHAR, category VARCHAR, product VARCHAR, channel VARCHAR, region VARCHAR,"
        " severity VARCHAR, tier VARCHAR",
    }

    def selects(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, str]:
        facts = scope.facts(db)
        complaints = (f"SELECT f.*, p.previous_registered_at FROM {facts} f"
                      f" JOIN ({previous_sql(facts)}) p USING (complaint_id)"
                      if scope.touched is None else f"SELECT * FROM {facts}")
        return {COMPLAINTS: complaints, RATINGS: ratings_sql(scope.parsed(db), facts)}

    def build(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> None:
        super().build(db, scope)
        if scope.touched is not None:
            # Every complaint of the touched complaints' customers: theirs may have moved.
            db.execute(set_previous_sql(scope.table(COMPLAINTS), scope.facts(db)))
