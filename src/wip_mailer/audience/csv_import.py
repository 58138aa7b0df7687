"""Importing subscribers from a spreadsheet's CSV export into a list.

The file is read by ``csv_rows`` (over the shared ``csv_reader``): encodings, columns,
values and the rules for bad rows are described there and in subscribers/README.md.
A bad row (invalid address, duplicate in the file, unknown value, a cell too long, a
quote that would swallow the rows after it, a suppressed or unsubscribed address) never
stops the import: it is reported with its line number and reason and written to the
rejects file, and every good row is imported. Importing the same file again changes
nothing. Rows are processed in chunks with bulk statements inside one transaction, and
the file is streamed, so memory is bounded by a chunk, not by the file.
"""

from __future__ import annotations

import csv
import gc
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from wip_mailer.audience.confirmation import ConfirmationRequest, send_confirmations
from wip_mailer.audience.consent import EventKind
from wip_mailer.audience.csv_reader import Rejection, escape_formula
from wip_mailer.audience.csv_rows import (
    HEADER_ALIASES,
    KNOWN_COLUMNS,
    Correction,
    ImportedEvent,
    SubscriberRow,
)
from wip_mailer.audience.formats import OWN, open_export
from wip_mailer.audience.formats.mailchimp import unpack_export
from wip_mailer.audience.lists import get_list
from wip_mailer.audience.suppression import email_hash
from wip_mailer.db import BULK_CHUNK, among, group_by_keys, insert_many, utcnow
from wip_mailer.errors import InvalidInputError
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

__all__ = ["CHUNK", "HEADER_ALIASES", "KNOWN_COLUMNS", "ImportReport", "Rejection", "import_csv",
           "write_changes", "write_rejects"]

CHUNK = BULK_CHUNK  # rows per chunk (and per bulk statement)

_subscriber = Subscriber.__table__  # type: ignore[attr-defined]
_membership = Membership.__table__  # type: ignore[attr-defined]
_event = ConsentEvent.__table__  # type: ignore[attr-defined]
_suppression = Suppression.__table__  # type: ignore[attr-defined]
_LEFT = ("unsubscribed", "bounced", "complained")  # row statuses of people never mailed
_STICKY = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


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
    kept_out: int = 0  # people on record who are never mailed (left, bounced... there or here)
    corrections: list[Correction] = field(default_factory=list)
    format: str = OWN  # formats.FORMAT_NAMES
    format_label: str = "wip-mailer"
    mapping: list[tuple[str, str]] = field(default_factory=list)  # (column, what it becomes)
    source: str = ""  # the consent source recorded for the rows
    double_opt_in_list: bool = False  # the list asks for confirmation...
    confirmed_by_source: bool = False  # ...and the rows became active on the source's authority
    dry_run: bool = False
    changes_path: Path | None = None
    parts: list[ImportReport] = field(default_factory=list)  # the files of a ZIP export


