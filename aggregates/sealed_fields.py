"""Which fields of which events are personal, and how a stored event reads once opened.

The store (commands.event_mapper) takes these fields out into one sealed member,
`sealed`, under the customer's data key, leaving `[sealed]` (name, contact, attachment
names) or the masked copy (free text, `aggregates.personal_text`) in their place. Whoever
may see personal data and holds the keyring opens `sealed` and puts them back with
`restored`; once the customer is erased it does not open, and `restored(state, None)`
writes `[erased]` where no masked copy stands in.
"""

from __future__ import annotations

from typing import Any

from aggregates.complaint import ERASED, hidden_field_values

SEALED = "[sealed]"
# Per event type that carries personal data: its free-text fields (stored masked).
FREE_TEXT: dict[str, tuple[str, ...]] = {
    "Registered": ("title", "description"),
    "NoteAdded": ("text",),
    "ContactRecorded": ("summary",),
    "CustomerReplied": ("summary",),
    "FieldsUpdated": (),  # its personal data is in the custom fields' values: FIELD_CHANGES
}
# Per event type that carries custom fields' values (aggregates.fields): the member holding
# their changes. Text values are free text (stored masked), an attachment's file name is
# stored `[sealed]`.
FIELD_CHANGES: dict[str, str] = {"FieldsUpdated": "changes"}


def sealed_changes(changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Custom fields' changes as stored: each one's before and after without personal data."""
    return {name: hidden_field_values(change, SEALED) for name, change in changes.items()}


def restored(state: dict[str, Any], originals: dict[str, Any] | None) -> dict[str, Any]:
    """`state` (an event's stored fields, `sealed` taken out) with the sealed fields put
    back, or, when `originals` is None (erased), `[erased]` where no masked copy stands."""
    if originals is None:
        personal = state.get("customer_personal")
        if isinstance(personal, dict):
            state["customer_personal"] = {name: ERASED for name in personal}
        if state.get("attachments"):
            state["attachments"] = [{**a, "filename": ERASED} if a.get("filename") == SEALED else a
                                    for a in state["attachments"]]
        for name in FIELD_CHANGES.values():
            if isinstance(state.get(name), dict):
                state[name] = {field: {side: _erased_name(value) for side, value in change.items()}
                               for field, change in state[name].items()}
        return state
    originals = dict(originals)
    names = originals.pop("attachment_names", None)
    if names is not None and state.get("attachments"):
        state["attachments"] = [{**a, "filename": name} for a, name in zip(state["attachments"], names, strict=False)]
    state.update(originals)
    return state


def _erased_name(value: Any) -> Any:
    """An attachment field's value with its sealed file name read as erased."""
    return {**value, "name": ERASED} if isinstance(value, dict) and value.get("name") == SEALED else value
