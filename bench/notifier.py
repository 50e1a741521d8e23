"""The notifier (issue 17): delivery throughput, isolation from a dead endpoint, end to end.

    python -m bench.notifier --help
    python -m bench.notifier                         # all three, ~9 minutes
    python -m bench.notifier --only throughput --deliveries 20000

The receivers are `tests.receivers.Receiver`s (uvicorn on 127.0.0.1) in a process of their
own, so they do not share the notifier's interpreter; each records every request, and
the bench collects (webhook-id, arrival, the event's id, version and recorded_at) from it.
The notifier is built by `complaints.wiring.Wiring` from `Settings` as `complaints run`
builds it (a SQLite event store, the log followed in process), with the concurrency
options below; the retry schedule is short (`--retry-schedule`) and nothing is disabled
during a run.

- throughput: `--endpoints` webhook subscriptions, each to a receiver of its own that
  answers after `--delay` s; `--deliveries` / `--endpoints` complaints registered (one
  event each, so `--deliveries` deliveries), planned by the notifier (timed apart), then
  the dispatcher starts and the clock runs until every delivery is recorded delivered:
  deliveries/s, and CPU per delivery of this process and of the receivers'. The ceiling,
  in the same run, to the same receivers: httpx posting the same signed bodies (rendered
  beforehand) with the same limits (`--concurrency` in flight, `--endpoint-concurrency`
  per endpoint), no outbox: an AsyncClient per endpoint, and (what the dispatcher does)
  an AsyncClient of one connection per request in flight. `--what-if-sniffio` measures
  all of it again as if `sniffio` were installed (httpcore imports it at every request).
- isolation: `--good` subscriptions to receivers answering after `--delay` s and one more
  subscription, and complaints registered through the desk at `--event-rate` per second
  for `--seconds` s, the notifier running (threads, as `complaints run`); `--rounds`
  rounds of two runs back to back, in turn first: the extra endpoint healthy (answering as
  the others), and dead (`--dead hang`: it never answers, every attempt waits for
  `--timeout`; `--dead close`: the connection is dropped at once), retried on a short
  schedule. The extra endpoint is served by a process of its own. For the good endpoints'
  deliveries after the first `--warmup` s: p50/p99/max from the event's recorded_at to
  its arrival at the receiver, and from planned (the outbox row) to the answer; p99 dead
  against healthy, over all runs (medians) and round by round.
- e2e: one subscription to a receiver answering at once; commands through the desk paced
  at `--rate` per second for `--e2e-seconds` s (per complaint: register, triage, assign, a
  note, an outbound contact), the notifier following the store's log (COMPLAINTS_SOURCE=log):
  `complaints notifier` as a process of its own (`--e2e-notifier process`), or in threads
  of the desk's process as `complaints run` has it (`thread`). From each command's return
  to its event's arrival at the receiver, p50/p99/max, with the share up to the outbox row,
  and the notifier process's CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from tqdm import tqdm

from aggregates.access import Principal
from commands.desk import ComplaintDesk
from commands.models import (
    AddNote, AssignComplaint, Customer, CustomerPersonalData, RecordContact, RegisterComplaint, TriageComplaint,
)
from commands.subscriptions import CreateSubscription
from complaints.settings import Settings
from complaints.wiring import Wiring

OPERATOR = Principal("bench-operator", "bench operator", frozenset({"department_head", "importer"}))
ADMIN = Principal("bench-admin", "bench admin", frozenset({"admin"}))
SCHEDULE = [0.5, 1, 2, 4, 8, 16, 30, 60]  # retries while a run lasts; nothing is disabled (see disable_after)


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spread(samples: Sequence[float]) -> dict[str, float]:
    return {"n": len(samples), "p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99),
            "max": max(samples)} if samples else {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}


def ms(p: dict[str, float]) -> str:
    return f"p50 {p['p50'] * 1000:.0f} ms, p99 {p['p99'] * 1000:.0f} ms, max {p['max'] * 1000:.0f} ms"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread, and of all its other threads together."""
    main = rest = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds = cpu_seconds_of(task / "stat")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        if task.name == str(pid):
            main = seconds
        else:
            rest += seconds
    return main, rest


def cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- the receivers
def _serve_receivers(conn: Any, behaviours: list[tuple[str, float]]) -> None:
    """In the receivers' process: one Receiver per behaviour; answers the bench's requests."""
    from tests.receivers import Receiver, close, delay, ok

    receivers = []
    for kind, seconds in behaviours:
        receiver = Receiver().start()
        receiver.behave(close() if kind == "close" else delay(seconds) if seconds else ok())
        receivers.append(receiver)
    conn.send([r.port for r in receivers])
    while True:
        message = conn.recv()
        if message == "collect":
            found = []
            for receiver in receivers:
                rows = []
                for r in receiver.requests():
                    data = json.loads(r.body).get("data", {})
                    rows.append((r.headers.get("webhook-id"), r.received_at.timestamp(), data.get("complaint_id"),
                                 data.get("complaint_version"), data.get("recorded_at")))
                found.append(rows)
                receiver.clear()
            conn.send(found)
        elif message == "count":
            conn.send(sum(len(r.requests()) for r in receivers))
        else:
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (uvicorn cancels the requests still held: quietly)
            for receiver in receivers:
                receiver.stop()
            conn.send("stopped")
            return


@dataclass
class Arrival:
    webhook_id: str
    at: float  # unix seconds
    complaint_id: str
    version: int
    recorded_at: float


