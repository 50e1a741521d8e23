"""Commands: what clients ask of a complaint, validated by pydantic before anything runs.

Each command knows which aggregate method carries it out (`carry_out`); the handler in
`commands.desk` only loads, calls and saves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator
from pydantic_core import PydanticCustomError

from aggregates.complaint import Channel, Complaint, Direction, Meta, Status, Visibility
from aggregates.fields import FieldDefinitions
from aggregates.personal_text import mask_personal
from aggregates.priority import Impact, Severity, Tier
from aggregates.sla import SlaPolicy
from aggregates.tags import MAX_TAG_LENGTH, normalised_tag

# Versions fit the event stores' integers with room to spare (as the version query parameters).
MAX_VERSION = 2**31 - 1
# An attachment is described here, not stored: 2 GiB is the largest file a channel hands over.
MAX_ATTACHMENT_BYTES = 2 * 1024**3
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` is not text a command may carry (None: it is): a NUL byte (raw in CSV
    exports, cut short by C libraries), or a lone surrogate (not a character: it cannot be
    encoded as UTF-8, so it could be neither stored nor answered)."""
    if "\x00" in value:
        return "NUL bytes (\\u0000) are not allowed in text"
    if not value.isascii() and _SURROGATE.search(value):
        return "a lone surrogate is not a character: send valid UTF-8 (a pair for characters beyond U+FFFF)"
    return None


def _clean(value: str) -> str:
    if problem := text_problem(value):
        raise PydanticCustomError("string_invalid", problem)
    return value


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in `value` (keys too), with where it is, without recursion (nested JSON
    may be as deep as the parser allows)."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, BaseModel):
            stack += [(f"{where}.{name}".lstrip("."), getattr(item, name)) for name in type(item).model_fields]
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(key, str):
                    yield f"{where} (a key)".lstrip(), key
                stack.append((f"{where}.{key}".lstrip("."), sub))
        elif isinstance(item, (list, tuple)):
            stack += [(f"{where}[{i}]", sub) for i, sub in enumerate(item)]


Clean = AfterValidator(_clean)
# Said in the OpenAPI too (clients and schemathesis read it); checked by `_clean`, whose 422
# says why in words.
NO_NUL = {"pattern": "^[^\\u0000]*$"}
Text = Annotated[str, Field(min_length=1, max_length=20_000, json_schema_extra=NO_NUL), Clean]
# A complaint's description is kept whole: narratives of 20,000 characters and more arrive
# (the CFPB's longest sample is 21,928); within the request body limit (max_body_bytes).
MAX_DESCRIPTION = 100_000
Description = Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION, json_schema_extra=NO_NUL), Clean]
Name = Annotated[str, Field(min_length=1, max_length=200, json_schema_extra=NO_NUL), Clean]
Reference = Annotated[str, Field(min_length=1, max_length=100, json_schema_extra=NO_NUL), Clean]


def _tag(text: str) -> str:
    tag = normalised_tag(text)
    if not tag:
        raise PydanticCustomError("string_too_short", "a tag needs at least {min_length} character besides spaces",
                                  {"min_length": 1})
    if len(tag) > MAX_TAG_LENGTH:
        raise PydanticCustomError("string_too_long", "a tag has at most {max_length} characters",
                                  {"max_length": MAX_TAG_LENGTH})
    return tag


# A tag as people type it, stored normalised (aggregates.tags): `ＶＩＰ ` and `vip` are one tag.
Tag = Annotated[str, Field(min_length=1, max_length=200, json_schema_extra=NO_NUL, description=(
    f"normalised: full width to half width (NFKC), case folded, spaces trimmed and single; at most {MAX_TAG_LENGTH}"
    " characters then, and not empty")), Clean, AfterValidator(_tag)]
# Custom fields' values by field name (docs/fields.md); which fields exist, their types and
# rules are the field definitions' (checked by the complaint, 422 naming the field).
FieldValues = Annotated[dict[str, Any], Field(max_length=100, description=(
    "custom fields by name (docs/fields.md): text, single_select and date (YYYY-MM-DD) as strings, numbers,"
    " booleans, multi_select as lists of strings, attachment {sha256, name, size, media_type}, geolocation"
    " {lat, lon}; null clears a field"))]

