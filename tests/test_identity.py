"""Who acts is proven, what each role may do is enforced, time belongs to the server.

One app as `complaints run` builds it (command API, read node, read API, development
issuer) over a few complaints of two teams; every operation of its OpenAPI document is
called by every role and checked against the matrix in `aggregates.access`.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from aggregates.access import (
    MANAGE_SUBSCRIPTIONS, MATRIX, PERSONAL_DATA, READ_ALERTS, READ_AUDIT, READ_COMPLAINT, READ_DELIVERIES,
    RESEND_DELIVERY, ROLES, TEAM_BOUND, Principal, matrix_markdown,
)
from commands.attachments import UPLOADERS
from complaints.identity import DEV_ISSUER, DevUser
from complaints.settings import Settings
from complaints.wiring import Wiring
from projections import models as read_models
from tests.identity import ISSUER, ISSUER_KEY, OPERATOR, bearer

ROOT = Path(__file__).resolve().parent.parent
TEAM, OTHER_TEAM = "billing", "logistics"

REGISTER = {
    "channel": "web", "customer": {"id": "C-77", "tier": "vip"},
    "customer_personal": {"name": "Wang Xiaoming", "contact": "wang@example.com"},
    "title": "Charged twice", "description": "Two debits for one order", "product": "billing-portal",
}
# A valid body for every command (the walk asks who may send it, not whether it fits now).
BODIES: dict[str, dict[str, Any]] = {
    "triage": {"category": "billing", "severity": "major"},
    "assign": {"team": TEAM, "agent": "billing-2"},
    "notes": {"text": "called"},
    "contacts": {"direction": "outbound", "channel": "phone", "summary": "called"},
    "wait-on-customer": {"reason": "receipt"},
    "customer-replied": {"summary": "sent"},
    "propose-resolution": {"proposal": "refund"},
    "resolve": {"resolution": "refunded"},
    "verify": {"csat": 4},
    "close": {},
    "reopen": {"reason": "again"},
    "escalate": {"level": 1, "reason": "slow"},
    "erasure": {"legal_basis": "GDPR Art. 17(1)(a): the customer asked"},
    "withdraw": {"reason": "solved"},
    "mark-duplicate": {},  # duplicate_of filled in below
    "update-fields": {"fields": {"case_notes": "called back"}},
    "tags": {"tag": "refund"},
    "remove-tag": {"tag": "refund"},
    "acknowledge": {"note": "on it"},
    "resolve-alert": {"reason": "handled"},
    "subscriptions": {"name": "crm", "kind": "webhook", "endpoint": "http://127.0.0.1:9/hooks"},
    "change": {"name": "crm, renamed"},
    "pause": {"reason": "maintenance"},
    "resume": {},
    "disable": {"reason": "retired"},
    "rotate-secret": {"overlap_hours": 1},
    "resend": {},
    "articles": {},  # complaint_id filled in below
    "edit": {"title": "Charged twice: refund"},
    "publish": {},
    "retire": {"reason": "outdated"},
}
# Served to anyone: health, metrics, the page's shell, the sign-in itself, the API documents.
OPEN = ("/health", "/ready", "/metrics", "/auth/", "/static/", "/dashboard", "/favicon.ico", "/docs",
        "/redoc", "/openapi.json", "/demo/")


def user(role: str, team: str | None = None) -> DevUser:
    return DevUser(f"{role}-{team or 'any'}", f"{role} of {team or 'all'}", (role,),
                   team if role in TEAM_BOUND else None)


def headers(who: DevUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUER.token(who)}"}


class Desk:
    """The whole service in this process, and ids of complaints of two teams."""

    def __init__(self, tmp: Path, **overrides: Any) -> None:
        self.settings = Settings(**{
            "store": "sqlite", "sqlite_path": tmp / "events.sqlite", "read_db": tmp / "read.duckdb",
            "dev_issuer_key": ISSUER_KEY, "read_cache_seconds": 0, "poll_interval": 0.01,
            "rate_limit_commands": "100000/second", "rate_limit_reads": "100000/second",
            "rate_limit_costly": "100000/second", "notify_allow_hosts": ["127.0.0.1"],
            "secrets_key": tmp / "secrets.key", "links_key": tmp / "links.key",
            "notifier_state": tmp / "notifier.sqlite"} | overrides)
        self.wiring = Wiring(self.settings)
        self.desk = self.wiring.desk()
        self.node = self.wiring.read_node(None, "log", read_models.make(policy=self.wiring.sla_policy))
        self.notifier = self.wiring.notifier(desk=self.desk, source="log")
        self.app = self.wiring.command_app(self.desk, self.node)
        self.app.include_router(self.wiring.read_router(lambda: self.node))
        self.app.include_router(self.wiring.notifier_router(self.notifier))
        self.wiring.include_page(self.app)
        self.client = TestClient(self.app)
        self.node.start_background()

    def register(self, team: str | None, **fields: Any) -> str:
        from commands.models import AssignComplaint, RegisterComplaint, TriageComplaint

        done = self.desk.register(RegisterComplaint.model_validate(REGISTER | fields), OPERATOR)
        if team is not None:
            self.desk.execute(done.complaint_id, TriageComplaint(category="billing", severity="normal"), OPERATOR)
            self.desk.execute(done.complaint_id, AssignComplaint(team=team, agent=f"{team}-1"), OPERATOR)
        return str(done.complaint_id)

    def raise_alert(self, team: str) -> str:
        from commands.alerts import RaiseAlert

        rules = Principal("automation:alerts", "rules", frozenset({"automation"}))
        return str(self.desk.raise_alert(RaiseAlert(
            key=f"test:{team}", rule="test", rules_version="1", subject_type="complaint", subject="x", team=team,
            severity="warning", title_en="Test", title_zh="测试", recipients=["supervisor"]), rules).alert_id)

    def caught_up(self) -> None:
        """Wait until the read node has every event in the store."""
        last = self.desk.recorder.max_notification_id() or 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            db = self.node.cursor()
            try:
                if db.execute("SELECT count(*) FROM events WHERE position >= ?", [last]).fetchone()[0]:
                    return
            except Exception:  # noqa: BLE001 (no events table before the first batch)
                pass
            finally:
                db.close()
            time.sleep(0.02)
        raise AssertionError("the read node did not catch up")

    def draft_article(self) -> str:
        """A knowledge article drafted from a resolved complaint of our team, once the read side has it."""
        from commands.knowledge import DraftArticle, KnowledgeDesk
        from commands.models import ResolveComplaint

        complaint = uuid.UUID(self.register(TEAM))
        self.desk.execute(complaint, ResolveComplaint(resolution="refunded"), OPERATOR)
        article = KnowledgeDesk(self.desk).draft(DraftArticle(complaint_id=complaint), OPERATOR).article_id
        deadline = time.monotonic() + 30
        while self.wiring.knowledge_articles.article(article) is None:
            assert time.monotonic() < deadline, "the read side did not see the article"
            time.sleep(0.02)
        return str(article)

    def subscribe(self) -> None:
        """A webhook subscription, and a delivery the notifier planned for it (not sent)."""
        from commands.subscriptions import CreateSubscription

        admin = Principal("admin-any", "admin", frozenset({"admin"}))
        self.subscription = str(self.desk.create_subscription(CreateSubscription.model_validate(
            BODIES["subscriptions"]), admin).subscription_id)
        self.register(TEAM)
        while not self.notifier.step():
            pass
        self.delivery = self.notifier.outbox.db.execute("SELECT id FROM deliveries LIMIT 1").fetchone()[0]

    def close(self) -> None:
        self.node.stop()
        self.node.close()
        self.notifier.close()
        self.wiring.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    desk = Desk(tmp_path_factory.mktemp("identity"))
    desk.ours = desk.register(TEAM)
    desk.theirs = desk.register(OTHER_TEAM)
    desk.unassigned = desk.register(None)
    desk.our_alert, desk.their_alert = desk.raise_alert(TEAM), desk.raise_alert(OTHER_TEAM)
    desk.article = desk.draft_article()  # before events the read node sees: caught_up waits for the last one
    desk.subscribe()
    desk.caught_up()
    yield desk
    desk.close()


# ---------------------------------------------------------------------------- authentication
def forged_tokens() -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": DEV_ISSUER, "aud": "complaints-api", "sub": "mallory", "iat": now, "exp": now + 600,
              "realm_access": {"roles": ["auditor"]}}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sign = lambda c, key=ISSUER.key, kid=ISSUER.kid: jwt.encode(c, key, "RS256", headers={"kid": kid})  # noqa: E731
    return {
        "expired": sign(claims | {"iat": now - 7200, "exp": now - 3600}),
        "forged": sign(claims, other_key),
        "unknown key": sign(claims, other_key, "another-kid"),
        "wrong issuer": sign(claims | {"iss": "https://evil.example.com"}),
        "wrong audience": sign(claims | {"aud": "someone-else"}),
        "no expiry": sign({k: v for k, v in claims.items() if k != "exp"}),
        "unsigned": jwt.encode(claims, None, "none"),
        "garbage": "not.a.token",
    }


def operations(app: Any) -> list[tuple[str, str]]:
    found = []
    for path, methods in app.openapi()["paths"].items():
        if not path.startswith(OPEN):
            found += [(method.upper(), path) for method in methods]
    return found


def call(service: Desk, method: str, path: str, who: DevUser | None, complaint: str, token: str | None = None,
         alert: str | None = None) -> Any:
    concrete = (path.replace("{complaint_id}", complaint).replace("{dataset}", "complaints")
                .replace("{sha256}", "0" * 64)  # a file the complaint does not hold: 404 once allowed
                .replace("{alert_id}", alert or service.our_alert)
                .replace("{subscription_id}", service.subscription).replace("{delivery_id}", service.delivery)
                .replace("{article_id}", service.article)
                # A customer with no complaint: the walk must not erase the ones the other tests read.
                .replace("{customer_id}", "C-never-complained"))
    auth = {"Authorization": f"Bearer {token}"} if token else (headers(who) if who else {})
    if method == "GET":
        return service.client.get(concrete, params={"of": "timely_response"} if path == "/rates" else None,
                                  headers=auth)
    if path == "/attachments":
        return service.client.post(concrete, params={"filename": "receipt.png"}, content=b"\x89PNG receipt",
                                   headers=auth | {"content-type": "image/png"})
    if path == "/complaints":
        return service.client.post(concrete, json=REGISTER, headers=auth)
    if path == "/subscriptions":
        return service.client.post(concrete, json=BODIES["subscriptions"], headers=auth)
    command = path.rsplit("/", 1)[1] + ("-alert" if path == "/alerts/{alert_id}/resolve" else "")
    body = BODIES[command] | ({"duplicate_of": service.theirs} if command == "mark-duplicate" else {}) \
        | ({"complaint_id": complaint} if command == "articles" else {})
    return service.client.post(concrete, json=body, headers=auth)


def test_every_operation_wants_a_valid_token(service: Desk) -> None:
    ops = operations(service.app)
    assert len(ops) >= 25, ops
    tokens = forged_tokens()
    for method, path in ops:
        answer = call(service, method, path, None, service.ours)
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        for why, token in tokens.items():
            answer = call(service, method, path, None, service.ours, token)
            assert answer.status_code == 401, (why, method, path, answer.status_code, answer.text)
    assert "expired" in call(service, "GET", "/sla", None, "", tokens["expired"]).json()["detail"]
    assert "audience" in call(service, "GET", "/sla", None, "", tokens["wrong audience"]).json()["detail"].lower()


def granted(role: str, permission: str | tuple[str, ...]) -> bool:
    """Whether the matrix gives `role` the permission (any one of a tuple of them)."""
    return any(p in MATRIX[role] for p in ((permission,) if isinstance(permission, str) else permission))


def permission_of(method: str, path: str) -> str | tuple[str, ...]:
    """The permission an operation asks, by the API's layout."""
    if path.startswith(("/subscriptions", "/deliveries")):
        return {"GET": READ_DELIVERIES, "POST": RESEND_DELIVERY if path.endswith("/resend") else MANAGE_SUBSCRIPTIONS}[method]
    if path.startswith("/knowledge/"):
        from commands.knowledge import ARTICLE_COMMANDS

        if method == "GET":
            return READ_COMPLAINT
        return "draft_article" if path == "/knowledge/articles" else ARTICLE_COMMANDS[path.rsplit("/", 1)[1]].action
    if method == "POST":
        if path == "/complaints":
            return "register"
        if path == "/attachments":
            return UPLOADERS  # any one of them
        if path.endswith("/erasure"):
            return "erase_personal_data"
        from commands.alerts import ALERT_COMMANDS
        from commands.models import COMPLAINT_COMMANDS

        commands = ALERT_COMMANDS if path.startswith("/alerts/") else COMPLAINT_COMMANDS
        return commands[path.rsplit("/", 1)[1]].action
    if path.startswith("/alerts"):
        return READ_ALERTS
    if path.endswith("/personal-data-views"):
        return "read:access_log"
    if path.startswith("/complaints/") or path in ("/queue", "/field-definitions"):
        return READ_COMPLAINT
    if path.startswith("/audit/"):
        return READ_AUDIT
    if path.startswith("/dashboards/"):
        return "read:dashboard:" + path.rsplit("/", 1)[1]
    if path.startswith("/export/"):
        return "export"
    return "read:models"