class Receivers:
    """Receivers in a process of their own: `urls`, `collect()` (and forget), `count()`."""

    def __init__(self, behaviours: list[tuple[str, float]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve_receivers, args=(child, behaviours), daemon=True)
        self.process.start()
        self.urls = [f"http://127.0.0.1:{port}/hook" for port in self.conn.recv()]

    def collect(self) -> list[list[Arrival]]:
        self.conn.send("collect")
        return [[Arrival(w, at, c, v, datetime.fromisoformat(rec).timestamp()) for w, at, c, v, rec in rows]
                for rows in self.conn.recv()]

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def count(self) -> int:
        self.conn.send("count")
        return int(self.conn.recv())

    def close(self) -> None:
        self.conn.send("stop")
        self.conn.recv()
        self.process.join(10)


@contextmanager
def receivers(behaviours: list[tuple[str, float]]) -> Iterator[Receivers]:
    farm = Receivers(behaviours)
    try:
        yield farm
    finally:
        farm.close()


# ------------------------------------------------------------------------------- the notifier
@dataclass
class Options:
    concurrency: int
    endpoint_concurrency: int
    timeout: float
    schedule: Sequence[float] = tuple(SCHEDULE)


@dataclass
class Rig:
    wiring: Wiring
    desk: ComplaintDesk
    notifier: Any
    state: Path
    subscriptions: list[str]

    settings: Settings

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.stop()
            self.notifier.close()
        self.wiring.close()


def rig(folder: Path, urls: Sequence[str], options: Options, notifier: bool = True) -> Rig:
    """A store with a webhook subscription to each URL, its desk, and (unless told not to)
    the notifier of `complaints run` in this process, not started."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(store="sqlite", sqlite_path=folder / "events.sqlite", secrets_key=folder / "secrets.key",
                        notifier_state=folder / "notifier.sqlite", source="log", notify_allow_hosts=["127.0.0.1"],
                        notify_retry_schedule=list(options.schedule), notify_disable_after=3600, notify_timeout=options.timeout,
                        notify_concurrency=options.concurrency,
                        notify_endpoint_concurrency=options.endpoint_concurrency)
    wiring = Wiring(settings)
    desk = wiring.desk()
    subscriptions = [str(desk.create_subscription(CreateSubscription(
        command_id=f"bench-subscription-{n}", name=f"bench {n}", kind="webhook", endpoint=url, language="en"),
        ADMIN).subscription_id) for n, url in enumerate(urls)]
    return Rig(wiring, desk, wiring.notifier(desk=desk) if notifier else None, Path(settings.notifier_state),
               subscriptions, settings)


def notifier_process(r: Rig, log: Path) -> subprocess.Popen[bytes]:
    """`complaints notifier --source log` on the rig's store and state, as its own process."""
    s = r.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAINTS_")} | {
        "COMPLAINTS_STORE": "sqlite", "COMPLAINTS_SQLITE_PATH": str(s.sqlite_path),
        "COMPLAINTS_SECRETS_KEY": str(s.secrets_key), "COMPLAINTS_SOURCE": "log",
        "COMPLAINTS_NOTIFY_ALLOW_HOSTS": json.dumps(s.notify_allow_hosts),
        "COMPLAINTS_NOTIFY_RETRY_SCHEDULE": json.dumps(s.notify_retry_schedule),
        "COMPLAINTS_NOTIFY_DISABLE_AFTER": str(s.notify_disable_after), "COMPLAINTS_NOTIFY_TIMEOUT": str(s.notify_timeout),
        "COMPLAINTS_NOTIFY_CONCURRENCY": str(s.notify_concurrency),
        "COMPLAINTS_NOTIFY_ENDPOINT_CONCURRENCY": str(s.notify_endpoint_concurrency), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "complaints.cli", "notifier", "--state", str(r.state)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while b"notifier on log" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the notifier did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def register(desk: ComplaintDesk, n: int, tag: str) -> Any:
    return desk.register(RegisterComplaint(
        command_id=f"{tag}-{n}", channel="web", customer=Customer(id=f"C-{tag}-{n}"),
        customer_personal=CustomerPersonalData(name="Bench", contact="no-contact"),
        title=f"Bench complaint {n}", description="A complaint for the notifier benchmark", product="router-x2"),
        OPERATOR)


def outbox(state: Path, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=30) as db:
        return db.execute(sql, args).fetchall()


def counts(state: Path) -> dict[str, int]:
    return dict(outbox(state, "SELECT status, count(*) FROM deliveries GROUP BY status"))  # type: ignore[arg-type]


def answered_latencies(state: Path, subscriptions: set[str], since: float = 0.0) -> list[float]:
    """Planned (the outbox row) to the answer of the delivering attempt, seconds (of the
    deliveries planned from `since`, unix seconds)."""
    rows = outbox(state, "SELECT d.subscription, d.created_at, a.at, a.latency_ms FROM deliveries d JOIN attempts a"
                         " ON a.delivery = d.id WHERE a.outcome = 'delivered'")
    found = []
    for subscription, created, at, latency in rows:
        planned = datetime.fromisoformat(created).timestamp()
        if subscription in subscriptions and planned >= since:
            found.append(datetime.fromisoformat(at).timestamp() + latency / 1000 - planned)
    return found


# ------------------------------------------------------------------------------- throughput
async def _raw_posts(requests: list[tuple[int, str, bytes, dict[str, str]]], options: Options,
                     lanes: bool = False) -> float:
    """The ceiling: httpx posting pre-rendered signed bodies as the dispatcher does (an
    AsyncClient per endpoint, `--endpoint-concurrency` connections each, `--concurrency` in
    flight in all), with no outbox, no rendering, no signing. With `lanes`, an AsyncClient
    of one connection per slot instead (httpcore's pool then never has two requests for
    one idle connection: see docs/benchmarks.md)."""
    import ssl

    import httpx

    context = ssl.create_default_context()  # one CA bundle load for all the clients
    size = 1 if lanes else options.endpoint_concurrency
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    free: dict[int, list[httpx.AsyncClient]] = defaultdict(list)
    made: list[httpx.AsyncClient] = []
    per_endpoint: dict[int, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(options.endpoint_concurrency))
    overall = asyncio.Semaphore(options.concurrency)
    failures = 0

    def client_for(endpoint: int) -> httpx.AsyncClient:
        if lanes and free[endpoint]:
            return free[endpoint].pop()
        if not lanes and made and free[endpoint]:
            return free[endpoint][0]
        client = httpx.AsyncClient(timeout=options.timeout, limits=limits, verify=context)
        made.append(client)
        if not lanes:
            free[endpoint].append(client)
        return client

    async def post(endpoint: int, url: str, body: bytes, headers: dict[str, str]) -> None:
        nonlocal failures
        async with overall, per_endpoint[endpoint]:
            client = client_for(endpoint)
            try:
                response = await client.post(url, content=body, headers=headers)
                failures += response.status_code != 200
            except httpx.HTTPError:  # a machine loaded to its limit: counted, and said
                failures += 1
            finally:
                if lanes:
                    free[endpoint].append(client)

    start = time.perf_counter()
    await asyncio.gather(*(post(*request) for request in requests))
    seconds = time.perf_counter() - start
    for client in made:
        await client.aclose()
    if failures:
        say(f"ceiling: {failures} of {len(requests):,} posts failed (not sent again)")
    return seconds


def throughput(folder: Path, deliveries: int, endpoints: int, delay: float, options: Options) -> dict[str, Any]:
    from commands.sealing import new_webhook_secret
    from consumers.notices import Notice
    from consumers.notify_render import webhook_body, webhook_headers

    complaints = deliveries // endpoints
    with receivers([("delay", delay)] * endpoints) as farm:
        r = rig(folder / "throughput", farm.urls, options)
        try:
            for n in tqdm(range(complaints), desc=f"registering {complaints:,} complaints", unit="complaint",
                          file=sys.stderr):
                register(r.desk, n, "t")
            start = time.perf_counter()
            with tqdm(total=complaints * endpoints, desc="the notifier plans", unit="delivery", unit_scale=True,
                      file=sys.stderr) as bar:
                while r.notifier.lag() > 0 or not r.notifier.caught_up.is_set():
                    bar.update(len(r.notifier.step()))
            planning = time.perf_counter() - start
            planned = counts(r.state).get("pending", 0)
            assert planned == complaints * endpoints, (planned, counts(r.state))

            dispatcher = r.notifier.dispatcher
            start, cpu, farm_cpu = time.perf_counter(), time.process_time(), farm.cpu()
            dispatcher.start_background()
            with tqdm(total=planned, desc="the dispatcher delivers", unit="delivery", unit_scale=True,
                      file=sys.stderr) as bar:
                done = 0
                while done < planned:
                    time.sleep(0.1)
                    now = counts(r.state).get("delivered", 0)
                    bar.update(now - done)
                    done = now
            seconds = time.perf_counter() - start
            cpu, farm_cpu = time.process_time() - cpu, farm.cpu() - farm_cpu
            dispatcher.stop()
            attempts = outbox(r.state, "SELECT count(*), min(at), max(at) FROM attempts")[0]
            arrivals = sum(len(rows) for rows in farm.collect())
            assert arrivals == planned, (arrivals, planned)

            # The ceiling: the same bodies, signed, posted straight at the same receivers.
            rows = outbox(r.state, "SELECT subscription, endpoint, id, notice FROM deliveries")
            index = {s: n for n, s in enumerate(r.subscriptions)}
            secret = new_webhook_secret()
            requests = []
            for subscription, endpoint, delivery, notice in rows:
                body = webhook_body(Notice.from_json(json.loads(notice)))
                requests.append((index[subscription], endpoint, body,
                                 webhook_headers(delivery, datetime.now(UTC), body, [secret])))
            say(f"ceiling: httpx posting {len(requests):,} pre-rendered bodies to the same receivers")
            raw_cpu, raw_farm_cpu = time.process_time(), farm.cpu()
            raw = asyncio.run(_raw_posts(requests, options))
            raw_cpu, raw_farm_cpu = time.process_time() - raw_cpu, farm.cpu() - raw_farm_cpu
            farm.collect()
            say("ceiling, one client per connection (lanes): the same again")
            lanes_cpu = time.process_time()
            lanes = asyncio.run(_raw_posts(requests, options, lanes=True))
            lanes_cpu = time.process_time() - lanes_cpu
            farm.collect()
        finally:
            r.close()
    return {"deliveries": planned, "endpoints": endpoints, "planning_seconds": planning, "seconds": seconds,
            "per_s": planned / seconds, "attempts": attempts[0], "raw_seconds": raw, "raw_per_s": len(requests) / raw,
            "cpu_us": cpu / planned * 1e6, "farm_cpu_us": farm_cpu / planned * 1e6,
            "raw_cpu_us": raw_cpu / len(requests) * 1e6, "raw_farm_cpu_us": raw_farm_cpu / len(requests) * 1e6,
            "lanes_per_s": len(requests) / lanes, "lanes_cpu_us": lanes_cpu / len(requests) * 1e6}


# ------------------------------------------------------------------------------- isolation
def paced(rate: float, seconds: float, send: Any, what: str) -> tuple[int, float]:
    """`send(n)` at `rate` per second for `seconds` (catching up when behind): (sent, achieved rate)."""
    total = int(rate * seconds)
    start = time.perf_counter()
    for n in tqdm(range(total), desc=what, unit="cmd", file=sys.stderr, mininterval=1):
        wait = start + n / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        send(n)
    return total, total / (time.perf_counter() - start)


def settle(r: Rig, subscriptions: set[str], expected: int, timeout: float = 60) -> None:
    """Until the given subscriptions' deliveries are all delivered."""
    marks = ",".join("?" * len(subscriptions))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = outbox(r.state, f"SELECT count(*) FROM deliveries WHERE status = 'delivered' AND subscription IN ({marks})",
                      sorted(subscriptions))[0][0]
        if done >= expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"not delivered within {timeout}s: {counts(r.state)}")


