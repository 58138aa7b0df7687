"""Reading CSV text as spreadsheets save it, one bounded record at a time (no database).

This is the part every importer shares, whatever tool wrote the file (``csv_rows`` maps
the columns of wip-mailer's own format; importers of other tools' exports map theirs).

Encodings: UTF-8 (a BOM is fine), UTF-16 with a BOM (Excel's "Unicode text"), or
Windows-1252 when the bytes are not UTF-8 (Excel's "CSV" on a Western-European Windows).
A workbook (.xlsx, .xls, .ods), a PDF or any file with NUL bytes is refused with one
sentence. The file is checked in one streaming pass, then read in a second one, so memory
never holds more than one record, however large the file.

Records: a quoted cell may run over several lines (a multi-line address or organisation),
but a record is never allowed to swallow rows. It is broken, and returned as a
``Rejection`` at the physical line where it starts, when its quoted cell

- runs into a line that looks like a row of its own (``row_like``, e.g. one with an
  address in the email column): the broken record is the lines before it, and reading
  goes on with that line;
- is still open at the end of the file;
- grows past ``max_record_chars``: the rest of the cell (the lines up to the next one
  that looks like a row) is skipped, never held in memory.

A single line longer than ``max_record_chars`` is skipped the same way without being
read into one string; a cell longer than ``max_field_chars`` rejects its record. The
lines after a bad record are read as records again, so one stray quote costs one row.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO

from wip_mailer.errors import InvalidInputError

LIMIT_SETTING = "WIP_MAILER_IMPORT_MAX_FIELD_CHARS"

# A cell starting with one of these is run as a formula by Excel, LibreOffice and Google
# Sheets (OWASP "CSV injection"); a leading ' makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _looks_like_formula(cell: str) -> bool:
    # Leading apostrophes are skipped so that a cell that already starts with "'=" is
    # escaped too, and unescaping gives back exactly what was escaped.
    return cell.lstrip("'").startswith(FORMULA_STARTS)


def escape_formula(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: a ``'`` before a leading ``= + - @`` tab or CR."""
    return "'" + cell if _looks_like_formula(cell) else cell


def unescape_formula(cell: str) -> str:
    """Undo ``escape_formula``: drop a leading ``'`` only where it would have added one."""
    return cell[1:] if cell.startswith("'") and _looks_like_formula(cell) else cell


@dataclass(frozen=True)
class Rejection:
    line: int  # physical line where the row starts
    reason: str  # completes "FILE:LINE: ..."
    values: list[str]  # the cells as read, for the rejects file


class Record(NamedTuple):  # one per row: a NamedTuple is four times faster to make than a dataclass
    line: int  # physical line where the record starts
    values: list[str]


@dataclass(frozen=True)
class Encoding:
    name: str  # as shown to the editor: UTF-8, UTF-16 or Windows-1252
    codec: str  # Python's codec to read it with
    bom: bool
    lines: int  # physical lines (a last line without a line break counts)


# Signatures of files that are not text: zip (xlsx, ods), OLE2 (xls), PDF.
_BINARY_SIGNATURES = {b"PK\x03\x04": "a spreadsheet workbook (.xlsx or .ods)",
                      b"\xd0\xcf\x11\xe0": "an old Excel workbook (.xls)", b"%PDF": "a PDF document"}
SAVE_AS = 'open it in the spreadsheet and save it as "CSV UTF-8"'
_SCAN_BYTES = 1 << 20


