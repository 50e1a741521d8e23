"""Who viewed which complaint's personal data, and when: an event-sourced log of its own.

Every time a customer's personal data is shown unmasked, the view is recorded before the
answer leaves; a view that cannot be recorded is not shown. The log is its own
eventsourcing application with its own table (PostgreSQL: `accesslog_events`; SQLite: a
file beside the event store's), so views never enter the complaints' notification log,
the Kafka topic or the read models, and auditors ask it by complaint.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from aggregates.access import Principal

VIEWS_NAMESPACE = uuid5(NAMESPACE_URL, "complaints:personal-data-views")


class PersonalDataViews(Aggregate):
    """The views of one complaint's personal data (or of everyone's, for exports)."""

    @staticmethod
    def create_id(subject: str) -> UUID:  # type: ignore[override]
        return uuid5(VIEWS_NAMESPACE, subject)

    @event("Opened")
    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.views: list[dict[str, Any]] = []

    @event("Viewed")
    def viewed(self, viewer: str, name: str, roles: list[str], via: str, at: datetime) -> None:
        self.views.append({"viewer": viewer, "name": name, "roles": roles, "via": via, "at": at})


class AccessLog(Application):
    name = "AccessLog"

    def record(self, principal: Principal, complaint_ids: Iterable[UUID | str], *, via: str, at: datetime) -> None:
        """Record that `principal` saw the personal data of `complaint_ids` through `via`."""
        for subject in {str(c) for c in complaint_ids}:
            self._record_view(subject, principal, via, at)

    @retry(retry=retry_if_exception_type(IntegrityError), stop=stop_after_attempt(5), reraise=True)
    def _record_view(self, subject: str, principal: Principal, via: str, at: datetime) -> None:
        # Two views of one complaint at once: one save wins, the other reloads and appends.
        try:
            views: PersonalDataViews = self.repository.get(PersonalDataViews.create_id(subject))
        except AggregateNotFoundError:
            views = PersonalDataViews(subject)
        views.viewed(viewer=principal.subject, name=principal.name, roles=sorted(principal.roles), via=via, at=at)
        self.save(views)

    def views(self, complaint_id: UUID | str) -> list[dict[str, Any]]:
        """Every recorded view of the complaint's personal data, oldest first (exports, which
        once showed everyone's, are under "*"; they show none now)."""
        try:
            found: PersonalDataViews = self.repository.get(PersonalDataViews.create_id(str(complaint_id)))
        except AggregateNotFoundError:
            return []
        return list(found.views)
