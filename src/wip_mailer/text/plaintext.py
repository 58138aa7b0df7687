"""Markdown → readable plain text for the text/plain twin of the email.

Not an HTML-to-text dump: the item's Markdown is walked token by token, so links keep
their URLs (``text <URL>``), links whose URL an email cannot use (``#``, relative; the
rule is ``text.links.usable_url``, as in the HTML) become their bare text, lists keep
their markers and paragraphs are wrapped at 78 columns without ever splitting a URL.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache

from markdown_it.token import Token

from wip_mailer.text.links import EmailMarkdown, usable_url

WIDTH = 78
_MD = EmailMarkdown("commonmark")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


def link_as_text(text: str, url: str | None) -> str:
    """How a link reads in plain text: the URL is there whenever the email can use it."""
    text = text.strip()
    url = usable_url(url)
    if url is None:
        return text
    if url.lower().startswith("mailto:"):
        address = url[len("mailto:"):]
        return address if text in ("", address, url) else f"{text} <{address}>"
    bare = _SCHEME.sub("", url).rstrip("/")
    if text in ("", url) or text.rstrip("/") == bare:
        return url
    return f"{text} <{url}>"


def wrap(text: str, width: int = WIDTH, indent: str = "", subsequent: str | None = None) -> str:
    """Wrap each line of ``text``; words (URLs) longer than ``width`` stay whole."""
    wrapper = textwrap.TextWrapper(
        width=width,
        initial_indent=indent,
        subsequent_indent=indent if subsequent is None else subsequent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    lines: list[str] = []
    for line in text.split("\n"):
        lines.extend(wrapper.wrap(line) or [indent.rstrip()])
    return "\n".join(lines)


@dataclass
class _Block:
    text: str
    indent: str = ""
    subsequent: str = ""
    in_list: bool = False


@lru_cache(maxsize=4096)  # pure; an edition is rendered again on every check and send
def markdown_to_text(md: str, width: int = WIDTH) -> str:
    """Plain text of a Markdown fragment, wrapped at ``width``; blocks separated by blank lines."""
    blocks: list[_Block] = []
    markers: list[list[int]] = []  # per open list: [next number] (ordered) or [] (bullets)
    quote_depth = 0
    pending_marker: str | None = None
    for token in _MD.parse(md or ""):
        if token.type == "bullet_list_open":
            markers.append([])
        elif token.type == "ordered_list_open":
            markers.append([int(token.attrs.get("start", 1) or 1)])
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            markers.pop()
        elif token.type == "list_item_open":
            current = markers[-1]
            if current:
                pending_marker = f"{current[0]}. "
                current[0] += 1
            else:
                pending_marker = "- "
        elif token.type == "blockquote_open":
            quote_depth += 1
        elif token.type == "blockquote_close":
            quote_depth -= 1
        elif token.type == "inline":
            text = _inline_text(token.children or [])
            if not text.strip():
                continue
            base = "> " * quote_depth + "  " * max(len(markers) - 1, 0)
            if pending_marker is not None:
                blocks.append(
                    _Block(text, base + pending_marker, base + " " * len(pending_marker), True)
                )
                pending_marker = None
            else:
                indent = base + ("  " if markers else "")
                blocks.append(_Block(text, indent, indent, bool(markers)))
        elif token.type in ("fence", "code_block"):
            blocks.append(_Block(token.content.rstrip("\n")))
        elif token.type == "hr":
            blocks.append(_Block("-" * 10))
    # List items sit on consecutive lines; other blocks are separated by a blank line.
    result: list[str] = []
    for index, block in enumerate(blocks):
        if index and not (block.in_list and blocks[index - 1].in_list):
            result.append("")
        result.append(wrap(block.text, width, block.indent, block.subsequent))
    return "\n".join(result)


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    link_stack: list[tuple[str | None, int]] = []
    for child in children:
        kind = child.type
        if kind == "text" or kind == "code_inline":
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "link_open":
            href = child.attrs.get("href")
            link_stack.append((str(href) if href is not None else None, len(parts)))
        elif kind == "link_close" and link_stack:
            href, start = link_stack.pop()
            text = "".join(parts[start:])
            del parts[start:]
            parts.append(link_as_text(text, href))
        elif kind == "image":
            alt = child.content or "".join(c.content for c in child.children or [])
            src = child.attrs.get("src")
            parts.append(link_as_text(alt, str(src) if src else None))
        elif kind == "html_inline":
            continue  # raw tags carry no text worth keeping
    return re.sub(r"[ \t]+", " ", "".join(parts)).strip()
