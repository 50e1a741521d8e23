"""Operations of the event backbone: `complaints relay`, `read-node`, `positions`, `replay`.

Mounted into the main `complaints` command line (commands/cli.py). Settings come from the
environment: the event store as for every command (COMPLAINTS_STORE, ...), the bus from
COMPLAINTS_KAFKA_BOOTSTRAP, COMPLAINTS_TOPIC, COMPLAINTS_PARTITIONS, COMPLAINTS_READ_DB
(see consumers/settings.py and docs/bus.md).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from commands.settings import get_settings
from consumers.settings import BusSettings, get_bus_settings

log = logging.getLogger("consumers.cli")

app = typer.Typer(help="The event backbone: relay into Kafka, read nodes, positions, replay.",
                  pretty_exceptions_enable=False)

DbOption = Annotated[Optional[Path], typer.Option("--db", help="the read node's DuckDB file (default: COMPLAINTS_READ_DB)")]
SourceOption = Annotated[
    Optional[str],
    typer.Option("--source", help="kafka, log (the event store in-process) or auto (default: COMPLAINTS_SOURCE)"),
]
ProjectorOption = Annotated[
    Optional[list[str]],
    typer.Option("--projector", help="extra projector as module:Class (repeatable) (default: COMPLAINTS_PROJECTORS)"),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logs, kafka-python's included")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # kafka-python logs every failed reconnect; our own lines say what matters.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _stop_on_signals() -> threading.Event:
    """SIGTERM and SIGINT finish the current batch, then stop."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _bus(source: str | None = None) -> BusSettings:
    bus = get_bus_settings()
    if source is not None:
        if source not in ("auto", "kafka", "log"):
            raise typer.BadParameter(f"--source must be kafka, log or auto, not {source!r}")
        bus = bus.model_copy(update={"source": source})
    return bus


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


@app.command(help="Publish the event store's events to Kafka, in order, until stopped (SIGTERM).\n\n"
                  "Records the last acknowledged position in the event store; resumes from it after "
                  "any crash. While Kafka is down it retries with a back-off: commands are still accepted.")
def relay(
    once: Annotated[bool, typer.Option(help="publish what is there, then exit")] = False,
    batch_size: Annotated[Optional[int], typer.Option(help="events per acknowledged batch")] = None,
    verbose: Verbose = False,
) -> None:
    from kafka.errors import KafkaError

    from consumers.relay import ensure_topics, relay_from_settings

    _logging(verbose)
    bus = _bus()
    if batch_size:
        bus = bus.model_copy(update={"relay_batch_size": batch_size})
    try:
        bootstrap = bus.require_kafka()
    except ValueError as error:
        _fail(str(error))
        return
    stop = _stop_on_signals()
    backoff = 1.0
    while not stop.is_set():
        try:
            ensure_topics(bootstrap, bus.topic, bus.partitions)
            break
        except KafkaError as error:
            log.warning("cannot reach Kafka at %s to check topics (%s); retrying in %.0fs", bootstrap, error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10)
    the_relay, desk_app = relay_from_settings(get_settings(), bus)
    try:
        if once:
            the_relay.catch_up(stop=stop.is_set)
            typer.echo(f"relayed up to position {the_relay.position()}, lag {the_relay.lag()}")
        else:
            the_relay.run(stop=stop.is_set, idle_sleep=bus.poll_interval)
    finally:
        if the_relay.producer is not None:
            the_relay.producer.close(timeout=10)
        desk_app.close()


@app.command("read-node", help="Run a read node: consume events into its DuckDB file until stopped (SIGTERM).\n\n"
                               "Feeds from Kafka when COMPLAINTS_KAFKA_BOOTSTRAP is set (or --source kafka), "
                               "else follows the event store in-process. Positions live in the DuckDB file.")
def read_node(
    db: DbOption = None,
    source: SourceOption = None,
    projector: ProjectorOption = None,
    until_caught_up: Annotated[bool, typer.Option(help="exit once everything the source holds is applied")] = False,
    serve: Annotated[Optional[int], typer.Option(
        "--serve", metavar="PORT", help="also serve the read API and dashboards on this port")] = None,
    host: Annotated[str, typer.Option(help="address to serve on (with --serve)")] = "127.0.0.1",
    verbose: Verbose = False,
) -> None:
    from consumers.runner import load_projectors, read_node_from_settings

    _logging(verbose)
    bus = _bus(source)
    projectors = load_projectors(projector) if projector else None
    node, desk_app = read_node_from_settings(get_settings(), bus, db_path=db, projectors=projectors)
    if serve is not None:
        # One process consumes, owns the DuckDB file and answers reads (DuckDB allows one
        # writing process); uvicorn handles SIGTERM, then the consumer thread stops.
        import uvicorn

        from read_api.app import create_read_app

        node.open()
        node.start_background()
        typer.echo(f"read node serving http://{host}:{serve}/dashboard")
        try:
            uvicorn.run(create_read_app(node), host=host, port=serve, log_level="warning")
        finally:
            node.stop()
            node.close()
            if desk_app is not None:
                desk_app.close()
        return
    stop = _stop_on_signals()
    try:
        if until_caught_up:
            applied = node.catch_up(stop=stop)
            typer.echo(f"caught up: {applied} new events, positions {node.positions}")
        else:
            node.run(stop=stop)
    finally:
        node.close()
        if desk_app is not None:
            desk_app.close()


@app.command(help="Rebuild a read node from the start of the topic (or log): drops its tables, reads "
                  "everything again, shows progress. Stop the read node first (one process per DuckDB file).")
def replay(
    db: DbOption = None,
    source: SourceOption = None,
    projector: ProjectorOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    verbose: Verbose = False,
) -> None:
    import duckdb
    from tqdm import tqdm

    from consumers.runner import load_projectors, read_node_from_settings

    _logging(verbose)
    bus = _bus(source)
    path = db or bus.read_db
    if not yes and not typer.confirm(f"drop every read model in {path} and rebuild it?"):
        raise typer.Exit(1)
    stop = _stop_on_signals()
    projectors = load_projectors(projector) if projector else None
    node, desk_app = read_node_from_settings(get_settings(), bus, db_path=path, projectors=projectors)
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
        if desk_app is not None:
            desk_app.close()


@app.command(help="Show positions and lag: the event store, the relay, the topic and a read node.")
def positions(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    bus = _bus()
    report: dict[str, Any] = {"store": _store_positions(bus)}
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


def _store_positions(bus: BusSettings) -> dict[str, Any]:
    from commands.desk import ComplaintDesk

    settings = get_settings()
    app_ = ComplaintDesk.from_settings(settings)
    try:
        max_position = app_.recorder.max_notification_id() or 0
        info: dict[str, Any] = {"store": settings.store, "max_position": max_position}
        if bus.kafka_bootstrap:
            relay_position = app_.factory.tracking_recorder().max_tracking_id(f"relay:{bus.topic}") or 0
            info |= {"relay_position": relay_position, "relay_lag": max(0, max_position - relay_position)}
        return info
    finally:
        app_.close()


def _topic_positions(bus: BusSettings) -> dict[str, Any]:
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
