"""Editor Markdown → sanitised HTML, and the links an item's Markdown carries.

markdown-it-py renders (raw HTML in the Markdown is escaped, not passed through), then
nh3 cleans the result with a short allow-list, so whatever an editor pastes can only
produce plain formatting and http/https/mailto/tel links. A link whose URL an email
cannot use (``[text](#)``, a relative path; see ``text.links``) is rendered as its text:
in an email it could only be a dead anchor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import nh3
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

from wip_mailer.text.links import EMAIL_URL_SCHEMES, EmailMarkdown, usable_url

ALLOWED_TAGS = frozenset({
    "a", "p", "br", "strong", "b", "em", "i", "u", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "h3", "h4", "h5", "h6", "hr", "img",
})
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"}}


@dataclass(frozen=True)
class Link:
    text: str
    url: str | None  # None: no URL an email can use ("#", a relative path): shown as text

    @property
    def placeholder(self) -> bool:
        return self.url is None

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "url": self.url, "placeholder": self.placeholder}


_BARE_URL = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
_URL_TAIL = ".,;:!?'\"’”»"


def _url_end(url: str) -> str:
    """A bare URL without the sentence's punctuation after it; a ")" only if it closes one in the URL."""
    while url and (url[-1] in _URL_TAIL or (url[-1] == ")" and url.count(")") > url.count("("))):
        url = url[:-1]
    return url


def _link_bare_urls(state: StateCore) -> None:
    """Make a URL written as plain text ("see https://example.org.") a link, as mail clients
    would (not all do, and the link check should see it too)."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        in_link = 0
        for child in block.children:
            in_link += child.type == "link_open"
            in_link -= child.type == "link_close"
            if child.type != "text" or in_link or "://" not in child.content:
                children.append(child)
                continue
            text, at = child.content, 0
            for match in _BARE_URL.finditer(text):
                url = _url_end(match[0])
                if match.start() > at:
                    children.append(_text_token(text[at:match.start()]))
                opening = Token("link_open", "a", 1)
                opening.attrs = {"href": url}
                children += [opening, _text_token(url), Token("link_close", "a", -1)]
                at = match.start() + len(url)
            if at < len(text):
                children.append(_text_token(text[at:]))
        block.children = children


def _text_token(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


@lru_cache(maxsize=1)
def _parser() -> EmailMarkdown:
    parser = EmailMarkdown("commonmark", {"html": False})
    parser.core.ruler.push("bare_urls", _link_bare_urls)
    return parser


def _walk_links(tokens: list[Token]) -> list[tuple[Token, list[Token], int, int]]:
    """(inline token, its children, index of link_open, index of link_close) for every link."""
    found = []
    for token in tokens:
        children = token.children or []
        open_at: int | None = None
        for i, child in enumerate(children):
            if child.type == "link_open":
                open_at = i
            elif child.type == "link_close" and open_at is not None:
                found.append((token, children, open_at, i))
                open_at = None
    return found


def _text_of(children: list[Token]) -> str:
    return "".join(c.content for c in children if c.type in ("text", "code_inline")).strip()


def _written_links(md: str) -> list[tuple[str, str]]:
    """(text, href) of every link in ``md``, in reading order, URLs as parsed."""
    return [
        (_text_of(children[start + 1:end]), str(children[start].attrGet("href") or ""))
        for _token, children, start, end in _walk_links(_parser().parse(md))
    ]


def extract_links(md: str) -> list[Link]:
    """Every link in ``md``, in reading order; links an email cannot use have ``url=None``."""
    return [Link(text, usable_url(href)) for text, href in _written_links(md)]


def dropped_links(md: str) -> list[tuple[str, str]]:
    """(text, href) of every link in ``md`` that the email shows as plain text."""
    return [(text, href) for text, href in _written_links(md) if usable_url(href) is None]


def markdown_to_html(md: str) -> str:
    """Markdown → sanitised HTML (safe for an email body and a web page)."""
    if not md.strip():
        return ""
    parser = _parser()
    tokens = parser.parse(md)
    # Last link first, so the indices of earlier links in the same paragraph stay valid.
    for token, _children, start, end in reversed(_walk_links(tokens)):
        children = token.children or []
        if usable_url(str(children[start].attrGet("href") or "")) is None:
            token.children = children[:start] + children[start + 1:end] + children[end + 1:]
    html = parser.renderer.render(tokens, parser.options, {})
    return nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(EMAIL_URL_SCHEMES),
        strip_comments=True,
    ).strip()
