"""The suppression list: addresses never to be mailed again, kept only as a hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, select

from wip_mailer.audience.addresses import normalise_email
from wip_mailer.audience.consent import EventKind, refresh_status
from wip_mailer.db import sha256_hex
from wip_mailer.errors import InvalidInputError, NotFoundError
from wip_mailer.models import ConsentEvent, Subscriber, SubscriberStatus, Suppression


def email_hash(email: str) -> str:
    """The suppression key of an address (already normalised, compared lower-case)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def email_hash_sql(email: sa.ColumnExpressionArgument[str]) -> ColumnElement[str]:
    """``email_hash`` computed by the database, for a selection to leave suppressed addresses
    out in the same statement. Stored addresses are normalised (stripped, lower-case), so the
    database's trim and lower (ASCII-only on SQLite) change nothing Python's would not."""
    return sha256_hex(func.lower(func.trim(email)))


def not_suppressed(email: sa.ColumnExpressionArgument[str]) -> ColumnElement[bool]:
    """SQL: the address is not on the suppression list (an anti-join on the hashed key)."""
    return ~sa.exists().where(col(Suppression.email_hash) == email_hash_sql(email))


def suppress(session: Session, email: str, reason: str, detail: str = "") -> None:
    """Never mail ``email`` again (hard bounce, complaint, erasure, manual); idempotent.

    The subscriber, if any, takes the matching status so it leaves every selection.
    """
    key = email_hash(email)
    if session.exec(select(Suppression).where(Suppression.email_hash == key)).first() is None:
        session.add(Suppression(email_hash=key, reason=reason, detail=detail))
    status = {"bounced": SubscriberStatus.BOUNCED, "complained": SubscriberStatus.COMPLAINED}.get(reason)
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == email.strip().lower())).first()
    if subscriber is not None and status is not None:
        subscriber.status = status
        session.add(subscriber)


def is_suppressed(session: Session, email: str) -> bool:
    key = email_hash(email)
    return session.exec(select(Suppression.id).where(Suppression.email_hash == key)).first() is not None


def suppression_reason(session: Session, email: str) -> str | None:
    """Why ``email`` is suppressed, or None when it is not."""
    key = email_hash(email)
    return session.exec(select(Suppression.reason).where(Suppression.email_hash == key)).first()


def list_suppressions(session: Session, reason: str | None = None) -> Iterator[dict[str, Any]]:
    """Every suppression, oldest first, with the address when a subscriber still holds it
    (only a hash is kept otherwise: an erased address cannot be shown)."""
    known = {email_hash(e): e for e in session.exec(select(Subscriber.email)).all()}
    query = select(Suppression).order_by(col(Suppression.created_at), col(Suppression.id))
    if reason:
        query = query.where(Suppression.reason == reason)
    for row in session.exec(query):
        yield {"email": known.get(row.email_hash), "email_hash": row.email_hash, "reason": row.reason,
               "detail": row.detail, "created_at": row.created_at}


def lift_suppression(session: Session, email: str, why: str, *, source: str = "cli") -> str:
    """Take ``email`` off the suppression list, recording the lift (and ``why``) as a consent
    event; a bounced or complained subscriber gets back the status their memberships give.
    Returns the reason it was suppressed for."""
    why = " ".join(why.split())
    if not why:
        raise InvalidInputError("Say why the suppression is lifted, e.g. --reason \"bounce was a mistake\".")
    try:
        address = normalise_email(email)
    except InvalidInputError:
        address = email.strip().lower()
    entry = session.exec(select(Suppression).where(Suppression.email_hash == email_hash(address))).first()
    if entry is None:
        raise NotFoundError(f"{address} is not on the suppression list.")
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    session.delete(entry)
    session.add(ConsentEvent(subscriber_id=subscriber.id if subscriber else None, list_id=None,
                             kind=EventKind.UNSUPPRESS, source=source[:200],
                             detail=f"was {entry.reason}: {why}"[:500]))
    sticky = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)
    if subscriber is not None and subscriber.status in sticky:
        subscriber.status = SubscriberStatus.ACTIVE  # then derived from the memberships
        session.add(subscriber)
        session.flush()
        refresh_status(session, subscriber)
    session.flush()
    return entry.reason
