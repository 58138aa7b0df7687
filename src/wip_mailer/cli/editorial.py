"""Editorial commands: editions, sections, items and document import.

About 25 thin commands, each parsing its options and calling one function of
``wip_mailer.editorial``; kept in one file (a little over 500 lines) so the desk's
commands read together.
"""

from __future__ import annotations

import getpass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wip_mailer import db, overview
from wip_mailer.cli.common import App, confirm_or_abort, echo_json, json_option, lazy_module, pass_app
from wip_mailer.statuses import EditionStatus, ItemStatus

if TYPE_CHECKING:
    from wip_mailer import editorial, sections
    from wip_mailer.models import Item
else:  # the ORM, loaded when a command first uses it: the list and show commands read with overview
    editorial = lazy_module("wip_mailer.editorial")
    sections = lazy_module("wip_mailer.sections")


def _default_editor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "editor"


by_option = click.option("--by", default=_default_editor, show_default="your user name",
                         help="Who makes the decision (kept with the item).")
edition_option = click.option("--edition", "slug", required=True, help="The edition's slug, e.g. 2024-01.")


def _warn(messages: list[str] | list[Any]) -> None:
    for message in messages:
        click.echo(f"Warning: {message}", err=True)


def _body(body: str | None, body_file: Path | None) -> str | None:
    if body is not None and body_file is not None:
        raise click.UsageError("Give the body with --body or --body-file, not both.")
    if body_file is not None:
        return body_file.read_text(encoding="utf-8")
    return body


def _decided(verb: str, changed: int, asked: int, status: str) -> str:
    already = f" ({asked - changed} already {status})" if asked > changed else ""
    return f"{verb} {changed} of {asked} items{already}."


def _dates(item: Item) -> str:
    if item.start_date is None and item.end_date is None:
        return "-"
    start = item.start_date.isoformat() if item.start_date else "…"
    end = item.end_date.isoformat() if item.end_date else "…"
    return start if start == end else f"{start}..{end}"


# --- editions ------------------------------------------------------------------------------

@click.group("editions")
def editions_group() -> None:
    """Create, edit, delete and inspect editions.

    Example: wip-mailer editions show 2024-01
    """


@editions_group.command("create")
@click.argument("slug")
@click.option("--title", required=True, help='The period label, e.g. "Gennaio-Febbraio 2024".')
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First day of the period (YYYY-MM-DD).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last day of the period (YYYY-MM-DD).")
@click.option("--language", default="it", show_default=True, help="Language of the edition.")
@click.option("--subject", help='Email subject (default: "Work in Progress – TITLE").')
@pass_app
def editions_create(app: App, slug: str, title: str, start: Any, end: Any, language: str,
                    subject: str | None) -> None:
    """Create a draft edition with the sections Top News, Approfondimenti, Coming Soon.

    Example: wip-mailer editions create 2024-01 --title "Gennaio-Febbraio 2024"
    --start 2024-01-01 --end 2024-02-29
    """
    start_day: date | None = start.date() if start else None
    end_day: date | None = end.date() if end else None
    with db.session_scope(app.engine) as session:
        edition = editorial.create_edition(session, slug, title, start_day, end_day,
                                           language=language, subject=subject)
        period = f", {start_day} to {end_day}" if start_day and end_day else ""
        click.echo(f"Created edition {edition.slug} ({edition.title}{period}).")


@editions_group.command("list")
@json_option
@pass_app
def editions_list(app: App, as_json: bool) -> None:
    """List editions, newest first, with their item counts.

    Example: wip-mailer editions list
    """
    with app.engine.connect() as connection:
        rows = overview.editions(connection)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No editions yet: create one with `wip-mailer editions create`.")
    for row in rows:
        click.echo(f"{row['slug']:<10} {row['status']:<9} {row['title']}  "
                   f"({row['items']} items, {row['approved']} approved)")


@editions_group.command("show")
@click.argument("slug")
@json_option
@pass_app
def editions_show(app: App, slug: str, as_json: bool) -> None:
    """Show an edition: period, status, sections and what will go out.

    Example: wip-mailer editions show 2024-01
    """
    with app.engine.connect() as connection:
        summary = overview.edition_summary(connection, slug)
    if as_json:
        echo_json(summary)
        return
    counts: dict[str, int] = summary["items"]
    click.echo(f"Edition {summary['slug']}: {summary['title']} [{summary['status']}]")
    if summary["period_start"]:
        click.echo(f"Period: {summary['period_start']} to {summary['period_end']}")
    click.echo(f"Language: {summary['language']}")
    left_out = counts[ItemStatus.DRAFT] + counts[ItemStatus.REJECTED]
    click.echo(f"Items: {counts[ItemStatus.APPROVED]} approved, {counts[ItemStatus.DRAFT]} draft, "
               f"{counts[ItemStatus.REJECTED]} rejected ({left_out} would be left out)")
    for section in summary["sections"]:
        intro = ", with text" if section["intro_md"] else ""
        click.echo(f"  {section['position']}. {section['name']}: {section['items']} items, "
                   f"{section['approved']} approved{intro}")