def isolation_run(folder: Path, farm: Receivers, fifth: Receivers, good: int, dead: bool, rate: float,
                  seconds: float, warmup: float, options: Options) -> dict[str, Any]:
    urls = farm.urls[:good] + [fifth.urls[1 if dead else 0]]
    r = rig(folder, urls, options)
    try:
        r.notifier.start_background()
        since = time.time() + warmup  # the first seconds (clients made, the dead endpoint's slots filling) left out
        sent, achieved = paced(rate, seconds, lambda n: register(r.desk, n, "i"),
                               f"{'with' if dead else 'without'} the dead endpoint: {rate:g} events/s")
        good_ids = set(r.subscriptions[:good])
        settle(r, good_ids, sent * good)
        arrivals = [a for rows in farm.collect()[:good] for a in rows]
        dead_attempts = outbox(r.state, "SELECT count(*), sum(outcome != 'delivered') FROM attempts a JOIN deliveries d"
                                        " ON a.delivery = d.id WHERE d.subscription = ?",
                               [r.subscriptions[-1]])[0] if dead else (0, 0)
        received = spread([a.at - a.recorded_at for a in arrivals if a.recorded_at >= since])
        answered = spread(answered_latencies(r.state, good_ids, since))
        farm.collect()
        fifth.collect()
    finally:
        r.close()
    return {"dead": dead, "sent": sent, "achieved": achieved, "received": received, "answered": answered,
            "dead_attempts": dead_attempts[0], "dead_failed": dead_attempts[1] or 0}


