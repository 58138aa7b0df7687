"""Normalising what people type: addresses, language and country codes, tags."""

from __future__ import annotations

import re
import unicodedata
from email.utils import parseaddr
from functools import cache, lru_cache

from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email

from wip_mailer.errors import InvalidInputError


class InvalidAddressError(InvalidInputError):
    """An email address that cannot be used."""


# A short, valid domain to check a local part against when the real domain is known good.
_STAND_IN_DOMAIN = "a.it"
# Local parts that are plainly valid: dot-separated runs of letters, digits, _ + and -.
# A strict subset of RFC 5322 dot-atoms, all of which email-validator accepts unchanged
# (tests/test_audience_addresses.py checks this against email-validator itself).
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")


@lru_cache(maxsize=100_000)
def _checked_domain(domain: str) -> str:
    """The normalised domain, validated once per distinct domain (raises EmailNotValidError)."""
    return str(validate_email(f"postmaster@{domain}", check_deliverability=False).domain)


def normalise_email(raw: str) -> str:
    """The canonical form of an address: validated (no DNS look-up) and lower-cased.

    Lower-casing the local part too makes "one subscriber per address" case-insensitive;
    no mailbox provider our subscribers use distinguishes case there.

    Speed (an import checks 100,000 addresses): a contact list repeats a few thousand
    domains at most, so for ASCII addresses the domain is validated by email-validator
    once per distinct domain (cached), and the local part is accepted directly when it is
    plainly valid (``_PLAIN_LOCAL``), else checked by email-validator against a short
    stand-in domain. Anything else, and any address either check refuses, goes through
    one full ``validate_email`` call, whose message is the one reported.
    """
    text = raw.strip()
    if not text:
        raise InvalidAddressError("The email address is empty.")
    local, at, domain = text.rpartition("@")
    if at and local and domain and text.isascii() and len(text) <= 200 and '"' not in text:
        try:
            domain_part = _checked_domain(domain)
            if len(local) <= 64 and _PLAIN_LOCAL.fullmatch(local):
                local_part = local
            else:
                checked_local = validate_email(f"{local}@{_STAND_IN_DOMAIN}", check_deliverability=False)
                local_part = checked_local.local_part
            return f"{local_part}@{domain_part}".lower()
        except EmailNotValidError:
            pass  # the full check below gives the reason
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddressError(f"{text!r} is not a valid email address: {exc}") from None
    return checked.normalized.lower()


@cache
def known_languages() -> frozenset[str]:
    """ISO 639-1 two-letter language codes (from the CLDR data babel ships)."""
    return frozenset(k for k in map(str, Locale("en").languages) if len(k) == 2 and k.isalpha())


@cache
def known_countries() -> frozenset[str]:
    """ISO 3166-1 alpha-2 country codes (CLDR territories), upper-case."""
    return frozenset(k for k in map(str, Locale("en").territories) if len(k) == 2 and k.isalpha())


def address_from_cell(raw: str) -> tuple[str, str]:
    """(address, display name) from what a spreadsheet cell holds; the address is not yet validated.

    Contact lists copied out of mail programs carry ``Name <addr>``, ``<addr>`` and
    ``mailto:addr``; a dot after the domain (``addr.``, the end of a sentence or the DNS
    root) names the same mailbox. Anything else is left for ``normalise_email`` to judge.
    """
    text = raw.strip()
    name = ""
    if text.endswith(">") and "<" in text:
        parsed_name, parsed = parseaddr(text)
        if parsed:
            name, text = " ".join(parsed_name.split()), parsed.strip()
    if text[:7].lower() == "mailto:":
        text = text[7:].split("?", 1)[0].strip()
    if text.endswith(".") and "@" in text and not text.endswith(".."):
        text = text[:-1]
    return text, name


def _folded(text: str) -> str:
    """Case-, accent- and spacing-insensitive key: "Français " -> "francais"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


# Names are looked up in the languages a Turin contact list is written in.
_NAME_LOCALES = ("en", "it", "fr", "de", "es")


@cache
def _language_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for locale in _NAME_LOCALES:  # "English", "Inglese", "Anglais"...
        for code, name in Locale(locale).languages.items():
            if code in known_languages():
                names.setdefault(_folded(name), code)
    for code in sorted(known_languages()):  # each language's own name: "Deutsch", "español"
        try:
            own = Locale(code).get_display_name(code)
        except UnknownLocaleError:
            continue
        if own:
            names.setdefault(_folded(own), code)
    return names


@cache
def _country_names() -> dict[str, str]:
    names: dict[str, str] = {"uk": "GB", "usa": "US", "u.s.a.": "US", "u.k.": "GB"}
    for locale in _NAME_LOCALES:
        for code, name in Locale(locale).territories.items():
            if len(code) == 2 and code.isalpha():
                names.setdefault(_folded(name), code.upper())
    return names


_LANGUAGE_TAG = re.compile(r"([a-z]{2})(?:[-_][a-z0-9]{1,8})*")


def language_code(raw: str) -> str | None:
    """The ISO 639-1 code for ``it``, ``IT``, ``it-IT``, ``en_GB``, ``Italiano``, ``English``…; else None."""
    text = raw.strip()
    match = _LANGUAGE_TAG.fullmatch(text.lower())
    if match and match[1] in known_languages():
        return match[1]
    return _language_names().get(_folded(text))


def country_code(raw: str) -> str | None:
    """The ISO 3166-1 alpha-2 code for ``IT``, ``it``, ``Italy``, ``Italia``, ``UK``…; else None."""
    text = raw.strip()
    if text.upper() in known_countries():
        return text.upper()
    return _country_names().get(_folded(text))


def normalise_language(raw: str) -> str:
    code = language_code(raw)
    if code is None:
        raise InvalidInputError(f"{raw.strip()!r} is not a two-letter language code such as it or en.")
    return code


def normalise_country(raw: str) -> str:
    code = country_code(raw)
    if code is None:
        raise InvalidInputError(f"{raw.strip()!r} is not a two-letter country code such as IT or FR.")
    return code


def normalise_tags(raw: str | list[str]) -> list[str]:
    """Tags are lower-case words without commas; "press, Partner" -> ["partner", "press"].

    A semicolon separates tags too: spreadsheets whose separator is a comma are often
    filled in with "press; partner".
    """
    if isinstance(raw, str):
        return list(_split_tags(raw))
    return sorted({t.strip().lower() for t in raw if t.strip()})


@lru_cache(maxsize=1024)  # an import's 100,000 tags cells hold a few combinations of a few tags
def _split_tags(text: str) -> tuple[str, ...]:
    return tuple(normalise_tags(text.replace(";", ",").split(",")))