# Numbers and booleans as JSON has them: "2" and true are not the number 2 (a client's
# mistake that coercion would hide). The CLI turns its own field=value text into numbers;
# the API reads 2.0 as the integer 2, as JSON Schema does (commands.strict_json).
StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict()]  # an integer is a number too; "2" and true are not
StrictBool = Annotated[bool, Strict()]
Version = Annotated[int, Field(ge=1, le=MAX_VERSION), Strict()]




def _instant_text(value: Any) -> Any:
    if isinstance(value, int | float):  # pydantic would read 12345 as seconds since 1970
        raise PydanticCustomError("datetime_type", "an instant is an ISO 8601 string with its offset,"
                                  " e.g. 2026-11-23T10:00:00+08:00, not a number")
    return value


# An instant as JSON has one: ISO 8601 text with its offset (never a bare number).
Instant = Annotated[AwareDatetime, BeforeValidator(_instant_text)]


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Customer(Schema):
    id: Reference = Field(description="the customer's id in the company's CRM")
    tier: Tier = "regular"


class CustomerPersonalData(Schema):
    """Kept in its own field group of the event so it can be encrypted and erased."""

    name: Name
    contact: Name = Field(description="phone number, e-mail address or account handle")


class Attachment(Schema):
    filename: Name
    content_type: Name = "application/octet-stream"
    size_bytes: StrictInt = Field(ge=0, le=MAX_ATTACHMENT_BYTES, description="at most 2 GiB")
    storage_ref: Reference | None = Field(None, description="where the file itself is kept")


class Command(Schema):
    """What every command carries besides its own fields. Who issues it is not among them:
    the actor is the bearer token's subject."""

    action: ClassVar[str]

    command_id: Reference | None = Field(
        None, description="idempotency key: the same id again returns the first result"
    )
    correlation_id: Reference | None = Field(
        None, description="groups commands of one conversation; defaults to the request's X-Correlation-ID, else the command id"
    )
    occurred_at: Instant | None = Field(
        None, description="when it happened: the server's clock, unless an importer states it"
        " (never in the future, never before the complaint's last change)"
    )
    expected_version: Version | None = Field(
        None, description="fail with 409 unless the complaint is at this version"
    )

    @field_validator("*")
    @classmethod
    def _text_only(cls, value: Any, info: Any) -> Any:
        """No NUL byte and no lone surrogate in any text of a command, whatever its type
        (the Text, Name and Reference fields say so with their own path already)."""
        for where, text in _strings(value):
            if problem := text_problem(text):
                raise PydanticCustomError("string_invalid", "{where}{problem}",
                                          {"where": f"{where}: " if where else "", "problem": problem})
        return value


