"""GNU Mailman 3: ``mailman members LIST`` prints one member a line, ``Display Name <addr>``
or a bare address; there is no header. Each line is read as an address and a name (the
unwrapping is the format itself, so only a change to the address inside is reported)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import parseaddr
from pathlib import Path
from typing import ClassVar

from wip_mailer.audience.csv_reader import Encoding, Record, Rejection
from wip_mailer.audience.formats.base import TableFormat

HEADER = ["email", "name"]
# A first line like this is Mailman's, not a one-column CSV of bare addresses.
_MEMBER_LINE = re.compile(r"[^<>]*<[^<>\s@]+@[^<>\s]+>\s*")


class Mailman(TableFormat):
    name = "mailman"
    label = "Mailman 3 (mailman members)"
    signature = frozenset()  # recognised by its first line, see looks_like_mailman
    roles: ClassVar[dict[str, str]] = {
        "email": "email", "name": "name",
    }

    @classmethod
    def recognises(cls, keys: set[str]) -> bool:
        return False


def looks_like_mailman(path: Path, encoding: Encoding) -> bool:
    with path.open(encoding=encoding.codec, newline="") as stream:
        first = stream.readline(4096)
    return bool(_MEMBER_LINE.fullmatch(first.strip()))


def member_records(path: Path, encoding: Encoding, max_field_chars: int) -> Iterator[Record | Rejection]:
    """One record ``[address, display name]`` per non-blank line; a line too long is rejected."""
    with path.open(encoding=encoding.codec, newline="") as stream:
        number = 0
        while line := stream.readline(max_field_chars + 1):
            number += 1
            if len(line) > max_field_chars and not line.endswith("\n"):
                while (rest := stream.readline(max_field_chars + 1)) and not rest.endswith("\n"):
                    pass
                yield Rejection(number, f"is longer than {max_field_chars:,} characters", [])
                continue
            text = line.strip()
            if not text:
                continue
            name, address = parseaddr(text) if text.endswith(">") else ("", text)
            yield Record(number, [address or text, " ".join(name.split())])


