"""`wip-mailer suppressions ...`: see who is never mailed, and lift a suppression."""

from __future__ import annotations

import click

from wip_mailer import db
from wip_mailer.audience import suppression
from wip_mailer.cli.common import App, echo_json, json_option, pass_app


@click.group("suppressions")
def suppressions_group() -> None:
    """The suppression list: addresses never mailed again (bounced, complained, erased...).

    Example: wip-mailer suppressions list --reason bounced
    """


@suppressions_group.command("list")
@click.option("--reason", default=None,
              help="Only this reason (bounced, complained, erased, blocklisted...).")
@json_option
@pass_app
def suppressions_list(app: App, reason: str | None, as_json: bool) -> None:
    """Show the suppressions, oldest first (an erased address shows only as its hash).

    Example: wip-mailer suppressions list --reason bounced --json
    """
    with db.session_scope(app.engine) as session:
        entries = list(suppression.list_suppressions(session, reason))
    if as_json:
        echo_json(entries)
        return
    if not entries:
        click.echo("No suppressions." if reason is None else f"No suppressions for the reason {reason}.")
    for entry in entries:
        who = entry["email"] or f"(address not held; hash {entry['email_hash'][:12]}…)"
        detail = f" — {entry['detail']}" if entry["detail"] else ""
        click.echo(f"{who}\t{entry['reason']}\t{entry['created_at']:%Y-%m-%d}{detail}")


@suppressions_group.command("remove")
@click.argument("email")
@click.option("--reason", "why", required=True, help="Why it is lifted, for the record.")
@pass_app
def suppressions_remove(app: App, email: str, why: str) -> None:
    """Lift a suppression (recorded as an event in the person's history).

    Example: wip-mailer suppressions remove anna@example.org --reason "the bounce was a full mailbox"
    """
    with db.session_scope(app.engine) as session:
        was = suppression.lift_suppression(session, email, why)
    click.echo(f"Lifted the suppression of {email.strip()} (it was {was}).")
