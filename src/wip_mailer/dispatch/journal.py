"""The send journal: which messages a runner handed to the SMTP server, written as it happens.

The ledger is written in batches (one transaction per ~100 results), so after a
``kill -9`` the rows of the last few batches are still ``sending`` and the database
alone cannot tell which of them were sent. Each runner therefore appends one short
line per step to its own journal file, with a plain ``write(2)`` (no fsync: a killed
process loses nothing the kernel already has; power loss is out of scope, as it is
for SQLite in WAL mode with ``synchronous=NORMAL``):

    B <delivery-id>   about to send the message data (the end-of-data dot follows)
    A <delivery-id>   the server answered 2xx: accepted
    R <delivery-id>   the server did not accept it (or the runner gave up on the reply)

When a send is resumed, a ``sending`` row of a dead runner is: accepted with ``A``,
not sent with ``R`` or with no line at all (it never reached the data stage), and
**in doubt** with ``B`` alone — the message was handed over and the reply never
recorded. Each connection sends one message at a time, so at most one row per
connection is ever in doubt. Without the journal file (another machine, deleted
folder) every orphaned ``sending`` row is in doubt: the safe side of "never twice".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(rb"^([BAR]) (\d+)$")


def journal_path(directory: Path, campaign_id: int, worker: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", worker)
    return directory / f"campaign-{campaign_id}-{safe}.journal"


class Journal:
    def __init__(self, directory: Path, campaign_id: int, worker: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = journal_path(directory, campaign_id, worker)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _write(self, kind: bytes, delivery_id: int) -> None:
        os.write(self._fd, b"%s %d\n" % (kind, delivery_id))  # one small O_APPEND write: atomic

    def begin(self, delivery_id: int) -> None:
        self._write(b"B", delivery_id)

    def accepted(self, delivery_id: int) -> None:
        self._write(b"A", delivery_id)

    def rejected(self, delivery_id: int) -> None:
        self._write(b"R", delivery_id)

    def close(self, *, remove: bool) -> None:
        os.close(self._fd)
        if remove:
            self.path.unlink(missing_ok=True)


@dataclass
class JournalRecord:
    begun: set[int] = field(default_factory=set)
    accepted: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)

    def verdict(self, delivery_id: int) -> str:
        """``sent``, ``unsent`` or ``in_doubt`` for a row this runner had claimed."""
        if delivery_id in self.accepted:
            return "sent"
        if delivery_id in self.rejected or delivery_id not in self.begun:
            return "unsent"
        return "in_doubt"


def read_journal(path: Path) -> JournalRecord | None:
    """The journal's record, or None when the file is not here."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    record = JournalRecord()
    sets = {b"B": record.begun, b"A": record.accepted, b"R": record.rejected}
    for line in data.splitlines():
        match = _LINE.match(line)
        if match:  # a torn last line cannot happen with single writes, but never trust input
            delivery_id = int(match[2])
            if match[1] == b"B":
                record.accepted.discard(delivery_id)  # a later attempt starts afresh
                record.rejected.discard(delivery_id)
            sets[match[1]].add(delivery_id)
    return record
