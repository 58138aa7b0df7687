"""The `wip-mailer` command: a thin shell over the library, one module per area."""

from __future__ import annotations

import click

from wip_mailer import __version__
from wip_mailer.cli import admin, audience, dispatch, render, schedule, suppressions, web
from wip_mailer.cli import editorial as editorial_cli
from wip_mailer.cli.common import App, WipGroup


@click.group(cls=WipGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


main.add_command(admin.init)
main.add_command(admin.db_group)
main.add_command(admin.dev_smtp)
main.add_command(editorial_cli.editions_group)
main.add_command(editorial_cli.items_group)
main.add_command(editorial_cli.import_command)
main.add_command(render.preview)
main.add_command(render.check)
main.add_command(render.archive_group)
main.add_command(audience.lists_group)
main.add_command(audience.subscribers_group)
main.add_command(suppressions.suppressions_group)
main.add_command(web.serve)
main.add_command(dispatch.send)
main.add_command(dispatch.campaigns)
main.add_command(schedule.schedule_group)
main.add_command(schedule.scheduler_group)
