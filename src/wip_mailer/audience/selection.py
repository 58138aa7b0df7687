"""Choosing who receives a send: lists plus an optional segment, once per address.

CONTRACT (used by dispatch): ``select_recipients`` streams one ``Recipient`` per address.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import func
from sqlmodel import Session, col, select

from wip_mailer.audience.segments import segment_filter
from wip_mailer.audience.suppression import email_hash
from wip_mailer.errors import NotFoundError
from wip_mailer.models import (
    MailingList,
    Membership,
    MembershipStatus,
    Subscriber,
    SubscriberStatus,
    Suppression,
)


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
    """Active members of any of the lists matching ``segment``, once per address, never a
    suppressed, unsubscribed, bounced or complained one. Streams from the database."""
    lists = resolve_lists(session, list_names)
    bind = session.get_bind()
    condition = segment_filter(segment, bind.dialect.name) if segment and segment.strip() else None
    # Hashes only (64 bytes each): a few MB even for a very long suppression list.
    suppressed = set(session.exec(select(Suppression.email_hash)).all())
    list_id = func.min(Membership.list_id).label("list_id")
    query = (
        sa.select(col(Subscriber.id), col(Subscriber.email), col(Subscriber.name),
                  col(Subscriber.language), list_id)
        .join(Membership, col(Membership.subscriber_id) == col(Subscriber.id))
        .where(col(Membership.list_id).in_([lst.id for lst in lists]))
        .where(col(Membership.status) == MembershipStatus.ACTIVE)
        .where(col(Subscriber.status) == SubscriberStatus.ACTIVE)
        .group_by(col(Subscriber.id), col(Subscriber.email), col(Subscriber.name), col(Subscriber.language))
        .order_by(col(Subscriber.id))
        .execution_options(yield_per=2000)
    )
    if condition is not None:
        query = query.where(condition)
    for row in session.execute(query):
        if email_hash(row.email) not in suppressed:
            yield Recipient(row.id, row.email, row.name, row.language, row.list_id)
