"""The trend read model: volumes, ratings and outcome rates over time and dimensions.

Tables:
- `trend_complaints`: the complaint facts (dimensions, first/last resolution, reopenings,
  hand-overs, waits, responses before the first resolution...);
- `trend_ratings`: every verification (CSAT, NPS, effort) with its time: a complaint
  verified, reopened and verified again has two ratings, both facts.
Figures (volume by period and dimension, week-over-week growth, top categories, rating
trends, first-contact resolution, reopen, repeat-complaint and handling time) are
computed from these by `projections.queries`.
"""

from __future__ import annotations

import duckdb

from projections.bulk import BulkProjector
from projections.facts import FACT_COLUMNS, Scope

COMPLAINTS = "trend_complaints"
RATINGS = "trend_ratings"


def ratings_sql(parsed: str) -> str:
    return f"""
    SELECT complaint_id, v AS version, ts AS verified_at, csat, nps, effort
    FROM {parsed} WHERE t = 'Verified'
    """


class TrendsProjector(BulkProjector):
    name = "trends"
    schema_version = 1
    tables = {
        COMPLAINTS: FACT_COLUMNS,
        RATINGS: "complaint_id VARCHAR, version INTEGER, verified_at TIMESTAMPTZ,"
        " csat INTEGER, nps INTEGER, effort INTEGER",
    }

    def selects(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, str]:
        return {
            COMPLAINTS: f"SELECT * FROM {scope.facts(db)}",
            RATINGS: ratings_sql(scope.parsed(db)),
        }