@pytest.mark.parametrize("role", ROLES)
def test_the_matrix_holds_for_every_operation(service: Desk, role: str) -> None:
    """Inside the role: not 401/403 (2xx, or 404/409/422 for the complaint's state). Outside
    it, or on another team's complaint: 403, and nothing changes."""
    who = user(role, TEAM)
    for method, path in operations(service.app):
        permission = permission_of(method, path)
        before = service.desk.recorder.max_notification_id()
        answer = call(service, method, path, who, service.ours)
        if granted(role, permission):
            assert answer.status_code not in (401, 403), (role, method, path, answer.text)
            if method == "GET":
                expected = 404 if "{sha256}" in path else 200  # (no such file in the complaint)
                assert answer.status_code == expected, (role, method, path, answer.text)
        else:
            assert answer.status_code == 403, (role, method, path, answer.status_code, answer.text)
            assert service.desk.recorder.max_notification_id() == before, (role, path)
        if role in TEAM_BOUND and ("{complaint_id}" in path or "{alert_id}" in path) and granted(role, permission):
            answer = call(service, method, path, who, service.theirs, alert=service.their_alert)
            assert answer.status_code == 403, ("other team", role, method, path, answer.text)
            assert "team" in answer.json()["detail"]


def test_team_bound_roles_see_their_team_only(service: Desk) -> None:
    agent, supervisor = user("agent", TEAM), user("supervisor", TEAM)
    service.register(TEAM), service.register(OTHER_TEAM)  # open ones (the walk may have closed the others)
    service.caught_up()
    assert service.client.get("/workload", params={"team": OTHER_TEAM}, headers=headers(agent)).status_code == 403
    teams = {row["team"] for row in service.client.get("/workload", headers=headers(agent)).json()["items"]}
    assert teams == {TEAM}
    everyone = {row["team"] for row in service.client.get("/workload", headers=bearer()).json()["items"]}
    assert {TEAM, OTHER_TEAM} <= everyone
    found = service.client.get("/audit/search", params={"customer": "C-77"}, headers=headers(agent)).json()["items"]
    assert found and {service.desk.get_complaint(uuid.UUID(item["complaint_id"])).team for item in found} == {TEAM}
    # A complaint no team has yet: a team lead may take it (triage, assign); an agent may not.
    assert service.client.get(f"/complaints/{service.unassigned}", headers=headers(supervisor)).status_code == 200
    assert service.client.get(f"/complaints/{service.unassigned}", headers=headers(agent)).status_code == 403
    exported = service.client.get("/export/complaints", params={"period": "365d"}, headers=headers(supervisor))
    assert {row["team"] for row in csv.DictReader(io.StringIO(exported.text))} == {TEAM}
    events = service.client.get("/export/events", params={"period": "365d"}, headers=headers(supervisor))
    exported_ids = {row["complaint_id"] for row in csv.DictReader(io.StringIO(events.text))}
    assert exported_ids and {service.desk.get_complaint(uuid.UUID(c)).team for c in exported_ids} == {TEAM}


