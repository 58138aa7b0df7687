"""`wip-mailer serve`: the unsubscribe, confirmation and preferences pages."""

from __future__ import annotations

from pathlib import Path

import click

from wip_mailer.cli.common import App, pass_app

# uvicorn's options for `serve` (the unsubscribe benchmark serves its baseline with the same).
# No access log: a line per request costs CPU that a burst of one-click POSTs needs, and the
# HTTPS proxy in front logs the requests anyway.
UVICORN_OPTIONS: dict[str, object] = {"log_level": "warning", "access_log": False, "proxy_headers": True}


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--archive", "archive_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Also serve this folder (from `wip-mailer archive build`) at /archive/.")
@pass_app
def serve(app: App, host: str, port: int, archive_dir: Path | None) -> None:
    """Serve the unsubscribe (RFC 8058 one-click), confirmation and preferences pages.

    Put it behind an HTTPS reverse proxy at WIP_MAILER_BASE_URL.

    Example: wip-mailer serve --host 127.0.0.1 --port 8000 --archive archive
    """
    import uvicorn

    from wip_mailer.web import create_app

    application = create_app(app.settings, app.engine, archive_dir=archive_dir)
    click.echo(f"Serving on http://{host}:{port} (public address {app.settings.base_url}); Ctrl-C stops.")
    uvicorn.run(application, host=host, port=port, **UVICORN_OPTIONS)  # type: ignore[arg-type]
