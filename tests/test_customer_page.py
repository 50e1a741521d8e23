"""The customer in the loop, through real HTTP: signed links, the status page, the survey.

Complaints are driven through a `ComplaintDesk` on a SQLite store; a read node follows the
store in a background thread, as on the embedded default; the page and the survey are
served by uvicorn on a local port, and read with httpx as a browser would. What the page
should show is worked out here from the write side's aggregate, and what the survey
records is read back from the event store and from the read node's events table.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import given, settings, strategies as st

from aggregates.access import Principal
from aggregates.customer_links import (
    CustomerLinks, LinkInvalid, choose_language, complaint_number, link_url, survey_id,
)
from commands.customer_survey import customer_survey_router
from commands.desk import ComplaintDesk
from commands.models import (
    AddNote, AssignComplaint, ProposeResolution, RecordContact, RegisterComplaint, ReopenComplaint,
    ResolveComplaint, TriageComplaint,
)
from complaints.settings import Settings
from complaints.store import open_desk
from consumers.read_node import ReadNode
from consumers.sources import LogSource
from read_api.customer_page import CustomerPages, address_limit, customer_page_router
from scripts.serving import free_port
from tests.identity import OPERATOR

KEY = bytes(range(32))
TZ = "Asia/Shanghai"
CUSTOMER_ID = "C-7788"
# The handler: their subject, display name and team must never reach the customer.
AGENT = Principal("agent-wang", "王小明 Wang Xiaoming", frozenset({"agent"}), "billing")
SECRET_NOTE = "INTERNAL: customer threatened to go to the press"
INTERNAL_CONTACT = "Internal: called the warehouse about stock"
PUBLIC_REPLY = "We called you: a refund is on its way <b>soon</b>"
PROPOSAL = "Refund the second charge of 99 yuan"
RESOLUTION = "Refunded 99 yuan to the original card"


# ---------------------------------------------------------------------------- the world
@dataclass
class World:
    desk: ComplaintDesk
    node: ReadNode
    links: CustomerLinks
    url: str
    client: httpx.Client

    def sync(self) -> None:
        """Wait until the read node holds every event the store has."""
        last = self.desk.recorder.max_notification_id() or 0

        def caught_up() -> bool:
            found = self.node.cursor().execute("SELECT coalesce(max(position), 0) FROM events").fetchall()
            return bool(found[0][0] >= last)

        assert self.node.wait_for(caught_up, timeout=20), "the read node did not catch up"

    def page(self, token: str, **headers: str) -> httpx.Response:
        return self.client.get(f"/s/{token}", headers=headers)

    def survey(self, token: str, **fields: Any) -> httpx.Response:
        return self.client.post(f"/s/{token}/survey", data={k: str(v) for k, v in fields.items()})

    def status_link(self, complaint_id: UUID, days: float = 30) -> str:
        return self.links.issue(complaint_id, "status", datetime.now(UTC) + timedelta(days=days))

    def survey_link(self, complaint_id: UUID, nonce: str = "", days: float = 30) -> str:
        return self.links.issue(complaint_id, "survey", datetime.now(UTC) + timedelta(days=days), nonce)


def customer_app(desk: ComplaintDesk, node: ReadNode, links: CustomerLinks, rate: str) -> FastAPI:
    """What the composition root mounts: the page and the survey, one look and one limit."""
    pages, limit = CustomerPages(TZ), address_limit(rate)
    app = FastAPI()
    app.include_router(customer_page_router(lambda: node, links, pages=pages, limit=limit))
    app.include_router(customer_survey_router(desk, links, pages=pages, limit=limit))
    return app


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` on a free local port, in a thread: its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start within 20 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("customer")
    desk = open_desk(Settings(store="sqlite", sqlite_path=tmp / "events.sqlite"))
    node = ReadNode(tmp / "read.duckdb", LogSource(desk.recorder, desk.mapper, idle_sleep=0.01), poll_timeout=0.01)
    node.start_background()
    links = CustomerLinks(KEY)
    try:
        with serving(customer_app(desk, node, links, "10000/minute")) as url, httpx.Client(base_url=url) as client:
            yield World(desk, node, links, url, client)
    finally:
        node.stop()
        node.close()
        desk.close()


def register(world: World) -> UUID:
    return world.desk.register(RegisterComplaint(
        channel="web", customer={"id": CUSTOMER_ID, "tier": "vip"},
        customer_personal={"name": "李伟", "contact": "li.wei@example.com"},
        title="Charged twice", description="Two charges of 99 yuan", product="mobile-app",
    ), OPERATOR).complaint_id


def assigned(world: World) -> UUID:
    complaint_id = register(world)
    world.desk.execute(complaint_id, TriageComplaint(category="billing", severity="major"), OPERATOR)
    world.desk.execute(complaint_id, AssignComplaint(team="billing", agent=AGENT.subject), OPERATOR)
    return complaint_id


def resolved(world: World) -> UUID:
    complaint_id = assigned(world)
    world.desk.execute(complaint_id, ResolveComplaint(resolution=RESOLUTION), AGENT)
    return complaint_id


def local(at: datetime) -> str:
    return at.astimezone(ZoneInfo(TZ)).strftime("%Y-%m-%d %H:%M")


def text_of(html: str) -> str:
    """The page's text, without tags (what the customer reads)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# ---------------------------------------------------------------------------- the status page
