"""The `wip-mailer` command: a thin shell over the library, one module per area.

Commands load lazily: the group knows each command's module and short help from the
table below, and imports the module only when that command runs or shows its help, so
`wip-mailer --version` or `wip-mailer lists list` does not pay for SQLAlchemy, the
renderer, SMTP, the web server or the scheduler it does not use.
"""

from __future__ import annotations

import click

from wip_mailer import __version__
from wip_mailer.cli.common import App, LazyCommand, LazyGroup

# name -> where it lives and its short help (tests check it matches the command's own help).
COMMANDS: dict[str, LazyCommand] = {
    "init": LazyCommand("admin", "init", "Create a `.env` (with a fresh secret key) and the database; "
                        "safe to repeat."),
    "db": LazyCommand("admin", "db_group", "Database maintenance."),
    "dev-smtp": LazyCommand("admin", "dev_smtp", "Run an SMTP server that keeps every message in a "
                            "Maildir (for trying things out)."),
    "editions": LazyCommand("editorial", "editions_group", "Create, edit, delete and inspect editions."),
    "items": LazyCommand("editorial", "items_group", "Add, edit, order, approve and delete an "
                         "edition's items."),
    "sections": LazyCommand("editorial", "sections_group", "An edition's sections: list, add, rename, "
                            "remove."),
    "import": LazyCommand("editorial", "import_command", "Turn a newsletter document (Markdown) into "
                          "draft items of an existing edition."),
    "preview": LazyCommand("render", "preview", "Write an edition as a subscriber would see it (with "
                           "dummy unsubscribe links)."),
    "check": LazyCommand("render", "check", "Pre-flight check of an edition: size, template errors, "
                         "items, links, images."),
    "archive": LazyCommand("render", "archive_group", "The static web archive of sent editions."),
    "lists": LazyCommand("lists", "lists_group", "Mailing lists: create, show, rename, delete, or "
                         "sync from subscribers/lists.toml."),
    "subscribers": LazyCommand("audience", "subscribers_group", "Subscribers: add, remove, show, list, "
                               "import, export; GDPR access and erasure."),
    "suppressions": LazyCommand("suppressions", "suppressions_group", "The suppression list: addresses "
                                "never mailed again (bounced, complained, erased...)."),
    "serve": LazyCommand("web", "serve", "Serve the unsubscribe (RFC 8058 one-click), confirmation and "
                         "preferences pages."),
    "bounces": LazyCommand("feedback", "bounces_group", "Bounces, complaints and mailto unsubscribes "
                           "that come back to the bounce address."),
    "send": LazyCommand("dispatch", "send", "Send edition SLUG to every active subscriber of the lists, "
                        "once each."),
    "worker": LazyCommand("dispatch", "worker", "Send the queued and due deliveries of every running "
                          "campaign, beside other workers."),
    "campaigns": LazyCommand("dispatch", "campaigns", "Campaigns: the sends of an edition, their "
                             "progress and results."),
    "schedule": LazyCommand("schedule", "schedule_group", "Schedule an edition to be sent (or checked, "
                            "or a reminder) at a set time."),
    "scheduler": LazyCommand("schedule", "scheduler_group", "The scheduling service."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wip-mailer")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """wip-mailer: prepare, render and send the "Work in Progress" newsletter.

    Settings come from the environment and a `.env` file in the working
    directory (see .env.example).

    Example: wip-mailer init
    """
    ctx.obj = App(debug=debug)
