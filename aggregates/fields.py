"""Custom fields: the facts a desk records about a complaint beyond the standard ones
(batch number 批次号, store 门店, tracking number 快递单号, model and firmware ...).

Their definitions are configuration (`aggregates/fields.toml`, or the file
COMPLAINTS_FIELDS names), versioned like the SLA policy: every FieldsUpdated event records
the version its values were checked against. A definition says a field's type, for which
categories it is (none: every complaint), its rules (pattern, range, length, options) and
optionally the status it is required at. Definitions are never deleted: a field no longer
wanted is retired (`retired_in`), so its values stay readable in the history and the
state but cannot be set; an option no longer offered is retired the same way. A retired
definition is also the record of what the stored values are: defining the name again,
with another type or the same, is refused at load, naming the field.

Pure domain code: the only I/O is `load_field_definitions` reading a TOML file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from aggregates.complaint import Status
from aggregates.personal_text import find_personal

DEFAULT_FIELDS_PATH = Path(__file__).with_name("fields.toml")

FieldType = Literal["text", "number", "boolean", "date", "single_select", "multi_select", "attachment", "geolocation"]
SELECTS = frozenset({"single_select", "multi_select"})
# Patterns a definition may name instead of writing a regular expression: what
# aggregates.personal_text finds as that kind must be the whole value.
NAMED_PATTERNS: dict[str, tuple[str, str]] = {  # name -> (personal_text kind, example)
    "mainland_mobile": ("mobile", "13812345678"),
    "email": ("email", "name@example.com"),
}
DEFAULT_MAX_LENGTH = 2_000

FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Code = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")]
Words = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Definition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(Definition):
    """What people read: in English and in Chinese."""

    en: Words
    zh: Words


class Option(Definition):
    """One choice of a select field: its stored code and its label."""

    value: Code
    en: Words
    zh: Words
    retired: bool = Field(False, description="no longer offered: stored values keep it, new ones may not choose it")


class AttachmentRef(BaseModel):
    """A file in the blob store, as an attachment field holds it (the file is the attachments' API's)."""

    model_config = ConfigDict(extra="forbid")

    sha256: Annotated[str, Strict(), StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    name: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=200)]
    size: Annotated[int, Strict(), Field(ge=0)]
    media_type: Annotated[str, Strict(), StringConstraints(
        max_length=200, pattern=r"^[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*$")]


class Geolocation(BaseModel):
    """A place: latitude and longitude in degrees (WGS 84)."""

    model_config = ConfigDict(extra="forbid")

    lat: Annotated[float, Strict(), Field(ge=-90, le=90, allow_inf_nan=False)]
    lon: Annotated[float, Strict(), Field(ge=-180, le=180, allow_inf_nan=False)]


class FieldDefinition(Definition):
    name: FieldName
    type: FieldType
    label: Label
    categories: tuple[Code, ...] = Field((), description="the categories it is for; none: every complaint")
    required_at: Status | None = Field(None, description="a complaint enters this status only with a value")
    options: tuple[Option, ...] = Field((), description="single_select and multi_select: the choices")
    pattern: str | None = Field(None, description="text: mainland_mobile, email, or a regular expression"
                                                   " the whole value matches")
    max_length: int | None = Field(None, ge=1, le=20_000, description=f"text: at most (default {DEFAULT_MAX_LENGTH})")
    min: float | date | None = Field(None, description="number or date: the least value allowed")
    max: float | date | None = Field(None, description="number or date: the greatest value allowed")
    retired_in: str | None = Field(None, description="the definitions version that retired it: its values stay"
                                                      " readable, new ones are refused")
    _value: TypeAdapter[Any] | None = PrivateAttr(None)  # made on first use, once the rules are checked

    @model_validator(mode="after")
    def _rules_fit_the_type(self) -> FieldDefinition:
        def refuse(why: str) -> ValueError:
            return ValueError(f"field {self.name}: {why}")

        if (self.type in SELECTS) != bool(self.options):
            raise refuse("single_select and multi_select fields list options, and only they do")
        values = [option.value for option in self.options]
        if twice := sorted({v for v in values if values.count(v) > 1}):
            raise refuse(f"options listed more than once: {', '.join(twice)}")
        if self.options and all(option.retired for option in self.options):
            raise refuse("every option is retired: retire the field instead")
        if (self.pattern is not None or self.max_length is not None) and self.type != "text":
            raise refuse("pattern and max_length are for text fields")
        if self.pattern is not None and self.pattern not in NAMED_PATTERNS:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise refuse(f"pattern {self.pattern!r} is not a regular expression ({error})") from None
        for bound in (self.min, self.max):
            if bound is not None and not (self.type == "number" and isinstance(bound, float)
                                          or self.type == "date" and isinstance(bound, date)):
                raise refuse("min and max are numbers for number fields and dates (YYYY-MM-DD) for date fields")
        if self.min is not None and self.max is not None and self.min > self.max:  # type: ignore[operator]
            raise refuse(f"min {self.min} is above max {self.max}")
        if self.retired_in is not None and self.required_at is not None:
            raise refuse("a retired field cannot be required")
        return self

    def _value_type(self) -> Any:
        """The type a value of this field must have, with its rules."""
        if self.type == "text":
            return Annotated[str, Strict(), StringConstraints(min_length=1, max_length=self.max_length
                                                              or DEFAULT_MAX_LENGTH), AfterValidator(self._matches)]
        if self.type == "number":
            return Annotated[float, Strict(), Field(ge=self.min, le=self.max, allow_inf_nan=False)]
        if self.type == "boolean":
            return Annotated[bool, Strict()]
        if self.type == "date":
            return Annotated[str, Strict(), AfterValidator(self._date)]
        offered = Literal[tuple(option.value for option in self.options if not option.retired)]  # type: ignore[misc]
        if self.type == "single_select":
            return offered
        if self.type == "multi_select":
            return Annotated[list[offered], Strict(), Field(min_length=1),  # type: ignore[valid-type]
                             AfterValidator(lambda chosen: list(dict.fromkeys(chosen)))]  # each once, in order
        return AttachmentRef if self.type == "attachment" else Geolocation

    def _matches(self, text: str) -> str:
        if self.pattern is None:
            return text
        if self.pattern in NAMED_PATTERNS:
            kind, example = NAMED_PATTERNS[self.pattern]
            found = find_personal(text)
            if len(found) == 1 and found[0].kind == kind and (found[0].start, found[0].end) == (0, len(text)):
                return text
            raise PydanticCustomError("string_pattern_mismatch", "should be a {pattern} value such as {example}",
                                      {"pattern": self.pattern, "example": example})
        if re.fullmatch(self.pattern, text) is None:
            raise PydanticCustomError("string_pattern_mismatch", "should match the pattern {pattern}",
                                      {"pattern": self.pattern})
        return text

    def _date(self, text: str) -> str:
        try:
            day = date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
        except ValueError:
            day = None
        if day is None:
            raise PydanticCustomError("date_parsing", "should be a date written YYYY-MM-DD, such as 2026-11-23")
        if isinstance(self.min, date) and day < self.min:
            raise PydanticCustomError("greater_than_equal", "should be {ge} or later", {"ge": self.min.isoformat()})
        if isinstance(self.max, date) and day > self.max:
            raise PydanticCustomError("less_than_equal", "should be {le} or earlier", {"le": self.max.isoformat()})
        return text

    def applies_to(self, category: str | None) -> bool:
        return not self.categories or category in self.categories

    def value_of(self, value: Any) -> Any:
        """`value` checked against this field's type and rules, as JSON stores it
        (raises pydantic's ValidationError)."""
        if self._value is None:
            self._value = TypeAdapter(self._value_type())
        return self._value.dump_python(self._value.validate_python(value), mode="json")


class FieldValuesInvalid(ValueError):
    """Field values a command may not record (HTTP 422): each problem with its place
    (`loc`, from `fields`), pydantic's error type, words and context."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems))
        self.problems = problems


def _problem(kind: str, loc: tuple[Any, ...], msg: str, **ctx: str) -> dict[str, Any]:
    return {"type": kind, "loc": ("fields", *loc), "msg": msg.format(**ctx), "ctx": ctx}


class FieldDefinitions(Definition):
    """The fields a desk records, at one version."""

    version: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    fields: tuple[FieldDefinition, ...] = ()
    _by_name: dict[str, FieldDefinition] = PrivateAttr()

    @model_validator(mode="after")
    def _each_name_once(self) -> FieldDefinitions:
        seen: dict[str, FieldDefinition] = {}
        for field in self.fields:
            first = seen.setdefault(field.name, field)
            if first is field:
                continue
            old, new = (first, field) if first.retired_in else (field, first)
            if not old.retired_in or new.retired_in:
                raise ValueError(f"field {field.name}: defined more than once")
            if old.type != new.type:
                raise ValueError(
                    f"field {field.name}: its stored values are {old.type} values (retired in {old.retired_in}),"
                    f" which a {new.type} field cannot read: give the {new.type} field a new name")
            raise ValueError(f"field {field.name}: both defined and retired (in {old.retired_in}): remove the"
                             " retired entry to bring it back, or the other to keep it retired")
        return self

    def model_post_init(self, context: Any) -> None:
        self._by_name = {field.name: field for field in self.fields}

    def __getitem__(self, name: str) -> FieldDefinition:
        return self._by_name[name]

    def changes(self, current: Mapping[str, Any], values: Mapping[str, Any],
                category: str | None) -> dict[str, dict[str, Any]]:
        """What setting `values` (null clears a field) on a complaint of `category` whose
        fields are `current` changes: `{name: {"before", "after"}}`, the values as JSON
        holds them, unchanged ones left out. Raises FieldValuesInvalid naming every field
        that is unknown, retired, not for this category, or whose value breaks its rules."""
        problems: list[dict[str, Any]] = []
        changes: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            field = self._by_name.get(name)
            if field is None:
                known = ", ".join(f.name for f in self.fields if f.retired_in is None) or "none"
                problems.append(_problem("field_unknown", (name,), "no field {field} is defined (version {version});"
                                         " the fields are: {known}", field=name, version=self.version, known=known))
                continue
            if field.retired_in is not None:
                problems.append(_problem("field_retired", (name,), "field {field} was retired in version {retired_in}:"
                                         " its values stay readable but cannot be set", field=name,
                                         retired_in=field.retired_in))
                continue
            if not field.applies_to(category):
                problems.append(_problem("field_not_applicable", (name,), "field {field} is for complaints of the"
                                         " categories {categories} only, not {category}", field=name,
                                         categories=", ".join(field.categories), category=category or "untriaged"))
                continue
            try:
                after = None if value is None else field.value_of(value)
            except ValidationError as error:
                problems += [{"type": e["type"], "loc": ("fields", name, *e["loc"]), "msg": e["msg"],
                              "ctx": e.get("ctx") or {}} for e in error.errors(include_url=False, include_input=False)]
                continue
            if after != current.get(name):
                changes[name] = {"before": current.get(name), "after": after}
        if problems:
            raise FieldValuesInvalid(problems)
        return changes

    def require(self, current: Mapping[str, Any], category: str | None, status: str) -> None:
        """Raise FieldValuesInvalid naming each field required at `status` that a complaint
        of `category` entering it has no value for."""
        missing = [_problem("field_required", (field.name,), "field {field} is required before a complaint is"
                            " {status}: set it first (update-fields)", field=field.name, status=status)
                   for field in self.fields if field.required_at == status and field.retired_in is None
                   and field.applies_to(category) and current.get(field.name) is None]
        if missing:
            raise FieldValuesInvalid(missing)


def load_field_definitions(path: str | Path | None = None) -> FieldDefinitions:
    """The definitions of a file; None reads the packaged aggregates/fields.toml."""
    p = Path(path) if path is not None else DEFAULT_FIELDS_PATH
    with p.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            e.add_note(f"while reading field definitions {p}")
            raise
    try:
        return FieldDefinitions.model_validate(data)
    except ValueError as e:  # pydantic.ValidationError; keep its type, name the file
        e.add_note(f"while loading field definitions {p}")
        raise