class InvalidCommand(ValueError):
    """A command whose field is valid on its own but not here (HTTP 422, naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def fingerprint(command: Command, subject: str) -> str:
    """What makes a command the same command again: its action, its principal and its
    canonical body (without the ids that name it), without personal data.

    A fingerprint is stored with every event and outlives an erasure: over the original
    text, the digits a masked copy hides (`138****5678`) would be found again by trying
    them all. So it covers the name, the contact and file names not at all, and free text
    as masked; a retry that differs only there is taken as the same command."""
    body = _without_personal_data(command.model_dump(mode="json", exclude={"command_id", "correlation_id"}))
    if not body.get("fields"):
        # Commands recorded before registration and triage took custom fields had none: a
        # retry of one after the upgrade is the same command, not a reused id.
        body.pop("fields", None)
    canonical = json.dumps([command.action, subject, body], sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _without_personal_data(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_personal_data(v) for k, v in value.items() if k not in ("customer_personal", "filename")}
    if isinstance(value, list):
        return [_without_personal_data(v) for v in value]
    return mask_personal(value) if isinstance(value, str) else value


class ComplaintCommand(Command):
    """A command on an existing complaint."""

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        raise NotImplementedError


class RegisterComplaint(Command):
    """Register a complaint received from a channel."""

    action: ClassVar[str] = "register"
    channel: Channel
    customer: Customer
    customer_personal: CustomerPersonalData
    title: Annotated[str, Field(min_length=1, max_length=300)]
    description: Description
    product: Reference | None = None
    region: Reference | None = Field(None, description="where the customer is (province, state)")
    order_ref: Reference | None = None
    contract_ref: Reference | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=50)
    fields: FieldValues | None = None
    expected_version: None = Field(  # type: ignore[assignment]
        None, description="not for register: a new complaint has no version to expect (any value is a 422)")

    @field_validator("expected_version", mode="before")
    @classmethod
    def _no_version(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("register has no version to expect: a new complaint starts at version 1"
                             " (send the same command_id again to repeat a registration safely)")
        return None

    def event_fields(self) -> dict[str, Any]:
        return self.model_dump(
            mode="json",
            include={
                "channel",
                "customer",
                "customer_personal",
                "title",
                "description",
                "product",
                "region",
                "order_ref",
                "contract_ref",
                "attachments",
            },
        )


class TriageComplaint(ComplaintCommand):
    """Grade a complaint: category, severity and impact set its priority and SLA."""

    action: ClassVar[str] = "triage"
    category: Reference
    severity: Severity
    impact: Impact = "one_user"
    reason: Text | None = Field(None, description="why (rules say which rule and rules version)")
    fields: FieldValues | None = Field(None, description="custom fields, checked for the category given here")

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.triage(self.category, self.severity, self.impact, policy, meta, self.reason, self.fields, fields)


class AssignComplaint(ComplaintCommand):
    """Assign (or hand over) a complaint to a team and an agent."""

    action: ClassVar[str] = "assign"
    team: Reference
    agent: Reference | None = None
    reason: Text | None = Field(None, description="why (rules say which rule and rules version)")

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.assign(self.team, self.agent, meta, self.reason)


class AddNote(ComplaintCommand):
    """Add an internal note (never stops an SLA clock)."""

    action: ClassVar[str] = "add_note"
    text: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.add_note(self.text, meta)


class RecordContact(ComplaintCommand):
    """Record a contact with the customer; a public outbound one is a response."""

    action: ClassVar[str] = "record_contact"
    direction: Direction
    visibility: Visibility = "public"
    channel: Channel
    summary: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.record_contact(
            self.direction, self.visibility, self.channel, self.summary, policy, meta
        )


class WaitOnCustomer(ComplaintCommand):
    """Wait on the customer: the resolution clock pauses."""

    action: ClassVar[str] = "wait_on_customer"
    reason: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.wait_on_customer(self.reason, meta)


class CustomerReplied(ComplaintCommand):
    """The customer replied: the resolution clock resumes."""

    action: ClassVar[str] = "customer_replied"
    summary: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.customer_replied(self.summary, policy, meta)


class ProposeResolution(ComplaintCommand):
    """Propose a resolution to the customer."""

    action: ClassVar[str] = "propose_resolution"
    proposal: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.propose_resolution(self.proposal, meta)


class ResolveComplaint(ComplaintCommand):
    """Resolve the complaint."""

    action: ClassVar[str] = "resolve"
    resolution: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.resolve(self.resolution, meta)


class VerifyResolution(ComplaintCommand):
    """Record the customer's verification: CSAT, and optionally NPS and effort."""

    action: ClassVar[str] = "verify"
    csat: StrictInt = Field(ge=1, le=5, description="customer satisfaction, 1 (worst) to 5")
    nps: StrictInt | None = Field(None, ge=0, le=10, description="net promoter score, 0 to 10")
    effort: StrictInt | None = Field(None, ge=1, le=7, description="customer effort score, 1 to 7")
    comment: Text | None = None

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.verify(self.csat, self.nps, self.effort, self.comment, meta)


class CloseComplaint(ComplaintCommand):
    """Close (archive) a resolved complaint."""

    action: ClassVar[str] = "close"

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.close(meta)


class ReopenComplaint(ComplaintCommand):
    """Reopen a resolved or closed complaint, with the reason."""

    action: ClassVar[str] = "reopen"
    reason: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.reopen(self.reason, meta)


class EscalateComplaint(ComplaintCommand):
    """Escalate an open complaint to a higher level (1-3)."""

    action: ClassVar[str] = "escalate"
    level: StrictInt = Field(ge=1, le=3)
    reason: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.escalate(self.level, self.reason, meta)


class WithdrawComplaint(ComplaintCommand):
    """The customer withdraws the complaint."""

    action: ClassVar[str] = "withdraw"
    reason: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.withdraw(self.reason, meta)