def _open_binary(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InvalidInputError(f"The file {path} does not exist.") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a folder, not a CSV file.") from None
    except OSError as exc:
        raise InvalidInputError(f"The file {path} cannot be read: {exc.strerror}.") from None


@dataclass
class _Scan:
    newlines: int = 0
    ends_with_newline: bool = True
    bad_line: int | None = None  # first line the codec cannot decode
    nul_line: int | None = None  # first line with a NUL byte

    @property
    def lines(self) -> int:
        return self.newlines + (0 if self.ends_with_newline else 1)


def _scan(handle: BinaryIO, codec: str, *, find_nul: bool) -> _Scan:
    """Decode the whole file in chunks, counting lines, without keeping it."""
    handle.seek(0)
    scan = _Scan()
    decoder: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder(codec)()
    byte_newlines = 0
    while chunk := handle.read(_SCAN_BYTES):
        if find_nul and scan.nul_line is None and b"\x00" in chunk:
            scan.nul_line = byte_newlines + chunk[: chunk.index(b"\x00")].count(b"\n") + 1
        byte_newlines += chunk.count(b"\n")
        if decoder is None:
            continue  # only looking for a NUL byte now
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            # The decoded text so far ends where exc.object (pending bytes + chunk) begins.
            scan.bad_line = scan.newlines + exc.object[: exc.start].count(b"\n") + 1
            decoder = None
            if not find_nul:
                break
            continue
        if text:
            scan.newlines += text.count("\n")
            scan.ends_with_newline = text.endswith("\n")
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            scan.bad_line = scan.newlines + 1
    return scan


def detect_encoding(path: Path) -> Encoding:
    """How ``path`` is encoded, or one sentence saying why it is not CSV text."""
    with _open_binary(path) as handle:
        head = handle.read(4)
        for signature, kind in _BINARY_SIGNATURES.items():
            if head.startswith(signature):
                raise InvalidInputError(f"The file {path} is {kind}, not CSV text; {SAVE_AS}.")
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel "Unicode text" is UTF-16 with a BOM
            scan = _scan(handle, "utf-16", find_nul=False)
            if scan.bad_line is not None:
                raise InvalidInputError(f"The file {path} starts like UTF-16 text but is not; {SAVE_AS}.")
            return Encoding("UTF-16", "utf-16", True, scan.lines)
        scan = _scan(handle, "utf-8-sig", find_nul=True)
        if scan.nul_line is not None:  # no text encoding a spreadsheet writes without a BOM has NUL bytes
            raise InvalidInputError(
                f"The file {path} is not CSV text (a NUL byte on line {scan.nul_line}); {SAVE_AS}.")
        if scan.bad_line is None:
            return Encoding("UTF-8", "utf-8-sig", head.startswith(b"\xef\xbb\xbf"), scan.lines)
        # Excel's plain "CSV" on Windows writes the ANSI code page, Windows-1252 in Western
        # Europe (a superset of Latin-1 for text). Valid UTF-8 never gets here, so a UTF-8
        # file is never misread; cp1252 leaves five bytes undefined, which still refuse.
        fallback = _scan(handle, "cp1252", find_nul=False)
        if fallback.bad_line is None:
            return Encoding("Windows-1252", "cp1252", False, fallback.lines)
    raise InvalidInputError(
        f"The file {path} is neither UTF-8 nor Windows-1252 text (first bad byte on line {scan.bad_line}); "
        f"{SAVE_AS}."
    )


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Broken(Exception):
    """The record being read cannot be a row (raised through csv.reader)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


_ROW_LIKE, _UNCLOSED, _TOO_LONG = "row-like", "unclosed", "too-long"


class RecordReader:
    """The records of one CSV text stream (see the module's docstring).

    ``row_like`` and ``max_record_chars`` may be changed once the header is known.
    """

    def __init__(self, stream: TextIO, *, max_field_chars: int, max_record_chars: int) -> None:
        self._readline = stream.readline
        self.max_field_chars = max_field_chars
        self.max_record_chars = max_record_chars
        self.row_like: Callable[[str], bool] = lambda line: False
        self.line_number = 0  # of the last physical line read
        self._pending: tuple[str, bool] | None = None  # a line read ahead (and its _truncated)
        self._truncated = False  # the last line read was cut at max_record_chars
        self._record: list[str] = []  # the lines of the record being read
        self._size = 0
        first = self._physical()
        if first is not None:
            self._unread(first)
        self.delimiter = _delimiter(first or "")
        self._csv = csv.reader(iter(self._feed, None), delimiter=self.delimiter)

    def _physical(self) -> str | None:
        """The next physical line, or None at the end; a line too long is cut and skipped."""
        if self._pending is not None:
            (line, self._truncated), self._pending = self._pending, None
            self.line_number += 1
            return line
        line = self._readline(self.max_record_chars)
        if not line:
            return None
        self.line_number += 1
        self._truncated = self._cut(line)
        return line

    def _cut(self, line: str) -> bool:
        """Whether ``line`` stopped at max_record_chars; the rest is then read in bounded pieces
        and dropped, so a huge line is never held in memory."""
        limit = self.max_record_chars
        if len(line) < limit or line.endswith(("\n", "\r")):
            return False
        while len(line) >= limit and not line.endswith(("\n", "\r")):
            line = self._readline(limit)
        return True

    def _unread(self, line: str) -> None:
        self._pending = (line, self._truncated)
        self.line_number -= 1

    def _feed(self) -> str | None:
        """Lines for csv.reader; it asks for another before the record ends only inside quotes."""
        record = self._record
        if not record and self._pending is None:  # the common case, kept short: a new record
            first: str = self._readline(self.max_record_chars)
            if not first:
                return None
            self.line_number += 1
            record.append(first)
            self._size = len(first)
            if len(first) >= self.max_record_chars and self._cut(first):
                self._truncated = True
                raise _Broken(_TOO_LONG)
            return first
        line = self._physical()
        if not record:
            if line is None:
                return None
            record.append(line)
            self._size = len(line)
            if self._truncated:
                raise _Broken(_TOO_LONG)
            return line
        if line is None:
            raise _Broken(_UNCLOSED)
        if self.row_like(line):
            self._unread(line)
            raise _Broken(_ROW_LIKE)
        self._size += len(line)
        if self._truncated or self._size > self.max_record_chars:
            raise _Broken(_TOO_LONG)
        record.append(line)
        return line

    def __iter__(self) -> Iterator[Record | Rejection]:
        reader, limit = self._csv, self.max_field_chars
        while True:
            self._record.clear()
            start = self.line_number + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except _Broken as broken:
                yield self._broken(start, broken.kind)
                continue
            except csv.Error:  # csv's own field limit (131,072), in a row allowed to be longer
                yield self._broken(start, _TOO_LONG)
                continue
            if self._size > limit:  # only then can a cell be too long
                for position, value in enumerate(values, start=1):
                    if len(value) > limit:
                        yield Rejection(start, f"column {position} has {len(value):,} characters, more "
                                               f"than the {limit:,} allowed ({LIMIT_SETTING})", values)
                        break
                else:
                    yield Record(start, values)
                continue
            yield Record(start, values)

    def _broken(self, start: int, kind: str) -> Rejection:
        lines = self._record
        values = self._partial_values(lines)
        if kind == _TOO_LONG and (len(lines) > 1 or self._truncated):
            # The rest of the cell may run on for many lines: skip to the next row.
            while (line := self._physical()) is not None:
                if self.row_like(line):
                    self._unread(line)
                    break
        end = self.line_number
        span = "this line was" if end == start else f"lines {start}-{end} were"
        if kind == _ROW_LIKE:
            reason = (f"has a quote (\") that is not closed before line {end + 1}, which is a row of its "
                      f"own; {span} not imported")
        elif kind == _UNCLOSED:
            reason = f"has a quote (\") that is still open at the end of the file; {span} not imported"
        else:
            reason = (f"has a cell longer than {self.max_field_chars:,} characters ({LIMIT_SETTING}); "
                      f"{span} not imported")
        self._record, self._truncated = [], False
        return Rejection(start, reason, values)

    def _partial_values(self, lines: list[str]) -> list[str]:
        """The cells of a broken record as far as it goes, for the rejects file (bounded)."""
        if not lines:
            return []
        text = "".join(lines).rstrip("\r\n")
        try:
            values = next(csv.reader([text], delimiter=self.delimiter), [])
        except csv.Error:
            values = [text]
        return [v[: self.max_field_chars] for v in values]


@contextmanager
def open_records(path: Path, *, max_field_chars: int,
                 max_header_chars: int = 1 << 16) -> Iterator[tuple[Encoding, RecordReader]]:
    """The encoding of ``path`` and a reader of its records (the header is the first)."""
    encoding = detect_encoding(path)
    with path.open(encoding=encoding.codec, newline="") as stream:
        yield encoding, RecordReader(stream, max_field_chars=max_field_chars,
                                     max_record_chars=max(max_header_chars, max_field_chars))
