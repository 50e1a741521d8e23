"""Custom fields and tags on the write side, through the command API as `complaints run` builds it.

A desk defines its own fields (docs/fields.md): values arrive at registration, at triage
and by update-fields, each change recorded with the value before and after and the
definitions' version; a value the definitions refuse is a 422 naming the field and
records nothing. Tags are kept normalised, once each.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aggregates.access import Principal
from aggregates.fields import load_field_definitions
from aggregates.tags import normalised_tag
from commands.desk import ComplaintDesk
from commands.models import EraseCustomer
from complaints.settings import Settings
from complaints.store import open_desk
from complaints.wiring import Wiring
from consumers.stored_events import envelopes as envelopes_of
from tests.identity import ISSUER_KEY, bearer

DEFINITIONS = """
version = "desk-7"

[[fields]]
name = "tracking_number"
type = "text"
label = { en = "Tracking number", zh = "快递单号" }
categories = ["logistics"]
pattern = "[A-Za-z0-9]{8,30}"
required_at = "resolved"

[[fields]]
name = "callback_number"
type = "text"
label = { en = "Call-back number", zh = "回访电话" }
pattern = "mainland_mobile"

[[fields]]
name = "reply_email"
type = "text"
label = { en = "Reply e-mail", zh = "回复邮箱" }
pattern = "email"

[[fields]]
name = "case_notes"
type = "text"
label = { en = "Case notes", zh = "案情备注" }
max_length = 200

[[fields]]
name = "amount"
type = "number"
label = { en = "Amount disputed", zh = "争议金额" }
min = 0
max = 10000

[[fields]]
name = "refund_issued"
type = "boolean"
label = { en = "Refund issued", zh = "已退款" }

[[fields]]
name = "purchase_date"
type = "date"
label = { en = "Purchase date", zh = "购买日期" }
min = 2000-01-01
max = 2030-12-31

[[fields]]
name = "store"
type = "single_select"
label = { en = "Store", zh = "门店" }
options = [
  { value = "online", en = "Online shop", zh = "网店" },
  { value = "sh-xuhui", en = "Shanghai Xuhui", zh = "上海徐汇店" },
  { value = "bj-old", en = "Beijing (closed)", zh = "北京店（已关闭）", retired = true },
]

[[fields]]
name = "symptoms"
type = "multi_select"
label = { en = "Symptoms", zh = "故障现象" }
options = [
  { value = "smoke", en = "Smoke", zh = "冒烟" },
  { value = "noise", en = "Noise", zh = "异响" },
  { value = "crash", en = "Crashes", zh = "闪退" },
]

[[fields]]
name = "photo"
type = "attachment"
label = { en = "Photo", zh = "照片" }

