"""`complaints personal-data ...`: erasing a customer, rotating the master key.

`erase` is the same command as `POST /customers/{id}/erasure`, acting as an administrator
unless told otherwise; `rotate` re-wraps every customer's data key under the configured
master key (the old one given as COMPLAINTS_RETIRED_MASTER_KEYS), touching no event.
"""

from typing import Annotated, Optional

import typer

from commands.cli import desk, principal, report
from commands.models import EraseCustomer

app = typer.Typer(name="personal-data", help="Customers' personal data: erasure (crypto-shredding) and the master"
                  " key (docs/privacy.md).", no_args_is_help=True, pretty_exceptions_enable=False)

Actor = Annotated[str, typer.Option(help="who erases (recorded as the events' actor)")]
Roles = Annotated[Optional[list[str]], typer.Option("--role", help="the role(s) it acts under")]


@app.command(help="Erase a customer's personal data: destroy their keys and record a PersonalDataErased event on"
             " each of their complaints. Idempotent. Exit 4 when no complaint of theirs is on record.",
             epilog="Example: complaints personal-data erase C-00042 --legal-basis 'PIPL Art. 47: request'")
def erase(ctx: typer.Context, customer_id: Annotated[str, typer.Argument(help="the customer's id (CRM)")],
          legal_basis: Annotated[str, typer.Option(help="why the data may be erased (recorded on each complaint)")],
          actor: Actor = "cli", role: Roles = None) -> None:
    report(lambda: desk(ctx).erase_customer(customer_id, EraseCustomer(legal_basis=legal_basis),
                                            principal(actor, role or ["admin"])).model_dump(mode="json"))


@app.command(help="Re-wrap every live data key under the configured master key (COMPLAINTS_MASTER_KEY), opening"
             " them with the retired ones (COMPLAINTS_RETIRED_MASTER_KEYS). No event is rewritten.")
def rotate(ctx: typer.Context) -> None:
    keyring = desk(ctx).keyring
    if keyring is None:
        raise typer.BadParameter("personal data is not sealed here (COMPLAINTS_SEAL_PERSONAL_DATA=false)")
    count = keyring.rotate()
    typer.echo(f"re-wrapped {count} data keys under master key {keyring.master.key_id}")