def test_the_page_shows_status_promise_and_public_replies_in_both_languages(world: World) -> None:
    complaint_id = assigned(world)
    complaint = world.desk.get_complaint(complaint_id)
    token = world.status_link(complaint_id)
    world.sync()

    # Not answered yet: the promised first response, in Shanghai time; zh-CN without a header.
    page = world.page(token)
    assert page.status_code == 200, page.text
    assert page.headers["content-language"] == "zh-CN"
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    shown = text_of(page.text)
    assert complaint_number(complaint_id) in shown and complaint_number(complaint_id) == complaint_id.hex[:8].upper()
    assert "处理中" in shown and "首次答复时间不晚于" in shown
    assert complaint.first_response_due is not None
    assert local(complaint.first_response_due) in shown
    assert "暂无答复" in shown

    world.desk.execute(complaint_id, AddNote(text=SECRET_NOTE), AGENT)
    world.desk.execute(complaint_id, RecordContact(direction="outbound", visibility="internal", channel="phone",
                                                   summary=INTERNAL_CONTACT), AGENT)
    world.desk.execute(complaint_id, RecordContact(direction="inbound", channel="phone",
                                                   summary="Customer: I want my money back"), AGENT)
    world.desk.execute(complaint_id, RecordContact(direction="outbound", channel="phone", summary=PUBLIC_REPLY), AGENT)
    complaint = world.desk.get_complaint(complaint_id)
    world.sync()

    # Answered: the promised resolution; our public reply, escaped as text, and nothing internal.
    english = {"accept-language": "en-US,en;q=0.9,zh;q=0.5"}
    for headers, lang, words in (({}, "zh-CN", ("处理中", "承诺解决时间")),
                                 (english, "en", ("In progress", "We aim to resolve it by"))):
        page = world.page(token, **headers)
        assert page.status_code == 200 and page.headers["content-language"] == lang
        shown = text_of(page.text)
        assert all(word in shown for word in words), shown
        assert complaint.resolution_due is not None and local(complaint.resolution_due) in shown
        assert "We called you: a refund is on its way" in shown
        assert "&lt;b&gt;soon&lt;/b&gt;" in page.text and "<b>soon" not in page.text
        for hidden in (SECRET_NOTE, INTERNAL_CONTACT, "I want my money back", AGENT.subject, "王小明",
                       "Wang Xiaoming", "billing", "operator", CUSTOMER_ID, "李伟", "li.wei"):
            assert hidden not in page.text, hidden
        assert "<form" not in page.text  # a status link never carries the survey
    # ?lang= wins over the browser's choice.
    assert world.client.get(f"/s/{token}?lang=en", headers={"accept-language": "zh-CN"}).headers[
        "content-language"] == "en"


def test_proposals_and_the_resolution_are_shown_and_a_survey_link_carries_the_form(world: World) -> None:
    complaint_id = assigned(world)
    world.desk.execute(complaint_id, ProposeResolution(proposal=PROPOSAL), AGENT)
    status, survey = world.status_link(complaint_id), world.survey_link(complaint_id, "v1")
    world.sync()
    page = world.page(survey, **{"accept-language": "en"})
    shown = text_of(page.text)
    assert "Solution proposed" in shown and PROPOSAL in shown
    assert "<form" not in page.text  # not resolved yet: no survey

    world.desk.execute(complaint_id, ResolveComplaint(resolution=RESOLUTION), AGENT)
    world.sync()
    page = world.page(survey, **{"accept-language": "en"})
    shown = text_of(page.text)
    assert "Resolved" in shown and PROPOSAL in shown and RESOLUTION in shown
    assert "We aim to resolve it by" not in shown  # nothing is promised once resolved
    assert f'action="/s/{survey}/survey"' in page.text and 'name="csat"' in page.text
    assert "<form" not in world.page(status).text