def isolation(folder: Path, good: int, dead_kind: str, rate: float, seconds: float, warmup: float, delay: float,
              rounds: int, options: Options) -> list[dict[str, Any]]:
    runs = []
    # One more subscription besides the good ones, to an endpoint that is healthy in one
    # run of each round and dead in the other (so the comparison is of a dead endpoint,
    # not of one subscription more); it is served by a process of its own, so that its
    # held requests cannot slow the good receivers (whose arrival times are measured).
    with receivers([("delay", delay)] * good) as farm, \
            receivers([("delay", delay), ("close", 0.0) if dead_kind == "close" else ("delay", 3600.0)]) as fifth:
        for n in range(rounds):
            for dead in (False, True) if n % 2 == 0 else (True, False):  # alternating, in turn first
                run = isolation_run(folder / f"isolation-{n}-{dead}", farm, fifth, good, dead, rate,
                                    seconds, warmup, options)
                say(f"{'with' if dead else 'without'} the dead endpoint ({dead_kind}; else healthy): {run['achieved']:.0f} events/s;"
                    f" recorded -> received {ms(run['received'])}; planned -> answered {ms(run['answered'])}"
                    + (f"; {run['dead_attempts']} attempts to the dead endpoint" if dead else ""))
                runs.append(run)
    return runs


