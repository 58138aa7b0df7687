"""Bounces and complaints: bounces process|receive|parse|list|show (the feedback stage)."""

from __future__ import annotations

import gc
import json
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from wip_mailer.cli.common import App, echo_json, json_default, json_option, pass_app
from wip_mailer.errors import InvalidInputError


@click.group("bounces")
def bounces_group() -> None:
    """Bounces, complaints and mailto unsubscribes that come back to the bounce address.

    Example: wip-mailer bounces process --mbox /var/mail/bounces
    """


def _counts_sentence(counts: dict[str, Any]) -> str:
    kinds = ", ".join(f"{number} {kind}" for kind, number in counts["kinds"].items() if number)
    return (f"{counts['total']} messages: {kinds or 'nothing new'}; {counts['unmatched']} matched nobody "
            f"(kept: `wip-mailer bounces list --kind unmatched`), {counts['duplicates']} seen before.")


@bounces_group.command("process")
@click.option("--mbox", "mbox", type=click.Path(path_type=Path), help="An mbox file to read.")
@click.option("--maildir", "maildir", type=click.Path(path_type=Path), help="A Maildir folder to read.")
@click.option("--imap", "imap", metavar="URL",
              help="imaps://USER@HOST[:PORT][/FOLDER]; the password is WIP_MAILER_IMAP_PASSWORD.")
@json_option
@pass_app
def bounces_process(app: App, mbox: Path | None, maildir: Path | None, imap: str | None,
                    as_json: bool) -> None:
    """Read the mail that came back and apply it: suppress hard bounces, count soft ones,
    act on complaints and mailto unsubscribes. Processing the same messages again changes
    and counts nothing.

    Example: wip-mailer bounces process --maildir ~/Maildir/.bounces
    """
    from wip_mailer.feedback import effects, sources

    if sum(x is not None for x in (mbox, maildir, imap)) != 1:
        raise click.UsageError("Give exactly one of --mbox FILE, --maildir DIR or --imap URL.")
    engine, settings = app.engine, app.settings
    gc.freeze()  # as in `bounces parse`
    if imap is not None:
        counts = sources.process_imap(engine, settings, imap)
    elif mbox is not None:
        counts = effects.process_all(engine, settings, sources.mbox_messages(mbox), "mbox")
    else:
        assert maildir is not None
        counts = effects.process_all(engine, settings, sources.maildir_messages(maildir), "maildir")
    if as_json:
        echo_json(counts.as_dict())
    else:
        click.echo(_counts_sentence(counts.as_dict()))


@bounces_group.command("receive")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=2526, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@pass_app
def bounces_receive(app: App, host: str, port: int) -> None:
    """Receive bounces by SMTP (the MTA forwards the bounce address here) and process them.

    Only the bounce address and its VERP addresses are accepted. Each message is stored in
    WIP_MAILER_BOUNCE_SPOOL_DIR before the 250 reply and processed from there. Runs until
    stopped (Ctrl-C or SIGTERM).

    Example: wip-mailer bounces receive --host 127.0.0.1 --port 2526
    """
    from wip_mailer.feedback.receiver import Receiver

    stop = threading.Event()
    receiver = Receiver(app.engine, app.settings, host, port)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with receiver:
        click.echo(f"Receiving bounces for {app.settings.bounce_address} on {host}:{port}; "
                   f"spool {app.settings.bounce_spool_dir}.", err=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
    click.echo("Stopped.", err=True)


@bounces_group.command("parse")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
@pass_app
def bounces_parse(app: App, paths: tuple[Path, ...], as_json: bool) -> None:
    """Classify messages (files, folders, Maildirs, mbox files) without changing anything.

    With --json: one JSON object per line and message (file, kind, recipients, delivery_id,
    campaign_id).

    Example: wip-mailer bounces parse tests/data/bounces --json
    """
    from wip_mailer.feedback.classify import classify
    from wip_mailer.feedback.sources import named_messages

    settings = app.settings
    gc.freeze()  # the imports' objects need no collecting: every full collection would walk them
    out = sys.stdout
    for name, raw in named_messages(list(paths)):
        result = classify(raw, settings).as_json(name)
        if as_json:
            out.write(json.dumps(result, ensure_ascii=False, default=json_default) + "\n")
        else:
            who = ", ".join(f"{r['address']} {r['status']}".strip() for r in result["recipients"])
            out.write(f"{result['kind']:<13} {name}  {who}"
                      f"{'  delivery ' + str(result['delivery_id']) if result['delivery_id'] else ''}\n")


def _since(ctx: click.Context, param: click.Parameter, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    app = ctx.find_object(App)
    assert app is not None
    return value.replace(tzinfo=app.settings.tz)


@bounces_group.command("list")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]),
              callback=_since, help="Only messages received since this date (your timezone).")
@click.option("--kind", default=None,
              help="hard, soft, delay, complaint, unsubscribe, auto-reply, not-a-bounce or unmatched.")
@json_option
@pass_app
def bounces_list(app: App, since: datetime | None, kind: str | None, as_json: bool) -> None:
    """List the messages that came back, newest first.

    Example: wip-mailer bounces list --since 2026-12-01 --kind hard
    """
    from wip_mailer.feedback.report import list_inbound

    rows = list_inbound(app.engine, since=since, kind=kind)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("Nothing received.")
    for row in rows:
        who = ", ".join(r["address"] for r in row["recipients"]) or "-"
        where = f"campaign {row['campaign_id']}" if row["campaign_id"] else (
            "matched" if row["matched"] else "UNMATCHED")
        click.echo(f"{row['id']:>5}  {row['received_at']:%Y-%m-%d %H:%M}  {row['kind']:<12} {where:<12} "
                   f"{who}  {row['effect']}")


@bounces_group.command("show")
@click.argument("message_id", type=int)
@click.option("--raw", is_flag=True, help="Print the message itself (kept for unmatched messages).")
@json_option
@pass_app
def bounces_show(app: App, message_id: int, raw: bool, as_json: bool) -> None:
    """Show one received message (by the id `bounces list` shows), or its bytes with --raw.

    Example: wip-mailer bounces show 12 --raw
    """
    from wip_mailer.feedback.report import inbound_message

    row, data = inbound_message(app.engine, message_id)
    if raw:
        if data is None:
            raise InvalidInputError(f"Message {message_id} matched a delivery, so its bytes were not kept.")
        sys.stdout.buffer.write(data)
        return
    if as_json:
        echo_json(row)
        return
    for key, value in row.items():
        click.echo(f"{key}: {value}")
