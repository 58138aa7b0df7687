"""What every importer of another tool's export shares: columns mapped to ours by name,
every other column kept as an attribute, the person's standing there (active, left,
bounced...) and their consent events kept (no database)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from wip_mailer.audience.addresses import (
    country_code,
    language_code,
    normalise_tags,
)
from wip_mailer.audience.csv_reader import Rejection, unescape_formula
from wip_mailer.audience.csv_rows import (
    Correction,
    ImportedEvent,
    SubscriberRow,
    describe_correction,
    header_key,
    parse_time,
    unique_address,
)
from wip_mailer.errors import InvalidInputError
from wip_mailer.fields import control_character

# Roles a column can play; any column without one is kept as the attribute of its name.
FIELD_ROLES = ("email", "name", "first_name", "last_name", "language", "organisation", "country", "tags")
Cell = Callable[[str], str]  # the stripped value of a role's column ("" when absent)


class Standing(NamedTuple):
    """Where the person stood in the other tool."""

    status: str = "active"  # csv_rows.ROW_STATUSES
    events: tuple[ImportedEvent, ...] = ()
    suppress: str | None = None


def is_true(cell: str) -> bool:
    return cell.strip().lower() in ("true", "t", "yes", "1")


def event_at(kind: str, at: datetime | None, ip: str = "", detail: str = "") -> ImportedEvent | None:
    """An event at ``at`` (None when there is no time)."""
    if at is None:
        return None
    return ImportedEvent(kind, at, ip or None, detail[:500] or None)


def attribute_value(cell: str) -> Any:
    """A kept column's value: JSON ``true``/``false``, objects and lists parsed; other text
    (numbers included, so a post code keeps its leading zero) stays text."""
    if cell in ("true", "false"):
        return cell == "true"
    if cell[:1] in "[{":
        try:
            return json.loads(cell)
        except ValueError:
            return cell
    return cell


class TableFormat:
    """A CSV export whose header names the columns; subclasses say which and how."""

    name: ClassVar[str]  # as given to --format
    label: ClassVar[str]  # as shown to the editor
    signature: ClassVar[frozenset[str]]  # header keys (csv_rows.header_key) that identify it
    roles: ClassVar[dict[str, str]]  # header key -> role (FIELD_ROLES or one the subclass reads)
    json_roles: ClassVar[frozenset[str]] = frozenset()  # a JSON object spread into attributes

    def __init__(self, path: Path, header: list[str]) -> None:
        self.header = header
        self.width = len(header)
        self.index: dict[str, int] = {}
        self.attributes: list[tuple[int, str]] = []
        for position, raw in enumerate(header):
            role = self.roles.get(header_key(raw))
            if role is not None and role not in self.index:
                self.index[role] = position
            elif raw.strip():
                self.attributes.append((position, " ".join(raw.split())))
        if "email" not in self.index:
            raise InvalidInputError(f"The file {path} has no email column, which a {self.label} export has.")
        self.keys = {header_key(raw) for raw in header}
        # Each role a row is asked for, and its column's cell; a role the header lacks reads
        # the empty cell that parse() adds after the last column.
        self._roles = tuple(dict.fromkeys((*FIELD_ROLES, *self.json_roles, *self.roles.values())))
        self._cells_of_roles = _picker([self.index.get(role, self.width) for role in self._roles])
        self._attribute_names = [attribute for _, attribute in self.attributes]
        self._cells_of_attributes = _picker([position for position, _ in self.attributes])

    @classmethod
    def recognises(cls, keys: set[str]) -> bool:
        return cls.signature <= keys

    def mapping(self) -> list[tuple[str, str]]:
        """(column as written, what it becomes), in the file's order, for --dry-run."""
        roles = {position: role for role, position in self.index.items()}
        kept = dict(self.attributes)
        return [(raw, roles[i] if i in roles else f"attr.{kept[i]}" if i in kept else "(ignored)")
                for i, raw in enumerate(self.header)]

    def standing(self, cell: Cell) -> Standing:
        """The person's status and consent events; ValueError (one phrase) when they cannot be read."""
        return Standing()

    def tags(self, text: str) -> list[str]:
        return normalise_tags(text)

    def parse(self, line: int, values: list[str], seen: dict[str, int]) -> SubscriberRow | Rejection:
        width = self.width
        if len(values) > width and any(v.strip() for v in values[width:]):
            extra = ", ".join(v for v in values[width:] if v.strip())
            return Rejection(line, f"has {len(values)} values but the header has {width} columns "
                                   f"(extra: {extra})", values)
        cells = list(map(str.strip, values[:width]))
        if "\n'" in "\n" + "\n".join(cells):  # a cell starting with ' (rare): one search per row
            cells = [unescape_formula(c) for c in cells]  # the ' before a formula, see csv_reader
        cells += [""] * (width + 1 - len(cells))
        cell: Cell = dict(zip(self._roles, self._cells_of_roles(cells), strict=True)).__getitem__

        raw_email = cell("email")
        found = unique_address(line, raw_email, values, seen)
        if isinstance(found, Rejection):
            return found
        email, display_name = found
        fields: dict[str, Any] = {}
        name = " ".join((cell("name") or f"{cell('first_name')} {cell('last_name')}").split()) or display_name
        if name:
            if kind := control_character(name):
                return Rejection(line, f"the name contains {kind}, which cannot go in an email header",
                                 values)
            fields["name"] = name
        if text := cell("organisation"):
            fields["organisation"] = " ".join(text.split())
        if text := cell("language"):
            if (code := language_code(text)) is None:
                return Rejection(line, f"{text!r} is not a language code such as it or en", values)
            fields["language"] = code
        if text := cell("country"):
            if (code := country_code(text)) is None:
                return Rejection(line, f"{text!r} is not a two-letter country code such as IT or FR", values)
            fields["country"] = code
        if text := cell("tags"):
            fields["tags"] = self.tags(text)
        attributes: dict[str, Any] = {}
        for role in self.json_roles:
            if text := cell(role):
                try:
                    data = json.loads(text)
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    return Rejection(line, f"the {role} column is not a JSON object", values)
                attributes.update(data)
        texts = self._cells_of_attributes(cells)
        if control_character("".join(texts)):  # one search per row
            attribute, kind = next((a, k) for a, t in zip(self._attribute_names, texts, strict=True)
                                   if (k := control_character(t)))
            return Rejection(line, f"the column {attribute} contains {kind}; a kept column must be "
                                   "one line of printable text", values)
        # Most are plain text, which attribute_value would keep as it is.
        attributes.update({attribute: attribute_value(text) if text[0] in "tf[{" else text
                           for attribute, text in zip(self._attribute_names, texts, strict=True) if text})
        if attributes:
            fields["attributes"] = attributes
        try:
            standing = self.standing(cell)
        except ValueError as exc:
            return Rejection(line, str(exc), values)
        what = describe_correction(raw_email, email)
        correction = None if what is None else Correction(line, raw_email, email, what)
        return SubscriberRow(line, values, email, fields, standing.status, standing.events,
                             standing.suppress, correction)


def _picker(positions: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """The cells at ``positions`` as a tuple, in one call (an itemgetter of one position gives
    the cell itself, of none an error)."""
    if len(positions) > 1:
        return itemgetter(*positions)
    return lambda cells: tuple(cells[position] for position in positions)


def time_of(cell: Cell, role: str, column: str) -> datetime | None:
    """The time in ``cell(role)``, None when empty (ValueError naming ``column`` when not a time)."""
    text = cell(role)
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"the {column} {text!r} is not a date and time") from None


def quoted_tags(text: str) -> list[str]:
    """Mailchimp's TAGS cell: ``"Tag A","Tag B"`` (the CSV cell ``\"\"\"Tag A\"\"\",...``)."""
    return list(_quoted_tags(text))


@lru_cache(maxsize=1024)  # an audience has a few tags, so a few combinations fill 100,000 cells
def _quoted_tags(text: str) -> tuple[str, ...]:
    if '""' not in text:  # no quote inside a tag: split without a CSV parser
        return tuple(normalise_tags([tag.strip().strip('"') for tag in text.split('","')]))
    return tuple(normalise_tags(next(csv.reader([text]), [])))