# ------------------------------------------------------------------------------- end to end
def e2e(folder: Path, rate: float, seconds: float, options: Options, mode: str) -> dict[str, Any]:
    with receivers([("ok", 0.0)]) as farm:
        r = rig(folder / f"e2e-{mode}-{rate:g}", farm.urls, options, notifier=mode == "thread")
        returned: dict[tuple[str, int], float] = {}
        complaints: list[UUID] = []
        steps = ("register", "triage", "assign", "note", "contact")

        def send(n: int) -> None:
            step = steps[n % len(steps)]
            if step == "register":
                result = register(r.desk, n, "e")
                complaints.append(result.complaint_id)
            else:
                complaint = complaints[-1]
                command = {
                    "triage": lambda: TriageComplaint(command_id=f"e-{n}", category="billing", severity="normal"),
                    "assign": lambda: AssignComplaint(command_id=f"e-{n}", team="billing", agent="billing-1"),
                    "note": lambda: AddNote(command_id=f"e-{n}", text="Looked into it"),
                    "contact": lambda: RecordContact(command_id=f"e-{n}", direction="outbound", channel="phone",
                                                     summary="Called back"),
                }[step]()
                result = r.desk.execute(complaint, command, OPERATOR)
            returned[(str(result.complaint_id), result.version)] = time.time()

        proc = None
        try:
            if mode == "thread":
                r.notifier.start_background()
                time.sleep(0.5)
            else:
                proc = notifier_process(r, folder / f"e2e-notifier-{rate:g}.log")
                cpu, threads = cpu_seconds(proc.pid), thread_cpu_seconds(proc.pid)
            where = "in this process" if mode == "thread" else "in a process of its own"
            sent, achieved = paced(rate, seconds, send, f"commands at {rate:g}/s, the notifier {where}")
            settle(r, set(r.subscriptions), sent, timeout=120)
            notifier_cpu = cpu_seconds(proc.pid) - cpu if proc else None
            if proc:  # the follower is the main thread; the dispatcher (and its helpers) the others
                follower, others = (now - before for now, before in zip(thread_cpu_seconds(proc.pid), threads))
            arrivals = farm.collect()[0]
            planned = dict(outbox(r.state, "SELECT id, created_at FROM deliveries"))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            r.close()
    first: dict[tuple[str, int], Arrival] = {}
    for a in arrivals:
        key = (a.complaint_id, a.version)
        first[key] = min(first.get(key, a), a, key=lambda x: x.at)
    assert set(first) == set(returned), (len(first), len(returned))
    latency = [first[key].at - returned[key] for key in returned]
    to_outbox = [datetime.fromisoformat(planned[first[key].webhook_id]).timestamp() - returned[key] for key in returned]
    return {"sent": sent, "achieved": achieved, "latency": spread(latency), "to_outbox": spread(to_outbox),
            "duplicates": len(arrivals) - len(first),
            "notifier_cpu_us": notifier_cpu / sent * 1e6 if notifier_cpu is not None else None,
            "follower_cpu_us": follower / sent * 1e6 if proc else None,
            "dispatcher_cpu_us": others / sent * 1e6 if proc else None}