class MarkDuplicate(ComplaintCommand):
    """Mark the complaint as a duplicate of another one."""

    action: ClassVar[str] = "mark_duplicate"
    duplicate_of: UUID

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.mark_duplicate(self.duplicate_of, meta)


class UpdateFields(ComplaintCommand):
    """Set or clear custom fields (the old and new values are recorded)."""

    action: ClassVar[str] = "update_fields"
    fields: Annotated[FieldValues, Field(min_length=1)]

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.update_fields(self.fields, fields, meta)


class AddTag(ComplaintCommand):
    """Tag the complaint (a tag it has already: answered, nothing recorded)."""

    action: ClassVar[str] = "add_tag"
    tag: Tag

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.add_tag(self.tag, meta)


class RemoveTag(ComplaintCommand):
    """Take a tag off the complaint (a tag it does not have: answered, nothing recorded)."""

    action: ClassVar[str] = "remove_tag"
    tag: Tag

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.remove_tag(self.tag, meta)


class ErasePersonalData(ComplaintCommand):
    """Record that the customer's personal data was erased (issued by the desk's erasure of
    a customer, one per complaint; not a route of its own)."""

    action: ClassVar[str] = "erase_personal_data"
    legal_basis: Text

    def carry_out(self, complaint: Complaint, meta: Meta, policy: SlaPolicy, fields: FieldDefinitions) -> None:
        complaint.erase_personal_data(self.legal_basis, meta)


class EraseCustomer(Command):
    """Erase a customer's personal data: their keys are destroyed, and each of their
    complaints records the erasure. Erasing again changes nothing."""

    action: ClassVar[str] = "erase_personal_data"
    legal_basis: Annotated[str, Field(min_length=3, max_length=500, description=(
        "why the data may be erased, e.g. 'GDPR Art. 17(1)(a): consent withdrawn' or 'PIPL Art. 47: request'"))]


class ErasureResult(BaseModel):
    customer_id: str
    legal_basis: str
    erased_at: datetime
    complaints: list[UUID] = Field(description="the customer's complaints, each with a PersonalDataErased event")
    replayed: bool = Field(description="true when the customer had been erased before: nothing changed")


# The commands on an existing complaint, by the path segment that names them over HTTP.
COMPLAINT_COMMANDS: dict[str, type[ComplaintCommand]] = {
    "triage": TriageComplaint,
    "assign": AssignComplaint,
    "notes": AddNote,
    "contacts": RecordContact,
    "wait-on-customer": WaitOnCustomer,
    "customer-replied": CustomerReplied,
    "propose-resolution": ProposeResolution,
    "resolve": ResolveComplaint,
    "verify": VerifyResolution,
    "close": CloseComplaint,
    "reopen": ReopenComplaint,
    "escalate": EscalateComplaint,
    "withdraw": WithdrawComplaint,
    "mark-duplicate": MarkDuplicate,
    "update-fields": UpdateFields,
    "tags": AddTag,
    "remove-tag": RemoveTag,
}


class Problem(BaseModel):
    """An error: what went wrong and what to do. A 409 adds what it is about (`status`,
    `action`, `current_version`); a 422 is FastAPI's list of `{loc, msg, type}` instead."""

    model_config = ConfigDict(extra="allow")

    detail: str


class CommandResult(Schema):
    complaint_id: UUID
    version: int = Field(description="the complaint's version after the command")
    status: Status = Field(description="the complaint's status after the command")
    command_id: str
    replayed: bool = Field(
        False, description="true when this command id was seen before: nothing new was written"
    )


class ComplaintState(BaseModel):
    """The complaint as it stands (write side view, for clients and auditors)."""

    model_config = ConfigDict(extra="allow")

    id: UUID
    version: int
    status: Status
    registered_at: datetime
    allowed_actions: list[str] = Field(
        default_factory=list,
        description="the commands its status allows and the caller may give it now (`take`-only callers: assign to"
                    " themselves); a page offers these")


class PersonalDataView(Schema):
    """One recorded view of a complaint's personal data."""

    viewer: str = Field(description="the subject of the token that saw it")
    name: str
    roles: list[str]
    via: str = Field(description="what showed it: complaint, audit, search, export")
    at: datetime
