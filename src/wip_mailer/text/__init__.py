"""Shared text tools: editor Markdown → safe HTML and → plain text, one rule for which
links an email can carry, and date labels. Used by intake, editorial, assemble, render
and pre-flight; it imports nothing else of wip-mailer, so rendering never loads the importer.
"""

from wip_mailer.text.dates import DateSpan, looks_like_date_label, parse_date_label
from wip_mailer.text.links import EMAIL_URL_SCHEMES, usable_url
from wip_mailer.text.markdown import Link, dropped_links, extract_links, markdown_to_html
from wip_mailer.text.plaintext import WIDTH, link_as_text, markdown_to_text, wrap

__all__ = [
    "EMAIL_URL_SCHEMES",
    "WIDTH",
    "DateSpan",
    "Link",
    "dropped_links",
    "extract_links",
    "link_as_text",
    "looks_like_date_label",
    "markdown_to_html",
    "markdown_to_text",
    "parse_date_label",
    "usable_url",
    "wrap",
]
