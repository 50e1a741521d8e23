"""The read models this package provides, by name, and how to make their projectors.

For a read node: COMPLAINTS_PROJECTORS=projections.models:ALL_SPEC (or the module:Class
names listed in SPEC), next to the event log a read node always keeps. Every model reads
the complaint events but `alerts`, which reads the alert events (its `stream`).
"""

from __future__ import annotations

from collections.abc import Sequence

from aggregates.sla import SlaPolicy
from projections.alerts import AlertsProjector
from projections.bulk import BulkProjector
from projections.complaint_facts import FactsProjector
from projections.fields import FieldsProjector
from projections.sla import SlaProjector
from projections.trends import TrendsProjector
from projections.workload import WorkloadProjector

MODELS: dict[str, type[BulkProjector]] = {
    "facts": FactsProjector,
    "sla": SlaProjector,
    "workload": WorkloadProjector,
    "trends": TrendsProjector,
    "alerts": AlertsProjector,
    "fields": FieldsProjector,
}
SPEC = {name: f"{cls.__module__}:{cls.__name__}" for name, cls in MODELS.items()}
ALL_SPEC = ",".join(SPEC.values())
TABLE_MODEL = {table: name for name, cls in MODELS.items() for table in cls.tables}


def make(names: Sequence[str] | None = None, policy: SlaPolicy | None = None) -> list[BulkProjector]:
    """Projectors for the named read models (all when None), in dependency-free order."""
    chosen = list(MODELS) if names is None else list(names)
    unknown = [n for n in chosen if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown read model(s) {unknown}; known: {', '.join(MODELS)}")
    return [SlaProjector(policy) if n == "sla" else MODELS[n]() for n in chosen]
