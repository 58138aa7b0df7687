"""Scheduling commands: `schedule` (add, list, cancel) and `scheduler run`."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

from wip_mailer import schedule as core
from wip_mailer.cli.common import App, echo_json, json_option, pass_app
from wip_mailer.localtime import LocalTimeFormatter
from wip_mailer.models import ScheduleKind, ScheduleStatus


class _ScheduleGroup(click.Group):
    """`wip-mailer schedule SLUG --at ...` is short for `wip-mailer schedule add SLUG --at ...`."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["add", *args]
        return super().resolve_command(ctx, args)


@click.group("schedule", cls=_ScheduleGroup)
def schedule_group() -> None:
    """Schedule an edition to be sent (or checked, or a reminder) at a set time.

    `wip-mailer schedule SLUG ...` is short for `wip-mailer schedule add SLUG ...`.
    Jobs run while `wip-mailer scheduler run` is running.

    Example: wip-mailer schedule 2024-03 --at "2024-03-01 09:00" --list newsletter
    """


@schedule_group.command("add")
@click.argument("slug")
@click.option("--at", "at", metavar="TIME",
              help="When: 'YYYY-MM-DD HH:MM[:SS]' in WIP_MAILER_TIMEZONE, or ISO 8601 with an offset.")
@click.option("--cron", metavar="RULE",
              help="Recurring (check and reminder only): crontab fields 'minute hour day month weekday'.")
@click.option("--kind", type=click.Choice([k.value for k in ScheduleKind]), default="send",
              show_default=True, help="Send the edition, run its pre-flight check, or email a reminder.")
@click.option("--list", "lists", multiple=True, metavar="NAME", help="List to send to (repeatable).")
@click.option("--segment", metavar="EXPR", help="Only subscribers matching this segment expression.")
@click.option("--to", "notify", multiple=True, metavar="ADDRESS",
              help="Reminder recipient (repeatable; default WIP_MAILER_REPLY_TO or WIP_MAILER_FROM).")
@pass_app
def schedule_add(app: App, slug: str, at: str | None, cron: str | None, kind: str,
                 lists: tuple[str, ...], segment: str | None, notify: tuple[str, ...]) -> None:
    """Schedule a job for an edition.

    Example: wip-mailer schedule add 2024-03 --kind reminder --cron "0 9 * * mon" --to editor@example.org
    """
    request = core.ScheduleRequest(slug=slug, kind=kind, at=at, cron=cron, lists=lists,
                                   segment=segment, notify=notify)
    view = core.add_schedule(app.engine, app.settings, request)
    when = view.when
    if view.run_at is not None and not view.cron:
        when += f" ({view.run_at:%Y-%m-%d %H:%M} UTC)"
    click.echo(f"Scheduled #{view.id}: {view.describe()} at {when}.")
    if core.lease_holder(app.engine) is None:
        click.echo("No scheduler is running: start `wip-mailer scheduler run` so that it runs.")


@schedule_group.command("list")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice([s.value for s in ScheduleStatus]), help="Only jobs in this state.")
@json_option
@pass_app
def schedule_list(app: App, statuses: tuple[str, ...], as_json: bool) -> None:
    """List scheduled jobs, past and future, with what became of them.

    Example: wip-mailer schedule list --status scheduled
    """
    views = core.list_schedules(app.engine, statuses)
    if as_json:
        echo_json([view.as_dict() for view in views])
        return
    if not views:
        click.echo("No scheduled jobs.")
        return
    for view in views:
        line = f"#{view.id}  {view.status:<9}  {view.when}  {view.describe()}"
        if view.message:
            line += f"  [{view.message}]"
        click.echo(line)


@schedule_group.command("cancel")
@click.argument("schedule_id", metavar="ID", type=int)
@pass_app
def schedule_cancel(app: App, schedule_id: int) -> None:
    """Cancel a job that has not started yet (a scheduled send puts the edition back).

    Example: wip-mailer schedule cancel 3
    """
    view = core.cancel_schedule(app.engine, schedule_id)
    click.echo(f"Cancelled #{view.id}: {view.describe()} at {view.when}.")


@schedule_group.command("move")
@click.argument("schedule_id", metavar="ID", type=int)
@click.option("--at", "at", metavar="TIME", required=True,
              help="The new time, as for `schedule add --at`.")
@pass_app
def schedule_move(app: App, schedule_id: int, at: str) -> None:
    """Give a one-time job that has not started a new time (a running scheduler follows).

    Example: wip-mailer schedule move 3 --at "2024-03-02 09:00"
    """
    view = core.move_schedule(app.engine, app.settings, schedule_id, at)
    click.echo(f"Moved #{view.id}: {view.describe()} at {view.when}.")


@click.group("scheduler")
def scheduler_group() -> None:
    """The scheduling service.

    Example: wip-mailer scheduler run
    """


@scheduler_group.command("run")
@click.option("--wait", is_flag=True,
              help="If another scheduler holds the database, wait for it to stop instead of refusing.")
@pass_app
def scheduler_run(app: App, wait: bool) -> None:
    """Run scheduled jobs in the foreground until SIGTERM or Ctrl-C.

    Example: wip-mailer scheduler run
    """
    # Our own lines at INFO; libraries (alembic, APScheduler) only when something is wrong.
    log_handler = logging.StreamHandler()
    # Stamped in WIP_MAILER_TIMEZONE with the zone, as every time shown to the editor.
    log_handler.setFormatter(LocalTimeFormatter("%(asctime)s %(levelname)s %(message)s", app.settings.tz))
    logging.basicConfig(level=logging.WARNING, handlers=[log_handler])
    logging.getLogger("wip_mailer").setLevel(logging.INFO)
    logging.getLogger("apscheduler.executors").setLevel(logging.ERROR)  # we report misses ourselves
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logging.getLogger("wip_mailer.schedule").info(
            "%s received; stopping.", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        core.SchedulerService(app.engine, app.settings).run(stop, wait_for_lease=wait)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
