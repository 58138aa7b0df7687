"""Consent (GDPR art. 7): joining and leaving lists, each change recorded as an event.

A subscriber's own status follows their memberships: ``active`` while any membership is
active, ``pending`` while one awaits confirmation, ``unsubscribed`` once all are left.
``bounced`` and ``complained`` are set by feedback and are never undone here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from wip_mailer.db import utcnow
from wip_mailer.errors import NotFoundError, StateError
from wip_mailer.models import (
    ConsentEvent,
    MailingList,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
)


class EventKind(StrEnum):
    SUBSCRIBE = "subscribe"  # joined as an active member (admin, import, preferences page)
    REQUEST = "request"  # asked to join a double opt-in list; a confirmation email was sent
    CONFIRM = "confirm"  # clicked the confirmation link
    UNSUBSCRIBE = "unsubscribe"
    ERASE = "erase"  # personal data deleted (kept without subscriber or address)
    BOUNCE = "bounce"  # suppressed: the address bounced (hard, or too many soft bounces)
    COMPLAINT = "complaint"  # reported a message as spam (ARF): off every list, suppressed
    UNSUPPRESS = "unsuppress"  # a suppression lifted by an admin (the reason in detail)


class JoinOutcome(StrEnum):
    JOINED = "joined"  # now an active member (new, or pending/unsubscribed before)
    PENDING = "pending"  # awaits confirmation: send the confirmation email
    ALREADY_ACTIVE = "already active"


_STICKY = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


@dataclass(frozen=True)
class Actor:
    """Who or what made a consent change, for the record."""

    source: str
    ip: str | None = None
    user_agent: str | None = None
    text_version: str | None = None


def event_values(subscriber_id: int | None, list_id: int | None, kind: EventKind,
                 actor: Actor, campaign_id: int | None = None) -> dict[str, Any]:
    """The columns of one consent event (also written in bulk by ``unsubscribe_batch``)."""
    return {"subscriber_id": subscriber_id, "list_id": list_id, "kind": kind, "source": actor.source[:200],
            "ip": actor.ip, "user_agent": (actor.user_agent or None) and actor.user_agent[:400],
            "text_version": actor.text_version, "campaign_id": campaign_id}


def record_event(session: Session, subscriber_id: int | None, list_id: int | None, kind: EventKind,
                 actor: Actor, campaign_id: int | None = None) -> None:
    session.add(ConsentEvent(**event_values(subscriber_id, list_id, kind, actor, campaign_id)))


def derived_status(current: str, membership_states: Collection[str]) -> str | None:
    """The status a subscriber's memberships give them; None: keep ``current`` (bounced or
    complained, or on no list at all)."""
    if current in _STICKY:
        return None
    if MembershipStatus.ACTIVE in membership_states:
        return SubscriberStatus.ACTIVE
    if MembershipStatus.PENDING in membership_states:
        return SubscriberStatus.PENDING
    if membership_states:
        return SubscriberStatus.UNSUBSCRIBED
    return None


def refresh_status(session: Session, subscriber: Subscriber) -> None:
    """Derive the subscriber's status from their memberships (bounced/complained stay)."""
    if subscriber.status in _STICKY:
        return
    states = set(session.exec(
        select(Membership.status).where(Membership.subscriber_id == subscriber.id)
    ).all())
    status = derived_status(subscriber.status, states)
    if status is not None and subscriber.status != status:
        subscriber.status = status
        subscriber.updated_at = utcnow()
        session.add(subscriber)


def join_list(session: Session, subscriber: Subscriber, mailing_list: MailingList, *,
              confirmed: bool, actor: Actor) -> JoinOutcome:
    """Put ``subscriber`` on ``mailing_list``: active when ``confirmed`` or the list has no
    double opt-in, otherwise pending until the confirmation link is followed."""
    if subscriber.status in _STICKY:
        raise StateError(f"{subscriber.email} is marked {subscriber.status} and cannot be subscribed.")
    assert subscriber.id is not None and mailing_list.id is not None
    membership = session.exec(select(Membership).where(
        Membership.subscriber_id == subscriber.id, Membership.list_id == mailing_list.id)).first()
    active = confirmed or not mailing_list.double_opt_in
    if membership is not None and membership.status == MembershipStatus.ACTIVE:
        return JoinOutcome.ALREADY_ACTIVE
    now = utcnow()
    if membership is None:
        membership = Membership(subscriber_id=subscriber.id, list_id=mailing_list.id, subscribed_at=now)
    elif membership.status == MembershipStatus.UNSUBSCRIBED:
        membership.subscribed_at = now  # a new subscription, with its own consent event
        membership.unsubscribed_at = None
    membership.status = MembershipStatus.ACTIVE if active else MembershipStatus.PENDING
    if active:
        membership.confirmed_at = now
    session.add(membership)
    record_event(session, subscriber.id, mailing_list.id,
                 EventKind.SUBSCRIBE if active else EventKind.REQUEST, actor)
    session.flush()
    refresh_status(session, subscriber)
    return JoinOutcome.JOINED if active else JoinOutcome.PENDING


def confirm_membership(session: Session, subscriber_id: int, list_id: int, actor: Actor) -> bool:
    """Activate a pending membership; True when it changed, False when already active."""
    membership = session.exec(select(Membership).where(
        Membership.subscriber_id == subscriber_id, Membership.list_id == list_id)).first()
    subscriber = session.get(Subscriber, subscriber_id)
    if membership is None or subscriber is None:
        raise NotFoundError("This subscription no longer exists; please subscribe again.")
    if membership.status == MembershipStatus.ACTIVE:
        return False
    if membership.status == MembershipStatus.UNSUBSCRIBED:
        raise StateError("This subscription was cancelled after the confirmation email was sent; "
                         "please subscribe again.")
    if subscriber.status in _STICKY:
        raise StateError(f"{subscriber.email} is marked {subscriber.status} and cannot be subscribed.")
    membership.status = MembershipStatus.ACTIVE
    membership.confirmed_at = utcnow()
    session.add(membership)
    record_event(session, subscriber_id, list_id, EventKind.CONFIRM, actor)
    session.flush()
    refresh_status(session, subscriber)
    return True


def unsubscribe(session: Session, subscriber_id: int, list_id: int | None, *, source: str,
                ip: str | None = None, user_agent: str | None = None,
                campaign_id: int | None = None) -> bool:
    """Leave one list (or every list when ``list_id`` is None), at once; ``campaign_id``: the
    campaign whose link or mailto address was used, kept on the event for reports.

    Records one consent event per membership left. Returns False when there was nothing
    to leave, so repeating an unsubscribe is harmless.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFoundError("This subscriber no longer exists; nothing will be sent to them.")
    query = select(Membership).where(
        Membership.subscriber_id == subscriber_id,
        col(Membership.status) != MembershipStatus.UNSUBSCRIBED,
    )
    if list_id is not None:
        query = query.where(Membership.list_id == list_id)
    memberships = session.exec(query).all()
    now = utcnow()
    actor = Actor(source=source, ip=ip, user_agent=user_agent)
    for membership in memberships:
        membership.status = MembershipStatus.UNSUBSCRIBED
        membership.unsubscribed_at = now
        session.add(membership)
        record_event(session, subscriber_id, membership.list_id, EventKind.UNSUBSCRIBE, actor, campaign_id)
    if memberships:
        session.flush()
        refresh_status(session, subscriber)
    return bool(memberships)
