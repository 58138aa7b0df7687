"""Reports: how a send went and how the lists are doing, without tracking anyone.

The last stage of the pipeline: it reads the delivery ledger, the bounce and complaint
records and the consent events, and nothing upstream imports it. ``campaign_report`` and
``lists_report`` give the figures (``--json``); ``campaign_page`` and ``lists_page`` the
static HTML; ``write_reports`` puts every report beside the archive, at a path that the
archive never links and that only someone holding the secret key can derive.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Engine

from wip_mailer.reports.campaign import campaign_report
from wip_mailer.reports.lists import lists_report
from wip_mailer.reports.pages import campaign_page, lists_page
from wip_mailer.reports.sql import CAMPAIGN
from wip_mailer.settings import Settings

__all__ = ["ReportsBuild", "campaign_page", "campaign_report", "lists_page", "lists_report", "reports_folder",
           "write_reports"]


@dataclass(frozen=True)
class ReportsBuild:
    folder: Path
    written: list[Path]


def reports_folder(settings: Settings) -> str:
    """The folder name under the archive: unlinked, and not guessable without the secret key."""
    key = settings.require_secret_key().encode()
    return "reports-" + hmac.new(key, b"wip-mailer reports folder", hashlib.sha256).hexdigest()[:20]


def write_reports(engine: Engine, settings: Settings, archive_dir: Path) -> ReportsBuild:
    """Write ``lists.html`` and one ``campaign-ID.html`` per campaign under the archive."""
    from wip_mailer.archive import _write  # the archive's atomic write: readers never see half a page

    folder = archive_dir / reports_folder(settings)
    with engine.connect() as connection:
        ids = connection.execute(sa.select(CAMPAIGN.c.id).order_by(CAMPAIGN.c.id)).scalars().all()
    written = []
    for campaign_id in ids:
        path = folder / f"campaign-{campaign_id}.html"
        _write(path, campaign_page(campaign_report(engine, settings, campaign_id), settings))
        written.append(path)
    path = folder / "lists.html"
    _write(path, lists_page(lists_report(engine), settings))
    written.append(path)
    index = folder / "index.html"
    links = "".join(f'<li><a href="{p.name}">{p.name}</a></li>' for p in written)
    _write(index, '<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="robots" content="noindex">'
                  '<meta name="viewport" content="width=device-width, initial-scale=1">'
                  "<title>Reports</title>"
                  f"</head><body><ul>{links}</ul></body></html>\n")
    written.append(index)
    return ReportsBuild(folder, written)