class _ChunkWriter:
    """Applies chunks of valid rows to one list with bulk statements."""

    def __init__(self, session: Session, mailing_list: MailingList, *, double_opt_in: bool,
                 source: str, report: ImportReport) -> None:
        assert mailing_list.id is not None
        self.session = session
        self.list = mailing_list
        self.list_id: int = mailing_list.id
        self.language = mailing_list.language  # read once: an ORM attribute costs a call per row
        self.pending = double_opt_in
        self.source = source[:200]
        self.report = report
        self.confirmations: list[ConfirmationRequest] = []
        self.dialect = session.get_bind().dialect.name

    def reject(self, row: SubscriberRow, reason: str) -> None:
        self.report.rejected.append(Rejection(row.line, reason, row.values))

    def apply(self, rows: list[SubscriberRow]) -> None:
        if not rows:
            return
        session, now, dialect = self.session, utcnow(), self.dialect
        hashes = {email_hash(r.email): r for r in rows}
        suppressed = dict(session.execute(
            sa.select(_suppression.c.email_hash, _suppression.c.reason)
            .where(among(_suppression.c.email_hash, list(hashes), dialect))).all())
        kept = []
        for key, row in hashes.items():
            if key not in suppressed:
                kept.append(row)
            elif row.status in _LEFT:
                self.report.kept_out += 1  # the file says no as well: nothing to change
            else:
                self.reject(row, f"{row.email} is on the suppression list ({suppressed[key]})")
        emails = [r.email for r in kept]
        existing = {r.email: r for r in session.execute(
            sa.select(_subscriber).where(among(_subscriber.c.email, emails, dialect)))}
        new_rows = [r for r in kept if r.email not in existing]
        ids = {email: r.id for email, r in existing.items()}
        if new_rows:
            insert_many(session, _subscriber, [self._new_subscriber(r, self._first_status(r), now)
                                               for r in new_rows])
            ids.update(session.execute(
                sa.select(_subscriber.c.email, _subscriber.c.id)
                .where(among(_subscriber.c.email, [r.email for r in new_rows], dialect))).all())
        memberships = dict(session.execute(
            sa.select(_membership.c.subscriber_id, _membership.c.status)
            .where(_membership.c.list_id == self.list_id)
            .where(among(_membership.c.subscriber_id, list(ids.values()), dialect))).all())

        profile_updates: list[dict[str, Any]] = []
        status_updates: list[dict[str, Any]] = []
        new_members: list[dict[str, Any]] = []
        activated: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        left: list[tuple[SubscriberRow, int, Any, str | None]] = []
        for row in kept:
            subscriber_id = ids[row.email]
            current = existing.get(row.email)
            membership = memberships.get(subscriber_id)
            if row.status in _LEFT or row.suppress:
                left.append((row, subscriber_id, current, membership))
                continue
            pending = self.pending or row.status == SubscriberStatus.PENDING
            if current is not None:
                if current.status in _STICKY:
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
                status = MembershipStatus.PENDING if pending else MembershipStatus.ACTIVE
                history = self._history(subscriber_id, row, now)
                if not history or self.pending:
                    history.append(self._event(subscriber_id, EventKind.REQUEST if pending
                                               else EventKind.SUBSCRIBE, now))
                events += history
                new_members.append(self._membership(subscriber_id, status, history, now))
                self.report.added += 1
                if self.pending:
                    self.confirmations.append(self._confirmation(subscriber_id, row, current))
            elif membership == MembershipStatus.PENDING and not pending:
                activated.append({"b_subscriber_id": subscriber_id, "confirmed_at": now})
                events.append(self._event(subscriber_id, EventKind.SUBSCRIBE, now))
                self.report.reactivated += 1
            elif current is not None and not self._profile_changes(current, row):
                self.report.unchanged += 1
            if current is not None and (membership is None or membership == MembershipStatus.PENDING):
                wanted = self._status_after(current.status, pending)
                if wanted != current.status:
                    status_updates.append({"b_id": subscriber_id, "status": wanted, "updated_at": now})

        if profile_updates:
            for keys, group in group_by_keys(profile_updates).items():
                statement = sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("b_id"))
                session.execute(statement.values({k: sa.bindparam(k) for k in keys}), group)
        if status_updates:
            session.execute(sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("b_id"))
                            .values(status=sa.bindparam("status"), updated_at=sa.bindparam("updated_at")),
                            status_updates)
        if new_members:
            insert_many(session, _membership, new_members)
        if activated:
            session.execute(
                sa.update(_membership)
                .where(_membership.c.subscriber_id == sa.bindparam("b_subscriber_id"))
                .where(_membership.c.list_id == self.list_id)
                .values(status=MembershipStatus.ACTIVE, confirmed_at=sa.bindparam("confirmed_at")),
                activated)
        if events:
            insert_many(session, _event, events)
        for row, subscriber_id, current, membership in left:
            self._keep_out(row, subscriber_id, current, membership, now)

    def _keep_out(self, row: SubscriberRow, subscriber_id: int, current: Any, membership: str | None,
                  now: datetime) -> None:
        """Someone who left or bounced elsewhere: on record, never mailed (one row at a time:
        these are few, and each may change a membership and the subscriber's status)."""
        session = self.session
        self.report.kept_out += 1
        if current is not None:
            changes = self._profile_changes(current, row)
            if changes:
                session.execute(sa.update(_subscriber).where(_subscriber.c.id == subscriber_id)
                                .values(**changes, updated_at=now))
        history = self._history(subscriber_id, row, now)
        leaving = row.status == SubscriberStatus.UNSUBSCRIBED
        if leaving and not any(e["kind"] == EventKind.UNSUBSCRIBE for e in history):
            history.append(self._event(subscriber_id, EventKind.UNSUBSCRIBE, now))
        if membership is None:
            if not any(e["kind"] != EventKind.UNSUBSCRIBE for e in history) and not leaving:
                history.insert(0, self._event(subscriber_id, EventKind.SUBSCRIBE, now))
            status = MembershipStatus.UNSUBSCRIBED if leaving else MembershipStatus.ACTIVE
            insert_many(session, _membership, [self._membership(subscriber_id, status, history, now)])
            insert_many(session, _event, history)
        elif leaving and membership != MembershipStatus.UNSUBSCRIBED:
            withdrawal = [e for e in history if e["kind"] == EventKind.UNSUBSCRIBE][-1:]
            session.execute(sa.update(_membership).where(_membership.c.subscriber_id == subscriber_id)
                            .where(_membership.c.list_id == self.list_id)
                            .values(status=MembershipStatus.UNSUBSCRIBED,
                                    unsubscribed_at=withdrawal[0]["at"]))
            insert_many(session, _event, withdrawal)
        if row.suppress:  # not suppressed yet: apply() kept suppressed addresses out
            insert_many(session, _suppression, [{"email_hash": email_hash(row.email), "reason": row.suppress,
                                                 "detail": self.source, "created_at": now}])
        if current is not None and current.status not in _STICKY:
            wanted = row.status if row.status in _STICKY else self._derived_status(subscriber_id)
            if wanted != current.status:
                session.execute(sa.update(_subscriber).where(_subscriber.c.id == subscriber_id)
                                .values(status=wanted, updated_at=now))

    def _derived_status(self, subscriber_id: int) -> str:
        states = set(self.session.execute(sa.select(_membership.c.status)
                                          .where(_membership.c.subscriber_id == subscriber_id)).scalars())
        if MembershipStatus.ACTIVE in states:
            return SubscriberStatus.ACTIVE
        if MembershipStatus.PENDING in states:
            return SubscriberStatus.PENDING
        return SubscriberStatus.UNSUBSCRIBED

    def _first_status(self, row: SubscriberRow) -> str:
        if row.status in _LEFT:
            return row.status
        pending = self.pending or row.status == SubscriberStatus.PENDING
        return SubscriberStatus.PENDING if pending else SubscriberStatus.ACTIVE

    def _status_after(self, status: str, pending: bool) -> str:
        if status == SubscriberStatus.ACTIVE or not pending:
            return SubscriberStatus.ACTIVE
        return SubscriberStatus.PENDING

    def _new_subscriber(self, row: SubscriberRow, status: str, now: Any) -> dict[str, Any]:
        fields = row.fields
        return {
            "email": row.email,
            "name": fields.get("name") or "",
            "language": fields.get("language") or self.language,
            "organisation": fields.get("organisation") or "",
            "country": fields.get("country") or "",
            "tags": fields.get("tags") or [],
            "attributes": fields.get("attributes") or {},
            "status": status,
            "created_at": now,
            "updated_at": now,
        }

    def _membership(self, subscriber_id: int, status: str, history: list[dict[str, Any]],
                    now: datetime) -> dict[str, Any]:
        """A new membership, its times taken from the consent history the file gives."""
        if len(history) == 1 and history[0]["at"] is now:  # the common case: joined by this import
            return {"subscriber_id": subscriber_id, "list_id": self.list_id, "status": status,
                    "subscribed_at": now, "confirmed_at": None if status == MembershipStatus.PENDING else now,
                    "unsubscribed_at": now if status == MembershipStatus.UNSUBSCRIBED else None}
        joined = [e["at"] for e in history if e["kind"] in (EventKind.SUBSCRIBE, EventKind.REQUEST,
                                                           EventKind.CONFIRM)]
        confirmed = [e["at"] for e in history if e["kind"] in (EventKind.SUBSCRIBE, EventKind.CONFIRM)]
        withdrawn = [e["at"] for e in history if e["kind"] == EventKind.UNSUBSCRIBE]
        return {
            "subscriber_id": subscriber_id, "list_id": self.list_id, "status": status,
            "subscribed_at": joined[0] if joined else now,
            "confirmed_at": None if status == MembershipStatus.PENDING else (confirmed or [now])[-1],
            "unsubscribed_at": (withdrawn[-1] if withdrawn else now)
            if status == MembershipStatus.UNSUBSCRIBED else None,
        }

    @staticmethod
    def _profile_changes(current: Any, row: SubscriberRow) -> dict[str, Any]:
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

    def _history(self, subscriber_id: int, row: SubscriberRow, now: datetime) -> list[dict[str, Any]]:
        return [self._imported(subscriber_id, e, now) for e in row.events]

    def _imported(self, subscriber_id: int, event: ImportedEvent, now: datetime) -> dict[str, Any]:
        return {"subscriber_id": subscriber_id, "list_id": self.list_id, "kind": event.kind,
                "at": event.at or now, "source": self.source if event.source is None else event.source[:200],
                "ip": event.ip and event.ip[:64], "user_agent": event.user_agent and event.user_agent[:400],
                "text_version": event.text_version and event.text_version[:64],
                "detail": event.detail and event.detail[:500]}

    def _event(self, subscriber_id: int, kind: EventKind, now: Any) -> dict[str, Any]:
        return {"subscriber_id": subscriber_id, "list_id": self.list_id, "kind": kind, "at": now,
                "source": self.source, "ip": None, "user_agent": None, "text_version": None, "detail": None}

    def _confirmation(self, subscriber_id: int, row: SubscriberRow, current: Any) -> ConfirmationRequest:
        name = row.fields.get("name") or (current.name if current is not None else "")
        fallback = current.language if current is not None else self.language
        language = row.fields.get("language") or fallback
        return ConfirmationRequest(subscriber_id, self.list_id, row.email, name, language,
                                   self.list.name, self.list.description)


