"""Render an assembled edition: Jinja2 → MJML → HTML (mjml-python) → inlined CSS (premailer),
plus a plain-text twin from its own template.

CONTRACT (used by dispatch): ``render_edition`` returns a ``RenderedEdition`` whose HTML and
text carry the personal links as the placeholder URLs below; dispatch swaps in each
recipient's real URLs, so the expensive rendering happens once per edition.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cssutils
import jinja2
import nh3
from markupsafe import Markup, escape
from mjml import mjml2html
from premailer import Premailer

from wip_mailer.assemble import EditionContext
from wip_mailer.errors import TemplateRenderError
from wip_mailer.fields import image_url_problem
from wip_mailer.settings import Settings
from wip_mailer.templating import environment, load_labels, load_theme, render_template
from wip_mailer.text import WIDTH, markdown_to_html, markdown_to_text, usable_url, wrap

# Personal links, replaced per recipient at send time. Plain ASCII URL characters only,
# so they survive MJML, premailer and text wrapping unchanged.
UNSUBSCRIBE_URL_PLACEHOLDER = "https://personal.wip-mailer.invalid/unsubscribe"
PREFERENCES_URL_PLACEHOLDER = "https://personal.wip-mailer.invalid/preferences"

HTML_TEMPLATE = "email/edition.mjml.j2"
TEXT_TEMPLATE = "email/edition.txt.j2"
LABELS_FILE = "email/labels.toml"
# Item images in CSS pixels: the 600 px column less its 28 px side paddings. Outlook for
# Windows ignores width="100%" and shows an image at its file's size, so it gets a number.
IMAGE_WIDTH = 544


@dataclass(frozen=True)
class RenderedEdition:
    subject: str
    html: str
    text: str
    language: str = "it"  # the language of the labels actually used
    personal: bool = True  # whether html/text carry the personal-link placeholders
    warnings: tuple[str, ...] = field(default=())  # things the renderer noticed (for `check`)

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


# --- editor HTML: sanitised again here (defence in depth), placeholder links unwrapped ------

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "em", "h3", "h4", "h5", "h6", "hr", "i",
    "img", "li", "ol", "p", "s", "small", "span", "strong", "sub", "sup", "u", "ul",
}
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "width", "height"}, "ol": {"start"}}
_URL_SCHEMES = {"http", "https", "mailto", "tel"}
_ANCHOR = re.compile(r"<a(\s[^>]*)?>(.*?)</a>", re.S)
_HREF = re.compile(r'\bhref="([^"]*)"')


def _unwrap_dead_link(match: re.Match[str]) -> str:
    href = _HREF.search(match.group(1) or "")
    if href is None or usable_url(href.group(1)) is None:
        return match.group(2)  # a link the email cannot use reads as plain text, never a dead link
    return match.group(0)


@lru_cache(maxsize=4096)
def clean_html(html: str) -> Markup:
    """Editor HTML made safe for the email: an allowlist of tags, no dead links."""
    cleaned = nh3.clean(
        html, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=_URL_SCHEMES, link_rel=None
    )
    return Markup(breakable_urls(_ANCHOR.sub(_unwrap_dead_link, cleaned)))


# --- URLs shown as text: break points where a phone may wrap them --------------------------

_TAG_OR_TEXT = re.compile(r"(<[^>]*>)")
_URL_TEXT = re.compile(r"(?:https?://|www\.)[^\s<]{12,}")
_URL_PIECE = re.compile(r"&#?\w+;|.", re.S)
_BREAK_BEFORE = frozenset("/?#&=-_") | {"&amp;"}


def _with_breaks(match: re.Match[str]) -> str:
    out: list[str] = []
    previous = ""
    for piece in _URL_PIECE.findall(match.group(0)):
        if out and piece in _BREAK_BEFORE and previous not in _BREAK_BEFORE and previous != ":":
            out.append("<wbr>")
        out.append(piece)
        previous = piece
    return "".join(out)


def breakable_urls(html: str) -> str:
    """``<wbr>`` before the punctuation of every URL written out in the text (Chicago style:
    before a slash, ?, #, &, =, - or _), so a long URL wraps there on a phone rather than at
    whatever letter reaches the edge. Tags and attribute values are left alone."""
    if "://" not in html and "www." not in html:
        return html
    parts = _TAG_OR_TEXT.split(html)
    for index in range(0, len(parts), 2):  # even indexes: text between tags
        if "://" in parts[index] or "www." in parts[index]:
            parts[index] = _URL_TEXT.sub(_with_breaks, parts[index])
    return "".join(parts)


def _markdown_html(md: str) -> Markup:
    """For contexts built without HTML (the assembler always provides it)."""
    return clean_html(markdown_to_html(md)) if md.strip() else Markup("")


# --- CSS inlining without network access ----------------------------------------------------

def _refuse_fetch(url: str) -> None:
    """cssutils fetcher for @import: the renderer never goes to the network."""
    return None


@lru_cache(maxsize=64)
def _parse_css_offline(css_body: str, validate: bool) -> Any:
    parser = cssutils.CSSParser(fetcher=_refuse_fetch, validate=validate)
    return parser.parseString(css_body)


class _OfflinePremailer(Premailer):
    """premailer whose CSS parser cannot fetch @import URLs."""

    def _parse_css_string(self, css_body: str, validate: bool = True) -> Any:
        return _parse_css_offline(css_body, validate)


def inline_css(html: str) -> str:
    """Inline the style rules into the elements, keeping the doctype and the @media rules' !important."""
    # lxml reports the doctype upper-case; premailer keeps it only if the input matches.
    if html[:15].lower() == "<!doctype html>":
        html = "<!DOCTYPE html>" + html[15:]
    premailer = _OfflinePremailer(
        html,
        base_url=None,
        disable_link_rewrites=True,
        strip_important=False,  # @media rules need !important to beat the inline styles
        keep_style_tags=False,
        allow_network=False,
        allow_loading_external_files=False,
        external_styles=None,
        cssutils_logging_level=logging.CRITICAL,  # mso-* properties are not CSS; expected
        disable_validation=True,
        # MJML writes the width and height attributes Outlook needs; premailer would turn
        # an image's CSS width:100% into width="100%", which Outlook for Windows ignores.
        disable_basic_attributes=["width", "height"],
    )
    # lxml does not know <wbr> is a void element and writes it as <wbr></wbr>.
    out = premailer.transform(pretty_print=False).replace("<wbr></wbr>", "<wbr>")
    if not out.lstrip()[:9].lower().startswith("<!doctype"):
        out = "<!DOCTYPE html>\n" + out
    return str(out)


def compile_mjml(source: str, template: str = HTML_TEMPLATE) -> str:
    try:
        return str(mjml2html(source))
    except ValueError as exc:
        raise TemplateRenderError(
            f"The MJML produced by {template} does not compile: {exc} "
            "(check the template's tags, and that text is escaped)."
        ) from None


def clear_caches() -> None:
    """Forget sanitised HTML, Markdown-to-text results and parsed CSS (for benchmarks)."""
    clean_html.cache_clear()
    markdown_to_text.cache_clear()
    _parse_css_offline.cache_clear()


# --- the view the templates see -------------------------------------------------------------

@dataclass(frozen=True)
class ItemView:
    title: str
    anchor: str  # the id the index links to
    date_label: str | None
    body_html: Markup
    body_md: str
    image_url: str | None
    image_alt: str | None


@dataclass(frozen=True)
class SectionView:
    name: str
    intro_html: Markup
    intro_md: str
    items: tuple[ItemView, ...]


def _underline(text: str, char: str = "-") -> str:
    longest = max((len(line) for line in wrap(str(text)).split("\n")), default=0)
    return char * min(longest, WIDTH)


def email_environment(settings: Settings) -> jinja2.Environment:
    """The shared strict environment with the email templates' filters."""
    env = environment(settings)
    env.filters.setdefault("md_text", markdown_to_text)
    env.filters.setdefault("wrap", wrap)
    env.filters.setdefault("underline", _underline)
    return env


def view_online_url(settings: Settings, slug: str) -> str:
    """The archive copy of an edition (``wip-mailer archive build`` writes it there)."""
    return f"{settings.archive_url}/{slug}/"


def _preheader(context: EditionContext) -> str:
    titles = [item.title for section in context.sections for item in section.items]
    text = " · ".join(titles)
    return text if len(text) <= 140 else text[:139].rsplit(" ", 1)[0] + "…"


def safe_image_url(url: str | None) -> str | None:
    """The item's image URL if it is an absolute http(s) URL; anything else (javascript:, data:,
    a stored row from before the check at entry) is dropped, and the pre-flight check says so."""
    return url if url and image_url_problem(url) is None else None


def template_context(
    context: EditionContext, settings: Settings, *, personal: bool
) -> dict[str, Any]:
    """Everything the email templates may use (both the HTML and the text template)."""
    labels, language = load_labels(settings, LABELS_FILE, context.language)
    position = itertools.count(1)  # anchors by reading order: unique whatever the item ids
    sections = tuple(
        SectionView(
            name=section.name,
            intro_html=clean_html(section.intro_html) if section.intro_html else _markdown_html(
                section.intro_md),
            intro_md=section.intro_md,
            items=tuple(
                ItemView(
                    title=item.title,
                    anchor=f"item-{next(position)}",
                    date_label=item.date_label,
                    body_html=clean_html(item.body_html) if item.body_html else _markdown_html(
                        item.body_md),
                    body_md=item.body_md,
                    image_url=safe_image_url(item.image_url),
                    image_alt=item.image_alt,
                )
                for item in section.items
            ),
        )
        for section in context.sections
    )
    contact_md = "  \n".join(context.contact_lines) or settings.sender_address
    contact_html = clean_html(context.contact_html) if context.contact_html else _markdown_html(
        contact_md)
    items = [item for section in sections for item in section.items]
    show_index = 0 < settings.email_index_min_items <= len(items)
    return {
        "edition": context,
        "theme": load_theme(settings),
        "sections": sections,
        "index": items if show_index else [],
        "image_width": IMAGE_WIDTH,
        "privacy_url": settings.privacy_url,
        "labels": labels,
        "lang": language,
        "credit": context.credit or labels.get("credit", ""),
        "contact_md": contact_md,
        "contact_html": contact_html,
        "preheader": _preheader(context),
        "personal": personal,
        "view_online_url": view_online_url(settings, context.slug),
        "unsubscribe_url": UNSUBSCRIBE_URL_PLACEHOLDER if personal else None,
        "preferences_url": PREFERENCES_URL_PLACEHOLDER if personal else None,
        "archive_url": settings.archive_url,
    }


def render_edition(
    context: EditionContext, settings: Settings, *, personal: bool = True
) -> RenderedEdition:
    """The email of an edition: HTML (inlined CSS) and its plain-text twin.

    ``personal=True``: both parts carry UNSUBSCRIBE_URL_PLACEHOLDER and
    PREFERENCES_URL_PLACEHOLDER for dispatch to replace per recipient.
    ``personal=False`` (web archive): no personal links at all.
    """
    env = email_environment(settings)
    values = template_context(context, settings, personal=personal)
    mjml_source = render_template(env, HTML_TEMPLATE, values)
    html = inline_css(compile_mjml(mjml_source))
    text = render_template(env, TEXT_TEMPLATE, values)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    warnings: list[str] = []
    if values["lang"] != context.language:
        warnings.append(
            f"The templates have no labels for language {context.language!r}; "
            f"the {values['lang']!r} labels were used."
        )
    return RenderedEdition(
        subject=context.subject,
        html=html,
        text=text,
        language=values["lang"],
        personal=personal,
        warnings=tuple(warnings),
    )


def with_personal_links(
    rendered: RenderedEdition, unsubscribe_url: str, preferences_url: str
) -> RenderedEdition:
    """The edition with its placeholders replaced (preview uses dummy links)."""

    def swap(body: str, unsubscribe: str, preferences: str) -> str:
        return body.replace(UNSUBSCRIBE_URL_PLACEHOLDER, unsubscribe).replace(
            PREFERENCES_URL_PLACEHOLDER, preferences
        )

    return RenderedEdition(
        subject=rendered.subject,
        html=swap(rendered.html, str(escape(unsubscribe_url)), str(escape(preferences_url))),
        text=swap(rendered.text, unsubscribe_url, preferences_url),
        language=rendered.language,
        personal=False,
        warnings=rendered.warnings,
    )
