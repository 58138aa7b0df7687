"""The one rule for links in an email: which URLs a link may keep.

An email has no base address, so only an absolute URL leads anywhere: http(s) with a
host, mailto and tel. Everything else (a relative path, a ``#`` placeholder or anchor, an
empty target, javascript: or any other scheme) is dropped and the link reads as its text,
in the HTML and in the text twin alike; pre-flight lists every link dropped this way.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from markdown_it import MarkdownIt

EMAIL_URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})


def usable_url(href: str | None) -> str | None:
    """``href`` (trimmed) if an email can link to it, else None: the link becomes its text."""
    href = (href or "").strip()
    try:
        parts = urlsplit(href)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in EMAIL_URL_SCHEMES:
        return None
    if scheme in ("http", "https") and not parts.hostname:
        return None
    if scheme in ("mailto", "tel") and not parts.path:
        return None
    return href


class EmailMarkdown(MarkdownIt):
    """markdown-it whose own link filter is off, so that ``usable_url`` alone decides.

    markdown-it leaves a link it refuses (``[x](javascript:...)``) as literal brackets and
    URL; here it stays a link, and the caller drops its URL by the rule above. The HTML is
    cleaned by nh3 with the same schemes afterwards, so nothing unsafe gets through.
    """

    def validateLink(self, url: str) -> bool:
        return True
