"""`complaints subscriptions ...`: where notifications go, from the command line.

The same commands as `POST /subscriptions...`, validated by the same models, acting as
an administrator unless told otherwise. A webhook's secret is printed once, on `create`
and `rotate-secret`: keep it where the receiver can read it.
"""

from typing import Annotated, Optional, Protocol
from uuid import UUID

import typer

from commands.cli import Fields, JsonBody, build, desk, field_help, principal, report
from commands.desk import ComplaintDesk
from commands.endpoints import EndpointRefused, check_url
from commands.models import InvalidCommand
from commands.subscriptions import SUBSCRIPTION_COMMANDS, CreateSubscription, SubscriptionCommand

app = typer.Typer(name="subscriptions", help="Subscriptions: webhooks, e-mail, chat robots and SMS that"
                  " notifications go to (docs/notifications.md).", no_args_is_help=True, pretty_exceptions_enable=False)

Actor = Annotated[str, typer.Option(help="who issues the command (recorded as the events' actor)")]
Roles = Annotated[Optional[list[str]], typer.Option("--role", help="the role(s) it acts under")]
ADMIN = ["admin"]


class Wiring(Protocol):
    def desk(self) -> ComplaintDesk: ...

    @property
    def notify_allow_hosts(self) -> list[str]: ...


def _reachable(ctx: typer.Context, kind: str, endpoint: str | None) -> None:
    if endpoint is None or kind in ("email", "sms"):
        return
    wiring: Wiring = ctx.obj
    try:
        check_url(endpoint, wiring.notify_allow_hosts)
    except EndpointRefused as error:
        raise InvalidCommand("endpoint", str(error)) from None


@app.command(help="Subscribe an endpoint.\n\nFields:\n\n" + field_help(CreateSubscription),
             epilog="Example: complaints subscriptions create name=crm kind=webhook"
             " endpoint=https://crm.example.com/hooks/complaints 'filters.event_types=[\"Registered\"]'")
def create(ctx: typer.Context, fields: Fields = None, json_body: JsonBody = None, actor: Actor = "cli",
           role: Roles = None) -> None:
    def call() -> object:
        command = build(CreateSubscription, fields, json_body)
        _reachable(ctx, command.kind, command.endpoint)
        return desk(ctx).create_subscription(command, principal(actor, role or ADMIN)).model_dump(mode="json")
    report(call)


@app.command(help="Show a subscription (never its secrets).")
def show(ctx: typer.Context, subscription_id: Annotated[UUID, typer.Argument()]) -> None:
    report(lambda: desk(ctx).get_subscription(subscription_id).state())


def _add(path: str, model: type[SubscriptionCommand]) -> None:
    def command(ctx: typer.Context, subscription_id: Annotated[UUID, typer.Argument(help="the subscription's id")],
                fields: Fields = None, json_body: JsonBody = None, actor: Actor = "cli", role: Roles = None) -> None:
        def call() -> object:
            subscriptions = desk(ctx)
            built = build(model, fields, json_body)
            _reachable(ctx, subscriptions.get_subscription(subscription_id).kind, getattr(built, "endpoint", None))
            return subscriptions.act_on_subscription(subscription_id, built, principal(actor, role or ADMIN)
                                                     ).model_dump(mode="json")
        report(call)

    doc = (model.__doc__ or model.__name__).strip().splitlines()[0]
    app.command(name=path, help=f"{doc}\n\nFields:\n\n{field_help(model)}")(command)


for _path, _model in SUBSCRIPTION_COMMANDS.items():
    _add(_path, _model)
