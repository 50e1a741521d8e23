"""The README's curl walks, run as written against a real server process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from scripts.serving import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent


def run_walk(tmp_path: Path, pattern: str, *server: str) -> list[str]:
    """The README's ```sh block matching `pattern`, run with bash against `complaints
    <server...>` on a free port; the lines it printed."""
    walk = re.search(pattern, (ROOT / "README.md").read_text(), re.S)
    assert walk, f"the README's walk {pattern!r} is missing"
    port = free_port()
    script = walk.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    # The walk's `complaints token` and the server share the development issuer's key.
    env = os.environ | {"COMPLAINTS_SQLITE_PATH": str(tmp_path / "e.sqlite"),
                        "COMPLAINTS_READ_DB": str(tmp_path / "read.duckdb"),
                        "COMPLAINTS_AUTOMATION_STATE": str(tmp_path / "automation.sqlite"),
                        "COMPLAINTS_DEV_ISSUER_KEY": str(tmp_path / "issuer.pem")}
    process = subprocess.Popen(
        [sys.executable, "-m", "complaints.cli", *server, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/health")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                              text=True, timeout=60, env=env, cwd=ROOT)
    finally:
        process.terminate()
        process.wait(10)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_the_readme_curl_walk_works_as_written(tmp_path: Path) -> None:
    lines = run_walk(tmp_path, r"```sh\n(API=http://127\.0\.0\.1:8000\n.*?)```", "serve")
    *answers, now, then = [json.loads(line) for line in lines]
    assert [a["status"] for a in answers] == ["triaged", "assigned", "assigned", "resolved", "verified", "closed"]
    assert [a["version"] for a in answers] == [2, 3, 4, 5, 6, 7]
    assert (now["status"], now["version"], now["priority"], now["updated_by"]) == ("closed", 7, "urgent", "billing-1")
    assert then == {"status": "assigned", "team": "billing", "agent": "billing-1"}


def test_the_readme_rules_walk_works_as_written(tmp_path: Path) -> None:
    """`make run` (here `complaints run` without demo data), a fatal complaint, and with no
    other request: triaged, assigned, and a critical alert in the read API."""
    complaint, *alerts = run_walk(tmp_path, r"```sh\n(API=http://127\.0\.0\.1:8000\n[^`]*?安全隐患.*?)```",
                                  "run", "--demo-count", "0")
    assert [json.loads(a) for a in alerts] == [{"severity": "critical", "title_zh": "致命投诉（product_defect，ebike）",
                                                "team": "tech-support", "complaint_id": complaint}]


def test_the_readme_erasure_walk_works_as_written(tmp_path: Path) -> None:
    """Personal data: opened for a role that may see it, masked for one that may not, and
    `[erased]` once the customer is erased; the lines the README shows in its comments."""
    *seen, erased, after = run_walk(tmp_path, r"```sh\n(API=http://127\.0\.0\.1:8000\n[^`]*?/erasure.*?)```", "serve")
    script = re.search(r"```sh\n(API=http://127\.0\.0\.1:8000\n[^`]*?/erasure.*?)```",
                       (ROOT / "README.md").read_text(), re.S).group(1)  # type: ignore[union-attr]
    shown = [json.loads(line.split("# ", 1)[1]) for line in script.splitlines() if line.startswith("seen ")]
    assert [json.loads(line) for line in (*seen, after)] == shown
    assert json.loads(erased)["replayed"] is False and len(json.loads(erased)["complaints"]) == 1
