"""One check for every single-line value that can reach an email header or an SMTP command.

Subjects, titles, names, list descriptions, attribute values, header-bound settings and
test addresses are checked where they are written (one sentence naming the field), and
again where a header or SMTP command is built, so a value that slipped in before this
check (an old row) is refused there rather than sent.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from wip_mailer.errors import InvalidInputError

# C0 controls (CR, LF, tab, NUL, 0x01...), DEL, C1 controls (NEL 0x85...) and the Unicode
# line and paragraph separators: str.splitlines() and some mail readers break lines at these.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Never in an address on the wire: the controls, spaces and the brackets that would end
# "RCPT TO:<...>" early (quoted local parts with spaces are refused at entry anyway).
UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x20\x7f-\x9f<>\u2028\u2029]")
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class ControlCharacterError(InvalidInputError):
    """A single-line value holds a line break or another control character."""


def control_character(value: str) -> str | None:
    """How the first forbidden character of ``value`` reads in a sentence, or None if it has none."""
    if value.isprintable():  # none of them is printable; this is checked ten times faster
        return None
    found = CONTROL_CHARACTERS.search(value)
    if found is None:
        return None
    char = found.group()
    if char in _LINE_BREAKS:
        return "a line break"
    if char == "\t":
        return "a tab"
    return f"a control character (U+{ord(char):04X})"


def check_single_line(what: str, value: str, *, show: bool = False,
                      error: type[InvalidInputError] = ControlCharacterError) -> str:
    """``value`` unchanged, or ``error`` naming the field ``what`` (the value only if ``show``).

    Values that may be personal data (a subscriber's name) are not shown.
    """
    kind = control_character(value)
    if kind is None:
        return value
    shown = f" {value[:60]!r}" if show else ""
    raise error(f"The {what}{shown} contains {kind}, which is not allowed: it must be one line of "
                "printable text.")


# --- image URLs ----------------------------------------------------------------------------

_IMAGE_SCHEMES = ("http", "https")


def image_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an item's image (only absolute http and https URLs can), or None."""
    if CONTROL_CHARACTERS.search(url) or " " in url:
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in _IMAGE_SCHEMES or not parts.netloc:
        return "only absolute http:// and https:// URLs are allowed"
    return None


def check_image_url(url: str) -> str:
    """``url`` unchanged, or InvalidInputError with one sentence."""
    problem = image_url_problem(url)
    if problem is not None:
        raise InvalidInputError(f"The image URL {url[:80]!r} cannot be used: {problem}.")
    return url