# ---------------------------------------------------------------------------- personal data
MARKERS = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz李王张刘陈"), min_size=6, max_size=12)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=MARKERS, contact=MARKERS)
def test_no_role_outside_the_matrix_reads_a_personal_field(service: Desk, name: str, contact: str) -> None:
    name, contact = f"N{name}Q", f"K{contact}Z@example.com"
    complaint = service.register(TEAM, customer_personal={"name": name, "contact": contact},
                                 command_id=f"pd-{uuid.uuid4()}")
    service.caught_up()
    gets = [path for method, path in operations(service.app) if method == "GET"]
    exports = [f"/export/{d}" for d in ("events", "complaints", "sla")]
    for role in ROLES:
        who = user(role, TEAM)
        seen = ""
        for path in gets + exports:
            answer = service.client.get(path.replace("{complaint_id}", complaint).replace("/export/{dataset}", "/export/events"),
                                        params={"period": "365d"} if "export" in path else None, headers=headers(who))
            seen += answer.text
        shows = name in seen or contact in seen
        assert shows == (PERSONAL_DATA in MATRIX[role] and READ_COMPLAINT in MATRIX[role]), (role, shows)
        if not shows and (READ_AUDIT in MATRIX[role] or READ_COMPLAINT in MATRIX[role]):
            assert "[masked]" in seen, role


