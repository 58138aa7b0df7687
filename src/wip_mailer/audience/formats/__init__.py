"""Other tools' exports, each one small module mapping its header onto our fields.

``open_export`` recognises the format from the header row (or takes ``format``) and
yields an ``ExportFile`` whose rows are ``SubscriberRow``s, whatever wrote the file:
wip-mailer's own columns (``csv_rows``), Mailchimp, listmonk, Keila, Substack, beehiiv,
Curated, or Mailman 3's member list. A file no format recognises is read as wip-mailer's
own, which refuses unknown columns (a typo in a hand-made spreadsheet must not drop data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from wip_mailer.audience.csv_reader import (
    Encoding,
    Record,
    RecordReader,
    Rejection,
    detect_encoding,
    open_records,
)
from wip_mailer.audience.csv_rows import (
    Columns,
    SubscriberRow,
    email_in_column,
    header_key,
    parse_row,
    subscriber_columns,
)
from wip_mailer.audience.formats.base import TableFormat
from wip_mailer.audience.formats.beehiiv import Beehiiv
from wip_mailer.audience.formats.curated import Curated
from wip_mailer.audience.formats.keila import Keila
from wip_mailer.audience.formats.listmonk import Listmonk
from wip_mailer.audience.formats.mailchimp import Mailchimp
from wip_mailer.audience.formats.mailman import HEADER, Mailman, looks_like_mailman, member_records
from wip_mailer.audience.formats.substack import Substack
from wip_mailer.errors import InvalidInputError

OWN = "wip-mailer"
# Most specific first: a signature that is a subset of another's would take its files.
TABLE_FORMATS: tuple[type[TableFormat], ...] = (Mailchimp, Curated, Keila, Listmonk, Substack, Beehiiv)
FORMAT_NAMES = (*(f.name for f in TABLE_FORMATS), Mailman.name, OWN)
_BY_NAME = {f.name: f for f in TABLE_FORMATS}

Parse = Callable[[int, list[str], dict[str, int]], SubscriberRow | Rejection]


@dataclass
class ExportFile:
    """A file being imported: how it is written, which format it is, and its rows."""

    path: Path
    encoding: Encoding
    format: str  # a FORMAT_NAMES entry
    label: str  # the format as shown to the editor
    header: list[str]  # as written (for the rejects file)
    mapping: list[tuple[str, str]]  # (column as written, what it becomes)
    records: Iterator[Record | Rejection]
    parse: Parse
    delimiter: str = ","
    has_header: bool = True

    @property
    def lines_after_header(self) -> int:
        return max(self.encoding.lines - (1 if self.has_header else 0), 0)

    def rows(self) -> Iterator[SubscriberRow | Rejection]:
        """Each non-blank row after the header, parsed, or rejected with its reason."""
        seen: dict[str, int] = {}  # address -> first line, for duplicates within the file
        parse = self.parse
        for record in self.records:
            if isinstance(record, Rejection):
                yield record
            elif any(map(str.strip, record.values)):  # blank lines are not subscribers
                yield parse(record.line, record.values, seen)


def _check_format(name: str | None) -> None:
    if name is not None and name not in FORMAT_NAMES:
        raise InvalidInputError(f"{name!r} is not a format this import knows; say one of "
                                f"{', '.join(FORMAT_NAMES)}.")


@contextmanager
def open_export(path: Path, *, max_field_chars: int, format: str | None = None) -> Iterator[ExportFile]:
    """``path`` opened for reading, its format recognised and its header checked (an unusable
    file raises InvalidInputError before any row is read)."""
    _check_format(format)
    encoding = detect_encoding(path)
    if format == Mailman.name or (format is None and looks_like_mailman(path, encoding)):
        table: TableFormat = Mailman(path, HEADER)
        yield ExportFile(path, encoding, Mailman.name, Mailman.label, HEADER,
                         [("Display Name <addr>", "email, name")],
                         member_records(path, encoding, max_field_chars), table.parse, has_header=False)
        return
    with open_records(path, max_field_chars=max_field_chars) as (encoding, reader):
        reader.row_like = email_in_column(reader.delimiter, None)
        records = iter(reader)
        first = next(records, None)
        if isinstance(first, Rejection):
            problem = first.reason.partition(";")[0]  # what is wrong, without "...not imported"
            raise InvalidInputError(f"The file {path} cannot be read: its first line {problem}; "
                                    "fix that line.")
        if first is None or not any(v.strip() for v in first.values):
            raise InvalidInputError(f"The file {path} is empty; its first line must name the columns.")
        header = first.values
        keys = {header_key(v) for v in header if v.strip()}
        chosen = _BY_NAME.get(format or "") or (
            next((f for f in TABLE_FORMATS if f.recognises(keys)), None) if format is None else None)
        if chosen is not None:
            if format is not None and not chosen.recognises(keys):
                missing = ", ".join(sorted(chosen.signature - keys))
                raise InvalidInputError(f"The file {path} does not have the columns of a {chosen.label} "
                                        f"export (missing: {missing}).")
            table = chosen(path, header)
            _bound(reader, table.index["email"], len(header), max_field_chars)
            yield ExportFile(path, encoding, chosen.name, chosen.label, header, table.mapping(), records,
                             table.parse, reader.delimiter)
            return
        columns = subscriber_columns(path, header)
        if not columns.has_header:
            records = _again(first, records)
        _bound(reader, columns.index("email"), len(columns.names), max_field_chars)
        yield ExportFile(path, encoding, OWN, "wip-mailer", columns.raw, _own_mapping(columns), records,
                         _own_parse(columns), reader.delimiter, columns.has_header)


def _own_parse(columns: Columns) -> Parse:
    def parse(line: int, values: list[str], seen: dict[str, int]) -> SubscriberRow | Rejection:
        return parse_row(line, values, columns, seen)
    return parse


def _own_mapping(columns: Columns) -> list[tuple[str, str]]:
    return [(raw, name or "(ignored)") for raw, name in zip(columns.raw, columns.names, strict=False)]


def _bound(reader: RecordReader, email_index: int | None, width: int, max_field_chars: int) -> None:
    """Once the columns are known: what a row looks like, and how long one may be."""
    reader.row_like = email_in_column(reader.delimiter, email_index)
    # Every cell at its longest, and as much again for empty trailing cells and separators.
    reader.max_record_chars = max_field_chars * (width + 1)


def _again(first: Record, rest: Iterator[Record | Rejection]) -> Iterator[Record | Rejection]:
    yield first
    yield from rest
