"""Operations of the event backbone: `relay`, `read-node`, `positions`, `replay`, and the
`read-models` group (`rebuild`, `figures`, `what-if`).

Mounted into the `complaints` command line by the composition root (`complaints.cli`),
which puts a `Wiring` in the typer context: these commands ask it for the event store, a
relay or a read node and never read settings themselves (defaults: `complaints --help`
and docs/bus.md).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional, Protocol

import typer

log = logging.getLogger("consumers.cli")


class BackboneSettings(Protocol):
    """The settings these commands read (the composition root's Settings has them)."""

    store: str
    kafka_bootstrap: str | None
    topic: str
    partitions: int
    read_db: Path
    poll_interval: float
    timezone: str
    dead_letter_topic: str

    def require_kafka(self) -> str: ...


class Wiring(Protocol):
    """What these commands need from the composition root (the typer context's `obj`)."""

    settings: BackboneSettings
    store: Any  # recorder, mapper, tracking
    sla_policy: Any

    def relay(self, batch_size: int | None = None) -> Any: ...

    def read_node(self, db: Path | None = None, source: str | None = None,
                  projectors: Sequence[Any] | None = None, **options: Any) -> Any: ...

    def serve_read_node(self, node: Any, host: str, port: int) -> None: ...

    def serve_operations(self, *checks: Callable[[], str | None]) -> None: ...


# Mounted by the composition root (`complaints.cli`), which puts a `Wiring` in the context.
app = typer.Typer(pretty_exceptions_enable=False)
read_models_app = typer.Typer(
    help="Read models (SLA, workload, trends): rebuild, figures as of any point, what-if SLA.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(read_models_app, name="read-models")

DbOption = Annotated[Optional[Path], typer.Option("--db", help="the read node's DuckDB file (default: COMPLAINTS_READ_DB)")]
SourceOption = Annotated[
    Optional[str],
    typer.Option("--source", help="kafka, log (the event store in-process) or auto (default: COMPLAINTS_SOURCE)"),
]
ProjectorOption = Annotated[
    Optional[list[str]],
    typer.Option("--projector", help="extra projector as module:Class (repeatable) (default: COMPLAINTS_PROJECTORS)"),
]
ModelsOption = Annotated[
    Optional[str],
    typer.Option("--models", help="comma-separated read models (facts, sla, workload, trends, alerts); default all"),
]


def _wiring(ctx: typer.Context) -> Wiring:
    wiring: Wiring = ctx.obj
    return wiring


def stop_on_signals(then: str = "finishing the current batch") -> threading.Event:
    """An event SIGTERM and SIGINT set (logged with what the process does `then`): a
    following process finishes its step, then stops."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("%s received: %s", signal.Signals(signum).name, then)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _source(source: str | None) -> str | None:
    if source is not None and source not in ("auto", "kafka", "log"):
        raise typer.BadParameter(f"--source must be kafka, log or auto, not {source!r}")
    return source


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


@app.command(help="Publish the event store's events to Kafka, in order, until stopped (SIGTERM).\n\n"
                  "Records the last acknowledged position in the event store; resumes from it after "
                  "any crash. While Kafka is down it retries with a back-off: commands are still accepted.")
def relay(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="publish what is there, then exit")] = False,
    batch_size: Annotated[Optional[int], typer.Option(help="events per acknowledged batch")] = None,
) -> None:
    from consumers.relay import ensure_topics_when_up

    wiring = _wiring(ctx)
    settings = wiring.settings
    try:
        bootstrap = settings.require_kafka()
    except ValueError as error:
        _fail(str(error))
        return
    stop = stop_on_signals()
    the_relay: Any = None

    def ready() -> str | None:
        if the_relay is None:
            return f"Kafka at {bootstrap} to create the topics"
        return None if the_relay.trouble is None else f"the relay: {the_relay.trouble}"

    # Served while waiting for the broker too: alive (/health), not ready (/ready).
    wiring.serve_operations(ready)
    try:
        ensure_topics_when_up(bootstrap, settings.topic, settings.partitions, stop=stop.is_set)
    except Exception:
        if stop.is_set():  # stopped while waiting for the broker
            return
        raise
    the_relay = wiring.relay(batch_size)
    if once:
        the_relay.catch_up(stop=stop.is_set)
        typer.echo(f"relayed up to position {the_relay.position()}, lag {the_relay.lag()}")
        the_relay.close()
    else:
        the_relay.run(stop=stop.is_set, idle_sleep=settings.poll_interval)


@app.command("read-node", help="Run a read node: consume events into its DuckDB file until stopped (SIGTERM).\n\n"
                               "Feeds from Kafka when COMPLAINTS_KAFKA_BOOTSTRAP is set (or --source kafka), "
                               "else follows the event store in-process. Positions live in the DuckDB file.")
def read_node(
    ctx: typer.Context,
    db: DbOption = None,
    source: SourceOption = None,
    projector: ProjectorOption = None,
    until_caught_up: Annotated[bool, typer.Option(help="exit once everything the source holds is applied")] = False,
    serve: Annotated[Optional[int], typer.Option(
        "--serve", metavar="PORT", help="also serve the read API and dashboards on this port")] = None,
    host: Annotated[str, typer.Option(help="address to serve on (with --serve)")] = "127.0.0.1",
) -> None:
    from consumers.read_node import load_projectors

    wiring = _wiring(ctx)
    projectors = load_projectors(projector) if projector else None
    node = wiring.read_node(db, _source(source), projectors)
    if serve is not None:
        # One process consumes, owns the DuckDB file and answers reads (DuckDB allows one
        # writing process); uvicorn handles SIGTERM, then the consumer thread stops.
        wiring.serve_read_node(node, host, serve)
        return
    stop = stop_on_signals()
    wiring.serve_operations(lambda: None if node.caught_up.is_set() else f"the read node to catch up with {node.source.name}")
    try:
        if until_caught_up:
            applied = node.catch_up(stop=stop)
            typer.echo(f"caught up: {applied} new events, positions {node.positions}")
        else:
            node.run(stop=stop)
    finally:
        node.close()


@app.command(help="Rebuild a read node from the start of the topic (or log): drops its tables, reads "
                  "everything again, shows progress. Stop the read node first (one process per DuckDB file).")
def replay(
    ctx: typer.Context,
    db: DbOption = None,
    source: SourceOption = None,
    projector: ProjectorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    import duckdb
    from tqdm import tqdm

    from consumers.read_node import load_projectors

    wiring = _wiring(ctx)
    path = db or wiring.settings.read_db
    if not yes and not typer.confirm(f"drop every read model in {path} and rebuild it?"):
        raise typer.Exit(1)
    stop = stop_on_signals()
    projectors = load_projectors(projector) if projector else None
    node = wiring.read_node(path, _source(source), projectors)
    try:
        try:
            node.replay()
        except duckdb.IOException as error:
            _fail(f"cannot open {path}: {error}\nIs a read node running on it? Stop it first.")
        started = time.monotonic()
        with tqdm(total=node.lag(), unit="msg", desc="replay") as bar:
            applied = node.catch_up(progress=lambda r: bar.update(r.messages), stop=stop)
        status = node.status()
        typer.echo(f"replayed {applied} events into {path} in {time.monotonic() - started:.1f}s: "
                   f"{status.events} events, {status.dead_letters} dead letters, positions {status.positions}")
    finally:
        node.close()


@app.command(help="Show positions and lag: the event store, the relay, the topic and a read node.")
def positions(
    ctx: typer.Context,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    wiring = _wiring(ctx)
    bus = wiring.settings
    report: dict[str, Any] = {"store": _store_positions(wiring)}
    if bus.kafka_bootstrap:
        report["topic"] = _topic_positions(bus)
    report["read_node"] = node_info = _read_node_positions(db or bus.read_db)
    if "positions" in node_info and node_info.get("lag") is None:
        node_info["lag"] = _lag_from(report, node_info)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    store = report["store"]
    typer.echo(f"event store ({store['store']}): last position {store['max_position']}")
    if "relay_position" in store:
        typer.echo(f"relay -> {bus.topic}: position {store['relay_position']}, lag {store['relay_lag']}")
    topic = report.get("topic")
    if topic:
        if "error" in topic:
            typer.echo(f"topic {bus.topic}: {topic['error']}")
        else:
            typer.echo(f"topic {bus.topic}: {topic['messages']} messages in {len(topic['end_offsets'])} partitions "
                       f"{topic['end_offsets']}; dead letters: {topic['dead_letters']}")
    node = report["read_node"]
    if "error" in node:
        typer.echo(f"read node {node['db_path']}: {node['error']}")
        return
    typer.echo(f"read node {node['db_path']} ({node['from']}): source {node['source']}, "
               f"positions {node['positions']}, lag {node.get('lag', 'unknown')}, events {node['events']}, "
               f"dead letters {node['dead_letters']}")
    for projector in node.get("projectors", []):
        typer.echo(f"  {projector['name']} v{projector['schema_version']}: {projector['dead_letters']} dead letters")


def _lag_from(report: dict[str, Any], node: dict[str, Any]) -> int | None:
    """A stopped read node's lag, from the source's ends and its stored positions."""
    stored = {int(p): int(n) for p, n in node["positions"].items()}
    if str(node.get("source", "")).startswith("kafka:") and "end_offsets" in report.get("topic", {}):
        ends = report["topic"]["end_offsets"]
        return sum(max(0, end - stored.get(int(p), 0)) for p, end in ends.items())
    if node.get("source") == "log":
        return max(0, report["store"]["max_position"] + 1 - stored.get(0, 1))
    return None


def _store_positions(wiring: Wiring) -> dict[str, Any]:
    settings, store = wiring.settings, wiring.store
    max_position = store.recorder.max_notification_id() or 0
    info: dict[str, Any] = {"store": settings.store, "max_position": max_position}
    if settings.kafka_bootstrap:
        relay_position = store.tracking.max_tracking_id(f"relay:{settings.topic}") or 0
        info |= {"relay_position": relay_position, "relay_lag": max(0, max_position - relay_position)}
    return info


def _topic_positions(bus: BackboneSettings) -> dict[str, Any]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bus.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                 request_timeout_ms=10_000, bootstrap_timeout_ms=5_000)
    except KafkaError as error:
        return {"error": f"Kafka unreachable at {bus.kafka_bootstrap}: {error}"}
    try:
        found = consumer.partitions_for_topic(bus.topic)
        if not found:
            return {"error": "no such topic yet (the relay creates it)"}
        ends = consumer.end_offsets([TopicPartition(bus.topic, p) for p in sorted(found)])
        dlq = consumer.partitions_for_topic(bus.dead_letter_topic) or set()
        dlq_ends = consumer.end_offsets([TopicPartition(bus.dead_letter_topic, p) for p in dlq]) if dlq else {}
        end_offsets = {tp.partition: offset for tp, offset in sorted(ends.items())}
        return {"end_offsets": end_offsets, "messages": sum(end_offsets.values()),
                "dead_letters": sum(dlq_ends.values())}
    finally:
        consumer.close()


def _read_node_positions(path: Path) -> dict[str, Any]:
    """From the DuckDB file when no read node holds it, else from the status file it leaves."""
    import duckdb

    info: dict[str, Any] = {"db_path": str(path)}
    if not path.exists():
        return info | {"error": "no such file (no read node has run here)"}
    try:
        db = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        status_file = Path(str(path) + ".status.json")
        if not status_file.exists():
            return info | {"error": "in use by a read node that left no status file yet"}
        age = time.time() - status_file.stat().st_mtime
        return info | json.loads(status_file.read_text()) | {"from": f"status file, {age:.0f}s old"}
    try:
        rows = db.execute("SELECT source, partition, next_position FROM consumer_positions "
                          "WHERE source NOT LIKE 'rebuild:%' ORDER BY ALL").fetchall()
        by_stage = dict(db.execute("SELECT stage, count(*) FROM dead_letters GROUP BY stage").fetchall())
        versions = db.execute("SELECT projector, schema_version FROM read_model_meta ORDER BY projector").fetchall()
        events = db.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
    except duckdb.Error as error:
        return info | {"error": f"not a read node file: {error}"}
    finally:
        db.close()
    return info | {
        "from": "DuckDB file (no read node running)",
        "source": ", ".join(sorted({r[0] for r in rows})) or "none yet",
        "positions": {r[1]: r[2] for r in rows},
        "events": events,
        "dead_letters": sum(by_stage.values()),
        "projectors": [{"name": n, "schema_version": v, "dead_letters": by_stage.get(n, 0)} for n, v in versions],
    }


# ---------------------------------------------------------------------- read models
def _models(spec: str | None) -> list[str] | None:
    return [m.strip() for m in spec.split(",") if m.strip()] if spec else None


@read_models_app.command(
    help="Rebuild read models into a fresh DuckDB file and swap it in atomically.\n\n"
    "--from store (default) reads every event from the event store (raw pages, bulk inserts) "
    "and rebuilds the events table and all read models; --from events rebuilds the chosen "
    "models from the events the read node already has; --from kafka reads the topic from its "
    "start through a read node. Readers keep using the old file until the swap; a read node "
    "running in another process must be stopped first."
)
def rebuild(
    ctx: typer.Context,
    db: DbOption = None,
    models: ModelsOption = None,
    source: Annotated[str, typer.Option("--from", help="store, events or kafka")] = "store",
    swap: Annotated[bool, typer.Option(help="swap the new file in (--no-swap: leave it next to the old)")] = True,
    page: Annotated[int, typer.Option(help="events read per page from the store")] = 50_000,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    from consumers import rebuild as rebuilding
    from projections import models as read_models

    wiring = _wiring(ctx)
    path = db or wiring.settings.read_db
    chosen = _models(models)
    policy = wiring.sla_policy
    try:
        if source == "store":
            if chosen is not None:
                _fail("--models needs --from events: a rebuild from the store rebuilds every read model")
            report = rebuilding.rebuild(path, wiring.store, policy=policy, page=page, progress=progress, swap=swap)
        elif source == "events":
            report = rebuilding.rebuild(path, None, chosen, policy=policy, progress=progress, swap=swap)
        elif source == "kafka":
            report = rebuilding.rebuild_from_kafka(
                path, lambda target: wiring.read_node(target, "kafka", read_models.make(chosen, policy=policy)),
                progress=progress, swap=swap)
        else:
            _fail(f"--from must be store, events or kafka, not {source!r}")
            return
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        _fail(f"rebuild failed: {error}")
        return
    typer.echo(report.summary())


def _as_of(value: str | None) -> int | datetime | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    instant = datetime.fromisoformat(value)
    if instant.tzinfo is None:
        raise typer.BadParameter("--as-of needs a time zone, e.g. 2026-11-20T08:00:00+08:00")
    return instant


@read_models_app.command(
    help="Print every dashboard figure as JSON, live or --as-of a past event position (an "
    "integer) or instant (ISO 8601 with offset; compared with occurred_at). Past figures are "
    "recomputed from the events table in temporary tables: the file is opened read-only."
)
def figures(
    ctx: typer.Context,
    db: DbOption = None,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="event position or ISO instant")] = None,
    now: Annotated[Optional[str], typer.Option(help="judge open/overdue at this instant (ISO, with offset)")] = None,
    tz: Annotated[Optional[str], typer.Option(help="time zone of days and weeks (default COMPLAINTS_TIMEZONE)")] = None,
    only: Annotated[Optional[str], typer.Option(help="comma-separated figure names to print")] = None,
) -> None:
    import duckdb

    from projections import queries

    wiring = _wiring(ctx)
    path = db or wiring.settings.read_db
    if not path.exists():
        _fail(f"{path} does not exist: run a read node or `complaints read-models rebuild` first")
    con = duckdb.connect(str(path), read_only=True)
    try:
        result = queries.dashboard(con, as_of=_as_of(as_of), now=datetime.fromisoformat(now) if now else None,
                                   tz=tz or wiring.settings.timezone, policy=wiring.sla_policy)
    finally:
        con.close()
    if only:
        wanted = {name.strip() for name in only.split(",")}
        result = {k: v for k, v in result.items() if k in wanted or k == "now"}
    typer.echo(json.dumps(_jsonable(result), indent=2, default=str))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else "/".join(str(p) for p in k) if isinstance(k, tuple)
                 else str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@read_models_app.command(
    "what-if",
    help="Recompute the SLA read model over the whole history under another policy file, into a "
    "separate DuckDB file, and show the attainment it would have had beside the actual one. The "
    "domain's own due-time rules are replayed with the new targets and calendars; the live read "
    "models are not touched.",
)
def what_if(
    ctx: typer.Context,
    policy_file: Annotated[Path, typer.Argument(help="the SLA policy TOML to try", exists=True, dir_okay=False)],
    db: DbOption = None,
    out: Annotated[Optional[Path], typer.Option(help="the what-if DuckDB file (default: next to --db)")] = None,
    source: Annotated[str, typer.Option("--from", help="events (the read node's file) or store")] = "events",
    by: Annotated[str, typer.Option(help="also per this dimension (severity, category, team, ...); '' for none")] = "severity",
    now: Annotated[Optional[str], typer.Option(help="judge running clocks at this instant (default: last event)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
) -> None:
    import duckdb

    from aggregates.sla import load_sla_policy
    from consumers.rebuild import load_events
    from projections import whatif

    wiring = _wiring(ctx)
    path = db or wiring.settings.read_db
    policy = load_sla_policy(policy_file)
    target = out or path.with_name(f"{path.stem}.what-if-{policy.version}.duckdb")
    options: dict[str, Any] = {"now": datetime.fromisoformat(now) if now else None, "by": by or None,
                               "actual_policy": wiring.sla_policy}
    try:
        if source == "store":
            report = whatif.what_if(policy, target, load_events=lambda into: load_events(into, wiring.store),
                                    **options)
        elif source == "events":
            if not path.exists():
                _fail(f"{path} does not exist: use --from store, or run a read node first")
            report = whatif.what_if(policy, target, read_db=path, **options)
        else:
            _fail(f"--from must be events or store, not {source!r}")
            return
    except duckdb.Error as error:
        _fail(f"cannot read {path} ({error}); if a read node is running on it, use --from store")
        return
    if as_json:
        typer.echo(json.dumps(report.rows, indent=2, default=str))
    else:
        typer.echo(report.table())
