"""The command API through the real app and the real event store (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from commands.desk import ComplaintDesk
from tests.conftest import FakeClock

NEW_COMPLAINT: dict[str, Any] = {
    "channel": "web",
    "customer": {"id": "C-1001", "tier": "vip"},
    "customer_personal": {"name": "Li Wei", "contact": "li.wei@example.com"},
    "title": "App unusable after update",
    "description": "Since version 5.2 the app crashes at login.",
    "product": "mobile-app",
    "order_ref": "ORD-77",
    "attachments": [{"filename": "crash.png", "content_type": "image/png", "size_bytes": 2048}],
}


def register(client: TestClient, **changes: Any) -> dict[str, Any]:
    response = client.post("/complaints", json=NEW_COMPLAINT | changes)
    assert response.status_code == 201, response.text
    return response.json()


def send(client: TestClient, complaint_id: str, path: str, **body: Any) -> Any:
    return client.post(f"/complaints/{complaint_id}/{path}", json={} | body)


def event_count(desk: ComplaintDesk) -> int:
    # Counted, not the max position: PostgreSQL positions may have gaps after a failed insert.
    return len(desk.recorder.select_notifications(None, 10_000))


def test_the_whole_life_of_a_complaint(client: TestClient, clock: FakeClock) -> None:
    created = register(client)
    cid = created["complaint_id"]
    assert created == {
        "complaint_id": cid, "version": 1, "status": "received",
        "command_id": created["command_id"], "replayed": False,
    }
    steps: list[tuple[str, dict[str, Any], str]] = [
        ("triage", {"category": "product_defect", "severity": "major", "impact": "some_users"}, "triaged"),
        ("assign", {"team": "mobile", "agent": "agent-7"}, "assigned"),
        ("notes", {"text": "Reproduced on Android 14."}, "assigned"),
        ("contacts", {"direction": "outbound", "channel": "phone", "summary": "Called back"}, "assigned"),
        ("wait-on-customer", {"reason": "Need the device model"}, "waiting_on_customer"),
        ("customer-replied", {"summary": "Pixel 8"}, "assigned"),
        ("escalate", {"level": 1, "reason": "VIP"}, "assigned"),
        ("assign", {"team": "mobile", "agent": "agent-9"}, "assigned"),
        ("propose-resolution", {"proposal": "Hotfix 5.2.1"}, "resolution_proposed"),
        ("resolve", {"resolution": "Hotfix shipped"}, "resolved"),
        ("verify", {"csat": 4, "nps": 9, "effort": 2}, "verified"),
        ("close", {}, "closed"),
        ("reopen", {"reason": "Crashes again"}, "assigned"),
        ("withdraw", {"reason": "Customer gave up"}, "withdrawn"),
    ]
    for version, (path, body, status) in enumerate(steps, start=2):
        clock.advance(minutes=10)
        response = send(client, cid, path, **body)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["version"] == version
        assert response.json()["status"] == status

    state = client.get(f"/complaints/{cid}").json()
    assert state["status"] == "withdrawn"
    assert state["version"] == len(steps) + 1
    assert state["priority"] == "urgent"  # major -> high, raised by VIP and "unusable"
    assert state["handovers"] == 1
    assert state["agent"] == "agent-9"
    assert state["reopen_count"] == 1
    assert state["escalation_level"] == 1
    assert state["customer_personal"] == {"name": "Li Wei", "contact": "li.wei@example.com"}
    assert state["first_responded_at"] is not None
    # The past is still there: version 3 was the first assignment.
    then = client.get(f"/complaints/{cid}", params={"version": 3}).json()
    assert (then["status"], then["agent"], then["version"]) == ("assigned", "agent-7", 3)


def test_mark_duplicate_needs_an_existing_original(client: TestClient) -> None:
    original = register(client)["complaint_id"]
    copy = register(client)["complaint_id"]
    missing = str(uuid.uuid4())
    assert send(client, copy, "mark-duplicate", duplicate_of=missing).status_code == 404
    assert send(client, copy, "mark-duplicate", duplicate_of=copy).status_code == 409
    response = send(client, copy, "mark-duplicate", duplicate_of=original)
    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"


def test_invalid_payload_is_422_with_the_field_path_and_writes_nothing(
    client: TestClient, desk: ComplaintDesk
) -> None:
    bad = NEW_COMPLAINT | {"customer": {"id": "C-1", "tier": "gold"}}
    response = client.post("/complaints", json=bad)
    assert response.status_code == 422
    assert ["body", "customer", "tier"] in [e["loc"] for e in response.json()["detail"]]
    assert event_count(desk) == 0

    cid = register(client)["complaint_id"]
    response = send(client, cid, "triage", category="x", severity="catastrophic")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "severity"]
    response = send(client, cid, "verify", csat=9)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "csat"]
    response = send(client, cid, "notes", text="x", colour="red")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "colour"]
    assert event_count(desk) == 1


def test_unknown_complaint_is_404(client: TestClient) -> None:
    missing = str(uuid.uuid4())
    assert client.get(f"/complaints/{missing}").status_code == 404
    response = send(client, missing, "notes", text="hello")
    assert response.status_code == 404
    assert response.json()["complaint_id"] == missing


def test_illegal_transition_is_409_with_the_state_and_changes_nothing(
    client: TestClient, desk: ComplaintDesk
) -> None:
    cid = register(client)["complaint_id"]
    response = send(client, cid, "resolve", resolution="done")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "cannot resolve a complaint that is received",
        "type": "illegal_transition",
        "status": "received",
        "action": "resolve",
    }
    assert client.get(f"/complaints/{cid}").json()["version"] == 1
    assert event_count(desk) == 1


def test_stale_expected_version_is_409_with_the_current_version(client: TestClient) -> None:
    cid = register(client)["complaint_id"]
    assert send(client, cid, "notes", text="first", expected_version=1).status_code == 200
    response = send(client, cid, "notes", text="second", expected_version=1)
    assert response.status_code == 409
    assert response.json()["current_version"] == 2
    assert response.json()["status"] == "received"
    assert client.get(f"/complaints/{cid}").json()["version"] == 2


def test_repeated_command_id_answers_as_the_first_time(
    client: TestClient, desk: ComplaintDesk
) -> None:
    first = client.post("/complaints", json=NEW_COMPLAINT | {"command_id": "intake-42"})
    again = client.post("/complaints", json=NEW_COMPLAINT | {"command_id": "intake-42"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() | {"replayed": True}
    cid = first.json()["complaint_id"]

    note = send(client, cid, "notes", text="once", command_id="note-1")
    send(client, cid, "notes", text="other", command_id="note-2")
    repeat = send(client, cid, "notes", text="once", command_id="note-1")
    assert repeat.status_code == 200
    assert repeat.json() == note.json() | {"replayed": True}
    assert event_count(desk) == 3
    # The same id for another kind of command is refused, not silently replayed.
    assert send(client, cid, "escalate", level=1, reason="x", command_id="note-1").status_code == 409
    assert event_count(desk) == 3


def test_escalation_must_go_up(client: TestClient) -> None:
    cid = register(client)["complaint_id"]
    assert send(client, cid, "escalate", level=2, reason="slow").status_code == 200
    response = send(client, cid, "escalate", level=1, reason="again")
    assert response.status_code == 409
    assert "above the current 2" in response.json()["detail"]


def test_backdated_command_before_the_last_change_is_refused(client: TestClient) -> None:
    cid = register(client, occurred_at="2026-01-05T09:00:00+08:00")["complaint_id"]
    ok = send(client, cid, "notes", text="later", occurred_at="2026-01-05T10:00:00+08:00")
    assert ok.status_code == 200
    early = send(client, cid, "notes", text="earlier", occurred_at="2026-01-05T09:30:00+08:00")
    assert early.status_code == 422
    assert early.json()["detail"][0]["loc"] == ["body", "occurred_at"]
    assert "before the complaint's last change" in early.json()["detail"][0]["msg"]
    naive = send(client, cid, "notes", text="naive", occurred_at="2026-01-05T11:00:00")
    assert naive.status_code == 422
    assert naive.json()["detail"][0]["loc"] == ["body", "occurred_at"]


def test_openapi_documents_every_command(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ["triage", "assign", "notes", "contacts", "wait-on-customer", "customer-replied",
                 "propose-resolution", "resolve", "verify", "close", "reopen", "escalate",
                 "withdraw", "mark-duplicate"]:
        assert f"/complaints/{{complaint_id}}/{path}" in paths
    assert "/complaints" in paths


def test_the_request_correlation_id_runs_into_the_events(client: TestClient, desk: ComplaintDesk) -> None:
    response = client.post("/complaints", json=NEW_COMPLAINT, headers={"X-Correlation-ID": "ticket-4711"})
    assert response.status_code == 201 and response.headers["X-Correlation-ID"] == "ticket-4711"
    complaint_id = response.json()["complaint_id"]
    # The command's own correlation id wins over the header; without either, a fresh one is made.
    own = send(client, complaint_id, "triage", category="billing", severity="minor", correlation_id="conv-1")
    made = send(client, complaint_id, "notes", text="looked at it")
    assert own.status_code == made.status_code == 200
    assert made.headers["X-Correlation-ID"] not in ("", "ticket-4711", "conv-1")
    bad = client.post("/complaints", json=NEW_COMPLAINT | {"command_id": "r2"}, headers={"X-Correlation-ID": "no spaces!"})
    assert bad.headers["X-Correlation-ID"] != "no spaces!"  # not an id: replaced
    events = [desk.mapper.to_domain_event(n) for n in desk.recorder.select_notifications(None, 10_000)]
    mine = [e for e in events if e.originator_id == uuid.UUID(complaint_id)]
    assert [e.correlation_id for e in mine] == ["ticket-4711", "conv-1", made.headers["X-Correlation-ID"]]