# ---------------------------------------------------------------------------- the survey
def test_the_survey_records_verify_as_the_customer_once(world: World) -> None:
    complaint_id = resolved(world)
    token = world.survey_link(complaint_id, nonce="3")
    command_id = f"survey:{survey_id(complaint_id, '3')}"

    # Bad values: a 422 naming the field, in the form's language; nothing written.
    bad = world.survey(token, csat=9, lang="zh-CN")
    assert bad.status_code == 422 and 'data-field="csat"' in bad.text and "1 到 5" in bad.text
    bad = world.survey(token, csat=4, nps="ten", lang="en")
    assert bad.status_code == 422 and 'data-field="nps"' in bad.text and "0 to 10" in bad.text
    as_json = world.client.post(f"/s/{token}/survey", json={"csat": 4, "effort": 8})
    assert as_json.status_code == 422 and as_json.json()["detail"][0]["loc"] == ["body", "effort"]
    assert world.desk.get_complaint(complaint_id).status == "resolved"

    done = world.survey(token, csat=5, nps=9, effort=2, comment="  处理得很快  ", lang="zh-CN")
    assert done.status_code == 200, done.text
    assert "感谢您的评价" in done.text and complaint_number(complaint_id) in done.text

    complaint = world.desk.get_complaint(complaint_id)
    assert complaint.status == "verified"
    assert complaint.verification == {"csat": 5, "nps": 9, "effort": 2, "comment": "处理得很快"}
    assert complaint.commands[command_id]["actor"] == f"customer:{CUSTOMER_ID}"
    world.sync()
    rows = world.node.cursor().execute(
        "SELECT actor, command_id, payload->>'csat', payload->>'nps', payload->>'effort' FROM events"
        " WHERE complaint_id = ? AND event_type = 'Verified'", [str(complaint_id)]).fetchall()
    assert rows == [(f"customer:{CUSTOMER_ID}", command_id, "5", "9", "2")]

    # The link is used: the same answer again, another answer, and the page itself are 404s.
    gone = world.page("not-a-token").text
    again = world.survey(token, csat=5, nps=9, effort=2, comment="处理得很快", lang="zh-CN")
    other = world.survey(token, csat=1, lang="zh-CN")
    page = world.page(token)
    assert [again.status_code, other.status_code, page.status_code] == [404, 404, 404]
    assert again.text == other.text == page.text == gone
    assert world.desk.get_complaint(complaint_id).version == complaint.version
    assert world.page(world.status_link(complaint_id)).status_code == 200  # the status link still works


def test_a_re_resolution_gets_a_survey_of_its_own(world: World) -> None:
    complaint_id = resolved(world)
    first = world.survey_link(complaint_id, nonce=str(world.desk.get_complaint(complaint_id).version))
    assert world.survey(first, csat=2).status_code == 200
    world.desk.execute(complaint_id, ReopenComplaint(reason="charged again"), OPERATOR)
    assert world.survey(first, csat=2).status_code == 404  # reopened: not resolved, and used
    world.desk.execute(complaint_id, ResolveComplaint(resolution="Card blocked and refunded"), AGENT)
    second = world.survey_link(complaint_id, nonce=str(world.desk.get_complaint(complaint_id).version))
    assert second != first
    assert world.survey(second, csat=4).status_code == 200
    assert world.desk.get_complaint(complaint_id).verification["csat"] == 4  # type: ignore[index]


def test_a_survey_before_resolution_is_refused_and_writes_nothing(world: World) -> None:
    complaint_id = assigned(world)
    version = world.desk.get_complaint(complaint_id).version
    answer = world.survey(world.survey_link(complaint_id), csat=5)
    assert answer.status_code == 404 and answer.text == world.page("x.y.z").text
    assert world.desk.get_complaint(complaint_id).version == version


# ---------------------------------------------------------------------------- bad links
def test_forged_expired_wrong_and_unknown_links_are_the_same_404(world: World) -> None:
    complaint_id = resolved(world)
    world.sync()
    now = datetime.now(UTC)
    forged = CustomerLinks(b"k" * 32)
    bodies: dict[str, httpx.Response] = {
        "garbage": world.page("abc"),
        "forged page": world.page(forged.issue(complaint_id, "status", now + timedelta(days=1))),
        "forged survey": world.survey(forged.issue(complaint_id, "survey", now + timedelta(days=1)), csat=5),
        "expired page": world.page(world.links.issue(complaint_id, "status", now - timedelta(seconds=1))),
        "expired survey": world.survey(world.links.issue(complaint_id, "survey", now - timedelta(seconds=1)), csat=5),
        "status link posted": world.survey(world.status_link(complaint_id), csat=5),
        "unknown complaint": world.page(world.status_link(uuid4())),
        "unknown complaint survey": world.survey(world.survey_link(uuid4()), csat=5),
        "unsigned": world.page(world.status_link(complaint_id).rsplit(".", 1)[0] + "."),
    }
    assert {name: r.status_code for name, r in bodies.items()} == dict.fromkeys(bodies, 404)
    assert len({r.text for r in bodies.values()}) == 1
    assert len({r.headers["content-length"] for r in bodies.values()}) == 1
    body = next(iter(bodies.values())).text
    assert str(complaint_id) not in body and complaint_number(complaint_id) not in body
    assert world.desk.get_complaint(complaint_id).status == "resolved"  # none of them wrote


