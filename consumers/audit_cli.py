"""`complaints audit ...`: verify the tamper-evident audit trail, print the checkpoints'
public key, run the checkpointer in the foreground.

Mounted into the `complaints` command line by the composition root, which puts a `Wiring`
in the typer context (the settings, the event store, the checkpointer). docs/privacy.md,
"The audit trail", says what is chained, what verify detects, and what it cannot.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional, Protocol
from uuid import UUID

import typer

from consumers.cli import stop_on_signals

log = logging.getLogger("consumers.audit_cli")


class AuditSettings(Protocol):
    store: str
    sqlite_path: Path
    chain_key: Path
    audit_signing_key: Path

    def audit_checkpoints_file(self) -> Path: ...


class Wiring(Protocol):
    settings: AuditSettings
    store: Any  # recorder, mapper
    audit_checkpointer: Any

    def audit_signing_key(self) -> Any: ...

    def serve_operations(self, *checks: Any) -> None: ...


app = typer.Typer(
    name="audit", no_args_is_help=True, pretty_exceptions_enable=False,
    help="The tamper-evident audit trail: every event's chain link, the global chain, signed checkpoints.",
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _signing_seed(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


@app.command(help="Verify the audit trail: recompute every event's chain link and the global chain over the log,"
                  " check them against the signed checkpoints, and name the first broken link.\n\n"
                  "Exit 0: intact. Exit 1: broken (the event and what is wrong are printed). Exit 2: cannot verify"
                  " (no chain key, no store).")
def verify(
    ctx: typer.Context,
    complaint: Annotated[Optional[str], typer.Option(
        "--complaint", help="verify this aggregate's chain only (fast; no checkpoints)")] = None,
    checkpoints: Annotated[Optional[Path], typer.Option(
        "--checkpoints", help="signed checkpoints (JSON lines), e.g. the copy kept elsewhere (default: "
        "COMPLAINTS_AUDIT_CHECKPOINTS, when the file exists)")] = None,
    public_key: Annotated[Optional[list[Path]], typer.Option(
        "--public-key", help="the checkpoints' public key, PEM or hex (repeatable; default: the one of"
        " COMPLAINTS_AUDIT_SIGNING_KEY)")] = None,
    no_checkpoints: Annotated[bool, typer.Option(
        "--no-checkpoints", help="check the chains only, without any checkpoints")] = False,
    progress: Annotated[Optional[bool], typer.Option(
        "--progress/--no-progress", help="a progress bar (default: on a terminal, for long runs)")] = None,
) -> None:
    from consumers.audit_chain import log_rows
    from consumers.audit_chain import verify as verify_trail
    from consumers.checkpoints import CheckpointsDamaged, load_public_key, read_checkpoints, signing_key_from

    wiring: Wiring = ctx.obj
    settings = wiring.settings
    if not settings.chain_key.exists():
        _fail(f"no chain key at {settings.chain_key} (COMPLAINTS_CHAIN_KEY): the links cannot be checked without it")
    key = settings.chain_key.read_bytes()
    if settings.store == "sqlite" and not settings.sqlite_path.exists():
        _fail(f"no event store at {settings.sqlite_path} (COMPLAINTS_SQLITE_PATH)")
    recorder = wiring.store.recorder
    mapper = wiring.store.mapper
    if getattr(mapper, "cipher", None) or getattr(mapper, "compressor", None):
        _fail("this store is enciphered or compressed (CIPHER_TOPIC, COMPRESSOR_TOPIC): verify reads the stored"
              " links as stored, and these hide them")
    started = time.perf_counter()
    if complaint is not None:
        try:
            complaint_id = UUID(complaint)
        except ValueError:
            _fail(f"--complaint {complaint!r} is not a complaint id (a UUID)")
            return
        report = verify_trail(recorder, key, complaint=complaint_id)
        if report.ok and not report.events:
            _fail(f"no events of {complaint_id} in the event store: nothing to verify (a whole aggregate removed"
                  " shows in a whole-log verify with the signed checkpoints)")
        _finish(report, started)
        return
    records: list[Any] = []
    keys: list[Any] = []
    if not no_checkpoints:
        path = checkpoints or settings.audit_checkpoints_file()
        if checkpoints is not None and not checkpoints.exists():
            _fail(f"no checkpoints file at {checkpoints}")
        try:
            records = read_checkpoints(path)
        except CheckpointsDamaged as error:
            _fail(str(error), 1)
        for key_path in public_key or []:
            try:
                keys.append(load_public_key(key_path.read_bytes()))
            except (OSError, ValueError) as error:
                _fail(f"--public-key {key_path}: {error}")
        if records and not keys:
            seed = _signing_seed(settings.audit_signing_key)
            if seed is not None:
                keys.append(signing_key_from(seed).public_key())
                typer.echo(f"checkpoints: {path} ({len(records)}); signatures checked with the public key of"
                           f" {settings.audit_signing_key} (pass --public-key with the one you keep elsewhere)",
                           err=True)
            else:
                typer.echo(f"checkpoints: {path}: no public key (--public-key): their signatures are NOT checked",
                           err=True)
        elif records:
            typer.echo(f"checkpoints: {path} ({len(records)})", err=True)
        elif checkpoints is None:
            typer.echo(f"no checkpoints at {path}: events removed from the log's end are not detectable", err=True)
    total = recorder.max_notification_id() or 0
    show = progress if progress is not None else (total >= 200_000 and sys.stderr.isatty())
    from tqdm import tqdm

    with tqdm(total=total, unit="ev", unit_scale=True, desc="verifying", disable=not show, file=sys.stderr) as bar:
        report = verify_trail(log_rows(recorder, on_batch=bar.update), key, records, keys or None)
    _finish(report, started)


def _finish(report: Any, started: float) -> None:
    seconds = time.perf_counter() - started
    rate = f"; {report.events / seconds:,.0f} events/s" if seconds > 0 and report.events >= 10_000 else ""
    if report.ok:
        typer.echo(report.summary() + f"\n({seconds:.2f}s{rate})")
        return
    typer.echo(report.summary(), err=True)
    raise typer.Exit(1)


@app.command("public-key", help="Print the public key of the checkpoints' signing key (made when missing), for"
                                " operators to keep beside their copy of the checkpoints.")
def public_key(
    ctx: typer.Context,
    as_hex: Annotated[bool, typer.Option("--hex", help="the raw 32 bytes as hex instead of PEM")] = False,
) -> None:
    from consumers.audit_chain import key_id
    from consumers.checkpoints import public_key_text

    wiring: Wiring = ctx.obj
    path = wiring.settings.audit_signing_key
    try:
        key = wiring.audit_signing_key()
    except ValueError as error:
        _fail(str(error))
        return
    if not as_hex:
        typer.echo(f"# key id {key_id(key.public_key())} ({path})")
    typer.echo(public_key_text(key, as_hex=as_hex).rstrip("\n"))


@app.command(help="Run the checkpointer in the foreground until stopped (SIGTERM): follow the log and sign a"
                  " checkpoint every COMPLAINTS_AUDIT_CHECKPOINT_EVERY events (the relay and `complaints run` run"
                  " one in a thread already; one per file, a second one stands by).")
def checkpoints(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="checkpoint what is in the log, then exit")] = False,
    show: Annotated[bool, typer.Option("--show", help="print the last checkpoint on file, and exit")] = False,
) -> None:
    from consumers.checkpoints import read_checkpoints

    wiring: Wiring = ctx.obj
    if show:
        records = read_checkpoints(wiring.settings.audit_checkpoints_file())
        if not records:
            _fail(f"no checkpoints in {wiring.settings.audit_checkpoints_file()}", 1)
        typer.echo(f"{len(records)} checkpoints; the last: {records[-1]}")
        return
    checkpointer = wiring.audit_checkpointer
    stop = stop_on_signals("stopping the checkpointer")
    try:
        if once:
            if not checkpointer.open():
                _fail(f"another checkpointer holds {checkpointer.path}", 1)
            while checkpointer.step():
                pass
            checkpointer.checkpoint_now()
            typer.echo(f"checkpointed up to position {checkpointer.covered_position}"
                       f" ({checkpointer.covered_events} events) in {checkpointer.path}")
            return
        wiring.serve_operations()
        log.info("audit checkpointer running (%s)", checkpointer.path)
        checkpointer.run(stop=stop.is_set)
    finally:
        checkpointer.close()
