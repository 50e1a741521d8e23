"""The shape every read-model projector here shares: recompute touched complaints in bulk.

A projector declares its tables (name -> columns) and, for each, the SELECT that computes
its rows from the scope's parsed events and facts. `apply` validates the batch, deletes
the touched complaints' rows and inserts them again with INSERT ... SELECT: no
row-at-a-time writes, and redelivered or repeated events change nothing.

A read node calls every projector's `apply` with the same batch in one
transaction. Validation, parsing and the facts are the same for all of them, so they are
computed once per batch and connection (`batch_scope`) and shared.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from projections.facts import PoisonEvent, Scope

log = logging.getLogger(__name__)


def quietly(cleanup: Callable[[], object]) -> None:
    """Run a clean-up that must not hide the error being raised (an aborted transaction)."""
    try:
        cleanup()
    except duckdb.Error as error:
        log.debug("clean-up skipped: %s", error)


@dataclass
class _BatchScope:
    db: weakref.ref[duckdb.DuckDBPyConnection]
    batch: pa.Table
    name: str
    scope: Scope

    def release(self, db: duckdb.DuckDBPyConnection) -> None:
        quietly(lambda: self.scope.release(db))
        quietly(lambda: db.unregister(self.name))


# connection id -> the last batch seen on it (a read node applies one batch at a time)
_LAST: dict[int, _BatchScope] = {}


def batch_scope(db: duckdb.DuckDBPyConnection, batch: pa.Table) -> _BatchScope:
    """The shared scope of this batch on this connection (reused while it is the same)."""
    last = _LAST.get(id(db))
    if last is not None and last.db() is db and last.batch is batch and last.scope.exists(db):
        return last
    if last is not None and last.db() is db:
        last.release(db)
    name = f"rm_batch_{uuid.uuid4().hex[:8]}"
    db.register(name, batch)
    scope = Scope(touched=f"(SELECT DISTINCT complaint_id FROM {name})", batch=name)
    scope.parsed(db)  # parses the touched complaints' events once, finding the batch's poison
    entry = _BatchScope(weakref.ref(db), batch, name, scope)
    _LAST[id(db)] = entry
    return entry


def forget_batch(db: duckdb.DuckDBPyConnection) -> None:
    """Drop the shared TEMP tables of the last batch (tests, or before closing)."""
    last = _LAST.pop(id(db), None)
    if last is not None and last.db() is db:
        last.release(db)


class BulkProjector:
    name: str
    schema_version: int
    # table name -> column definitions
    tables: Mapping[str, str]

    def selects(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> Mapping[str, str]:
        """table name -> SELECT of its rows, from the scope's parsed events and facts."""
        raise NotImplementedError

    def create_schema(self, db: duckdb.DuckDBPyConnection, scope: Scope | None = None) -> None:
        scope = scope or Scope()
        for table, columns in self.tables.items():
            scope.create(db, table, columns)

    def drop_schema(self, db: duckdb.DuckDBPyConnection) -> None:
        """Drop this read model's tables (a read node rebuilds it on a schema version change)."""
        for table in self.tables:
            db.execute(f"DROP TABLE IF EXISTS {table}")

    def prepare(self, db: duckdb.DuckDBPyConnection, events: str) -> None:
        """Anything a build over `events` needs first (reference tables)."""

    def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        """Recompute the complaints this batch touched (the batch is already in `events`).

        Raises PoisonEvent before anything is written: the caller's transaction stays
        usable, so it can dead-letter those events and apply the rest.
        """
        if batch.num_rows == 0:
            return
        shared = batch_scope(db, batch)
        if shared.scope.problems:
            raise PoisonEvent(self.name, shared.scope.problems)
        self.prepare(db, shared.name)
        self.build(db, shared.scope)

    def build(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> None:
        """(Re)compute every table's rows for the scope's complaints."""
        for table, select in self.selects(db, scope).items():
            scope.delete_touched(db, table)
            db.execute(f"INSERT INTO {scope.table(table)} BY NAME {select}")