# ------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=["throughput", "isolation", "e2e"],
                        help="run only this measurement (repeatable); default: all three")
    parser.add_argument("--deliveries", type=int, default=20_000, help="throughput: deliveries planned, then sent")
    parser.add_argument("--endpoints", type=int, default=10, help="throughput: subscriptions, a receiver each")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the receivers take to answer")
    parser.add_argument("--concurrency", type=int, default=512,
                        help="deliveries in flight in all (COMPLAINTS_NOTIFY_CONCURRENCY)")
    parser.add_argument("--endpoint-concurrency", type=int, default=16,
                        help="deliveries in flight per endpoint (COMPLAINTS_NOTIFY_ENDPOINT_CONCURRENCY)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds an attempt may take (COMPLAINTS_NOTIFY_TIMEOUT)")
    parser.add_argument("--retry-schedule", type=json.loads, default=SCHEDULE,
                        help=f"seconds before each retry, a JSON list (COMPLAINTS_NOTIFY_RETRY_SCHEDULE; default {SCHEDULE},"
                             " short, so that a dead endpoint is tried often while a run lasts)")
    parser.add_argument("--good", type=int, default=4, help="isolation: endpoints that answer")
    parser.add_argument("--dead", choices=["hang", "close"], default="hang",
                        help="isolation: the dead endpoint never answers (hang) or drops the connection (close)")
    parser.add_argument("--event-rate", type=float, default=25, help="isolation: events/s (each to every endpoint)")
    parser.add_argument("--seconds", type=float, default=30, help="isolation: seconds per run")
    parser.add_argument("--warmup", type=float, default=2,
                        help="isolation: seconds at the start of each run left out of the figures")
    parser.add_argument("--rounds", type=int, default=4, help="isolation: rounds of two runs (the extra endpoint healthy, dead)")
    parser.add_argument("--rate", type=float, nargs="+", default=[500], help="e2e: commands/s (several: a run each)")
    parser.add_argument("--e2e-notifier", nargs="+", choices=["process", "thread"], default=["process"],
                        help="e2e: `complaints notifier --source log` as a process of its own, or the notifier in"
                             " the desk's process (threads, as `complaints run`)")
    parser.add_argument("--e2e-seconds", type=float, default=20, help="e2e: seconds of commands")
    parser.add_argument("--workdir", type=Path, help="where the temporary stores go (default: the system's temporary directory)")
    parser.add_argument("--what-if-sniffio", action="store_true",
                        help="put a stand-in `sniffio` module (asyncio only) in this process first: what installing"
                             " sniffio would save httpcore, which imports it at every request and fails without it")
    args = parser.parse_args()
    sniffio = "installed" if importlib.util.find_spec("sniffio") else "not installed (httpcore looks for it at every request)"
    if args.what_if_sniffio and importlib.util.find_spec("sniffio") is None:
        sniffio = "a stand-in (--what-if-sniffio)"
        stand_in = types.ModuleType("sniffio")
        stand_in.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
        sys.modules["sniffio"] = stand_in
    only = set(args.only or ["throughput", "isolation", "e2e"])
    options = Options(args.concurrency, args.endpoint_concurrency, args.timeout, args.retry_schedule)
    rows: list[tuple[str, str, str]] = []
    began = time.monotonic()
    say(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" load average {os.getloadavg()[0]:.2f}; concurrency {options.concurrency} in all,"
        f" {options.endpoint_concurrency} per endpoint, timeout {options.timeout:g} s, retries after"
        f" {list(options.schedule)} s; sniffio"
        f" {sniffio}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        if "throughput" in only:
            t = throughput(folder, args.deliveries, args.endpoints, args.delay, options)
            say(f"throughput: {t['deliveries']:,} deliveries planned in {t['planning_seconds']:.1f} s, sent in"
                f" {t['seconds']:.1f} s ({t['attempts']:,} attempts); CPU per delivery: this process"
                f" {t['cpu_us']:,.0f} us, the receivers {t['farm_cpu_us']:,.0f} us; raw httpx, one client of one"
                f" connection per request in flight: {t['lanes_per_s']:,.0f}/s, {t['lanes_cpu_us']:,.0f} us a request;"
                f" one client per endpoint: {t['raw_per_s']:,.0f}/s, {t['raw_cpu_us']:,.0f} us a request")
            rows.append((f"throughput: {t['deliveries']:,} deliveries to {t['endpoints']} receivers answering after"
                         f" {args.delay * 1000:g} ms ({options.endpoint_concurrency} in flight per endpoint,"
                         f" {options.concurrency} in all)",
                         f"**{t['per_s']:,.0f}/s** ({t['seconds']:.1f} s; CPU {t['cpu_us']:,.0f} µs a delivery,"
                         f" receivers {t['farm_cpu_us']:,.0f} µs)",
                         f"httpx straight to the same receivers, same limits, a client of one connection per request"
                         f" in flight as the dispatcher: {t['lanes_per_s']:,.0f}/s (CPU {t['lanes_cpu_us']:,.0f} µs a"
                         f" request; ours {t['per_s'] / t['lanes_per_s']:.0%})"))
            rows.append(("(for comparison) httpx with one AsyncClient per endpoint (a pool of 16 connections each)",
                         f"{t['raw_per_s']:,.0f}/s (CPU {t['raw_cpu_us']:,.0f} µs a request, receivers"
                         f" {t['raw_farm_cpu_us']:,.0f} µs)", "-"))
            rows.append((f"(not the sending) planning those {t['deliveries']:,} deliveries from"
                         f" {t['deliveries'] // t['endpoints']:,} events",
                         f"{t['deliveries'] / t['planning_seconds']:,.0f} deliveries/s ({t['planning_seconds']:.1f} s)",
                         "-"))
        if "isolation" in only:
            runs = isolation(folder, args.good, args.dead, args.event_rate, args.seconds, args.warmup, args.delay,
                             args.rounds, options)
            for run in runs:
                label = (f"isolation: {args.good} endpoints answering after {args.delay * 1000:g} ms,"
                         f" {run['achieved']:.0f} events/s x {args.seconds:g} s, "
                         + (f"one more endpoint, **dead** ({args.dead}: {run['dead_attempts']:,} attempts)" if run["dead"]
                            else "one more endpoint, healthy"))
                rows.append((label, f"recorded -> received {ms(run['received'])}",
                             f"planned -> answered {ms(run['answered'])}"))
            for measure, name in (("received", "recorded -> received"), ("answered", "planned -> answered")):
                without = [run[measure]["p99"] * 1000 for run in runs if not run["dead"]]
                with_dead = [run[measure]["p99"] * 1000 for run in runs if run["dead"]]
                change = statistics.median(with_dead) / statistics.median(without) - 1
                # Each round's two runs back to back, under about the same load from elsewhere.
                paired = sorted(w / o - 1 for w, o in zip(with_dead, without))  # dead / healthy - 1
                rows.append((f"isolation: p99 {name}, {len(without)} runs each way (median; range)",
                             f"with the fifth endpoint dead {statistics.median(with_dead):.0f} ms ({min(with_dead):.0f}-"
                             f"{max(with_dead):.0f}), healthy {statistics.median(without):.0f} ms ({min(without):.0f}-"
                             f"{max(without):.0f}): **{change:+.0%}**",
                             f"round by round (dead / healthy - 1): median {statistics.median(paired):+.0%},"
                             f" from {paired[0]:+.0%} to {paired[-1]:+.0%}"))
        if "e2e" in only:
            for mode in args.e2e_notifier:
                for rate in args.rate:
                    e = e2e(folder, rate, args.e2e_seconds, options, mode)
                    cpu = (f"; notifier CPU {e['notifier_cpu_us']:,.0f} µs an event (following and planning"
                           f" {e['follower_cpu_us']:,.0f}, sending {e['dispatcher_cpu_us']:,.0f})"
                           if e["notifier_cpu_us"] else "")
                    say(f"end to end, the notifier {mode}: {e['achieved']:.0f} commands/s; {ms(e['latency'])}{cpu}")
                    rows.append((f"end to end, the notifier {'in a process of its own' if mode == 'process' else 'in the desk process (threads)'}:"
                                 f" {rate:g} commands/s asked ({e['achieved']:.0f} achieved) for {args.e2e_seconds:g} s,"
                                 f" command returned -> receiver ({e['sent']:,} events)",
                                 ms(e["latency"]).replace("p99 ", "**p99 ").replace(" ms, max", " ms**, max"),
                                 f"command returned -> outbox row: {ms(e['to_outbox'])}{cpu}"))
    print(f"\n(total {time.monotonic() - began:.0f} s)\n")
    print("| measurement | ours | ceiling / parts, same run |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