def test_the_page_and_the_survey_share_a_limit_per_address(world: World) -> None:
    complaint_id = resolved(world)
    world.sync()
    app = customer_app(world.desk, world.node, world.links, "3/minute")
    with serving(app) as url, httpx.Client(base_url=url) as client:
        token = world.status_link(complaint_id)
        codes = [client.get(f"/s/{token}").status_code, client.get("/s/forged").status_code,
                 client.post(f"/s/{world.survey_link(complaint_id)}/survey", data={"csat": "x"}).status_code]
        refused = [client.get(f"/s/{token}"), client.post(f"/s/{token}/survey", data={"csat": "5"})]
    assert codes == [200, 404, 422]
    assert [r.status_code for r in refused] == [429, 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)


# ---------------------------------------------------------------------------- the links themselves
def flipped(token: str, data: st.DataObject) -> str:
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="mask")
    return token[:position] + chr(ord(token[position]) ^ mask) + token[position + 1:]


@settings(max_examples=2000, deadline=None)
@given(purpose=st.sampled_from(["status", "survey"]), data=st.data())
def test_a_byte_flipped_link_is_never_accepted(purpose: str, data: st.DataObject) -> None:
    links = CustomerLinks(KEY)
    complaint_id = UUID(int=data.draw(st.integers(0, 2**128 - 1), label="complaint"))
    expires = datetime.now(UTC) + timedelta(days=30)
    token = links.issue(complaint_id, purpose, expires, nonce="7")  # type: ignore[arg-type]
    assert links.read(token, purpose, datetime.now(UTC)).complaint_id == complaint_id  # type: ignore[arg-type]
    with pytest.raises(LinkInvalid):
        links.read(flipped(token, data), ("status", "survey"), datetime.now(UTC))


@pytest.fixture(scope="module")
def waiting_survey(world: World) -> UUID:
    """A resolved complaint whose survey nobody answers."""
    return resolved(world)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_byte_flipped_link_is_a_404_over_http(world: World, waiting_survey: UUID, data: st.DataObject) -> None:
    token = world.survey_link(waiting_survey)
    answer = world.client.post(f"/s/{quote(flipped(token, data), safe='')}/survey", data={"csat": "1"})
    assert answer.status_code == 404, answer.text
    assert world.desk.get_complaint(waiting_survey).status == "resolved"


def test_links_say_what_they_are_and_when_they_end() -> None:
    links, complaint_id = CustomerLinks(KEY), uuid4()
    now = datetime.now(UTC)
    status = links.issue(complaint_id, "status", now + timedelta(days=30))
    survey = links.issue(complaint_id, "survey", now + timedelta(days=30), nonce="5")
    assert links.issue(complaint_id, "survey", now + timedelta(days=30), nonce="5") == survey  # redelivery: same link
    assert links.issue(complaint_id, "survey", now + timedelta(days=30), nonce="6") != survey
    claims = links.read(survey, "survey", now)
    assert claims.complaint_id == complaint_id and claims.survey_command_id == f"survey:{survey_id(complaint_id, '5')}"
    assert links.read(status, "status", now).survey_id is None
    assert len(status) < 200 and len(survey) < 240  # short enough for an SMS
    with pytest.raises(LinkInvalid):
        links.read(status, "survey", now)
    with pytest.raises(LinkInvalid):
        links.read(survey, "status", now)
    with pytest.raises(LinkInvalid):
        links.read(status, "status", now + timedelta(days=31))
    with pytest.raises(ValueError):
        CustomerLinks(b"short")
    assert link_url("https://complaints.example.com/", status) == f"https://complaints.example.com/s/{status}"


@pytest.mark.parametrize(("lang", "accept", "expected"), [
    (None, None, "zh-CN"),
    (None, "", "zh-CN"),
    (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
    (None, "zh-TW", "zh-CN"),
    (None, "en-US,en;q=0.9", "en"),
    (None, "en;q=0.5, zh;q=0.8", "zh-CN"),
    (None, "fr-FR, de;q=0.8", "en"),
    (None, "fr-FR, zh;q=0.1", "zh-CN"),
    ("en", "zh-CN", "en"),
    ("zh-cn", "en", "zh-CN"),
    ("klingon", "en", "en"),
])
def test_the_language_is_the_links_then_the_browsers(lang: str | None, accept: str | None, expected: str) -> None:
    assert choose_language(lang, accept) == expected
