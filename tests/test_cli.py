"""The `complaints` command line, run as a user runs it (a real process, a real store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from commands.models import COMPLAINT_COMMANDS
from scripts.serving import free_port
from tests.identity import ISSUER_KEY, bearer


def complaints(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COMPLAINTS_STORE": "sqlite", "COMPLAINTS_SQLITE_PATH": str(tmp_path / "e.sqlite")}
    return subprocess.run(
        [sys.executable, "-m", "complaints.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_every_command_has_help(tmp_path: Path) -> None:
    top = complaints(tmp_path, "--help")
    assert top.returncode == 0
    for name in ["register", "show", "serve", "run", "demo", *COMPLAINT_COMMANDS]:
        assert name in top.stdout, name
    triage = complaints(tmp_path, "triage", "--help")
    assert triage.returncode == 0
    assert "severity" in triage.stdout and "required" in triage.stdout


def test_a_walk_through_the_cli(tmp_path: Path) -> None:
    made = complaints(
        tmp_path, "register", "channel=phone", "customer.id=C-7", "customer.tier=vip",
        "customer_personal.name=Wang", "customer_personal.contact=138000", "title=No signal",
        "description=Router drops every hour", "--actor", "desk-1",
    )
    assert made.returncode == 0, made.stderr
    cid = json.loads(made.stdout)["complaint_id"]
    triaged = complaints(tmp_path, "triage", cid, "category=product_defect", "severity=normal")
    assert json.loads(triaged.stdout)["status"] == "triaged"
    shown = json.loads(complaints(tmp_path, "show", cid).stdout)
    assert (shown["priority"], shown["version"]) == ("high", 2)  # normal, raised by VIP


def test_cli_errors_say_what_is_wrong(tmp_path: Path) -> None:
    bad = complaints(tmp_path, "register", "channel=pigeon", "--json", "{}")
    assert bad.returncode == 2
    assert "invalid channel" in bad.stderr
    missing = complaints(tmp_path, "close", "5b0c3f8e-6a4e-4c1a-9d8e-0c6f2f1b7a11")
    assert missing.returncode == 4
    assert "not found" in missing.stderr


def test_a_read_node_consumes_and_serves_the_read_api(tmp_path: Path) -> None:
    import time

    import httpx

    made = complaints(tmp_path, "demo", "--count", "20")
    assert made.returncode == 0, made.stderr
    port = free_port()
    env = os.environ | {
        "COMPLAINTS_STORE": "sqlite", "COMPLAINTS_SQLITE_PATH": str(tmp_path / "e.sqlite"),
        "COMPLAINTS_PROJECTORS": "projections.models:make", "COMPLAINTS_SOURCE": "log",
        "COMPLAINTS_DEV_ISSUER_KEY": str(ISSUER_KEY),
    }
    node = subprocess.Popen(
        [sys.executable, "-m", "complaints.cli", "read-node", "--db", str(tmp_path / "read.duckdb"),
         "--serve", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        total = None
        for _ in range(150):
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/dashboards/executive?period=365d", timeout=2,
                                   headers=bearer())
                if answer.status_code == 200 and answer.json()["total"] == 20:
                    total = 20
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert total == 20, "the read node did not serve all 20 demo complaints"
    finally:
        node.terminate()
        node.wait(20)
