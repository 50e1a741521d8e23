"""A poison notice goes to dead letters with its reason, and the queue goes on.

The classic poison in production is a company's own template with a mistake that only
some events hit (COMPLAINTS_NOTIFY_TEMPLATES takes the place of the packaged templates):
here `event.en.txt` upper-cases the product, which a complaint without a product does not
have. Its notice must be set aside when it is planned, and every other complaint's
message, before and after it, delivered to a real chat-robot receiver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aggregates.access import Principal
from commands.models import RegisterComplaint
from commands.subscriptions import CreateSubscription
from complaints.identity import dev_user
from complaints.settings import Settings
from complaints.wiring import Wiring
from consumers.notify_render import use_templates
from tests.identity import ISSUER, ISSUER_KEY
from tests.receivers import Receiver

BROKEN_EVENT = """{% block subject %}[{{ event_type }}] {{ complaint_number }} for {{ product.upper() }}{% endblock %}
{% block body %}Complaint {{ complaint_number }} about {{ product.upper() }}{% endblock %}
"""
INTAKE = Principal("intake", "Wang Fang", frozenset({"intake"}))
ADMIN = Principal("admin", "Wu Qiang", frozenset({"admin"}))


@pytest.fixture
def wiring(tmp_path: Path) -> Iterator[Wiring]:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "event.en.txt").write_text(BROKEN_EVENT)
    settings = Settings(store="sqlite", sqlite_path=tmp_path / "events.sqlite", secrets_key=tmp_path / "secrets.key",
                        links_key=tmp_path / "links.key", notifier_state=tmp_path / "notifier.sqlite",
                        notify_templates=templates, notify_allow_hosts=["127.0.0.1"], dev_issuer_key=ISSUER_KEY,
                        notify_retry_schedule=[0.2, 0.4])
    wiring = Wiring(settings)
    yield wiring
    wiring.close()
    use_templates(None)  # the packaged templates again, for the tests after this one


def register(wiring: Wiring, n: int, product: str | None) -> str:
    return str(wiring.desk().register(RegisterComplaint(
        channel="web", customer={"id": f"C-{n}"}, customer_personal={"name": "李娜", "contact": "li@example.com"},
        title=f"complaint {n}", description="it broke", product=product, command_id=f"poison-{n}"),
        INTAKE).complaint_id)


def test_a_notice_no_template_renders_is_set_aside_and_the_rest_are_delivered(wiring: Wiring) -> None:
    desk = wiring.desk()
    with Receiver() as robot:
        desk.create_subscription(CreateSubscription(name="ops room", kind="wecom", endpoint=robot.url("/wecom"),
                                                    language="en"), ADMIN)
        products = ["ebike", None, "router", None, "kettle"]
        ids = [register(wiring, n, product) for n, product in enumerate(products)]
        notifier = wiring.notifier(desk=desk, source="log")
        notifier.start_background()
        try:
            received = robot.wait_for(3, timeout=15)
            time.sleep(0.5)  # nothing else may come
            texts = [r.json()["markdown"]["content"] for r in robot.requests()]
            app = FastAPI()
            app.include_router(wiring.notifier_router(notifier))
            client = TestClient(app)
            token = {"Authorization": f"Bearer {ISSUER.token(dev_user('admin', None))}"}
            dead = client.get("/deliveries/dead-letters", headers=token).json()
        finally:
            notifier.stop()
            notifier.close()
    assert len(received) == 3 and len(robot.requests()) == 3
    for product in ("EBIKE", "ROUTER", "KETTLE"):
        assert sum(product in text for text in texts) == 1, texts
    assert len(dead) == 2, dead
    positions = {d["position"] for d in dead}
    assert all(d["type"] == "complaint.registered" and "RenderError" in d["reason"] and "upper" in d["reason"]
               for d in dead), dead
    # The set-aside ones are the complaints without a product, in the log's order.
    stored = {str(n.originator_id): n.id for n in desk.recorder.select_notifications(1, 100)
              if n.topic.endswith(".Registered")}
    assert positions == {stored[ids[1]], stored[ids[3]]}
