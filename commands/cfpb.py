"""Import a CFPB-format complaints CSV as a stream of commands through the ComplaintDesk.

Public data of the US Consumer Financial Protection Bureau (Consumer Complaint Database,
CC0). Each row becomes the life of one complaint, told as ordinary commands validated by
the same pydantic models as the HTTP API and carried out by the same aggregate methods:

| CFPB column | our command |
|---|---|
| Complaint ID | the command ids (`cfpb-<id>`, `cfpb-<id>-triage`, ...): re-importing is idempotent |
| Date received | register, at 12:00 UTC that day (the same date in every zone from UTC-11 to UTC+11) |
| Submitted via | channel, as it is: Web, Phone, Email, Referral, Postal mail, Fax -> web, phone, email, referral, postal_mail, fax (an unknown one -> other) |
| Product | product |
| Issue | category (and the title); Sub-issue and the narrative, whole, go into the description |
| Sub-product, Issue, Sub-issue, Tags, Company public response, Consumer disputed?, Timely response? | custom fields (`CFPB_FIELDS`) set at registration: sub_product, issue, sub_issue, cfpb_tags, company_public_response, consumer_disputed, timely_response (yes/no; N/A or empty: not set) |
| State | region |
| Date received | triage, same instant: category = Issue, severity normal, under the CFPB policy below |
| Company, Date sent to company | assign to team = Company, at 12:00 UTC on the date sent |
| Company response to consumer | resolve (resolution = the response) and close; "In progress" stays open |
| Timely response? | when the resolution happened (the CSV has no response date): a timely response is placed at the hand-over (the earliest instant the data allows), an untimely one 16 days after receipt (or at the hand-over if later) |

The CFPB policy (`CFPB_POLICY`, version "cfpb-15-days") gives every complaint 15 calendar
days (the CFPB's response window) on the `always` calendar, for first response and
resolution. Our clocks count from registration (Date received), the CFPB's from the day
the company got the complaint, so a complaint the CFPB forwarded more than 15 days after
receipt is late in our read model even when the CFPB calls the response timely: the
read model's resolution attainment equals the CSV's share of rows that are timely AND
were forwarded within 15 days (tests/test_cfpb.py checks exactly that, and reports the
CFPB's own rate beside it). The CFPB's own timely-response rate per company is asked of
the read models through the `timely_response` field (tests/test_cfpb.py checks it exactly).

Nothing is dropped: a description longer than the commands take (MAX_DESCRIPTION) would
be cut, and the report counts such cuts (`cut`); none of the samples needs one.

New complaints are saved in bulk (one event store transaction per chunk of complaints);
a complaint already in the store goes through `ComplaintDesk.execute` command by
command, where command ids already seen are answered from history and new ones (an "In
progress" complaint that now has a response) are applied.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time as clock_time, timedelta
from pathlib import Path
from typing import Any

from eventsourcing.persistence import IntegrityError
from pydantic import ValidationError
from tqdm import tqdm

from aggregates.access import Principal
from aggregates.complaint import Complaint, Meta, complaint_id_for
from aggregates.fields import FieldDefinitions
from aggregates.sla import SlaPolicy
from commands.desk import ComplaintDesk
from commands.models import (
    MAX_DESCRIPTION, AssignComplaint, CloseComplaint, RegisterComplaint, ResolveComplaint, TriageComplaint,
    fingerprint,
)

log = logging.getLogger(__name__)

# The importer acts as itself, except where the data says the company did (its response).
IMPORTER = Principal("cfpb-import", "CFPB importer", frozenset({"importer"}))


def _company(name: str) -> Principal:
    return Principal(name, name, frozenset({"importer"}))
IN_PROGRESS = "In progress"
WINDOW_DAYS = 15
CHANNELS = {"web": "web", "phone": "phone", "email": "email", "referral": "referral", "postal mail": "postal_mail",
            "fax": "fax"}
YES_NO = {"yes": True, "true": True, "no": False, "false": False}
TAGS = {"Older American": "older_american", "Servicemember": "servicemember"}


def _text_field(name: str, en: str, zh: str, max_length: int = 1_000) -> dict[str, Any]:
    return {"name": name, "type": "text", "label": {"en": en, "zh": zh}, "max_length": max_length}


# The CFPB columns our commands have no place for, kept as custom fields (docs/fields.md).
CFPB_FIELDS = FieldDefinitions.model_validate({"version": "cfpb-1", "fields": [
    _text_field("sub_product", "Sub-product", "子产品"),
    _text_field("issue", "Issue", "问题"),
    _text_field("sub_issue", "Sub-issue", "子问题"),
    {"name": "cfpb_tags", "type": "multi_select", "label": {"en": "CFPB tags", "zh": "CFPB 标签"}, "options": [
        {"value": "older_american", "en": "Older American", "zh": "老年人"},
        {"value": "servicemember", "en": "Servicemember", "zh": "军人"}]},
    _text_field("company_public_response", "Company public response", "公司公开答复"),
    {"name": "consumer_disputed", "type": "boolean", "label": {"en": "Consumer disputed", "zh": "消费者有异议"}},
    {"name": "timely_response", "type": "boolean", "label": {"en": "Timely response", "zh": "及时答复"}},
]})
CFPB_POLICY = SlaPolicy.model_validate({
    "version": "cfpb-15-days",
    "warning_before_minutes": 24 * 60,
    "calendars": {"always": {"timezone": "UTC", "week": {
        d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}},
    "rules": [{"calendar": "always", "targets": {
        "first_response_minutes": WINDOW_DAYS * 24 * 60, "resolution_minutes": WINDOW_DAYS * 24 * 60}}],
})


@dataclass
class ImportReport:
    rows: int = 0
    new: int = 0  # complaints created
    existing: int = 0  # complaints already in the store (their new commands applied)
    commands: int = 0  # commands carried out (not counting replays)
    skipped: int = 0  # rows that could not be turned into commands
    cut: int = 0  # descriptions longer than MAX_DESCRIPTION, cut there
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"imported {self.rows:,} CFPB rows in {self.seconds:.1f}s: {self.new:,} new complaints,"
                f" {self.existing:,} already there, {self.commands:,} commands, {self.skipped:,} rows skipped,"
                f" {self.cut:,} descriptions cut at {MAX_DESCRIPTION:,} characters")


def _day(value: str) -> date:
    value = value.strip()
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"not a date: {value!r}")


def _noon(day: date) -> datetime:
    return datetime.combine(day, clock_time(12), UTC)


def _text(value: str | None, limit: int | None) -> str | None:
    value = (value or "").strip()
    return value[:limit] if value else None


def description_cut(row: dict[str, str]) -> bool:
    """Whether the row's description is longer than a command takes (and so cut)."""
    parts = [row.get(column) or "" for column in ("Issue", "Sub-issue", "Consumer complaint narrative")]
    return sum(len(part.strip()) + 2 for part in parts if part.strip()) - 2 > MAX_DESCRIPTION