def test_views_of_personal_data_are_on_record_for_auditors(service: Desk) -> None:
    complaint = service.register(TEAM, command_id=f"views-{uuid.uuid4()}")
    service.caught_up()
    supervisor, analyst, auditor = user("supervisor", TEAM), user("analyst"), user("auditor")
    assert service.client.get(f"/complaints/{complaint}", headers=headers(supervisor)).status_code == 200
    assert service.client.get(f"/audit/complaints/{complaint}/history", headers=headers(analyst)).status_code == 200
    assert service.client.get(f"/audit/complaints/{complaint}/history", headers=headers(auditor)).status_code == 200
    views = service.client.get(f"/complaints/{complaint}/personal-data-views", headers=headers(auditor)).json()
    assert [(v["viewer"], v["via"]) for v in views] == [("supervisor-billing", "complaint"), ("auditor-any", "audit")]
    assert views[0]["roles"] == ["supervisor"] and views[0]["at"]
    denied = service.client.get(f"/complaints/{complaint}/personal-data-views", headers=headers(supervisor))
    assert denied.status_code == 403


# ---------------------------------------------------------------------------- the actor, time, idempotency
def test_the_actor_is_the_tokens_subject_with_its_name_and_roles(service: Desk) -> None:
    supervisor = user("supervisor", TEAM)
    sent = service.client.post("/complaints", json=REGISTER | {"actor": "someone else"}, headers=headers(supervisor))
    assert sent.status_code == 422 and sent.json()["detail"][0]["loc"] == ["body", "actor"]
    sent = service.client.post("/complaints", json=REGISTER, headers=headers(supervisor))
    complaint = uuid.UUID(sent.json()["complaint_id"])
    event = service.desk.repository.event_store.get(complaint)
    first = next(iter(event))
    assert (first.actor, first.acted_as) == ("supervisor-billing", {"name": "supervisor of billing", "roles": ["supervisor"]})


