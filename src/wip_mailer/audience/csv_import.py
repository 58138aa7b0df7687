"""Importing subscribers from a spreadsheet's CSV export.

Files as spreadsheets save them: UTF-8 (a BOM is fine), UTF-16 with a BOM (Excel's
"Unicode text"), or Windows-1252 when the bytes are not UTF-8 (Excel's "CSV" on a
Western-European Windows); separated by ``,`` ``;`` or tabs (detected from the header
line). A workbook (.xlsx, .xls, .ods) or other binary file is refused with one sentence.
Columns, in any order; header names ignore case, accents, spaces and dashes, and the
common English and Italian spellings are accepted (``HEADER_ALIASES``):

- ``email`` (required): one address per row; ``Name <addr>``, ``mailto:addr`` and a
  trailing dot are cleaned up;
- ``name`` (or ``first name`` + ``last name``, joined), ``organisation``;
- ``country``: a code (IT) or a name (Italy, Italia);
- ``language``: a code (it, IT, it-IT) or a name (Italiano, English); empty means the
  list's language;
- ``tags``: words separated by commas or semicolons, e.g. ``press;partner``;
- ``attr.NAME``: a free attribute called NAME (e.g. ``attr.sector``);
- ``status``: as written by ``subscribers export``; only empty or ``active`` rows import.

A file without a header line is accepted only when it has a single column of
addresses. An unknown header stops the import before any row is read (a typo must not
silently drop a column); columns with an empty header are ignored when empty. A bad
row (invalid address, duplicate in the file, unknown value, suppressed or unsubscribed
address) never stops it: it is reported with its line number and reason and written to
the rejects file, and every good row is imported. Importing the same file again changes
nothing. Rows are processed in chunks with bulk statements inside one transaction.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col

from wip_mailer.audience.addresses import (
    InvalidAddressError,
    address_from_cell,
    country_code,
    language_code,
    normalise_email,
    normalise_tags,
)
from wip_mailer.audience.confirmation import ConfirmationRequest, send_confirmations
from wip_mailer.audience.consent import EventKind
from wip_mailer.audience.lists import get_list
from wip_mailer.audience.suppression import email_hash
from wip_mailer.db import session_scope, utcnow
from wip_mailer.errors import InvalidInputError
from wip_mailer.fields import control_character
from wip_mailer.models import (
    ConsentEvent,
    MailingList,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from wip_mailer.settings import Settings

KNOWN_COLUMNS = ("email", "name", "language", "organisation", "country", "tags", "status", "attr.NAME")
# Header spellings seen in real exports (Excel, Outlook, Google Contacts, Mailchimp, Italian
# offices), compared after _header_key: case, accents, spaces, dashes and dots do not matter.
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
}
_PARTS = ("first_name", "last_name")  # joined into name when the file has no name column
CHUNK = 5000
CHUNK = 5000

_subscriber = Subscriber.__table__  # type: ignore[attr-defined]
_membership = Membership.__table__  # type: ignore[attr-defined]
_event = ConsentEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str
    values: list[str]


@dataclass
class ImportReport:
    path: Path
    rows: int = 0
    added: int = 0  # new members of the list (active, or pending with --double-opt-in)
    reactivated: int = 0  # pending members made active
    updated: int = 0  # existing subscribers whose details changed
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    rejects_path: Path | None = None
    confirmations_sent: int = 0
    encoding: str = "UTF-8"  # how the file was read (UTF-8, UTF-16 or Windows-1252)
    has_header: bool = True


@dataclass(frozen=True)
class _Row:
    line: int
    values: list[str]
    email: str
    fields: dict[str, Any]  # only the columns present in the file (None: empty cell)


# Signatures of files that are not text: zip (xlsx, ods), OLE2 (xls), PDF.
_BINARY_SIGNATURES = {b"PK\x03\x04": "a spreadsheet workbook (.xlsx or .ods)",
                      b"\xd0\xcf\x11\xe0": "an old Excel workbook (.xls)", b"%PDF": "a PDF document"}
_SAVE_AS = 'open it in the spreadsheet and save it as "CSV UTF-8"'


@dataclass(frozen=True)
class _Text:
    text: str
    encoding: str  # as shown to the editor
    bom: bool


def _decode(path: Path) -> _Text:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"The file {path} does not exist.") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a folder, not a CSV file.") from None
    except OSError as exc:
        raise InvalidInputError(f"The file {path} cannot be read: {exc.strerror}.") from None
    for signature, kind in _BINARY_SIGNATURES.items():
        if data.startswith(signature):
            raise InvalidInputError(f"The file {path} is {kind}, not CSV text; {_SAVE_AS}.")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel "Unicode text" is UTF-16 with a BOM
        try:
            return _Text(data.decode("utf-16"), "UTF-16", True)
        except UnicodeDecodeError:
            raise InvalidInputError(
                f"The file {path} starts like UTF-16 text but is not; {_SAVE_AS}.") from None
    if b"\x00" in data:  # no text encoding a spreadsheet writes without a BOM has NUL bytes
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise InvalidInputError(f"The file {path} is not CSV text (a NUL byte on line {line}); {_SAVE_AS}.")
    has_bom = data.startswith(b"\xef\xbb\xbf")
    try:
        return _Text(data.decode("utf-8-sig"), "UTF-8", has_bom)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    # Excel's plain "CSV" on Windows writes the ANSI code page, Windows-1252 in Western
    # Europe (a superset of Latin-1 for text). Valid UTF-8 never gets here, so a UTF-8
    # file is never misread; cp1252 leaves five bytes undefined, which still refuse.
    try:
        return _Text(data.decode("cp1252"), "Windows-1252", False)
    except UnicodeDecodeError:
        pass
    raise InvalidInputError(
        f"The file {path} is neither UTF-8 nor Windows-1252 text (first bad byte on line {line}); "
        f"{_SAVE_AS}."
    )


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _header_key(raw: str) -> str:
    """Case, accents, spaces, dashes, underscores and dots do not matter: " E-Mail " -> "email"."""
    decomposed = unicodedata.normalize("NFKD", raw.casefold())
    return re.sub(r"[\W_]+", "", "".join(c for c in decomposed if not unicodedata.combining(c)))


_HEADER_NAMES = {_header_key(alias): name for name, aliases in HEADER_ALIASES.items()
                 for alias in (name, *aliases)}


@dataclass(frozen=True)
class _Columns:
    raw: list[str]  # header as written, for the rejects file
    names: list[str]  # canonical names, same order ("" for a column without a header)
    has_header: bool = True

    def index(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None


def _columns(path: Path, header: list[str]) -> _Columns:
    names: list[str] = []
    for position, raw in enumerate(header, start=1):
        text = raw.strip()
        if not text:
            names.append("")  # Excel saves empty trailing columns; a value under one rejects its row
            continue
        if text[:5].lower() == "attr." and len(text) > 5:
            name = "attr." + text[5:].strip()  # attribute names keep their case
        else:
            found = _HEADER_NAMES.get(_header_key(text))
            if found is None:
                raise InvalidInputError(
                    f"The file {path} has the unknown column {text!r} (column {position}); known columns are "
                    f"{', '.join(KNOWN_COLUMNS)}: rename it, or call it attr.{_header_key(text) or 'NAME'} "
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
    return _Columns(raw=header, names=names)


def _headerless(path: Path, first: list[str]) -> _Columns | None:
    """Columns for a file whose first line is already data, or None when it is a header.

    A single column of addresses needs no header (a list pasted from a mail program);
    with more columns the meaning of each cannot be guessed, so the file is refused.
    """
    cells = [c.strip() for c in first]
    if not any("@" in c and _is_address(c) for c in cells):
        return None
    if len([c for c in cells if c]) == 1:
        return _Columns(raw=["email"], names=["email"], has_header=False)
    raise InvalidInputError(
        f"The file {path} has no header line: its first line is data ({', '.join(c for c in cells if c)}); "
        "add a first line naming the columns, e.g. email,name,language."
    )


def _is_address(cell: str) -> bool:
    try:
        normalise_email(address_from_cell(cell)[0])
    except InvalidAddressError:
        return False
    return True


def _records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, values) per record; a quoted value may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous_end = 0
    for values in reader:
        start, previous_end = previous_end + 1, reader.line_num
        yield start, values


def _parse_row(line: int, values: list[str], columns: _Columns, seen: dict[str, int]) -> _Row | Rejection:
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
        if name:
            cells[name] = value
        elif value and columns.raw[position - 1].strip():
            continue  # a part of the name beside a full-name column: the full name wins
        elif value:
            return Rejection(line, f"has the value {value!r} in column {position}, which has no header",
                             values)
    address, display_name = address_from_cell(cells.get("email", ""))
    try:
        email = normalise_email(address)
    except InvalidAddressError as exc:
        return Rejection(line, str(exc).rstrip("."), values)
    first = seen.get(email)
    if first is not None:
        return Rejection(line, f"{email} is a duplicate of line {first}", values)
    seen[email] = line
    if any(part in cells for part in _PARTS):
        cells["name"] = " ".join(cells.pop(part, "") for part in _PARTS)
    if display_name and not cells.get("name"):
        cells["name"] = display_name
    fields: dict[str, Any] = {}
    attributes: dict[str, str] = {}
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
            if cell.lower() not in ("", "active"):
                return Rejection(line, f"the status is {cell!r} in the file; only active rows are imported",
                                 values)
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
            fields["tags"] = normalise_tags(cell)
        else:
            fields[name] = cell or None
    if attributes:
        fields["attributes"] = attributes
    return _Row(line, values, email, fields)


class _ChunkWriter:
    """Applies chunks of valid rows to one list with bulk statements."""

    def __init__(self, session: Session, mailing_list: MailingList, *, double_opt_in: bool,
                 source: str, report: ImportReport) -> None:
        assert mailing_list.id is not None
        self.session = session
        self.list = mailing_list
        self.list_id: int = mailing_list.id
        self.pending = double_opt_in
        self.source = source[:200]
        self.report = report
        self.confirmations: list[ConfirmationRequest] = []

    def reject(self, row: _Row, reason: str) -> None:
        self.report.rejected.append(Rejection(row.line, reason, row.values))

    def apply(self, rows: list[_Row]) -> None:
        if not rows:
            return
        session, now = self.session, utcnow()
        hashes = {email_hash(r.email): r for r in rows}
        suppressed = dict(session.execute(
            sa.select(col(Suppression.email_hash), col(Suppression.reason))
            .where(col(Suppression.email_hash).in_(list(hashes)))).all())
        kept = []
        for key, row in hashes.items():
            if key in suppressed:
                self.reject(row, f"{row.email} is on the suppression list ({suppressed[key]})")
            else:
                kept.append(row)
        existing = {
            r.email: r for r in session.execute(
                sa.select(_subscriber).where(_subscriber.c.email.in_([r.email for r in kept])))
        }
        new_rows = [r for r in kept if r.email not in existing]
        status = SubscriberStatus.PENDING if self.pending else SubscriberStatus.ACTIVE
        if new_rows:
            _insert_many(session, _subscriber, [self._new_subscriber(r, status, now) for r in new_rows])
        ids = dict(session.execute(
            sa.select(_subscriber.c.email, _subscriber.c.id)
            .where(_subscriber.c.email.in_([r.email for r in kept]))).all())
        memberships = dict(session.execute(
            sa.select(_membership.c.subscriber_id, _membership.c.status)
            .where(_membership.c.list_id == self.list_id)
            .where(_membership.c.subscriber_id.in_(list(ids.values())))).all())

        profile_updates: list[dict[str, Any]] = []
        status_updates: list[dict[str, Any]] = []
        new_members: list[dict[str, Any]] = []
        activated: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for row in kept:
            subscriber_id = ids[row.email]
            current = existing.get(row.email)
            membership = memberships.get(subscriber_id)
            if current is not None:
                if current.status in (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED):
                    self.reject(row, f"{row.email} is marked {current.status}")
                    continue
                if membership == MembershipStatus.UNSUBSCRIBED:
                    self.reject(row, f"{row.email} unsubscribed from {self.list.name}; "
                                     "only they can subscribe again")
                    continue
                changes = self._profile_changes(current, row)
                if changes:
                    profile_updates.append({"b_id": subscriber_id, **changes, "updated_at": now})
                    self.report.updated += 1
            if membership is None:
                new_members.append({
                    "subscriber_id": subscriber_id, "list_id": self.list_id, "status": status,
                    "subscribed_at": now, "confirmed_at": None if self.pending else now,
                    "unsubscribed_at": None,
                })
                events.append(self._event(subscriber_id, EventKind.REQUEST if self.pending
                                          else EventKind.SUBSCRIBE, now))
                self.report.added += 1
                if self.pending:
                    self.confirmations.append(self._confirmation(subscriber_id, row, current))
            elif membership == MembershipStatus.PENDING and not self.pending:
                activated.append({"b_subscriber_id": subscriber_id, "confirmed_at": now})
                events.append(self._event(subscriber_id, EventKind.SUBSCRIBE, now))
                self.report.reactivated += 1
            elif current is not None and not self._profile_changes(current, row):
                self.report.unchanged += 1
            if current is not None and (membership is None or membership == MembershipStatus.PENDING):
                wanted = self._status_after(current.status)
                if wanted != current.status:
                    status_updates.append({"b_id": subscriber_id, "status": wanted, "updated_at": now})

        if profile_updates:
            for keys, group in _group_by_keys(profile_updates).items():
                statement = sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("b_id"))
                session.execute(statement.values({k: sa.bindparam(k) for k in keys}), group)
        if status_updates:
            session.execute(sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("b_id"))
                            .values(status=sa.bindparam("status"), updated_at=sa.bindparam("updated_at")),
                            status_updates)
        if new_members:
            _insert_many(session, _membership, new_members)
        if activated:
            session.execute(
                sa.update(_membership)
                .where(_membership.c.subscriber_id == sa.bindparam("b_subscriber_id"))
                .where(_membership.c.list_id == self.list_id)
                .values(status=MembershipStatus.ACTIVE, confirmed_at=sa.bindparam("confirmed_at")),
                activated)
        if events:
            _insert_many(session, _event, events)

    def _status_after(self, status: str) -> str:
        if status == SubscriberStatus.ACTIVE or not self.pending:
            return SubscriberStatus.ACTIVE
        return SubscriberStatus.PENDING

    def _new_subscriber(self, row: _Row, status: str, now: Any) -> dict[str, Any]:
        fields = row.fields
        return {
            "email": row.email,
            "name": fields.get("name") or "",
            "language": fields.get("language") or self.list.language,
            "organisation": fields.get("organisation") or "",
            "country": fields.get("country") or "",
            "tags": fields.get("tags") or [],
            "attributes": fields.get("attributes") or {},
            "status": status,
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    def _profile_changes(current: Any, row: _Row) -> dict[str, Any]:
        """Fields the file fills or changes (an empty cell never erases what is known)."""
        changes: dict[str, Any] = {}
        for key in ("name", "language", "organisation", "country"):
            value = row.fields.get(key)
            if value and value != getattr(current, key):
                changes[key] = value
        tags = row.fields.get("tags")
        if tags and not set(tags) <= set(current.tags):
            changes["tags"] = sorted(set(current.tags) | set(tags))
        attributes = row.fields.get("attributes")
        if attributes and any(current.attributes.get(k) != v for k, v in attributes.items()):
            changes["attributes"] = {**current.attributes, **attributes}
        return changes

    def _event(self, subscriber_id: int, kind: EventKind, now: Any) -> dict[str, Any]:
        return {"subscriber_id": subscriber_id, "list_id": self.list_id, "kind": kind, "at": now,
                "source": self.source, "ip": None, "user_agent": None, "text_version": None}

    def _confirmation(self, subscriber_id: int, row: _Row, current: Any) -> ConfirmationRequest:
        name = row.fields.get("name") or (current.name if current is not None else "")
        fallback = current.language if current is not None else self.list.language
        language = row.fields.get("language") or fallback
        return ConfirmationRequest(subscriber_id, self.list_id, row.email, name, language,
                                   self.list.name, self.list.description)


def _insert_many(session: Session, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """A bulk INSERT (executemany) of ``rows``, which all have the same keys.

    SQLAlchemy's executemany runs every column's bind processor for every row; here a
    value shared by the whole chunk (the timestamp, the status) is processed once, which
    halves the cost of an import. The statement is still compiled by SQLAlchemy for the
    connection's dialect, so this works on SQLite and PostgreSQL alike.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    keys = list(rows[0])
    compiled = sa.insert(table).compile(dialect=dialect, column_keys=keys, for_executemany=True)
    order = list(compiled.positiontup or []) if dialect.positional else keys
    columns = [_processed_column(table.c[key].type.dialect_impl(dialect).bind_processor(dialect),
                                 [row[key] for row in rows]) for key in order]
    params: Any = list(zip(*columns, strict=True))
    if not dialect.positional:
        params = [dict(zip(order, values, strict=True)) for values in params]
    connection.exec_driver_sql(str(compiled), params)


