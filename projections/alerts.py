"""The alerts read model: one row per alert, as it stands (`alerts`).

Reads the alert stream (`stream = "alert"`: a read node hands this projector the
`AlertRaised`, `AlertAcknowledged` and `AlertResolved` events of each batch, and the
complaint projectors none of them). The envelope's `complaint_id` is the alert's id,
`complaint_version` its version.

A batch is applied set-based, in three statements in the order an alert's life allows
(raised, then acknowledged, then resolved: the domain refuses any other order, so this is
position order): the raises are inserted, then the latest acknowledgement and the latest
resolution of each alert update its row. A batch may hold an alert's whole life. Malformed
events raise `PoisonEvent` before anything is written (the read node dead-letters them and
applies the rest). A rebuild (`build`) applies every alert event of the scope's events the
same way.

Example (analysts): open critical alerts per rule
    SELECT rule, count(*) FROM alerts WHERE status <> 'resolved' AND severity = 'critical'
    GROUP BY ALL ORDER BY 2 DESC;
"""

from __future__ import annotations

import uuid

import duckdb
import pyarrow as pa

from projections.bulk import BulkProjector, quietly
from projections.facts import PoisonEvent, Scope

ALERTS = "alerts"
EVENT_TYPES = ("AlertRaised", "AlertAcknowledged", "AlertResolved")
ACTIVE = ("open", "acknowledged")
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}

COLUMNS = """
    alert_id UUID PRIMARY KEY, key VARCHAR NOT NULL, rule VARCHAR NOT NULL, rules_version VARCHAR,
    subject_type VARCHAR NOT NULL, subject VARCHAR NOT NULL, complaint_id UUID, team VARCHAR,
    severity VARCHAR NOT NULL, title_en VARCHAR, title_zh VARCHAR, evidence JSON, recipients VARCHAR[],
    owner VARCHAR, due_at TIMESTAMPTZ, status VARCHAR NOT NULL, raised_at TIMESTAMPTZ NOT NULL,
    raised_by VARCHAR NOT NULL, acknowledged_at TIMESTAMPTZ, acknowledged_by VARCHAR,
    acknowledge_note VARCHAR, resolved_at TIMESTAMPTZ, resolved_by VARCHAR, resolution_reason VARCHAR,
    resolved_automatically BOOLEAN, version INTEGER NOT NULL
"""


def _text(path: str) -> str:
    return f"json_extract_string(payload, '{path}')"


# What makes an alert event poison: the row it would write is undefined.
_PROBLEM = f"""CASE
    WHEN NOT json_valid(payload) THEN 'payload is not valid JSON'
    WHEN event_type NOT IN {EVENT_TYPES!r} THEN 'unknown alert event type'
    WHEN occurred_at IS NULL THEN 'occurred_at is missing'
    WHEN event_type = 'AlertRaised' AND ({_text('$.key')} IS NULL OR {_text('$.rule')} IS NULL
         OR {_text('$.subject_type')} IS NULL OR {_text('$.subject')} IS NULL OR {_text('$.severity')} IS NULL)
        THEN 'AlertRaised without key, rule, subject or severity'
    WHEN event_type = 'AlertRaised' AND {_text('$.complaint_id')} IS NOT NULL
         AND TRY_CAST({_text('$.complaint_id')} AS UUID) IS NULL THEN 'complaint_id is not a UUID'
    WHEN event_type = 'AlertRaised' AND {_text('$.due_at')} IS NOT NULL
         AND TRY_CAST({_text('$.due_at')} AS TIMESTAMPTZ) IS NULL THEN 'due_at is not a timestamp'
    WHEN event_type = 'AlertResolved' AND {_text('$.reason')} IS NULL THEN 'AlertResolved without reason'
END"""


def checked_sql(events: str) -> str:
    """The alert events of `events` (a batch, or the event log) with `problem` set on the
    malformed ones; ids as text and payloads as JSON text whatever the source's types."""
    return f"""
        SELECT position, complaint_id::VARCHAR AS alert_id, complaint_version AS version, event_type,
               occurred_at, actor, payload::VARCHAR AS payload, {_PROBLEM} AS problem
        FROM {events} WHERE event_type LIKE 'Alert%'
    """