def test_the_server_owns_time(service: Desk) -> None:
    now = datetime.now(UTC)
    supervisor, importer = user("supervisor", TEAM), user("importer")
    future = (now + timedelta(minutes=10)).isoformat()
    past = (now - timedelta(days=3)).isoformat()
    refused = service.client.post("/complaints", json=REGISTER | {"occurred_at": past}, headers=headers(supervisor))
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "occurred_at"]
    assert "importer" in refused.json()["detail"][0]["msg"]
    ahead = service.client.post("/complaints", json=REGISTER | {"occurred_at": future}, headers=headers(importer))
    assert ahead.status_code == 422 and "future" in ahead.json()["detail"][0]["msg"]
    ancient = service.client.post("/complaints", json=REGISTER | {"occurred_at": "1969-12-31T23:00:00Z"},
                                  headers=headers(importer))
    assert ancient.status_code == 422
    skewed = (now + timedelta(seconds=60)).isoformat()
    assert service.client.post("/complaints", json=REGISTER | {"occurred_at": skewed},
                               headers=headers(importer)).status_code == 201
    imported = service.client.post("/complaints", json=REGISTER | {"occurred_at": past}, headers=headers(importer))
    assert imported.status_code == 201
    later = service.client.post(f"/complaints/{imported.json()['complaint_id']}/notes",
                                json={"text": "x", "occurred_at": (now - timedelta(days=4)).isoformat()},
                                headers=headers(importer))
    assert later.status_code == 422 and "last change" in later.json()["detail"][0]["msg"]
    # A complaint dated by nobody but the server can always be worked on.
    mine = service.client.post("/complaints", json=REGISTER, headers=headers(supervisor)).json()["complaint_id"]
    assert service.client.post(f"/complaints/{mine}/triage", json=BODIES["triage"],
                               headers=headers(supervisor)).status_code == 200


