"""Processing one message that came back: match it, apply its effect, remember it.

Every source (mbox, Maildir, IMAP, the SMTP receiver) ends here, one message per
transaction. The message's key (Message-ID or content hash) is stored with the outcome
in the same transaction, so processing a message again changes and counts nothing.

Matching, in order: the verified VERP address it was delivered to, then the verified
Message-ID of our message quoted in it, then the DSN's recipients against the subscriber
table. A message sent to a forged VERP address matches nothing. A bounce that matches
nothing is stored with its bytes, for `wip-mailer bounces show`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from wip_mailer.audience import record_complaint, record_hard_bounce, record_soft_bounce, unsubscribe
from wip_mailer.audience.selfservice import Visitor, unsubscribe_by_token
from wip_mailer.db import session_scope
from wip_mailer.errors import NotFoundError
from wip_mailer.feedback.classify import Classified, RecipientReport, classify
from wip_mailer.models import Delivery, InboundKind, InboundMessage, Subscriber
from wip_mailer.settings import Settings
from wip_mailer.tokens import InvalidTokenError

MAILTO_SOURCE = "mailto unsubscribe (List-Unsubscribe)"
# Kinds that act on someone: one that matches nobody is counted as unmatched.
ACTING_KINDS = (InboundKind.HARD, InboundKind.SOFT, InboundKind.COMPLAINT, InboundKind.UNSUBSCRIBE)
# ... and these are kept with their bytes when they match nobody (someone may need to read them).
_KEEP_UNMATCHED = (*ACTING_KINDS, InboundKind.NOT_A_BOUNCE)


@dataclass(frozen=True)
class Target:
    """Whom a message is about."""

    email: str
    subscriber_id: int | None
    delivery_id: int | None
    campaign_id: int | None
    list_id: int | None
    report: RecipientReport | None


@dataclass(frozen=True)
class Processed:
    kind: InboundKind
    matched: bool
    duplicate: bool = False
    effect: str = ""


@dataclass
class Counts:
    """What a run processed: per kind, matched or not, and messages seen before."""

    total: int = 0
    duplicates: int = 0
    unmatched: int = 0
    kinds: dict[str, int] = field(default_factory=lambda: {kind.value: 0 for kind in InboundKind})

    def add(self, outcome: Processed) -> None:
        self.total += 1
        if outcome.duplicate:
            self.duplicates += 1
            return
        self.kinds[outcome.kind.value] += 1
        if not outcome.matched and outcome.kind in ACTING_KINDS:
            self.unmatched += 1

    def as_dict(self) -> dict[str, object]:
        return {"total": self.total, "duplicates": self.duplicates, "unmatched": self.unmatched,
                "kinds": dict(self.kinds)}


def _report_for(classified: Classified, email: str) -> RecipientReport | None:
    for report in classified.recipients:
        if report.address == email.lower():
            return report
    return classified.recipients[0] if classified.recipients else None


def match(session: Session, classified: Classified) -> list[Target]:
    if classified.forged:
        return []
    ref = classified.delivery
    if ref is not None:
        delivery = session.get(Delivery, ref.delivery_id)
        if delivery is not None and (ref.campaign_id is None or delivery.campaign_id == ref.campaign_id):
            subscriber = session.get(Subscriber, delivery.subscriber_id) if delivery.subscriber_id else None
            email = subscriber.email if subscriber is not None else delivery.email
            if email:
                return [Target(email, delivery.subscriber_id, delivery.id, delivery.campaign_id,
                               delivery.list_id, _report_for(classified, email))]
    targets = []
    for report in classified.recipients:
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == report.address)).first()
        if subscriber is None:
            continue
        latest = session.exec(select(Delivery).where(Delivery.subscriber_id == subscriber.id)
                              .order_by(col(Delivery.id).desc())).first()
        targets.append(Target(subscriber.email, subscriber.id, latest.id if latest else None,
                              latest.campaign_id if latest else None, latest.list_id if latest else None,
                              report))
    return targets


def _mark_delivery(session: Session, target: Target, what: str) -> None:
    if target.delivery_id is not None:
        session.execute(sa.update(Delivery).where(col(Delivery.id) == target.delivery_id)
                        .values(last_reply=what[:1000]))


def _apply(session: Session, settings: Settings, classified: Classified, targets: list[Target]) -> str:
    """Do what the message asks for; returns what was done, in words."""
    kind = classified.kind
    done: list[str] = []
    for target in targets:
        report = target.report or RecipientReport(target.email)
        diagnostic = report.diagnostic or classified.subject
        if kind is InboundKind.HARD:
            record_hard_bounce(session, target.email, delivery_id=target.delivery_id, diagnostic=diagnostic,
                               status=report.status, source="dsn")
            _mark_delivery(session, target, f"bounced after delivery (hard, {report.status}): {diagnostic}")
            done.append("suppressed (hard bounce)")
        elif kind is InboundKind.SOFT:
            suppressed = record_soft_bounce(
                session, target.email, delivery_id=target.delivery_id, diagnostic=diagnostic,
                status=report.status, source="dsn", limit=settings.bounce_soft_limit,
                window_days=settings.bounce_soft_window_days)
            _mark_delivery(session, target, f"bounced after delivery (soft, {report.status}): {diagnostic}")
            done.append("suppressed (soft-bounce limit reached)" if suppressed else "soft bounce counted")
        elif kind is InboundKind.COMPLAINT:
            record_complaint(session, target.email, delivery_id=target.delivery_id, diagnostic=diagnostic)
            done.append("complaint: unsubscribed from every list and suppressed")
        elif kind is InboundKind.UNSUBSCRIBE and target.subscriber_id is not None:
            left = unsubscribe(session, target.subscriber_id, target.list_id, source=MAILTO_SOURCE,
                               campaign_id=target.campaign_id)
            done.append("unsubscribed" if left else "already unsubscribed")
    return "; ".join(dict.fromkeys(done))[:300]


def _unsubscribe_by_token(session: Session, settings: Settings, classified: Classified) -> Target | None:
    """The mailto unsubscribe with the token of the message's unsubscribe link: the one-click path."""
    if not classified.unsubscribe_token:
        return None
    try:
        view = unsubscribe_by_token(session, settings, classified.unsubscribe_token, source=MAILTO_SOURCE,
                                    visitor=Visitor())
    except (InvalidTokenError, NotFoundError):
        return None
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == view.email)).first()
    return Target(view.email, subscriber.id if subscriber else None, None, None, None, None)


