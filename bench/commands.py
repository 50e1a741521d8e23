"""Commands per second on SQLite: in-process and over HTTP, beside eventsourcing's raw save.

    python -m bench.commands --help

- raw: eventsourcing alone: an aggregate already in memory triggers one event and
  `Application.save` writes it; no loading, no validation. The ceiling.
- in-process: `ComplaintDesk.execute` with a pydantic command: load (from the aggregate
  cache), check, call, save; one event per command, the same events as the raw run.
- HTTP: the real command API under uvicorn, loaded by wrk (Debian's package) with
  `--connections` concurrent connections posting notes to rotating complaints, each
  request with a bearer token verified as in production (the development issuer's RS256
  key; rate limits raised out of the way but still counted); beside it, alternated, the
  same app whose dependency hands out one principal without looking at any token (the
  unauthenticated rate the issue compares with).
- token verification: what a token the API has not seen costs (signature, claims).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from aggregates.access import Principal
from aggregates.complaint import Complaint, Meta
from complaints.identity import DEV_ISSUER, DevUser, LocalIssuer, RateLimits, TokenVerifier, authenticator
from complaints.store import open_desk
from commands.models import AddNote, RegisterComplaint
from complaints.settings import Settings
from scripts.serving import free_port, wait_until_serving

BENCH = Principal("bench", "bench", frozenset({"department_head"}))
BENCH_USER = DevUser("bench", "bench", ("department_head",))

REGISTER: dict[str, Any] = {
    "channel": "web", "customer": {"id": "C-1", "tier": "regular"},
    "customer_personal": {"name": "Bench", "contact": "bench@example.com"},
    "title": "Bench", "description": "A complaint for the benchmark",
}


def raw_save(path: Path, complaints: int, notes: int) -> float:
    """Events per second of eventsourcing's own save, one event per save."""
    from eventsourcing.application import Application

    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
    now = datetime.now(UTC)
    aggregates = []
    start = time.perf_counter()
    for n in range(complaints):
        meta = Meta("bench", now, f"r-{n}", f"r-{n}")
        complaint = Complaint(**RegisterComplaint.model_validate(REGISTER).event_fields(), **meta.fields())
        app.save(complaint)
        aggregates.append(complaint)
    for round_ in range(notes):
        for n, complaint in enumerate(aggregates):
            complaint.add_note("note", Meta("bench", now, f"n-{round_}-{n}", "c"))
            app.save(complaint)
    elapsed = time.perf_counter() - start
    app.close()
    return complaints * (notes + 1) / elapsed


def in_process(path: Path, complaints: int, notes: int) -> float:
    desk = open_desk(Settings(store="sqlite", sqlite_path=path))
    start = time.perf_counter()
    ids = [desk.register(RegisterComplaint.model_validate(REGISTER), BENCH).complaint_id for _ in range(complaints)]
    for _ in range(notes):
        for complaint_id in ids:
            desk.execute(complaint_id, AddNote(text="note"), BENCH)
    elapsed = time.perf_counter() - start
    desk.close()
    return complaints * (notes + 1) / elapsed


WRK_SCRIPT = """
local ids = {%s}
local n = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer %s"
request = function()
  n = n + 1
  local id = ids[(n %% #ids) + 1]
  return wrk.format(nil, "/complaints/" .. id .. "/notes", nil, [==[%s]==])
end
"""
NOTE = '{"text":"load"}'


def serve_without_tokens(path: Path, port: int) -> None:
    """The command API exactly as `complaints serve` builds it (settings, logging, wiring),
    except that its principal needs no token."""
    from complaints.logs import configure_logging
    from complaints.wiring import Wiring

    async def anyone() -> Principal:
        return BENCH

    settings = Settings(store="sqlite", sqlite_path=path)
    configure_logging(settings.log_format, settings.log_level)
    wiring = Wiring(settings)
    wiring.authenticate = anyone  # type: ignore[assignment,method-assign]
    wiring.serve(wiring.command_app(), "127.0.0.1", port)


def over_http(path: Path, complaints: int, seconds: int, connections: int, authenticated: bool, *,
              extra_env: dict[str, str] | None = None, register: dict[str, Any] = REGISTER,
              note: str = NOTE) -> dict[str, float]:
    """wrk's figures for `note` (a JSON body) posted to `complaints` rotating complaints, each
    registered with `register`, the server's environment completed by `extra_env`."""
    with serving(path, complaints, authenticated, extra_env=extra_env, register=register, note=note) as served:
        return load(served.base, served.script, seconds, connections)


class Served(NamedTuple):
    base: str  # the server's URL
    script: Path  # wrk's script
    pid: int  # the server's process


