"""The static web archive: an index of sent editions, one page per edition, an Atom feed.

Serve ``DIR`` at ``settings.archive_url``: the email's "view in browser" link points to
``{archive_url}/{slug}/``, which is ``DIR/<slug>/index.html``. Edition pages are the email
rendered without personal links.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from babel.dates import format_date
from markupsafe import escape
from sqlalchemy import nulls_last
from sqlmodel import Session, col, select

from wip_mailer.assemble import EditionContext, assemble_edition
from wip_mailer.db import utcnow
from wip_mailer.errors import InvalidInputError
from wip_mailer.models import Edition, EditionStatus
from wip_mailer.render import LABELS_FILE, render_edition, view_online_url
from wip_mailer.settings import Settings
from wip_mailer.templating import environment, load_labels, render_template

INDEX_TEMPLATE = "archive/index.html.j2"
FEED_TEMPLATE = "archive/feed.xml.j2"
_SAFE_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ArchiveEntry:
    slug: str
    title: str
    subject: str
    url: str
    path: str
    date: str | None
    updated: str
    titles: tuple[str, ...]
    summary_html: str


def build_archive(
    session: Session, settings: Settings, out_dir: Path, *, include_unsent: bool = False
) -> list[Path]:
    """Write the archive of sent editions (newest first) into ``out_dir``; returns the files."""
    query = select(Edition)
    if not include_unsent:
        query = query.where(col(Edition.status) == EditionStatus.SENT)
    query = query.order_by(
        nulls_last(col(Edition.sent_at).desc()), col(Edition.created_at).desc(), col(Edition.slug)
    )
    editions = list(session.exec(query))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"Cannot create the archive folder {out_dir}: {exc.strerror}.") from None

    labels, language = load_labels(settings, LABELS_FILE, "")
    written: list[Path] = []
    entries: list[ArchiveEntry] = []
    for edition in editions:
        if not _SAFE_SLUG.match(edition.slug):
            raise InvalidInputError(
                f"The edition slug {edition.slug!r} cannot be a folder name in the archive."
            )
        context = assemble_edition(session, edition.slug)
        rendered = render_edition(context, settings, personal=False)
        page = out_dir / edition.slug / "index.html"
        _write(page, rendered.html)
        written.append(page)
        entries.append(_entry(context, edition, settings, language))

    env = environment(settings)
    values = {
        "labels": labels,
        "lang": language,
        "editions": entries,
        "archive_url": settings.archive_url,
        "feed_url": f"{settings.archive_url}/feed.xml",
        "updated": max((e.updated for e in entries), default=_rfc3339(utcnow())),
        "generated": _rfc3339(utcnow()),
    }
    for name, target in ((INDEX_TEMPLATE, "index.html"), (FEED_TEMPLATE, "feed.xml")):
        path = out_dir / target
        _write(path, render_template(env, name, values))
        written.append(path)
    return written


def _entry(context: EditionContext, edition: Edition, settings: Settings, language: str) -> ArchiveEntry:
    titles = tuple(item.title for section in context.sections for item in section.items)
    when = edition.sent_at
    stamp = when or edition.updated_at or edition.created_at
    return ArchiveEntry(
        slug=edition.slug,
        title=context.title,
        subject=context.subject,
        url=view_online_url(settings, edition.slug),
        path=f"{edition.slug}/",
        date=format_date(when.astimezone(settings.tz).date(), "long", locale=language) if when else None,
        updated=_rfc3339(stamp),
        titles=titles,
        summary_html="<ul>" + "".join(f"<li>{escape(t)}</li>" for t in titles) + "</ul>",
    )


def _rfc3339(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _write(path: Path, text: str) -> None:
    """Write atomically: a reader (the web server) never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
