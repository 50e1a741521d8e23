"""Issue 14, findings 4-9: strict JSON at the edge and bounded reads.

Each test is the regression test of one finding: it failed on the code the probe found
(a 500, an echo of the input, a silent coercion, a computation per request) and passes
now. The HTTP edge is tested as the composition root serves it (`Wiring.command_app`,
`Wiring.read_app`), and over a real uvicorn server where the connection itself matters.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from commands.desk import ComplaintDesk
from commands.models import RegisterComplaint
from complaints.settings import Settings
from complaints.store import open_desk
from complaints.wiring import Wiring
from read_api.app import create_read_app
from read_api.cache import ResponseCache
from scripts.serving import free_port
from tests.conftest import FakeClock
from tests.identity import AUTHENTICATE, ISSUER_KEY, OPERATOR, bearer
from tests.test_command_api import NEW_COMPLAINT
from tests.test_read_api import History, build_read_db

MB = 1024 * 1024


@pytest.fixture
def wiring(tmp_path: Path) -> Iterator[Wiring]:
    settings = Settings(
        store="sqlite", sqlite_path=tmp_path / "events.sqlite", read_db=tmp_path / "read.duckdb",
        dev_issuer_key=ISSUER_KEY, secrets_key=tmp_path / "secrets.key", links_key=tmp_path / "links.key",
        rate_limit_commands="100000/second", rate_limit_reads="100000/second", rate_limit_costly="100000/second",
        notify_allow_hosts=["127.0.0.1"])
    wired = Wiring(settings)
    yield wired
    wired.close()


@pytest.fixture
def api(wiring: Wiring) -> Iterator[TestClient]:
    """The command API as the composition root serves it."""
    with TestClient(wiring.command_app(), headers=bearer(), raise_server_exceptions=False) as client:
        yield client


@contextmanager
def serving(app: FastAPI) -> Iterator[tuple[str, int]]:
    """`app` under a real uvicorn on a free port, in a thread: (host, port)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start within 20 s"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


def post_raw(client: TestClient, path: str, body: bytes | str) -> httpx.Response:
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def register(client: TestClient, **changes: Any) -> str:
    answer = client.post("/complaints", json=NEW_COMPLAINT | changes)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["complaint_id"])


def locs(answer: httpx.Response) -> list[list[Any]]:
    return [e["loc"] for e in answer.json()["detail"]]


