"""Set-up commands: init, db upgrade, dev-smtp."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from wip_mailer import db
from wip_mailer.cli.common import App, pass_app, warn
from wip_mailer.settings import load_settings, mark_env_file_demo, write_env_file

if TYPE_CHECKING:
    from wip_mailer.devsmtp import Received


@click.command()
@click.option("--demo", is_flag=True,
              help="Mark the installation as a demo (WIP_MAILER_DEMO=true): sends may use the "
                   "placeholder addresses.")
@pass_app
def init(app: App, demo: bool) -> None:
    """Create a `.env` (with a fresh secret key) and the database; safe to repeat.

    Until you set WIP_MAILER_FROM, WIP_MAILER_BASE_URL and WIP_MAILER_ARCHIVE_URL to the
    newsletter's own, a real send is refused (test copies and dry runs work), unless the
    installation is a demo.

    Example: wip-mailer init --demo
    """
    env_path = Path(".env")
    if write_env_file(env_path, demo=demo):
        click.echo(f"Wrote {env_path} with a new secret key; edit it to set your SMTP server"
                   + (" (a demo installation)." if demo else ", sender and public addresses."))
    else:
        click.echo(f"Kept the existing {env_path}.")
        if demo and mark_env_file_demo(env_path):
            click.echo(f"Set WIP_MAILER_DEMO=true in {env_path}: a demo installation.")
    settings = load_settings(warn=warn)  # re-read: the file just written is now part of them
    engine = db.create_database(settings.database_url)
    revision = db.current_revision(engine)
    where = db.sqlite_path(settings.database_url) or "the PostgreSQL database"
    click.echo(f"Database {where} is ready (schema {revision}).")


@click.group("db")
def db_group() -> None:
    """Database maintenance.

    Example: wip-mailer db upgrade
    """


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Apply schema migrations to an existing database, keeping its data.

    Example: wip-mailer db upgrade
    """
    url = app.settings.database_url
    path = db.sqlite_path(url)
    if path is not None and not path.exists():
        from wip_mailer.errors import DatabaseError

        raise DatabaseError(f"No database at {path}: run `wip-mailer init` first.")
    before, after = db.upgrade(db.make_engine(url))
    if before == after:
        click.echo(f"Database already at the latest schema ({after}).")
    else:
        click.echo(f"Database upgraded from {before or 'empty'} to {after}.")


@click.command("dev-smtp")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=1025, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--maildir", default="outbox", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Maildir folder where received messages are stored.")
def dev_smtp(host: str, port: int, maildir: Path) -> None:
    """Run an SMTP server that keeps every message in a Maildir (for trying things out).

    Example: wip-mailer dev-smtp --port 1025 --maildir outbox
    """
    from wip_mailer.devsmtp import CaptureServer  # aiosmtpd: only for this command

    def report(message: Received) -> None:
        click.echo(
            f"{message.mail_from} -> {', '.join(message.rcpt_tos)}: {message.subject!r} "
            f"({message.size} bytes) saved as {maildir}/new/{message.key}"
        )

    stop = threading.Event()
    server = CaptureServer(host, port, maildir, on_message=report)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"Listening for SMTP on {host}:{port}, saving to {maildir}/ (Ctrl-C stops).")
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    click.echo("Stopped.")