def _handle(session: Session, settings: Settings, classified: Classified, raw: bytes, source: str
            ) -> Processed:
    effect = ""
    if classified.kind is InboundKind.UNSUBSCRIBE and classified.unsubscribe_token:
        by_token = _unsubscribe_by_token(session, settings, classified)
        targets = [by_token] if by_token else []
        effect = "unsubscribed" if by_token else ""
    else:
        targets = match(session, classified)
        effect = _apply(session, settings, classified, targets)
    first = targets[0] if targets else None
    matched = bool(targets)
    session.add(InboundMessage(
        message_key=classified.message_key, source=source, kind=classified.kind, matched=matched,
        delivery_id=first.delivery_id if first else None, campaign_id=first.campaign_id if first else None,
        subscriber_id=first.subscriber_id if first else None,
        recipients=[r.as_dict() for r in classified.recipients], subject=classified.subject[:300],
        effect=effect or ("forged VERP address: matched nothing" if classified.forged else ""),
        raw=raw if not matched and classified.kind in _KEEP_UNMATCHED else None,
    ))
    return Processed(classified.kind, matched, effect=effect)


def process_message(engine: Engine, settings: Settings, raw: bytes, source: str) -> Processed:
    """Classify, match and apply one message, once: a message seen before changes nothing."""
    classified = classify(raw, settings)
    try:
        with session_scope(engine) as session:
            seen = session.exec(select(InboundMessage.kind).where(
                InboundMessage.message_key == classified.message_key)).first()
            if seen is not None:
                return Processed(InboundKind(seen), True, duplicate=True)
            return _handle(session, settings, classified, raw, source)
    except IntegrityError:  # the same message processed at the same moment by another process?
        with session_scope(engine) as session:
            if session.exec(select(InboundMessage.id).where(
                    InboundMessage.message_key == classified.message_key)).first() is None:
                raise
        return Processed(classified.kind, True, duplicate=True)


def process_all(engine: Engine, settings: Settings, messages: Iterable[bytes], source: str) -> Counts:
    counts = Counts()
    for raw in messages:
        counts.add(process_message(engine, settings, raw, source))
    return counts