@contextmanager
def serving(path: Path, complaints: int, authenticated: bool, *, extra_env: dict[str, str] | None = None,
            register: dict[str, Any] = REGISTER, note: str = NOTE) -> Iterator[Served]:
    """The command API on `path` (a process of its own) with `complaints` complaints registered,
    for as long as the block lasts: its URL, the wrk script posting `note` to them in turn, its pid."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    port = free_port()
    key = path.with_suffix(".pem")
    token = LocalIssuer(key, "complaints-api").token(BENCH_USER)
    env = os.environ | {"COMPLAINTS_STORE": "sqlite", "COMPLAINTS_SQLITE_PATH": str(path),
                        "COMPLAINTS_DEV_ISSUER_KEY": str(key), "COMPLAINTS_RATE_LIMIT_COMMANDS": "1000000/second",
                        **(extra_env or {})}
    serve = (["-m", "complaints.cli", "serve", "--port", str(port)] if authenticated
             else ["-m", "bench.commands", "--serve-without-tokens", str(port), "--store", str(path)])
    server = subprocess.Popen([sys.executable, *serve], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{base}/health")
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}) as client:
            ids = [client.post("/complaints", json=register).json()["complaint_id"] for _ in range(complaints)]
        script = Path(path).with_suffix(".lua")
        script.write_text(WRK_SCRIPT % (",".join(json.dumps(i) for i in ids), token, note), encoding="utf-8")
        yield Served(base, script, server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)


def load(base: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """wrk (2 threads) running `script` against `base` for `seconds`: its figures."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base],
        capture_output=True, text=True, check=True,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, float]:
    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms(latency["50"]),
        "p90_ms": ms(latency["90"]),
        "p99_ms": ms(latency["99"]),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


def token_verification(count: int = 2000) -> tuple[float, float]:
    """Microseconds to verify a token not seen before (RS256 signature and claims), and
    what the API's dependency costs a request with a known token (rate limits counted)."""
    import asyncio

    from starlette.requests import Request

    with tempfile.TemporaryDirectory() as tmp:
        issuer = LocalIssuer(Path(tmp) / "key.pem", "complaints-api")
        verifier = TokenVerifier(issuer, DEV_ISSUER, "complaints-api")
        tokens = [issuer.token(DevUser(f"u{n}", "u", ("agent",), "billing")) for n in range(count)]
        start = time.perf_counter()
        for token in tokens:
            verifier.principal(token)
        fresh = (time.perf_counter() - start) / count * 1e6
        authenticate = authenticator(verifier, RateLimits("1000000/second", "1000000/second", "1000000/second"))
        scope = {"type": "http", "method": "POST", "path": "/complaints/x/notes", "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {tokens[0]}".encode())]}

        async def requests(n: int) -> None:
            for _ in range(n):
                await authenticate(Request(scope))

        start = time.perf_counter()
        asyncio.run(requests(count * 10))
        return fresh, (time.perf_counter() - start) / (count * 10) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--complaints", type=int, default=1000, help="complaints per run")
    parser.add_argument("--notes", type=int, default=4, help="notes per complaint (in-process and raw)")
    parser.add_argument("--http-seconds", type=int, default=15, help="how long wrk loads the API")
    parser.add_argument("--connections", type=int, default=8, help="wrk's concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="raw and in-process runs alternate; best of each")
    parser.add_argument("--http-rounds", type=int, default=2, help="HTTP runs with and without tokens, alternated")
    parser.add_argument("--serve-without-tokens", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_without_tokens:
        serve_without_tokens(args.store, args.serve_without_tokens)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raws, ours_runs = [], []
        for round_ in range(args.rounds):
            raws.append(raw_save(folder / f"raw{round_}.sqlite", args.complaints, args.notes))
            ours_runs.append(in_process(folder / f"desk{round_}.sqlite", args.complaints, args.notes))
        raw, ours = max(raws), max(ours_runs)
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for round_ in range(args.http_rounds):
            for authenticated in (False, True):
                runs[authenticated].append(over_http(folder / f"http-{round_}-{authenticated}.sqlite", args.complaints,
                                                     args.http_seconds, args.connections, authenticated))
        verify_us, known_us = token_verification()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"raw eventsourcing save:  {raw:8.0f} events/s")
    print(f"in-process commands:     {ours:8.0f} commands/s  ({ours / raw:.0%} of raw)")
    for authenticated, label in ((False, "no token"), (True, "bearer token")):
        for http in runs[authenticated]:
            print(
                f"HTTP commands, {label:12} (wrk -c{args.connections}): {http['requests_per_s']:8.0f} commands/s,"
                f" p50 {http['p50_ms']:.1f} ms, p90 {http['p90_ms']:.1f} ms, p99 {http['p99_ms']:.1f} ms,"
                f" non-2xx {http['non_2xx']:.0f}"
            )
    with_tokens = sum(r["requests_per_s"] for r in runs[True]) / len(runs[True])
    without = sum(r["requests_per_s"] for r in runs[False]) / len(runs[False])
    print(f"with tokens: {with_tokens / without:.0%} of the rate without (means of {args.http_rounds} runs each)")
    print(f"verifying a token not seen before: {verify_us:.0f} µs; a request with a known one: {known_us:.1f} µs"
          f" ({known_us * with_tokens / 1e6:.1%} of a command's time at the rate with tokens)")


if __name__ == "__main__":
    main()
