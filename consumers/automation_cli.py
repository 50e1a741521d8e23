"""`complaints automation` (the rules, running) and `complaints rules check | backtest`.

Mounted into the `complaints` command line by the composition root, which puts a
`Wiring` in the typer context (its rules, its SLA policy, an automation, the store).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional, Protocol

import typer

from consumers.cli import stop_on_signals

log = logging.getLogger("consumers.automation_cli")


class Wiring(Protocol):
    settings: Any
    store: Any  # recorder, mapper
    sla_policy: Any
    rules: Any

    def automation(self, state: Path | None = None, source: str | None = None, desk: Any = None,
                   **options: Any) -> Any: ...

    def serve_operations(self, *checks: Any) -> None: ...


app = typer.Typer(pretty_exceptions_enable=False)
rules_app = typer.Typer(help="The automation's rules: check a rules file, backtest it on the history.",
                        no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(rules_app, name="rules")

StateOption = Annotated[Optional[Path], typer.Option("--state", help="the automation's state file (default: COMPLAINTS_AUTOMATION_STATE)")]
RulesOption = Annotated[Optional[Path], typer.Option("--rules", help="a rules TOML file (default: COMPLAINTS_RULES, else the packaged one)")]


def _rules(wiring: Wiring, path: Path | None) -> Any:
    from aggregates.rules import RulesError, load_rules

    try:
        return load_rules(path) if path is not None else wiring.rules
    except RulesError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


@app.command(help="Run the automation until stopped (SIGTERM): follow the stream, and assign, triage, remind,"
                  " escalate and raise alerts by the rules, through the desk, each action exactly once.\n\n"
                  "Status (lag, timer lateness, actions per rule): --status, or <state>.status.json.")
def automation(
    ctx: typer.Context,
    state: StateOption = None,
    source: Annotated[Optional[str], typer.Option(help="kafka, log or auto (default: COMPLAINTS_SOURCE)")] = None,
    once: Annotated[bool, typer.Option(help="follow what is there and act on what is due, then exit")] = False,
    status: Annotated[bool, typer.Option(help="print the status of the automation using --state, and exit")] = False,
) -> None:
    wiring: Wiring = ctx.obj
    path = state or wiring.settings.automation_state
    if status:
        report = Path(str(path) + ".status.json")
        if not report.exists():
            typer.echo(f"no status at {report}: has `complaints automation --state {path}` run?", err=True)
            raise typer.Exit(1)
        typer.echo(report.read_text())
        return
    _rules(wiring, None)
    try:
        runner = wiring.automation(path, source)
    except RuntimeError as error:  # the state file in use by another copy
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    try:
        if once:
            while runner.step() or not runner.caught_up.is_set() or runner.lag():
                pass
            typer.echo(json.dumps(runner.status(), indent=2))
            return
        stop = stop_on_signals("finishing the current step")
        wiring.serve_operations(lambda: None if runner.caught_up.is_set() else "the automation to catch up")
        typer.echo(f"automation (rules {runner.rules.version}) on {runner.source.name}; state {path}")
        runner.run(stop)
    finally:
        runner.close()


@rules_app.command("check", help="Validate a rules file; exit 2 naming the bad key.")
def check(ctx: typer.Context, rules: RulesOption = None) -> None:
    loaded = _rules(ctx.obj, rules)
    typer.echo(f"rules {loaded.version}: {len(loaded.assignment)} assignment rules, {len(loaded.roster)} agents,"
               f" {len(loaded.ladder.rungs)} rungs; alerts: "
               + ", ".join(name for name, rule in loaded.alerts if rule.enabled))


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{name}: {value!r} is not an ISO date or datetime (e.g. 2026-11-01)") from None
    if at.tzinfo is None:
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo("UTC"))
    return at


@rules_app.command("backtest", help="Replay the history through a rules file without issuing anything:"
                   " what would have fired in [--from, --to), and how it compares with what was done.")
def backtest(
    ctx: typer.Context,
    start: Annotated[Optional[str], typer.Option("--from", help="ISO date or datetime (UTC unless it says)")] = None,
    end: Annotated[Optional[str], typer.Option("--to", help="ISO date or datetime, exclusive")] = None,
    rules: RulesOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
) -> None:
    from tqdm import tqdm

    from consumers.backtest import backtest as run_backtest

    wiring: Wiring = ctx.obj
    loaded = _rules(wiring, rules)
    begin, finish = _when(start, "--from"), _when(end, "--to")
    store = wiring.store
    total = store.recorder.max_notification_id() or 0
    report = run_backtest(tqdm(_history(store), total=total, unit="event",
                               desc="backtest", disable=as_json, leave=False),
                          loaded, wiring.sla_policy, begin, finish)
    typer.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.text())


def _history(store: Any) -> Any:
    """The store's published events as envelopes, in log order."""
    from aggregates.envelope import parse
    from consumers.rebuild import envelope_pages

    for _, page in envelope_pages(store):
        for raw in page["envelope"].to_pylist():
            yield parse(raw)
