"""Customers' personal data: sealed per customer in every stored event, opened only for
those who may see it, erased by destroying the customer's key (crypto-shredding)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import duckdb
import psycopg
import pytest
from fastapi.testclient import TestClient

from aggregates.access import Principal
from aggregates.complaint import ERASED
from aggregates.events import SEALED_EVENTS
from aggregates.sealed_fields import FREE_TEXT
from complaints.identity import DevUser
from commands.api import create_app
from commands.desk import ComplaintDesk
from commands.models import (
    AddNote, AssignComplaint, EraseCustomer, RecordContact, RegisterComplaint, ResolveComplaint, TriageComplaint,
)
from commands.personal_data import MasterKeyError, UnknownCustomer
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.stored_events import envelopes
from read_api.audit import history, state_at
from tests.identity import AUTHENTICATE, OPERATOR, acting, bearer
from tests.test_audit import events_db

NAME, CONTACT = "王小明", "wangxm@example.com"
PHONE, EMAIL, ID_NUMBER = "13812345678", "help.me@example.org", "11010519491231002X"
ADMIN = Principal("dpo", "Data protection officer", frozenset({"admin"}))
DPO, AGENT, HEAD = (DevUser("dpo", "Data protection officer", ("admin",)), DevUser("ann", "Ann", ("agent",), "billing"),
                    DevUser("lead", "Lead", ("department_head",)))


def register(desk: ComplaintDesk, customer: str = "C-7", name: str = NAME, contact: str = CONTACT) -> object:
    return desk.register(RegisterComplaint(
        channel="web", customer={"id": customer, "tier": "regular"},
        customer_personal={"name": name, "contact": contact},
        title=f"退款问题 请回电 {PHONE}", description=f"身份证 {ID_NUMBER}，邮箱 {EMAIL}，订单 ORD-20240101-0001",
        product="broadband", attachments=[{"filename": f"{name}-invoice.pdf", "content_type": "application/pdf",
                                           "size_bytes": 1000}],
    ), OPERATOR).complaint_id


def handled(desk: ComplaintDesk, customer: str = "C-7") -> object:
    cid = register(desk, customer)
    desk.execute(cid, TriageComplaint(category="billing", severity="major"), acting("lead"))
    desk.execute(cid, AssignComplaint(team="billing", agent="ann"), acting("lead"))
    desk.execute(cid, AddNote(text=f"customer asked to call {PHONE} after 6pm"), acting("ann"))
    desk.execute(cid, RecordContact(direction="outbound", visibility="public", channel="phone",
                                    summary=f"called {PHONE}, mailed {EMAIL}"), acting("ann"))
    desk.execute(cid, ResolveComplaint(resolution="refunded"), acting("ann"))
    return cid


def stored_bytes(desk: ComplaintDesk) -> bytes:
    return b"\n".join(bytes(n.state) for n in desk.recorder.select_notifications(1, 10_000))


SECRETS = (NAME, CONTACT, PHONE, EMAIL, ID_NUMBER)


def assert_nothing_plain(blob: bytes) -> None:
    for secret in SECRETS:
        assert secret.encode() not in blob, secret
        assert json.dumps(secret).encode() not in blob, secret  # nor as JSON escapes


def test_the_events_the_store_seals_are_those_whose_payload_says_so() -> None:
    assert set(FREE_TEXT) == SEALED_EVENTS


def test_the_store_holds_personal_data_only_sealed_and_the_desk_opens_it(desk: ComplaintDesk) -> None:
    cid = handled(desk)
    assert_nothing_plain(stored_bytes(desk))
    complaint = desk.get_complaint(cid)
    assert complaint.customer_personal == {"name": NAME, "contact": CONTACT}
    assert PHONE in complaint.title and ID_NUMBER in complaint.description
    assert complaint.attachments[0]["filename"] == f"{NAME}-invoice.pdf"
    # The masked copies travel: the read side sees them, never the originals.
    registered = envelopes(desk.mapper, desk.recorder.select_notifications(1, 1))[0].payload
    assert registered["title"] == "退款问题 请回电 138****5678"
    assert registered["customer_personal"] == {"name": "[sealed]", "contact": "[sealed]"}
    assert registered["sealed"].startswith("pd1:")
    assert registered["customer"] == {"id": "C-7", "tier": "regular"}  # the pseudonymous id stays


def test_erasure_shreds_every_copy_and_changes_no_figure(desk: ComplaintDesk) -> None:
    cid = handled(desk)
    other = handled(desk, customer="C-8")
    db_before = events_db(desk)
    states_before = [state_at(db_before, c) for c in (cid, other)]

    erased = desk.erase_customer("C-7", EraseCustomer(legal_basis="PIPL Art. 47: the customer asked"), ADMIN)
    assert erased.complaints == [cid] and not erased.replayed

    complaint = desk.get_complaint(cid)
    assert complaint.customer_personal == {"name": ERASED, "contact": ERASED}
    assert PHONE not in complaint.title and "138****5678" in complaint.title
    assert complaint.attachments[0]["filename"] == ERASED
    assert complaint.personal_data_erased["legal_basis"] == "PIPL Art. 47: the customer asked"
    assert complaint.status == "resolved"  # the erasure is not a step of the complaint's life
    # Every earlier version reads erased too: the key is gone, not the events.
    first = desk.get_complaint(cid, version=1)
    assert first.customer_personal == {"name": ERASED, "contact": ERASED}
    # The other customer is untouched.
    assert desk.get_complaint(other).customer_personal == {"name": NAME, "contact": CONTACT}

    # The read side: the same facts, the erasure event added; opened with the keyring, erased.
    db_after = events_db(desk)
    after = state_at(db_after, cid)
    for key in ("status", "priority", "resolution_due", "first_response_due", "resolved_at", "team"):
        assert after[key] == states_before[0][key], key
    assert state_at(db_after, other) == states_before[1]
    opened = history(db_after, cid, opener=desk.keyring.open)
    assert opened[0]["payload"]["customer_personal"] == {"name": ERASED, "contact": ERASED}
    assert opened[-1]["event_type"] == "PersonalDataErased"
    assert history(db_after, other, opener=desk.keyring.open)[0]["payload"]["customer_personal"]["name"] == NAME

    again = desk.erase_customer("C-7", EraseCustomer(legal_basis="asked again"), ADMIN)
    assert again.replayed and again.legal_basis == erased.legal_basis and again.erased_at == erased.erased_at
    assert desk.get_complaint(cid).version == complaint.version  # nothing recorded twice

    with pytest.raises(UnknownCustomer):
        desk.erase_customer("C-nobody", EraseCustomer(legal_basis="asked"), ADMIN)


def test_a_new_complaint_after_erasure_gets_a_new_key(desk: ComplaintDesk) -> None:
    old = register(desk)
    desk.erase_customer("C-7", EraseCustomer(legal_basis="GDPR Art. 17"), ADMIN)
    new = register(desk, name="王小明", contact="new@example.com")
    assert desk.get_complaint(new).customer_personal == {"name": NAME, "contact": "new@example.com"}
    assert desk.get_complaint(old).customer_personal["name"] == ERASED
    # A note on an erased complaint keeps only its masked copy.
    desk.execute(old, TriageComplaint(category="billing", severity="minor"), acting("lead"))
    desk.execute(old, AddNote(text=f"call {PHONE}"), acting("lead"))
    assert desk.get_complaint(old).version == 4
    assert_nothing_plain(b"\n".join(bytes(n.state) for n in desk.recorder.select_notifications(1, 10_000)
                                    if n.originator_id == old))


def test_erasure_over_http(desk: ComplaintDesk) -> None:
    cid = register(desk)
    with TestClient(create_app(desk, AUTHENTICATE)) as client:
        path = "/customers/C-7/erasure"
        assert client.post(path, json={"legal_basis": "GDPR Art. 17"}).status_code == 401
        refused = client.post(path, json={"legal_basis": "GDPR Art. 17"}, headers=bearer(AGENT))
        assert refused.status_code == 403
        admin = bearer(DPO)
        missing = client.post(path, json={}, headers=admin)
        assert missing.status_code == 422 and "legal_basis" in missing.text
        assert client.post("/customers/C-unknown/erasure", json={"legal_basis": "GDPR Art. 17"},
                           headers=admin).status_code == 404
        assert desk.get_complaint(cid).customer_personal["name"] == NAME  # refusals changed nothing
        done = client.post(path, json={"legal_basis": "GDPR Art. 17"}, headers=admin)
        assert done.status_code == 200, done.text
        assert done.json()["complaints"] == [str(cid)] and done.json()["replayed"] is False
        again = client.post(path, json={"legal_basis": "GDPR Art. 17"}, headers=admin)
        assert again.status_code == 200 and again.json()["replayed"] is True
        shown = client.get(f"/complaints/{cid}", headers=bearer(HEAD)).json()
        assert shown["customer_personal"] == {"name": ERASED, "contact": ERASED}


def test_a_missing_or_wrong_master_key_refuses_to_start(tmp_path: Path) -> None:
    settings = Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite", master_key=tmp_path / "master.key",
                        chain_key=tmp_path / "chain.key")
    desk = open_desk(settings)
    register(desk)
    desk.close()
    original = settings.master_key.read_bytes()

    settings.master_key.unlink()
    with pytest.raises(MasterKeyError, match="is missing"):
        open_desk(settings)
    assert not settings.master_key.exists()  # no stray key left behind
    settings.master_key.write_bytes(b"\1" * 32)
    with pytest.raises(MasterKeyError, match="wrapped under master key"):
        open_desk(settings)
    settings.master_key.write_bytes(b"\1" * 31)
    with pytest.raises(ValueError, match="31 bytes, not 32"):
        open_desk(settings)
    # Production never makes one.
    fresh = settings.model_copy(update={"env": "production", "master_key": tmp_path / "none.key",
                                        "sqlite_path": tmp_path / "fresh.sqlite"})
    with pytest.raises(MasterKeyError, match="is missing"):
        open_desk(fresh)

    # A key row whose wrapping was altered is a clear error, never garbage.
    settings.master_key.write_bytes(original)
    with sqlite3.connect(settings.sqlite_path) as db:
        key_id, wrapped = db.execute("SELECT key_id, wrapped FROM personal_data_keys").fetchone()
        altered = wrapped[:20] + bytes([wrapped[20] ^ 1]) + wrapped[21:]
        db.execute("UPDATE personal_data_keys SET wrapped = ? WHERE key_id = ?", (altered, key_id))
    with pytest.raises(MasterKeyError, match="does not open"):
        open_desk(settings)


def test_rotating_the_master_key_rewrites_no_event(tmp_path: Path) -> None:
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    settings = Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite", master_key=old_key,
                        chain_key=tmp_path / "chain.key")
    desk = open_desk(settings)
    cid = register(desk)
    events = stored_bytes(desk)
    desk.close()
    new_key.write_bytes(b"\2" * 32)
    rotating = settings.model_copy(update={"master_key": new_key, "retired_master_keys": [old_key]})
    desk = open_desk(rotating)
    assert desk.keyring.rotate() == 1
    desk.close()
    desk = open_desk(settings.model_copy(update={"master_key": new_key}))  # the old key no longer needed
    assert desk.get_complaint(cid).customer_personal["name"] == NAME
    assert stored_bytes(desk) == events
    desk.close()


def test_keys_live_in_the_event_stores_database_on_postgres(postgres_address) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import postgres_settings

    settings = postgres_settings(postgres_address)
    desk = open_desk(settings)
    cid = handled(desk)
    assert_nothing_plain(stored_bytes(desk))
    host, port = postgres_address
    with psycopg.connect(host=host, port=port, dbname="complaints", user="complaints", password="complaints") as db:
        rows = db.execute(f"SELECT customer_id, wrapped IS NOT NULL FROM {settings.postgres_schema}.personal_data_keys"
                          ).fetchall()
    assert rows == [("C-7", True)]
    desk.erase_customer("C-7", EraseCustomer(legal_basis="GDPR Art. 17"), ADMIN)
    assert desk.get_complaint(cid).customer_personal["contact"] == ERASED
    desk.close()


def test_the_audit_view_opens_for_permitted_roles_and_shows_each_events_chain_link(
        sqlite_settings: Settings) -> None:
    from functools import partial

    from consumers.audit_chain import links_of
    from read_api.app import create_read_app

    desk = open_desk(sqlite_settings)
    cid = handled(desk)
    db = events_db(desk)
    check = partial(links_of, desk.recorder, desk.mapper.chain.key)
    app = create_read_app(db, AUTHENTICATE, access_log=desk.access_log, personal_data=desk.keyring,
                          chain_links=lambda c: {link["version"]: link for link in check(c)})
    quality = DevUser("qa", "QA", ("quality",))
    with TestClient(app) as client:
        path = f"/audit/complaints/{cid}/history"
        opened = client.get(path, headers=bearer(HEAD))
        assert opened.status_code == 200, opened.text
        assert opened.json()["events"][0]["payload"]["customer_personal"] == {"name": NAME, "contact": CONTACT}
        assert PHONE in opened.text and "sealed" not in opened.json()["events"][0]["payload"]
        assert all(e["chain"]["intact"] and len(e["chain"]["link"]) == 64 for e in opened.json()["events"])
        hidden = client.get(path, headers=bearer(quality))
        assert hidden.status_code == 200 and "[masked]" in hidden.text
        for secret in SECRETS:
            assert secret not in hidden.text
        assert "pd1:" not in hidden.text  # not even sealed

        # A byte changed in the store: that event's link no longer holds, and the view says so.
        with sqlite3.connect(sqlite_settings.sqlite_path) as raw:
            rowid, state = raw.execute("SELECT rowid, state FROM stored_events WHERE originator_version = 3").fetchone()
            raw.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                        (state.replace(b'"team"', b'"taem"', 1), rowid))
        chain = [e["chain"] for e in client.get(path, headers=bearer(HEAD)).json()["events"]]
        assert [c["intact"] for c in chain[:4]] == [True, True, False, True], chain
        assert chain[2]["problem"]
    desk.close()


def test_after_an_erasure_every_figure_is_the_same_rebuilt_or_applied(tmp_path: Path, clock) -> None:  # type: ignore[no-untyped-def]
    """The read models, the dashboards, an export and a what-if, before an erasure and
    after it (the node applying the erasure events, or rebuilt from scratch): the same."""
    from aggregates.sla import load_sla_policy
    from projections.whatif import what_if
    from read_api.app import create_read_app
    from tests.conftest import send_commands
    from tests.test_read_api import build_read_db

    def figures(path: Path) -> list[object]:
        with duckdb.connect(str(path)) as db:
            app = create_read_app(db, AUTHENTICATE, clock=lambda: clock.now, cache_seconds=0)
            with TestClient(app, headers=bearer(HEAD)) as client:
                answers = [client.get(route, params={} if route == "/dimensions" else {"period": "all"})
                           for route in ("/sla", "/workload", "/trends", "/dimensions", "/dashboards/supervisor",
                                         "/dashboards/product", "/dashboards/executive", "/export/complaints")]
        assert all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers]
        report = what_if(load_sla_policy(None), tmp_path / f"{path.stem}-what-if.duckdb", read_db=path,
                         now=clock.now, progress=False)
        return [a.json() if "json" in a.headers["content-type"] else a.text for a in answers] + [report.rows]

    desk = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=clock)
    send_commands(desk, 40, seed=5)
    for customer in ("C-7", "C-8"):
        handled(desk, customer)
    node, rebuilt = tmp_path / "node.duckdb", tmp_path / "rebuilt.duckdb"
    with duckdb.connect(str(node)) as db:
        build_read_db(desk, db)
        customers = [c for (c,) in db.execute(
            "SELECT DISTINCT json_extract_string(payload, '$.customer.id') FROM events"
            " WHERE event_type = 'Registered' ORDER BY 1 LIMIT 5").fetchall()]
    before = figures(node)

    for customer in {*customers, "C-7"}:
        desk.erase_customer(customer, EraseCustomer(legal_basis="GDPR Art. 17"), ADMIN)
    with duckdb.connect(str(node)) as db:
        build_read_db(desk, db)  # the node goes on: the erasure events arrive
        assert db.execute("SELECT count(*) FROM events WHERE event_type = 'PersonalDataErased'").fetchone()[0] >= 5
    with duckdb.connect(str(rebuilt)) as db:
        build_read_db(desk, db)
    assert figures(node) == before
    assert figures(rebuilt) == before
    desk.close()
