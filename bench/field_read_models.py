"""Custom fields and tags read models at scale: the rebuild, and the figures over them.

    python -m bench.field_read_models --complaints 1000000

Generates, with DuckDB SQL, one Registered and one FieldsUpdated event per complaint (four
custom fields: two true/false, a single choice of 40 options, a multiple choice of one or
two of 6 options) and a TagAdded for one complaint in five, in an in-memory read node;
rebuilds the facts and fields read models from them with the projectors' own SQL (the
rebuild's path), then times, each the best of `--repeat` runs, the figures the read API
computes over them: new complaints by month and a custom field (`/trends
?dimension=field:sub_product`), a true/false field's rate per team (`/rates`), and the
supervisor's and the queue's SQL under a field and a tag filter.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import duckdb

from projections.event_log import EventLog
from projections.facts import Scope
from projections.models import make
from read_api import figures
from read_api.schemas import Filters

START = datetime(2026, 1, 1, tzinfo=UTC)


def generate(db: duckdb.DuckDBPyConnection, complaints: int) -> None:
    """The events table: Registered, then FieldsUpdated, then one in five TagAdded."""
    EventLog().create_schema(db)
    db.execute(f"""
        INSERT INTO events BY NAME
        WITH c AS (
            SELECT i, uuid() AS complaint_id,
                   TIMESTAMPTZ '{START.isoformat()}' + to_seconds(i * 31) AS registered
            FROM range({complaints}) t(i)
        ), e AS (
            SELECT i, complaint_id, 1 AS complaint_version, 'Registered' AS event_type, registered AS occurred_at,
                   json_object('channel', 'web', 'customer', json_object('id', 'C-' || (i % 50000)),
                               'product', 'p' || (i % 7)) AS payload
            FROM c
            UNION ALL
            SELECT i, complaint_id, 2, 'Assigned', registered + INTERVAL 1 MINUTE,
                   json_object('team', 'company-' || (hash(i) % 300), 'agent', NULL)
            FROM c
            UNION ALL
            SELECT i, complaint_id, 3, 'FieldsUpdated', registered + INTERVAL 2 MINUTE,
                   json_object('changes', json_object(
                       'timely_response', json_object('before', NULL, 'after', hash(i, 1) % 50 <> 0),
                       'disputed', json_object('before', NULL, 'after', hash(i, 2) % 5 = 0),
                       'sub_product', json_object('before', NULL, 'after', 'sub-' || (hash(i, 3) % 40)),
                       'issues', json_object('before', NULL, 'after',
                           CASE WHEN i % 4 = 0 THEN ['fees', 'rates'] ELSE ['issue-' || (i % 6)] END)),
                       'definitions_version', 'v1')
            FROM c
            UNION ALL
            SELECT i, complaint_id, 4, 'TagAdded', registered + INTERVAL 3 MINUTE,
                   json_object('tag', 'tag-' || (hash(i, 4) % 30))
            FROM c WHERE i % 5 = 0
        )
        SELECT row_number() OVER (ORDER BY occurred_at, complaint_version) AS position, complaint_id,
               complaint_version, event_type, 1 AS event_version, occurred_at, occurred_at AS recorded_at,
               'bench' AS actor, 'cmd-' || i || '-' || complaint_version AS command_id,
               'corr-' || i AS correlation_id, payload::VARCHAR AS payload, occurred_at AS applied_at
        FROM e""")


def best(seconds: list[float]) -> str:
    return f"{min(seconds) * 1000:.0f} ms"


def timed(label: str, repeat: int, run: Any) -> None:
    seconds = []
    for _ in range(repeat):
        began = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - began)
    rows = len(result) if isinstance(result, list) else result
    print(f"{label:<58} {best(seconds):>9}  ({rows} rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--complaints", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    db = duckdb.connect()
    began = time.perf_counter()
    generate(db, args.complaints)
    events = db.execute("SELECT count(*) FROM events").fetchone()[0]
    print(f"generated {events:,} events of {args.complaints:,} complaints in {time.perf_counter() - began:.1f} s")

    projectors = make(["facts", "trends", "fields"])
    scope = Scope()
    began = time.perf_counter()
    for projector in projectors:
        projector.create_schema(db)
        projector.build(db, scope)
    scope.release(db)
    counts = db.execute("SELECT (SELECT count(*) FROM complaint_fields), (SELECT count(*) FROM complaint_tags)"
                        ).fetchone()
    print(f"rebuilt complaint_facts, trend_complaints, complaint_fields ({counts[0]:,} rows) and complaint_tags ({counts[1]:,} rows)"
          f" in {time.perf_counter() - began:.1f} s")

    now = db.execute("SELECT max(occurred_at) FROM events").fetchone()[0]
    everything = Filters(period="all")
    filtered = Filters(period="all", field=["sub_product:sub-7"], tag=["tag-3"])
    with figures.request(db, everything, now) as r:
        timed("new by month and field:sub_product (/trends)", args.repeat,
              lambda: figures.trend_rows(r, "field:sub_product", "month"))
        timed("new by month and field:issues (multiple choice)", args.repeat,
              lambda: figures.trend_rows(r, "field:issues", "month"))
        timed("timely_response rate by team (/rates)", args.repeat,
              lambda: figures.rates(r, "timely_response", "team"))
        timed("timely_response rate by field:sub_product (/rates)", args.repeat,
              lambda: figures.rates(r, "timely_response", "field:sub_product"))
    with figures.request(db, filtered, now) as r:
        timed("new by month and team, field and tag filters (/trends)", args.repeat,
              lambda: figures.trend_rows(r, "team", "month"))
        timed("complaints export query, field and tag filters (count)", args.repeat,
              lambda: figures.Query(f"SELECT count(*) AS n FROM {r.facts()}", r.params()).rows(r.db)[0]["n"])


if __name__ == "__main__":
    main()