[[fields]]
name = "location"
type = "geolocation"
label = { en = "Where", zh = "地点" }
"""
# The same desk a version later: the legacy code is retired (a field once in use).
LEGACY = """
[[fields]]
name = "legacy_code"
type = "text"
label = { en = "Legacy code", zh = "旧编码" }
"""
RETIRED = LEGACY + 'retired_in = "desk-8"\n'

NEW_COMPLAINT: dict[str, Any] = {
    "channel": "phone", "customer": {"id": "C-3003", "tier": "regular"},
    "customer_personal": {"name": "王芳", "contact": "13900001111"},
    "title": "快递一直没到", "description": "订单 ORD-9 已经十天没有物流更新", "product": "ebike",
}
PHOTO = {"sha256": "ab" * 32, "name": "王芳的电池.jpg", "size": 52_133, "media_type": "image/jpeg"}
CLEANED = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@dataclass
class Desk:
    """The command API as `complaints run` serves it, over a SQLite store of its own."""

    client: TestClient
    desk: ComplaintDesk
    wiring: Wiring

    def register(self, **changes: Any) -> dict[str, Any]:
        answer = self.client.post("/complaints", json=NEW_COMPLAINT | changes)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def send(self, complaint_id: str, path: str, **body: Any) -> Any:
        return self.client.post(f"/complaints/{complaint_id}/{path}", json=body)

    def state(self, complaint_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/complaints/{complaint_id}").json())

    def events(self) -> list[Any]:
        return envelopes_of(self.desk.mapper, self.desk.recorder.select_notifications(1, 10_000))


def settings_for(tmp_path: Path, definitions: str, **overrides: Any) -> Settings:
    fields = tmp_path / "fields.toml"
    fields.write_text(definitions, encoding="utf-8")
    return Settings(**{"store": "sqlite", "sqlite_path": tmp_path / "events.sqlite", "fields": fields,
                       "dev_issuer_key": ISSUER_KEY, "secrets_key": tmp_path / "secrets.key",
                       "links_key": tmp_path / "links.key", "master_key": tmp_path / "master.key",
                       "chain_key": tmp_path / "chain.key", "rate_limit_commands": "100000/second",
                       "rate_limit_reads": "100000/second"} | overrides)


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Any]:
    """Opens a desk (several over one store, one after the other: definitions changing)."""
    wirings: list[Wiring] = []

    def open_with(definitions: str, **overrides: Any) -> Desk:
        wiring = Wiring(settings_for(tmp_path, definitions, **overrides))
        wirings.append(wiring)
        desk = wiring.desk()
        return Desk(TestClient(wiring.command_app(desk), headers=bearer()), desk, wiring)

    yield open_with
    for wiring in wirings:
        wiring.close()


@pytest.fixture
def desk(opened: Any) -> Desk:
    return opened(DEFINITIONS)


def logistics_complaint(desk: Desk) -> str:
    cid = desk.register()["complaint_id"]
    assert desk.send(cid, "triage", category="logistics", severity="normal").status_code == 200
    return str(cid)


# ---------------------------------------------------------------------------- values arrive
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_values_at_registration_triage_and_update_are_recorded_before_and_after(
        opened: Any, store: str, request: pytest.FixtureRequest) -> None:
    overrides: dict[str, Any] = {}
    if store == "postgres":
        from tests.conftest import postgres_settings

        pg = postgres_settings(request.getfixturevalue("postgres_address"))
        overrides = {k: getattr(pg, k) for k in ("store", "postgres_host", "postgres_port", "postgres_schema")}
    desk = opened(DEFINITIONS, **overrides)
    created = desk.register(fields={"store": "online", "callback_number": "13812345678"})
    cid = created["complaint_id"]
    assert created["version"] == 2, "the registration's answer is the version after its fields"
    triaged = desk.send(cid, "triage", category="logistics", severity="normal",
                        fields={"tracking_number": "SF1234567890"})
    assert triaged.json()["version"] == 4, triaged.text
    updated = desk.send(cid, "update-fields", fields={"store": "sh-xuhui", "amount": 12.5, "callback_number": None,
                                                       "tracking_number": "SF1234567890"})
    assert updated.status_code == 200 and updated.json()["version"] == 5, updated.text

    assert desk.state(cid)["fields"] == {"store": "sh-xuhui", "tracking_number": "SF1234567890", "amount": 12.5}
    events = [e for e in desk.events() if e.complaint_id == uuid.UUID(cid)]
    assert [e.event_type for e in events] == ["Registered", "FieldsUpdated", "Triaged", "FieldsUpdated",
                                              "FieldsUpdated"]
    assert {e.command_id for e in events[:2]} == {created["command_id"]}
    assert {e.command_id for e in events[2:4]} == {triaged.json()["command_id"]}
    assert [e.payload["definitions_version"] for e in events if e.event_type == "FieldsUpdated"] == ["desk-7"] * 3
    # Only what changed, with what it was; the phone number travels masked, its original sealed.
    assert events[4].payload["changes"] == {
        "store": {"before": "online", "after": "sh-xuhui"}, "amount": {"before": None, "after": 12.5},
        "callback_number": {"before": "138****5678", "after": None}}
    assert events[1].payload["changes"]["callback_number"] == {"before": None, "after": "138****5678"}
    assert desk.desk.keyring is not None
    assert desk.desk.keyring.open(events[1].payload["sealed"], uuid.UUID(cid), 2)["changes"]["callback_number"] == {
        "before": None, "after": "13812345678"}
    # The same command again is the first answer; the past is still there.
    again = desk.send(cid, "update-fields", fields={"store": "sh-xuhui", "amount": 12.5, "callback_number": None,
                                                     "tracking_number": "SF1234567890"},
                      command_id=updated.json()["command_id"])
    assert again.json() | {"replayed": False} == updated.json() and again.json()["replayed"]
    then = desk.client.get(f"/complaints/{cid}", params={"version": 2}).json()
    assert then["fields"] == {"store": "online", "callback_number": "13812345678"}


def test_values_equal_to_the_current_ones_record_nothing(desk: Desk) -> None:
    cid = desk.register(fields={"refund_issued": False})["complaint_id"]
    answer = desk.send(cid, "update-fields", fields={"refund_issued": False})
    assert answer.status_code == 200 and answer.json()["version"] == 2
    assert len(desk.events()) == 2


# ---------------------------------------------------------------------------- any value
def valid_values() -> st.SearchStrategy[tuple[str, Any]]:
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=200)
    options = st.lists(st.sampled_from(["smoke", "noise", "crash"]), min_size=1, max_size=3, unique=True)
    return st.one_of(
        st.tuples(st.just("case_notes"), text),
        st.tuples(st.just("tracking_number"), st.text(alphabet="ABCSF0123456789", min_size=8, max_size=30)),
        st.tuples(st.just("callback_number"), st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)),
        st.tuples(st.just("reply_email"), st.from_regex(r"[a-z][a-z0-9.]{0,10}[a-z0-9]@[a-z]{2,9}\.(com|cn)",
                                                         fullmatch=True).filter(lambda v: ".." not in v)),
        st.tuples(st.just("amount"), st.integers(0, 10_000) | st.floats(0, 10_000)),
        st.tuples(st.just("refund_issued"), st.booleans()),
        st.tuples(st.just("purchase_date"), st.dates().filter(lambda d: 2000 <= d.year <= 2030).map(str)),
        st.tuples(st.just("store"), st.sampled_from(["online", "sh-xuhui"])),
        st.tuples(st.just("symptoms"), options),
        st.tuples(st.just("photo"), st.fixed_dictionaries({
            "sha256": st.from_regex(r"[0-9a-f]{64}", fullmatch=True), "name": text.map(lambda t: t[:200]),
            "size": st.integers(0, 2**40), "media_type": st.sampled_from(["image/png", "video/mp4", "audio/ogg"])})),
        st.tuples(st.just("location"), st.fixed_dictionaries({"lat": st.floats(-90, 90), "lon": st.floats(-180, 180)})),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=valid_values())
def test_any_valid_value_round_trips(desk: Desk, value: tuple[str, Any]) -> None:
    name, sent = value
    cid = logistics_complaint(desk)
    answer = desk.send(cid, "update-fields", fields={name: sent})
    assert answer.status_code == 200, answer.text
    assert desk.state(cid)["fields"] == {name: sent}
    # ... and clearing it leaves nothing.
    assert desk.send(cid, "update-fields", fields={name: None}).status_code == 200
    assert desk.state(cid)["fields"] == {}


def invalid_values() -> st.SearchStrategy[tuple[str, Any]]:
    not_text = st.integers() | st.booleans() | st.lists(st.text(alphabet="ab", max_size=3), max_size=2) | st.just(
        {"a": 1})
    return st.one_of(
        st.tuples(st.from_regex(r"x_[a-z]{1,10}", fullmatch=True), st.just("x")),  # no such field
        st.tuples(st.just("legacy_code"), st.just("L-1")),  # not defined here at all
        st.tuples(st.sampled_from(["case_notes", "callback_number", "reply_email", "tracking_number"]), not_text),
        st.tuples(st.just("case_notes"), st.just("") | st.text(alphabet="ab 电", min_size=201, max_size=260)),
        st.tuples(st.just("tracking_number"), st.text(alphabet="-#/ .", min_size=1, max_size=40)),
        st.tuples(st.just("callback_number"), st.sampled_from(["12812345678", "1381234567", "138123456789",
                                                               "call 13812345678", "010-12345678"])),
        st.tuples(st.just("reply_email"), st.sampled_from(["name", "name@", "@example.com", "a@b", "13812345678"])),
        st.tuples(st.just("amount"), st.sampled_from(["12", True, [1], {"v": 1}])
                  | st.floats(max_value=-0.001, allow_infinity=False)
                  | st.floats(min_value=10_000.001, allow_infinity=False)),
        st.tuples(st.just("refund_issued"), st.sampled_from(["true", 1, 0, "yes", [True]])),
        st.tuples(st.just("purchase_date"), st.sampled_from(["2026-13-01", "2026-02-30", "2026-1-1", "20260101",
                                                             "1999-12-31", "2031-01-01", "2026-01-01T00:00:00"])
                  | st.integers()),
        st.tuples(st.just("store"), st.sampled_from(["bj-old", "ONLINE", "", "elsewhere", ["online"], 1])),
        st.tuples(st.just("symptoms"), st.sampled_from([[], "smoke", ["fire"], ["smoke", 1], [["smoke"]]])),
        st.tuples(st.just("photo"), st.sampled_from([
            PHOTO | {"sha256": "AB" * 32}, PHOTO | {"sha256": "ab"}, {k: v for k, v in PHOTO.items() if k != "size"},
            PHOTO | {"size": -1}, PHOTO | {"size": "1"}, PHOTO | {"media_type": "jpeg"}, PHOTO | {"colour": "red"},
            "ab" * 32])),
        st.tuples(st.just("location"), st.sampled_from([
            {"lat": 90.5, "lon": 0}, {"lat": 0, "lon": -180.5}, {"lat": "31.2", "lon": 121.4}, {"lat": 31.2},
            [31.2, 121.4], {"lat": True, "lon": 1}])),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=invalid_values(), where=st.sampled_from(["update-fields", "triage", "register"]))
def test_any_invalid_value_is_a_422_naming_the_field_and_records_nothing(
        desk: Desk, value: tuple[str, Any], where: str) -> None:
    name, sent = value
    cid = logistics_complaint(desk)
    before = len(desk.events())
    if where == "register":
        answer = desk.client.post("/complaints", json=NEW_COMPLAINT | {"fields": {name: sent}})
    elif where == "triage":
        answer = desk.send(cid, "triage", category="logistics", severity="major", fields={name: sent})
    else:
        answer = desk.send(cid, "update-fields", fields={name: sent})
    assert answer.status_code == 422, (name, sent, answer.text)
    assert [e["loc"][:3] for e in answer.json()["detail"]] == [["body", "fields", name]], answer.text
    assert len(desk.events()) == before
    state = desk.state(cid)
    assert (state["fields"], state["severity"]) == ({}, "normal")


def test_a_field_of_another_category_and_many_problems_at_once(desk: Desk) -> None:
    cid = desk.register()["complaint_id"]  # untriaged: category-bound fields are not for it yet
    answer = desk.send(cid, "update-fields", fields={"tracking_number": "SF1234567890", "amount": -1, "colour": 1,
                                                     "store": "online"})
    assert answer.status_code == 422
    problems = {e["loc"][2]: e["type"] for e in answer.json()["detail"]}
    assert problems == {"tracking_number": "field_not_applicable", "amount": "greater_than_equal",
                        "colour": "field_unknown"}
    assert desk.state(cid)["fields"] == {}, "one bad value: none of them is recorded"


def test_errors_come_in_chinese_too(desk: Desk) -> None:
    cid = desk.register()["complaint_id"]
    answer = desk.client.post(f"/complaints/{cid}/update-fields", json={"fields": {"colour": "red"}},
                              headers={"Accept-Language": "zh-CN"})
    assert answer.status_code == 422 and answer.headers["content-language"] == "zh-CN"
    assert answer.json()["detail"][0]["msg"].startswith("未定义自定义字段 colour"), answer.text
    english = desk.send(cid, "update-fields", fields={"colour": "red"}).json()["detail"][0]["msg"]
    assert english.startswith("no field colour is defined (version desk-7)")


# ---------------------------------------------------------------------------- required at a status
def test_a_field_required_before_resolve_refuses_the_resolve_naming_it(desk: Desk) -> None:
    cid = logistics_complaint(desk)
    assert desk.send(cid, "assign", team="logistics", agent="logistics-1").status_code == 200
    before = len(desk.events())
    refused = desk.send(cid, "resolve", resolution="Parcel found")
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == [{
        "type": "field_required", "loc": ["body", "fields", "tracking_number"],
        "msg": "field tracking_number is required before a complaint is resolved: set it first (update-fields)",
        "ctx": {"field": "tracking_number", "status": "resolved"}}]
    assert len(desk.events()) == before and desk.state(cid)["status"] == "assigned"
    # Cleared again after it was set: still required.
    assert desk.send(cid, "update-fields", fields={"tracking_number": "SF1234567890"}).status_code == 200
    assert desk.send(cid, "update-fields", fields={"tracking_number": None}).status_code == 200
    assert desk.send(cid, "resolve", resolution="Parcel found").status_code == 422
    assert desk.send(cid, "update-fields", fields={"tracking_number": "SF1234567890"}).status_code == 200
    assert desk.send(cid, "resolve", resolution="Parcel found").json()["status"] == "resolved"
    # A complaint of another category is not bound by it.
    other = desk.register()["complaint_id"]
    desk.send(other, "triage", category="billing", severity="normal")
    desk.send(other, "assign", team="billing", agent="billing-1")
    assert desk.send(other, "resolve", resolution="Refunded").json()["status"] == "resolved"


# ---------------------------------------------------------------------------- definitions change
def test_a_retired_field_stays_readable_and_cannot_be_set(opened: Any) -> None:
    first = opened(DEFINITIONS + LEGACY)
    cid = first.register(fields={"legacy_code": "L-42"})["complaint_id"]
    first.wiring.close()

    later = opened(DEFINITIONS.replace('"desk-7"', '"desk-8"') + RETIRED)
    assert later.state(cid)["fields"] == {"legacy_code": "L-42"}
    refused = later.send(cid, "update-fields", fields={"legacy_code": "L-43"})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["type"] == "field_retired"
    assert later.send(cid, "update-fields", fields={"legacy_code": None}).status_code == 422
    assert later.state(cid)["fields"] == {"legacy_code": "L-42"}
    # The retired option of a select reads the same way: stored, offered no more.
    assert later.send(cid, "update-fields", fields={"store": "bj-old"}).status_code == 422


@pytest.mark.parametrize(("change", "words"), [
    (RETIRED + LEGACY.replace('"text"', '"number"'),
     "legacy_code: its stored values are text values (retired in desk-8), which a number field cannot read"),
    (RETIRED + LEGACY, "legacy_code: both defined and retired"),
    (LEGACY + LEGACY, "legacy_code: defined more than once"),
    (LEGACY.replace('"text"', '"single_select"'),
     "field legacy_code: single_select and multi_select fields list options"),
    (LEGACY + 'options = [{ value = "a", en = "A", zh = "甲" }, { value = "a", en = "A", zh = "甲" }]\n',
     "field legacy_code: single_select and multi_select fields list options"),
    (LEGACY.replace('"text"', '"single_select"')
     + 'options = [{ value = "a", en = "A", zh = "甲" }, { value = "a", en = "B", zh = "乙" }]\n',
     "field legacy_code: options listed more than once: a"),
    (LEGACY + 'pattern = "[unclosed"\n', "field legacy_code: pattern '[unclosed' is not a regular expression"),
    (LEGACY.replace('"text"', '"number"') + "min = 5\nmax = 1\n", "field legacy_code: min 5.0 is above max 1.0"),
    (LEGACY + 'required_at = "resolved"\nretired_in = "desk-8"\n',
     "field legacy_code: a retired field cannot be required"),
    (LEGACY + 'required_at = "done"\n', "required_at"),
])
def test_a_definitions_change_that_would_invalidate_stored_values_is_refused_at_load(
        tmp_path: Path, change: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        open_desk(settings_for(tmp_path, 'version = "desk-8"\n' + change))
    assert words in str(refused.value)
    assert "while loading field definitions" in "".join(getattr(refused.value, "__notes__", []))


def test_the_packaged_definitions_load() -> None:
    definitions = load_field_definitions(None)
    assert definitions.version and {"batch_number", "store", "tracking_number"} <= {
        f.name for f in definitions.fields}
    assert all(f.label.en and f.label.zh for f in definitions.fields)


# ---------------------------------------------------------------------------- personal data
def test_text_values_are_masked_for_those_who_may_not_see_personal_data_and_erased_with_the_customer(
        desk: Desk) -> None:
    from complaints.identity import DevUser

    cid = desk.register(fields={"case_notes": "请回电 13812345678", "photo": PHOTO, "store": "online"})["complaint_id"]
    quality = bearer(DevUser("q", "Quality", ("quality",)))
    shown = desk.client.get(f"/complaints/{cid}", headers=quality).json()["fields"]
    assert shown == {"case_notes": "请回电 138****5678", "photo": PHOTO | {"name": "[masked]"}, "store": "online"}
    assert desk.state(cid)["fields"]["case_notes"] == "请回电 13812345678"

    admin = Principal("admin-1", "Admin", frozenset({"admin"}))
    desk.desk.erase_customer("C-3003", EraseCustomer(legal_basis="PIPL Art. 47: the customer asked"), admin)
    assert desk.state(cid)["fields"] == {"case_notes": "请回电 138****5678", "photo": PHOTO | {"name": "[erased]"},
                                         "store": "online"}
    stored = next(e for e in desk.events() if e.event_type == "FieldsUpdated")
    assert stored.payload["changes"]["photo"]["after"]["name"] == "[sealed]"
    assert "13812345678" not in str(stored.payload["changes"])


# ---------------------------------------------------------------------------- tags
def test_tags_are_normalised_kept_once_and_removed(desk: Desk) -> None:
    cid = desk.register()["complaint_id"]
    added = desk.send(cid, "tags", tag="  ＶＩＰ   Customer\u3000")
    assert added.status_code == 200 and added.json()["version"] == 2
    again = desk.send(cid, "tags", tag="vip customer")
    assert again.status_code == 200 and again.json()["version"] == 2, "a tag it has: answered, nothing recorded"
    desk.send(cid, "tags", tag="电池")
    assert desk.state(cid)["tags"] == ["vip customer", "电池"]
    assert desk.send(cid, "remove-tag", tag="VIP CUSTOMER").json()["version"] == 4
    assert desk.send(cid, "remove-tag", tag="vip customer").json()["version"] == 4
    assert desk.state(cid)["tags"] == ["电池"]
    kinds = [(e.event_type, e.payload.get("tag")) for e in desk.events()][1:]
    assert kinds == [("TagAdded", "vip customer"), ("TagAdded", "电池"), ("TagRemoved", "vip customer")]


@pytest.mark.parametrize("blank", ["", "   ", "\u3000\u3000", "\t\n"])
def test_an_empty_tag_is_a_422_and_records_nothing(desk: Desk, blank: str) -> None:
    cid = desk.register()["complaint_id"]
    for path in ("tags", "remove-tag"):
        answer = desk.send(cid, path, tag=blank)
        assert answer.status_code == 422, answer.text
        assert [e["loc"] for e in answer.json()["detail"]] == [["body", "tag"]]
    assert len(desk.events()) == 1


@given(CLEANED)
def test_a_normalised_tag_stays_as_it_is(text: str) -> None:
    tag = normalised_tag(text)
    assert normalised_tag(tag) == tag
    assert tag == tag.strip() and "  " not in tag and not any(c.isspace() and c != " " for c in tag)


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_full_width_and_case_make_no_other_tag(text: str) -> None:
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in text)  # ！ to ～: the full-width forms of ! to ~
    assert normalised_tag(f"  {full_width.upper()} ") == normalised_tag(text.lower()) == normalised_tag(text)


def test_nan_is_never_a_number_value() -> None:
    definitions = load_field_definitions(None)
    with pytest.raises(ValueError):
        definitions.changes({}, {"amount_disputed": math.nan}, "billing")


def test_a_retry_from_before_custom_fields_is_the_same_command() -> None:
    """A registration or triage without fields fingerprints as it did before they existed, so
    its retry after the upgrade is answered from history, not refused as a reused id."""
    import hashlib
    import json

    from commands.models import RegisterComplaint, TriageComplaint, _without_personal_data, fingerprint

    for command in (RegisterComplaint(channel="web", customer={"id": "C-1"}, title="t", description="d",
                                      customer_personal={"name": "n", "contact": "c@example.com"}),
                    TriageComplaint(category="billing", severity="minor")):
        body = _without_personal_data(command.model_dump(mode="json", exclude={"command_id", "correlation_id",
                                                                                "fields"}))
        before = hashlib.sha256(json.dumps([command.action, "s", body], sort_keys=True, ensure_ascii=False,
                                           separators=(",", ":")).encode()).hexdigest()[:32]
        assert fingerprint(command, "s") == before
        assert fingerprint(command.model_copy(update={"fields": {"batch_no": "B-1"}}), "s") != before
