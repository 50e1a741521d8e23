"""Commands for the read models: `complaints read-models ...` and `complaints import-cfpb`.

Mount into the main CLI with `app.add_typer(projections.cli.app)` (its commands join the
top level: the `read-models` group and `import-cfpb`). Settings come from the
environment as everywhere: the event store (COMPLAINTS_STORE, ...), the read node's file
(COMPLAINTS_READ_DB), the SLA policy (COMPLAINTS_SLA_POLICY) and the time zone of days
and weeks (COMPLAINTS_TIMEZONE).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

log = logging.getLogger("projections.cli")

app = typer.Typer(pretty_exceptions_enable=False)
read_models_app = typer.Typer(
    help="Read models (SLA, workload, trends): rebuild, figures as of any point, what-if SLA.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(read_models_app, name="read-models")

DbOption = Annotated[
    Optional[Path], typer.Option("--db", help="the read node's DuckDB file (default: COMPLAINTS_READ_DB)")
]
ModelsOption = Annotated[
    Optional[str],
    typer.Option("--models", help="comma-separated read models (facts, sla, workload, trends); default all"),
]


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("commands.desk").setLevel(logging.WARNING)


def _read_db(db: Path | None) -> Path:
    if db is not None:
        return db
    from consumers.settings import get_bus_settings

    return Path(get_bus_settings().read_db)


def _models(spec: str | None) -> list[str] | None:
    return [m.strip() for m in spec.split(",") if m.strip()] if spec else None


def _fail(message: str, code: int = 1) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@read_models_app.command(
    help="Rebuild read models into a fresh DuckDB file and swap it in atomically.\n\n"
    "--from store (default) reads every event from the event store (fast path: raw pages, "
    "bulk inserts) and rebuilds the events table and all read models; --from events rebuilds "
    "the chosen models from the events the read node already has; --from kafka reads the "
    "topic from its start through the consumer runner. Readers keep using the old file until "
    "the swap; a read node running in another process must be stopped first."
)
def rebuild(
    db: DbOption = None,
    models: ModelsOption = None,
    source: Annotated[str, typer.Option("--from", help="store, events or kafka")] = "store",
    swap: Annotated[bool, typer.Option(help="swap the new file in (--no-swap: leave it next to the old)")] = True,
    page: Annotated[int, typer.Option(help="events read per page from the store")] = 50_000,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    from projections import rebuild as rb

    _logging()
    path = _read_db(db)
    chosen = _models(models)
    try:
        if source == "store":
            from commands.settings import get_settings
            from commands.desk import ComplaintDesk

            if chosen is not None:
                _fail("--models needs --from events: a rebuild from the store rebuilds every read model")
            desk = ComplaintDesk.from_settings(get_settings())
            report = rb.rebuild(path, desk, page=page, progress=progress, swap=swap)
        elif source == "events":
            report = rb.rebuild(path, None, chosen, progress=progress, swap=swap)
        elif source == "kafka":
            report = rb.rebuild_from_kafka(path, chosen, progress=progress, swap=swap)
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
    "recomputed from the events table in temporary tables: the live read models are untouched."
)
def figures(
    db: DbOption = None,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="event position or ISO instant")] = None,
    now: Annotated[Optional[str], typer.Option(help="judge open/overdue at this instant (ISO, with offset)")] = None,
    tz: Annotated[Optional[str], typer.Option(help="time zone of days and weeks (default COMPLAINTS_TIMEZONE)")] = None,
    only: Annotated[Optional[str], typer.Option(help="comma-separated figure names to print")] = None,
) -> None:
    import duckdb

    from projections import queries

    path = _read_db(db)
    if not path.exists():
        _fail(f"{path} does not exist: run a read node or `complaints read-models rebuild` first")
    con = duckdb.connect(str(path), read_only=True)
    try:
        result = queries.dashboard(
            con, as_of=_as_of(as_of), now=datetime.fromisoformat(now) if now else None, tz=tz
        )
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


@app.command(
    "import-cfpb",
    help="Load a CFPB-format complaints CSV (US Consumer Financial Protection Bureau, Consumer "
    "Complaint Database) as a stream of commands: register (Date received), triage (Issue), "
    "assign (Company, Date sent to company), resolve and close (Company response; 'In progress' "
    "stays open). Command ids derive from the Complaint ID, so importing again changes nothing "
    "but what is new. Mapping and the 15-day SLA: docs/read-models.md.",
)
def import_cfpb(
    file: Annotated[Path, typer.Argument(help="a CFPB CSV (the 18 standard columns)", exists=True, dir_okay=False)],
    limit: Annotated[Optional[int], typer.Option(help="import only the first N rows")] = None,
    chunk: Annotated[int, typer.Option(help="new complaints saved per transaction")] = 500,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    from commands.desk import ComplaintDesk
    from commands.settings import get_settings
    from projections.cfpb import import_cfpb as run_import

    _logging()
    desk = ComplaintDesk.from_settings(get_settings())
    try:
        report = run_import(desk, file, chunk=chunk, limit=limit, progress=progress)
    finally:
        desk.close()
    typer.echo(report.summary())


@read_models_app.command(
    "what-if",
    help="Recompute the SLA read model over the whole history under another policy file, into a "
    "separate DuckDB file, and show the attainment it would have had beside the actual one. The "
    "domain's own due-time rules are replayed with the new targets and calendars; the live read "
    "models are not touched.",
)
def what_if(
    policy_file: Annotated[Path, typer.Argument(help="the SLA policy TOML to try", exists=True, dir_okay=False)],
    db: DbOption = None,
    out: Annotated[Optional[Path], typer.Option(help="the what-if DuckDB file (default: next to --db)")] = None,
    source: Annotated[str, typer.Option("--from", help="events (the read node's file) or store")] = "events",
    by: Annotated[str, typer.Option(help="also per this dimension (severity, category, team, ...); '' for none")] = "severity",
    now: Annotated[Optional[str], typer.Option(help="judge running clocks at this instant (default: last event)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
) -> None:
    from aggregates.sla import load_sla_policy
    from projections import whatif

    _logging()
    path = _read_db(db)
    policy = load_sla_policy(policy_file)
    target = out or path.with_name(f"{path.stem}.what-if-{policy.version}.duckdb")
    kwargs: dict[str, Any] = {"now": datetime.fromisoformat(now) if now else None, "by": by or None}
    try:
        if source == "store":
            from commands.desk import ComplaintDesk
            from commands.settings import get_settings

            report = whatif.what_if(policy, target, source=ComplaintDesk.from_settings(get_settings()), **kwargs)
        elif source == "events":
            if not path.exists():
                _fail(f"{path} does not exist: use --from store, or run a read node first")
            report = whatif.what_if(policy, target, read_db=path, **kwargs)
        else:
            _fail(f"--from must be events or store, not {source!r}")
            return
    except duckdb_error() as error:
        _fail(f"cannot read {path} ({error}); if a read node is running on it, use --from store")
        return
    if as_json:
        typer.echo(json.dumps(report.rows, indent=2, default=str))
    else:
        typer.echo(report.table())


def duckdb_error() -> type[Exception]:
    import duckdb

    return duckdb.Error
