"""Sending commands: send, worker, campaigns list|status|resume."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, Task, TimeRemainingColumn
from rich.progress import Progress as RichProgressBar
from rich.text import Text

from wip_mailer.cli.common import App, confirm_or_abort, echo_json, json_option, pass_app
from wip_mailer.dispatch import (
    CampaignSummary,
    SendRequest,
    campaign_status,
    cancel_campaign,
    list_campaigns,
    pause_campaign,
    resume_campaign,
    send_edition,
)
from wip_mailer.dispatch.ratelimit import parse_rate
from wip_mailer.dispatch.types import SummaryStatus
from wip_mailer.errors import StateError
from wip_mailer.localtime import format_local
from wip_mailer.preflight import KIB, PreflightReport, run_preflight

if TYPE_CHECKING:
    from sqlmodel import Session

    from wip_mailer.settings import Settings


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} msg/s" if speed else "– msg/s", style="progress.data.speed")


class RichProgress:
    """The ``dispatch.Progress`` protocol drawn with rich on stderr (stdout keeps the summary)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.bar = RichProgressBar("[progress.description]{task.description}", BarColumn(),
                                   MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn(),
                                   console=self.console, transient=False)
        self.task: Any = None

    def start(self, total: int, done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("sending", total=total, completed=done)

    def update(self, done: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=done)

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def stop(self) -> None:
        self.bar.stop()


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _report(summary: CampaignSummary, as_json: bool) -> None:
    if as_json:
        echo_json(summary.as_dict())
    else:
        for note in summary.notes:
            click.echo(note)
        click.echo(_sentence(summary))
        if summary.in_doubt:
            click.echo(
                f"{summary.in_doubt} message(s) are in doubt: they were handed to the SMTP server when "
                "a send stopped, and their reply was never seen, so they are not resent (most were "
                "delivered). `wip-mailer campaigns resend-in-doubt "
                f"{summary.campaign_id}` resends them."
            )
        if summary.status is SummaryStatus.PAUSED:
            click.echo(f"Resume with: wip-mailer campaigns resume {summary.campaign_id}")
    if summary.status is SummaryStatus.PAUSED:
        raise click.exceptions.Exit(130)


def _sentence(summary: CampaignSummary) -> str:
    if summary.status is SummaryStatus.DRY_RUN:
        return (f"Dry run: built {summary.recipients - summary.failed} messages "
                f"({summary.bytes_built / 1e6:.1f} MB), {summary.failed} refused; nothing was sent.")
    if summary.status is SummaryStatus.TEST:
        return f"Test copies: {summary.sent} sent, {summary.failed} refused; no campaign was touched."
    if summary.status is SummaryStatus.NOT_CONFIRMED:
        return "Nothing was sent."
    return (f"Campaign {summary.campaign_id} {summary.status}: {summary.sent} sent, "
            f"{summary.deferred} deferred, {summary.failed} failed, {summary.skipped} skipped "
            f"(unsubscribed or suppressed), {summary.in_doubt} in doubt"
            + (f", {summary.queued} not yet sent." if summary.queued else "."))


def _confirmation(slug: str, settings: Settings, lists: tuple[str, ...], segment: str | None,
                  count: int, report: PreflightReport) -> str:
    """What the editor sees before saying yes: what goes out, from whom, to whom, how big."""
    rendered = report.rendered
    assert rendered is not None  # dispatch asks only after the check rendered the edition
    html, text = rendered.html_bytes / KIB, len(rendered.text.encode("utf-8")) / KIB
    return "\n".join([
        f"Edition:    {slug}",
        f"Subject:    {rendered.subject}",
        f"From:       {settings.sender}",
        f"Lists:      {', '.join(lists)}" + (f" (segment: {segment})" if segment else " (no segment)"),
        f"Recipients: {count}",
        f"Message:    {html + text:.1f} KiB each (HTML {html:.1f} KiB, text {text:.1f} KiB)",
        f"Pre-flight: {len(report.warnings)} warning(s)",
    ])


@click.command()
@click.argument("slug")
@click.option("--list", "lists", multiple=True, metavar="NAME", help="A list to send to (repeatable).")
@click.option("--segment", metavar="EXPR", help="Only subscribers matching this segment expression.")
@click.option("--dry-run", is_flag=True, help="Build every message and report; send nothing.")
@click.option("--test-to", multiple=True, metavar="ADDR",
              help="Send the real message, marked [TEST], to this address only (repeatable).")
@click.option("--connections", type=click.IntRange(1, 64), help="Parallel SMTP connections.")
@click.option("--rate", callback=_rate, metavar="N/s", help="At most N messages per second (50/s, 3000/min).")
@click.option("--resume", is_flag=True, help="Carry on the edition's paused or interrupted campaign.")
@click.option("--resend-in-doubt", is_flag=True,
              help="With --resume: also resend the messages a crash left in doubt.")
@click.option("--workers", type=click.IntRange(1, 64), metavar="N",
              help="Send with N worker processes on this machine (each with --connections).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def send(app: App, slug: str, lists: tuple[str, ...], segment: str | None, dry_run: bool,
         test_to: tuple[str, ...], connections: int | None, rate: float | None, resume: bool,
         resend_in_doubt: bool, workers: int | None, yes: bool, as_json: bool) -> None:
    """Send edition SLUG to every active subscriber of the lists, once each.

    The pre-flight check runs first; its warnings are shown. Ctrl-C finishes the
    messages in flight and pauses the campaign; resume it with --resume.

    Example: wip-mailer send 2024-01 --list newsletter-it --list newsletter-en --yes
    """
    checked: list[PreflightReport] = []

    def preflight(session: Session, settings: Settings, slug: str) -> PreflightReport:
        # Placeholder settings block only a real send; test copies and dry runs go ahead.
        report = run_preflight(session, settings, slug, real_send=not (dry_run or test_to))
        checked.append(report)  # kept for the confirmation
        return report

    def confirm(count: int) -> bool:
        question = f"Send edition {slug} to {count} recipients?"
        if not yes:
            click.echo(_confirmation(slug, app.settings, lists, segment, count, checked[-1]), err=True)
        confirm_or_abort(question, yes)
        return True

    progress = None if as_json else RichProgress()
    request = SendRequest(slug=slug, lists=lists, segment=segment, dry_run=dry_run, test_to=test_to,
                          connections=connections, rate_per_second=rate, resume=resume,
                          resend_in_doubt=resend_in_doubt)
    run = None
    if workers is not None:
        if resume or dry_run or test_to:
            raise click.UsageError("--workers starts a new campaign: it does not go with --resume, "
                                   "--dry-run or --test-to (workers carry on a running campaign by "
                                   "themselves: `wip-mailer worker`).")
        from wip_mailer.dispatch.workers import run_local_workers

        def run(campaign_id: int) -> CampaignSummary:
            return run_local_workers(app.engine, app.settings, campaign_id, workers, progress=progress,
                                     connections=connections, rate_per_second=rate)

    summary = send_edition(app.engine, app.settings, request, confirm=confirm, progress=progress,
                           preflight=preflight, run=run)
    _report(summary, as_json)


@click.command()
@click.option("--connections", type=click.IntRange(1, 64), help="Parallel SMTP connections of this worker.")
@click.option("--rate", callback=_rate, metavar="N/s", help="At most N messages per second from this worker.")
@click.option("--campaign", "campaign_id", type=int, metavar="ID", help="Only this campaign.")
@click.option("--once", is_flag=True, help="Stop when no campaign (in scope) is being sent any more.")
@json_option
@pass_app
def worker(app: App, connections: int | None, rate: float | None, campaign_id: int | None, once: bool,
           as_json: bool) -> None:
    """Send the queued and due deliveries of every running campaign, beside other workers.

    Runs until SIGTERM (or Ctrl-C): then it finishes the messages in flight, hands its
    unsent claims back at once and stops. Workers on other hosts share the campaigns
    through PostgreSQL; a killed worker's rows are settled by the others.

    Example: wip-mailer worker --connections 4
    """
    import dataclasses
    import signal

    from wip_mailer.dispatch.workers import Worker

    settings = app.settings
    if connections is not None:
        settings = dataclasses.replace(settings, smtp_connections=connections)
    if rate is not None:
        settings = dataclasses.replace(settings, rate_per_second=rate)
    from wip_mailer.dispatch.relays import relays_of

    relays_of(settings)  # a malformed WIP_MAILER_SMTP_RELAYS: one sentence, before anything
    console = Console(stderr=True)
    runner = Worker(app.engine, settings, campaign_id=campaign_id, once=once,
                    on_note=lambda text: console.print(text, highlight=False, markup=False))
    handlers = {sig: signal.signal(sig, lambda signum, frame: runner.interrupt())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = runner.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    counts = report.counts
    if as_json:
        echo_json({"token": runner.lease.token, "campaigns": sorted(report.campaigns),
                   "finished": sorted(report.finished), "sent": counts.sent, "deferred": counts.deferred,
                   "failed": counts.failed, "skipped": counts.skipped, "in_doubt": counts.in_doubt,
                   "error": str(report.error) if report.error else None})
    else:
        click.echo(f"Worker {runner.lease.token} stopped: {counts.sent} sent, {counts.deferred} deferred, "
                   f"{counts.failed} failed, {counts.skipped} skipped, {counts.in_doubt} in doubt "
                   f"(campaigns {', '.join(map(str, sorted(report.campaigns))) or 'none'}).")
    if report.error is not None:
        click.echo(f"Error: {report.error}", err=True)
        raise click.exceptions.Exit(1)


@click.group()
def campaigns() -> None:
    """Campaigns: the sends of an edition, their progress and results.

    Example: wip-mailer campaigns list
    """


@campaigns.command("list")
@json_option
@pass_app
def campaigns_list(app: App, as_json: bool) -> None:
    """List every campaign with its progress.

    Example: wip-mailer campaigns list --json
    """
    rows = list_campaigns(app.engine)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("No campaigns yet.")
    for row in rows:
        counts = row["counts"]
        click.echo(f"{row['id']:>4}  {row['edition']:<16} {row['status']:<9} "
                   f"{row['recipients']:>7} recipients  "
                   f"{counts['sent']} sent, {counts['deferred']} deferred, {counts['failed']} failed, "
                   f"{counts['skipped']} skipped, {counts['in_doubt']} in doubt  ({', '.join(row['lists'])}) "
                   f" {_complaint_rate(row['bounces'])}")


def _complaint_rate(bounces: dict[str, Any]) -> str:
    over = bounces["complaint_rate"] >= bounces["complaint_limit"]
    return (f"complaints {bounces['complaint_rate']:.2%} (Gmail's line "
            f"{bounces['complaint_limit']:.1%}{': OVER' if over else ''})")


@campaigns.command("status")
@click.argument("campaign_id", type=int)
@json_option
@pass_app
def campaigns_status(app: App, campaign_id: int, as_json: bool) -> None:
    """Show a campaign's progress and the recipients not (yet) sent, with the server's reply.

    Example: wip-mailer campaigns status 3
    """
    _show(app, campaign_status(app.engine, campaign_id), as_json)


def _local(app: App, moment: Any) -> str:
    """A time as people read it: in WIP_MAILER_TIMEZONE, with the zone."""
    return format_local(moment, app.settings.tz)


def _show(app: App, row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(row)
    else:
        _describe(app, row)


def _describe(app: App, row: dict[str, Any]) -> None:
    counts = row["counts"]
    status = row["status"]
    if row["interrupted"]:
        since = f" after {_local(app, row['last_activity_at'])}" if row["last_activity_at"] else ""
        status = f"interrupted (its sender stopped{since})"
    click.echo(f"Campaign {row['id']} of edition {row['edition']}: {status}, "
               f"{row['recipients']} recipients ({', '.join(row['lists'])}).")
    click.echo("  " + ", ".join(f"{number} {state.replace('_', ' ')}" for state, number in counts.items()))
    bounces = row["bounces"]
    click.echo(f"  bounces: {bounces['hard']} hard ({bounces['hard_rate']:.2%}), {bounces['soft']} soft "
               f"({bounces['soft_rate']:.2%}); {_complaint_rate(bounces)}: {bounces['complaints']}")
    if row.get("relays"):
        relays = row["relays"].items()
        click.echo("  relays: " + ", ".join(f"{name} {number} sent" for name, number in relays))
    if row.get("workers"):
        click.echo(f"  Being sent by {len(row['workers'])} worker(s): {', '.join(row['workers'])}.")
    if row["sender"]:
        click.echo(f"  Being sent by {row['sender']} (lease until {_local(app, row['sender_lease_until'])}); "
                   f"pause it with `wip-mailer campaigns pause {row['id']}`.")
    elif row["interrupted"] or row["status"] == "paused":
        click.echo(f"  Resume it with `wip-mailer campaigns resume {row['id']}`.")
    for problem in row.get("problems", ()):
        click.echo(f"  {problem['state']:<9} {problem['email']}: {problem['last_reply']}")


@campaigns.command("pause")
@click.argument("campaign_id", type=int)
@json_option
@pass_app
def campaigns_pause(app: App, campaign_id: int, as_json: bool) -> None:
    """Pause a campaign being sent, from any terminal or host: its sender finishes the
    messages in flight and stops (within a few seconds); nothing is lost or sent twice.

    Example: wip-mailer campaigns pause 3
    """
    row = pause_campaign(app.engine, app.settings, campaign_id)
    _show(app, row, as_json)


@campaigns.command("cancel")
@click.argument("campaign_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def campaigns_cancel(app: App, campaign_id: int, yes: bool, as_json: bool) -> None:
    """Cancel a campaign for good: the recipients not yet sent are skipped; it cannot be resumed.

    Example: wip-mailer campaigns cancel 3 --yes
    """
    counts = campaign_status(app.engine, campaign_id)["counts"]
    left = counts["queued"] + counts["deferred"] + counts["sending"]
    confirm_or_abort(f"Cancel campaign {campaign_id}? {left} recipient(s) not yet sent will never get "
                     "this edition from it; this cannot be undone.", yes)
    row = cancel_campaign(app.engine, app.settings, campaign_id)
    _show(app, row, as_json)


@campaigns.command("resume")
@click.argument("campaign_id", type=int)
@click.option("--resend-in-doubt", is_flag=True, help="Also resend the messages a crash left in doubt.")
@click.option("--connections", type=click.IntRange(1, 64), help="Parallel SMTP connections.")
@click.option("--rate", callback=_rate, metavar="N/s", help="At most N messages per second.")
@json_option
@pass_app
def campaigns_resume(app: App, campaign_id: int, resend_in_doubt: bool, connections: int | None,
                     rate: float | None, as_json: bool) -> None:
    """Carry on a paused or interrupted campaign; nobody already sent is sent again.

    Example: wip-mailer campaigns resume 3
    """
    summary = resume_campaign(app.engine, app.settings, campaign_id, resend_in_doubt=resend_in_doubt,
                              connections=connections, rate_per_second=rate,
                              progress=None if as_json else RichProgress())
    _report(summary, as_json)


@campaigns.command("resend-in-doubt")
@click.argument("campaign_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_app
def campaigns_resend_in_doubt(app: App, campaign_id: int, yes: bool, as_json: bool) -> None:
    """Resend the messages a campaign left in doubt (finished or paused campaigns alike).

    A message is in doubt when it was handed to the server and no clear reply came back
    (a crash, a timeout, a dropped connection): most were delivered, so the people may
    get a second copy. A paused campaign also sends the rest of its recipients.

    Example: wip-mailer campaigns resend-in-doubt 3 --yes
    """
    row = campaign_status(app.engine, campaign_id)
    in_doubt = row["counts"]["in_doubt"]
    if in_doubt == 0:
        raise StateError(f"Campaign {campaign_id} has no message in doubt: nothing to resend.")
    confirm_or_abort(f"Resend {in_doubt} in-doubt message(s) of campaign {campaign_id}? Some of these "
                     "people may already have the email.", yes)
    summary = resume_campaign(app.engine, app.settings, campaign_id, resend_in_doubt=True,
                              progress=None if as_json else RichProgress())
    _report(summary, as_json)


# `campaigns report` lives with the other report commands (reports are the last stage).
from wip_mailer.cli.reports import campaigns_report  # noqa: E402

campaigns.add_command(campaigns_report)
