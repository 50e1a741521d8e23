"""The published payload models match the stored events, and the catalogue is current."""

from __future__ import annotations

import dataclasses

from aggregates.alert import Alert
from aggregates.complaint import Complaint
from aggregates.events import EVENT_VERSIONS, META_FIELDS, PAYLOADS, SEALED_EVENTS
from complaints.store import open_desk
from commands.desk import ComplaintDesk
from commands.models import AssignComplaint, RegisterComplaint, TriageComplaint
from aggregates.envelope import parse
from consumers.stored_events import envelopes as envelopes_of
from scripts.event_catalogue import TARGET, catalogue
from tests.identity import OPERATOR, acting

BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def stored_event_classes() -> dict[str, type]:
    return {
        name: cls
        for aggregate in (Complaint, Alert)
        for name, cls in vars(aggregate).items()
        if isinstance(cls, type) and issubclass(cls, aggregate.Event) and cls is not aggregate.Event
        and name not in {"Created", "Snapshot"}
    }


def test_every_stored_event_has_a_payload_model_with_the_same_fields_and_version() -> None:
    stored = stored_event_classes()
    assert set(stored) == set(PAYLOADS)
    for name, cls in stored.items():
        fields = {f.name for f in dataclasses.fields(cls)} - BASE_FIELDS
        added_by_the_store = {"sealed"} if name in SEALED_EVENTS else set()
        assert fields | added_by_the_store == set(PAYLOADS[name].model_fields) | set(META_FIELDS), name
        assert getattr(cls, "class_version", 1) == EVENT_VERSIONS.get(name, 1), name


def test_the_catalogue_in_docs_is_current() -> None:
    assert TARGET.read_text() == catalogue(), "run: python scripts/event_catalogue.py"


def test_envelopes_from_the_store_validate_and_round_trip(sqlite_settings) -> None:  # type: ignore[no-untyped-def]
    desk = open_desk(sqlite_settings)
    done = desk.register(RegisterComplaint(
        channel="email", customer={"id": "C", "tier": "regular"},
        customer_personal={"name": "N", "contact": "n@example.com"}, title="t", description="d",
    ), OPERATOR)
    desk.execute(done.complaint_id, TriageComplaint(category="billing", severity="minor"), acting("b"))
    desk.execute(done.complaint_id, AssignComplaint(team="billing", agent="x"), OPERATOR)
    envelopes = envelopes_of(desk.mapper, desk.recorder.select_notifications(1, 10))
    assert [e.event_type for e in envelopes] == ["Registered", "Triaged", "Assigned"]
    assert [e.complaint_version for e in envelopes] == [1, 2, 3]
    assert [e.position for e in envelopes] == [1, 2, 3]
    for envelope in envelopes:
        again = parse(envelope.to_bytes())
        assert again == envelope.model_validate(envelope.model_dump())
    assert envelopes[1].actor == "b"
    assert envelopes[1].payload["severity"] == "minor"
    # Personal data travels sealed (docs/privacy.md): placeholders, and the sealed fields.
    assert envelopes[0].payload["customer_personal"] == {"name": "[sealed]", "contact": "[sealed]"}
    assert desk.keyring.open(envelopes[0].payload["sealed"], done.complaint_id, 1)["customer_personal"] == {
        "name": "N", "contact": "n@example.com"}
