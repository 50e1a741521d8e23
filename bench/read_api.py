"""Latency of the read API's dashboard endpoints over large read models, over real HTTP.

    python -m bench.read_api --help
    python -m bench.read_api --complaints 1000000            # build (once) and measure
    python -m bench.read_api --complaints 10000000 --requests 100

The read models are generated in bulk with DuckDB SQL, not through commands (a million
complaints through the desk would take hours): the same tables the read node keeps
(`complaint_facts`, `sla_clocks`, `workload_*`, `trend_*`, and one Registered event per
complaint in `events`), with registrations spread over a year, skewed products and
customers, a few percent still open (most of them recent), SLA breaches, reopenings and
ratings. The file is kept under var/ and reused by later runs of the same size.

The read API then runs under uvicorn in a child process (one worker, as `make run`
serves it) and each endpoint is requested `--requests` times, one at a time, by httpx
over a kept-alive connection; p50 and p99 are of those wall-clock latencies. wrk, when
installed, adds a throughput figure with `--connections` concurrent connections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx

from complaints.identity import DEV_ISSUER, DevUser, LocalIssuer, TokenVerifier, authenticator
from scripts.serving import free_port

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = {
    "supervisor": "/dashboards/supervisor",
    "supervisor, one team, 7 days": "/dashboards/supervisor?team=tech-support&period=7d",
    "product": "/dashboards/product?release={release}",
    "executive": "/dashboards/executive",
    "executive, VIP, 90 days": "/dashboards/executive?tier=vip&period=90d",
}
EXTRA = {
    "/sla page": "/sla?limit=100&sort=due_at&order=desc",
    "/workload": "/workload",
    "/trends": "/trends?dimension=category&granularity=week",
}
PRODUCTS = ["mobile-app", "smart-speaker", "router-x2", "billing-portal", "delivery", "tv-box"]
CATEGORIES = ["product_defect", "logistics", "billing", "service_attitude", "account", "feature_request"]
TEAMS = ["tech-support", "logistics", "billing", "customer-care", "customer-care", "product"]
CHANNELS = ["phone", "wechat", "web", "app", "email", "store", "social_media"]
REGIONS = ["Guangdong", "Shanghai", "Beijing", "Zhejiang", "Jiangsu", "Sichuan", "Hubei", "Shandong"]


def _list(items: list[str]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def _pick(items: list[str], r: str, skew: float = 1.0) -> str:
    """An element of `items` chosen by the uniform `r`, skewed towards the first ones."""
    return f"{_list(items)}[1 + least(floor(pow({r}, {skew}) * {len(items)}), {len(items) - 1})::INTEGER]"


def build(path: Path, complaints: int, now: datetime) -> None:
    """Create the read models of `complaints` synthetic complaints in a new DuckDB file."""
    from projections.event_log import EventLog
    from projections.models import make
    from projections.trends import RATING_DIMENSIONS, previous_sql
    from projections.sla import running_sql
    from projections.workload import open_sql
    from projections.workload import RESOLUTION_DIMENSIONS

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    db = duckdb.connect(str(tmp))
    db.execute("SET preserve_insertion_order = true; SET enable_progress_bar = false")
    EventLog().create_schema(db)
    for projector in make():
        projector.create_schema(db)
    started = time.perf_counter()
    year_us = 365 * 86_400_000_000
    # One row per complaint with its randomness; registrations in time order, as a read
    # node inserts them.
    db.execute(f"""
        CREATE TEMP TABLE g AS
        SELECT *, row_number() OVER (ORDER BY registered_at) AS pos
        FROM (
            SELECT i, uuid() AS id, random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                   random() AS r5, random() AS r6, random() AS r7, random() AS r8, random() AS r9,
                   make_timestamptz(epoch_us(TIMESTAMPTZ '{now.isoformat()}')
                       - CAST(pow(random(), 1.15) * {year_us} AS BIGINT)) AS registered_at
            FROM range({complaints}) t(i)
        )""")
    db.execute(f"""
        CREATE TEMP TABLE f AS
        WITH a AS (
            SELECT *, epoch_us(TIMESTAMPTZ '{now.isoformat()}') - epoch_us(registered_at) AS age_us,
                   least(floor(pow(r5, 1.3) * 6), 5)::INTEGER AS cat_i,
                   CASE WHEN r6 < 0.02 THEN 'fatal' WHEN r6 < 0.17 THEN 'major'
                        WHEN r6 < 0.77 THEN 'normal' ELSE 'minor' END AS severity,
                   r3 < 0.1 AS vip
            FROM g
        ), b AS (
            SELECT *,
                   CASE WHEN age_us < 2 * 86400e6 THEN r7 < 0.5
                        WHEN age_us < 7 * 86400e6 THEN r7 < 0.05 ELSE r7 < 0.003 END AS still_open,
                   CASE severity WHEN 'fatal' THEN 15 WHEN 'major' THEN 60 WHEN 'normal' THEN 120 ELSE 240 END
                       AS fr_minutes,
                   CASE severity WHEN 'fatal' THEN 240 WHEN 'major' THEN 1440 WHEN 'normal' THEN 2880 ELSE 7200 END
                       AS res_minutes
            FROM a
        )
        SELECT id::VARCHAR AS complaint_id, registered_at, pos AS registered_position,
            8 AS last_version, pos * 8 AS last_position, registered_at AS last_event_at,
            {_pick(CHANNELS, 'r2')} AS channel,
            'C-' || CAST(floor(pow(r3, 2.5) * {max(complaints // 3, 10)}) AS BIGINT) AS customer_id,
            CASE WHEN vip THEN 'vip' ELSE 'regular' END AS tier,
            {_pick(PRODUCTS, 'r4', 1.8)} AS product,
            {_pick(REGIONS, 'r8', 1.4)} AS region,
            {_list(CATEGORIES)}[cat_i + 1] AS category, severity, 'one_user' AS impact,
            CASE WHEN severity = 'fatal' OR (severity = 'major' AND vip) THEN 'urgent'
                 WHEN severity = 'major' OR (severity = 'normal' AND vip) THEN 'high'
                 WHEN severity = 'normal' OR vip THEN 'medium' ELSE 'low' END AS priority,
            '2026-11-01' AS sla_policy_version, 'business' AS sla_calendar,
            registered_at + to_minutes(fr_minutes) AS first_response_due,
            registered_at + to_minutes(res_minutes) AS resolution_due,
            {_list(TEAMS)}[cat_i + 1] AS team,
            {_list(TEAMS)}[cat_i + 1] || '-' || (1 + floor(r9 * 8)::INTEGER) AS agent,
            registered_at + INTERVAL 20 MINUTE AS first_assigned_at,
            CASE WHEN r9 < 0.1 THEN 1 ELSE 0 END AS handovers,
            CASE WHEN still_open AND r8 < 0.2 THEN NULL
                 ELSE registered_at + to_minutes(CAST(fr_minutes * 2 * r1 AS BIGINT)) END AS first_response_at,
            CASE WHEN still_open THEN
                     CASE WHEN r2 < 0.15 THEN 'waiting_on_customer' WHEN r2 < 0.25 THEN 'resolution_proposed'
                          WHEN r2 < 0.35 THEN 'triaged' ELSE 'assigned' END
                 WHEN r1 < 0.02 THEN 'withdrawn' WHEN r1 < 0.03 THEN 'duplicate'
                 WHEN r1 < 0.10 THEN 'resolved' WHEN r1 < 0.30 THEN 'verified' ELSE 'closed' END AS status,
            registered_at + to_minutes(CAST(res_minutes * 1.6 * r8 AS BIGINT) + 30) AS resolved_candidate,
            r5 < 0.05 AS reopened, r6, r2
        FROM b""")
    db.execute("""
        CREATE TEMP TABLE facts AS
        SELECT * EXCLUDE (resolved_candidate, reopened, r6, r2),
            status IN ('received', 'triaged', 'assigned', 'waiting_on_customer', 'resolution_proposed') AS is_open,
            CASE WHEN status IN ('resolved', 'verified', 'closed') THEN resolved_candidate END AS resolved_at,
            CASE WHEN status = 'closed' THEN resolved_candidate + INTERVAL 1 DAY END AS closed_at,
            CASE WHEN status IN ('resolved', 'verified', 'closed') THEN resolved_candidate END AS first_resolved_at,
            CASE WHEN status IN ('resolved', 'verified', 'closed') THEN 1 + reopened::INTEGER ELSE 0 END AS resolutions,
            CASE WHEN status IN ('resolved', 'verified', 'closed') THEN reopened::INTEGER ELSE 0 END AS reopen_count,
            CASE WHEN r2 < 0.3 THEN 1 ELSE 0 END AS waits, 1 AS notes, 1 AS contacts,
            1 AS responses_before_first_resolution, 0 AS escalation_level,
            CASE WHEN status IN ('withdrawn', 'duplicate') THEN registered_at + INTERVAL 3 HOUR END AS terminated_at,
            CASE WHEN status = 'waiting_on_customer' THEN registered_at + INTERVAL 2 HOUR END AS paused_since
        FROM f""")
    for table in ("complaint_facts", "workload_complaints"):
        db.execute(f"INSERT INTO {table} BY NAME SELECT * FROM facts ORDER BY registered_at")
    # The trends projector's own SQL for each complaint's previous registration by its customer.
    db.execute(f"""INSERT INTO trend_complaints BY NAME
        SELECT f.*, p.previous_registered_at FROM facts f JOIN ({previous_sql('facts')}) p USING (complaint_id)
        ORDER BY registered_at""")
    print(f"  facts: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    # Business time is approximated as 45/168 of wall time (45 business hours a week):
    # only the figures' values depend on it, not their cost.
    share = 45 / 168
    db.execute(f"""
        INSERT INTO sla_clocks BY NAME
        SELECT complaint_id, metric, registered_at, channel, tier, product, region, category,
            severity, priority, team, agent, status AS status_of_complaint, sla_calendar,
            sla_policy_version, registered_at AS started_at, due_at, stopped_at, stop_reason,
            CASE WHEN stopped_at IS NULL THEN CASE WHEN clock_paused IS NOT NULL THEN 'paused' ELSE 'activated' END
                 WHEN coalesce(clock_paused, stopped_at) > due_at THEN 'breached'
                 WHEN stop_reason IN ('responded', 'resolved') THEN 'fulfilled' ELSE 'cancelled' END AS status,
            clock_paused AS paused_since, waits AS pause_count, 0 AS paused_us, 0 AS paused_business_us,
            epoch_us(stopped_at) - epoch_us(registered_at) AS elapsed_us,
            CAST((epoch_us(stopped_at) - epoch_us(registered_at)) * {share} AS BIGINT) AS business_us,
            CAST(epoch_us(registered_at) * {share} AS BIGINT) AS start_cum_us,
            CAST(epoch_us(clock_paused) * {share} AS BIGINT) AS paused_since_cum_us,
            last_version, 1 AS cycle
        FROM (
            SELECT *, 'first_response' AS metric, first_response_due AS due_at,
                coalesce(first_response_at, terminated_at) AS stopped_at,
                CASE WHEN first_response_at IS NOT NULL THEN 'responded'
                     WHEN terminated_at IS NOT NULL THEN status END AS stop_reason,
                NULL::TIMESTAMPTZ AS clock_paused
            FROM facts
            UNION ALL
            SELECT *, 'resolution', resolution_due, coalesce(resolved_at, terminated_at),
                CASE WHEN resolved_at IS NOT NULL THEN 'resolved' WHEN terminated_at IS NOT NULL THEN status END,
                paused_since
            FROM facts
        ) ORDER BY registered_at""")
    db.execute(f"INSERT INTO sla_running_clocks BY NAME {running_sql('sla_clocks')}")  # the projector's SQL
    db.execute(f"INSERT INTO workload_open BY NAME {open_sql('workload_complaints')}")
    print(f"  sla_clocks: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    # Resolutions and ratings carry the complaint's current dimensions, as the projectors'
    # joins with the facts give them.
    resolution_dims = ", ".join(f"{name} AS {column}" for name, column in RESOLUTION_DIMENSIONS.items())
    rating_dims = ", ".join(RATING_DIMENSIONS)
    db.execute(f"""
        INSERT INTO workload_resolutions BY NAME
        SELECT complaint_id, 6 AS version, resolved_at, team, agent, {resolution_dims}
        FROM facts WHERE resolved_at IS NOT NULL
        UNION ALL
        SELECT complaint_id, 4, resolved_at - INTERVAL 2 DAY, team, agent, {resolution_dims}
        FROM facts WHERE reopen_count > 0
        ORDER BY resolved_at""")
    db.execute("""
        INSERT INTO workload_open_intervals BY NAME
        SELECT complaint_id, registered_at AS opened_at, coalesce(resolved_at, terminated_at) AS closed_at,
            CASE WHEN resolved_at IS NOT NULL THEN 'Resolved' WHEN terminated_at IS NOT NULL THEN 'Withdrawn' END
                AS closed_by
        FROM facts ORDER BY registered_at""")
    db.execute("""
        INSERT INTO workload_handovers BY NAME
        SELECT complaint_id, 3 AS version, first_assigned_at + INTERVAL 1 HOUR AS handed_over_at,
            team AS from_team, agent AS from_agent, team AS to_team, team || '-9' AS to_agent
        FROM facts WHERE handovers > 0 ORDER BY registered_at""")
    db.execute(f"""
        INSERT INTO trend_ratings BY NAME
        SELECT complaint_id, 7 AS version, resolved_at + INTERVAL 6 HOUR AS verified_at, {rating_dims},
            1 + least(floor(pow(random(), 0.6) * 5), 4)::INTEGER AS csat,
            least(floor(pow(random(), 0.5) * 11), 10)::INTEGER AS nps,
            1 + floor(random() * 7)::INTEGER AS effort
        FROM facts WHERE status IN ('verified', 'closed') AND (hash(complaint_id) % 10) < 7
        ORDER BY verified_at""")
    print(f"  workload, trends: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    # The event log: the Registered event of each complaint (audit replay and the titles of
    # the supervisor's lists read it; the dashboards' figures do not).
    db.execute(f"""
        INSERT INTO events BY NAME
        SELECT complaint_id::UUID AS complaint_id, 1 AS complaint_version, registered_position AS position,
            'Registered' AS event_type, 1 AS event_version, registered_at AS occurred_at,
            registered_at AS recorded_at, 'intake' AS actor, 'bench-' || registered_position AS command_id,
            'bench-' || registered_position AS correlation_id,
            json_object('channel', channel, 'customer', json_object('id', customer_id, 'tier', tier),
                'customer_personal', NULL, 'title', {_list(["App crashes at login", "Parcel late by a week", "Charged twice", "Agent was rude", "Account locked", "Please add dark mode"])}[1 + (registered_position % 6)::INTEGER],
                'description', 'Synthetic complaint for the benchmark', 'product', product, 'region', region,
                'order_ref', 'ORD-' || registered_position, 'contract_ref', NULL, 'attachments', []::JSON[]) AS payload,
            registered_at AS applied_at
        FROM facts ORDER BY registered_at""")
    print(f"  events: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    db.execute("DROP TABLE g; DROP TABLE f; DROP TABLE facts; CHECKPOINT")
    db.close()
    tmp.rename(path)


def stale(path: Path) -> bool:
    """Whether the file's read-model tables lack columns the projectors now have."""
    from projections.models import make

    fresh = duckdb.connect()
    for projector in make():
        projector.create_schema(fresh)
    want = set(fresh.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall())
    db = duckdb.connect(str(path), read_only=True)
    try:
        have = set(db.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall())
    finally:
        db.close()
    return not want <= have


def serve(db_path: Path, port: int, cache_seconds: float) -> None:
    """The read API over `db_path` (child process of the benchmark)."""
    import uvicorn

    from read_api.app import create_read_app

    db = duckdb.connect(str(db_path))
    # Tokens verified as in production (the development issuer's RS256 key, beside the file).
    verifier = TokenVerifier(issuer_for(db_path), DEV_ISSUER, "complaints-api")
    app = create_read_app(db, authenticator(verifier, None), cache_seconds=cache_seconds)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def issuer_for(db_path: Path) -> LocalIssuer:
    return LocalIssuer(db_path.with_suffix(".issuer.pem"), "complaints-api")


def auth_header(db_path: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer_for(db_path).token(DevUser('bench', 'bench', ('department_head',)))}"}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(base: str, paths: dict[str, str], requests: int, warmup: int,
            headers: dict[str, str]) -> list[dict[str, object]]:
    results = []
    with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
        for name, path in paths.items():
            for _ in range(warmup):
                client.get(path).raise_for_status()
            samples = []
            for _ in range(requests):
                t0 = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - t0) * 1000)
                response.raise_for_status()
            results.append({"endpoint": name, "path": path, "p50_ms": percentile(samples, 0.5),
                            "p99_ms": percentile(samples, 0.99), "mean_ms": statistics.fmean(samples),
                            "bytes": len(response.content)})
            print(f"  {name:32s} p50 {results[-1]['p50_ms']:8.1f} ms   p99 {results[-1]['p99_ms']:8.1f} ms",
                  file=sys.stderr)
    return results


def wrk(base: str, path: str, connections: int, seconds: int, headers: dict[str, str]) -> float | None:
    """Requests per second under `connections` concurrent connections (None: no wrk)."""
    if not shutil.which("wrk"):
        return None
    header = [f"--header={k}: {v}" for k, v in headers.items()]
    done = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", *header, base + path],
                          capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    return float(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--complaints", type=int, default=1_000_000, help="complaints in the read models")
    parser.add_argument("--db", type=Path, help="DuckDB file (default var/bench-read-<N>.duckdb, reused)")
    parser.add_argument("--rebuild", action="store_true", help="generate the read models again")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per endpoint first")
    parser.add_argument("--extra", action="store_true", help="also the generic /sla, /workload, /trends")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections for the throughput run")
    parser.add_argument("--wrk-seconds", type=int, default=0, help="wrk run per dashboard (0 = none)")
    parser.add_argument("--cache-seconds", type=float, default=0,
                        help="the read API's response cache (default 0: every request computes its figures)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: child server port
    args = parser.parse_args()
    path = args.db or ROOT / "var" / f"bench-read-{args.complaints}.duckdb"
    if args.serve:
        serve(path, args.serve, args.cache_seconds)
        return
    now = datetime.now(UTC)
    if args.rebuild or not path.exists() or stale(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building read models of {args.complaints:,} complaints in {path}", file=sys.stderr)
        t0 = time.perf_counter()
        build(path, args.complaints, now)
        print(f"  built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.read_api", "--db", str(path), "--serve", str(port),
                               "--cache-seconds", str(args.cache_seconds)],
                              cwd=ROOT, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    headers = auth_header(path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/dimensions", timeout=60, headers=headers).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the read API did not start") from None
                time.sleep(0.2)
        release = (now - timedelta(days=14)).date().isoformat()
        paths = {k: v.format(release=release) for k, v in ENDPOINTS.items()} | (EXTRA if args.extra else {})
        print(f"{args.complaints:,} complaints, {args.requests} requests per endpoint", file=sys.stderr)
        results = measure(base, paths, args.requests, args.warmup, headers)
        if args.wrk_seconds:
            for row in results:
                row["wrk_rps"] = wrk(base, str(row["path"]), args.connections, args.wrk_seconds, headers)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    report = {"complaints": args.complaints, "requests": args.requests, "cache_seconds": args.cache_seconds,
              "load_average": os.getloadavg(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__,
              "when": now.isoformat(timespec="seconds"), "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print("| endpoint | p50 ms | p99 ms |\n|---|---:|---:|")
    for row in results:
        print(f"| {row['endpoint']} (`{row['path']}`) | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