def fields_of(row: dict[str, str]) -> dict[str, Any]:
    """The row's CFPB-only facts as CFPB_FIELDS values (empty and N/A ones left out)."""
    fields: dict[str, Any] = {name: _text(row.get(column), 1_000) for name, column in (
        ("sub_product", "Sub-product"), ("issue", "Issue"), ("sub_issue", "Sub-issue"),
        ("company_public_response", "Company public response"))}
    tags = [TAGS[tag.strip()] for tag in (row.get("Tags") or "").split(",") if tag.strip() in TAGS]
    fields["cfpb_tags"] = tags or None
    for name, column in (("consumer_disputed", "Consumer disputed?"), ("timely_response", "Timely response?")):
        fields[name] = YES_NO.get((row.get(column) or "").strip().lower())
    return {name: value for name, value in fields.items() if value is not None}


def commands_for(row: dict[str, str]) -> list[tuple[str, Any, Principal]]:
    """The commands telling one CSV row's story, in order: ("register" | path, command, by whom)."""
    cid = row["Complaint ID"].strip()
    if not cid:
        raise ValueError("no Complaint ID")
    received = _day(row["Date received"])
    sent = max(_day(row["Date sent to company"]), received) if (row.get("Date sent to company") or "").strip() else received
    issue = _text(row.get("Issue"), 100) or "Unspecified issue"
    company = _text(row.get("Company"), 100) or "Unknown company"
    details = [d for d in (_text(row.get("Sub-issue"), 300), _text(row.get("Consumer complaint narrative"), None)) if d]
    key = f"cfpb-{cid}"
    zip_code = _text(row.get("ZIP code"), 100)
    out: list[tuple[str, Any, Principal]] = [("register", RegisterComplaint(
        command_id=key, occurred_at=_noon(received),
        channel=CHANNELS.get((row.get("Submitted via") or "").strip().lower(), "other"),
        customer={"id": key, "tier": "regular"},
        customer_personal={"name": "CFPB consumer", "contact": f"ZIP {zip_code}" if zip_code else "unknown"},
        title=issue, description=("\n\n".join([issue, *details]))[:MAX_DESCRIPTION],
        product=_text(row.get("Product"), 100), region=_text(row.get("State"), 100), fields=fields_of(row),
    ), IMPORTER)]
    out.append(("triage", TriageComplaint(
        command_id=f"{key}-triage", occurred_at=_noon(received), correlation_id=key,
        category=issue, severity="normal", impact="one_user"), IMPORTER))
    out.append(("assign", AssignComplaint(
        command_id=f"{key}-assign", occurred_at=_noon(sent), correlation_id=key,
        team=company, agent=None), IMPORTER))
    response = (row.get("Company response to consumer") or "").strip()
    if response and response != IN_PROGRESS:
        timely = (row.get("Timely response?") or "").strip().lower() in ("yes", "true")
        late = max(_noon(sent), _noon(received) + timedelta(days=WINDOW_DAYS + 1))
        at = _noon(sent) if timely else late
        out.append(("resolve", ResolveComplaint(
            command_id=f"{key}-resolve", occurred_at=at, correlation_id=key,
            resolution=response), _company(company)))
        out.append(("close", CloseComplaint(
            command_id=f"{key}-close", occurred_at=at, correlation_id=key), IMPORTER))
    return out


