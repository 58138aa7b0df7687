"""The static web archive: an index of sent editions, one page per edition, an Atom feed.

Serve ``DIR`` at ``settings.archive_url``: the email's "view in browser" link points to
``{archive_url}/{slug}/``, which is ``DIR/<slug>/index.html``. Edition pages are the email
rendered without personal links; an edition not sent (``include_unsent``) is marked as a
draft on its page. A build removes the pages an earlier build wrote for editions no longer
published (the list is kept in ``DIR/.wip-mailer-archive``; other files are never touched).
"""

from __future__ import annotations

import contextlib
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
from wip_mailer.templating import environment, load_labels, load_theme, render_template

MANIFEST = ".wip-mailer-archive"  # the slugs whose pages the last build wrote, one a line
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


@dataclass(frozen=True)
class ArchiveBuild:
    written: list[Path]  # the edition pages, index.html and feed.xml
    removed: list[str]  # slugs whose pages were removed: no longer published


def build_archive(
    session: Session, settings: Settings, out_dir: Path, *, include_unsent: bool = False
) -> ArchiveBuild:
    """Write the archive of sent editions (newest first) into ``out_dir``."""
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
        page_labels, _ = load_labels(settings, LABELS_FILE, rendered.language)
        html = _with_navigation(rendered.html, page_labels, settings)
        if edition.status != EditionStatus.SENT:
            html = _marked_as_draft(html, page_labels["archive_draft"])
        page = out_dir / edition.slug / "index.html"
        _write(page, html)
        written.append(page)
        entries.append(_entry(context, edition, settings, language))

    env = environment(settings)
    values = {
        "labels": labels,
        "lang": language,
        "editions": entries,
        "archive_url": settings.archive_url,
        "feed_url": f"{settings.archive_url}/feed.xml",
        "subscribe_url": f"{settings.base_url}/subscribe",
        "theme": load_theme(settings),
        "updated": max((e.updated for e in entries), default=_rfc3339(utcnow())),
        "generated": _rfc3339(utcnow()),
    }
    for name, target in ((INDEX_TEMPLATE, "index.html"), (FEED_TEMPLATE, "feed.xml")):
        path = out_dir / target
        _write(path, render_template(env, name, values))
        written.append(path)
    removed = _remove_unpublished(out_dir, [e.slug for e in editions])
    return ArchiveBuild(written, removed)


_BODY = re.compile(r"<body\b[^>]*>", re.I)
_HEAD_END = re.compile(r"</head>", re.I)


def _with_navigation(html: str, labels: dict[str, str], settings: Settings) -> str:
    """An edition page with links to the index, the feed and the subscribe form on top."""
    feed = f"{settings.archive_url}/feed.xml"
    links = ((f"{settings.archive_url}/", labels["all_issues"]), (feed, labels["feed"]),
             (f"{settings.base_url}/subscribe", labels["subscribe"]))
    nav = ('<nav style="max-width:600px;margin:0 auto;padding:12px 16px;text-align:center;'
           'font:15px/1.5 Helvetica,Arial,sans-serif">'
           + " · ".join(f'<a href="{escape(url)}" style="color:inherit">{escape(text)}</a>'
                        for url, text in links)
           + "</nav>")
    alternate = f'<link rel="alternate" type="application/atom+xml" href="{escape(feed)}">'
    html = _HEAD_END.sub(lambda m: alternate + m.group(), html, count=1)
    body = _BODY.search(html)
    return html[:body.end()] + nav + html[body.end():] if body else nav + html


def _marked_as_draft(html: str, text: str) -> str:
    """The page with a banner saying it is a draft, and kept out of search engines."""
    banner = ('<div role="note" style="background:#fff3cd;color:#5c4400;border-bottom:2px solid #e0b100;'
              'font:bold 16px/1.4 Helvetica,Arial,sans-serif;padding:12px 16px;text-align:center">'
              f"{escape(text)}</div>")
    html = _HEAD_END.sub(lambda m: '<meta name="robots" content="noindex">' + m.group(), html, count=1)
    body = _BODY.search(html)
    if body is None:
        return banner + html
    return html[:body.end()] + banner + html[body.end():]


def _remove_unpublished(out_dir: Path, slugs: list[str]) -> list[str]:
    """Remove the pages the previous build wrote for editions not in ``slugs``; record ``slugs``."""
    manifest = out_dir / MANIFEST
    try:
        before = manifest.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        before = []
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {manifest}: {exc.strerror}.") from None
    removed = []
    for slug in before:
        if slug in slugs or not _SAFE_SLUG.match(slug):
            continue
        page = out_dir / slug / "index.html"
        page.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # a folder holding other files stays
            page.parent.rmdir()
        removed.append(slug)
    _write(manifest, "".join(f"{slug}\n" for slug in slugs))
    return removed


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