def _latest(events: str, event_type: str, fields: str) -> str:
    """Each alert's last event of a type among the valid `events` (one per alert)."""
    return f"""
        SELECT alert_id::UUID AS alert_id, version, occurred_at, actor, {fields}
        FROM {events} WHERE problem IS NULL AND event_type = '{event_type}'
        QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY position DESC) = 1
    """


def apply_sql(table: str, events: str) -> list[str]:
    """The statements applying the checked `events` to `table`, in order."""
    raised = f"""
        INSERT INTO {table} BY NAME
        SELECT alert_id::UUID AS alert_id, {_text('$.key')} AS key, {_text('$.rule')} AS rule,
            {_text('$.rules_version')} AS rules_version, {_text('$.subject_type')} AS subject_type,
            {_text('$.subject')} AS subject, TRY_CAST({_text('$.complaint_id')} AS UUID) AS complaint_id,
            {_text('$.team')} AS team, {_text('$.severity')} AS severity, {_text('$.title_en')} AS title_en,
            {_text('$.title_zh')} AS title_zh, coalesce(json_extract(payload, '$.evidence'), '{{}}'::JSON) AS evidence,
            coalesce(json_extract_string(payload, '$.recipients[*]'), []::VARCHAR[]) AS recipients,
            {_text('$.owner')} AS owner, TRY_CAST({_text('$.due_at')} AS TIMESTAMPTZ) AS due_at,
            'open' AS status, occurred_at AS raised_at, actor AS raised_by, version
        FROM {events} WHERE problem IS NULL AND event_type = 'AlertRaised'
        QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY position) = 1
        ON CONFLICT DO NOTHING
    """
    acknowledged = f"""
        UPDATE {table} AS a SET
            status = CASE WHEN a.status = 'open' THEN 'acknowledged' ELSE a.status END,
            acknowledged_at = e.occurred_at, acknowledged_by = e.actor, acknowledge_note = e.note,
            version = greatest(a.version, e.version)
        FROM ({_latest(events, 'AlertAcknowledged', f"{_text('$.note')} AS note")}) e
        WHERE a.alert_id = e.alert_id
    """
    resolved = f"""
        UPDATE {table} AS a SET
            status = 'resolved', resolved_at = e.occurred_at, resolved_by = e.actor,
            resolution_reason = e.reason, resolved_automatically = e.automatic,
            version = greatest(a.version, e.version)
        FROM ({_latest(events, 'AlertResolved',
                       f"{_text('$.reason')} AS reason, coalesce(TRY_CAST({_text('$.automatic')} AS BOOLEAN), false) AS automatic")}) e
        WHERE a.alert_id = e.alert_id
    """
    return [raised, acknowledged, resolved]


class AlertsProjector(BulkProjector):
    name = "alerts"
    stream = "alert"  # consumers.batching: this projector is handed the alert events only
    schema_version = 1
    tables = {ALERTS: COLUMNS}

    def apply(self, db: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        """Apply a batch of alert events (other events in it are ignored).

        Raises PoisonEvent before anything is written when some are malformed.
        """
        if batch.num_rows == 0:
            return
        name = f"rm_alert_batch_{uuid.uuid4().hex[:8]}"
        db.register(name, batch)
        checked = f"rm_alert_events_{uuid.uuid4().hex[:8]}"
        try:
            db.execute(f"CREATE TEMP TABLE {checked} AS {checked_sql(name)}")
            problems = db.execute(
                f"SELECT position, alert_id, version, event_type, problem FROM {checked}"
                " WHERE problem IS NOT NULL ORDER BY position").fetchall()
            if problems:
                raise PoisonEvent(self.name, problems)
            for statement in apply_sql(ALERTS, checked):
                db.execute(statement)
        finally:  # quietly: after a failed statement the caller's transaction is aborted
            quietly(lambda: db.execute(f"DROP TABLE IF EXISTS {checked}"))
            quietly(lambda: db.unregister(name))

    def build(self, db: duckdb.DuckDBPyConnection, scope: Scope) -> None:
        """(Re)build the table from every alert event of the scope's events (malformed ones
        are left out: the live node dead-lettered them)."""
        table = scope.table(ALERTS)
        db.execute(f"DELETE FROM {table}")
        checked = f"(SELECT * FROM ({checked_sql(scope.events)}) WHERE problem IS NULL)"
        for statement in apply_sql(table, checked):
            db.execute(statement)
