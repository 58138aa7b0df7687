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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col

from wip_mailer.audience.confirmation import ConfirmationRequest, send_confirmations
from wip_mailer.audience.consent import EventKind
from wip_mailer.audience.csv_reader import Rejection
from wip_mailer.audience.csv_rows import HEADER_ALIASES, KNOWN_COLUMNS, SubscriberRow, open_subscribers
from wip_mailer.audience.lists import get_list
from wip_mailer.audience.suppression import email_hash
from wip_mailer.db import BULK_CHUNK, group_by_keys, insert_many, session_scope, utcnow
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
           "write_rejects"]

CHUNK = BULK_CHUNK  # rows per chunk (and per bulk statement)

_subscriber = Subscriber.__table__  # type: ignore[attr-defined]
_membership = Membership.__table__  # type: ignore[attr-defined]
_event = ConsentEvent.__table__  # type: ignore[attr-defined]


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

    def reject(self, row: SubscriberRow, reason: str) -> None:
        self.report.rejected.append(Rejection(row.line, reason, row.values))

    def apply(self, rows: list[SubscriberRow]) -> None:
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
            insert_many(session, _subscriber, [self._new_subscriber(r, status, now) for r in new_rows])
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

    def _status_after(self, status: str) -> str:
        if status == SubscriberStatus.ACTIVE or not self.pending:
            return SubscriberStatus.ACTIVE
        return SubscriberStatus.PENDING

    def _new_subscriber(self, row: SubscriberRow, status: str, now: Any) -> dict[str, Any]:
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

    def _event(self, subscriber_id: int, kind: EventKind, now: Any) -> dict[str, Any]:
        return {"subscriber_id": subscriber_id, "list_id": self.list_id, "kind": kind, "at": now,
                "source": self.source, "ip": None, "user_agent": None, "text_version": None}

    def _confirmation(self, subscriber_id: int, row: SubscriberRow, current: Any) -> ConfirmationRequest:
        name = row.fields.get("name") or (current.name if current is not None else "")
        fallback = current.language if current is not None else self.list.language
        language = row.fields.get("language") or fallback
        return ConfirmationRequest(subscriber_id, self.list_id, row.email, name, language,
                                   self.list.name, self.list.description)


def import_csv(engine: Engine, settings: Settings, path: Path, list_name: str, *,
               double_opt_in: bool = False, source: str | None = None, rejects_path: Path | None = None,
               progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Import ``path`` into ``list_name`` and write the rejected rows to ``rejects_path``
    (default: ``<file>.rejects.csv`` beside it, only when some rows are rejected).

    ``progress(done, total)`` is called after each chunk. With ``double_opt_in`` new
    members are pending and each is sent a confirmation email after the import commits.
    """
    with open_subscribers(path, max_field_chars=settings.import_max_field_chars) as file:
        total = file.lines_after_header
        report = ImportReport(path=path, encoding=file.encoding.name, has_header=file.columns.has_header)
        with session_scope(engine) as session:
            mailing_list = get_list(session, list_name)
            writer = _ChunkWriter(session, mailing_list, double_opt_in=double_opt_in,
                                  source=source or f"import:{path.name}", report=report)
            chunk: list[SubscriberRow] = []
            for row in file.rows():
                report.rows += 1
                if isinstance(row, Rejection):
                    report.rejected.append(row)
                    continue
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    writer.apply(chunk)
                    chunk = []
                    if progress:
                        progress(row.line, total)
            writer.apply(chunk)
            if progress:
                progress(total, total)
    report.rejected.sort(key=lambda r: r.line)
    if report.rejected:
        report.rejects_path = rejects_path or path.with_name(f"{path.stem}.rejects.csv")
        write_rejects(report.rejects_path, file.columns.raw, report.rejected, file.delimiter,
                      file.encoding.bom or file.encoding.name != "UTF-8")
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