# ---------------------------------------------------------------------------- finding 4
def integer_fields(schema: Any, defs: dict[str, Any], where: str, seen: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name not in seen:
            yield from integer_fields(defs[name], defs, where, (*seen, name))
        return
    if schema.get("type") == "integer":
        yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from integer_fields(sub, defs, f"{where}.{name}", seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from integer_fields(sub, defs, where, seen)
    if "items" in schema:
        yield from integer_fields(schema["items"], defs, f"{where}[]", seen)


def test_4_every_integer_parameter_and_field_is_range_checked(api: TestClient, wiring: Wiring) -> None:
    """Every integer a client can send, in a path, a query or a body, has a minimum and a
    maximum that fit the stores' 64-bit integers; out of range is a 422, never a 500."""
    unbounded = []
    apps = {"command": api.app, "read": wiring.read_app(None)}
    for name, app in apps.items():
        spec = app.openapi()  # type: ignore[attr-defined]
        defs = spec.get("components", {}).get("schemas", {})
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                found = [f for p in operation.get("parameters", [])
                         for f in integer_fields(p["schema"], defs, f"{p['in']} {p['name']}")]
                body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
                found += list(integer_fields(body.get("schema"), defs, "body"))
                unbounded += [f"{name} {method.upper()} {path}: {where}" for where, s in found
                              if s.get("minimum") is None or s.get("maximum") is None or s["maximum"] >= 2**63]
    assert not unbounded, unbounded

    cid = register(api)
    huge = 2**63
    assert api.get(f"/complaints/{cid}", params={"version": huge}).status_code == 422
    answer = api.post(f"/complaints/{cid}/notes", json={"text": "x", "expected_version": huge})
    assert answer.status_code == 422 and locs(answer) == [["body", "expected_version"]], answer.text
    answer = api.post(f"/complaints/{cid}/notes", json={"text": "x", "expected_version": 10**30})
    assert answer.status_code == 422, answer.text


# ---------------------------------------------------------------------------- finding 5
SURROGATE = "\\ud83d"  # as it stands in JSON text: a lone high surrogate


def test_5_a_lone_surrogate_anywhere_is_a_422_naming_the_field(api: TestClient) -> None:
    body = json.dumps(NEW_COMPLAINT)
    cases = {
        ("body", "title"): body.replace('"App unusable after update"', f'"App {SURROGATE} unusable"'),
        ("body", "customer", "id"): body.replace('"C-1001"', f'"C-{SURROGATE}"'),
        ("body", "command_id"): body[:-1] + f', "command_id": "id-{SURROGATE}"}}',
        ("body", "attachments", 0, "filename"): body.replace('"crash.png"', f'"{SURROGATE}.png"'),
    }
    for loc, text in cases.items():
        answer = post_raw(api, "/complaints", text)
        assert answer.status_code == 422, (loc, answer.status_code, answer.text)
        assert list(loc) in locs(answer), (loc, answer.text)
    # In a key (an unknown field), a low surrogate too: still a 422, and nothing crashes.
    answer = post_raw(api, "/complaints", body[:-1] + ', "\\udc00x": 1}')
    assert answer.status_code == 422, answer.text
    answer.content.decode("utf-8")  # the answer itself is valid UTF-8
    # A surrogate pair is a character (an emoji), not an error.
    assert post_raw(api, "/complaints", body.replace('"App unusable after update"', '"\\ud83d\\ude00"')).status_code == 201


def test_5_the_keep_alive_connection_survives_a_surrogate(wiring: Wiring) -> None:
    app = wiring.command_app()
    token = bearer()["Authorization"]
    with serving(app) as (host, port):
        connection = http.client.HTTPConnection(host, port, timeout=10)
        body = json.dumps(NEW_COMPLAINT).replace('"C-1001"', f'"{SURROGATE}"').encode()
        connection.request("POST", "/complaints", body=body,
                           headers={"content-type": "application/json", "authorization": token})
        first = connection.getresponse()
        assert first.status == 422, first.read()
        first.read()
        socket_before = connection.sock
        connection.request("GET", "/health")
        second = connection.getresponse()
        assert second.status == 200 and json.loads(second.read()) == {"status": "ok"}
        assert connection.sock is socket_before, "the server closed the keep-alive connection"
        connection.close()


def test_5_a_surrogate_in_a_query_is_no_500(read_client: TestClient) -> None:
    for query in ("text=%ED%A0%BD", "text=%F0%9F", "customer=%00", "team=%ED%A0%BD"):
        answer = read_client.get(f"/audit/search?{query}")
        assert answer.status_code in (200, 422), (query, answer.status_code, answer.text)


# ---------------------------------------------------------------------------- finding 6
def unknown_keys(count: int, marker: str = "ECHO") -> bytes:
    return json.dumps({f"k{i:06d}": marker for i in range(count)}).encode()


def test_6_a_body_past_the_limit_is_a_413_before_parsing(api: TestClient) -> None:
    big = unknown_keys(100_000)
    assert len(big) > 1.5 * MB
    started = time.monotonic()
    answer = post_raw(api, "/complaints", big)
    took = time.monotonic() - started
    assert answer.status_code == 413, (answer.status_code, len(answer.content))
    assert "1048576" in answer.json()["detail"] and len(answer.content) < 1000
    assert took < 1.0, f"{took:.2f} s: the body was parsed"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b" " * 64 * 1024

    answer = api.post("/complaints", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.status_code
    twenty = json.dumps(NEW_COMPLAINT | {"title": "x" * 20 * MB}).encode()
    answer = post_raw(api, "/complaints", twenty)
    assert answer.status_code == 413 and len(answer.content) < 1000


def test_6_the_limit_is_a_setting(tmp_path: Path) -> None:
    settings = Settings(store="sqlite", sqlite_path=tmp_path / "e.sqlite", dev_issuer_key=ISSUER_KEY,
                        links_key=tmp_path / "links.key", secrets_key=tmp_path / "secrets.key", max_body_bytes=2048)
    wired = Wiring(settings)
    try:
        with TestClient(wired.command_app(), headers=bearer()) as client:
            small = client.post("/complaints", json=NEW_COMPLAINT)
            assert small.status_code == 201, small.text
            large = client.post("/complaints", json=NEW_COMPLAINT | {"description": "d" * 3000})
            assert large.status_code == 413 and "2048" in large.json()["detail"]
    finally:
        wired.close()


def test_6_errors_are_capped_and_the_input_is_never_echoed(api: TestClient) -> None:
    answer = post_raw(api, "/complaints", unknown_keys(20_000))
    assert answer.status_code == 422
    assert len(answer.json()["detail"]) <= 20 and len(answer.content) < 20_000, len(answer.content)
    assert b"ECHO" not in answer.content
    secret = "TOO-LONG-" + "y" * 100_000
    answer = api.post("/complaints", json=NEW_COMPLAINT | {"title": secret, "description": secret})
    assert answer.status_code == 422 and {("body", "title"), ("body", "description")} <= {
        tuple(loc) for loc in locs(answer)}
    assert b"TOO-LONG" not in answer.content and len(answer.content) < 5_000
    assert all("input" not in error for error in answer.json()["detail"])


def test_6_health_is_not_blocked_by_big_bodies(wiring: Wiring) -> None:
    app = wiring.command_app()
    token = bearer()["Authorization"]
    with serving(app) as (host, port):
        base = f"http://{host}:{port}"
        stop, sent, codes = threading.Event(), [0], set()

        def flood() -> None:
            bodies = [unknown_keys(100_000), unknown_keys(40_000)]  # past the limit, and just under it
            with httpx.Client(base_url=base, timeout=30, headers={"authorization": token}) as c:
                while not stop.is_set():
                    for body in bodies:
                        codes.add(c.post("/complaints", content=body, headers={"content-type": "application/json"})
                                  .status_code)
                        sent[0] += 1

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        worst = 0.0
        with httpx.Client(base_url=base, timeout=30) as c:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert c.get("/health").status_code == 200
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.05)
            # A body sent along to /health does not stop it answering.
            assert c.request("GET", "/health", content=b"x" * 2 * MB).status_code == 200
        stop.set()
        thread.join(30)
    assert codes == {413, 422} and sent[0] >= 4, (codes, sent)
    assert worst < 1.0, f"/health took {worst:.2f} s while big bodies arrived"


# ---------------------------------------------------------------------------- finding 7
@pytest.fixture(scope="module")
def read_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    history = History(Settings(store="sqlite", sqlite_path=tmp_path_factory.mktemp("edge-read") / "events.sqlite"))
    yield history
    history.desk.close()


@pytest.fixture(scope="module")
def read_client(read_history: History) -> Iterator[TestClient]:
    db = build_read_db(read_history.desk)
    app = create_read_app(db, AUTHENTICATE, clock=lambda: read_history.now, cache_seconds=60)
    with TestClient(app, headers=bearer(), raise_server_exceptions=False) as client:
        yield client
    db.close()


def test_7_unknown_query_parameters_are_a_422_on_every_read_route(read_client: TestClient,
                                                                 read_history: History) -> None:
    answer = read_client.get("/dashboards/supervisor", params={"_": "0.123"})
    assert answer.status_code == 422 and locs(answer) == [["query", "_"]], answer.text
    spec = read_client.app.openapi()  # type: ignore[attr-defined]
    cid = str(read_history.ids["A"])
    checked = 0
    for path, operations in spec["paths"].items():
        if "get" not in operations or path in ("/", "/dashboard") or path.startswith(("/static", "/auth")):
            continue
        concrete = path.replace("{complaint_id}", cid).replace("{alert_id}", cid).replace("{dataset}", "sla")
        answer = read_client.get(concrete, params={"utm_source": "x"})
        assert answer.status_code == 422, (path, answer.status_code, answer.text[:300])
        assert ["query", "utm_source"] in locs(answer), (path, answer.text)
        checked += 1
    assert checked >= 14
    # The known ones still work, aliases included.
    assert read_client.get("/export/sla", params={"format": "csv", "period": "all"}).status_code == 200


def counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    from read_api import figures

    calls: list[Any] = []
    real = getattr(figures, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(figures, name, counted)
    return calls


def test_7_the_cache_key_holds_only_known_parameters(read_history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    db = build_read_db(read_history.desk)
    app = create_read_app(db, AUTHENTICATE, clock=lambda: read_history.now, cache_seconds=60)
    calls = counting(monkeypatch, "supervisor")
    with TestClient(app, headers=bearer()) as client:
        for query in ("period=7d&severity=major", "severity=major&period=7d",
                      "period=30d&period=7d&severity=major", "severity=major&period=7d&tz=Asia/Shanghai"):
            assert client.get(f"/dashboards/supervisor?{query}").status_code == 200, query
    db.close()
    assert len(calls) == 1, f"{len(calls)} computations of one view"


def test_7_as_of_costs_one_computation_per_minute(read_history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    db = build_read_db(read_history.desk)
    app = create_read_app(db, AUTHENTICATE, clock=lambda: read_history.now, cache_seconds=0.2)
    calls = counting(monkeypatch, "supervisor")
    minute = read_history.as_of.replace(second=0, microsecond=0)
    with TestClient(app, headers=bearer()) as client:
        answers = []
        for seconds in (0, 1, 17, 59, 3):
            as_of = (minute + timedelta(seconds=seconds)).isoformat()
            answers.append(client.get("/dashboards/supervisor", params={"as_of": as_of}))
            time.sleep(0.1)  # past the "now" answers' time to live, not an as_of view's
        assert {a.status_code for a in answers} == {200}
        assert {datetime.fromisoformat(a.json()["window"]["as_of"]) for a in answers} == {minute}
        assert len(calls) == 1, f"{len(calls)} computations of one minute's view"
        later = client.get("/dashboards/supervisor", params={"as_of": (minute + timedelta(seconds=61)).isoformat()})
        assert later.status_code == 200 and len(calls) == 2
    db.close()


def test_7_as_of_is_rounded_by_the_events_alone_and_never_hides_one(read_history: History) -> None:
    """Two read nodes with the same events gave two answers to one `as_of` (the scaled-out
    topology test, once): one request came before the minute was over, one after, and
    rounding depended on the clock. It depends on the events alone now."""
    db = build_read_db(read_history.desk)
    (last,) = db.execute("SELECT max(occurred_at) FROM events").fetchone()
    last = last.astimezone(UTC)
    if last.second == 0 and last.microsecond == 0:
        last += timedelta(microseconds=1)  # an instant inside its minute (the event stays before it)
    minute = last.replace(second=0, microsecond=0)
    clocks = iter([minute + timedelta(seconds=59.9), minute + timedelta(seconds=61)] * 2)
    app = create_read_app(db, AUTHENTICATE, clock=lambda: next(clocks), cache_seconds=0)
    with TestClient(app, headers=bearer()) as client:
        # An event in the minute before as_of: never rounded, whenever asked.
        answers = [client.get("/sla", params={"as_of": last.isoformat(), "period": "all"}) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert answers[0].json() == answers[1].json()
        # No event between the minute and as_of: rounded, whenever asked.
        quiet = minute + timedelta(hours=1, seconds=30)
        answers = [client.get("/sla", params={"as_of": quiet.isoformat(), "period": "all"}) for _ in range(2)]
        assert answers[0].json() == answers[1].json()
    db.close()


def test_7_concurrent_identical_requests_share_one_computation() -> None:
    db = duckdb.connect()
    db.execute("CREATE TABLE events (position BIGINT, occurred_at TIMESTAMPTZ)")
    cache, calls, answers = ResponseCache(ttl=60), [], []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.3)
        return 42

    def ask() -> None:
        cursor = db.cursor()
        answers.append(cache.get("same", cursor, compute))
        cursor.close()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [42] * 8 and len(calls) == 1, (answers, calls)

    failures, errors = ResponseCache(ttl=60), []

    def broken() -> int:
        time.sleep(0.2)
        raise RuntimeError("figures failed")

    def ask_broken() -> None:
        cursor = db.cursor()
        try:
            failures.get("k", cursor, broken)
        except RuntimeError as error:
            errors.append(str(error))
        finally:
            cursor.close()

    threads = [threading.Thread(target=ask_broken) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == ["figures failed"] * 4  # every waiter hears of the failure; nothing is cached


def test_7_an_as_of_view_lives_until_an_event_at_or_before_it_arrives() -> None:
    db = duckdb.connect()
    db.execute("CREATE TABLE events (position BIGINT, occurred_at TIMESTAMPTZ)")
    db.execute("INSERT INTO events VALUES (1, '2026-11-01T00:00:00Z')")
    as_of = datetime(2026, 11, 2, tzinfo=UTC)
    cache, calls = ResponseCache(ttl=0.05), []
    compute = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert cache.get("k", db, compute, as_of=as_of) == 1
    time.sleep(0.1)  # past the time to live: an as_of view does not move with the clock
    db.execute("INSERT INTO events VALUES (2, '2026-11-05T00:00:00Z')")  # after as_of: the view is the same
    assert cache.get("k", db, compute, as_of=as_of) == 1
    db.execute("INSERT INTO events VALUES (3, '2026-11-01T12:00:00Z')")  # a backdated import: it changes
    assert cache.get("k", db, compute, as_of=as_of) == 2


# ---------------------------------------------------------------------------- finding 8
def test_8_like_wildcards_in_search_text_match_literally(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    desk = open_desk(Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite"), clock=clock)
    titles = {"percent": "Charged 100% twice", "underscore": "Error in snake_case field", "plain": "Broken router",
              "backslash": "Path C:\\temp refused"}
    ids = {}
    for name, title in titles.items():
        ids[name] = str(desk.register(RegisterComplaint.model_validate(NEW_COMPLAINT | {"title": title}), OPERATOR)
                        .complaint_id)
        clock.advance(minutes=1)
    db = build_read_db(desk)
    try:
        with TestClient(create_read_app(db, AUTHENTICATE, clock=lambda: clock.now), headers=bearer()) as client:
            def found(text: str) -> set[str]:
                answer = client.get("/audit/search", params={"text": text})
                assert answer.status_code == 200, answer.text
                return {item["complaint_id"] for item in answer.json()["items"]}

            assert found("%") == {ids["percent"]}
            assert found("_") == {ids["underscore"]}
            assert found("0%") == {ids["percent"]}
            assert found("e_c") == {ids["underscore"]}
            assert found("\\") == {ids["backslash"]}
            assert found("BROKEN") == {ids["plain"]}  # still case-insensitive
    finally:
        db.close()
        desk.close()


# ---------------------------------------------------------------------------- finding 9
def test_9_nul_bytes_are_refused_naming_the_field(api: TestClient) -> None:
    cases: dict[tuple[Any, ...], dict[str, Any]] = {
        ("body", "title"): {"title": "a\x00b"},
        ("body", "description"): {"description": "\x00"},
        ("body", "customer", "id"): {"customer": {"id": "C-\x001"}},
        ("body", "customer_personal", "name"): {"customer_personal": {"name": "Li\x00", "contact": "x"}},
        ("body", "command_id"): {"command_id": "id\x00"},
        ("body", "attachments", 0, "filename"): {"attachments": [{"filename": "a\x00.png", "size_bytes": 1}]},
    }
    for loc, change in cases.items():
        answer = api.post("/complaints", json=NEW_COMPLAINT | change)
        assert answer.status_code == 422, (loc, answer.text)
        assert list(loc) in locs(answer), (loc, answer.text)
        assert any("NUL" in e["msg"] for e in answer.json()["detail"]), answer.text
    cid = register(api)
    answer = api.post(f"/complaints/{cid}/notes", json={"text": "note\x00"})
    assert answer.status_code == 422 and locs(answer) == [["body", "text"]]
    answer = api.post("/subscriptions", json={"name": "crm", "kind": "webhook", "endpoint": "http://127.0.0.1:9/\x00"})
    assert answer.status_code == 422 and ["body", "endpoint"] in locs(answer), answer.text


def test_9_attachment_sizes_are_bounded(api: TestClient) -> None:
    for size in (2**70, 2**31 + 1, -1):
        answer = api.post("/complaints", json=NEW_COMPLAINT | {
            "attachments": [{"filename": "video.mp4", "size_bytes": size}]})
        assert answer.status_code == 422 and locs(answer) == [["body", "attachments", 0, "size_bytes"]], answer.text
    assert register(api, attachments=[{"filename": "video.mp4", "size_bytes": 2**31}])


def test_9_expected_version_on_register_is_refused(api: TestClient) -> None:
    for version in (1, 5):
        answer = api.post("/complaints", json=NEW_COMPLAINT | {"expected_version": version})
        assert answer.status_code == 422 and locs(answer) == [["body", "expected_version"]], answer.text
        assert "register has no version to expect" in answer.json()["detail"][0]["msg"]
    assert register(api, expected_version=None)


def test_9_numbers_and_booleans_are_not_coerced(api: TestClient, wiring: Wiring) -> None:
    cid = register(api)
    for body, loc in (({"level": "2", "reason": "x"}, "level"), ({"level": True, "reason": "x"}, "level"),
                      ({"level": 2.5, "reason": "x"}, "level"),
                      ({"level": 1, "reason": "x", "expected_version": "1"}, "expected_version")):
        answer = api.post(f"/complaints/{cid}/escalate", json=body)
        assert answer.status_code == 422 and locs(answer) == [["body", loc]], (body, answer.text)
    # JSON has one kind of number: 2.0 is the integer 2 (JSON Schema agrees), so it is taken.
    assert api.post(f"/complaints/{cid}/escalate", json={"level": 2.0, "reason": "x"}).status_code == 200
    answer = api.post(f"/complaints/{cid}/verify", json={"csat": "4"})
    assert answer.status_code == 422 and locs(answer) == [["body", "csat"]], answer.text
    answer = api.post(f"/alerts/{uuid.uuid4()}/resolve", json={"reason": "x", "automatic": "true"})
    assert answer.status_code == 422 and locs(answer) == [["body", "automatic"]], answer.text
    answer = api.post("/complaints", json=NEW_COMPLAINT | {"attachments": [{"filename": "a", "size_bytes": "12"}]})
    assert answer.status_code == 422, answer.text


def test_9_duplicate_keys_and_non_json_numbers_are_refused(api: TestClient) -> None:
    body = json.dumps(NEW_COMPLAINT)
    for text in (body[:-1] + ', "title": "the second title"}',
                 body.replace('"tier": "vip"', '"tier": "vip", "tier": "regular"'),
                 body.replace('"size_bytes": 2048', '"size_bytes": 2048, "size_bytes": 1')):
        answer = post_raw(api, "/complaints", text)
        assert answer.status_code == 422, answer.text
        assert "duplicate" in json.dumps(answer.json()).lower(), answer.text
    cid = register(api)
    for number in ("NaN", "Infinity", "-Infinity", "1e400"):
        answer = post_raw(api, f"/complaints/{cid}/escalate", f'{{"level": {number}, "reason": "x"}}')
        assert answer.status_code == 422, (number, answer.text)
    # Keeping it fast: a body just under the limit with one object of 30,000 members.
    started = time.monotonic()
    assert post_raw(api, "/complaints", unknown_keys(30_000)).status_code == 422
    assert time.monotonic() - started < 1.0


def test_9_a_nul_never_reaches_the_csv_export(api: TestClient, wiring: Wiring) -> None:
    """What the probe saw: a NUL stored, then raw in the CSV export. Now nothing is stored."""
    desk: ComplaintDesk = api.app.state.desk  # type: ignore[attr-defined]
    before = desk.recorder.max_notification_id() or 0
    for change in ({"title": "t\x00"}, {"customer": {"id": "\x00"}}, {"command_id": "\x00"}):
        assert api.post("/complaints", json=NEW_COMPLAINT | change).status_code == 422
    assert (desk.recorder.max_notification_id() or 0) == before
