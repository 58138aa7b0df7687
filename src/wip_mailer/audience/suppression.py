"""The suppression list: addresses never to be mailed again, kept only as a hash."""

from __future__ import annotations

import hashlib

from sqlmodel import Session, select

from wip_mailer.models import Subscriber, SubscriberStatus, Suppression


def email_hash(email: str) -> str:
    """The suppression key of an address (already normalised, compared lower-case)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


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