def test_a_command_id_names_one_command(service: Desk) -> None:
    supervisor, intake = user("supervisor", TEAM), user("intake")
    command_id = f"idem-{uuid.uuid4()}"
    first = service.client.post("/complaints", json=REGISTER | {"command_id": command_id}, headers=headers(intake))
    again = service.client.post("/complaints", json=REGISTER | {"command_id": command_id}, headers=headers(intake))
    assert first.status_code == again.status_code == 201 and again.json()["replayed"] is True
    assert again.json()["complaint_id"] == first.json()["complaint_id"]
    other_body = service.client.post("/complaints", json=REGISTER | {"command_id": command_id, "title": "Other"},
                                     headers=headers(intake))
    assert other_body.status_code == 409 and "different command" in other_body.json()["detail"]
    before = service.desk.recorder.max_notification_id()
    stolen = service.client.post("/complaints", json=REGISTER | {"command_id": command_id}, headers=headers(supervisor))
    assert stolen.status_code == 409
    assert first.json()["complaint_id"] not in stolen.text  # nothing leaks
    assert service.desk.recorder.max_notification_id() == before  # nothing is created
    complaint = first.json()["complaint_id"]
    note = {"text": "first", "command_id": f"note-{uuid.uuid4()}"}
    path = f"/complaints/{complaint}/notes"
    assert service.client.post(path, json=note, headers=headers(intake)).status_code == 200
    assert service.client.post(path, json=note, headers=headers(intake)).json()["replayed"] is True
    changed = service.client.post(path, json=note | {"text": "second"}, headers=headers(intake))
    assert changed.status_code == 409 and "different command" in changed.json()["detail"]


# ---------------------------------------------------------------------------- limits, development issuer
def test_requests_past_a_principals_limit_are_429(tmp_path: Path) -> None:
    service = Desk(tmp_path, rate_limit_reads="5/minute", rate_limit_costly="2/minute")
    try:
        agent, analyst = headers(user("agent", TEAM)), headers(user("analyst"))
        codes = [service.client.get("/workload", headers=agent).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429], codes
        limited = service.client.get("/workload", headers=agent)
        assert int(limited.headers["retry-after"]) >= 1 and "too many" in limited.json()["detail"]
        assert service.client.get("/workload", headers=analyst).status_code == 200  # per principal
        costly = [service.client.get("/export/sla", headers=analyst).status_code for _ in range(3)]
        assert costly == [200, 200, 429]
    finally:
        service.close()


