"""The `complaints` command line, run as a user runs it (a real process, a real store)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from commands.models import COMPLAINT_COMMANDS
from scripts.serving import free_port, wait_until_serving
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


def run_env(**extra: str) -> dict[str, str]:
    """`complaints run` as `make run` starts it (defaults under ./var), trusting the tests' tokens."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")} | {
        "COMPLAINTS_DEV_ISSUER_KEY": str(ISSUER_KEY), "PYTHONUNBUFFERED": "1"} | extra


@contextmanager
def running(tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`complaints run ARGS` in `tmp_path` (its var/ there) on a free port, serving: its
    address, process and log; stopped at the end."""
    port = free_port()
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "complaints.cli", "run", "--port", str(port), *args],
                                   cwd=tmp_path, env=run_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/health", timeout=60)
        yield f"http://127.0.0.1:{port}", process, log
    finally:
        process.terminate()
        process.wait(30)


def test_a_second_run_and_figures_say_in_one_line_who_holds_the_read_file(tmp_path: Path) -> None:
    """A second `make run`, or `read-models figures` while `make run` serves: one line naming
    the process that holds the DuckDB file and what to do (in the user's language), no
    traceback, a failing exit code; the first one serves on."""
    with running(tmp_path, "--demo-count", "20") as (address, first, log):
        deadline = time.monotonic() + 60
        while "demo data loaded" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        # `make run` tells when its demo data is in: how many complaints, how long it took.
        assert re.search(r"demo data loaded: 20 complaints \(\d+ commands\) in \d+\.\d s", log.read_text()), \
            log.read_text()[-3000:]
        held = str(tmp_path / "var" / "read.duckdb")
        for language, words in (("C.UTF-8", "is in use by process"), ("zh_CN.UTF-8", "正被进程")):
            for second in (["run", "--port", str(free_port())], ["read-models", "figures"]):
                done = subprocess.run([sys.executable, "-m", "complaints.cli", *second], cwd=tmp_path,
                                      env=run_env(LANG=language), capture_output=True, text=True, timeout=120)
                assert done.returncode != 0, (second, done.stdout)
                assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
                line = done.stderr.strip()
                assert held in line and words in line and f"{first.pid}" in line, line
                assert f"complaints run --port {address.rsplit(':', 1)[1]}" in line, line
                assert "COMPLAINTS_READ_DB" in line and done.stdout == "", (line, done.stdout)
        assert first.poll() is None  # the first one serves on, as it did
        assert httpx.get(f"{address}/ready").status_code == 200
