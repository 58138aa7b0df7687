"""List commands: `wip-mailer lists ...`."""

from __future__ import annotations

from pathlib import Path

import click

from wip_mailer import db, overview
from wip_mailer.cli.common import App, confirm_or_abort, echo_json, json_option, pass_app

DEFAULT_LISTS_FILE = Path("subscribers/lists.toml")
# The commands that write import audience.lists (and with it the ORM) where they run:
# `lists list` and `lists show` read with overview and start without it.


@click.group("lists")
def lists_group() -> None:
    """Mailing lists: create, show, rename, delete, or sync from subscribers/lists.toml.

    Example: wip-mailer lists sync
    """


@lists_group.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the list is for.")
@click.option("--language", default="it", show_default=True, help="Two-letter language of the list.")
@click.option("--double-opt-in/--no-double-opt-in", default=True, show_default=True,
              help="New members confirm by email before they receive anything.")
@click.option("--public", is_flag=True, help="Offer the list on the subscribe form and preferences page.")
@pass_app
def lists_create(app: App, name: str, description: str, language: str, double_opt_in: bool,
                 public: bool) -> None:
    """Create a list.

    Example: wip-mailer lists create stampa --description "Giornalisti" --language it
    """
    from wip_mailer.audience import lists

    with db.session_scope(app.engine) as session:
        lists.create_list(session, name, description=description, language=language,
                          double_opt_in=double_opt_in, public=public)
    click.echo(f"Created the list {name}.")


@lists_group.command("list")
@json_option
@pass_app
def lists_list(app: App, as_json: bool) -> None:
    """Show every list with its member counts.

    Example: wip-mailer lists list --json
    """
    with app.engine.connect() as connection:
        summaries = overview.list_summaries(connection)
    if as_json:
        echo_json(summaries)
        return
    if not summaries:
        click.echo("No lists yet: run `wip-mailer lists sync` or `wip-mailer lists create NAME`.")
    for item in summaries:
        members = item["members"]
        flags = ", ".join(f for f, on in (("double opt-in", item["double_opt_in"]),
                                          ("public", item["public"])) if on)
        click.echo(f"{item['name']} ({item['language']}{', ' + flags if flags else ''}): "
                   f"{members['active']} active, {members['pending']} pending, "
                   f"{members['unsubscribed']} unsubscribed")


@lists_group.command("show")
@click.argument("name")
@json_option
@pass_app
def lists_show(app: App, name: str, as_json: bool) -> None:
    """Show one list.

    Example: wip-mailer lists show stampa --json
    """
    with app.engine.connect() as connection:
        info = overview.list_summary(connection, name)
    if as_json:
        echo_json(info)
        return
    for key, value in info.items():
        shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        click.echo(f"{key}: {shown}")


@lists_group.command("rename")
@click.argument("old")
@click.argument("new")
@pass_app
def lists_rename(app: App, old: str, new: str) -> None:
    """Rename a list (its members stay).

    Example: wip-mailer lists rename stampa press
    """
    from wip_mailer.audience import lists

    with db.session_scope(app.engine) as session:
        lists.rename_list(session, old, new)
    click.echo(f"Renamed the list {old} to {new}.")


@lists_group.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def lists_delete(app: App, name: str, yes: bool) -> None:
    """Delete a list and its memberships (subscribers and consent records stay).

    Example: wip-mailer lists delete prova --yes
    """
    from wip_mailer.audience import lists

    confirm_or_abort(f"Delete the list {name} and all its memberships?", yes)
    with db.session_scope(app.engine) as session:
        removed = lists.delete_list(session, name)
    click.echo(f"Deleted the list {name} ({removed} memberships removed).")


@lists_group.command("sync")
@click.argument("path", type=click.Path(path_type=Path), default=DEFAULT_LISTS_FILE)
@pass_app
def lists_sync(app: App, path: Path) -> None:
    """Create and update lists as a TOML file declares them (lists not in it are kept).

    Example: wip-mailer lists sync subscribers/lists.toml
    """
    from wip_mailer.audience import lists

    with db.session_scope(app.engine) as session:
        report = lists.sync_lists(session, path)
    for label, names in (("Created", report.created), ("Updated", report.updated),
                         ("Unchanged", report.unchanged), ("Not in the file (kept)", report.not_in_file)):
        if names:
            click.echo(f"{label}: {', '.join(names)}")


# `lists report` lives with the other report commands (reports are the last stage).
from wip_mailer.cli.reports import lists_report  # noqa: E402

lists_group.add_command(lists_report)
