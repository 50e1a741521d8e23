"""The shared per-complaint facts table, `complaint_facts`, as a projector of its own.

One row per complaint (see `projections.facts.facts_sql` for the columns). The SLA,
workload and trend projectors keep their own tables so that one failing never stops
the others; this one is the general-purpose table analysts and the read API query.
"""

from __future__ import annotations

import duckdb

from projections.bulk import BulkProjector
from projections.facts import FACT_COLUMNS, Scope

FACTS = "complaint_facts"


class FactsProjector(BulkProjector):
    name = "facts"
    schema_version = 1
    tables = {FACTS: FACT_COLUMNS}

    def selects(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, str]:
        return {FACTS: f"SELECT * FROM {scope.facts(db)}"}