def import_csv(engine: Engine, settings: Settings, path: Path, list_name: str, *,
               double_opt_in: bool = False, source: str | None = None, rejects_path: Path | None = None,
               changes_path: Path | None = None, format: str | None = None, dry_run: bool = False,
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import ``path`` (a CSV file, another tool's export, or Mailchimp's export ZIP) into
    ``list_name`` and write the rejected rows to ``rejects_path`` (default:
    ``<file>.rejects.csv`` beside it, only when some rows are rejected) and the corrected
    addresses to ``changes_path`` (only when given).

    ``format`` names the format (``formats.FORMAT_NAMES``) instead of recognising it from
    the header. ``progress(done, total)`` is called after each chunk. With ``double_opt_in``
    new members are pending and each is sent a confirmation email after the import
    commits. With ``dry_run`` everything is read, validated and applied, then rolled back:
    the report says what would happen, and nothing is written or sent.
    """
    with tempfile.TemporaryDirectory(prefix="wip-mailer-import-") as folder, _collector_paused():
        is_zip = path.suffix.lower() == ".zip"
        files = ([(path / name, unpacked)
                  for name, unpacked in unpack_export(path, Path(folder))] if is_zip else [(path, path)])
        with Session(engine, expire_on_commit=False) as session:
            try:
                mailing_list = get_list(session, list_name)
                asks_confirmation = mailing_list.double_opt_in
                parts = [ImportReport(path=label, dry_run=dry_run) for label, _ in files]
                writer = _ChunkWriter(session, mailing_list, double_opt_in=double_opt_in, source="",
                                      report=parts[0])
                headers = [_import_file(writer, settings, part, unpacked, source, format, progress)
                           for part, (_, unpacked) in zip(parts, files, strict=True)]
                if dry_run:
                    session.rollback()
                else:
                    session.commit()
            except BaseException:
                session.rollback()
                raise
    report = _combined(path, parts) if is_zip else parts[0]
    report.double_opt_in_list = asks_confirmation
    report.confirmed_by_source = asks_confirmation and not double_opt_in and report.added > 0
    if dry_run:
        return report
    for part, (header, delimiter, bom) in zip(parts, headers, strict=True):
        if part.rejected:
            part.rejects_path = _rejects_path(path, part.path, rejects_path, is_zip)
            write_rejects(part.rejects_path, header, part.rejected, delimiter, bom)
    if is_zip:
        report.rejected = [r for part in parts for r in part.rejected]
    if changes_path is not None:
        write_changes(changes_path, parts)
        report.changes_path = changes_path
    report.confirmations_sent = send_confirmations(settings, writer.confirmations)
    return report


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The automatic cyclic garbage collection off while importing: an import allocates
    millions of objects, and each full collection walks every object alive (SQLAlchemy's,
    the chunk's), a fifth of the import's time. The chunk's own cycles (a few SQLAlchemy
    result objects, holding their rows) are collected after each chunk instead, by
    ``_import_file``, which walks only the objects made since, so memory stays bounded."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _import_file(writer: _ChunkWriter, settings: Settings, report: ImportReport, path: Path,
                 source: str | None, format: str | None,
                 progress: Callable[[int, int], None] | None) -> tuple[list[str], str, bool]:
    """Read one file into ``report`` through ``writer``; (header, delimiter, BOM) for its rejects file."""
    with open_export(path, max_field_chars=settings.import_max_field_chars, format=format) as file:
        total = file.lines_after_header
        report.encoding, report.has_header = file.encoding.name, file.has_header
        report.format, report.format_label, report.mapping = file.format, file.label, file.mapping
        report.source = (source or (f"import:{report.path.name}" if file.format == OWN
                                    else f"import:{file.format}"))[:200]
        writer.report, writer.source = report, report.source
        chunk: list[SubscriberRow] = []
        for row in file.rows():
            report.rows += 1
            if isinstance(row, Rejection):
                report.rejected.append(row)
                continue
            if row.correction is not None:
                report.corrections.append(row.correction)
            chunk.append(row)
            if len(chunk) >= CHUNK:
                writer.apply(chunk)
                chunk = []
                gc.collect(1)  # the chunk's cycles, see _collector_paused
                if progress:
                    progress(row.line, total)
        writer.apply(chunk)
        if progress:
            progress(total, total)
    report.rejected.sort(key=lambda r: r.line)
    return file.header, file.delimiter, file.encoding.bom or file.encoding.name != "UTF-8"


def _combined(path: Path, parts: list[ImportReport]) -> ImportReport:
    """One report for the files of a ZIP export (each part keeps its own)."""
    first = parts[0]
    report = ImportReport(path=path, encoding=first.encoding, format=first.format,
                          format_label=first.format_label, mapping=first.mapping, source=first.source,
                          dry_run=first.dry_run, parts=parts)
    for part in parts:
        for key in ("rows", "added", "reactivated", "updated", "unchanged", "kept_out"):
            setattr(report, key, getattr(report, key) + getattr(part, key))
        report.corrections += part.corrections
    report.rejected = [r for part in parts for r in part.rejected]
    return report


def _rejects_path(path: Path, part: Path, chosen: Path | None, is_zip: bool) -> Path:
    if not is_zip:
        return chosen or path.with_name(f"{path.stem}.rejects.csv")
    base = chosen or path.with_name(f"{path.stem}.rejects.csv")
    return base.with_name(f"{base.stem.removesuffix('.rejects')}.{Path(part.name).stem}.rejects.csv")


def write_changes(path: Path, parts: Sequence[ImportReport]) -> None:
    """Every corrected address: file, line, before, after, and what was changed."""
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(["file", "line", "before", "after", "change"])
            for part in parts:
                for c in part.corrections:
                    writer.writerow([part.path.name, c.line, escape_formula(c.before), c.after, c.what])
    except OSError as exc:
        raise InvalidInputError(f"Cannot write the changes file {path}: {exc.strerror}.") from None


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
