"""The `complaints` command line: the composition root's entry point.

The root callback reads the settings (once), sets up logging and puts a `Wiring` in the
typer context; the packages' sub-apps (`commands.cli`: the command verbs, `demo`,
`import-cfpb`; `consumers.cli`: `relay`, `read-node`, `replay`, `positions`,
`read-models ...`) take what they need from it. `serve` and `run` are the root's own:
they put processes together.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import duckdb
import typer

from commands.cli import app as commands_app
from commands.personal_data_cli import app as personal_data_app
from commands.subscriptions_cli import app as subscriptions_app
from consumers.audit_cli import app as audit_app
from consumers.automation_cli import app as automation_app
from consumers.knowledge_cli import app as knowledge_app
from complaints.error_language import CHINESE, ENGLISH, system_language
from complaints.logs import configure_logging
from complaints.settings import get_settings
from complaints.wiring import Wiring
from consumers.cli import app as consumers_app
from consumers.notifier_cli import app as notifier_app

log = logging.getLogger("complaints.cli")

app = typer.Typer(
    help="Complaint management: commands, the command API, the event backbone, read models.\n\n"
    "Settings come from the environment, prefix COMPLAINTS_ (e.g. COMPLAINTS_STORE=postgres, "
    "COMPLAINTS_KAFKA_BOOTSTRAP=127.0.0.1:19092): see `complaints settings`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Host = Annotated[Optional[str], typer.Option(help="address to listen on (default: COMPLAINTS_HOST)")]
Port = Annotated[Optional[int], typer.Option(help="port to listen on (default: COMPLAINTS_PORT)")]


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log at DEBUG level")] = False,
) -> None:
    settings = get_settings()
    configure_logging(settings.log_format, "DEBUG" if verbose else settings.log_level)
    wiring = Wiring(settings)
    ctx.obj = wiring
    ctx.call_on_close(wiring.close)


def _wiring(ctx: typer.Context) -> Wiring:
    wiring: Wiring = ctx.obj
    return wiring


@app.command("settings", help="Print the settings in effect (from the environment) and what each means.")
def show_settings(ctx: typer.Context) -> None:
    settings = _wiring(ctx).settings
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if "password" in name:
            value = "***"
        typer.echo(f"COMPLAINTS_{name.upper()}={value if value is not None else ''}"
                   + (f"  # {field.description}" if field.description else ""))


@app.command(help="Serve the command API over HTTP (OpenAPI at /docs; /metrics, /health, /ready).")
def serve(ctx: typer.Context, host: Host = None, port: Port = None) -> None:
    wiring = _wiring(ctx)
    host, port = host or wiring.settings.host, port or wiring.settings.port
    typer.echo(f"command API on http://{host}:{port}  (OpenAPI: http://{host}:{port}/docs)")
    wiring.serve(wiring.command_app(), host, port)


@app.command(
    help="Run everything on the embedded default: the command API, an in-process read node"
    " (SLA, workload, trend and alert read models), the read API and dashboards, the automation"
    " (its rules: COMPLAINTS_RULES), the knowledge drafter, the notifier with a demo webhook receiver, and demo data"
    " when the event store is empty."
)
def run(
    ctx: typer.Context,
    host: Host = None,
    port: Port = None,
    demo_count: Annotated[int, typer.Option(help="demo complaints for an empty store; 0 = none")] = 500,
    read_db: Annotated[Optional[Path], typer.Option(help="the read node's DuckDB file")] = None,
) -> None:
    from aggregates.rules import RulesError
    from commands.demo import load_demo
    from complaints.demo_receiver import PATH as DEMO_RECEIVER
    from complaints.demo_receiver import demo_receiver_router, subscribe_demo_receiver
    from projections import models as read_models

    wiring = _wiring(ctx)
    settings = wiring.settings
    try:
        wiring.rules
    except RulesError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    # Another process holding the read node's file (a second `make run`) is told before this
    # one starts anything: it would otherwise subscribe, deliver and serve, then fail.
    read_db = read_db or settings.read_db
    read_db.parent.mkdir(parents=True, exist_ok=True)
    duckdb.connect(str(read_db)).close()
    desk = wiring.desk()
    empty = not wiring.store.recorder.max_notification_id()
    automation = wiring.automation(desk=desk)
    drafter = wiring.knowledge_drafter(desk=desk)
    host, port = host or settings.host, port or settings.port
    # The notifier delivers to a receiver of its own on this server, to show deliveries
    # working: its address is loopback, which the SSRF guard allows for it alone.
    receiver_url = f"http://{host}:{port}{DEMO_RECEIVER}"
    receiver_secret = subscribe_demo_receiver(desk, receiver_url, settings.sqlite_path.with_name("demo-receiver.secret"))
    notifier = wiring.notifier(desk=desk, extra_allowed=[receiver_url])
    # Every read model (the dashboards read them), not only the event log.
    node = wiring.read_node(read_db, "log", read_models.make(policy=wiring.sla_policy))
    api = wiring.command_app(desk, node)
    api.include_router(wiring.read_router(lambda: node))
    api.include_router(wiring.notifier_router(notifier))
    api.include_router(demo_receiver_router(receiver_secret))
    wiring.include_page(api)
    stop_demo = threading.Event()
    demo: threading.Thread | None = None
    if demo_count and empty:
        # Load in the background: the dashboards fill up live while the user watches. The
        # automation starts once the demo is in: the demo imports a past month, and an
        # action taken now on one of its complaints would come before the rest of its past.
        typer.echo(f"empty event store: loading {demo_count} demo complaints")

        def demo_then_automation() -> None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            started = time.monotonic()
            # A progress bar in a terminal (the log lines printed above it); in a log file, none.
            with logging_redirect_tqdm():
                sent = load_demo(desk, demo_count, progress=sys.stderr.isatty(), stop=stop_demo.is_set)
            if not stop_demo.is_set():
                log.info("demo data loaded: %d complaints (%d commands) in %.1f s", demo_count, sent,
                         time.monotonic() - started)
                automation.start_background()
        demo = threading.Thread(target=demo_then_automation, daemon=True, name="demo")
        demo.start()
    else:
        automation.start_background()
    notifier.start_background()
    drafter.start_background()
    wiring.start_audit_checkpoints()  # signed checkpoints of the log, in a thread (closed with the wiring)
    typer.echo(f"dashboard:   http://{host}:{port}/dashboard")
    typer.echo(f"API docs:    http://{host}:{port}/docs")
    typer.echo(f"deliveries:  http://{host}:{port}/deliveries (received: {receiver_url})")
    try:
        wiring.serve_with_node(api, node, host, port)
    finally:
        # The demo's command in flight finishes before the desk closes; the rest is not sent.
        if demo is not None and demo.is_alive():
            stop_demo.set()
            demo.join(10)
            log.info("stopped loading the demo complaints")
        automation.stop()
        automation.close()
        notifier.stop()
        notifier.close()
        drafter.stop()
        drafter.close()


@app.command(help="Print a bearer token of a demo user, from the development issuer (not in production):"
             " curl -H \"Authorization: Bearer $(complaints token --role supervisor)\" ...")
def token(
    ctx: typer.Context,
    role: Annotated[Optional[str], typer.Option(help="the demo user with this role")] = "supervisor",
    user: Annotated[Optional[str], typer.Option(help="the demo user by name (see --list)")] = None,
    list_users: Annotated[bool, typer.Option("--list", help="list the demo users and their roles")] = False,
    lifetime: Annotated[int, typer.Option(help="seconds the token is valid", min=60, max=7 * 86400)] = 8 * 3600,
) -> None:
    from complaints.identity import DEV_USERS, dev_user

    wiring = _wiring(ctx)
    try:
        issuer = wiring.dev_issuer
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    if issuer is None:
        typer.echo(f"tokens come from the identity provider {wiring.settings.auth_issuer} here", err=True)
        raise typer.Exit(2)
    if list_users:
        for u in DEV_USERS:
            typer.echo(f"{u.username:14} {'/'.join(u.roles):16} {u.team or '':12} {u.name}")
        return
    try:
        chosen = dev_user(role, user)
    except KeyError as error:
        typer.echo(error.args[0], err=True)
        raise typer.Exit(2) from None
    typer.echo(issuer.token(chosen, lifetime))


@app.command(help="Print the roles and the permission matrix (--markdown: the tables of docs/security.md).")
def roles(markdown: Annotated[bool, typer.Option(help="as the Markdown of docs/security.md")] = False) -> None:
    from aggregates.access import MATRIX, ROLES, matrix_markdown

    if markdown:
        typer.echo(matrix_markdown(), nl=False)
        return
    for role in ROLES:
        typer.echo(f"{role}: {', '.join(sorted(MATRIX[role]))}")


app.add_typer(commands_app)
app.add_typer(consumers_app)
app.add_typer(automation_app)
app.add_typer(knowledge_app)
app.add_typer(notifier_app)
app.add_typer(subscriptions_app)
app.add_typer(audit_app)  # `complaints audit verify|public-key|checkpoints` (consumers.audit_cli)
app.add_typer(personal_data_app)


# DuckDB's words when another process has the file open (it names the holder's PID).
_HELD = re.compile(r'Could not set lock on file "(?P<path>[^"]+)": Conflicting lock is held in'
                   r' (?P<program>.+?) \(PID (?P<pid>\d+)\)')
_HELD_BY = {
    ENGLISH: "{path} is in use by process {pid} ({holder}), and a DuckDB file opens in one process at a time:"
          " stop that process (kill {pid}) and try again, or use another file (--db / --read-db,"
          " COMPLAINTS_READ_DB); while it runs, its read API and dashboards answer from this file.",
    CHINESE: "{path} 正被进程 {pid}（{holder}）占用，而 DuckDB 文件同一时间只能由一个进程打开：请先停止该进程"
             "（kill {pid}）再试，或换用另一个文件（--db / --read-db、COMPLAINTS_READ_DB）；"
             "该进程运行期间，可通过它的读取 API 和看板查看此文件中的数据。",
}


def held_file(error: duckdb.IOException) -> str | None:
    """One line for people on a DuckDB file another process holds (None: another IO error)."""
    found = _HELD.search(str(error))
    if found is None:
        return None
    import psutil

    pid = int(found["pid"])
    try:
        command = psutil.Process(pid).cmdline()
    except psutil.Error:  # gone already, or not ours to look at
        command = [found["program"]]
    # `python -m complaints.cli run ...` and `.venv/bin/complaints run ...` alike: `complaints run ...`
    for start, part in enumerate(command):
        if part in ("complaints.cli", "complaints") or part.endswith("/complaints"):
            command = ["complaints", *command[start + 1:]]
            break
    return _HELD_BY[system_language()].format(path=found["path"], pid=pid, holder=" ".join(command))


def main() -> None:
    try:
        app()
    except duckdb.IOException as error:
        line = held_file(error)
        if line is None:
            raise
        typer.echo(line, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
