"""The agents' workspace in a real browser (Debian's Chromium through Playwright), against
`complaints run`: the command API, the in-process read node, the automation and the pages in
one real process, as `make run` starts them.

The automation runs with the packaged rules but no roster, so it triages and assigns each
new complaint to a team and leaves it in the team's queue for an agent to take. The page is
driven as people use it: sign in through the dashboard's development sign-in, take a
complaint from the queue, add a note and resolve it; the team lead sees it counted; the
page switched to zh-CN; a drill from a dashboard chart to a complaint; a reloaded URL gives
the same view; a complaint changed behind the page's back is a "changed by someone else"
that overwrites nothing; the intake form registers a complaint. What the page did is
checked through the API, never only on the screen. Screenshots go to test-output/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from scripts.serving import free_port, wait_until_serving
from tests.test_dashboard_browser import LAPTOP, OUTPUT, Watch, browser, sign_in  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent


def token(base_url: str, username: str) -> dict[str, str]:
    answer = httpx.post(f"{base_url}/auth/dev/token", json={"username": username})
    answer.raise_for_status()
    return {"authorization": f"Bearer {answer.json()['access_token']}"}


def complaint(base_url: str, complaint_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{base_url}/complaints/{complaint_id}", headers=token(base_url, "head"))
    answer.raise_for_status()
    return answer.json()


def events_of(base_url: str, complaint_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base_url}/audit/complaints/{complaint_id}/history", headers=token(base_url, "head"))
    if answer.status_code == 404:  # not in the read node yet
        return []
    answer.raise_for_status()
    return answer.json()["events"]


def until(check: Any, what: str, seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.1)
    return found


def register(base_url: str, title: str, product: str = "空调", who: str = "intake") -> str:
    answer = httpx.post(f"{base_url}/complaints", headers=token(base_url, who), json={
        "channel": "phone", "customer": {"id": f"C-{title}"},
        "customer_personal": {"name": "王小明", "contact": "13812345678"},
        "title": title, "description": "买了三天就不制冷了", "product": product})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["complaint_id"])


def waiting_in_billing(base_url: str, complaint_id: str) -> None:
    """The automation triages and assigns it to its team; it is then handed to billing's queue."""
    until(lambda: complaint(base_url, complaint_id)["status"] == "assigned", "the automation assigns it")
    if complaint(base_url, complaint_id)["team"] != "billing":
        answer = httpx.post(f"{base_url}/complaints/{complaint_id}/assign", headers=token(base_url, "head"),
                            json={"team": "billing"})
        assert answer.status_code == 200, answer.text
    assert complaint(base_url, complaint_id)["agent"] is None


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`complaints run` (no demo data) in a directory of its own, with a roster-less copy of the rules."""
    home = tmp_path_factory.mktemp("workspace")
    rules = (ROOT / "aggregates" / "rules.toml").read_text()
    (home / "rules.toml").write_text("".join(
        block for block in re.split(r"(?m)^(?=\[)", rules) if not block.startswith("[[roster]]")))
    port = free_port()
    env = os.environ | {"COMPLAINTS_RULES": str(home / "rules.toml")}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "COMPLAINTS_KAFKA_BOOTSTRAP_SERVERS", "COMPLAINTS_STORE"):
        env.pop(name, None)
    log = (home / "run.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "complaints.cli", "run", "--demo-count", "0", "--port", str(port)],
                               cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/health", timeout=60)
        yield url
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def view_of(page: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def open_workspace(page: Any, base_url: str, username: str) -> None:
    """Signed in through the dashboard's sign-in, then its link to the workspace."""
    sign_in(page, base_url, username, "/dashboard?lang=en")
    page.click("a[href^='/workspace']")
    page.wait_for_selector("#signed-in", state="visible")


