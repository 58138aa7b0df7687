"""Subscriber commands: `wip-mailer subscribers ...`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from wip_mailer import db
from wip_mailer.audience import csv_import, subscribers
from wip_mailer.audience.formats import FORMAT_NAMES
from wip_mailer.cli.common import App, confirm_or_abort, echo_json, json_default, json_option, pass_app
from wip_mailer.errors import InvalidInputError

# --- subscribers ---------------------------------------------------------------------------

@click.group("subscribers")
def subscribers_group() -> None:
    """Subscribers: add, remove, show, list, import, export; GDPR access and erasure.

    Example: wip-mailer subscribers import contacts.csv --list stampa
    """


def _attributes(values: tuple[str, ...]) -> dict[str, str] | None:
    attributes = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--attr {value!r} must be KEY=VALUE, e.g. --attr sector=culture.")
        attributes[key.strip()] = text.strip()
    return attributes or None


@subscribers_group.command("add")
@click.argument("email")
@click.option("--list", "list_names", multiple=True, required=True, help="List to join (repeatable).")
@click.option("--name", default=None, help="Full name.")
@click.option("--language", default=None, help="Two-letter language code (default: the list's).")
@click.option("--organisation", default=None, help="Organisation.")
@click.option("--country", default=None, help="Two-letter country code, e.g. FR.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--attr", "attrs", multiple=True, help="A free attribute KEY=VALUE (repeatable).")
@click.option("--confirmed", is_flag=True,
              help="You hold proof of consent: activate at once, even on double opt-in lists.")
@click.option("--source", default="cli", show_default=True, help="How consent was given, for the record.")
@pass_app
def subscribers_add(app: App, email: str, list_names: tuple[str, ...], name: str | None,
                    language: str | None, organisation: str | None, country: str | None,
                    tags: tuple[str, ...], attrs: tuple[str, ...], confirmed: bool, source: str) -> None:
    """Add a subscriber to lists; on a double opt-in list a confirmation email is sent.

    Example: wip-mailer subscribers add anna@example.org --list stampa --name "Anna Rossi"
    """
    profile = subscribers.Profile(name=name, language=language, organisation=organisation, country=country,
                                  tags=list(tags) if tags else None, attributes=_attributes(attrs))
    result = subscribers.add_subscriber(app.engine, app.settings, email, list_names, profile=profile,
                                        confirmed=confirmed, source=source)
    for list_name, outcome in result.outcomes.items():
        click.echo(f"{result.email} on {list_name}: {outcome}")
    if result.confirmations_sent:
        click.echo(f"Sent {result.confirmations_sent} confirmation email(s).")


@subscribers_group.command("remove")
@click.argument("email")
@click.option("--list", "list_name", default=None, help="Leave only this list (default: every list).")
@click.option("--source", default="cli", show_default=True, help="How the request came, for the record.")
@pass_app
def subscribers_remove(app: App, email: str, list_name: str | None, source: str) -> None:
    """Unsubscribe someone on their behalf (history is kept; see `erase` to delete data).

    Example: wip-mailer subscribers remove anna@example.org --list stampa
    """
    with db.session_scope(app.engine) as session:
        changed = subscribers.remove_subscriber(session, email, list_name, source=source)
    where = f"from {list_name}" if list_name else "from every list"
    click.echo(f"Unsubscribed {email} {where}." if changed else f"{email} was already unsubscribed {where}.")


@subscribers_group.command("show")
@click.argument("email")
@json_option
@pass_app
def subscribers_show(app: App, email: str, as_json: bool) -> None:
    """Show a subscriber, their status and memberships.

    Example: wip-mailer subscribers show anna@example.org --json
    """
    with db.session_scope(app.engine) as session:
        info = subscribers.show_subscriber(session, email)
    if as_json:
        echo_json(info)
        return
    for key, value in info.items():
        if key == "memberships":
            for m in value:
                since = m["subscribed_at"].astimezone(app.settings.tz)
                click.echo(f"list {m['list']}: {m['status']} (since {since:%Y-%m-%d})")
        elif key == "history":
            for e in value:
                click.echo(f"{e['at']:%Y-%m-%d %H:%M} {e['kind']}{' ' + e['list'] if e['list'] else ''}"
                           f" ({e['source']})")
        elif key == "bounces":
            for b in value:
                click.echo(f"{b['at']:%Y-%m-%d %H:%M} {b['kind']} bounce {b['status']} ({b['source']})")
        elif value not in (None, "", [], {}):
            click.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


@subscribers_group.command("list")
@click.option("--list", "list_name", default=None, help="Only members of this list.")
@click.option("--status", default=None, help="Only this status (active, pending, unsubscribed, ...).")
@click.option("--segment", default=None, help='A segment filter, e.g. "language=en and tag=press".')
@json_option
@pass_app
def subscribers_list(app: App, list_name: str | None, status: str | None, segment: str | None,
                     as_json: bool) -> None:
    """List subscribers (streamed, one per line; JSON Lines with --json).

    Example: wip-mailer subscribers list --list stampa --segment "country in (FR, DE)"
    """
    with db.session_scope(app.engine) as session:
        for row in subscribers.iter_subscribers(session, list_name=list_name, status=status, segment=segment):
            if as_json:
                click.echo(json.dumps(row, ensure_ascii=False, default=json_default))
            else:
                click.echo(f"{row['email']}\t{row['status']}\t{row['name']}")


@subscribers_group.command("import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--list", "list_name", required=True, help="The list the rows join.")
@click.option("--format", "format_name", type=click.Choice(FORMAT_NAMES), default=None,
              help="The tool that wrote the file (default: recognised from its header row).")
@click.option("--rejects", "rejects_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write rejected rows (default: FILE.rejects.csv beside the file).")
@click.option("--changes", "changes_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write every corrected address (line, before, after) to this CSV file.")
@click.option("--source", default=None,
              help="How consent was collected (default: import:FILE, or import:FORMAT for an export).")
@click.option("--double-opt-in", is_flag=True, help="Make rows pending and email each a confirmation link.")
@click.option("--dry-run", is_flag=True,
              help="Read and check the whole file, say what would change, write nothing.")
@pass_app
def subscribers_import(app: App, path: Path, list_name: str, format_name: str | None,
                       rejects_path: Path | None, changes_path: Path | None, source: str | None,
                       double_opt_in: bool, dry_run: bool) -> None:
    """Import subscribers from a CSV file or another tool's export; bad rows are reported, not fatal.

    Columns: email (required), name, language, organisation, country, tags, attr.NAME;
    English and Italian spellings (E-mail, Nome, Lingua, Paese...) are accepted. UTF-8,
    UTF-16 and Excel's Windows-1252 "CSV" are read; see subscribers/README.md. Exports of
    Mailchimp (the audience ZIP too), listmonk, Keila, Substack, beehiiv, Curated and
    Mailman 3 are recognised: their other columns become attributes, and people who left
    or bounced there are kept on record, never mailed.

    Example: wip-mailer subscribers import contatti.csv --list stampa --rejects scarti.csv
    """
    console = Console(stderr=True)
    with Progress(TextColumn("Importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("import", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = csv_import.import_csv(app.engine, app.settings, path, list_name,
                                       double_opt_in=double_opt_in, source=source, rejects_path=rejects_path,
                                       changes_path=changes_path, format=format_name, dry_run=dry_run,
                                       progress=progress)
    _print_import(path, list_name, report, dry_run)


def _print_import(path: Path, list_name: str, report: csv_import.ImportReport, dry_run: bool) -> None:
    parts = report.parts or [report]
    if report.format != FORMAT_NAMES[-1] or dry_run:
        click.echo(f"{path}: read as a {report.format_label} export"
                   f"{f' ({len(parts)} files)' if len(parts) > 1 else ''}.", err=True)
    if dry_run:
        for raw, becomes in report.mapping:
            click.echo(f"  column {raw!r} -> {becomes}", err=True)
    for part in parts:
        if part.encoding == "Windows-1252":
            click.echo(f"{part.path} is not UTF-8: read it as Windows-1252 (Excel's \"CSV\" on Windows); "
                       "check that accented names look right with `subscribers list`.", err=True)
        if not part.has_header and part.format == FORMAT_NAMES[-1]:
            click.echo(f"{part.path} has no header line: its single column was read as email addresses.",
                       err=True)
        for rejection in part.rejected:
            click.echo(f"{part.path}:{rejection.line}: {rejection.reason}", err=True)
        if report.changes_path is None:
            for c in part.corrections:
                click.echo(f"{part.path}:{c.line}: corrected {c.before!r} to {c.after} ({c.what})", err=True)
    if report.changes_path is not None and report.corrections:
        click.echo(f"{len(report.corrections)} corrected addresses written to {report.changes_path}.",
                   err=True)
    rows = f"{report.rows} row{'' if report.rows == 1 else 's'}"
    kept_out = f", {report.kept_out} kept out" if report.kept_out else ""
    would = "Dry run, nothing written: " if dry_run else ""
    click.echo(f"{would}{rows}: {report.added} added, {report.reactivated} activated, "
               f"{report.updated} updated, {report.unchanged} unchanged{kept_out}, "
               f"{len(report.rejected)} rejected.")
    if report.kept_out:
        click.echo(f"Kept out: {report.kept_out} people who left, bounced or were blocked are on record "
                   f"and will never be sent anything.")
    if report.confirmed_by_source:
        click.echo(f"{list_name} is a double opt-in list: the {report.added} added rows "
                   f"{'would become' if dry_run else 'became'} active without a confirmation email, on the "
                   f"authority of the consent source {report.source!r}; pass --double-opt-in to have each "
                   "one confirm.", err=True)
    if report.rejects_path:
        click.echo(f"Rejected rows written to {report.rejects_path}.")
    for part in report.parts:
        if part.rejects_path:
            click.echo(f"Rejected rows of {part.path.name} written to {part.rejects_path}.")
    if report.confirmations_sent:
        click.echo(f"Sent {report.confirmations_sent} confirmation email(s).")


@subscribers_group.command("export")
@click.option("--list", "list_name", default=None, help="Only members of this list (with their status).")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write to this file (default: standard output).")
@pass_app
def subscribers_export(app: App, list_name: str | None, out_path: Path | None) -> None:
    """Export subscribers as CSV (the import columns plus status).

    Example: wip-mailer subscribers export --list stampa --out stampa.csv
    """
    with db.session_scope(app.engine) as session:
        if out_path is None:
            subscribers.export_csv(session, sys.stdout, list_name=list_name)
            return
        with out_path.open("w", encoding="utf-8", newline="") as handle:
            count = subscribers.export_csv(session, handle, list_name=list_name)
    click.echo(f"Wrote {count} subscribers to {out_path}.", err=True)


@subscribers_group.command("export-data")
@click.argument("email")
@pass_app
def subscribers_export_data(app: App, email: str) -> None:
    """Print everything held on a person as JSON (GDPR right of access).

    Example: wip-mailer subscribers export-data anna@example.org > anna.json
    """
    with db.session_scope(app.engine) as session:
        data: dict[str, Any] = subscribers.export_personal_data(session, email)
    echo_json(data)


@subscribers_group.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def subscribers_erase(app: App, email: str, yes: bool) -> None:
    """Delete a person's data, keeping only a hashed entry so no import re-adds them.

    Example: wip-mailer subscribers erase anna@example.org --yes
    """
    confirm_or_abort(f"Erase every record of {email}? This cannot be undone.", yes)
    with db.session_scope(app.engine) as session:
        report = subscribers.erase_subscriber(session, email)
    if report.found:
        click.echo(f"Erased {report.email}; {report.deliveries_blanked} delivery records kept without "
                   "the address; the address is suppressed.")
    else:
        click.echo(f"No data held on {report.email}; the address is suppressed all the same.")
