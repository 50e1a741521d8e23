"""The fixed cost of a read node's batch (issue 16): a trickle of commands, applied batch by batch.

    python -m bench.small_batches --help
    python -m bench.small_batches                      # 1,000 demo complaints, 50 batches of 4
    python -m bench.small_batches --complaints 10000 --batch 20

A desk in memory takes the demo workload (`commands.demo`); a DuckDB database in memory
gets all its events but the last `--batches` x `--batch` in one batch, then those in
batches of `--batch`, each in its own transaction, as `consumers.read_node` applies them
(the event log's insert, then every read model of `projections.models`). Printed: the
time a batch takes, per projector and per SQL statement (the slowest), and the ceiling
measured in the same run: DuckDB inserting the same batches into a plain table, one
transaction each.

What it showed (2026-12-03, 1,000 complaints, batches of 4): 228-247 ms a batch, against
2.4 ms for DuckDB's insert of the same batches (a transaction each): 45 statements, most
deleting or recomputing the touched complaints' rows of one table, at 2-12 ms each,
whatever the batch's size. A read node fed a trickle therefore spends a core on a few events a
second, which is why it lets small batches gather (`COMPLAINTS_CONSUMER_LINGER_SECONDS`).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import duckdb


class TimedConnection:
    """A DuckDB connection whose `execute` adds its time to `spent`, by statement."""

    def __init__(self, db: duckdb.DuckDBPyConnection, spent: dict[str, list[float]]) -> None:
        self._db = db
        self._spent = spent

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._db.execute(sql, *args, **kwargs)
        finally:
            entry = self._spent[" ".join(sql.split())[:100]]
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def measure(complaints: int, batches: int, size: int) -> dict[str, Any]:
    from bench.read_models import insert_batches
    from commands.demo import load_demo
    from commands.desk import ComplaintDesk
    from consumers.stored_events import envelopes
    from projections.base import to_batch
    from projections.bulk import forget_batch
    from projections.event_log import EventLog
    from projections.models import make

    desk = ComplaintDesk()
    load_demo(desk, complaints, end=datetime.now(UTC), progress=False)
    stored = envelopes(desk.mapper, desk.recorder.select_notifications(1, 10**9))
    tail_size = batches * size
    head, tail = stored[:-tail_size], stored[-tail_size:]

    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    log, models = EventLog(), make()
    log.create_schema(db)
    for model in models:
        model.create_schema(db)
    db.execute("BEGIN")
    new = log.insert_new(db, to_batch(head))
    for model in models:
        model.apply(db, new)
    db.execute("COMMIT")
    forget_batch(db)

    spent: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    timed = TimedConnection(db, spent)
    per_model: dict[str, float] = defaultdict(float)
    small = [to_batch(tail[i:i + size]) for i in range(0, tail_size, size)]
    started = time.perf_counter()
    for batch in small:
        db.execute("BEGIN")
        t = time.perf_counter()
        new = log.insert_new(db, batch)
        per_model["events"] += time.perf_counter() - t
        for model in models:
            t = time.perf_counter()
            model.apply(timed, new)  # type: ignore[arg-type]
            per_model[model.name] += time.perf_counter() - t
        db.execute("COMMIT")
    applied = time.perf_counter() - started

    raw = insert_batches(duckdb.connect(), small)
    statements = sorted(spent.items(), key=lambda item: -item[1][1])
    return {
        "events": len(stored), "complaints": complaints, "batches": len(small), "batch": size,
        "ms_a_batch": applied * 1000 / len(small), "ceiling_ms_a_batch": raw * 1000 / len(small),
        "ms_a_batch_by_projector": {name: seconds * 1000 / len(small) for name, seconds in per_model.items()},
        "statements_a_batch": sum(n for n, _ in spent.values()) / len(small),
        "slowest_statements": [(sql, n / len(small), seconds * 1000 / len(small)) for sql, (n, seconds) in statements[:15]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--complaints", type=int, default=1_000, help="demo complaints in the database first")
    parser.add_argument("--batches", type=int, default=50, help="small batches applied and timed")
    parser.add_argument("--batch", type=int, default=4, help="events a small batch")
    args = parser.parse_args()
    r = measure(args.complaints, args.batches, args.batch)
    print(f"{r['events']:,} events of {r['complaints']:,} complaints; {r['batches']} batches of {r['batch']}:"
          f" {r['ms_a_batch']:.1f} ms a batch ({r['statements_a_batch']:.0f} statements in the read models),"
          f" DuckDB's insert of the same batches {r['ceiling_ms_a_batch']:.2f} ms")
    print("per projector, ms a batch: " + ", ".join(f"{k} {v:.1f}" for k, v in r["ms_a_batch_by_projector"].items()))
    print("slowest statements (ms a batch, times a batch, SQL):")
    for sql, times, ms in r["slowest_statements"]:
        print(f"  {ms:6.2f} {times:4.1f}x  {sql}")


if __name__ == "__main__":
    main()
