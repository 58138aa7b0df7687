"""Report commands: `wip-mailer campaigns report ID`, `wip-mailer lists report`.

Registered in the `campaigns` and `lists` groups; the reports package (and pygal) is
imported only when a report is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wip_mailer.cli.common import App, echo_json, json_option, pass_app
from wip_mailer.errors import InvalidInputError

html_option = click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
                           metavar="FILE", help="Also write the report as a self-contained HTML page.")


def _write_html(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"Cannot write the report to {path}: {exc.strerror}.") from None


@click.command("report")
@click.argument("campaign_id", type=int)
@html_option
@json_option
@pass_app
def campaigns_report(app: App, campaign_id: int, html_file: Path | None, as_json: bool) -> None:
    """How a send went: summary, bounce and complaint rates, unsubscribes it brought, receiving
    domains, the timeline and the relays. No opens or clicks: nothing tracks readers.

    Example: wip-mailer campaigns report 3 --html report-3.html
    """
    from wip_mailer.reports import campaign_page, campaign_report

    report = campaign_report(app.engine, app.settings, campaign_id)
    if html_file is not None:
        _write_html(html_file, campaign_page(report, app.settings))
    if as_json:
        echo_json(report)
        return
    _describe_campaign(report)
    if html_file is not None:
        click.echo(f"Wrote {html_file}.")


def _describe_campaign(report: dict[str, Any]) -> None:
    c, s, r, b = report["campaign"], report["summary"], report["rates"], report["bounces"]
    click.echo(f"Campaign {c['id']} of {c['edition']} ({c['status']}): {s['recipients']} recipients.")
    click.echo(f"  {s['sent']} sent ({s['deferred_then_sent']} after a deferral), {s['in_doubt']} in doubt, "
               f"{s['failed']} failed, {s['deferred']} still deferred, {s['skipped']} skipped.")
    line = "OVER Gmail's and Yahoo's 0.3% line" if r["complaint_over_limit"] else "under the 0.3% line"
    click.echo(f"  bounces {b['hard']} hard ({r['hard_bounce']:.2%}), "
               f"{b['soft']} soft ({r['soft_bounce']:.2%}); "
               f"complaints {b['complaints']} ({r['complaint']:.2%}, {line}); "
               f"unsubscribes within 7 days {report['unsubscribes']['within_7_days']} "
               f"({r['unsubscribe_7_days']:.2%})")
    for d in report["domains"][:10]:
        median = d["median_seconds_to_accept"]
        click.echo(f"  {d['domain']:<28} {d['recipients']:>7} recipients, {d['accepted']} accepted, "
                   f"{d['deferred']} deferred, {d['failed']} failed, {d['bounced']} bounced"
                   + (f", median {median:g} s to accept" if median is not None else ""))
    for relay in report["relays"]:
        click.echo(f"  relay {relay['relay']}: {relay['handed_over']} handed over, {relay['sent']} sent")
    t = report["timeline"]
    click.echo(f"  peak {t['peak_per_second']:g} messages/s; {len(t['pauses'])} pause(s)")


@click.command("report")
@click.option("--list", "list_name", metavar="NAME", help="Only this list.")
@html_option
@json_option
@pass_app
def lists_report(app: App, list_name: str | None, html_file: Path | None, as_json: bool) -> None:
    """How the lists are doing, edition by edition: subscribers at each send, joins, leaves (by
    the one-click link, mailto, preferences, a complaint or an admin), bounces and complaints.

    Example: wip-mailer lists report --list stampa --html lists.html
    """
    from wip_mailer.reports import lists_page
    from wip_mailer.reports import lists_report as build

    report = build(app.engine, list_name)
    if html_file is not None:
        _write_html(html_file, lists_page(report, app.settings))
    if as_json:
        echo_json(report)
        return
    for entry in report["lists"]:
        members = ", ".join(f"{n} {status}" for status, n in sorted(entry["members"].items())) or "no members"
        click.echo(f"{entry['name']}: {members}")
        for e in entry["editions"]:
            at_send = "" if e["subscribers_at_send"] is None else f"{e['subscribers_at_send']} at the send, "
            click.echo(f"  {e['edition'] or '(before the first send)':<28} {at_send}+{e['joins']} joined, "
                       f"-{e['leaves_total']} left, {e['bounces']['hard']} hard bounces, "
                       f"{e['complaints']} complaints")
    if html_file is not None:
        click.echo(f"Wrote {html_file}.")