@editions_group.command("edit")
@click.argument("slug")
@click.option("--title", help="New period label.")
@click.option("--subject", help='New email subject ("" = "Work in Progress – TITLE").')
@click.option("--language", help="New language of the edition, e.g. it or en.")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="New first day of the period (YYYY-MM-DD).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="New last day of the period (YYYY-MM-DD).")
@pass_app
def editions_edit(app: App, slug: str, title: str | None, subject: str | None, language: str | None,
                  start: Any, end: Any) -> None:
    """Change an edition's title, subject, language or period (not once it is being sent).

    Example: wip-mailer editions edit 2024-01 --subject "Work in Progress – inverno 2024"
    """
    if all(value is None for value in (title, subject, language, start, end)):
        raise click.UsageError("Give at least one of --title, --subject, --language, --start, --end.")
    with db.session_scope(app.engine) as session:
        edition = editorial.edit_edition(session, slug, title=title, subject=subject, language=language,
                                         period_start=start.date() if start else None,
                                         period_end=end.date() if end else None)
        period = f", {edition.period_start} to {edition.period_end}" if edition.period_start else ""
        click.echo(f"Edition {edition.slug} saved ({edition.title}{period}, {edition.language}).")


@editions_group.command("delete")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def editions_delete(app: App, slug: str, yes: bool) -> None:
    """Delete a draft edition with its sections and items (never one that was sent).

    Example: wip-mailer editions delete 2024-01 --yes
    """
    with app.engine.connect() as connection:  # an unknown slug fails before the question
        count = sum(overview.edition_summary(connection, slug)["items"].values())
    confirm_or_abort(f"Delete edition {slug} and its {count} item(s)?", yes)
    with db.session_scope(app.engine) as session:
        removed = editorial.delete_edition(session, slug)
    click.echo(f"Deleted edition {slug} ({removed} item(s)).")


@editions_group.command("set-status")
@click.argument("slug")
@click.argument("status", type=click.Choice([EditionStatus.DRAFT.value, EditionStatus.READY.value]))
@pass_app
def editions_set_status(app: App, slug: str, status: str) -> None:
    """Mark an edition ready (or back to draft); sending moves it further.

    An edition stuck in sending by a send that handed nothing to the server (its campaign
    is closed as cancelled) can go back too.

    Example: wip-mailer editions set-status 2024-01 ready
    """
    from wip_mailer.dispatch.control import return_edition  # loads the sending stage only here

    with db.session_scope(app.engine) as session:
        edition = return_edition(session, slug, status)
        click.echo(f"Edition {edition.slug} is {edition.status}.")


# --- items ---------------------------------------------------------------------------------

@click.group("items")
def items_group() -> None:
    """Add, edit, order, approve and delete an edition's items.

    Example: wip-mailer items list --edition 2024-01
    """


@items_group.command("add")
@edition_option
@click.option("--title", required=True, help="The item's title.")
@click.option("--date", "date_label", help='The date as readers see it, e.g. "9-11 gennaio".')
@click.option("--body", help="The text, in Markdown.")
@click.option("--body-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the Markdown text from this file.")
@click.option("--section", help="One of the edition's sections (`wip-mailer sections list`); "
              "default: Top News.")
@click.option("--position", type=int, help="Place in the section (1 = first); default: by start date.")
@click.option("--image-url", help="An image to show with the item (https URL).")
@click.option("--image-alt", help="The image's alt text.")
@pass_app
def items_add(app: App, slug: str, title: str, date_label: str | None, body: str | None,
              body_file: Path | None, section: str | None, position: int | None, image_url: str | None,
              image_alt: str | None) -> None:
    """Add a draft item to an edition.

    Example: wip-mailer items add --edition 2024-01 --title "Missione a Praia"
    --date "7-14 gennaio" --body "Nel quadro dell'accordo ..."
    """
    with db.session_scope(app.engine) as session:
        change = editorial.add_item(
            session, slug, title=title, date_label=date_label, body_md=_body(body, body_file) or "",
            section=section or editorial.DEFAULT_SECTIONS[0], position=position, image_url=image_url,
            image_alt=image_alt,
            new_section=False,  # a mistyped section is an error, not a new section
        )
        where = editorial.section_name(session, change.item)
        click.echo(f"Added item {change.item.id} to edition '{slug}', section {where} (draft).")
    _warn(change.warnings)


