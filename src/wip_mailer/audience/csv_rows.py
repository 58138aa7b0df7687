"""Subscriber rows from a spreadsheet's CSV export: columns and values (no database).

Over the shared reader (``csv_reader``: encodings, bounded records, bad quotes), this maps
the columns of wip-mailer's own import format, in any order; header names ignore case,
accents, spaces and dashes, and the common English and Italian spellings are accepted
(``HEADER_ALIASES``):

- ``email`` (required): one address per row; ``Name <addr>``, ``mailto:addr`` and a
  trailing dot are cleaned up;
- ``name`` (or ``first name`` + ``last name``, joined), ``organisation``;
- ``country``: a code (IT) or a name (Italy, Italia);
- ``language``: a code (it, IT, it-IT) or a name (Italiano, English); empty means the
  list's language;
- ``tags``: words separated by commas or semicolons, e.g. ``press;partner``;
- ``attr.NAME``: a free attribute called NAME (e.g. ``attr.sector``);
- ``status``: as written by ``subscribers export`` (empty means active); ``pending``,
  ``unsubscribed``, ``bounced`` and ``complained`` rows are imported as such (on record,
  never mailed); ``suppressed`` (a suppression reason) and ``consent`` (the consent
  history as JSON) complete what ``subscribers export`` writes, so that it round-trips.

A file without a header line is accepted only when it has a single column of
addresses. An unknown header stops the import before any row is read (a typo must not
silently drop a column); columns with an empty header are ignored when empty. A bad
row (invalid address, duplicate in the file, unknown value, a cell too long, a quote
that would swallow the rows after it) is a ``Rejection`` with its line number; reading
goes on. A ``'`` that ``subscribers export`` put before a cell starting with ``= + - @``
(so that spreadsheets do not run it as a formula) is removed.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from wip_mailer.audience.addresses import (
    InvalidAddressError,
    address_from_cell,
    country_code,
    language_code,
    normalise_email,
    normalise_tags,
)
from wip_mailer.audience.csv_reader import (
    Rejection,
    unescape_formula,
)
from wip_mailer.errors import InvalidInputError
from wip_mailer.fields import control_character

KNOWN_COLUMNS = ("email", "name", "language", "organisation", "country", "tags", "status", "suppressed",
                 "consent", "attr.NAME")
# Row statuses (the subscriber's own, models.SubscriberStatus); all but active and pending
# are people on record who are never mailed.
ROW_STATUSES = ("active", "pending", "unsubscribed", "bounced", "complained")
EVENT_KINDS = ("subscribe", "request", "confirm", "unsubscribe", "unsuppress")
# Header spellings seen in real exports (Excel, Outlook, Google Contacts, Mailchimp, Italian
# offices), compared after header_key: case, accents, spaces, dashes and dots do not matter.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "email": ("e-mail", "mail", "email address", "e-mail address", "indirizzo email",
              "indirizzo e-mail", "indirizzo di posta elettronica", "posta elettronica", "e-mail 1 - value"),
    "name": ("full name", "display name", "nome e cognome", "nominativo", "nome completo"),
    "first_name": ("first name", "given name", "nome"),
    "last_name": ("last name", "surname", "family name", "cognome"),
    "language": ("lingua", "lang", "locale", "idioma", "langue", "preferred language"),
    "organisation": ("organization", "organizzazione", "company", "azienda", "ente", "societa",
                     "organisation name", "organization name", "istituzione"),
    "country": ("paese", "nazione", "country code", "stato", "country/region", "pays"),
    "tags": ("tag", "etichette", "etichetta", "labels", "categorie"),
    "status": ("stato iscrizione",),
    "suppressed": (),
    "consent": (),
}
_PARTS = ("first_name", "last_name")  # joined into name when the file has no name column


# The per-row types are NamedTuples: immutable as a frozen dataclass, and four times faster
# to make, which an import of 100,000 rows does a few hundred thousand times.
class ImportedEvent(NamedTuple):
    """A consent event the file records (another tool's opt-in time and IP, a withdrawal)."""

    kind: str  # consent.EventKind
    at: datetime | None  # None: the time of the import
    ip: str | None = None
    detail: str | None = None
    source: str | None = None  # None: the import's source
    user_agent: str | None = None
    text_version: str | None = None


@dataclass(frozen=True)
class Correction:
    """An address the importer changed, said out loud."""

    line: int
    before: str
    after: str
    what: str  # e.g. "trailing dot removed, case folded"


class SubscriberRow(NamedTuple):
    line: int
    values: list[str]
    email: str
    fields: dict[str, Any]  # only the columns present in the file (None: empty cell)
    status: str = "active"  # one of ROW_STATUSES
    events: tuple[ImportedEvent, ...] = ()  # empty: the import itself is the consent event
    suppress: str | None = None  # a suppression reason to record (bounced, complained, blocklisted...)
    correction: Correction | None = None


def describe_correction(cell: str, email: str) -> str | None:
    """What cleaning ``cell`` into ``email`` changed, or None when it is the same address."""
    text = cell.strip()
    if text == email:
        return None
    steps = []
    if text.endswith(">") and "<" in text:
        steps.append("unwrapped from Name <addr>")
        text = text[text.rfind("<") + 1:-1].strip()
    if text[:7].lower() == "mailto:":
        steps.append("mailto: removed")
        text = text[7:].split("?", 1)[0].strip()
    if text.endswith(".") and not email.endswith("."):
        steps.append("trailing dot removed")
        text = text[:-1]
    if text != email:
        steps.append("case folded" if text.lower() == email else "normalised")
    return ", ".join(steps)


_SPACED_OFFSET = re.compile(r" ([+-]\d{2}:?\d{2})$")  # Curated: "2021-02-04 07:55:20 +0000"


def parse_time(cell: str) -> datetime:
    """An export's timestamp as UTC: ISO 8601 (``2023-01-15 10:20:30``, ``...T10:20:30Z``,
    ``... UTC``) or Unix seconds; a time without offset is UTC. Raises ValueError."""
    text = cell.strip()
    try:
        value = datetime.fromisoformat(text)  # the common case, kept fast: an import parses 100,000
    except ValueError:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        value = datetime.fromisoformat(_SPACED_OFFSET.sub(r"\1", text.removesuffix(" UTC")))
    if value.tzinfo is None:  # as replace(tzinfo=UTC), without its slow keyword parsing
        return datetime.combine(value, value.time(), UTC)
    return value.astimezone(UTC)


def parse_consent(cell: str) -> tuple[ImportedEvent, ...]:
    """The ``consent`` column written by ``subscribers export`` (raises ValueError)."""
    items = json.loads(cell)
    if not isinstance(items, list):
        raise ValueError("not a list")
    events = []
    for item in items:
        if not isinstance(item, dict) or item.get("kind") not in EVENT_KINDS or not item.get("at"):
            raise ValueError("not an event")
        events.append(ImportedEvent(
            kind=item["kind"], at=parse_time(str(item["at"])), ip=item.get("ip"), detail=item.get("detail"),
            source=item.get("source") or "", user_agent=item.get("user_agent"),
            text_version=item.get("text_version")))
    return tuple(events)


def header_key(raw: str) -> str:
    """Case, accents, spaces, dashes, underscores and dots do not matter: " E-Mail " -> "email"."""
    decomposed = unicodedata.normalize("NFKD", raw.casefold())
    return re.sub(r"[\W_]+", "", "".join(c for c in decomposed if not unicodedata.combining(c)))


_HEADER_NAMES = {header_key(alias): name for name, aliases in HEADER_ALIASES.items()
                 for alias in (name, *aliases)}


@dataclass(frozen=True)
class Columns:
    raw: list[str]  # header as written, for the rejects file
    names: list[str]  # canonical names, same order ("" for a column without a header)
    has_header: bool = True

    def index(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None


def _columns(path: Path, header: list[str]) -> Columns:
    names: list[str] = []
    for position, raw in enumerate(header, start=1):
        text = raw.strip()
        if not text:
            names.append("")  # Excel saves empty trailing columns; a value under one rejects its row
            continue
        if text[:5].lower() == "attr." and len(text) > 5:
            name = "attr." + text[5:].strip()  # attribute names keep their case
        else:
            found = _HEADER_NAMES.get(header_key(text))
            if found is None:
                raise InvalidInputError(
                    f"The file {path} has the unknown column {text!r} (column {position}); known columns are "
                    f"{', '.join(KNOWN_COLUMNS)}: rename it, or call it attr.{header_key(text) or 'NAME'} "
                    "to keep it as an attribute, or delete it."
                )
            name = found
        if name in names:
            first = header[names.index(name)].strip()
            raise InvalidInputError(
                f"The file {path} has two {name} columns ({first!r}, column {names.index(name) + 1}, and "
                f"{text!r}, column {position}); delete one of them."
            )
        names.append(name)
    if "email" not in names:
        raise InvalidInputError(
            f"The file {path} has no email column; its header must name the columns "
            f"({', '.join(KNOWN_COLUMNS)}), with email required."
        )
    if "name" in names:
        # A full name wins; the parts are not columns of their own.
        names = ["" if n in _PARTS else n for n in names]
    return Columns(raw=header, names=names)


def _headerless(path: Path, first: list[str]) -> Columns | None:
    """Columns for a file whose first line is already data, or None when it is a header.

    A single column of addresses needs no header (a list pasted from a mail program);
    with more columns the meaning of each cannot be guessed, so the file is refused.
    """
    cells = [c.strip() for c in first]
    if not any("@" in c and _is_address(c) for c in cells):
        return None
    if len([c for c in cells if c]) == 1:
        return Columns(raw=["email"], names=["email"], has_header=False)
    raise InvalidInputError(
        f"The file {path} has no header line: its first line is data ({', '.join(c for c in cells if c)}); "
        "add a first line naming the columns, e.g. email,name,language."
    )


def subscriber_columns(path: Path, first: list[str]) -> Columns:
    """The columns the first line names (or a headerless column of addresses)."""
    return _headerless(path, first) or _columns(path, first)


def _is_address(cell: str) -> bool:
    try:
        normalise_email(address_from_cell(cell)[0])
    except InvalidAddressError:
        return False
    return True


def unique_address(line: int, cell: str, values: list[str], seen: dict[str, int]
                   ) -> tuple[str, str] | Rejection:
    """The row's normalised address and display name, or why the row is rejected (an invalid
    address, or one already on an earlier line of the file: ``seen`` maps address → line)."""
    address, display_name = address_from_cell(cell)
    try:
        email = normalise_email(address)
    except InvalidAddressError as exc:
        return Rejection(line, str(exc).rstrip("."), values)
    first = seen.get(email)
    if first is not None:
        return Rejection(line, f"{email} is a duplicate of line {first}", values)
    seen[email] = line
    return email, display_name


def parse_row(line: int, values: list[str], columns: Columns,
               seen: dict[str, int]) -> SubscriberRow | Rejection:
    width = len(columns.names)
    if len(values) > width:
        extra = [v for v in values[width:] if v.strip()]
        if extra:
            return Rejection(line, f"has {len(values)} values but the header has {width} "
                                   f"columns (extra: {', '.join(extra)})", values)
        values = values[:width]
    cells: dict[str, str] = {}
    for position, (name, value) in enumerate(zip(columns.names, values, strict=False), start=1):
        value = value.strip()
        if value[:1] == "'":
            value = unescape_formula(value)
        if name:
            cells[name] = value
        elif value and columns.raw[position - 1].strip():
            continue  # a part of the name beside a full-name column: the full name wins
        elif value:
            return Rejection(line, f"has the value {value!r} in column {position}, which has no header",
                             values)
    found = unique_address(line, cells.get("email", ""), values, seen)
    if isinstance(found, Rejection):
        return found
    email, display_name = found
    if any(part in cells for part in _PARTS):
        cells["name"] = " ".join(cells.pop(part, "") for part in _PARTS)
    if display_name and not cells.get("name"):
        cells["name"] = display_name
    fields: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    status, suppress = "active", None
    events: tuple[ImportedEvent, ...] = ()
    for name, cell in cells.items():
        if name == "email":
            continue
        if name == "language" and cell:
            code = language_code(cell)
            if code is None:
                return Rejection(line, f"{cell!r} is not a language code such as it or en, nor a language "
                                       "name such as Italiano or English", values)
            cell = code
        elif name == "country" and cell:
            code = country_code(cell)
            if code is None:
                return Rejection(line, f"{cell!r} is not a two-letter country code such as IT or FR, "
                                       "nor a country name such as Italia or France", values)
            cell = code
        elif name == "status":
            status = cell.lower() or "active"
            if status not in ROW_STATUSES:
                return Rejection(line, f"the status is {cell!r} in the file; known statuses are "
                                       f"{', '.join(ROW_STATUSES)}", values)
            continue
        elif name == "suppressed":
            if kind := control_character(cell):
                return Rejection(line, f"the suppression reason contains {kind}", values)
            suppress = cell[:32] or None
            continue
        elif name == "consent":
            if cell:
                try:
                    events = parse_consent(cell)
                except (ValueError, TypeError):
                    return Rejection(line, "the consent column is not the JSON list of events that "
                                           "subscribers export writes", values)
            continue
        elif name in ("name", "organisation"):
            cell = " ".join(cell.split())  # a cell's line breaks (Alt+Enter) are layout: joined
            if name == "name" and (kind := control_character(cell)):
                return Rejection(line, f"the name contains {kind}, which cannot go in an email header",
                                 values)
        if name.startswith("attr."):
            if kind := control_character(cell):
                return Rejection(line, f"the attribute {name[5:]} contains {kind}; attribute values must "
                                       "be one line of printable text", values)
            if cell:
                attributes[name[5:]] = cell
            continue
        if name == "tags":
            fields["tags"] = normalise_tags(cell) if cell else []
        else:
            fields[name] = cell or None
    if attributes:
        fields["attributes"] = attributes
    if status in ("bounced", "complained") and suppress is None:
        suppress = status
    what = describe_correction(cells.get("email", ""), email)
    correction = None if what is None else Correction(line, cells.get("email", "").strip(), email, what)
    return SubscriberRow(line, values, email, fields, status, events, suppress, correction)




def email_in_column(delimiter: str, index: int | None) -> Callable[[str], bool]:
    """Whether a line, read on its own, is a row: an address in the email column (any
    column while the header is not known)."""
    def row_like(line: str) -> bool:
        if "@" not in line:
            return False
        try:
            cells = next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error:
            return False
        if index is not None:
            cells = cells[index:index + 1]
        return any("@" in c and _is_address(unescape_formula(c.strip())) for c in cells)
    return row_like

