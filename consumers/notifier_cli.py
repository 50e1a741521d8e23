"""`complaints notifier`: follow the stream and deliver notifications until stopped.

Mounted into the `complaints` command line by the composition root, which puts a
`Wiring` in the typer context (it builds the notifier from the settings).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any, Optional, Protocol

import typer

from consumers.cli import stop_on_signals

log = logging.getLogger("consumers.notifier_cli")


class Wiring(Protocol):
    settings: Any

    def notifier(self, state: Path | None = None, source: str | None = None, **options: Any) -> Any: ...

    def serve_notifier(self, notifier: Any, host: str, port: int) -> None: ...

    def serve_operations(self, *checks: Any) -> None: ...


app = typer.Typer(pretty_exceptions_enable=False)


@app.command(help="Run the notifier until stopped (SIGTERM): follow the stream, decide who is told what"
                  " (subscriptions, the customers' acknowledgements and status changes), and deliver it at"
                  " least once: signed webhooks, e-mail, chat robots, SMS, with retries.\n\n"
                  "Status (lag, deliveries by status, dead letters): --status, or <state>.status.json."
                  " With --port it also serves /subscriptions, /deliveries and re-sends.")
def notifier(
    ctx: typer.Context,
    state: Annotated[Optional[Path], typer.Option("--state", help="its state file (default: COMPLAINTS_NOTIFIER_STATE)")] = None,
    source: Annotated[Optional[str], typer.Option(help="kafka, log or auto (default: COMPLAINTS_SOURCE)")] = None,
    once: Annotated[bool, typer.Option(help="plan from what is there, send what is due, then exit")] = False,
    status: Annotated[bool, typer.Option(help="print the status of the notifier using --state, and exit")] = False,
    port: Annotated[Optional[int], typer.Option(help="serve /deliveries and /subscriptions on this port")] = None,
) -> None:
    wiring: Wiring = ctx.obj
    path = state or wiring.settings.notifier_state
    if status:
        report = Path(str(path) + ".status.json")
        if not report.exists():
            typer.echo(f"no status at {report}: has `complaints notifier --state {path}` run?", err=True)
            raise typer.Exit(1)
        typer.echo(report.read_text())
        return
    try:
        runner = wiring.notifier(path, source)
    except RuntimeError as error:  # the state file in use by another copy
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    try:
        if once:
            _once(runner)
            typer.echo(json.dumps(runner.status(), indent=2))
            return
        typer.echo(f"notifier on {runner.source.name}; state {path}")
        if port is not None:
            runner.start_background()
            wiring.serve_notifier(runner, wiring.settings.host, port)
            return
        stop = stop_on_signals("finishing the current step")
        wiring.serve_operations(lambda: None if runner.caught_up.is_set() else "the notifier to catch up")
        runner.run(stop)
    finally:
        runner.stop()
        runner.close()


def _once(runner: Any, patience: float = 60.0) -> None:
    """Plan everything the source holds, then let the dispatcher send what is due now."""
    while runner.step() or not runner.caught_up.is_set() or runner.lag():
        pass
    runner.dispatcher.start_background()
    deadline = time.monotonic() + patience
    try:
        while time.monotonic() < deadline and runner.due_now():
            time.sleep(0.1)
    finally:
        runner.dispatcher.stop()