def test_an_agent_takes_notes_and_resolves_and_the_lead_sees_it(base_url: str, browser: Any) -> None:
    OUTPUT.mkdir(exist_ok=True)
    taken = register(base_url, "空调不制冷")
    waiting_in_billing(base_url, taken)
    page = browser.new_page(viewport=LAPTOP)
    watch = Watch(page)
    open_workspace(page, base_url, "billing-1")
    # 1-2. The team's unassigned queue lists it (the live list follows the read model); take it.
    page.click("#queues button[data-queue=unassigned]")
    row = page.locator(f"#queue tr[data-complaint='{taken}']")
    row.wait_for(timeout=20_000)
    row.click()
    page.wait_for_selector("#c-actions button[data-action=assign]")
    assert page.locator("#c-actions button[data-action=assign]").inner_text() == "Take it"
    page.click("#c-actions button[data-action=assign]")
    until(lambda: complaint(base_url, taken)["agent"] == "billing-1", "the agent takes it")
    # 3. A note, then the resolution, each once, by the agent.
    page.wait_for_selector("#c-actions button[data-action=add_note]")
    page.click("#c-actions button[data-action=add_note]")
    page.fill("#action-form textarea[name=text]", "已联系客户，安排上门")
    page.click("#action-form button[type=submit]")
    until(lambda: complaint(base_url, taken)["notes"] == 1, "the note is recorded")
    page.wait_for_selector("#c-actions button[data-action=resolve]")
    page.click("#c-actions button[data-action=resolve]")
    page.fill("#action-form textarea[name=resolution]", "更换压缩机")
    page.click("#action-form button[type=submit]")
    until(lambda: complaint(base_url, taken)["status"] == "resolved", "the complaint is resolved")
    # (the audit history is the read node's: it follows the store)
    events = until(lambda: (found := events_of(base_url, taken)) and found[-1]["event_type"] == "Resolved" and found,
                   "the read node has the resolution")
    assert [(e["event_type"], e["actor"]) for e in events[-3:]] == [
        ("Assigned", "billing-1"), ("NoteAdded", "billing-1"), ("Resolved", "billing-1")]
    # The list follows: resolved, it leaves "mine" without a reload.
    page.click("#queues button[data-queue=mine]")
    until(lambda: page.locator(f"#queue tr[data-complaint='{taken}']").count() == 0, "the list follows")
    page.screenshot(path=str(OUTPUT / "workspace-agent-en.png"), full_page=True)

    # 4. The team lead sees it counted on the supervisor's dashboard (resolved today), and
    # 6. drills from that figure to the list behind it, and from there to the complaint.
    page.click("#sign-out")
    sign_in(page, base_url, "billing-lead", "/dashboard?lang=en")
    resolved_today = page.locator("[data-kpi=resolved_today] .value")
    until(lambda: resolved_today.inner_text().strip() == "1", "the dashboard counts the resolution")
    page.screenshot(path=str(OUTPUT / "workspace-lead-dashboard-en.png"))
    page.click("[data-kpi=resolved_today]")
    page.wait_for_url("**/workspace?*")
    assert view_of(page) | {"team": "billing"} == {"period": "today", "dated_by": "resolved", "team": "billing"}
    page.locator(f"#queue tr[data-complaint='{taken}']").click()
    page.wait_for_function("() => document.querySelector('#c-title').innerText === '空调不制冷'")
    assert view_of(page)["complaint"] == taken

    # 5. zh-CN: the labels, a Chinese product name, drawn in a CJK font.
    page.goto(f"{base_url}/workspace?queue=all&complaint={taken}")
    page.wait_for_selector("#c-title")
    page.locator(".lang-switcher").first.select_option("zh-CN")
    assert page.locator("#queues button[data-queue=mine]").inner_text() == "我的"
    page.wait_for_function("() => document.querySelector('#c-facts').innerText.includes('已解决')")
    assert "空调" in page.locator("#c-facts").inner_text()
    assert page.evaluate("() => document.fonts.check('16px \"Noto Sans CJK SC\"', '空调')")
    page.screenshot(path=str(OUTPUT / "workspace-lead-zh-CN.png"), full_page=True)

    # 7. The view lives in the URL: a reload gives the same list, filters and complaint.
    page.goto(f"{base_url}/workspace?queue=all&status=resolved&sort=age&order=desc&complaint={taken}")
    page.wait_for_selector(f"#queue tr[data-complaint='{taken}']")
    before = (page.locator("#queue tbody").inner_text(), page.locator("#c-title").inner_text())
    page.reload()
    page.wait_for_selector(f"#queue tr[data-complaint='{taken}']")
    page.wait_for_function("() => document.querySelector('#c-title').innerText.length > 0")
    assert (page.locator("#queue tbody").inner_text(), page.locator("#c-title").inner_text()) == before
    assert page.locator("#filters select[name=status]").input_value() == "resolved"
    assert page.locator("#filters select[name=sort]").input_value() == "age"
    # Back and forward walk the views.
    page.click("#queues button[data-queue=team]")
    assert view_of(page)["queue"] == "team"
    page.go_back()
    assert view_of(page)["queue"] == "all"
    assert page.locator("#queues button.active").get_attribute("data-queue") == "all"
    assert watch.errors == [] and watch.untokened == []


