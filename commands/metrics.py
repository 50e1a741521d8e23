"""The command side's Prometheus metrics, in the process's default registry.

- `complaints_commands_total{action,outcome}`: every command the desk was asked to carry
  out (HTTP, the command line, the demo loader), and every HTTP command refused before it
  got there (422). Outcomes: `accepted` (new events), `duplicate` (an idempotent repeat of
  a command id: nothing new written), `invalid` (422), `not_found` (404), `conflict` (409:
  an illegal transition, a broken rule, a version conflict), `error` (anything else);
- `complaints_command_seconds{action}`: how long the desk took (load, decide, save), for
  every command that reached it.

`complaints.operations` serves them on /metrics.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Histogram

OUTCOMES = ("accepted", "duplicate", "invalid", "not_found", "conflict", "error")

COMMANDS = Counter(
    "complaints_commands_total",
    "Commands handled, by action and outcome (accepted, duplicate, invalid, not_found, conflict, error)",
    ["action", "outcome"],
)
COMMAND_SECONDS = Histogram(
    "complaints_command_seconds",
    "Seconds the desk took to carry out a command (load, decide, save), by action",
    ["action"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


@cache
def _counter(action: str, outcome: str) -> Any:
    return COMMANDS.labels(action=action, outcome=outcome)


@cache
def _timer(action: str) -> Any:
    return COMMAND_SECONDS.labels(action=action)


def count_command(action: str, outcome: str) -> None:
    _counter(action, outcome).inc()


def record_command(action: str, outcome: str, seconds: float) -> None:
    """A command the desk carried out (or refused): its outcome and its time."""
    _counter(action, outcome).inc()
    _timer(action).observe(seconds)