def test_development_sign_in_lists_users_and_is_refused_in_production(tmp_path: Path) -> None:
    service = Desk(tmp_path)
    try:
        users = service.client.get("/auth/dev/users").json()
        # Every role but the customer's, who never signs in: a signed link is their credential.
        assert {role for u in users for role in u["roles"]} == set(ROLES) - {"customer"}
        token = service.client.post("/auth/dev/token", json={"username": "executive"}).json()["access_token"]
        assert service.client.get("/dashboards/executive", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert service.client.get("/dashboards/supervisor", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert service.client.get("/auth/config").json()["mode"] == "development"
    finally:
        service.close()
    production = Wiring(Settings(env="production", sqlite_path=tmp_path / "p.sqlite", dev_issuer_key=tmp_path / "k.pem"))
    with pytest.raises(ValueError, match="COMPLAINTS_AUTH_ISSUER"):
        production.authenticate  # noqa: B018
    assert not (tmp_path / "k.pem").exists()


def test_complaints_token_prints_a_token_the_server_accepts_and_refuses_production(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {"COMPLAINTS_DEV_ISSUER_KEY": str(ISSUER_KEY), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "complaints.cli", "token", "--role", "auditor"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    principal = __import__("tests.identity", fromlist=["VERIFIER"]).VERIFIER.principal(done.stdout.strip())
    assert principal.roles == {"auditor"} and principal.subject == "auditor"
    refused = subprocess.run([sys.executable, "-m", "complaints.cli", "token"], capture_output=True, text=True,
                             env=env | {"COMPLAINTS_ENV": "production"}, cwd=ROOT)
    assert refused.returncode == 2 and "COMPLAINTS_AUTH_ISSUER" in refused.stderr and not refused.stdout


def test_docs_security_md_holds_the_matrix() -> None:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert matrix_markdown() in text, "run: complaints roles --markdown, and paste it into docs/security.md"


# ---------------------------------------------------------------------------- a real identity provider
def test_real_tokens_from_keycloak_people_machines_and_a_key_rotation(keycloak: Any, tmp_path: Path) -> None:
    service = Desk(tmp_path, auth_issuer=keycloak.issuer)
    try:
        bearer_of = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
        intake, supervisor, agent, agent2, analyst, auditor = (
            bearer_of(keycloak.token(u)) for u in ("intake", "supervisor", "agent", "agent2", "analyst", "auditor"))
        registered = service.client.post("/complaints", json=REGISTER, headers=intake)
        assert registered.status_code == 201, registered.text
        complaint = registered.json()["complaint_id"]
        path = f"/complaints/{complaint}"
        assert service.client.post(f"{path}/triage", json=BODIES["triage"], headers=supervisor).status_code == 200
        assigned = service.client.post(f"{path}/assign", json={"team": TEAM, "agent": "agent"}, headers=supervisor)
        assert assigned.status_code == 200, assigned.text
        assert service.client.post(f"{path}/notes", json={"text": "called"}, headers=agent).status_code == 200
        other_team = service.client.post(f"{path}/notes", json={"text": "me too"}, headers=agent2)
        assert other_team.status_code == 403 and "logistics" in other_team.json()["detail"]
        assert service.client.get(path, headers=analyst).status_code == 403
        seen = service.client.get(path, headers=auditor).json()
        assert seen["customer_personal"]["name"] == REGISTER["customer_personal"]["name"]
        events = list(service.desk.repository.event_store.get(uuid.UUID(complaint)))
        sub = jwt.decode(agent["Authorization"][7:], options={"verify_signature": False})["sub"]
        assert events[-1].actor == sub and events[-1].acted_as == {"name": "李娜", "roles": ["agent"]}
        assert service.client.post(f"{path}/resolve", json={"resolution": "x"},
                                   headers=bearer_of("x" + keycloak.token("agent"))).status_code == 401

        # Machines: client credentials; only the importer states occurred_at.
        importer = bearer_of(keycloak.client_token("complaints-importer", "importer-secret"))
        form = bearer_of(keycloak.client_token("complaints-intake", "intake-secret"))
        past = {"occurred_at": (datetime.now(UTC) - timedelta(days=2)).isoformat()}
        assert service.client.post("/complaints", json=REGISTER | past, headers=importer).status_code == 201
        assert service.client.post("/complaints", json=REGISTER | past, headers=form).status_code == 422
        assert service.client.post("/complaints", json=REGISTER, headers=form).status_code == 201
        assert service.client.get("/sla", headers=form).status_code == 403

        # A key rotation: tokens signed with the new key are accepted once the JWKS is
        # fetched again (an unknown kid fetches it, at most every 5 s); old tokens still are.
        kid = keycloak.rotate_signing_key()
        rotated = keycloak.token("supervisor")
        assert jwt.get_unverified_header(rotated)["kid"] == kid
        deadline = time.monotonic() + 15
        while (answer := service.client.get("/workload", headers=bearer_of(rotated))).status_code == 401:
            assert time.monotonic() < deadline, answer.text
            time.sleep(1)
        assert answer.status_code == 200
        assert service.client.get("/workload", headers=supervisor).status_code == 200
    finally:
        service.close()