def test_a_complaint_changed_meanwhile_is_never_overwritten(base_url: str, browser: Any) -> None:
    cid = register(base_url, "发票金额不对")
    waiting_in_billing(base_url, cid)
    page = browser.new_page(viewport=LAPTOP)
    open_workspace(page, base_url, "billing-lead")
    page.goto(f"{base_url}/workspace?queue=team&complaint={cid}")
    page.wait_for_selector("#c-actions button[data-action=add_note]")
    seen = complaint(base_url, cid)["version"]
    # Someone else adds a note while the page shows the complaint.
    answer = httpx.post(f"{base_url}/complaints/{cid}/notes", headers=token(base_url, "head"), json={"text": "head"})
    assert answer.status_code == 200
    page.click("#c-actions button[data-action=add_note]")
    page.fill("#action-form textarea[name=text]", "mine")
    page.click("#action-form button[type=submit]")
    page.wait_for_selector("#conflict", state="visible")
    assert complaint(base_url, cid)["version"] == seen + 1, "the page's note was not written over the change"
    assert page.locator("#action-form textarea[name=text]").input_value() == "mine", "what was typed is kept"
    page.screenshot(path=str(OUTPUT / "workspace-conflict.png"))
    page.click("#reload")
    page.wait_for_selector("#conflict", state="hidden")
    page.click("#action-form button[type=submit]")
    until(lambda: complaint(base_url, cid)["notes"] == 2, "the note, after a reload")
    time.sleep(0.5)
    assert complaint(base_url, cid)["notes"] == 2, "recorded once"


def test_the_intake_form_registers_a_complaint(base_url: str, browser: Any) -> None:
    page = browser.new_page(viewport=LAPTOP)
    open_workspace(page, base_url, "intake")
    page.click("#new-complaint")
    form = page.locator("#intake-form")
    form.locator("select[name=channel]").select_option("counter" if "counter" in form.locator(
        "select[name=channel]").inner_text() else "phone")
    form.locator("input[name=customer_id]").fill("C-counter-1")
    form.locator("input[name=name]").fill("李雷")
    form.locator("input[name=contact]").fill("13900001111")
    form.locator("input[name=product]").fill("洗衣机")
    form.locator("input[name=title]").fill("洗衣机漏水")
    form.locator("textarea[name=description]").fill("第一次使用就漏水")
    form.locator("button[type=submit]").click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('complaint')")
    cid = view_of(page)["complaint"]
    registered = complaint(base_url, cid)
    assert (registered["title"], registered["product"], registered["customer"]["id"]) == ("洗衣机漏水", "洗衣机", "C-counter-1")
    assert until(lambda: events_of(base_url, cid), "the read node has it")[0]["actor"] == "intake"
    page.wait_for_selector("#c-title")
    assert page.locator("#c-title").inner_text() == "洗衣机漏水"


def test_custom_fields_and_tags_from_the_page(base_url: str, browser: Any) -> None:
    cid = register(base_url, "空调漏水")
    waiting_in_billing(base_url, cid)
    answer = httpx.post(f"{base_url}/complaints/{cid}/triage", headers=token(base_url, "head"),
                        json={"category": "product_defect", "severity": "normal"})
    assert answer.status_code == 200, answer.text
    page = browser.new_page(viewport=LAPTOP)
    open_workspace(page, base_url, "billing-lead")
    page.goto(f"{base_url}/workspace?queue=team&complaint={cid}&lang=zh-CN")
    page.click("#c-actions button[data-action=update_fields]")
    form = page.locator("#action-form")
    form.locator("select[name='field:store']").select_option("sh-xuhui")
    form.locator("input[name='field:product_model']").fill("KFR-35GW")
    form.locator("input[name='field:batch_number']").fill("no")  # not the batch number pattern
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#error.error")
    assert "batch_number" in page.locator("#error").inner_text()
    assert complaint(base_url, cid)["fields"] == {}, "a refused value records nothing"
    form.locator("input[name='field:batch_number']").fill("B2026-11")
    form.locator("button[type=submit]").click()
    until(lambda: complaint(base_url, cid)["fields"] == {"store": "sh-xuhui", "product_model": "KFR-35GW",
                                                         "batch_number": "B2026-11"}, "the fields are set")
    page.wait_for_selector("#c-facts dd[data-field=store]")
    assert page.locator("#c-facts dd[data-field=store]").inner_text() == "上海徐汇店"
    # Tags: normalised by the API, removed by their x.
    page.fill("#new-tag", "  安装 问题 ")
    page.click(".add-tag button[type=submit]")
    until(lambda: complaint(base_url, cid)["tags"] == ["安装 问题"], "the tag is added")
    page.wait_for_selector(".tag[data-tag='安装 问题'] .untag")
    page.click(".tag[data-tag='安装 问题'] .untag")
    until(lambda: complaint(base_url, cid)["tags"] == [], "the tag is removed")
    # The timeline tells each in Chinese.
    page.wait_for_function("""() => ['字段：', 'store: - → sh-xuhui', '添加标签：安装 问题', '移除标签：安装 问题']
        .every((line) => document.querySelector('#c-timeline').innerText.includes(line))""")
    page.screenshot(path=str(OUTPUT / "workspace-fields-zh-CN.png"), full_page=True)
