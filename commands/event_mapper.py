"""How events are stored: personal fields sealed per customer, every event chained.

eventsourcing's mapper turns a domain event into stored bytes and back; this one adds two
steps on the way in, and undoes them on the way out:

1. **Sealing** (`commands.personal_data`): the personal fields of the events that carry
   them go into one sealed member, `sealed`, under the customer's data key; in their
   place the stored event keeps `[sealed]` (name, contact, attachment names) or, for free
   text, the masked copy (`aggregates.personal_text`). Events, Kafka messages, read
   models, exports and dead letters therefore hold no personal data in plain text.
   Reading an event back opens `sealed` again; once the customer is erased it does not
   open, and the fields read `[erased]` (free text keeps its masked copy).
2. **Chaining** (`commands.event_chain`): the stored bytes are stamped with their link.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from aggregates.envelope import COMPLAINT_TOPIC_PREFIX as COMPLAINT_TOPIC
from aggregates.personal_text import mask_personal
from aggregates.sealed_fields import FIELD_CHANGES, FREE_TEXT, SEALED, restored, sealed_changes
from commands.event_chain import EventChain
from commands.personal_data import Keyring


class PersonalFields:
    """Takes an event state's personal fields out into `sealed`, and puts them back."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def seal(self, event_type: str, complaint_id: UUID, version: int, state: dict[str, Any]) -> dict[str, Any]:
        originals: dict[str, Any] = {}
        stored = dict(state)
        personal = state.get("customer_personal")
        if isinstance(personal, dict):
            originals["customer_personal"] = personal
            stored["customer_personal"] = {name: SEALED for name in personal}
        attachments = state.get("attachments")
        if attachments and any(isinstance(a, dict) and a.get("filename") for a in attachments):
            originals["attachment_names"] = [a.get("filename") for a in attachments]
            stored["attachments"] = [{**a, "filename": SEALED} if a.get("filename") else a for a in attachments]
        for name in FREE_TEXT[event_type]:
            text = state.get(name)
            if isinstance(text, str):
                masked = mask_personal(text)
                if masked != text:
                    originals[name] = text
                    stored[name] = masked
        if (changes_at := FIELD_CHANGES.get(event_type)) is not None:
            changes = state[changes_at]
            if (hidden := sealed_changes(changes)) != changes:
                originals[changes_at] = changes
                stored[changes_at] = hidden
        sealed = self._sealed(event_type, complaint_id, version, state, originals) if originals else None
        # Always present, null when there was nothing to seal (the read side's fast path
        # wants one shape per event type), and before the metadata: the stored state keeps
        # its layout (payload, then who and when).
        at = list(stored).index("actor")
        items = list(stored.items())
        return dict(items[:at] + [("sealed", sealed)] + items[at:])

    def _sealed(self, event_type: str, complaint_id: UUID, version: int, state: dict[str, Any],
                originals: dict[str, Any]) -> str | None:
        """`originals` sealed under the complaint's customer's key; None when that key was
        erased already (only the masked copy is kept then)."""
        if event_type == "Registered":
            key = self.keyring.key_for(complaint_id, str(state["customer"]["id"]))
        else:
            subject = self.keyring.subject_of(complaint_id)
            opened = self.keyring.open_key(subject[1]) if subject else None
            key = (subject[1], opened) if subject and opened else None
        return self.keyring.seal(key[0], key[1], originals, complaint_id, version) if key else None

    def unseal(self, complaint_id: UUID, version: int, state: dict[str, Any]) -> dict[str, Any]:
        sealed = state.pop("sealed", None)
        if sealed is None:
            return state
        return restored(state, self.keyring.open(sealed, complaint_id, version))


class ComplaintMapper(Mapper[UUID]):
    """eventsourcing's mapper with sealing (for Complaint events) and chaining (all events)."""

    def __init__(self, transcoder: Transcoder, *, personal: PersonalFields | None, chain: EventChain | None,
                 **options: Any) -> None:
        super().__init__(transcoder, **options)
        self.personal = personal
        self.chain = chain
        self._decode = Mapper(transcoder).to_domain_event  # of bytes deciphered, decompressed and split

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        topic = get_topic(domain_event.__class__)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        version = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        event_type = topic[len(COMPLAINT_TOPIC):] if topic.startswith(COMPLAINT_TOPIC) else None
        if self.personal is not None and event_type in FREE_TEXT:
            state = self.personal.seal(event_type, originator_id, version, state)
        body = self.transcoder.encode(state)
        if self.chain is not None:
            body = self.chain.append(originator_id, version, topic, body)
        if self.compressor:
            body = self.compressor.compress(body)
        if self.cipher:
            body = self.cipher.encrypt(body)
        return StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=body)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        if self.chain is not None:
            state = self.chain.observe(stored_event.originator_id, stored_event.originator_version, bytes(state))
        event = self._decode(StoredEvent(stored_event.originator_id, stored_event.originator_version,
                                         stored_event.topic, state))
        if "sealed" in vars(event):  # the store's, not the event's: opened, or left sealed
            if self.personal is not None:
                self.personal.unseal(event.originator_id, event.originator_version, vars(event))
            else:
                del vars(event)["sealed"]
        return event