@items_group.command("edit")
@click.argument("item_id", type=int)
@click.option("--title", help="New title.")
@click.option("--date", "date_label", help='New date label ("" removes it).')
@click.option("--body", help="New Markdown text.")
@click.option("--body-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the new Markdown text from this file.")
@click.option("--image-url", help='New image URL ("" removes it).')
@click.option("--image-alt", help="New image alt text.")
@pass_app
def items_edit(app: App, item_id: int, title: str | None, date_label: str | None, body: str | None,
               body_file: Path | None, image_url: str | None, image_alt: str | None) -> None:
    """Change an item; an approved item that changes needs approving again.

    Example: wip-mailer items edit 12 --date "10-11 febbraio"
    """
    with db.session_scope(app.engine) as session:
        change = editorial.edit_item(session, item_id, title=title, date_label=date_label,
                                     body_md=_body(body, body_file), image_url=image_url,
                                     image_alt=image_alt)
        click.echo(f"Item {item_id} saved ({change.item.status}).")
    _warn(change.warnings)


@items_group.command("delete")
@click.argument("item_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def items_delete(app: App, item_id: int, yes: bool) -> None:
    """Delete an item (not once its edition is being sent).

    Example: wip-mailer items delete 12 --yes
    """
    with db.session_scope(app.engine) as session:
        title = editorial.get_item(session, item_id).title  # an unknown id fails before the question
    confirm_or_abort(f"Delete item {item_id} «{title}»?", yes)
    with db.session_scope(app.engine) as session:
        editorial.delete_item(session, item_id)
    click.echo(f"Deleted item {item_id}.")


@items_group.command("list")
@edition_option
@click.option("--status", type=click.Choice([s.value for s in ItemStatus]), help="Only items in this status.")
@json_option
@pass_app
def items_list(app: App, slug: str, status: str | None, as_json: bool) -> None:
    """List an edition's items in reading order (section order, then position).

    Example: wip-mailer items list --edition 2024-01 --json
    """
    with app.engine.connect() as connection:
        rows = overview.edition_items(connection, slug, [status] if status else None)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"Edition '{slug}' has no {status + ' ' if status else ''}items.")
    for row in rows:
        label = f" [{row['date_label']}]" if row["date_label"] else ""
        click.echo(f"{row['id']:>5}  {row['status']:<8}  {row['section']}: {row['title']}{label}")


@items_group.command("show")
@click.argument("item_id", type=int)
@json_option
@pass_app
def items_show(app: App, item_id: int, as_json: bool) -> None:
    """Show one item with its Markdown, its sanitised HTML and its links.

    Example: wip-mailer items show 12 --json
    """
    from wip_mailer.text import markdown_to_html

    with db.session_scope(app.engine) as session:
        item = editorial.get_item(session, item_id)
        data = overview.item_summary(item, editorial.section_name(session, item))
        data.update({
            "edition": editorial.edition_of(session, item).slug,
            "status_by": item.status_by, "status_at": item.status_at,
            "body_md": item.body_md, "body_html": markdown_to_html(item.body_md),
            "links": item.links, "image_url": item.image_url, "image_alt": item.image_alt,
        })
    if as_json:
        echo_json(data)
        return
    click.echo(f"Item {data['id']} of edition '{data['edition']}', {data['section']} [{data['status']}"
               + (f" by {data['status_by']}" if data["status_by"] else "") + "]")
    click.echo(f"Title: {data['title']}")
    click.echo(f"Date:  {item.date_label} ({_dates(item)})" if item.date_label else "Date:  -")
    if item.image_url or item.image_alt:
        click.echo(f"Image: {item.image_url or '(no URL)'} — {item.image_alt or ''}")
    for link in item.links:
        click.echo(f"Link:  {link['text']} → {link['url'] or 'MISSING URL'}")
    click.echo("")
    click.echo(item.body_md)


@items_group.command("approve")
@click.argument("item_ids", nargs=-1, type=int)
@click.option("--all", "approve_all", is_flag=True, help="Approve every item of --edition.")
@click.option("--edition", "slug", help="With --all: the edition's slug.")
@by_option
@pass_app
def items_approve(app: App, item_ids: tuple[int, ...], approve_all: bool, slug: str | None, by: str) -> None:
    """Approve items: only approved items go out.

    Example: wip-mailer items approve --all --edition 2024-01
    """
    if approve_all == bool(item_ids) or (approve_all and not slug):
        raise click.UsageError("Give item ids, or --all with --edition SLUG.")
    if slug and not approve_all:
        raise click.UsageError("--edition goes with --all.")
    with db.session_scope(app.engine) as session:
        if approve_all:
            assert slug is not None
            changed = editorial.approve_all(session, slug, by)
            total = len(editorial.list_items(session, slug, [ItemStatus.APPROVED]))
            click.echo(f"Approved {changed} items of edition '{slug}' ({total} approved in all).")
        else:
            items = editorial.approve_items(session, item_ids, by)
            click.echo(_decided("Approved", len(items), len(set(item_ids)), "approved"))


