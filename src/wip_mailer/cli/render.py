"""Rendering commands: preview, check, archive build."""

from __future__ import annotations

from pathlib import Path

import click

from wip_mailer import db
from wip_mailer.cli.common import App, echo_json, json_option, pass_app

# The renderer (MJML, premailer) is imported inside each command: `--help` does not need it.


@click.command()
@click.argument("slug")
@click.option("--out", "html_out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the HTML email here.")
@click.option("--text", "text_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the plain-text part here.")
@click.option("--screenshot", "screenshot_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a full-length PNG (needs headless Chromium).")
@click.option("--width", default=375, show_default=True, type=click.IntRange(200, 3000),
              help="Screenshot width in CSS pixels (375 is a phone).")
@pass_app
def preview(app: App, slug: str, html_out: Path, text_out: Path | None,
            screenshot_out: Path | None, width: int) -> None:
    """Write an edition as a subscriber would see it (with dummy unsubscribe links).

    Example: wip-mailer preview 2024-01 --out preview.html --text preview.txt --screenshot phone.png
    """
    from wip_mailer.preview import write_preview

    with db.session_scope(app.engine) as session:
        result = write_preview(
            session, app.settings, slug, html_out,
            text_out=text_out, screenshot_out=screenshot_out, width=width,
        )
    for path in result.written:
        click.echo(f"Wrote {path}")
    click.echo(f"HTML: {result.rendered.html_bytes / 1024:.1f} KiB. Subject: {result.rendered.subject}")
    if result.screenshot_error:
        click.echo(f"Error: {result.screenshot_error}", err=True)
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("slug")
@click.option("--strict", is_flag=True, help="Exit non-zero on warnings too.")
@json_option
@pass_app
def check(app: App, slug: str, strict: bool, as_json: bool) -> None:
    """Pre-flight check of an edition: size, template errors, items, links, images.

    It checks the edition as a real send would: placeholder settings (example.org
    addresses, links to 127.0.0.1, the template's secret key) block it unless
    WIP_MAILER_DEMO=true. Blocking problems exit with status 1; warnings only with --strict.

    Example: wip-mailer check 2024-01 --strict
    """
    from wip_mailer.preflight import run_preflight

    with db.session_scope(app.engine) as session:
        report = run_preflight(session, app.settings, slug, real_send=True)
    if as_json:
        echo_json(report.as_dict())
    else:
        size = f"{report.html_bytes / 1024:.1f} KiB" if report.rendered else "not rendered"
        click.echo(f"Edition {slug}: HTML {size}.")
        for message in report.blocking:
            click.echo(f"BLOCKING: {message}")
        for message in report.warnings:
            click.echo(f"Warning: {message}")
        if report.passes(strict):
            click.echo("Ready to send." if not report.warnings else
                       f"Ready to send, with {len(report.warnings)} warning(s).")
        elif report.ok:
            click.echo(f"Not ready (--strict): {len(report.warnings)} warning(s).")
        else:
            click.echo(f"Not ready: {len(report.blocking)} blocking problem(s).")
    if not report.passes(strict):
        raise click.exceptions.Exit(1)


@click.group("archive")
def archive_group() -> None:
    """The static web archive of sent editions.

    Example: wip-mailer archive build public/archive
    """


@archive_group.command("build")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--include-unsent", is_flag=True,
              help="Also list editions not sent yet, each page marked as a draft (for a preview).")
@click.option("--reports", "with_reports", is_flag=True,
              help="Also write every campaign's report and the lists' report, in a folder the archive "
                   "does not link (its name is derived from the secret key).")
@pass_app
def archive_build(app: App, out_dir: Path, include_unsent: bool, with_reports: bool) -> None:
    """Write the archive: index.html, one DIR/<slug>/index.html per edition, feed.xml.

    Serve DIR at WIP_MAILER_ARCHIVE_URL: the email's "view in browser" link points there.
    With --reports, the reports go to DIR/reports-<key-derived name>/ (printed), linked from nowhere.

    Example: wip-mailer archive build public/archive
    """
    from wip_mailer.archive import build_archive

    with db.session_scope(app.engine) as session:
        build = build_archive(session, app.settings, out_dir, include_unsent=include_unsent)
    pages = [p for p in build.written if p.parent != out_dir]
    click.echo(f"Wrote {len(pages)} edition page(s), index.html and feed.xml in {out_dir}.")
    if build.removed:
        click.echo(f"Removed the pages of {len(build.removed)} edition(s) no longer published: "
                   f"{', '.join(build.removed)}.")
    if with_reports:
        from wip_mailer.reports import write_reports

        reports = write_reports(app.engine, app.settings, out_dir)
        click.echo(f"Wrote {len(reports.written)} report page(s) in {reports.folder} (not linked from the "
                   "archive; keep the folder name private).")
