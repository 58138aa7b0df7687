"""What a bounce or a complaint does to an address: the one effect behind an SMTP-time 5xx
during `send` (dispatch's ledger) and a bounce or complaint read back later (feedback).

Each effect leaves a ``bounce_event`` row (kept by address hash, so it survives erasure)
and, where it changes anything for the subscriber, a consent event for their history.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wip_mailer.audience.consent import Actor, EventKind, record_event, unsubscribe
from wip_mailer.audience.suppression import email_hash, is_suppressed, suppress
from wip_mailer.db import utcnow
from wip_mailer.models import BounceEvent, Delivery, DeliveryState, Subscriber


def _subscriber_id(session: Session, email: str) -> int | None:
    return session.exec(select(Subscriber.id).where(Subscriber.email == email.strip().lower())).first()


def _event(session: Session, email: str, kind: str, *, delivery_id: int | None, diagnostic: str,
           status: str, source: str) -> None:
    session.add(BounceEvent(delivery_id=delivery_id, email_hash=email_hash(email), kind=kind,
                            diagnostic=diagnostic[:1000], status=status[:16], source=source[:32]))


def record_hard_bounce(session: Session, email: str, *, delivery_id: int | None, diagnostic: str,
                       status: str = "", source: str = "smtp") -> None:
    """The address does not exist (any more): suppress it at once (status ``bounced``)."""
    _event(session, email, "hard", delivery_id=delivery_id, diagnostic=diagnostic, status=status,
           source=source)
    subscriber_id = _subscriber_id(session, email)
    if subscriber_id is not None and not is_suppressed(session, email):
        record_event(session, subscriber_id, None, EventKind.BOUNCE, Actor(source=f"hard bounce ({source})"))
    suppress(session, email, "bounced", diagnostic[:200])


def record_soft_bounce(session: Session, email: str, *, delivery_id: int | None, diagnostic: str,
                       status: str, source: str, limit: int, window_days: int,
                       now: datetime | None = None) -> bool:
    """A temporary failure; the ``limit``-th within ``window_days`` (counted per address, reset by
    a later delivery that did not bounce) suppresses the address. Returns True when it did."""
    _event(session, email, "soft", delivery_id=delivery_id, diagnostic=diagnostic, status=status,
           source=source)
    session.flush()
    key = email_hash(email)
    now = now or utcnow()
    since = now - timedelta(days=window_days)
    subscriber_id = _subscriber_id(session, email)
    if subscriber_id is not None:
        # The last delivery the server accepted that has no bounce of its own: the count starts after it.
        bounced = sa.select(col(BounceEvent.delivery_id)).where(col(BounceEvent.delivery_id).is_not(None),
                                                           col(BounceEvent.email_hash) == key)
        reset = session.execute(
            sa.select(sa.func.max(col(Delivery.sent_at))).where(
                col(Delivery.subscriber_id) == subscriber_id, col(Delivery.state) == DeliveryState.SENT,
                col(Delivery.id).not_in(bounced))
        ).scalar()
        if reset is not None and reset > since:
            since = reset
    count = session.execute(
        sa.select(sa.func.count()).select_from(BounceEvent).where(
            col(BounceEvent.email_hash) == key, col(BounceEvent.kind) == "soft",
            col(BounceEvent.received_at) >= since)
    ).scalar_one()
    if count < limit or is_suppressed(session, email):
        return False
    if subscriber_id is not None:
        record_event(session, subscriber_id, None, EventKind.BOUNCE,
                     Actor(source=f"{count} soft bounces within {window_days} days ({source})"))
    suppress(session, email, "bounced", f"{count} soft bounces within {window_days} days")
    return True


def record_complaint(session: Session, email: str, *, delivery_id: int | None, diagnostic: str,
                     source: str = "arf") -> None:
    """The person reported a message as spam: off every list, status ``complained``, suppressed."""
    _event(session, email, "complaint", delivery_id=delivery_id, diagnostic=diagnostic, status="",
           source=source)
    subscriber_id = _subscriber_id(session, email)
    if subscriber_id is not None:
        unsubscribe(session, subscriber_id, None, source=f"complaint ({source})")
        record_event(session, subscriber_id, None, EventKind.COMPLAINT, Actor(source=f"complaint ({source})"))
    suppress(session, email, "complained", diagnostic[:200])


def bounce_history(session: Session, email: str) -> list[dict[str, object]]:
    """The bounces and complaints recorded for an address, oldest first."""
    events = session.exec(select(BounceEvent).where(BounceEvent.email_hash == email_hash(email))
                          .order_by(col(BounceEvent.received_at), col(BounceEvent.id))).all()
    return [{"kind": e.kind, "status": e.status, "source": e.source, "diagnostic": e.diagnostic,
             "delivery_id": e.delivery_id, "at": e.received_at} for e in events]