@items_group.command("reject")
@click.argument("item_ids", nargs=-1, type=int, required=True)
@by_option
@pass_app
def items_reject(app: App, item_ids: tuple[int, ...], by: str) -> None:
    """Reject items: they stay in the edition but do not go out.

    Example: wip-mailer items reject 12 13
    """
    with db.session_scope(app.engine) as session:
        items = editorial.reject_items(session, item_ids, by)
        click.echo(_decided("Rejected", len(items), len(set(item_ids)), "rejected"))


@items_group.command("move")
@click.argument("item_id", type=int)
@click.option("--position", type=int, help="New place in the section (1 = first; default: last).")
@click.option("--section", help="Move to this section (created at the end if new).")
@pass_app
def items_move(app: App, item_id: int, position: int | None, section: str | None) -> None:
    """Move an item within its section or to another one.

    Example: wip-mailer items move 12 --position 1 --section "Top News"
    """
    if position is None and section is None:
        raise click.UsageError("Give --position, --section or both.")
    with db.session_scope(app.engine) as session:
        item = editorial.move_item(session, item_id, position=position, section=section)
        where = editorial.section_name(session, item)
        click.echo(f"Item {item.id} is now number {item.position} in {where}.")


# --- sections ------------------------------------------------------------------------------

@click.group("sections")
def sections_group() -> None:
    """An edition's sections: list, add, rename, remove.

    Example: wip-mailer sections list --edition 2024-01
    """


@sections_group.command("list")
@edition_option
@json_option
@pass_app
def sections_list(app: App, slug: str, as_json: bool) -> None:
    """List an edition's sections in order, with their item counts.

    Example: wip-mailer sections list --edition 2024-01
    """
    with app.engine.connect() as connection:
        rows = overview.section_summaries(connection, slug)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['position']}. {row['name']}: {row['items']} items")


@sections_group.command("add")
@click.argument("name")
@edition_option
@click.option("--after", metavar="SECTION", help="Put it after this section (default: last).")
@pass_app
def sections_add(app: App, name: str, slug: str, after: str | None) -> None:
    """Add an empty section to an edition.

    Example: wip-mailer sections add Eventi --edition 2024-01 --after "Top News"
    """
    with db.session_scope(app.engine) as session:
        section = sections.add_section(session, slug, name, after=after)
        click.echo(f"Added section {section.name} to edition '{slug}' (number {section.position}).")


@sections_group.command("rename")
@click.argument("old")
@click.argument("new")
@edition_option
@pass_app
def sections_rename(app: App, old: str, new: str, slug: str) -> None:
    """Rename a section (its items stay in it).

    Example: wip-mailer sections rename "Coming Soon" "Prossimamente" --edition 2024-01
    """
    with db.session_scope(app.engine) as session:
        section = sections.rename_section(session, slug, old, new)
        click.echo(f"Renamed section {old} of edition '{slug}' to {section.name}.")


@sections_group.command("remove")
@click.argument("name")
@edition_option
@pass_app
def sections_remove(app: App, name: str, slug: str) -> None:
    """Remove an empty section (move or delete its items first).

    Example: wip-mailer sections remove Eventi --edition 2024-01
    """
    with db.session_scope(app.engine) as session:
        section = sections.remove_section(session, slug, name)
    click.echo(f"Removed section {section.name} from edition '{slug}'.")


# --- import --------------------------------------------------------------------------------

@click.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@edition_option
@click.option("--force", is_flag=True, help="Also update approved items (they become drafts again).")
@json_option
@pass_app
def import_command(app: App, path: Path, slug: str, force: bool, as_json: bool) -> None:
    """Turn a newsletter document (Markdown) into draft items of an existing edition.

    Importing the same file again updates the drafts; approved items are left alone
    unless --force is given.

    Example: wip-mailer import examples/edition-2026-11.md --edition 2026-11
    """
    from wip_mailer.intake import import_document

    with db.session_scope(app.engine) as session:
        report = import_document(session, path, slug, force=force)
    if as_json:
        echo_json({
            "edition": report.edition, "path": report.path, "created": report.created,
            "updated": report.updated, "unchanged": report.unchanged,
            "skipped_approved": report.skipped_approved, "reverted": report.reverted,
            "absent": report.absent, "sections": report.sections,
            "warnings": [{"line": w.line, "message": w.message} for w in report.warnings],
        })
        return
    click.echo(report.summary())
    click.echo("Sections: " + ", ".join(f"{name} {count}" for name, count in report.sections.items()) + ".")
    _warn(report.warnings)
