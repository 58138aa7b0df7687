"""Subscribers, lists, segments, consent and suppression.

CONTRACT (used by dispatch): ``select_recipients`` streams one ``Recipient`` per address
for a set of lists and an optional segment expression; ``email_hash`` is how suppressed
addresses are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, col, select

from wip_mailer.errors import NotFoundError
from wip_mailer.models import (
    MailingList,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)


def email_hash(email: str) -> str:
    """The suppression key of an address (already normalised, compared lower-case)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    name: str
    language: str
    list_id: int  # the list this copy is sent for (its unsubscribe link leaves that list)


def resolve_lists(session: Session, names: Sequence[str]) -> list[MailingList]:
    lists = []
    for name in names:
        found = session.exec(select(MailingList).where(MailingList.name == name)).first()
        if found is None:
            raise NotFoundError(f"There is no list named {name!r}.")
        lists.append(found)
    return lists


def select_recipients(
    session: Session, list_names: Sequence[str], segment: str | None = None
) -> Iterator[Recipient]:
    """Active members of any of the lists, once per address, never a suppressed one."""
    lists = resolve_lists(session, list_names)
    if segment:
        raise NotImplementedError("segment filters arrive with the audience issue")
    suppressed = set(session.exec(select(Suppression.email_hash)).all())
    list_id = func.min(Membership.list_id).label("list_id")
    query = (
        sa.select(col(Subscriber.id), col(Subscriber.email), col(Subscriber.name),
                  col(Subscriber.language), list_id)
        .join(Membership, col(Membership.subscriber_id) == col(Subscriber.id))
        .where(col(Membership.list_id).in_([lst.id for lst in lists]))
        .where(col(Membership.status) == MembershipStatus.ACTIVE)
        .where(col(Subscriber.status) == SubscriberStatus.ACTIVE)
        .group_by(col(Subscriber.id))
        .order_by(col(Subscriber.id))
        .execution_options(yield_per=2000)
    )
    for row in session.execute(query):
        if email_hash(row.email) not in suppressed:
            yield Recipient(row.id, row.email, row.name, row.language, row.list_id)


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
