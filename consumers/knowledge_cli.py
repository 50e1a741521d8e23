"""`complaints knowledge-drafter`: draft knowledge articles from well-rated solutions until stopped.

Mounted into the `complaints` command line by the composition root, which puts a
`Wiring` in the typer context (it makes the drafter: its source, its desk, its state).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional, Protocol

import typer

from consumers.cli import stop_on_signals


class Wiring(Protocol):
    def knowledge_drafter(self, state: Path | None = None, source: str | None = None, desk: Any = None,
                          **options: Any) -> Any: ...

    def serve_operations(self, *checks: Any) -> None: ...


app = typer.Typer(pretty_exceptions_enable=False)


@app.command("knowledge-drafter",
             help="Run the knowledge drafter until stopped (SIGTERM): follow the stream and draft a knowledge"
                  " article from every complaint verified with CSAT 4 or 5, through the desk, each exactly once."
                  "\n\nStatus (lag, drafts by outcome): --status, or <state>.status.json.")
def knowledge_drafter(
    ctx: typer.Context,
    state: Annotated[Optional[Path], typer.Option("--state", help="the drafter's state file (default: beside"
                                                  " the automation's, knowledge-drafter.sqlite)")] = None,
    source: Annotated[Optional[str], typer.Option(help="kafka, log or auto (default: COMPLAINTS_SOURCE)")] = None,
    once: Annotated[bool, typer.Option(help="draft from what is there, then exit")] = False,
) -> None:
    wiring: Wiring = ctx.obj
    try:
        drafter = wiring.knowledge_drafter(state, source)
    except RuntimeError as error:  # the state file in use by another copy
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    try:
        if once:
            while drafter.step() or not drafter.caught_up.is_set():
                pass
            typer.echo(json.dumps(drafter.status(), indent=2))
            return
        stop = stop_on_signals("finishing the current step")
        wiring.serve_operations(lambda: None if drafter.caught_up.is_set() else "the knowledge drafter to catch up")
        typer.echo(f"knowledge drafter on {drafter.source.name}; state {drafter.state.path}")
        drafter.run(stop)
    finally:
        drafter.close()
