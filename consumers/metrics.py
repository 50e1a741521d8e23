"""The event backbone's Prometheus metrics, in the process's default registry.

The relay:
- `complaints_relay_position`: the last notification id Kafka acknowledged (recorded);
- `complaints_relay_lag`: notification ids in the event store not yet acknowledged
  (refreshed every second or so, from one `max(id)` query of the store);
- `complaints_relay_published_total`: events Kafka acknowledged (re-sends included).

A read node:
- `complaints_read_node_position{source,partition}`: the next position it will read;
- `complaints_read_node_lag{source}`: events in the source not applied yet (refreshed when
  the node works out its lag anyway: its status file, every few seconds);
- `complaints_read_node_batch_messages`: messages per applied batch;
- `complaints_read_node_apply_seconds{projector}`: seconds each projector took to apply a
  batch (the event log's insert as projector "events");
- `complaints_read_node_events_total`: new events applied (duplicates from the
  at-least-once bus not counted);
- `complaints_dead_letters_total{stage}`: messages set aside, by stage (the projector that
  raised on the event, or "envelope" for a message that could not be read).

The automation:
- `complaints_automation_actions_total{rule,outcome}`: commands the rules issued, by
  outcome (accepted, duplicate: the desk had it already, refused: with the reason recorded);
- `complaints_automation_timer_lateness_seconds`: how long after its instant a timer's
  action was carried out;
- `complaints_automation_lag`: events in its source it has not followed yet.

The notifier:
- `complaints_notifier_planned_total{kind}`: deliveries planned from the stream (new ones);
- `complaints_notifier_attempts_total{kind,outcome}`: delivery attempts, by outcome
  (delivered, failed, gone: 410, refused: the SSRF guard, dead: no template could render it);
- `complaints_notifier_attempt_seconds{kind}`: how long an attempt took;
- `complaints_notifier_lag`: events in its source it has not planned from yet.

`complaints.operations` serves them on /metrics (COMPLAINTS_METRICS_PORT for headless
processes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from consumers.sources import DeadLetter

RELAY_POSITION = Gauge("complaints_relay_position", "Last event store position Kafka acknowledged (recorded)")
RELAY_LAG = Gauge("complaints_relay_lag", "Event store positions not yet acknowledged by Kafka")
RELAY_PUBLISHED = Counter("complaints_relay_published_total", "Events published to Kafka and acknowledged")

READ_NODE_POSITION = Gauge(
    "complaints_read_node_position", "Next position a read node reads, by source and partition",
    ["source", "partition"],
)
READ_NODE_LAG = Gauge("complaints_read_node_lag", "Events in the source a read node has not applied yet", ["source"])
READ_NODE_BATCH_MESSAGES = Histogram(
    "complaints_read_node_batch_messages", "Messages per batch a read node applied",
    buckets=(1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000),
)
READ_NODE_APPLY_SECONDS = Histogram(
    "complaints_read_node_apply_seconds",
    "Seconds a projector took to apply one batch (the event log's insert as projector 'events')",
    ["projector"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
READ_NODE_EVENTS = Counter("complaints_read_node_events_total", "New events a read node applied")
DEAD_LETTERS = Counter(
    "complaints_dead_letters_total", "Messages set aside as dead letters, by stage (projector or 'envelope')",
    ["stage"],
)
AUTOMATION_ACTIONS = Counter("complaints_automation_actions_total", "Commands the automation's rules issued, by outcome",
                             ["rule", "outcome"])
AUTOMATION_LATENESS = Histogram(
    "complaints_automation_timer_lateness_seconds", "Seconds between a timer's instant and its action being carried out",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0),
)
AUTOMATION_LAG = Gauge("complaints_automation_lag", "Events in its source the automation has not followed yet")


def record_positions(source: str, positions: dict[int, int]) -> None:
    for partition, position in positions.items():
        READ_NODE_POSITION.labels(source=source, partition=str(partition)).set(position)


def record_dead_letters(letters: Sequence[DeadLetter]) -> None:
    for letter in letters:
        DEAD_LETTERS.labels(stage=letter.stage).inc()

NOTIFIER_PLANNED = Counter("complaints_notifier_planned_total", "Deliveries planned from the stream", ["kind"])
NOTIFIER_ATTEMPTS = Counter("complaints_notifier_attempts_total", "Delivery attempts by outcome", ["kind", "outcome"])
NOTIFIER_LATENCY = Histogram("complaints_notifier_attempt_seconds", "Seconds a delivery attempt took", ["kind"],
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
NOTIFIER_LAG = Gauge("complaints_notifier_lag", "Events in the source the notifier has not planned from yet")
