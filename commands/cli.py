"""The `complaints` command line: the same commands as the HTTP API, plus operations.

Command fields are given as `field=value` pairs (nested fields with dots, e.g.
`customer.tier=vip`) or as one JSON object with `--json`; they are validated by the same
pydantic models as the HTTP API.
"""

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional
from uuid import UUID

import typer
from pydantic import BaseModel, ValidationError

from aggregates.complaint import DomainError
from commands.desk import ComplaintDesk, ComplaintNotFound, VersionConflict
from commands.models import COMPLAINT_COMMANDS, Command, RegisterComplaint
from commands.settings import get_settings

app = typer.Typer(
    help="Complaint management: commands, the command API and operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Fields = Annotated[
    Optional[list[str]], typer.Argument(help="command fields as field=value (dots for nesting)")
]
JsonBody = Annotated[Optional[str], typer.Option("--json", help="command fields as a JSON object")]
Actor = Annotated[str, typer.Option(help="who issues the command", envvar="COMPLAINTS_ACTOR")]


def parse_fields(pairs: list[str] | None, body: str | None) -> dict[str, Any]:
    """Turn `a.b=value` pairs into a nested dict."""
    data: dict[str, Any] = json.loads(body) if body else {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected field=value, got {pair!r}")
        # Plain text stays text (pydantic turns "4" into 4 where a number is wanted, and a
        # phone number stays a string); JSON objects, lists and literals are parsed.
        value: Any = raw
        if raw[:1] in ("{", "[") or raw in ("true", "false", "null"):
            value = json.loads(raw)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def field_help(model: type[BaseModel]) -> str:
    lines = []
    for name, field in model.model_fields.items():
        required = "required" if field.is_required() else "optional"
        kind = getattr(field.annotation, "__name__", str(field.annotation)).replace("typing.", "")
        about = f": {field.description}" if field.description else ""
        lines.append(f"  {name} ({kind}, {required}){about}")
    return "\n\n".join(lines)


def desk() -> ComplaintDesk:
    return ComplaintDesk.from_settings(get_settings())


def report(call: Any) -> None:
    """Run a command and print its result as JSON; turn domain errors into exit codes."""
    try:
        result = call()
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(p) for p in problem["loc"])
            typer.echo(f"invalid {where}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
    except ComplaintNotFound as error:
        typer.echo(f"not found: {error}", err=True)
        raise typer.Exit(4) from None
    except (DomainError, VersionConflict) as error:
        typer.echo(f"conflict: {error}", err=True)
        raise typer.Exit(9) from None
    typer.echo(json.dumps(result, default=str, indent=2))


def build(model: type[Command], actor: str, fields: list[str] | None, body: str | None) -> Any:
    return model.model_validate({"actor": actor, **parse_fields(fields, body)})


@app.command(
    help="Register a complaint.\n\nFields:\n\n" + field_help(RegisterComplaint),
    epilog="Example: complaints register channel=web customer.id=C1 customer_personal.name=Li"
    " customer_personal.contact=li@example.com title='Broken' description='It broke'",
)
def register(fields: Fields = None, json_body: JsonBody = None, actor: Actor = "cli") -> None:
    report(lambda: desk().register(build(RegisterComplaint, actor, fields, json_body)).model_dump(mode="json"))


def _add_command(path: str, model: type[Command]) -> None:
    def command(
        complaint_id: Annotated[UUID, typer.Argument(help="the complaint's id")],
        fields: Fields = None,
        json_body: JsonBody = None,
        actor: Actor = "cli",
    ) -> None:
        report(
            lambda: desk()
            .execute(complaint_id, build(model, actor, fields, json_body))
            .model_dump(mode="json")
        )

    doc = (model.__doc__ or model.__name__).strip().splitlines()[0]
    app.command(name=path, help=f"{doc}\n\nFields:\n\n{field_help(model)}")(command)


for _path, _model in COMPLAINT_COMMANDS.items():
    _add_command(_path, _model)


@app.command(help="Show a complaint as it stands, or as it was at --version.")
def show(
    complaint_id: Annotated[UUID, typer.Argument(help="the complaint's id")],
    version: Annotated[Optional[int], typer.Option(help="a past version")] = None,
) -> None:
    report(lambda: desk().get_complaint(complaint_id, version).state())


Host = Annotated[Optional[str], typer.Option(help="address to listen on")]
Port = Annotated[Optional[int], typer.Option(help="port to listen on")]


def _serve(desk_app: ComplaintDesk, host: str | None, port: int | None) -> None:
    import uvicorn

    from commands.api import create_app

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    typer.echo(f"command API on http://{host}:{port}  (OpenAPI: http://{host}:{port}/docs)")
    uvicorn.run(create_app(settings, desk_app), host=host, port=port, log_level="warning")


@app.command(help="Serve the command API over HTTP (OpenAPI at /docs and /openapi.json).")
def serve(host: Host = None, port: Port = None) -> None:
    _logging()
    _serve(desk(), host, port)


@app.command(help="Send a realistic demo workload through the commands.")
def demo(
    count: Annotated[int, typer.Option(help="how many complaints")] = 500,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same workload)")] = 7,
) -> None:
    from commands.demo import load_demo

    sent = load_demo(desk(), count, seed=seed)
    typer.echo(f"sent {sent} demo commands")


@app.command(
    help="Run everything on the embedded default: the command API, an in-process read node"
    " (SLA, workload and trend read models), the read API and dashboards, with demo data"
    " when the event store is empty."
)
def run(
    host: Host = None,
    port: Port = None,
    demo_count: Annotated[int, typer.Option(help="demo complaints for an empty store; 0 = none")] = 500,
    read_db: Annotated[Optional[Path], typer.Option(help="the read node's DuckDB file")] = None,
) -> None:
    import threading

    import uvicorn

    from commands.api import create_app
    from commands.demo import load_demo
    from consumers.runner import embedded_read_node
    from consumers.settings import get_bus_settings
    from projections.models import make
    from read_api.app import read_router
    from read_api.page import page_router

    _logging()
    settings = get_settings()
    desk_app = desk()
    node = embedded_read_node(desk_app, read_db or get_bus_settings().read_db, make(policy=desk_app.sla_policy))
    node.open()
    node.start_background()
    api = create_app(settings, desk_app)
    api.include_router(read_router(lambda: node))
    api.include_router(page_router())
    if demo_count and not desk_app.recorder.max_notification_id():
        # Load in the background: the dashboards fill up live while the user watches.
        typer.echo(f"empty event store: loading {demo_count} demo complaints")
        threading.Thread(target=load_demo, args=(desk_app, demo_count), kwargs={"progress": False},
                         daemon=True, name="demo").start()
    host, port = host or settings.host, port or settings.port
    typer.echo(f"dashboard:   http://{host}:{port}/dashboard")
    typer.echo(f"API docs:    http://{host}:{port}/docs")
    try:
        uvicorn.run(api, host=host, port=port, log_level="warning")
    finally:
        node.stop()
        node.close()


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("commands.desk").setLevel(logging.WARNING)


from consumers.cli import app as consumers_app  # noqa: E402  (relay, read-node, positions, replay)
app.add_typer(consumers_app)
from projections.cli import app as projections_app  # noqa: E402  (read-models, import-cfpb)
app.add_typer(projections_app)

if __name__ == "__main__":
    app()
