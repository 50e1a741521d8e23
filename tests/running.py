"""`complaints run` (everything in one process, as `make run` serves it) as a test's server.

No demo data, and automation rules that leave triage and assignment to people, so a test
acting on a complaint is never raced by the automation. Tokens come from the server's
own development sign-in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from scripts.serving import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
# A rules file with no triage and no assignment rules: the automation triages and assigns nothing.
HANDS_OFF_RULES = 'version = "tests-hands-off"\n'


@contextmanager
def complaints_run(tmp_path: Path) -> Iterator[str]:
    """`complaints run --demo-count 0` on a free loopback port, until ready: its base URL."""
    rules = tmp_path / "rules.toml"
    rules.write_text(HANDS_OFF_RULES)
    # Run in tmp_path: every state file left at its default (var/...) lands there too.
    env = os.environ | {"PYTHONPATH": str(ROOT), "COMPLAINTS_SQLITE_PATH": str(tmp_path / "e.sqlite"),
                        "COMPLAINTS_READ_DB": str(tmp_path / "read.duckdb"),
                        "COMPLAINTS_AUTOMATION_STATE": str(tmp_path / "automation.sqlite"),
                        "COMPLAINTS_NOTIFIER_STATE": str(tmp_path / "notifier.sqlite"),
                        "COMPLAINTS_DEV_ISSUER_KEY": str(tmp_path / "issuer.pem"),
                        "COMPLAINTS_RULES": str(rules)}
    port = free_port()
    errors = tmp_path / "run.err"
    with errors.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "complaints.cli", "run", "--demo-count", "0",
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(f"{base}/health", timeout=60)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{errors.read_text()[-3000:]}") from None
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)


def token(base: str, username: str) -> str:
    """A bearer token for a demo user, from the server's development sign-in."""
    answer = httpx.post(f"{base}/auth/dev/token", json={"username": username}, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["access_token"])
