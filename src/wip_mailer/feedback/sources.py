"""Where messages come back from: an mbox file, a Maildir, an IMAP mailbox, or files.

Each source yields the bytes of one message at a time; ``effects.process_message`` does
the rest, the same for all of them.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine

from wip_mailer.errors import InvalidInputError, SettingsError
from wip_mailer.feedback.effects import Counts, process_message
from wip_mailer.settings import Settings

PROCESSED_KEYWORD = "$WipProcessed"


def mbox_messages(path: Path) -> Iterator[bytes]:
    if not path.is_file():
        raise InvalidInputError(f"The mbox file {path} does not exist.")
    box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            yield box.get_bytes(key)
    finally:
        box.close()


def maildir_messages(path: Path) -> Iterator[bytes]:
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise InvalidInputError(f"{path} is not a Maildir (it needs cur/ and new/ folders).")
    box = mailbox.Maildir(str(path), factory=None, create=False)
    for key in sorted(box.iterkeys()):
        try:
            yield box.get_bytes(key)
        except (KeyError, FileNotFoundError):  # moved away meanwhile (another reader)
            continue


def named_messages(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) for each message in files, folders of files, Maildirs and mbox files."""
    for path in paths:
        if path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                box = mailbox.Maildir(str(path), factory=None, create=False)
                for key in sorted(box.iterkeys()):
                    yield f"{path}/{key}", box.get_bytes(key)
            else:
                for child in sorted(p for p in path.iterdir() if p.is_file()):
                    yield from named_messages([child])
        elif path.is_file():
            with path.open("rb") as handle:
                is_mbox = handle.read(5) == b"From "
            if is_mbox:
                for number, raw in enumerate(mbox_messages(path), 1):
                    yield f"{path}#{number}", raw
            else:
                yield str(path), path.read_bytes()
        else:
            raise InvalidInputError(f"{path} does not exist.")


# --- IMAP ------------------------------------------------------------------------------

def _imap_target(url: str) -> tuple[str, int, str, str]:
    parts = urlsplit(url)
    if parts.scheme != "imaps" or not parts.hostname or not parts.username:
        raise InvalidInputError(
            f"{url!r} is not an IMAP-over-TLS address: write imaps://USER@HOST[:PORT][/FOLDER].")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return parts.hostname, parts.port or 993, unquote(parts.username), folder


def _check(reply: tuple[str, list[Any]], what: str) -> list[Any]:
    status, data = reply
    if status != "OK":
        raise InvalidInputError(f"The IMAP server refused to {what}.")
    return data


def process_imap(engine: Engine, settings: Settings, url: str) -> Counts:
    """Process the messages of an IMAP folder not yet processed; then flag or move each one.

    A message is flagged (or moved) only after its outcome is committed: a run stopped in
    between processes it again next time, which changes and counts nothing.
    """
    host, port, user, folder = _imap_target(url)
    if not settings.imap_password:
        raise SettingsError("WIP_MAILER_IMAP_PASSWORD is not set; it is needed to read the IMAP mailbox.")
    counts = Counts()
    try:
        client = imaplib.IMAP4_SSL(host, port, ssl_context=ssl.create_default_context(),
                                   timeout=settings.smtp_timeout)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise InvalidInputError(f"Cannot reach the IMAP server {host}:{port}: {exc}.") from None
    try:
        try:
            client.login(user, settings.imap_password)
        except imaplib.IMAP4.error:
            raise InvalidInputError(f"The IMAP server {host} refused the login of {user}.") from None
        _check(client.select(_quoted(folder)), f"open the folder {folder}")
        data = _check(client.uid("SEARCH", "UNDELETED", "NOT", "KEYWORD", PROCESSED_KEYWORD),
                      "search the folder")
        uids = data[0].decode("ascii").split() if data and isinstance(data[0], bytes) else []
        for uid in uids:
            fetched = _check(client.uid("FETCH", uid, "(BODY.PEEK[])"), "fetch a message")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            if not isinstance(raw, bytes):
                continue
            counts.add(process_message(engine, settings, raw, "imap"))
            _done(client, uid, settings.imap_processed_folder)
        if settings.imap_processed_folder:
            client.expunge()
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()
    return counts


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _done(client: imaplib.IMAP4, uid: str, processed_folder: str) -> None:
    _check(client.uid("STORE", uid, "+FLAGS", f"(\\Seen {PROCESSED_KEYWORD})"), "flag a message")
    if processed_folder:
        _check(client.uid("COPY", uid, _quoted(processed_folder)), f"copy a message to {processed_folder}")
        _check(client.uid("STORE", uid, "+FLAGS", "(\\Deleted)"), "delete a moved message")
