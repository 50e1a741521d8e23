"""The command verbs of the `complaints` command line: the same commands as the HTTP API.

Command fields are given as `field=value` pairs (nested fields with dots, e.g.
`customer.tier=vip`) or as one JSON object with `--json`; they are validated by the same
pydantic models as the HTTP API.
"""

import json
from pathlib import Path
from typing import Annotated, Any, Optional, Protocol
from uuid import UUID

import typer
from pydantic import BaseModel, ValidationError

from aggregates.access import ROLES, AccessDenied, Principal
from aggregates.complaint import DomainError
from commands.personal_data import UnknownCustomer
from commands.desk import AlertNotFound, ComplaintDesk, ComplaintNotFound, SubscriptionNotFound, VersionConflict
from commands.models import COMPLAINT_COMMANDS, Command, InvalidCommand, RegisterComplaint

# Mounted by the composition root (`complaints.cli`), which puts a `Wiring` in the context.
app = typer.Typer(pretty_exceptions_enable=False)

Fields = Annotated[
    Optional[list[str]], typer.Argument(help="command fields as field=value (dots for nesting)")
]
JsonBody = Annotated[Optional[str], typer.Option("--json", help="command fields as a JSON object")]
Actor = Annotated[str, typer.Option(help="who issues the command (recorded as the events' actor)")]
Roles = Annotated[Optional[list[str]], typer.Option(
    "--role", help="the role(s) it acts under (docs/security.md); importer to state occurred_at")]
# The command line reaches the event store directly: whoever runs it is an operator, and
# acts as a department head unless told otherwise.
DEFAULT_ROLES = ["department_head"]


def principal(actor: str, roles: list[str] | None) -> Principal:
    unknown = set(roles or []) - set(ROLES)
    if unknown:
        raise typer.BadParameter(f"unknown role(s) {', '.join(sorted(unknown))}: the roles are {', '.join(ROLES)}")
    return Principal(actor, actor, frozenset(roles or DEFAULT_ROLES))


def parse_fields(pairs: list[str] | None, body: str | None) -> dict[str, Any]:
    """Turn `a.b=value` pairs into a nested dict."""
    data: dict[str, Any] = json.loads(body) if body else {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected field=value, got {pair!r}")
        # Plain text stays text (`build` turns "4" into 4 where the command wants a number,
        # and a phone number stays a string); JSON objects, lists and literals are parsed.
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


class Wiring(Protocol):
    """What these commands need from the composition root (the context's `obj`)."""

    def desk(self) -> ComplaintDesk: ...


def desk(ctx: typer.Context) -> ComplaintDesk:
    wiring: Wiring = ctx.obj
    return wiring.desk()


def report(call: Any) -> None:
    """Run a command and print its result as JSON; turn domain errors into exit codes."""
    try:
        result = call()
    except ValidationError as error:
        for problem in error.errors():
            where = ".".join(str(p) for p in problem["loc"])
            typer.echo(f"invalid {where}: {problem['msg']}", err=True)
        raise typer.Exit(2) from None
    except InvalidCommand as error:
        typer.echo(f"invalid {error}", err=True)
        raise typer.Exit(2) from None
    except AccessDenied as error:
        typer.echo(f"forbidden: {error}", err=True)
        raise typer.Exit(3) from None
    except (ComplaintNotFound, AlertNotFound, SubscriptionNotFound, UnknownCustomer) as error:
        typer.echo(f"not found: {error}", err=True)
        raise typer.Exit(4) from None
    except (DomainError, VersionConflict) as error:
        typer.echo(f"conflict: {error}", err=True)
        raise typer.Exit(9) from None
    typer.echo(json.dumps(result, default=str, indent=2))


def build(model: type[Command], fields: list[str] | None, body: str | None) -> Any:
    data = parse_fields(fields, body)
    # The models take numbers strictly (JSON's 4, not "4"): field=value text is a number
    # where the command wants one. A --json body is JSON, and taken as it is.
    given = {pair.partition("=")[0] for pair in fields or []}
    for name in given & set(data):
        if isinstance(data[name], str) and (kinds := _number_kinds(model, name)):
            try:
                data[name] = int(data[name]) if "integer" in kinds else float(data[name])
            except ValueError:
                pass  # not a number: the model says so
    return model.model_validate(data)


def _number_kinds(model: type[BaseModel], name: str) -> set[str]:
    """"integer" and/or "number" if the command's field takes one (from its JSON schema)."""
    schema = model.model_json_schema()["properties"].get(name, {})
    return {option.get("type") for option in (schema, *schema.get("anyOf", []))} & {"integer", "number"}


@app.command(
    help="Register a complaint.\n\nFields:\n\n" + field_help(RegisterComplaint),
    epilog="Example: complaints register channel=web customer.id=C1 customer_personal.name=Li"
    " customer_personal.contact=li@example.com title='Broken' description='It broke'",
)
def register(ctx: typer.Context, fields: Fields = None, json_body: JsonBody = None, actor: Actor = "cli",
             role: Roles = None) -> None:
    report(lambda: desk(ctx).register(build(RegisterComplaint, fields, json_body), principal(actor, role))
           .model_dump(mode="json"))


def _add_command(path: str, model: type[Command]) -> None:
    def command(
        ctx: typer.Context,
        complaint_id: Annotated[UUID, typer.Argument(help="the complaint's id")],
        fields: Fields = None,
        json_body: JsonBody = None,
        actor: Actor = "cli",
        role: Roles = None,
    ) -> None:
        report(
            lambda: desk(ctx)
            .execute(complaint_id, build(model, fields, json_body), principal(actor, role))
            .model_dump(mode="json")
        )

    doc = (model.__doc__ or model.__name__).strip().splitlines()[0]
    app.command(name=path, help=f"{doc}\n\nFields:\n\n{field_help(model)}")(command)


for _path, _model in COMPLAINT_COMMANDS.items():
    _add_command(_path, _model)


@app.command(help="Show a complaint as it stands, or as it was at --version.")
def show(
    ctx: typer.Context,
    complaint_id: Annotated[UUID, typer.Argument(help="the complaint's id")],
    version: Annotated[Optional[int], typer.Option(help="a past version")] = None,
) -> None:
    report(lambda: desk(ctx).get_complaint(complaint_id, version).state())


@app.command(help="Send a realistic demo workload through the commands.")
def demo(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(help="how many complaints")] = 500,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same workload)")] = 7,
) -> None:
    from commands.demo import load_demo

    sent = load_demo(desk(ctx), count, seed=seed)
    typer.echo(f"sent {sent} demo commands")


@app.command(
    "import-cfpb",
    help="Load a CFPB-format complaints CSV (US Consumer Financial Protection Bureau, Consumer "
    "Complaint Database) as a stream of commands: register (Date received), triage (Issue), "
    "assign (Company, Date sent to company), resolve and close (Company response; 'In progress' "
    "stays open). Command ids derive from the Complaint ID, so importing again changes nothing "
    "but what is new. Mapping and the 15-day SLA: docs/read-models.md.",
)
def import_cfpb(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="a CFPB CSV (the 18 standard columns)", exists=True, dir_okay=False)],
    limit: Annotated[Optional[int], typer.Option(help="import only the first N rows")] = None,
    chunk: Annotated[int, typer.Option(help="new complaints saved per transaction")] = 500,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    from commands.cfpb import import_cfpb as run_import

    the_desk = desk(ctx)
    try:
        report = run_import(the_desk, file, chunk=chunk, limit=limit, progress=progress)
    finally:
        the_desk.close()
    typer.echo(report.summary())