def _meta(command: Any, principal: Principal) -> Meta:
    return Meta(principal.subject, command.occurred_at, command.command_id,
                command.correlation_id or command.command_id, acted_as=principal.acted_as(),
                fingerprint=fingerprint(command, principal.subject))


def rows(path: str | Path) -> Iterator[dict[str, str]]:
    """The CSV's rows as dicts, streamed (the full CFPB export is several GB)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        yield from csv.DictReader(f)


def import_cfpb(
    desk: ComplaintDesk,
    path: str | Path,
    *,
    chunk: int = 500,
    limit: int | None = None,
    progress: bool = True,
) -> ImportReport:
    """Send every row of a CFPB CSV through the desk as commands (see the module doc)."""
    started = time.perf_counter()
    report = ImportReport()
    # The CFPB's window and fields for these complaints.
    policy, desk.sla_policy = desk.sla_policy, CFPB_POLICY
    definitions, desk.field_definitions = desk.field_definitions, CFPB_FIELDS
    try:
        pending: list[list[tuple[str, Any, Principal]]] = []
        with tqdm(desc="CFPB rows", unit="row", disable=not progress) as bar:
            for n, row in enumerate(rows(path)):
                if limit is not None and n >= limit:
                    break
                report.rows += 1
                bar.update(1)
                try:
                    pending.append(commands_for(row))
                    report.cut += description_cut(row)
                except (ValueError, KeyError, ValidationError) as error:
                    report.skipped += 1
                    log.warning("row %d (Complaint ID %s) skipped: %s", n + 2, row.get("Complaint ID"), error)
                    continue
                if len(pending) >= chunk:
                    _send(desk, pending, report)
                    pending = []
            if pending:
                _send(desk, pending, report)
    finally:
        desk.sla_policy, desk.field_definitions = policy, definitions
    report.seconds = time.perf_counter() - started
    log.info("%s", report.summary())
    return report


def _exists(desk: ComplaintDesk, command_id: str) -> bool:
    return bool(desk.recorder.select_events(complaint_id_for(command_id), limit=1))


def _send(desk: ComplaintDesk, lives: list[list[tuple[str, Any, Principal]]], report: ImportReport) -> None:
    """New complaints in one transaction; known ones command by command (idempotent)."""
    fresh, known = [], []
    for life in lives:
        (known if _exists(desk, life[0][1].command_id) else fresh).append(life)
    built = []
    for life in fresh:
        _, register, registrar = life[0]
        meta = _meta(register, registrar)
        complaint = Complaint(**register.event_fields(), **meta.fields())
        if register.fields:  # as the desk registers: the values right after, in the same save
            complaint.update_fields(register.fields, desk.field_definitions, meta)
        for _, command, principal in life[1:]:
            command.carry_out(complaint, _meta(command, principal), desk.sla_policy, desk.field_definitions)
        built.append(complaint)
    if built:
        try:
            desk.save(*built)
            report.new += len(built)
            report.commands += sum(len(life) for life in fresh)
        except IntegrityError:  # registered meanwhile by someone else: the slow way
            known += fresh
    for life in known:
        report.existing += 1
        _, register, registrar = life[0]
        first = desk.register(register, registrar)
        report.commands += not first.replayed
        for _, command, principal in life[1:]:
            result = desk.execute(first.complaint_id, command, principal)
            report.commands += not result.replayed