def _processed_column(processor: Callable[[Any], Any] | None, values: list[Any]) -> list[Any]:
    """One column's values made ready for the driver; a repeated scalar is processed once."""
    if processor is None:
        return values
    done: dict[Any, Any] = {}
    result: list[Any] = []
    for value in values:
        if value is None:
            result.append(None)
        elif isinstance(value, list | dict):
            result.append(processor(value))
        else:
            if value not in done:
                done[value] = processor(value)
            result.append(done[value])
    return result


def _group_by_keys(updates: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """executemany needs the same parameters in every row: group updates by changed fields."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for update in updates:
        keys = tuple(sorted(k for k in update if k != "b_id"))
        groups.setdefault(keys, []).append(update)
    return groups


def import_csv(engine: Engine, settings: Settings, path: Path, list_name: str, *,
               double_opt_in: bool = False, source: str | None = None, rejects_path: Path | None = None,
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import ``path`` into ``list_name`` and write the rejected rows to ``rejects_path``
    (default: ``<file>.rejects.csv`` beside it, only when some rows are rejected).

    ``progress(done, total)`` is called after each chunk. With ``double_opt_in`` new
    members are pending and each is sent a confirmation email after the import commits.
    """
    decoded = _decode(path)
    text = decoded.text
    header_line = text.split("\n", 1)[0]
    delimiter = _delimiter(header_line)
    first = next(_records(text, delimiter), None)
    if first is None or not any(v.strip() for v in first[1]):
        raise InvalidInputError(f"The file {path} is empty; its first line must name the columns.")
    columns = _headerless(path, first[1]) or _columns(path, first[1])
    records = _records(text, delimiter)
    if columns.has_header:
        next(records)
    total = max(text.count("\n") - 1 + (0 if text.endswith("\n") else 1), 0)
    report = ImportReport(path=path, encoding=decoded.encoding, has_header=columns.has_header)
    seen: dict[str, int] = {}
    with session_scope(engine) as session:
        mailing_list = get_list(session, list_name)
        writer = _ChunkWriter(session, mailing_list, double_opt_in=double_opt_in,
                              source=source or f"import:{path.name}", report=report)
        chunk: list[_Row] = []
        done = 0
        for line, values in records:
            done = line
            if not any(v.strip() for v in values):
                continue  # blank lines, or rows of empty cells, are not subscribers
            report.rows += 1
            parsed = _parse_row(line, values, columns, seen)
            if isinstance(parsed, Rejection):
                report.rejected.append(parsed)
            else:
                chunk.append(parsed)
            if len(chunk) >= CHUNK:
                writer.apply(chunk)
                chunk = []
                if progress:
                    progress(done, total)
        writer.apply(chunk)
        if progress:
            progress(total, total)
    report.rejected.sort(key=lambda r: r.line)
    if report.rejected:
        report.rejects_path = rejects_path or path.with_name(f"{path.stem}.rejects.csv")
        write_rejects(report.rejects_path, columns.raw, report.rejected, delimiter,
                      decoded.bom or decoded.encoding != "UTF-8")
    report.confirmations_sent = send_confirmations(settings, writer.confirmations)
    return report


def write_rejects(path: Path, header: Sequence[str], rejected: Sequence[Rejection], delimiter: str,
                  bom: bool) -> None:
    """The rejected rows as they were, plus ``line`` and ``reason`` columns."""
    try:
        with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter, lineterminator="\r\n")
            writer.writerow([*header, "line", "reason"])
            width = len(header)
            for rejection in rejected:
                values = (rejection.values + [""] * width)[:width]
                writer.writerow([*values, rejection.line, rejection.reason])
    except OSError as exc:
        raise InvalidInputError(f"Cannot write the rejects file {path}: {exc.strerror}.") from None
